#!/usr/bin/env bash
# What /metrics, request ids and tracing (with no collector) cost valv, in one run: the
# current valv (built with traces, the `otlp` feature, as the image is) beside valv as it
# was before any of them (BASE_REV, default 5e5f188: the commit before request ids,
# /metrics and traces), as fresh servers in alternating order, the same manifest GETs
# against each.
#
#   bench/observability.sh [--rounds N] [--quick] [--out DIR]
#
# Three servers: the baseline; the current valv as it runs by default (/metrics served,
# request ids, no trace endpoint); and the current valv "traced", exporting spans to an
# endpoint where no collector listens (every span made and batched, every export
# refused). Each runs twice per round: with RUST_LOG=warn (no access line: the cost of
# what is always on) and with the default `info` (one access line per request to a
# file, what a default deployment pays). Prints per configuration the median (min-max)
# of req/s and of server CPU µs per request, and the ratio to the baseline's.
# The baseline is built once from BASE_REV in a git worktree under the target directory
# (kept for the next run). Needs: git, curl, python3, a Rust toolchain. Runs only on
# 127.0.0.1.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need git curl python3
bench_init observability "$@"

BASE_REV=${BASE_REV:-5e5f188}
if ((QUICK)); then MDUR=2; else MDUR=15; fi
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

# The current valv with traces built in, in a target directory of its own (a build
# with other features would replace the plain one the other scripts use).
(cd "$ROOT" && CARGO_TARGET_DIR="$TARGET/bench-otlp" cargo build --release -q -p valv --features otlp)
CURRENT=$TARGET/bench-otlp/release/valv
# The baseline, from its commit.
BASE_DIR=$TARGET/bench-baseline/$BASE_REV
BASELINE=$BASE_DIR/target/release/valv
if [[ ! -x $BASELINE ]]; then
    echo "building the baseline valv at $BASE_REV (once)" >&2
    rm -rf "$BASE_DIR/src"
    mkdir -p "$BASE_DIR"
    git -C "$ROOT" worktree add --detach "$BASE_DIR/src" "$BASE_REV" >/dev/null
    (cd "$BASE_DIR/src" && CARGO_TARGET_DIR="$BASE_DIR/target" cargo build --release -q -p valv)
    git -C "$ROOT" worktree remove --force "$BASE_DIR/src"
fi
echo "baseline: $BASELINE ($BASE_REV); current: $CURRENT ($(git -C "$ROOT" rev-parse --short HEAD))" >&2

SERVER_PID=""
# No collector: a port on 127.0.0.1 with nothing listening (the OS refuses connections).
NO_COLLECTOR=http://127.0.0.1:9
# start_server NAME BINARY LOG_LEVEL [ARGS…]: a fresh server on its embedded default.
start_server() {
    local name=$1 bin=$2 level=$3 dir=$T/$1
    shift 3
    rm -rf "$dir"; mkdir -p "$dir"
    RUST_LOG=$level "$bin" serve --listen 127.0.0.1:0 --data-dir "$dir/data" "$@" \
        >"$dir/out" 2>"$dir/err" &
    SERVER_PID=$!
    bench_track "$SERVER_PID"
    wait_listening "$name" "$SERVER_PID" 'listening on ' "$dir/out" "$dir/err"
}

MANIFESTS=(manifests --repos 10 --tags 10 --concurrency 64 --duration "$MDUR")
for round in $(seq 1 "$ROUNDS"); do
    if ((round % 2)); then
        order=(baseline-warn current-warn traced-warn baseline-info current-info traced-info)
    else
        order=(traced-info current-info baseline-info traced-warn current-warn baseline-warn)
    fi
    for name in "${order[@]}"; do
        echo "round $round: $name" >&2
        bin=$CURRENT extra=()
        [[ $name == baseline-* ]] && bin=$BASELINE
        [[ $name == traced-* ]] && extra=(--otlp-endpoint "$NO_COLLECTOR")
        start_server "$name" "$bin" "${name#*-}" "${extra[@]}"
        sync
        "$BENCH" "${MANIFESTS[@]}" --url "$URL" --server-pid "$SERVER_PID" \
            --seed "$round$RANDOM" >"$OUT/$name-r$round.json"
        bench_stop "$SERVER_PID"
        SERVER_PID=""
    done
done

python3 - "$OUT" <<'PY'
import glob, json, os, statistics, sys
out = sys.argv[1]
runs = {}
for f in sorted(glob.glob(os.path.join(out, "*.json"))):
    name = os.path.basename(f)[:-5].rsplit("-r", 1)[0]
    runs.setdefault(name, []).append(json.load(open(f)))
rps = lambda r: r["throughput"]["requests_per_sec"]
cpu_us = lambda r: 1e6 * r["server_cpu_secs"] / max(r["requests"], 1)
def stat(name, key):
    xs = [key(r) for r in runs.get(name, [])]
    return (statistics.median(xs), min(xs), max(xs)) if xs else None
def fmt(s, digits):
    return "-" if s is None else f"{s[0]:,.{digits}f} ({s[1]:,.{digits}f}-{s[2]:,.{digits}f})"
print("| configuration | req/s median (min-max) | ratio | server CPU µs/req | ratio | errors |")
print("|---|---|---|---|---|---|")
for level in ("warn", "info"):
    base_r, base_c = stat(f"baseline-{level}", rps), stat(f"baseline-{level}", cpu_us)
    for who in ("baseline", "current", "traced"):
        name = f"{who}-{level}"
        r, c = stat(name, rps), stat(name, cpu_us)
        if r is None:
            continue
        rr = "baseline" if who == "baseline" else f"{r[0] / base_r[0]:.3f}x"
        cr = "baseline" if who == "baseline" else f"{c[0] / base_c[0]:.3f}x"
        errs = sum(x["errors"]["count"] for x in runs.get(name, []))
        print(f"| {who}, RUST_LOG={level} | {fmt(r, 0)} | {rr} | {fmt(c, 2)} | {cr} | {errs} |")
print(f"\n(raw JSON: {out})")
PY
