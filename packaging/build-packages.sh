#!/usr/bin/env bash
# make package: builds skeind, skein and skein-gui, the man pages, completions and icons,
# stages the two package trees with packaging/install.sh and wraps them with nfpm:
#
#   OUT/skein_VERSION_ARCH.deb          helper + CLI + systemd unit + copyright
#   OUT/skein-desktop_VERSION_ARCH.deb  desktop app + .desktop + metainfo + icons + copyright
#
# Reproducible: the same commit, Go and C toolchain give byte-identical packages
# (-trimpath, no build ID, file times and man page dates from SOURCE_DATE_EPOCH, which
# defaults to the last commit's time). Settings: OUT (default bin/packages), VERSION (what
# the binaries print; default git describe), PKG_VERSION (default from FyneApp.toml and git),
# PKG_MAINTAINER, GO, NFPM (an nfpm binary; default: built from the Go module proxy).
set -euo pipefail
cd "$(dirname "$0")/.."
umask 022
export LC_ALL=C TZ=UTC

GO=${GO:-go}
OUT=${OUT:-bin/packages}
NFPM_VERSION=v2.45.2
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}

# The package version: FyneApp.toml's Version for a tagged release (tag vX.Y.Z); between
# releases X.Y.Z~gitDATE.HASH before the first tag of X.Y.Z, X.Y.Z+gitN.gHASH after it.
base=$(sed -n 's/^[[:space:]]*Version[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' FyneApp.toml | head -1)
[ -n "$base" ] || { echo "build-packages: no Version in FyneApp.toml" >&2; exit 1; }
if [ -z "${PKG_VERSION:-}" ]; then
    if desc=$(git describe --tags --match 'v[0-9]*' 2>/dev/null); then
        desc=${desc#v}
        if [[ $desc =~ ^(.*)-([0-9]+)-g([0-9a-f]+)$ ]]; then
            PKG_VERSION="${BASH_REMATCH[1]}+git${BASH_REMATCH[2]}.g${BASH_REMATCH[3]}"
        else
            PKG_VERSION=$desc
        fi
    elif hash=$(git rev-parse --short=7 HEAD 2>/dev/null); then
        PKG_VERSION="$base~git$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d).$hash"
    else
        PKG_VERSION=$base
    fi
fi
export PKG_VERSION
export PKG_MAINTAINER=${PKG_MAINTAINER:-"Skein developers <skein@skeinvpn.invalid>"}
export PKG_ARCH=$($GO env GOARCH)

# The nfpm configs name this directory (nfpm does not expand variables in a tree's source).
work=bin/package-work
rm -rf "$work"
mkdir -p "$work/bin" "$OUT"
ldflags="-s -w -buildid= -X github.com/skeinvpn/skein/internal/version.Version=$VERSION"
echo "build-packages: skein $PKG_VERSION ($VERSION) for $PKG_ARCH"
CGO_ENABLED=0 $GO build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$work/bin/" ./cmd/skeind ./cmd/skein
CGO_ENABLED=1 $GO build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$work/bin/skein-gui" .
$GO run ./packaging/gen docs -skein "$work/bin/skein" -skeind "$work/bin/skeind" -version "$PKG_VERSION" -out "$work/gen"
$GO run ./packaging/gen icons -src assets/skein.png -out "$work/gen/icons"
# The copyright files with every linked module's licence, from the binaries' build info.
GO=$GO $GO run ./packaging/gen notices -bin "$work/bin/skeind" -bin "$work/bin/skein" -out "$work/gen/doc/skein/copyright"
GO=$GO $GO run ./packaging/gen notices -bin "$work/bin/skein-gui" -out "$work/gen/doc/skein-desktop/copyright"

# The newest glibc symbol version skein-gui uses is the libc6 it depends on.
PKG_GLIBC=$(objdump -T "$work/bin/skein-gui" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
[ -n "$PKG_GLIBC" ] || { echo "build-packages: cannot read skein-gui's glibc needs" >&2; exit 1; }
export PKG_GLIBC

for comp in helper desktop; do
    name=skein; [ $comp = desktop ] && name=skein-desktop
    DESTDIR="$work/stage/$name" PREFIX=/usr BIN="$work/bin" GEN="$work/gen" \
        SYSTEMDUNITDIR=/usr/lib/systemd/system TMPFILESDIR=/usr/lib/tmpfiles.d \
        packaging/install.sh $comp
done
find "$work/stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

nfpm=${NFPM:-bin/tools/nfpm}
if [ ! -x "$nfpm" ] || ! $GO version -m "$nfpm" | grep -q "nfpm/v2[[:space:]]*$NFPM_VERSION"; then
    echo "build-packages: building nfpm $NFPM_VERSION from the Go module proxy"
    GOBIN="$PWD/bin/tools" $GO install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION"
    nfpm=bin/tools/nfpm
fi
rm -f "$OUT"/skein_*.deb "$OUT"/skein-desktop_*.deb
for name in skein skein-desktop; do
    "$nfpm" package --config "packaging/nfpm/$name.yaml" --packager deb --target "$OUT/"
done
ls -l "$OUT"/*.deb
