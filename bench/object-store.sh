#!/usr/bin/env bash
# valv on S3 beside the reference registry on S3, in one run, on one S3 server: moto's,
# on 127.0.0.1, with a bucket each. valv: `valv serve --storage s3://<bucket>/valv`,
# local KEK, release build. Reference: Debian's docker-registry (CNCF distribution
# 2.8.2) with its s3 driver (config below: path-style, 5 MiB parts like valv's,
# redirects off so it serves blob bytes itself as valv does).
#
#   bench/object-store.sh [--rounds N] [--quick] [--out DIR]
#
# 1. Object-store requests per registry operation. moto runs inside
#    bench/moto-counted.py, which logs every request it answers (bucket, S3 call,
#    method, bytes) once its response is sent; each registry uses its own bucket, so
#    the same log counts both the same way. Each operation is one `valv-bench op` run
#    alone, with the log read before and after it (once no request has arrived for
#    0.5 s). Writes (pushes, a manifest PUT) run on one server process; reads (pull,
#    manifest GETs, tag list) on a fresh one, so nothing is answered from a cache the
#    writes filled; the second manifest GET shows the warm case.
# 2. Throughput: push 1 x BIG, push MANY x SMALL at 8 streams, pull the same two ways,
#    per round a fresh server and an emptied moto for each registry, alternating which
#    goes first. Peak RSS is VmHWM from /proc at the end of each server process's life:
#    once for the request-count processes, once per throughput round.
#
# --quick scales everything down (a smoke run of the script, not a result).
# Prints markdown tables for docs/PERFORMANCE.md; raw JSON and the request log go to
# DIR (default target/bench-object-store/<timestamp>).
# Needs: docker-registry (Debian), moto[server] (PyPI), python3, curl, a Rust toolchain.
# Runs only on 127.0.0.1.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need docker-registry python3 curl
python3 -c 'import moto.server' 2>/dev/null || { echo "moto's server is not installed (pip install 'moto[server]')" >&2; exit 1; }
ARGS=("$@")
bench_init object-store "$@"

if ((QUICK)); then
    BLOB=$((8 * MIB)); CHUNK=$((2 * MIB)); BIG=$((8 * MIB)); SMALL=$((2 * MIB)); MANY=4
else
    BLOB=$((100 * MIB)); CHUNK=$((16 * MIB)); BIG=$((256 * MIB)); SMALL=$((16 * MIB)); MANY=32
fi
STREAMS=8
# distribution's S3 part size: its minimum, S3's, and what valv uses.
DIST_CHUNK=$((5 * MIB))
BUCKETS=(valv-bench-valv valv-bench-reference)

# ---- moto, with the request log ----------------------------------------------------
REQLOG=$OUT/object-store-requests.tsv
: >"$REQLOG"
MOTO_PORT=$(free_port)
MOTO=http://127.0.0.1:$MOTO_PORT
python3 "$ROOT/bench/moto-counted.py" --port "$MOTO_PORT" --log "$REQLOG" >"$T/moto.out" 2>"$T/moto.err" &
MOTO_PID=$!
bench_track "$MOTO_PID"
wait_http moto "$MOTO_PID" "$MOTO/" "$T/moto.err"
# Empties moto (every bucket, upload and object) and creates the two buckets.
fresh_buckets() {
    curl -sf -X POST "$MOTO/moto-api/reset" -o /dev/null
    local b
    for b in "${BUCKETS[@]}"; do curl -sf -X PUT "$MOTO/$b" -o /dev/null; done
}

# Lines in the request log once no request has arrived for 0.5 s (at most 30 s), so a
# registry's work after its answer to the client (deletes, cleanup) is still counted.
settled_count() {
    local n m
    n=$(wc -l <"$REQLOG")
    for _ in $(seq 1 60); do
        sleep 0.5
        m=$(wc -l <"$REQLOG")
        ((m == n)) && break
        n=$m
    done
    echo "$n"
}

