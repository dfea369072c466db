#!/usr/bin/env bash
# Property-based contract test: schemathesis generates requests from
# infra/openapi.yaml and sends them to a freshly started local gateway
# (`pharmagate dev` on a free loopback port, a new data directory) with
# valid credentials; it fails on any server error and on any response the
# spec does not describe (status, content type, body schema, headers).
#
# Called by scripts/test.sh after the cargo tests; uses the pharmagate binary
# of that build ($CARGO_TARGET_DIR or target/, debug profile). Installs a
# pinned schemathesis into .venv-schemathesis on first use (about 30 s). The
# server is stopped on exit, pass or fail.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
# Test cases per operation and phase; the whole step stays within a few minutes.
MAX_EXAMPLES=${PHARMAGATE_SCHEMATHESIS_EXAMPLES:-25}

venv=.venv-schemathesis
if [ "$("$venv/bin/schemathesis" --version 2>/dev/null | awk '{print $NF}')" != "$SCHEMATHESIS_VERSION" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

# The binary of the test build; built here when the script runs alone
# (rerun `cargo build -p pharmagate-cli` after changing code).
bin="${CARGO_TARGET_DIR:-target}/debug/pharmagate"
if [ ! -x "$bin" ]; then
    cargo build --locked -p pharmagate-cli --bin pharmagate
fi

work=$(mktemp -d)
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

data="$work/data"
export PHARMAGATE_DATA_DIR="$data"
# Generated load must meet the contract, not the limiter: a high paid-tier
# limit (the RateLimit headers are still sent and checked) and a brute-force
# guard that never blocks. 429 stays in the spec; the limiter has its own tests.
export PHARMAGATE_RATE_LIMITS='{"paid": {"rate": 1000000, "window_seconds": 1, "daily_quota": 1000000000}}'
export PHARMAGATE_AUTH_GUARD='{"free_failures": 1000000000}'
export RUST_LOG=warn
unset PHARMAGATE_ISSUER PHARMAGATE_BACKEND

"$bin" dev --port 0 >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
api=
for _ in $(seq 1 150); do
    api=$(sed -n 's/^pharmagate listening on \(http:[^ ]*\)$/\1/p' "$work/server.out")
    [ -n "$api" ] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        cat "$work/server.out" "$work/server.err" >&2
        echo "pharmagate dev failed to start" >&2
        exit 1
    fi
    sleep 0.2
done
if [ -z "$api" ]; then
    echo "pharmagate dev did not start listening" >&2
    exit 1
fi
echo "pharmagate dev listening on $api (data in $data)"

# Credentials from the admin CLI, on the same data directory: admin keys of
# the paid tier (limited, so the RateLimit headers are part of what is
# checked) and an OAuth client.
issue_admin_key() {
    "$bin" keys issue --customer schemathesis --role admin --tier paid --label "$1" 2>/dev/null
}
client=$("$bin" clients create --name schemathesis --customer schemathesis \
    --scopes "catalog:read manufacturing:read" --tier paid)
client_id=$(sed -n 's/^client_id: //p' <<<"$client")
client_secret=$(sed -n 's/^client_secret: //p' <<<"$client")

# The checks: no 5xx; every response as documented (status, content type,
# body, headers); a protected operation refuses a request without its
# credentials (ignored_auth); a method the path does not have is 405 with
# Allow (unsupported_method, allow_header_conformance; in AWS it is API
# Gateway's own 404); a missing required header is refused. Not
# positive_data_acceptance: a schema cannot say everything the code checks
# (a CAS number's check digit, that a product exists, an entitlement, one
# search filter at a time), so a schema-valid request may rightly get 400,
# 404 or 409. Not negative_data_rejection: text is trimmed before its length
# is checked (README), so a schema-invalid 401-character name with a
# trailing space is rightly accepted, and the OAuth forms ignore parameters
# they do not know (RFC 6749 §3.1).
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
checks+=,response_headers_conformance,ignored_auth,unsupported_method,allow_header_conformance,missing_required_header
# One worker: with two, Hypothesis (on Python 3.11) sometimes fails inside
# its own concurrent ast.parse ("AST constructor recursion depth mismatch").
run() {
    echo "== schemathesis: $1"
    shift
    "$venv/bin/schemathesis" run infra/openapi.yaml --url "$api" --checks "$checks" \
        --max-examples "$MAX_EXAMPLES" --phases examples,coverage,fuzzing --workers 1 \
        --request-timeout 10 --no-color --output-truncate true --generation-database none "$@"
}
# Whether a credential still works after a run: a run that lost its own
# credentials halfway would have tested little but 401s.
still_works() {
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' "$@")
    if [ "$code" != 200 ]; then
        echo "the run lost its credentials (HTTP $code afterwards): its results mean little" >&2
        return 1
    fi
}
token() {
    curl -s -u "$client_id:$client_secret" -d grant_type=client_credentials "$api/oauth/token" \
        | "$venv/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["access_token"])'
}

# Schemathesis reuses values from responses (ids from listings, from
# creations) in later requests, so a run may revoke or rotate whatever
# credential it can see. The runs are ordered and split so that none
# destroys the credentials a later run (or itself) uses: the OAuth client is
# used before the run that may delete clients, and only the last run may
# revoke or rotate API keys, with a key of its own.
status=0
started=$(date +%s)
run "the OAuth endpoints, as the OAuth client (HTTP Basic)" --include-path-regex '^/oauth/' \
    --auth "$client_id:$client_secret" || status=1
still_works -u "$client_id:$client_secret" -d grant_type=client_credentials "$api/oauth/token" || status=1

# Without generated x-api-key values: a key and a token at once are refused.
bearer=$(token)
run "the routes open to OAuth tokens, with an access token (Authorization: Bearer)" \
    --include-name-regex '^GET /v1/(products|usage)' --generation-with-security-parameters false \
    -H "Authorization: Bearer $bearer" || status=1
still_works -H "Authorization: Bearer $bearer" "$api/v1/usage" || status=1

admin_key=$(issue_admin_key schemathesis)
run "every other operation but key revocation and rotation, with an admin API key" \
    --exclude-path-regex '^/oauth/' --exclude-operation-id revokeKey --exclude-operation-id rotateKey \
    -H "x-api-key: $admin_key" || status=1
still_works -H "x-api-key: $admin_key" "$api/v1/usage" || status=1

# Last: revoking and rotating keys (with the listings and issuing that give
# it real key ids), with an admin key of its own, which it may well revoke
# or rotate away itself; later requests then get 401, which is documented.
destructible_key=$(issue_admin_key schemathesis-destructive)
run "key revocation and rotation, with a second admin API key" \
    --include-operation-id revokeKey --include-operation-id rotateKey \
    --include-operation-id listKeys --include-operation-id issueKey \
    -H "x-api-key: $destructible_key" || status=1
echo "schemathesis: $(($(date +%s) - started)) s"

if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "pharmagate dev died during the run" >&2
    cat "$work/server.err" >&2
    status=1
fi
exit "$status"
