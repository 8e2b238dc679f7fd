#!/usr/bin/env bash
# Benchmarks the two pre-forked PING servers, examples/ping_kevent.rs (kevent queues) and
# examples/ping_epoll.rs (epoll + EPOLLEXCLUSIVE), with redis-benchmark on loopback.
#
#   bash examples/bench_ping.sh
#
# Installs redis-benchmark if it is missing (apt-get, package redis-tools), builds both
# examples in release mode, then runs the servers in rotation (kevent, epoll, kevent,
# epoll, ...; ROUNDS rounds) so that drift of the machine hits both alike. Each run:
# start the server, wait until it answers PING, then
#   redis-benchmark -t ping -n N  -c 50 -q           (one request in flight per client)
#   redis-benchmark -t ping -n NP -c 50 -q -P 16     (16 pipelined requests per client)
# stop it (SIGTERM), and check that it exited cleanly and answered every PING sent.
# Prints the median requests/s over the rounds for PING_INLINE and PING_MBULK, and
# kevent/epoll.
#
# Environment (defaults in brackets):
#   ROUNDS [3]  WORKERS [2]  N [200000]  NP [2000000]  CLIENTS [50]
#   PORT_KEVENT [6390]  PORT_EPOLL [6391]
#   KEVENT_ARGS [] extra arguments for ping_kevent (e.g. "--own-call wait")
#   CARGO_TARGET_DIR [<repo>/target] where cargo builds
#   KEEP_LOGS [] set to keep the server and client logs (their directory is printed)
#
# Everything is bounded: each redis-benchmark run by a 120 s timeout, server start by
# 10 s, server stop by 5 s; servers still running when the script ends are killed.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
WORKERS=${WORKERS:-2}
N=${N:-200000}
NP=${NP:-2000000}
CLIENTS=${CLIENTS:-50}
PORT_KEVENT=${PORT_KEVENT:-6390}
PORT_EPOLL=${PORT_EPOLL:-6391}
KEVENT_ARGS=${KEVENT_ARGS:-}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench_ping.XXXXXX")
RESULTS=$WORK/results
: >"$RESULTS"
SERVER_PID=

die() {
    echo "bench_ping: $*" >&2
    exit 1
}

cleanup() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true # its workers die with it (PDEATHSIG)
    fi
    if [[ -n ${KEEP_LOGS:-} ]]; then
        echo "logs kept in $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- tools -----------------------------------------------------------------------------
