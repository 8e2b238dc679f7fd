#!/usr/bin/env bash
# The HTTP server benchmark of issue 12 (items 4 and 5): kevent-httpd's back-ends and
# Debian's nginx under wrk (keep-alive) and ab (a connection per request) at 100, 1,000
# and 8,000 connections, on loopback, variants rotated between rounds, medians; then the
# stalled-worker run (worker 0 stopped 200 ms every second) under wrk --latency at 1,000.
#
# usage: benches/http/run.sh [--quick] [--rounds N] [--duration S] [--ab-requests N]
#                            [--workers N] [--variants "v1 v2 ..."] [--no-stall]
#                            [--out FILE]
#
# Variants: kevent-threads, kevent-procs (optionally /level or /edge: the trigger of
# their connections), epoll-reuseport, epoll-exclusive, tokio, nginx.
#
# Installs wrk, apache2-utils (ab) and nginx-light with apt-get if they are missing.
# Everything it measured lands in target/http-bench/<time>/ (raw client outputs,
# results.md, results.json); --out copies results.md there too.
set -euo pipefail

ROUNDS=3 DURATION=5 AB_REQUESTS=30000 STALL_DURATION=10 WORKERS=2
CONCS="100 1000 8000" STALL_CONC=1000 STALL=1 OUT="" QUICK=0
# A kevent variant may name its trigger: kevent-threads/level, kevent-threads/edge.
VARIANTS="kevent-threads/level kevent-threads/edge kevent-procs/edge epoll-reuseport epoll-exclusive tokio nginx"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; ROUNDS=1; DURATION=1; AB_REQUESTS=3000; STALL_DURATION=3; shift ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --ab-requests) AB_REQUESTS=$2; shift 2 ;;
        --workers) WORKERS=$2; shift 2 ;;
        --variants) VARIANTS=$2; shift 2 ;;
        --no-stall) STALL=0; shift ;;
        --out) OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"

# --- what it needs -----------------------------------------------------------------
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v ab >/dev/null || need+=(apache2-utils)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null && apt-get install -y -qq "${need[@]}" >/dev/null; }
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# 8,000 connections: 8,000 fds in the client and 8,000 in the server (plus a few).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 8200 ]; then
    echo "run.sh: ulimit -n is $(ulimit -n): 8,000 connections do not fit; dropping them" >&2
    CONCS="100 1000"
fi

echo "building kevent-httpd (release)" >&2
nice -n 10 cargo build --release -q -p kevent-bench --bin kevent-httpd
# Cargo's target dir: CARGO_TARGET_DIR (relative to the repository's top), else target/.
TDIR="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ $TDIR == /* ]] || TDIR="$ROOT/$TDIR"
BIN="$TDIR/release/kevent-httpd"

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS="$TDIR/http-bench/$STAMP"
RAW="$RESULTS/raw"
mkdir -p "$RAW"
TMP=$(mktemp -d /tmp/kevent-http-bench.XXXXXX)
# Below the ephemeral range (32768-60999 here), where clients' sockets could hold a port.
SERVER_PID="" STOPPER_PID="" PORT=$((10000 + RANDOM % 10000))

cleanup() {
    stop_server
    rm -rf "$TMP"
}
trap cleanup EXIT

# --- servers -----------------------------------------------------------------------
# The exact page every server serves: kevent-httpd's body, fetched once, given to nginx.
page_body() {
    "$BIN" --backend epoll-exclusive --port 0 >"$TMP/page.out" 2>&1 &
    local pid=$! addr=""
    for _ in $(seq 100); do
        addr=$(sed -n 's/^kevent-httpd: listening on //p' "$TMP/page.out")
        [ -n "$addr" ] && break
        sleep 0.05
    done
    curl -s "http://$addr/" >"$TMP/body.html"
    kill "$pid"; wait "$pid" 2>/dev/null || true
}

nginx_conf() { # $1 port
    local body
    body=$(cat "$TMP/body.html"; printf x) # keep the trailing newline
    body=${body%x}
    cat >"$TMP/nginx.conf" <<CONF
# Same bytes, same worker count as kevent-httpd; nginx's high-load layout
# (reuseport listener, epoll), no access log, keep-alive on.
worker_processes $WORKERS;
worker_rlimit_nofile $(ulimit -n);
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log warn;
daemon off;
user root;
events {
    worker_connections 10000;
    use epoll;
}
http {
    access_log off;
    keepalive_timeout 65;
    keepalive_requests 100000000;
    client_body_temp_path $TMP/nginx-body;
    proxy_temp_path $TMP/nginx-proxy;
    fastcgi_temp_path $TMP/nginx-fastcgi;
    uwsgi_temp_path $TMP/nginx-uwsgi;
    scgi_temp_path $TMP/nginx-scgi;
    server {
        listen 127.0.0.1:$1 reuseport backlog=65535;
        location / {
            default_type text/html;
            return 200 '$body';
        }
    }
}
CONF
}

start_server() { # $1 variant, $2 extra kevent-httpd args (the stall)
    PORT=$((PORT + 1))
    local backend=${1%/*} trigger=""
    [ "$backend" != "$1" ] && trigger="--trigger ${1#*/}"
    if [ "$1" = nginx ]; then
        nginx_conf "$PORT"
        "$NGINX" -c "$TMP/nginx.conf" -p "$TMP" -e "$TMP/nginx-error.log" >"$TMP/server.out" 2>&1 &
        SERVER_PID=$!
    else
        # shellcheck disable=SC2086
        "$BIN" --backend "$backend" --workers "$WORKERS" --port "$PORT" $trigger $2 \
            >"$TMP/server.out" 2>&1 &
        SERVER_PID=$!
    fi
    for _ in $(seq 200); do
        if curl -s -o "$TMP/got.html" "http://127.0.0.1:$PORT/" 2>/dev/null; then
            if ! cmp -s "$TMP/got.html" "$TMP/body.html"; then
                echo "run.sh: $1 serves a different page" >&2; exit 1
            fi
            return 0
        fi
        sleep 0.05
    done
    echo "run.sh: $1 did not start:" >&2; cat "$TMP/server.out" >&2; exit 1
}

