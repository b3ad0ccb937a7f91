#!/usr/bin/env bash
# make flatpak: builds the Flatpak of the desktop app into bin/skein.flatpak.
#
# Needs flatpak and flatpak-builder, and from Flathub the runtime, SDK and Go extension:
#   flatpak remote-add --user --if-not-exists flathub https://dl.flathub.org/repo/flathub.flatpakrepo
#   flatpak install --user flathub org.freedesktop.Platform//25.08 org.freedesktop.Sdk//25.08 \
#       org.freedesktop.Sdk.Extension.golang//25.08
# (or set FLATPAK_INSTALL_DEPS=1 and flatpak-builder installs them from Flathub itself).
# The build itself runs offline, from the vendored modules prepare.sh puts beside the source.
# Settings: FLATPAK_DIR (default bin/flatpak), FLATPAK_BUNDLE (default bin/skein.flatpak),
# FLATPAK_INSTALL=1 also installs the app for this user.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${FLATPAK_DIR:-bin/flatpak}
bundle=${FLATPAK_BUNDLE:-bin/skein.flatpak}
app=io.github.skeinvpn.Skein

for tool in flatpak flatpak-builder; do
    command -v $tool >/dev/null || { echo "build.sh: $tool is not installed (Debian: apt-get install flatpak flatpak-builder)" >&2; exit 1; }
done
packaging/flatpak/prepare.sh "$dir"

args=(--force-clean --disable-rofiles-fuse --repo="$dir/repo" --state-dir="$dir/.flatpak-builder")
if [ "${FLATPAK_INSTALL_DEPS:-0}" = 1 ]; then
    args+=(--user --install-deps-from=flathub)
elif ! flatpak info org.freedesktop.Sdk//25.08 >/dev/null 2>&1 ||
    ! flatpak info org.freedesktop.Sdk.Extension.golang//25.08 >/dev/null 2>&1; then
    echo "build.sh: the freedesktop SDK 25.08 and its Go extension are not installed; see the top of $0" >&2
    exit 1
fi
if [ "${FLATPAK_INSTALL:-0}" = 1 ]; then
    args+=(--user --install)
fi
flatpak-builder "${args[@]}" "$dir/build" "$dir/$app.yml"
flatpak build-bundle "$dir/repo" "$bundle" "$app"
echo "build.sh: $bundle (install: flatpak install --user $bundle)"
