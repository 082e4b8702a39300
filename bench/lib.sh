# Shared shell for the bench scripts (sourced, not run): arguments, the build, the
# processes a script starts (stopped by PID at exit, nothing else), readiness waits.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   bench_init NAME "$@"    # parses --rounds N --quick --out DIR; sets ROOT ROUNDS QUICK
#                           # OUT T VALV BENCH, builds, and arranges the cleanup at exit
# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables set here are the sourcing script's

GIB=1073741824
MIB=1048576
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Every process a script started, by PID; bench_cleanup stops what is still running.
BENCH_PIDS=()

# bench_init NAME ARGS…: --rounds N (default 3), --quick (a smoke run of the script,
# not a result), --out DIR (default target/bench-NAME/<timestamp>). Then builds valv and
# valv-bench (release) and makes the temp dir T, removed at exit.
bench_init() {
    local name=$1
    shift
    ROUNDS=3
    QUICK=0
    OUT=""
    while (($#)); do
        case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --out) OUT=$2; shift 2 ;;
        *) echo "usage: $0 [--rounds N] [--quick] [--out DIR]" >&2; exit 2 ;;
        esac
    done
    OUT=${OUT:-$ROOT/target/bench-$name/$(date -u +%Y%m%dT%H%M%SZ)}
    mkdir -p "$OUT"
    (cd "$ROOT" && cargo build --release -q -p valv -p valv-bench)
    VALV=${CARGO_TARGET_DIR:-$ROOT/target}/release/valv
    BENCH=${CARGO_TARGET_DIR:-$ROOT/target}/release/valv-bench
    T=$(mktemp -d "/tmp/valv-$name.XXXXXX")
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# need TOOL…: fails unless every TOOL is on PATH.
need() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
    done
}

# bench_track PID: remember a started process for bench_cleanup.
bench_track() {
    BENCH_PIDS+=("$1")
}

# bench_stop PID: SIGTERM, up to 10 s to exit, then SIGKILL. Only that PID.
bench_stop() {
    local pid=$1
    [[ -n "$pid" ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    # Forgotten once reaped: the kernel may give its number to someone else's process.
    local kept=() p
    for p in "${BENCH_PIDS[@]}"; do [[ $p == "$pid" ]] || kept+=("$p"); done
    BENCH_PIDS=("${kept[@]}")
}

bench_cleanup() {
    local rc=$? pid
    for pid in "${BENCH_PIDS[@]}"; do bench_stop "$pid"; done
    BENCH_PIDS=()
    [[ -n "${T:-}" && -d "$T" ]] && rm -rf "$T"
    exit "$rc"
}

# A free port on 127.0.0.1 (the kernel's choice; the server binds it right after).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_listening NAME PID PATTERN FILE…: waits (up to 60 s) for a "listening on ADDR"
# line matching PATTERN (an extended grep regex ending where the address starts) in
# the FILEs; sets URL to http://ADDR, or to ADDR when ADDR has a scheme already.
wait_listening() {
    local name=$1 pid=$2 pattern=$3
    shift 3
    for _ in $(seq 1 600); do
        URL=$(grep -hoE "${pattern}[0-9a-z.:/]*" "$@" 2>/dev/null | head -n1 | sed -E "s#${pattern}##" || true)
        if [[ -n "$URL" ]]; then
            [[ $URL == http*://* ]] || URL="http://$URL"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "$name did not start; its log:" >&2
    tail -n 20 "$@" >&2
    exit 1
}

# wait_http NAME PID URL LOG: waits (up to 60 s) until URL answers at all.
wait_http() {
    for _ in $(seq 1 600); do
        kill -0 "$2" 2>/dev/null || break
        if curl -s -o /dev/null "$3"; then return 0; fi
        sleep 0.1
    done
    echo "$1 did not answer at $3 within 60 s; its log:" >&2
    tail -n 20 "$4" >&2 || true
    exit 1
}
