#!/usr/bin/env bash
# Side by side: the reference registry (Debian's docker-registry, CNCF distribution
# 2.8.2, filesystem storage, no encryption) and valv (filesystem storage, local KEK),
# on the same disk, the same scenarios, alternating which goes first, for several
# rounds, each server fresh for every round. Prints per scenario the median and
# min-max of each, the valv/reference ratio, server CPU-seconds per GiB (from /proc,
# timed part only) and peak RSS.
#
#   bench/compare.sh [--rounds N] [--quick] [--out DIR]
#
# --quick scales every scenario down (a smoke run of the script itself, not a result).
# Raw JSON of every run goes to DIR (default target/bench-compare/<timestamp>).
# Needs: docker-registry (Debian), python3, a Rust toolchain. Runs only on 127.0.0.1.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need docker-registry python3
bench_init compare "$@"

if ((QUICK)); then
    BIG=$((64 * MIB)); SMALL=$((4 * MIB)); MANY=8; RANGES=64; MDUR=2
else
    BIG=$GIB; SMALL=$((16 * MIB)); MANY=64; RANGES=512; MDUR=20
fi
# name | valv-bench arguments (the URL, server PID and seed are added)
SCENARIOS=(
    "push-1x-big-mono|push --repo b/mono --count 1 --size $BIG --concurrency 1"
    "push-1x-big-chunked|push --repo b/chunked --count 1 --size $BIG --concurrency 1 --chunk $((16 * MIB))"
    "push-many-8|push --repo b/many --count $MANY --size $SMALL --concurrency 8"
    "pull-1x-big|pull --repo b/pull1 --count 1 --size $BIG --concurrency 1"
    "pull-many-8|pull --repo b/pullmany --count $MANY --size $SMALL --concurrency 8"
    "range-1MiB-8|pull --repo b/range --count 8 --size $((64 * MIB)) --concurrency 8 --range $MIB --reads $RANGES"
    "manifests-10x10-64|manifests --repos 10 --tags 10 --concurrency 64 --duration $MDUR"
)

SERVER_PID=""
stop_server() {
    bench_stop "$SERVER_PID"
    SERVER_PID=""
}

# Starts a fresh server; sets SERVER_PID and URL. Readiness: its "listening on" line.
start_server() {
    local which=$1 dir=$T/$1
    rm -rf "$dir"; mkdir -p "$dir"
    if [[ $which == valv ]]; then
        RUST_LOG=warn "$VALV" serve --listen 127.0.0.1:0 --data-dir "$dir/data" >"$dir/out" 2>"$dir/err" &
    else
        cat >"$dir/config.yml" <<YML
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:0
YML
        docker-registry serve "$dir/config.yml" >"$dir/out" 2>"$dir/err" &
    fi
    SERVER_PID=$!
    bench_track "$SERVER_PID"
    wait_listening "$which" "$SERVER_PID" 'listening on ' "$dir/out" "$dir/err"
}

for round in $(seq 1 "$ROUNDS"); do
    if ((round % 2)); then order=(reference valv); else order=(valv reference); fi
    for which in "${order[@]}"; do
        echo "round $round: $which" >&2
        start_server "$which"
        for s in "${SCENARIOS[@]}"; do
            name=${s%%|*}
            args=${s#*|}
            # Start every scenario with no dirty pages from the one before: otherwise the
            # kernel's writeback of the previous gigabyte lands in this one's timing
            # (seen as 2-3x swings of push throughput between rounds).
            sync
            # shellcheck disable=SC2086 # word splitting of the scenario's arguments is intended
            "$BENCH" $args --url "$URL" --server-pid "$SERVER_PID" --seed "$round$RANDOM" \
                >"$OUT/$which-$name-r$round.json"
        done
        stop_server
    done
done

python3 - "$OUT" <<'PY'
import glob, json, os, statistics, sys
out = sys.argv[1]
runs = {}
for f in sorted(glob.glob(os.path.join(out, "*.json"))):
    base = os.path.basename(f)[:-5]
    which, rest = base.split("-", 1)
    name = rest.rsplit("-r", 1)[0]
    runs.setdefault((name, which), []).append(json.load(open(f)))
names = []
for (name, _) in runs:
    if name not in names:
        names.append(name)
def stat(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None, None
    return statistics.median(xs), min(xs), max(xs)
def fmt(m, lo, hi, unit=""):
    return "-" if m is None else f"{m:,.1f}{unit} ({lo:,.1f}-{hi:,.1f})"
print("| scenario | metric | reference median (min-max) | valv median (min-max) | valv / reference |")
print("|---|---|---|---|---|")
peak = {}
for name in names:
    for metric, key, unit in [("throughput MB/s", lambda r: r["throughput"]["mb_per_sec"], ""),
                              ("requests/s", lambda r: r["throughput"]["requests_per_sec"], ""),
                              ("p99 ms", lambda r: r["latency_ms"]["p99"], ""),
                              ("server CPU-s/GiB", lambda r: r.get("server_cpu_secs_per_gib"), "")]:
        if name.startswith("manifests") and metric in ("throughput MB/s", "server CPU-s/GiB"):
            continue
        if not name.startswith("manifests") and metric == "requests/s":
            continue
        ref = stat([key(r) for r in runs.get((name, "reference"), [])])
        val = stat([key(r) for r in runs.get((name, "valv"), [])])
        ratio = "-" if not ref[0] or val[0] is None else f"{val[0] / ref[0]:.2f}x"
        print(f"| {name} | {metric} | {fmt(*ref, unit)} | {fmt(*val, unit)} | {ratio} |")
    for which in ("reference", "valv"):
        for r in runs.get((name, which), []):
            errs = r["errors"]["count"]
            if errs:
                print(f"WARNING: {which} {name}: {errs} errors: {r['errors']['first']}", file=sys.stderr)
            rss = r.get("server_peak_rss_kib")
            if rss:
                peak[which] = max(peak.get(which, 0), rss)
print()
for which in ("reference", "valv"):
    if which in peak:
        print(f"peak RSS over a round, {which}: {peak[which] / 1024:.1f} MiB")
print(f"raw results: {out}")
PY
