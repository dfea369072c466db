#!/usr/bin/env bash
# The infrastructure checks (issue 8); scripts/test.sh runs this after the
# tests. Everything that can be proven about a deployment without an AWS
# account:
#  1. dependencies: cargo-deny (licenses, bans, sources, RustSec advisories),
#     with the offline RustSec snapshot in ../shared/advisory-db when there is
#     one, and proof that the advisory database was actually read;
#  2. Lambda bundles: `cargo lambda build --release` of every crate under
#     functions/ (arm64 when the target can be installed, else x86-64), each
#     bundle's zipped size, at most 4 MiB;
#  3. the SAM template: cfn-lint and `sam validate --lint`, then both again on
#     a copy with infra/openapi.yaml inlined (as CloudFormation does), and a
#     check that the template deploys exactly the function crates there are.
# Tools: aws-sam-cli + cfn-lint (.venv-sam; SAM pins its own boto3, so never
# the moto venv) and cargo-lambda + ziglang (.venv-lambda) from PyPI, pinned
# in infra/requirements-*.txt and installed in the background while cargo
# works; cargo-deny from crates.io into .tools/ when missing (~3.5 min once).
# No AWS credentials are needed. Every failure is reported, then the exit
# status is 1.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$root/target/infra-check
mkdir -p "$work"

status=0
fail() {
    echo "FAILED: $*" >&2
    status=1
}
since() { echo "$(($(date +%s) - $1)) s"; }
started=$(date +%s)

# A venv with the pinned requirements, rebuilt when they change.
venv_install() {
    local dir=$1 requirements=$2
    if cmp -s "$requirements" "$dir/requirements.txt" 2>/dev/null; then
        echo "$dir: up to date"
        return 0
    fi
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$dir/requirements.txt"
}
# Starts an install in the background; `wait_venv` collects it.
declare -A venv_pid venv_log venv_start
start_venv() {
    venv_log[$1]=$work/venv${1//\//_}.log
    venv_start[$1]=$(date +%s)
    venv_install "$1" "$2" >"${venv_log[$1]}" 2>&1 &
    venv_pid[$1]=$!
}
wait_venv() {
    if wait "${venv_pid[$1]}"; then
        echo "$1 ready ($(grep -q 'up to date' "${venv_log[$1]}" && echo "already installed" ||
            echo "installed in $(since "${venv_start[$1]}")"))"
    else
        cat "${venv_log[$1]}" >&2
        echo "FAILED: could not install $1" >&2
        exit 1
    fi
}

echo "== tools"
start_venv .venv-sam infra/requirements-sam.txt
start_venv .venv-lambda infra/requirements-lambda.txt

# ---------------------------------------------------------------- 1. cargo-deny
DENY_VERSION=0.20.2
deny=$root/.tools/bin/cargo-deny
if [ "$("$deny" --version 2>/dev/null)" != "cargo-deny $DENY_VERSION" ]; then
    echo "installing cargo-deny $DENY_VERSION into .tools/ (once, a few minutes)"
    t=$(date +%s)
    cargo install cargo-deny --version "$DENY_VERSION" --locked --root "$root/.tools" --quiet
    echo "cargo-deny installed in $(since "$t")"
fi

echo "== cargo deny (licenses, bans, sources, advisories)"
# Fills the registry cache with every dependency (all platforms), which the
# offline run below needs; a no-op when it is warm.
cargo fetch --locked --quiet
deny_config=$work/deny.toml
advisory_db=${PHARMAGATE_ADVISORY_DB:-$(dirname "$root")/shared/advisory-db}
deny_online=()
if [ -d "$advisory_db" ]; then
    # cargo-deny keeps its database in <db-path>/advisory-db-<hash of the
    # default URL> and wants a git repository there; with --offline it reads
    # that copy as it is (DESIGN.md §5).
    db_root=$work/advisory-dbs
    db=$db_root/advisory-db-3157b0e258782691
    rm -rf "$db_root"
    mkdir -p "$db_root"
    cp -R "$advisory_db" "$db"
    rm -rf "$db/.git"
    git -C "$db" init --quiet
    git -C "$db" -c user.name=pharmagate -c user.email=ci@pharmagate.invalid add --all
    git -C "$db" -c user.name=pharmagate -c user.email=ci@pharmagate.invalid commit --quiet -m snapshot
    # A snapshot is as old as SNAPSHOT.txt says; a wide staleness limit lets
    # cargo-deny use it instead of refusing an old database.
    sed -e "/^\[advisories\]/a db-path = \"$db_root\"\nmaximum-db-staleness = \"P3650D\"" deny.toml >"$deny_config"
    grep -q "^db-path = \"$db_root\"" "$deny_config" || fail "could not point $deny_config at the snapshot"
    deny_online=(--offline)
    echo "advisory database: snapshot $advisory_db ($(head -n 1 "$advisory_db/SNAPSHOT.txt" 2>/dev/null || echo "no SNAPSHOT.txt")), offline"
