#!/usr/bin/env bash
# Long fuzz run: every decoder that reads a peer's bytes, a million mutated inputs each (or $1).
# Findings (inputs that made a decoder panic) are written to target/fuzz-findings/.
set -euo pipefail
cd "$(dirname "$0")/.."
cases="${1:-1000000}"
shift || true
cargo run --release -p cocoon-fuzz -- --cases "$cases" --findings target/fuzz-findings "$@"