# ---- the registries ----------------------------------------------------------------
# A CA bundle named in the environment is for TLS, and moto is plain HTTP here; the
# reference's AWS SDK (v1) even refuses to start with one ("LoadCustomCABundleError:
# unable to load custom CA bundle, HTTPClient's transport unsupported type"), so
# neither server gets it.
unset AWS_CA_BUNDLE
SERVER_PID=""
STARTS=0
# start_server <valv|reference> <dir>: a server on the bucket of its own, state (valv's
# local KEK, the reference's config) in <dir>, logs of this start in <dir>/<n>.out and
# .err; sets SERVER_PID and URL.
start_server() {
    local which=$1 dir=$2 log
    mkdir -p "$dir"
    STARTS=$((STARTS + 1))
    log=$dir/$STARTS
    if [[ $which == valv ]]; then
        AWS_ENDPOINT_URL=$MOTO AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
            AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true RUST_LOG=warn \
            "$VALV" serve --listen 127.0.0.1:0 --data-dir "$dir/data" \
            --storage "s3://${BUCKETS[0]}/valv" >"$log.out" 2>"$log.err" &
        SERVER_PID=$!
        bench_track "$SERVER_PID"
        wait_listening valv "$SERVER_PID" 'listening on ' "$log.out" "$log.err"
    else
        # moto's fixed test credentials (not secrets). regionendpoint makes 2.8.2's
        # driver address the bucket path-style; redirect off, or blob GETs would be
        # 307s to presigned moto URLs; no upload purger walking the bucket mid-run.
        cat >"$dir/config.yml" <<YML
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  s3:
    region: us-east-1
    regionendpoint: $MOTO
    bucket: ${BUCKETS[1]}
    rootdirectory: /reference
    accesskey: test
    secretkey: test
    secure: false
    v4auth: true
    chunksize: $DIST_CHUNK
  redirect:
    disable: true
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:0
YML
        docker-registry serve "$dir/config.yml" >"$log.out" 2>"$log.err" &
        SERVER_PID=$!
        bench_track "$SERVER_PID"
        wait_listening reference "$SERVER_PID" 'listening on ' "$log.out" "$log.err"
    fi
}
# stop_server <file>: writes the server's peak RSS (VmHWM, KiB) to <file>, stops it.
stop_server() {
    awk '/^VmHWM:/ { print $2 }' "/proc/$SERVER_PID/status" >"$1"
    bench_stop "$SERVER_PID"
    SERVER_PID=""
}

# ---- 1. requests per operation -----------------------------------------------------
# counted <which> <label> <valv-bench op arguments…>: one op, its requests in
# <label>.tsv beside its JSON.
counted() {
    local which=$1 label=$2 before after
    shift 2
    before=$(settled_count)
    "$BENCH" op --url "$URL" --repo bench/objects "$@" >"$OUT/req-$which-$label.json"
    after=$(settled_count)
    sed -n "$((before + 1)),${after}p" "$REQLOG" >"$OUT/req-$which-$label.tsv"
}
op_ok() {
    python3 -c 'import json, sys; sys.exit(json.load(open(sys.argv[1]))["errors"]["count"] != 0)' "$1"
}

fresh_buckets
for which in reference valv; do
    echo "requests: $which" >&2
    dir=$T/req-$which
    start_server "$which" "$dir"
    counted "$which" push-mono --kind push --size "$BLOB" --seed 1
    # Single-request push only where a 1-byte probe (not counted) says it is supported.
    "$BENCH" op --url "$URL" --repo bench/probe --kind push-post --size 1 --seed 9 >"$T/probe.json"
    if op_ok "$T/probe.json"; then
        counted "$which" push-post --kind push-post --size "$BLOB" --seed 2
    else
        cp "$T/probe.json" "$OUT/req-$which-push-post.unsupported.json"
    fi
    counted "$which" push-chunked --kind push-chunked --size "$BLOB" --chunk "$CHUNK" --seed 3
    counted "$which" push-config --kind push-config --seed 1
    counted "$which" manifest-put --kind manifest-put --size "$BLOB" --seed 1 --tag v1
    stop_server "$OUT/rss-$which-requests-writes.kib"
    start_server "$which" "$dir"
    counted "$which" pull --kind pull --size "$BLOB" --seed 1
    counted "$which" manifest-get --kind manifest-get --tag v1 --seed 1
    counted "$which" manifest-get-warm --kind manifest-get --tag v1 --seed 1
    counted "$which" tags-list --kind tags-list --seed 1
    stop_server "$OUT/rss-$which-requests-reads.kib"
done

