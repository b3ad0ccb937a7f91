#!/usr/bin/env bash
# Lays out a directory flatpak-builder can build from without network:
#
#   DIR/io.github.skeinvpn.Skein.yml   a copy of the manifest
#   DIR/src/                           the source tree (tracked files plus new, not ignored
#                                      ones) with vendor/ from `go mod vendor`
#   DIR/src/.skein-version             the version the app will print
#   DIR/src/bin/gen/doc/skein-desktop/copyright   the licences of everything the app links
#
# The repository itself gets no vendor/ directory. Usage: prepare.sh DIR (default bin/flatpak).
set -euo pipefail
cd "$(dirname "$0")/../.."
GO=${GO:-go}
dir=${1:-bin/flatpak}
version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}

rm -rf "$dir/src"
mkdir -p "$dir/src"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do
            # Skip deleted files, build outputs and test binaries left in the tree.
            [ -f "$f" ] || continue
            case $f in vendor/* | bin/* | *.test) continue ;; esac
            printf '%s\0' "$f"
        done | tar --null -T - -cf - | tar -C "$dir/src" -xf -
else
    tar --exclude=./bin --exclude=./vendor --exclude=./.git -cf - . | tar -C "$dir/src" -xf -
fi
printf '%s\n' "$version" >"$dir/src/.skein-version"
(cd "$dir/src" && GOFLAGS=-mod=mod $GO mod vendor)
# The copyright file, made here from the module cache: vendor/ lacks the licences of non-Go
# directories (embedded fonts, cgo's C sources), and the build itself runs offline.
GO=$GO $GO run ./packaging/gen notices -pkg . -name skein-gui -tags flatpak -cgo 1 -out "$dir/src/bin/gen/doc/skein-desktop/copyright"
cp packaging/flatpak/io.github.skeinvpn.Skein.yml "$dir/"
echo "prepare.sh: $dir/src ready ($(du -sh "$dir/src/vendor" | cut -f1) of vendored modules)"
