#!/usr/bin/env bash
# The per-byte primitives against `openssl speed` on the same machine and block size:
# AES-256-GCM (valv's segment sealer and opener, 64 KiB segments) and SHA-256 (the
# upload hasher, fed 64 KiB at a time). Prints a table with the ratios.
#
#   bench/crypto-vs-openssl.sh
#
# Needs: openssl, python3, a Rust toolchain. Run it on an otherwise idle machine.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

# openssl speed prints "<name> <k-bytes/s for each block size>"; with -bytes, one column.
speed() {
    openssl speed -seconds 3 -bytes 65536 -evp "$1" 2>/dev/null | awk -v n="$2" '$1 == n { sub("k", "", $2); print $2 * 1000 }'
}
AES=$(speed aes-256-gcm AES-256-GCM)
SHA=$(speed sha256 sha256)

(cd "$ROOT" && cargo bench -q -p valv-storage --bench crypto -- --warm-up-time 1 --measurement-time 5) \
    >"$TARGET/crypto-bench.log" 2>&1 || { tail -n 30 "$TARGET/crypto-bench.log" >&2; exit 1; }

python3 - "$TARGET/criterion" "$AES" "$SHA" <<'PY'
import json, os, sys
root, aes, sha = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
def rate(group, name, nbytes=65536):
    with open(os.path.join(root, group, name, "new", "estimates.json")) as f:
        mean_ns = json.load(f)["mean"]["point_estimate"]
    return nbytes / mean_ns * 1e9
rows = [
    ("AES-256-GCM seal, one 64 KiB segment", rate("segment-64KiB", "seal"), aes, "openssl speed -evp aes-256-gcm"),
    ("AES-256-GCM open, one 64 KiB segment", rate("segment-64KiB", "open"), aes, "openssl speed -evp aes-256-gcm"),
    ("Sealer::push, 1 MiB body chunks", rate("sealer-1MiB-chunks", "push", 1 << 20), aes, "openssl speed -evp aes-256-gcm"),
    ("SHA-256 (ResumableHash), 64 KiB updates", rate("hash-64KiB", "sha256"), sha, "openssl speed -evp sha256"),
]
print("| primitive | valv MB/s | openssl MB/s (64 KiB blocks) | valv / openssl |")
print("|---|---|---|---|")
for name, ours, theirs, _ in rows:
    print(f"| {name} | {ours / 1e6:,.0f} | {theirs / 1e6:,.0f} | {ours / theirs:.0%} |")
PY
