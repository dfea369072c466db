#!/usr/bin/env bash
# The one test command (README, .ci/run): formatting, lints, every test, on
# both backends. Needs the Rust toolchain and python3; it installs what the
# tests need into venvs of their own from PyPI on first use: moto (a local
# server speaking the DynamoDB, KMS and Secrets Manager wire protocols), run
# on a free loopback port and stopped at the end whatever happens, and the
# stock OAuth client libraries for the interoperability test.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== stock OAuth client libraries (.venv-interop)"
# Authlib and PyJWT, for the interoperability test (tests/interop). The venv
# is rebuilt when the pinned requirements change.
if ! cmp -s tests/interop/requirements.txt .venv-interop/requirements.txt 2>/dev/null; then
    rm -rf .venv-interop
    python3 -m venv .venv-interop
    .venv-interop/bin/pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
    cp tests/interop/requirements.txt .venv-interop/requirements.txt
fi
export PHARMAGATE_TEST_PYTHON="$PWD/.venv-interop/bin/python"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== moto (local AWS endpoint)"
venv=.venv-moto
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import moto.server' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]>=5.1,<6'
fi
port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
moto_log=$(mktemp)
# moto's own app, one request at a time (see scripts/moto_serial.py).
"$venv/bin/python" scripts/moto_serial.py 127.0.0.1 "$port" >"$moto_log" 2>&1 &
moto_pid=$!
infra_pid=
infra_log=$(mktemp)
cleanup() {
    kill "$moto_pid" 2>/dev/null || true
    wait "$moto_pid" 2>/dev/null || true
    # The infra checks run in a session of their own: stop cargo with them.
    [ -z "$infra_pid" ] || kill -- "-$infra_pid" 2>/dev/null || true
    rm -f "$log" "$moto_log" "$infra_log"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
    if "$venv/bin/python" -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
        break
    fi
    if ! kill -0 "$moto_pid" 2>/dev/null; then
        cat "$moto_log"
        echo "moto failed to start" >&2
        exit 1
    fi
    sleep 0.2
done
echo "moto listening on http://127.0.0.1:$port"

# Tests that need AWS read this; with it set, they fail (not skip) when
# moto does not answer. Dummy credentials: nothing here reaches AWS.
export PHARMAGATE_TEST_AWS_ENDPOINT="http://127.0.0.1:$port"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
unset AWS_SESSION_TOKEN AWS_PROFILE AWS_ENDPOINT_URL

status=0
echo "== cargo test (unit, contract, handler-event and black-box tests; embedded backend)"
cargo test --workspace --locked --no-fail-fast --lib --bins --tests 2>&1 | tee -a "$log" || status=$?

echo "== infra checks: started now, in the background at the lowest CPU priority (output below, at the end)"
# cargo-deny, the Lambda release cross-builds and the SAM tools are CPU work;
# the AWS-backend suite mostly waits on moto, which serves one call at a
# time. Overlapping them saves about ten minutes of a CI run, and nice keeps
# moto and the servers ahead of the compiler.
setsid -w nice -n 19 ./scripts/infra-check.sh >"$infra_log" 2>&1 &
infra_pid=$!

echo "== cargo test: the black-box suite again, on the AWS backend (moto)"
# Three servers at a time: moto answers one call at a time, and more
# parallel servers only lengthen every queue (and the clients' timeouts).
PHARMAGATE_TEST_BACKEND=aws cargo test --locked --no-fail-fast -p pharmagate-cli --test blackbox -- --test-threads=3 2>&1 \
    | tee -a "$log" || status=$?

echo "== schemathesis: the local gateway against infra/openapi.yaml"
./scripts/schemathesis.sh 2>&1 | tee -a "$log" || status=$?

echo "== infra checks (cargo-deny, Lambda bundles and their sizes, cfn-lint + sam validate)"
infra_status=0
wait "$infra_pid" || infra_status=$?
infra_pid=
cat "$infra_log"
[ "$infra_status" -eq 0 ] || status=$infra_status

# One closing line with the totals over every test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
echo "test command: $([ "$status" -eq 0 ] && echo passed || echo FAILED) in $((SECONDS / 60)) min $((SECONDS % 60)) s"
exit "$status"