if ! command -v redis-benchmark >/dev/null; then
    echo "redis-benchmark not found: installing redis-tools"
    SUDO=
    [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null && SUDO=sudo
    ($SUDO apt-get update && $SUDO apt-get install -y redis-tools) >"$WORK/apt.log" 2>&1 ||
        die "could not install redis-tools (see $WORK/apt.log; KEEP_LOGS=1 keeps it)"
    command -v redis-benchmark >/dev/null || die "redis-benchmark still missing"
fi

echo "building the examples (release)..."
cargo build --release --quiet --example ping_kevent --example ping_epoll
# Where cargo put them (honours CARGO_TARGET_DIR and .cargo/config.toml).
TARGET=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
BIN_KEVENT=$TARGET/release/examples/ping_kevent
BIN_EPOLL=$TARGET/release/examples/ping_epoll
[[ -x $BIN_KEVENT && -x $BIN_EPOLL ]] || die "built examples not found under $TARGET"

# --- helpers ---------------------------------------------------------------------------
# Succeeds if something on 127.0.0.1:$1 accepts a connection.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Succeeds if the server on port $1 answers an inline PING with +PONG.
answers_ping() (
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf 'PING\r\n' >&3
    IFS= read -r -t 1 line <&3 || exit 1
    [[ $line == +PONG* ]]
)

# run_server NAME ROUND: one run of server NAME (kevent|epoll).
run_server() {
    local name=$1 round=$2 bin port args log
    if [[ $name == kevent ]]; then
        bin=$BIN_KEVENT port=$PORT_KEVENT args=$KEVENT_ARGS
    else
        bin=$BIN_EPOLL port=$PORT_EPOLL args=
    fi
    log=$WORK/$name.$round.log
    port_open "$port" && die "port $port is in use already"
    # shellcheck disable=SC2086 # $args is a list of words
    "$bin" --port "$port" --workers "$WORKERS" $args >"$log" 2>&1 &
    SERVER_PID=$!
    local ok=
    for _ in $(seq 100); do
        if answers_ping "$port" 2>/dev/null; then
            ok=1
            break
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    [[ -n $ok ]] || { cat "$log" >&2; die "$name server did not answer PING on port $port"; }

    local sent=1 # the readiness probe above
    local mode n extra out
    for mode in plain pipelined; do
        if [[ $mode == plain ]]; then n=$N extra=; else n=$NP extra="-P 16"; fi
        out=$WORK/$name.$round.$mode.out
        # shellcheck disable=SC2086
        if ! timeout 120 redis-benchmark -h 127.0.0.1 -p "$port" -t ping -n "$n" \
            -c "$CLIENTS" -q $extra >"$out" 2>&1; then
            cat "$out" "$log" >&2
            die "redis-benchmark failed or timed out on the $name server ($mode)"
        fi
        # -q prints progress lines separated by \r; keep the final results.
        tr '\r' '\n' <"$out" | grep -v 'Could not fetch server CONFIG' |
            grep -iE 'error|refused|reset' && {
            cat "$log" >&2
            die "redis-benchmark reported errors on the $name server ($mode)"
        }
        local test label rps
        for test in PING_INLINE PING_MBULK; do
            rps=$(tr '\r' '\n' <"$out" | awk -v t="$test:" \
                '$1 == t && $3 == "requests" { print $2 }' | tail -1)
            [[ -n $rps ]] || { cat "$out" >&2; die "no $test result from the $name server"; }
            label=$test
            [[ $mode == pipelined ]] && label="$test -P16"
            echo "$name|$label|$rps" >>"$RESULTS"
            printf '  round %d  %-6s %-17s %12.0f req/s\n' "$round" "$name" "$label" "$rps"
        done
        sent=$((sent + 2 * n))
    done

    kill -TERM "$SERVER_PID"
    local status=0
    for _ in $(seq 50); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -KILL "$SERVER_PID"
        die "$name server did not stop within 5 s of SIGTERM"
    fi
    wait "$SERVER_PID" || status=$?
    SERVER_PID=
    [[ $status -eq 0 ]] || { cat "$log" >&2; die "$name server exited with status $status"; }
    local answered
    answered=$(awk '/answered [0-9]+ PINGs/ { for (i = 1; i < NF; i++) if ($i == "answered") s += $(i + 1) } END { printf "%d\n", s }' "$log")
    printf '  round %d  %-6s connections accepted per worker: %s\n' "$round" "$name" \
        "$(awk '/accepted [0-9]+ connections/ { for (i = 1; i < NF; i++) if ($i == "accepted") printf "%s%s", sep, $(i + 1); sep = " / " }' "$log")"
    [[ $answered -ge $sent ]] || {
        cat "$log" >&2
        die "$name server answered $answered PINGs, $sent were sent"
    }
}

# --- the runs ----------------------------------------------------------------------------
echo "$(nproc) CPUs, Linux $(uname -r); $WORKERS workers per server, $CLIENTS clients," \
    "n=$N (n=$NP with -P 16), $ROUNDS rounds${KEVENT_ARGS:+; ping_kevent $KEVENT_ARGS}"
for round in $(seq "$ROUNDS"); do
    for name in kevent epoll; do
        run_server "$name" "$round"
    done
done

# --- the table ---------------------------------------------------------------------------
median() { # the median of the numbers on stdin
    sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
echo
echo "median requests/s over $ROUNDS rounds (redis-benchmark -c $CLIENTS, $WORKERS workers)"
printf '%-17s %14s %14s %14s\n' test kevent epoll kevent/epoll
for test in PING_INLINE PING_MBULK "PING_INLINE -P16" "PING_MBULK -P16"; do
    k=$(awk -F'|' -v t="$test" '$1 == "kevent" && $2 == t { print $3 }' "$RESULTS" | median)
    e=$(awk -F'|' -v t="$test" '$1 == "epoll" && $2 == t { print $3 }' "$RESULTS" | median)
    printf '%-17s %14.0f %14.0f %14.2f\n' "$test" "$k" "$e" "$(awk -v k="$k" -v e="$e" 'BEGIN { print k / e }')"
done
