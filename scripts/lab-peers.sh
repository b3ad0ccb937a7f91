#!/usr/bin/env bash
# lab-peers.sh: build the third-party binaries used by the Skein test lab
# (internal/lab): Headscale (control server) and the official
# tailscale/tailscaled (interop peers).
#
# Idempotent: a binary that already exists is not rebuilt. Builds happen in a
# throwaway module in a temp dir (`go install pkg@version` is refused here), the
# result is moved into place atomically, and the temp dir is removed.
#
#   ${SKEIN_LAB_CACHE:-/var/cache/skein-lab}/headscale-v0.27.1/headscale
#   ${SKEIN_LAB_CACHE:-/var/cache/skein-lab}/tailscale-v1.86.5/{tailscale,tailscaled}
#   ${SKEIN_LAB_CACHE:-/var/cache/skein-lab}/tailscale-v1.86.5/{stund,derper} (extra lab regions)
#   ... and with LAB_EXTRA=1 also tailscale-v1.102.5/{tailscale,tailscaled}
#
# Prints the paths of the binaries on stdout (build logs go to stderr).
set -euo pipefail

CACHE="${SKEIN_LAB_CACHE:-/var/cache/skein-lab}"
HEADSCALE_VERSION="v0.27.1"
TAILSCALE_VERSIONS=("v1.86.5")
if [[ "${LAB_EXTRA:-0}" == "1" ]]; then
	TAILSCALE_VERSIONS+=("v1.102.5")
fi

export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod"

log() { echo "lab-peers: $*" >&2; }

# build_into DIR PKG@VERSION... -- BUILDPKG...
# Builds BUILDPKGs into DIR using a throwaway module that requires the given
# package versions.
build_into() {
	local dir="$1"
	shift
	local gets=()
	while [[ "$1" != "--" ]]; do
		gets+=("$1")
		shift
	done
	shift
	local tmp rc=0
	tmp="$(mktemp -d "${TMPDIR:-/tmp}/skein-lab-build.XXXXXX")"
	mkdir -p "$dir" "$tmp/out"
	(
		set -e
		cd "$tmp"
		go mod init skeinlabbuild >/dev/null 2>&1
		go get "${gets[@]}"
		go build -o "$tmp/out/" "$@"
		for f in "$tmp"/out/*; do
			# Same file system in the common case; mv of a complete file
			# keeps a half-written binary from ever appearing in $dir.
			cp "$f" "$dir/.$(basename "$f").tmp"
			mv -f "$dir/.$(basename "$f").tmp" "$dir/$(basename "$f")"
		done
	) >&2 || rc=$?
	rm -rf "$tmp"
	return "$rc"
}

hs_dir="$CACHE/headscale-$HEADSCALE_VERSION"
if [[ -x "$hs_dir/headscale" ]]; then
	log "headscale $HEADSCALE_VERSION already built"
else
	log "building headscale $HEADSCALE_VERSION (takes a few minutes)"
	build_into "$hs_dir" "github.com/juanfont/headscale/cmd/headscale@$HEADSCALE_VERSION" -- \
		github.com/juanfont/headscale/cmd/headscale
fi
echo "$hs_dir/headscale"

for v in "${TAILSCALE_VERSIONS[@]}"; do
	ts_dir="$CACHE/tailscale-$v"
	if [[ -x "$ts_dir/tailscale" && -x "$ts_dir/tailscaled" ]]; then
		log "tailscale $v already built"
	else
		log "building tailscale $v (takes a few minutes)"
		build_into "$ts_dir" "tailscale.com/cmd/tailscaled@$v" "tailscale.com/cmd/tailscale@$v" -- \
			tailscale.com/cmd/tailscale tailscale.com/cmd/tailscaled
	fi
	echo "$ts_dir/tailscale"
	echo "$ts_dir/tailscaled"
done

# The official STUN and DERP servers, for the lab's extra DERP regions (internal/lab
# AddSTUNOnlyRegion, AddDERPRegion).
ts_dir="$CACHE/tailscale-${TAILSCALE_VERSIONS[0]}"
for cmd in stund derper; do
	if [[ -x "$ts_dir/$cmd" ]]; then
		log "$cmd ${TAILSCALE_VERSIONS[0]} already built"
	else
		log "building $cmd ${TAILSCALE_VERSIONS[0]}"
		build_into "$ts_dir" "tailscale.com/cmd/$cmd@${TAILSCALE_VERSIONS[0]}" -- "tailscale.com/cmd/$cmd"
	fi
	echo "$ts_dir/$cmd"
done
