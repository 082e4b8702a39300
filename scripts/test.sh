#!/usr/bin/env bash
# valv's test command (README.md names it; .ci/run runs it).
#
# On a Debian 12 machine as root it:
#   1. installs what the tests need from Debian and PyPI (skipped when everything is there),
#   2. installs cargo-nextest from the crate registry when it is missing,
#   3. checks formatting (`cargo fmt --check`) and lints (`cargo clippy -D warnings`),
#   4. starts a private dockerd (vfs storage, no iptables, no bridge) under a temp dir,
#      and the object-store servers the storage tests run on: moto's S3 server (PyPI)
#      and Azurite's blob service (npm), each once, on 127.0.0.1,
#   5. builds and runs every test of the workspace, the ignored end-to-end ones included,
#   6. stops dockerd and the object-store servers and removes the temp dir, whatever
#      happened.
# A formatting or lint failure fails the run, after the tests have run.
# It exits non-zero when anything fails. Runnable from any directory, as often as you like.
#
# Environment:
#   VALV_TEST_NO_DOCKER=1   do not start dockerd (the docker e2e tests then fail, by design)
#   VALV_TEST_ARGS="..."    extra arguments for the test runner (e.g. a filter: "-E test(crash)")
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# Debian packages the tests use: dockerd + docker CLI (real push/pull), skopeo and
# podman (real clients), the reference registry (CNCF distribution 2.8.2, which the
# conformance suite is also run against), python3 + pip (for oras-py), openssl and CA
# certificates (TLS tests), debootstrap (scripts/image-standins.sh makes the base images
# of the top-level Dockerfile for registry/tests/image.rs, as no image registry is reachable).
APT_PACKAGES=(docker.io skopeo podman docker-registry python3 python3-pip openssl ca-certificates curl debootstrap)
# Python packages: oras-py, the ORAS client library the artifact tests drive; moto's
# server, the S3 the storage tests run on; prometheus-client, whose text parser checks
# /metrics (registry/tests/metrics.rs).
PIP_PACKAGES=(oras==0.2.43 "moto[server]==5.2.5" prometheus-client==0.23.1)
# npm packages: Azurite, the Azure Blob Storage emulator (needs node and npm).
NPM_PACKAGES=(azurite@3.37.0)

START=$(date +%s)
declare -a SUMMARY=()
step_start=0
step() {
    step_start=$(date +%s)
    printf '\n==> %s\n' "$*"
}
step_done() {
    local took=$(($(date +%s) - step_start))
    SUMMARY+=("$(printf '%-28s %5ss  %s' "$1" "$took" "$2")")
}

