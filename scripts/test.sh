#!/usr/bin/env bash
# The one test command (README, .ci/run): formatting, lints, every test.
# Needs only the Rust toolchain; it installs anything else it uses.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test (unit, contract, handler-event and black-box tests)"
cargo test --workspace --locked