# ---- 2. throughput -----------------------------------------------------------------
# name | valv-bench arguments (the URL, server PID and seed are added)
SCENARIOS=(
    "push-1x$((BIG / MIB))MiB|push --repo b/mono --count 1 --size $BIG --concurrency 1"
    "push-${MANY}x$((SMALL / MIB))MiB-$STREAMS|push --repo b/many --count $MANY --size $SMALL --concurrency $STREAMS"
    "pull-1x$((BIG / MIB))MiB|pull --repo b/pull1 --count 1 --size $BIG --concurrency 1"
    "pull-${MANY}x$((SMALL / MIB))MiB-$STREAMS|pull --repo b/pullmany --count $MANY --size $SMALL --concurrency $STREAMS"
)
for s in "${SCENARIOS[@]}"; do echo "${s%%|*}"; done >"$OUT/scenarios.txt"
for round in $(seq 1 "$ROUNDS"); do
    if ((round % 2)); then order=(reference valv); else order=(valv reference); fi
    for which in "${order[@]}"; do
        echo "round $round: $which" >&2
        fresh_buckets
        start_server "$which" "$T/tp-$which-r$round"
        for s in "${SCENARIOS[@]}"; do
            name=${s%%|*}
            args=${s#*|}
            # No dirty pages from the scenario before (moto spools objects to disk).
            sync
            before=$(settled_count)
            # shellcheck disable=SC2086 # word splitting of the scenario's arguments is intended
            "$BENCH" $args --url "$URL" --server-pid "$SERVER_PID" --seed "$round$RANDOM" \
                >"$OUT/tp-$which-$name-r$round.json"
            after=$(settled_count)
            echo $((after - before)) >"$OUT/tp-$which-$name-r$round.requests"
        done
        stop_server "$OUT/rss-$which-tp-r$round.kib"
    done
done

# ---- the tables --------------------------------------------------------------------
grep -cE '"(GET|HEAD|PUT|POST|DELETE|PATCH|OPTIONS) [^"]*" [0-9]{3} ' "$T/moto.err" >"$OUT/moto-access-log.lines" || true
{
    echo "Command: \`bench/object-store.sh ${ARGS[*]}\` at $(git -C "$ROOT" rev-parse --short HEAD) ($(date -u +%Y-%m-%d))."
    echo "S3: moto $(python3 -c 'import importlib.metadata as m; print(m.version("moto"))') (bench/moto-counted.py), one server, a bucket per registry."
    echo "Reference: $(docker-registry --version 2>&1 | head -n1), s3 driver, chunksize $DIST_CHUNK."
    echo
    python3 - "$OUT" "$REQLOG" "$BLOB" "$CHUNK" <<'PY'
import collections, glob, json, os, statistics, sys
out, reqlog, blob, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
MIB = 1 << 20
WHO = ("reference", "valv")
LISTS = {"ListObjects", "ListObjectsV2", "ListMultipartUploads"}

def load_tsv(path):
    rows = []
    for line in open(path, encoding="utf-8"):
        f = line.rstrip("\n").split("\t")
        if len(f) >= 8:
            rows.append(dict(bucket=f[1], call=f[2], method=f[3], status=f[4],
                             bytes_in=int(f[5]) if f[5].isdigit() else 0, bytes_out=int(f[6])))
    return rows

ops = [
    ("push-mono", f"push {blob // MIB} MiB, monolithic (POST, PUT ?digest= with the body)"),
    ("push-post", f"push {blob // MIB} MiB, one POST ?digest= with the body"),
    ("push-chunked", f"push {blob // MIB} MiB, chunked ({chunk // MIB} MiB PATCHes)"),
    ("push-config", "push a 180 B blob (image config), monolithic"),
    ("manifest-put", "PUT a manifest by tag"),
    ("pull", f"pull {blob // MIB} MiB (GET, fresh process)"),
    ("manifest-get", "GET a manifest by tag (fresh process)"),
    ("manifest-get-warm", "GET the same manifest again"),
    ("tags-list", "GET tags/list"),
]
print("Object-store requests per registry operation (each operation alone; counted at moto):")
print()
print("| operation | registry | requests | GET | LIST | HEAD | PUT | POST | DELETE | S3 calls | MiB to S3 | MiB from S3 |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for label, title in ops:
    for who in WHO:
        base = os.path.join(out, f"req-{who}-{label}")
        if os.path.exists(base + ".unsupported.json"):
            err = json.load(open(base + ".unsupported.json"))["errors"]["first"][0]
            print(f"| {title} | {who} | not supported | | | | | | | {err} | | |")
            continue
        if not os.path.exists(base + ".json"):
            print(f"| {title} | {who} | - | | | | | | | (not run) | | |")
            continue
        r = json.load(open(base + ".json"))
        rows = load_tsv(base + ".tsv")
        by = collections.Counter()
        calls = collections.Counter(x["call"] for x in rows)
        for x in rows:
            by["LIST" if x["call"] in LISTS else x["method"]] += 1
        detail = ", ".join(f"{c} {n}" for c, n in sorted(calls.items(), key=lambda kv: (-kv[1], kv[0])))
        # Expected misses (a 404 to an existence check, a 412 to a create-only put)
        # are requests too; shown so a reader can tell them from failures.
        misses = collections.Counter(x["status"] for x in rows if not x["status"].startswith(("2", "3")))
        if misses:
            detail += " (answered " + ", ".join(f"{s} {n}x" for s, n in sorted(misses.items())) + ")"
        if r["errors"]["count"]:
            detail += f" — CLIENT ERROR: {r['errors']['first'][0]}"
        up = sum(x["bytes_in"] for x in rows) / MIB
        down = sum(x["bytes_out"] for x in rows) / MIB
        cells = " | ".join(str(by.get(m, 0)) for m in ("GET", "LIST", "HEAD", "PUT", "POST", "DELETE"))
        print(f"| {title} | {who} | {len(rows)} | {cells} | {detail} | {up:,.1f} | {down:,.1f} |")

# Throughput.
runs = collections.defaultdict(list)
reqs = collections.defaultdict(list)
for f in sorted(glob.glob(os.path.join(out, "tp-*.json"))):
    base = os.path.basename(f)[:-5]
    _, who, rest = base.split("-", 2)
    name = rest.rsplit("-r", 1)[0]
    r = json.load(open(f))
    runs[(name, who)].append(r)
    with open(f[:-5] + ".requests") as q:
        reqs[(name, who)].append(int(q.read()))
names = [n for n in open(os.path.join(out, "scenarios.txt")).read().split() if any(k[0] == n for k in runs)]
def stat(xs):
    xs = [x for x in xs if x is not None]
    return (statistics.median(xs), min(xs), max(xs)) if xs else None
def fmt(s, d=1):
    return "-" if s is None else f"{s[0]:,.{d}f} ({s[1]:,.{d}f}-{s[2]:,.{d}f})"
rounds = max((len(v) for v in runs.values()), default=0)
print()
print(f"Throughput, {rounds} round(s), median (min-max):")
print()
print("| scenario | reference MB/s | valv MB/s | valv / reference | p99 ms reference / valv | S3 requests per valv-bench run (a pull's untimed setup push included), reference / valv | errors |")
print("|---|---|---|---|---|---|---|")
for name in names:
    ref, val = runs.get((name, "reference"), []), runs.get((name, "valv"), [])
    mb = lambda rs: stat([r["throughput"]["mb_per_sec"] for r in rs])
    p99 = lambda rs: stat([r["latency_ms"]["p99"] for r in rs])
    a, b = mb(ref), mb(val)
    ratio = "-" if not a or b is None or not a[0] else f"{b[0] / a[0]:.2f}x"
    pa, pb = p99(ref), p99(val)
    p = "-" if pa is None or pb is None else f"{pa[0]:,.0f} / {pb[0]:,.0f}"
    qa, qb = stat(reqs.get((name, "reference"), [])), stat(reqs.get((name, "valv"), []))
    q = "-" if qa is None or qb is None else f"{qa[0]:,.0f} / {qb[0]:,.0f}"
    errs = sum(r["errors"]["count"] + r.get("setup", {}).get("errors", {}).get("count", 0) for r in ref + val)
    print(f"| {name} | {fmt(a)} | {fmt(b)} | {ratio} | {p} | {q} | {errs} |")

print()
print("Peak RSS (VmHWM at the end of each server process's life), MiB:")
print()
print("| process | reference | valv |")
print("|---|---|---|")
def rss(who, pattern):
    xs = []
    for f in sorted(glob.glob(os.path.join(out, f"rss-{who}-{pattern}.kib"))):
        t = open(f).read().strip()
        if t.isdigit():
            xs.append(int(t) / 1024)
    return xs
for title, pattern in [("request counts: the writes", "requests-writes"),
                       ("request counts: the reads", "requests-reads"),
                       ("a throughput round (all four scenarios)", "tp-r*")]:
    cells = []
    for who in WHO:
        xs = rss(who, pattern)
        cells.append("-" if not xs else (f"{xs[0]:,.1f}" if len(xs) == 1 else f"{statistics.median(xs):,.1f} (max {max(xs):,.1f})"))
    print(f"| {title} | {cells[0]} | {cells[1]} |")

total = len(load_tsv(reqlog))
try:
    access = int(open(os.path.join(out, "moto-access-log.lines")).read().strip() or 0)
except (OSError, ValueError):
    access = None
print()
print(f"Counter check: {total} requests in the counter's log, {access} in moto's own access log.")
print(f"Raw results: {out}")
PY
} | tee "$OUT/summary.md"
