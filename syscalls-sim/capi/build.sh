#!/usr/bin/env bash
# Builds libkevent for C: the shared and static libraries, the header and kevent.pc, into
# one directory (default: capi/ in the target dir — CARGO_TARGET_DIR, relative to the
# repository's top, else target/ there):
#
#   DIR/lib/libkevent.so.0, DIR/lib/libkevent.so -> libkevent.so.0, DIR/lib/libkevent.a
#   DIR/include/kevent.h
#   DIR/lib/pkgconfig/kevent.pc
#
# Usage: bash syscalls-sim/capi/build.sh [--prefix DIR] [--debug]
# Cargo's own output goes where it always does (CARGO_TARGET_DIR, else target/); set
# RUSTFLAGS as for any build (valgrind: RUSTFLAGS="--cfg rustix_use_libc", in a target
# dir of its own).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tdir="${CARGO_TARGET_DIR:-$root/target}"
[[ $tdir == /* ]] || tdir="$root/$tdir"
prefix="$tdir/capi"
profile=release
while [[ $# -gt 0 ]]; do
    case "$1" in
        --prefix) prefix="$2"; shift 2 ;;
        --debug) profile=debug; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
mkdir -p "$prefix"
prefix="$(cd "$prefix" && pwd)"

cd "$root"
if [[ $profile == release ]]; then
    cargo build --release -p kevent-capi --lib
else
    cargo build -p kevent-capi --lib
fi
out="$tdir/$profile"

version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/Cargo.toml" | head -1)"
mkdir -p "$prefix/lib/pkgconfig" "$prefix/include"
rm -f "$prefix/lib/libkevent.so" "$prefix/lib/libkevent.so.0" "$prefix/lib/libkevent.a"
cp "$out/libkevent_capi.so" "$prefix/lib/libkevent.so.0"
ln -s libkevent.so.0 "$prefix/lib/libkevent.so"
cp "$out/libkevent_capi.a" "$prefix/lib/libkevent.a"
cp "$here/include/kevent.h" "$prefix/include/kevent.h"
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" "$here/kevent.pc.in" \
    > "$prefix/lib/pkgconfig/kevent.pc"
echo "libkevent $version ($profile) in $prefix:"
echo "  export PKG_CONFIG_PATH=$prefix/lib/pkgconfig"
