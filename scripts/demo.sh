#!/usr/bin/env bash
# make demo: a demo tailnet on this machine (Headscale + two official tailscaled peers in
# network namespaces) with skeind logged into it; shows `skein status`, then waits for Ctrl-C
# and removes everything. DEMO_FLAGS=-exit stops right after showing (used by CI).
# With a display ($DISPLAY set, not in CI) it also opens the desktop app on the demo's skeind,
# as the user who ran sudo.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "demo: network namespaces need root; run: sudo make demo" >&2
  exit 1
fi
if [ -z "${DISPLAY:-}" ] || [ -n "${CI:-}" ] || [[ " ${DEMO_FLAGS:-} " == *" -exit "* ]]; then
  exec bin/skein-lab up -skeind bin/skeind -skein bin/skein ${DEMO_FLAGS:-}
fi

make --no-print-directory build-gui
started=$(date +%s)
bin/skein-lab up -skeind bin/skeind -skein bin/skein ${DEMO_FLAGS:-} &
lab=$!
gui=
cleanup() {
  [ -n "$gui" ] && kill "$gui" 2>/dev/null
  kill -INT "$lab" 2>/dev/null
  wait "$lab" 2>/dev/null
}
trap cleanup INT TERM EXIT

# The demo's skeind socket: $TMPDIR/skein-lab-<run>/run-skein/skeind.sock of this run.
sock=
for _ in $(seq 1 600); do
  kill -0 "$lab" 2>/dev/null || exit 1
  for s in "${TMPDIR:-/tmp}"/skein-lab-*/run-skein/skeind.sock; do
    if [ -S "$s" ] && [ "$(stat -c %Y "$s")" -ge "$started" ]; then sock=$s; fi
  done
  [ -n "$sock" ] && break
  sleep 0.5
done
if [ -z "$sock" ]; then
  echo "demo: skeind's socket did not appear; not opening the app" >&2
  wait "$lab"
  exit
fi

# Run the app as the desktop's user (its X and session bus), not as root.
as=()
if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
  uid=$(id -u "$SUDO_USER")
  as=(sudo -u "$SUDO_USER" env DISPLAY="$DISPLAY" XAUTHORITY="${XAUTHORITY:-$(getent passwd "$SUDO_USER" | cut -d: -f6)/.Xauthority}"
    XDG_RUNTIME_DIR="/run/user/$uid" DBUS_SESSION_BUS_ADDRESS="${DBUS_SESSION_BUS_ADDRESS:-unix:path=/run/user/$uid/bus}")
fi
echo "demo: opening the desktop app on $sock"
"${as[@]}" bin/skein-gui --socket "$sock" &
gui=$!
wait "$lab"
