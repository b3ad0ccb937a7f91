#!/usr/bin/env bash
# Installs (or with --uninstall removes) Skein's files: the one place that says where each
# file goes, used by `make install`, by `make package` (staging the .deb trees) and by the
# Flatpak build.
#
#   packaging/install.sh [--uninstall] helper|desktop...
#
#   helper   skeind, skein, the systemd unit, tmpfiles.d entry, man pages, shell completions,
#            the copyright file (share/doc/skein/copyright)
#   desktop  skein-gui, its .desktop file, D-Bus service file, the receiver's systemd user
#            unit, AppStream metainfo, icons and copyright file (share/doc/skein-desktop/copyright)
#
# Settings (environment): DESTDIR (staging root, default none), PREFIX (default /usr/local),
# BIN (built binaries, default bin), GEN (output of `packaging/gen docs`, `gen icons` and
# `gen notices` into GEN/doc/PACKAGE/copyright, default $BIN/gen), SYSTEMDUNITDIR (default $PREFIX/lib/systemd/system), TMPFILESDIR
# (default $PREFIX/lib/tmpfiles.d), ZSHCOMPDIR (default: Debian's vendor-completions for
# PREFIX=/usr, else $PREFIX/share/zsh/site-functions).
set -euo pipefail
cd "$(dirname "$0")/.."

uninstall=0
if [ "${1:-}" = --uninstall ]; then uninstall=1; shift; fi
[ $# -gt 0 ] || { echo "usage: $0 [--uninstall] helper|desktop..." >&2; exit 2; }

DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
BIN=${BIN:-bin}
GEN=${GEN:-$BIN/gen}
SYSTEMDUNITDIR=${SYSTEMDUNITDIR:-$PREFIX/lib/systemd/system}
TMPFILESDIR=${TMPFILESDIR:-$PREFIX/lib/tmpfiles.d}
USERUNITDIR=${USERUNITDIR:-$PREFIX/lib/systemd/user}
if [ "$PREFIX" = /usr ]; then
    ZSHCOMPDIR=${ZSHCOMPDIR:-/usr/share/zsh/vendor-completions}
else
    ZSHCOMPDIR=${ZSHCOMPDIR:-$PREFIX/share/zsh/site-functions}
fi
APPID=io.github.skeinvpn.Skein

# put MODE SRC DST: install one file (or remove it).
put() {
    local mode=$1 src=$2 dst=$DESTDIR$3
    if [ $uninstall = 1 ]; then
        rm -f "$dst"
        return
    fi
    [ -f "$src" ] || { echo "install.sh: $src is missing (build it first: make build build-gui)" >&2; exit 1; }
    install -D -m "$mode" "$src" "$dst"
}

# putgz SRC DST: a man page, compressed reproducibly (no name or time in the gzip header).
putgz() {
    local src=$1 dst=$DESTDIR$2
    if [ $uninstall = 1 ]; then rm -f "$dst"; return; fi
    [ -f "$src" ] || { echo "install.sh: $src is missing" >&2; exit 1; }
    install -d -m 755 "$(dirname "$dst")"
    gzip -9 -n -c "$src" >"$dst"
    chmod 644 "$dst"
}

helper() {
    put 755 "$BIN/skeind" "$PREFIX/sbin/skeind"
    put 755 "$BIN/skein" "$PREFIX/bin/skein"
    local unit
    for unit in skeind.service skein-session-helper.service; do
        if [ $uninstall = 1 ]; then
            rm -f "$DESTDIR$SYSTEMDUNITDIR/$unit"
        else
            install -d -m 755 "$DESTDIR$SYSTEMDUNITDIR"
            sed "s|@SBINDIR@|$PREFIX/sbin|g" "packaging/systemd/$unit.in" >"$DESTDIR$SYSTEMDUNITDIR/$unit"
            chmod 644 "$DESTDIR$SYSTEMDUNITDIR/$unit"
        fi
    done
    put 644 packaging/systemd/skein-session-helper.socket "$SYSTEMDUNITDIR/skein-session-helper.socket"
    put 644 packaging/systemd/skein.tmpfiles "$TMPFILESDIR/skein.conf"
    putgz "$GEN/man/skein.1" "$PREFIX/share/man/man1/skein.1.gz"
    putgz "$GEN/man/skeind.8" "$PREFIX/share/man/man8/skeind.8.gz"
    put 644 "$GEN/completions/bash/skein" "$PREFIX/share/bash-completion/completions/skein"
    put 644 "$GEN/completions/zsh/_skein" "$ZSHCOMPDIR/_skein"
    put 644 "$GEN/completions/fish/skein.fish" "$PREFIX/share/fish/vendor_completions.d/skein.fish"
    put 644 "$GEN/doc/skein/copyright" "$PREFIX/share/doc/skein/copyright"
}

desktop() {
    put 755 "$BIN/skein-gui" "$PREFIX/bin/skein-gui"
    put 644 "packaging/linux/$APPID.desktop" "$PREFIX/share/applications/$APPID.desktop"
    if [ $uninstall = 1 ]; then
        rm -f "$DESTDIR$PREFIX/share/dbus-1/services/$APPID.service"
    else
        install -d -m 755 "$DESTDIR$PREFIX/share/dbus-1/services"
        sed "s|@BINDIR@|$PREFIX/bin|g" "packaging/linux/$APPID.service.in" >"$DESTDIR$PREFIX/share/dbus-1/services/$APPID.service"
        chmod 644 "$DESTDIR$PREFIX/share/dbus-1/services/$APPID.service"
    fi
    if [ $uninstall = 1 ]; then
        rm -f "$DESTDIR$USERUNITDIR/skein-receive.service"
    else
        install -d -m 755 "$DESTDIR$USERUNITDIR"
        sed "s|@BINDIR@|$PREFIX/bin|g" packaging/systemd/skein-receive.service.in >"$DESTDIR$USERUNITDIR/skein-receive.service"
        chmod 644 "$DESTDIR$USERUNITDIR/skein-receive.service"
    fi
    put 644 "packaging/linux/$APPID.metainfo.xml" "$PREFIX/share/metainfo/$APPID.metainfo.xml"
    put 644 "$GEN/doc/skein-desktop/copyright" "$PREFIX/share/doc/skein-desktop/copyright"
    # The sizes packaging/gen icons makes (its IconSizes).
    local s
    for s in 16 24 32 48 64 128 256; do
        put 644 "$GEN/icons/hicolor/${s}x$s/apps/$APPID.png" "$PREFIX/share/icons/hicolor/${s}x$s/apps/$APPID.png"
    done
}

for c in "$@"; do
    case $c in
    helper) helper ;;
    desktop) desktop ;;
    *) echo "install.sh: unknown component $c (helper, desktop)" >&2; exit 2 ;;
    esac
done
