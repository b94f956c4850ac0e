#!/usr/bin/env bash
# All tests: formatting, lints and API docs (warnings are errors), every crate's unit and end-to-end tests, and
# the TON devnet's and contracts' tests (contracts/, on @ton/sandbox).
# This is the README's test command; `.ci/run` runs it after `scripts/setup.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
# The money rules stay pure: cocoon-money links no SQLite, HTTP server or client, nor sockets.
money_tree=$(cargo tree -p cocoon-money -e normal,features --prefix none)
if grep -E '^(rusqlite|axum|hyper|reqwest|mio|socket2) |^tokio feature "net"' <<<"$money_tree"; then
    echo "cocoon-money links the I/O crates above; keep them in cocoon-ledger" >&2
    exit 1
fi
cargo clippy --workspace --all-targets -- -D warnings
# The API docs build without broken or private links.
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
cargo test --workspace
(cd contracts && npm test)
