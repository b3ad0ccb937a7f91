#!/usr/bin/env bash
# make demo: a demo tailnet on this machine (Headscale + two official tailscaled peers in
# network namespaces) with skeind logged into it; shows `skein status`, then waits for Ctrl-C
# and removes everything. DEMO_FLAGS=-exit stops right after showing (used by CI).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "demo: network namespaces need root; run: sudo make demo" >&2
  exit 1
fi
exec bin/skein-lab up -skeind bin/skeind -skein bin/skein ${DEMO_FLAGS:-}
