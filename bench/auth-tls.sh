#!/usr/bin/env bash
# What access control and TLS cost valv, in one run: the same valv binary as four fresh
# servers, plain HTTP or TLS × open or with access control (htpasswd users, the built-in
# token issuer), the same scenarios against each, alternating the order per round.
#
#   bench/auth-tls.sh [--rounds N] [--quick] [--out DIR]
#
# Scenarios: manifest GETs (10 repositories × 10 tags, 64 in flight) without credentials,
# with Basic and with a Bearer token from valv's /auth/token; a 1 GiB pull over plain
# HTTP and over TLS (HTTP/1.1). Prints per scenario the median (min-max) and the ratio to
# its baseline: manifests with credentials against the open server on the same
# transport, the TLS pull against the plain pull.
# Needs: openssl, htpasswd (apache2-utils), curl, python3, a Rust toolchain. The CA, the
# certificate and the password are made by this script in a temp dir (test-only) and
# removed at exit. Runs only on 127.0.0.1.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need openssl htpasswd curl python3
bench_init auth-tls "$@"

if ((QUICK)); then BIG=$((64 * MIB)); MDUR=2; else BIG=$GIB; MDUR=15; fi
REPOS=10

SERVER_PID=""
stop_server() {
    bench_stop "$SERVER_PID"
    SERVER_PID=""
}

# Test-only key material: a CA, a certificate for 127.0.0.1 it signs, one bcrypt user.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=valv bench CA" -keyout "$T/ca.key" -out "$T/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$T/server.key" -out "$T/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >"$T/san.ext"
openssl x509 -req -in "$T/server.csr" -CA "$T/ca.crt" -CAkey "$T/ca.key" -CAcreateserial \
    -days 2 -extfile "$T/san.ext" -out "$T/server.crt" 2>/dev/null
PASSWORD=$(openssl rand -hex 16)
htpasswd -B -b -c "$T/htpasswd" bench "$PASSWORD" 2>/dev/null
cat >"$T/auth.toml" <<TOML
[auth.issuer]
lifetime_secs = 3600
TOML

# Starts a fresh server of kind "<plain|tls>-<open|auth>"; sets SERVER_PID and URL.
start_server() {
    local kind=$1 dir=$T/$1
    rm -rf "$dir"; mkdir -p "$dir"
    local args=(serve --listen 127.0.0.1:0 --data-dir "$dir/data")
    [[ $kind == tls-* ]] && args+=(--tls-cert "$T/server.crt" --tls-key "$T/server.key")
    [[ $kind == *-auth ]] && args+=(--config "$T/auth.toml" --htpasswd "$T/htpasswd" --token-auth)
    RUST_LOG=warn "$VALV" "${args[@]}" >"$dir/out" 2>"$dir/err" &
    SERVER_PID=$!
    bench_track "$SERVER_PID"
    wait_listening "$kind" "$SERVER_PID" 'listening on ' "$dir/out" "$dir/err"
}

# A token from the server's /auth/token for pull and push on every bench repository.
fetch_token() {
    local query="service=valv" i
    for i in $(seq 0 $((REPOS - 1))); do query+="&scope=repository:bench/manifests-$i:pull,push"; done
    curl -sf --cacert "$T/ca.crt" -u "bench:$PASSWORD" "$URL/auth/token?$query" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])'
}

# bench <file> <args…>: one valv-bench run against the current server.
bench() {
    local file=$1; shift
    sync
    "$BENCH" "$@" --url "$URL" --ca-file "$T/ca.crt" --server-pid "$SERVER_PID" \
        --seed "$round$RANDOM" >"$OUT/$file.json"
}
MANIFESTS=(manifests --repos "$REPOS" --tags 10 --concurrency 64 --duration "$MDUR")
PULL=(pull --repo b/pull1 --count 1 --size "$BIG" --concurrency 1)

for round in $(seq 1 "$ROUNDS"); do
    if ((round % 2)); then order=(plain-open plain-auth tls-open tls-auth); else order=(tls-auth tls-open plain-auth plain-open); fi
    for kind in "${order[@]}"; do
        echo "round $round: $kind" >&2
        start_server "$kind"
        transport=${kind%-*}
        case $kind in
        *-open)
            bench "manifests-$transport-none-r$round" "${MANIFESTS[@]}"
            bench "pull-$transport-none-r$round" "${PULL[@]}"
            ;;
        *-auth)
            bench "manifests-$transport-basic-r$round" "${MANIFESTS[@]}" --user "bench:$PASSWORD"
            bench "manifests-$transport-bearer-r$round" "${MANIFESTS[@]}" --token "$(fetch_token)"
            ;;
        esac
        stop_server
    done
done

python3 - "$OUT" <<'PY'
import glob, json, os, statistics, sys
out = sys.argv[1]
runs = {}
for f in sorted(glob.glob(os.path.join(out, "*.json"))):
    name = os.path.basename(f)[:-5].rsplit("-r", 1)[0]
    r = json.load(open(f))
    errors = r.get("errors", {}).get("count", 0) if isinstance(r.get("errors"), dict) else r.get("errors", 0)
    runs.setdefault(name, []).append((r, errors))
def stat(name, key):
    xs = [key(r) for r, _ in runs.get(name, [])]
    return (statistics.median(xs), min(xs), max(xs)) if xs else None
def fmt(s):
    return "-" if s is None else f"{s[0]:,.1f} ({s[1]:,.1f}-{s[2]:,.1f})"
rps = lambda r: r["throughput"]["requests_per_sec"]
mbs = lambda r: r["throughput"]["mb_per_sec"]
rows = [
    ("manifests, plain HTTP, no credentials", "manifests-plain-none", rps, "req/s", None),
    ("manifests, plain HTTP, Basic", "manifests-plain-basic", rps, "req/s", "manifests-plain-none"),
    ("manifests, plain HTTP, Bearer", "manifests-plain-bearer", rps, "req/s", "manifests-plain-none"),
    ("manifests, TLS, no credentials", "manifests-tls-none", rps, "req/s", None),
    ("manifests, TLS, Basic", "manifests-tls-basic", rps, "req/s", "manifests-tls-none"),
    ("manifests, TLS, Bearer", "manifests-tls-bearer", rps, "req/s", "manifests-tls-none"),
    ("1 GiB pull, plain HTTP", "pull-plain-none", mbs, "MB/s", None),
    ("1 GiB pull, TLS", "pull-tls-none", mbs, "MB/s", "pull-plain-none"),
]
print("| scenario | unit | median (min-max) | ratio to baseline | errors |")
print("|---|---|---|---|---|")
for label, name, key, unit, base in rows:
    s = stat(name, key)
    ratio = "baseline"
    if base:
        b = stat(base, key)
        ratio = "-" if s is None or b is None else f"{s[0] / b[0]:.2f}x of {base}"
    errs = sum(e for _, e in runs.get(name, []))
    print(f"| {label} | {unit} | {fmt(s)} | {ratio} | {errs} |")
print(f"\n(raw JSON: {out})")
PY