else
    cp deny.toml "$deny_config"
    echo "advisory database: no snapshot at $advisory_db; cargo-deny fetches the RustSec database"
fi

# Proof that the database is read: a throwaway crate depending on smallvec
# 1.6.0 (RUSTSEC-2021-0003, patched in 1.6.1; a vulnerable version that is
# not yanked, so cargo still resolves it) must be refused, naming it.
probe=$work/advisory-probe
rm -rf "$probe"
mkdir -p "$probe/src"
: >"$probe/src/lib.rs"
cat >"$probe/Cargo.toml" <<'EOF'
[package]
name = "advisory-probe"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
smallvec = "=1.6.0"

[workspace]
EOF
if ! (cd "$probe" && cargo generate-lockfile --quiet && cargo fetch --quiet); then
    fail "could not resolve the advisory probe (smallvec 1.6.0 from crates.io)"
elif "$deny" "${deny_online[@]}" --config "$deny_config" --manifest-path "$probe/Cargo.toml" check advisories \
    >"$work/probe.log" 2>&1; then
    cat "$work/probe.log"
    fail "cargo deny passed smallvec 1.6.0: no advisory database was read"
elif ! grep -q "RUSTSEC-2021-0003" "$work/probe.log"; then
    cat "$work/probe.log"
    fail "cargo deny refused the probe without naming RUSTSEC-2021-0003"
else
    echo "ok: the advisory database is read (it flags smallvec 1.6.0, RUSTSEC-2021-0003)"
fi

# (Without inclusion graphs: the duplicate-version warnings would print the
# whole tree; `cargo tree -i <crate>` shows where a reported crate comes from.)
"$deny" "${deny_online[@]}" --locked --config "$deny_config" check --hide-inclusion-graph || fail "cargo deny check"

# ---------------------------------------------------------------- 2. bundles
echo "== Lambda bundles (cargo lambda build --release)"
wait_venv .venv-lambda
# arm64, as deployed, when rustup can install the target (it needs the
# network); otherwise x86-64, which proves the same code builds and links.
if rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu ||
    timeout 300 rustup target add aarch64-unknown-linux-gnu >"$work/rustup.log" 2>&1; then
    arch=arm64
    arch_flag=--arm64
    echo "architecture: arm64 (aarch64-unknown-linux-gnu), as the template deploys"
else
    arch=x86-64
    arch_flag=--x86-64
    echo "architecture: x86-64 - rustup could not install aarch64-unknown-linux-gnu ($(tail -n 1 "$work/rustup.log"));"
    echo "              the template deploys arm64, so these sizes are indicative only"
fi