T=""
DOCKERD_PID=""
MOTO_PID=""
AZURITE_PID=""
cleanup() {
    local rc=$?
    for pid in "$MOTO_PID" "$AZURITE_PID"; do
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    if [[ -n "$DOCKERD_PID" ]] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
        kill -TERM "$DOCKERD_PID" 2>/dev/null || true
        # Bounded wait for a graceful stop (dockerd unmounts its data root and stops the
        # containerd it started); SIGKILL after 30 s.
        for _ in $(seq 1 60); do
            kill -0 "$DOCKERD_PID" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$DOCKERD_PID" 2>/dev/null; then
            echo "dockerd (pid $DOCKERD_PID) did not stop in 30 s; killing it" >&2
            kill -KILL "$DOCKERD_PID" 2>/dev/null || true
        fi
    fi
    if [[ -n "$T" && -d "$T" ]]; then
        # The containerd that dockerd started, should it have outlived dockerd.
        local cpid
        cpid=$(cat "$T/x/containerd/containerd.pid" 2>/dev/null || true)
        if [[ -n "$cpid" ]] && kill -0 "$cpid" 2>/dev/null; then
            kill -TERM "$cpid" 2>/dev/null || true
        fi
        # Anything still mounted under the temp dir (only after a SIGKILL), deepest first.
        awk -v t="$T" 'index($2, t) == 1 { print $2 }' /proc/mounts | sort -r |
            while read -r m; do umount -l "$m" 2>/dev/null || true; done
        rm -rf "$T"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------
step "packages: ${APT_PACKAGES[*]}"
missing=()
for p in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if ((${#missing[@]} == 0)); then
    echo "all installed; skipping apt-get"
    step_done packages "already installed"
else
    echo "installing: ${missing[*]}"
    SUDO=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || { echo "need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
        SUDO=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get -q -o Acquire::Retries=3 update
    "${SUDO[@]}" apt-get -q -y -o Acquire::Retries=3 install --no-install-recommends "${missing[@]}"
    step_done packages "installed ${missing[*]}"
fi

# ---------------------------------------------------------------------------------
step "python packages: ${PIP_PACKAGES[*]}"
if python3 -c 'import oras.provider, moto.server, prometheus_client.parser, importlib.metadata as m; assert m.version("oras") == "0.2.43" and m.version("moto") == "5.2.5" and m.version("prometheus-client") == "0.23.1"' 2>/dev/null; then
    echo "already installed"
    step_done python "already installed"
else
    # Debian's own python3 is "externally managed" (PEP 668): retry with the flag it asks for.
    python3 -m pip install --quiet --disable-pip-version-check "${PIP_PACKAGES[@]}" ||
        python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "${PIP_PACKAGES[@]}"
    python3 -c 'import oras.provider, moto.server, prometheus_client.parser'
    step_done python "installed ${PIP_PACKAGES[*]}"
fi

# ---------------------------------------------------------------------------------
step "npm packages: ${NPM_PACKAGES[*]}"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "node or npm missing; installing Debian's nodejs and npm"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -q -o Acquire::Retries=3 update
    apt-get -q -y -o Acquire::Retries=3 install --no-install-recommends nodejs npm
fi
AZURITE_BLOB="$(npm prefix -g)/bin/azurite-blob"
if [[ -x "$AZURITE_BLOB" ]] && [[ "$("$AZURITE_BLOB" --version 2>/dev/null)" == 3.37.0 ]]; then
    echo "already installed"
    step_done npm "already installed"
else
    npm install -g --no-fund --no-audit --loglevel=error "${NPM_PACKAGES[@]}"
    step_done npm "installed ${NPM_PACKAGES[*]}"
fi

# ---------------------------------------------------------------------------------
step "test runner"
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "cargo-nextest not found; installing it from the crate registry"
    cargo install --locked --quiet cargo-nextest
fi
cargo nextest --version | head -n1
step_done runner nextest

# ---------------------------------------------------------------------------------
step "format and lints (cargo fmt --check, cargo clippy -D warnings)"
lint_rc=0
if ! cargo fmt --all --check; then
    echo "cargo fmt --check: the code is not formatted (run cargo fmt --all)" >&2
    lint_rc=1
fi
if ! cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings; then
    echo "cargo clippy: warnings (denied)" >&2
    lint_rc=1
fi
if ((lint_rc == 0)); then
    step_done lints "fmt and clippy clean"
else
    step_done lints "FAILED"
fi

# ---------------------------------------------------------------------------------
# deny.toml: permissive licenses only, no new duplicate versions, crates from the
# registry only (advisories need a database this network cannot fetch).
step "dependencies (cargo deny check licenses bans sources)"
if ! cargo deny --version >/dev/null 2>&1; then
    echo "cargo-deny not found; installing it from the crate registry"
    cargo install --locked --quiet cargo-deny
fi
if cargo deny --log-level error check licenses bans sources; then
    step_done deny "licenses, bans and sources clean"
else
    lint_rc=1
    step_done deny "FAILED"
fi

# ---------------------------------------------------------------------------------
# Short path: the unix sockets live under it (108-byte limit on socket paths).
T=$(mktemp -d /tmp/valv-t.XXXXXX)
export DOCKER_CONFIG="$T/docker-config"
mkdir -p "$DOCKER_CONFIG"
if [[ "${VALV_TEST_NO_DOCKER:-0}" != 1 ]]; then
    step "dockerd (private, under $T)"
    dockerd --storage-driver vfs --iptables=false --ip6tables=false --bridge=none \
        --data-root "$T/data" --exec-root "$T/x" -H "unix://$T/docker.sock" \
        --pidfile "$T/docker.pid" >"$T/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    export DOCKER_HOST="unix://$T/docker.sock"
    # The client from the same Debian package as the daemon, when both exist.
    if [[ -x /usr/bin/docker ]]; then
        export VALV_DOCKER=/usr/bin/docker
    fi
    ready=0
    for _ in $(seq 1 120); do
        if ! kill -0 "$DOCKERD_PID" 2>/dev/null; then
            break
        fi
        if "${VALV_DOCKER:-docker}" info >/dev/null 2>&1; then
            ready=1
            break
        fi
        sleep 0.5
    done
    if ((ready == 0)); then
        echo "dockerd did not become ready within 60 s; its log:" >&2
        tail -n 40 "$T/dockerd.log" >&2 || true
        exit 1
    fi
    "${VALV_DOCKER:-docker}" version --format 'docker client {{.Client.Version}}, daemon {{.Server.Version}}'
    step_done dockerd "ready, pid $DOCKERD_PID"
fi

# ---------------------------------------------------------------------------------
# A free port on 127.0.0.1 (the kernel's choice; the server binds it right after).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# wait_http <name> <pid> <url> <log>: bounded wait until <url> answers at all.
wait_http() {
    for _ in $(seq 1 120); do
        kill -0 "$2" 2>/dev/null || break
        if curl -s -o /dev/null "$3"; then return 0; fi
        sleep 0.5
    done
    echo "$1 did not answer at $3 within 60 s; its log:" >&2
    tail -n 40 "$4" >&2 || true
    exit 1
}
step "object stores (moto S3, Azurite blob)"
MOTO_PORT=$(free_port)
python3 -m moto.server -H 127.0.0.1 -p "$MOTO_PORT" >"$T/moto.log" 2>&1 &
MOTO_PID=$!
AZURITE_PORT=$(free_port)
"$AZURITE_BLOB" --blobHost 127.0.0.1 --blobPort "$AZURITE_PORT" --location "$T/azurite" \
    --skipApiVersionCheck --silent >"$T/azurite.log" 2>&1 &
AZURITE_PID=$!
wait_http moto "$MOTO_PID" "http://127.0.0.1:$MOTO_PORT/" "$T/moto.log"
wait_http azurite "$AZURITE_PID" "http://127.0.0.1:$AZURITE_PORT/" "$T/azurite.log"
# One bucket and one container; every test works under a prefix of its own. The
# credentials are moto's and Azurite's fixed test ones (test-only, not secrets).
curl -sf -X PUT "http://127.0.0.1:$MOTO_PORT/valv-test" -o /dev/null
python3 "$ROOT/scripts/azurite-container.py" "http://127.0.0.1:$AZURITE_PORT" valv-test
export VALV_TEST_S3_URL=s3://valv-test AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT" \
    AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
export VALV_TEST_AZURE_URL=az://valv-test AZURE_STORAGE_USE_EMULATOR=true \
    AZURITE_BLOB_STORAGE_URL="http://127.0.0.1:$AZURITE_PORT"
step_done objectstores "moto pid $MOTO_PID :$MOTO_PORT, azurite pid $AZURITE_PID :$AZURITE_PORT"

export VALV_E2E=1
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}
# shellcheck disable=SC2206 # word splitting of the extra args is intended
EXTRA=(${VALV_TEST_ARGS:-})

# ---------------------------------------------------------------------------------
step "build (workspace, tests)"
cargo nextest run --workspace --no-run
step_done build "debug profile"
# The conformance crate's tests run the valv binary, which it does not depend on (on
# purpose); point them at the one just built rather than having each test build it
# again with a different feature set.
VALV_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/valv"
if [[ -x "$VALV_BIN" ]]; then
    export VALV_BIN
fi

# ---------------------------------------------------------------------------------
step "tests (workspace, ignored end-to-end tests included)"
set +e
cargo nextest run --workspace --run-ignored all --no-fail-fast "${EXTRA[@]}"
test_rc=$?
set -e
if ((test_rc == 0)); then
    step_done tests "all passed"
else
    step_done tests "FAILED (exit $test_rc)"
fi

# ---------------------------------------------------------------------------------
# Every fuzz target for a short budget (docs/FUZZING.md): a regression in a parser an
# attacker can reach fails the run, its input kept under fuzz/artifacts/.
step "fuzz targets (scripts/fuzz.sh, ${VALV_FUZZ_BUDGET:-10} s each)"
fuzz_rc=0
VALV_FUZZ_BUDGET="${VALV_FUZZ_BUDGET:-10}" "$ROOT/scripts/fuzz.sh" || fuzz_rc=$?
if ((fuzz_rc == 0)); then
    step_done fuzz "0 crashes"
else
    step_done fuzz "FAILED (exit $fuzz_rc)"
fi

# ---------------------------------------------------------------------------------
printf '\n==> summary\n'
printf '%s\n' "${SUMMARY[@]}"
printf '%-28s %5ss\n' total "$(($(date +%s) - START))"
if ((test_rc != 0)); then
    echo "scripts/test.sh: FAILED" >&2
    exit "$test_rc"
fi
if ((lint_rc != 0)); then
    echo "scripts/test.sh: FAILED (format, lints or dependencies)" >&2
    exit 1
fi
if ((fuzz_rc != 0)); then
    echo "scripts/test.sh: FAILED (fuzzing)" >&2
    exit 1
fi
echo "scripts/test.sh: OK"
