#!/usr/bin/env bash
# Instructions per manifest GET, counted by callgrind (the same count whatever else the
# machine is doing, unlike req/s): valv as it was before request ids, /metrics and
# traces (BASE_REV, built by bench/observability.sh) beside the current valv with
# traces built in, in the configurations of bench/observability.sh plus RUST_LOG=off
# (no log at all, so no request span either).
#
#   bench/observability-instructions.sh [REQUESTS]     (default 10000)
#
# Each configuration runs twice under `valgrind --tool=callgrind`: once with no request
# (start and stop) and once with REQUESTS sequential GETs of one small manifest over
# one keep-alive connection; the difference divided by REQUESTS is the per-request
# count. Every run starts from a copy of one data directory holding only the local
# key, so start-up does the same work each time. Needs valgrind and python3; run
# bench/observability.sh once first (it builds both binaries). Only 127.0.0.1.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${1:-10000}
BASE_REV=${BASE_REV:-5e5f188}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
CURRENT=$TARGET/bench-otlp/release/valv
BASELINE=$TARGET/bench-baseline/$BASE_REV/target/release/valv
for bin in "$CURRENT" "$BASELINE"; do
    [[ -x $bin ]] || { echo "no $bin: run bench/observability.sh first" >&2; exit 2; }
done
command -v valgrind >/dev/null || { echo "needs valgrind" >&2; exit 2; }

T=$(mktemp -d /tmp/valv-instructions.XXXXXX)
PID=""
cleanup() {
    [[ -n $PID ]] && kill "$PID" 2>/dev/null || true
    rm -rf "$T"
}
trap cleanup EXIT

# The requests: one config blob and one manifest pushed, then N GETs of it.
cat >"$T/load.py" <<'PY'
import hashlib, http.client, json, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port)
def req(method, path, body=None, headers={}):
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    r.read()
    return r.status
config = b"{}"
digest = "sha256:" + hashlib.sha256(config).hexdigest()
assert req("POST", f"/v2/bench/app/blobs/uploads/?digest={digest}", config) == 201
manifest = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": 2},
    "layers": [],
}).encode()
mt = "application/vnd.oci.image.manifest.v1+json"
assert req("PUT", "/v2/bench/app/manifests/v1", manifest, {"Content-Type": mt}) == 201
for _ in range(n):
    assert req("GET", "/v2/bench/app/manifests/v1", None, {"Accept": mt}) == 200
PY

# A data directory with only a local key, made once by a first start.
mkdir -p "$T/template"
"$CURRENT" serve --listen 127.0.0.1:0 --data-dir "$T/template" >"$T/t.out" 2>/dev/null &
PID=$!
for _ in $(seq 300); do grep -q 'listening on' "$T/t.out" 2>/dev/null && break; sleep 0.1; done
kill -TERM "$PID"
wait "$PID" || true
PID=""
rm -rf "$T/template/store"

# instructions NAME BIN LEVEL REQUESTS [ARGS…]: the program total of one run.
instructions() {
    local name=$1 bin=$2 level=$3 n=$4 dir=$T/$1-$4
    shift 4
    mkdir -p "$dir"
    cp -r "$T/template" "$dir/data"
    RUST_LOG=$level OTEL_BSP_SCHEDULE_DELAY=200 valgrind --tool=callgrind \
        --callgrind-out-file="$dir/cg.out" "$bin" serve --listen 127.0.0.1:0 \
        --data-dir "$dir/data" "$@" >"$dir/out" 2>"$dir/err" &
    PID=$!
    for _ in $(seq 600); do grep -q 'listening on' "$dir/out" 2>/dev/null && break; sleep 0.2; done
    local port
    port=$(grep -o 'listening on [^ ]*' "$dir/out" | sed 's/.*://')
    python3 "$T/load.py" "$port" "$n"
    kill -TERM "$PID"
    wait "$PID" || true
    PID=""
    grep -o 'summary: [0-9]*' "$dir/cg.out" | head -1 | cut -d' ' -f2
}

printf '| configuration | instructions per manifest GET | vs baseline |\n|---|---|---|\n'
declare -A base
for level in warn info off; do
    for who in baseline current traced sampled; do
        [[ $who == traced* || $who == sampled ]] && [[ $level == off ]] && continue
        bin=$CURRENT extra=() ratio=1
        [[ $who == baseline ]] && bin=$BASELINE
        [[ $who == traced || $who == sampled ]] && extra=(--otlp-endpoint http://127.0.0.1:9)
        # sampled: traces on, 1 % of requests traced (telemetry.sample_ratio).
        [[ $who == sampled ]] && ratio=0.01
        idle=$(VALV_OTLP_SAMPLE_RATIO=$ratio instructions "$who-$level" "$bin" "$level" 0 "${extra[@]}")
        busy=$(VALV_OTLP_SAMPLE_RATIO=$ratio instructions "$who-$level" "$bin" "$level" "$N" "${extra[@]}")
        per=$(((busy - idle) / N))
        [[ $who == baseline ]] && base[$level]=$per
        ratio=$(python3 -c "print(f'{$per / ${base[$level]}:.3f}x')")
        printf '| %s, RUST_LOG=%s | %s | %s |\n' "$who" "$level" "$per" "$ratio"
    done
done