# Every crate under functions/ (a new function is picked up by being there).
cargo metadata --no-deps --format-version 1 --locked >"$work/metadata.json"
mapfile -t crates < <(python3 - "$root" "$work/metadata.json" <<'EOF'
import json, os, sys
root, path = sys.argv[1], sys.argv[2]
for package in json.load(open(path))["packages"]:
    directory = os.path.dirname(package["manifest_path"])
    if os.path.dirname(directory) == os.path.join(root, "functions"):
        for target in package["targets"]:
            if "bin" in target["kind"]:
                print(os.path.basename(directory), package["name"], target["name"])
EOF
)
for manifest in functions/*/Cargo.toml; do
    dir=$(basename "$(dirname "$manifest")")
    printf '%s\n' "${crates[@]}" | grep -q "^$dir " || fail "functions/$dir is not a member of the workspace"
done
if [ "${#crates[@]}" -eq 0 ]; then
    fail "no function crates found under functions/"
else
    packages=()
    for line in "${crates[@]}"; do
        read -r _ package _ <<<"$line"
        packages+=(-p "$package")
    done
    # The bundles run on AWS only: the embedded backend (SQLite) stays out.
    for package in "${packages[@]}"; do
        [ "$package" = -p ] && continue
        [ -z "$(cargo tree --locked -e normal -p "$package" -i rusqlite 2>/dev/null)" ] ||
            fail "$package links rusqlite: the Lambda bundles must not carry the embedded backend"
    done
    echo "no bundle links SQLite (the embedded backend is the CLI's)"
    # Its own target directory: release cross-builds never evict the debug
    # builds of the tests.
    export CARGO_TARGET_DIR=$root/target/lambda
    rm -rf "$CARGO_TARGET_DIR/lambda"
    t=$(date +%s)
    if PATH="$root/.venv-lambda/bin:$PATH" cargo lambda build --release --locked "$arch_flag" \
        --output-format zip "${packages[@]}"; then
        echo "built in $(since "$t")"
        limit=4194304
        printf '%-12s %-8s %12s %12s\n' function arch "zipped (B)" "binary (B)"
        for line in "${crates[@]}"; do
            read -r _ _ bin <<<"$line"
            zip=$CARGO_TARGET_DIR/lambda/$bin/bootstrap.zip
            if [ ! -f "$zip" ]; then
                fail "no bundle for $bin ($zip)"
                continue
            fi
            size=$(stat -c %s "$zip")
            unzipped=$(python3 -c "import sys, zipfile; print(sum(i.file_size for i in zipfile.ZipFile(sys.argv[1]).infolist()))" "$zip")
            printf '%-12s %-8s %12s %12s\n' "$bin" "$arch" "$size" "$unzipped"
            [ "$size" -le "$limit" ] || fail "$bin: bundle is $size bytes zipped, over the 4 MiB ($limit) target"
        done
    else
        fail "cargo lambda build"
    fi
    unset CARGO_TARGET_DIR
fi

# ---------------------------------------------------------------- 3. template
echo "== SAM template (cfn-lint, sam validate)"
wait_venv .venv-sam
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 SAM_CLI_TELEMETRY=0
sam=$root/.venv-sam/bin/sam
cfn_lint=$root/.venv-sam/bin/cfn-lint
"$cfn_lint" infra/template.yaml && echo "cfn-lint: clean" || fail "cfn-lint infra/template.yaml"
"$sam" validate --lint --template infra/template.yaml --region us-east-1 || fail "sam validate --lint"
# With the OpenAPI body inlined, as CloudFormation does before the SAM
# transform: cfn-lint then checks what the body refers to (the functions'
# logical ids) and the SAM translator checks the API as a whole.
expanded=$work/template.expanded.json
if .venv-sam/bin/python scripts/infra_expand.py infra/template.yaml "$expanded"; then
    "$cfn_lint" "$expanded" && echo "cfn-lint (openapi inlined): clean" || fail "cfn-lint on the expanded template"
    # (Without --lint: the SAM translator, which cannot read the raw
    # template's body. Its "Feature ... not available" line is noise.)
    if "$sam" validate --template "$expanded" --region us-east-1 >"$work/sam-validate.log" 2>&1; then
        grep -v "Feature '.*' not available" "$work/sam-validate.log" || true
    else
        cat "$work/sam-validate.log"
        fail "sam validate (SAM translator) on the expanded template"
    fi
else
    fail "could not inline infra/openapi.yaml"
fi

# The template deploys exactly the function crates there are.
if mapfile -t deployed < <(.venv-sam/bin/python scripts/infra_expand.py --functions infra/template.yaml); then
    for line in "${deployed[@]}"; do
        read -r logical bin code_uri <<<"$line"
        dir=$(basename "$code_uri")
        if [ "$code_uri" != "../functions/$dir" ]; then
            fail "$logical: CodeUri $code_uri is not ../functions/<crate>"
        elif ! printf '%s\n' "${crates[@]}" | grep -q "^$dir [^ ]* $bin$"; then
            fail "$logical deploys binary $bin of functions/$dir, which does not exist"
        fi
    done
    for line in "${crates[@]}"; do
        read -r dir _ bin <<<"$line"
        printf '%s\n' "${deployed[@]}" | grep -q " $bin \.\./functions/$dir$" ||
            fail "functions/$dir (binary $bin) is not deployed by infra/template.yaml"
    done
    echo "the template deploys exactly the ${#crates[@]} function crates"
else
    fail "could not list the template's functions"
fi

echo "== infra checks: $([ "$status" -eq 0 ] && echo passed || echo FAILED) in $(since "$started")"
exit "$status"