stop_server() {
    if [ -n "$STOPPER_PID" ]; then
        kill "$STOPPER_PID" 2>/dev/null || true; wait "$STOPPER_PID" 2>/dev/null || true
        STOPPER_PID=""
        pkill -CONT -P "$SERVER_PID" 2>/dev/null || true
    fi
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true
        rm -f "/tmp/kevent-httpd-$SERVER_PID.sock"
        SERVER_PID=""
    fi
}

# --- clients -----------------------------------------------------------------------
run_wrk() { # $1 conns, $2 seconds, $3 output file
    wrk -t2 -c"$1" -d"$2"s --latency "http://127.0.0.1:$PORT/" >"$3" 2>&1 || true
}
run_ab() { # $1 conns, $2 output file
    local n=$AB_REQUESTS
    [ "$n" -lt "$1" ] && n=$1
    ab -r -q -n "$n" -c "$1" "http://127.0.0.1:$PORT/" >"$2" 2>&1 || true
}
settle() { sleep 1; } # let the previous connections' sockets close

# --- the machine and the settings ----------------------------------------------------
page_body
read -r -a VLIST <<<"$VARIANTS"
{
    echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))," \
        "Linux $(uname -r), $(free -g | awk '/Mem:/{print $2}') GiB; client and server share the CPUs."
    echo "Settings: loopback 127.0.0.1, $WORKERS workers per server (threads; processes for kevent-procs and nginx)," \
        "ulimit -n $(ulimit -n), somaxconn $(cat /proc/sys/net/core/somaxconn)," \
        "ports $(tr '\t' '-' </proc/sys/net/ipv4/ip_local_port_range), tcp_tw_reuse $(cat /proc/sys/net/ipv4/tcp_tw_reuse);" \
        "rounds $ROUNDS (variant order rotated), wrk -t2 -d${DURATION}s --latency, ab -r -n max($AB_REQUESTS, c);" \
        "page $(wc -c <"$TMP/body.html") bytes."
    # +dirty as the tool's own commit line says it (benches/build.rs): only when a file
    # that goes into the build differs from HEAD, not a README being edited.
    echo "Versions: kevent $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- Cargo.toml Cargo.lock src \
        ring/Cargo.toml ring/src syscalls-sim/Cargo.toml syscalls-sim/src benches/Cargo.toml benches/build.rs \
        benches/src || echo +dirty)," \
        "$(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2), ab $(ab -V | head -1 | awk '{print $5}')," \
        "$("$NGINX" -v 2>&1 | cut -d' ' -f3)."
    echo "Command: benches/http/run.sh $([ $QUICK = 1 ] && echo --quick) $([ $STALL = 0 ] && echo --no-stall) --rounds $ROUNDS --duration $DURATION" \
        "--ab-requests $AB_REQUESTS --workers $WORKERS --variants \"$VARIANTS\""
} >"$RESULTS/settings.txt"
cat "$RESULTS/settings.txt" >&2

# --- throughput: every variant x {wrk, ab} x concurrency, rounds rotated --------------
nv=${#VLIST[@]}
for round in $(seq "$ROUNDS"); do
    for k in $(seq 0 $((nv - 1))); do
        v=${VLIST[$(((k + round - 1) % nv))]}
        echo "round $round/$ROUNDS: $v" >&2
        start_server "$v" ""
        run_wrk 100 1 /dev/null # warm-up
        for c in $CONCS; do
            run_wrk "$c" "$DURATION" "$RAW/${round}__${v//\//+}__wrk__${c}.txt"
            grep -h 'Requests/sec' "$RAW/${round}__${v//\//+}__wrk__${c}.txt" | sed "s/^/  wrk $c: /" >&2 || true
            settle
        done
        for c in $CONCS; do
            run_ab "$c" "$RAW/${round}__${v//\//+}__ab__${c}.txt"
            grep -h 'Requests per second' "$RAW/${round}__${v//\//+}__ab__${c}.txt" | sed "s/^/  ab $c: /" >&2 || true
            settle
        done
        stop_server
    done
done

# --- the stalled worker --------------------------------------------------------------
if [ "$STALL" = 1 ]; then
    for round in $(seq "$ROUNDS"); do
        for k in $(seq 0 $((nv - 1))); do
            v=${VLIST[$(((k + round - 1) % nv))]}
            echo "stall round $round/$ROUNDS: $v" >&2
            if [ "$v" = nginx ]; then
                start_server nginx ""
                worker=$(pgrep -P "$SERVER_PID" | head -1)
                ( while :; do sleep 0.8; kill -STOP "$worker"; sleep 0.2; kill -CONT "$worker"; done ) &
                STOPPER_PID=$!
            else
                start_server "$v" "--stall 200/1000"
            fi
            run_wrk "$STALL_CONC" "$STALL_DURATION" "$RAW/${round}__${v//\//+}__stall__${STALL_CONC}.txt"
            stop_server
            settle
        done
    done
fi

python3 "$ROOT/benches/http/report.py" "$RAW" "$RESULTS/settings.txt" \
    "$RESULTS/results.md" "$RESULTS/results.json"
[ -n "$OUT" ] && cp "$RESULTS/results.md" "$OUT"
echo "results: $RESULTS" >&2
