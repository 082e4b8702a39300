#!/usr/bin/env bash
# Builds valv's fuzz targets (fuzz/, cargo-fuzz on libFuzzer) and runs each for a short
# budget: what CI runs so a parser regression fails the build. docs/FUZZING.md lists the
# targets and their contracts and records the long runs.
#
#   scripts/fuzz.sh [--budget SECS] [target...]
#
# With no target it runs all of them, one after another. Per target it prints the
# executions, coverage (libFuzzer's `cov`: covered edges; `ft`: features) and corpus
# size from libFuzzer's final `DONE` line, then a summary table. It exits non-zero when
# any target crashed, ran out of memory or time, or did not build. A crash's input is
# kept under $VALV_FUZZ_ARTIFACTS/<target>/ (default fuzz/artifacts/), with the
# libFuzzer log next to it; reproduce with `<binary> <artifact>` (the summary says
# which binary).
#
# Environment:
#   VALV_FUZZ_BUDGET=SECS      seconds per target (default 15; --budget wins)
#   VALV_FUZZ_TARGET_DIR=DIR   cargo target dir of the fuzz build (default fuzz/target);
#                              the growing run corpus is kept under it, in corpus/<target>
#   VALV_FUZZ_ARTIFACTS=DIR    where crash inputs and logs go (default fuzz/artifacts)
#   VALV_FUZZ_ARGS="..."       extra libFuzzer flags (e.g. -jobs=2, -only_ascii=1)
#   VALV_FUZZ_SANITIZER=NAME   cargo fuzz --sanitizer (default address; none is faster)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FUZZ="$ROOT/fuzz"
BUDGET="${VALV_FUZZ_BUDGET:-15}"
TARGET_DIR="${VALV_FUZZ_TARGET_DIR:-$FUZZ/target}"
ARTIFACTS="${VALV_FUZZ_ARTIFACTS:-$FUZZ/artifacts}"
SANITIZER="${VALV_FUZZ_SANITIZER:-address}"
TOOLCHAIN=nightly

targets=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --budget) BUDGET="$2"; shift 2 ;;
        --budget=*) BUDGET="${1#--budget=}"; shift ;;
        -h|--help) sed -n '2,22p' "${BASH_SOURCE[0]}"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[[ "$BUDGET" =~ ^[0-9]+$ && "$BUDGET" -gt 0 ]] || { echo "--budget needs a positive number of seconds" >&2; exit 2; }

START=$(date +%s)
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi
if ! rustup run "$TOOLCHAIN" rustc --version >/dev/null 2>&1; then
    echo "the $TOOLCHAIN toolchain is needed (rustup toolchain install $TOOLCHAIN)" >&2
    exit 2
fi

cd "$FUZZ"
if [[ ${#targets[@]} -eq 0 ]]; then
    mapfile -t targets < <(cargo +"$TOOLCHAIN" fuzz list)
fi

echo "==> building ${#targets[@]} fuzz targets (sanitizer: $SANITIZER)"
# Release with debug assertions and overflow checks (cargo fuzz's default), so an
# arithmetic overflow is a crash. fuzz/Cargo.lock pins what the workspace's lock pins.
cargo +"$TOOLCHAIN" fuzz build --release --debug-assertions --sanitizer "$SANITIZER" \
    --target-dir "$TARGET_DIR"
BUILT=$(date +%s)
BIN="$TARGET_DIR/$(rustc +"$TOOLCHAIN" -vV | sed -n 's/^host: //p')/release"

declare -a rows=()
failed=0
for t in "${targets[@]}"; do
    corpus="$TARGET_DIR/corpus/$t"
    out="$ARTIFACTS/$t"
    mkdir -p "$corpus" "$out"
    # The committed seeds join the run corpus, which keeps what earlier runs found.
    if [[ -d "$FUZZ/corpus/$t" ]]; then
        cp -n "$FUZZ/corpus/$t"/* "$corpus"/ 2>/dev/null || true
    fi
    log="$out/fuzz.log"
    echo "==> $t: ${BUDGET}s"
    rc=0
    # rss/malloc limits: a single input must not make the parser allocate without
    # bound (libFuzzer reports an OOM as a failure with the input kept).
    # shellcheck disable=SC2086
    "$BIN/$t" "$corpus" \
        -max_total_time="$BUDGET" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
        -print_final_stats=1 -artifact_prefix="$out/" ${VALV_FUZZ_ARGS:-} \
        >"$log" 2>&1 || rc=$?
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
    execs=$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$done_line")
    cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$done_line")
    ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$done_line")
    corp=$(sed -nE 's/.* corp: ([0-9]+).*/\1/p' <<<"$done_line")
    eps=$(sed -nE 's/.* exec\/s: ([0-9]+).*/\1/p' <<<"$done_line")
    rss=$(sed -nE 's/.* rss: ([0-9]+)Mb.*/\1/p' <<<"$done_line")
    if [[ $rc -eq 0 && -n "$done_line" ]]; then
        status=ok
    else
        status="FAILED (exit $rc)"
        failed=1
        echo "--- $t failed; the last lines of $log:" >&2
        tail -40 "$log" >&2
        ls "$out"/crash-* "$out"/oom-* "$out"/timeout-* "$out"/leak-* 2>/dev/null >&2 || true
    fi
    echo "    execs ${execs:-?}  cov ${cov:-?}  ft ${ft:-?}  corpus ${corp:-?}  exec/s ${eps:-?}  rss ${rss:-?} MB  $status"
    rows+=("$(printf '%-14s %6ss %12s %7s %7s %7s %9s  %s' "$t" "$BUDGET" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "${eps:-?}" "$status")")
done

END=$(date +%s)
echo
printf '%-14s %7s %12s %7s %7s %7s %9s  %s\n' target budget execs cov ft corpus exec/s status
printf '%s\n' "${rows[@]}"
echo "build $((BUILT - START))s, runs $((END - BUILT))s, total $((END - START))s; binaries in $BIN"
if [[ $failed -ne 0 ]]; then
    echo "fuzzing FAILED: inputs and logs under $ARTIFACTS/<target>/" >&2
    exit 1
fi
