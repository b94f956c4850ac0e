#!/usr/bin/env bash
# All tests: formatting, lints (warnings are errors), every crate's unit and end-to-end tests, and
# the TON devnet's and contracts' tests (contracts/, on @ton/sandbox).
# This is the README's test command; `.ci/run` runs it after `scripts/setup.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
(cd contracts && npm test)
