#!/usr/bin/env bash
# Installs the Debian packages the lab, the tests and the demo need; a no-op when present.
set -euo pipefail
need=()
# miniupnpd-nftables: the lab's port-mapping router (UPnP IGD, NAT-PMP, PCP); only this package,
# since the `miniupnpd` wrapper pulls debconf and an iptables helper script.
# iptables (both iptables-nft and iptables-legacy): the forwarding warnings are tested against
# the foreign rules they read; without it those tests fail rather than skip.
for pkg in iproute2 nftables procps psmisc ca-certificates iputils-ping curl iperf3 wireguard-tools bind9-dnsutils miniupnpd-nftables iptables; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
# The desktop app: cgo headers for Fyne (GL, X11), and for its end-to-end test an X server
# (Mesa's software GL), a session bus and xwd for screenshots; the CJK fonts a Debian desktop
# has (Fyne falls back to system fonts for glyphs its own font lacks: the zh-TW window).
for pkg in libgl1-mesa-dev libgl1-mesa-dri xorg-dev xvfb dbus-daemon x11-apps fonts-noto-cjk; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
# Packaging (make package-test): debootstrap for a clean Debian root, the validators of the
# unit, desktop file and metainfo, flatpak-builder to parse the manifest, objdump, and an extra
# NSS source (extrausers; inert until an nsswitch.conf names it) for an operator /etc/passwd
# does not list.
for pkg in debootstrap desktop-file-utils appstream flatpak-builder systemd binutils xz-utils libnss-extrausers; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
# Tailscale SSH's lab tests: OpenSSH's client tools (ssh, scp, sftp, ssh-keyscan, ssh-agent,
# ssh-keygen) talk to Skein's server, and sshd plays the host's own SSH server on port 22
# (systemd, above, brings systemd-socket-activate, which starts the session helper as its socket
# unit would).
for pkg in openssh-client openssh-server; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
command -v go >/dev/null || { echo "deps: Go is not installed (need Go 1.26)"; exit 1; }
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "deps: run as root to install: ${need[*]}"; exit 1; fi
  apt-get update -qq
  # Installing a server package must not start it on this machine (openssh-server would start
  # sshd on port 22): policy-rc.d is Debian's switch for that, in place only for the install.
  guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && guard=1
  fi
  rc=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" || rc=$?
  [ -n "$guard" ] && rm -f /usr/sbin/policy-rc.d
  exit $rc
fi
