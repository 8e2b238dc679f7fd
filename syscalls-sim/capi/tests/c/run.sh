#!/usr/bin/env bash
# Builds libkevent (build.sh) and compiles and runs every C program of this folder
# against it, as .ci/run does:
#   - kevent.h compiled as C99 (-Wall -Wextra -Werror) and as C++17 (-Wall -Werror);
#   - layout.c, as C and as C++, against the shared library, and once statically linked;
#   - each test program, compiled the way a C user would (pkg-config), run with a time
#     limit; it exits 0 only if its accounting was exact.
# With --valgrind, the library is built with --cfg rustix_use_libc (valgrind cannot
# follow rustix's raw system calls) in valgrind/ of the target dir (CARGO_TARGET_DIR,
# relative to the repository's top, else target/), and the programs named by
# VALGRIND_PROGRAMS (default: ring_reader fork_share) run under valgrind's memcheck,
# which must report 0 errors.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../../.." && pwd)"
cd "$root"

valgrind=0
[[ ${1:-} == --valgrind ]] && valgrind=1

tdir="${CARGO_TARGET_DIR:-$root/target}"
[[ $tdir == /* ]] || tdir="$root/$tdir"
if [[ $valgrind == 1 ]]; then
    prefix="$tdir/capi-valgrind"
    RUSTFLAGS="--cfg rustix_use_libc" CARGO_TARGET_DIR="$tdir/valgrind" \
        bash syscalls-sim/capi/build.sh --prefix "$prefix" >/dev/null
else
    prefix="$tdir/capi"
    bash syscalls-sim/capi/build.sh --prefix "$prefix" >/dev/null
fi
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
bin="$prefix/tests"
mkdir -p "$bin"
cflags="-std=c99 -Wall -Wextra -Werror -O2 -g -pthread"

compile() { # name: compile tests/c/name.c as a C user would
    gcc $cflags "$here/$1.c" $(pkg-config --cflags --libs kevent) -o "$bin/$1"
}

if [[ $valgrind == 0 ]]; then
    echo "-- kevent.h: C99 and C++17, warnings as errors"
    gcc -std=c99 -Wall -Wextra -Werror -fsyntax-only -x c "$prefix/include/kevent.h"
    g++ -std=c++17 -Wall -Werror -fsyntax-only -x c++ "$prefix/include/kevent.h"
    echo "-- layout: the header against the library (C, C++, static)"
    compile layout
    "$bin/layout"
    g++ -std=c++17 -Wall -Wextra -Werror -x c++ "$here/layout.c" \
        $(pkg-config --cflags --libs kevent) -o "$bin/layout-cxx"
    "$bin/layout-cxx"
    gcc $cflags "$here/layout.c" $(pkg-config --cflags kevent) "$prefix/lib/libkevent.a" \
        $(pkg-config --static --libs-only-l kevent | sed 's/-lkevent//') -o "$bin/layout-static"
    "$bin/layout-static"
    for t in ring_reader get_events signal_timer fork_share prefork_echo share errors; do
        echo "-- $t"
        compile "$t"
        timeout 120 "$bin/$t"
    done
else
    for t in ${VALGRIND_PROGRAMS:-ring_reader fork_share}; do
        echo "-- valgrind $t"
        compile "$t"
        # Small runs: valgrind is ~50 times slower. --error-exitcode makes any error fail.
        case "$t" in
            ring_reader) args="16 100000" ;;
            *) args="" ;;
        esac
        timeout 600 valgrind -q --error-exitcode=99 --leak-check=no \
            --child-silent-after-fork=no "$bin/$t" $args
    done
fi
