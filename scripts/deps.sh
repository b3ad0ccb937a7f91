#!/usr/bin/env bash
# Installs the Debian packages the lab, the tests and the demo need; a no-op when present.
set -euo pipefail
need=()
for pkg in iproute2 nftables procps psmisc ca-certificates iputils-ping curl; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
command -v go >/dev/null || { echo "deps: Go is not installed (need Go 1.26)"; exit 1; }
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "deps: run as root to install: ${need[*]}"; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
