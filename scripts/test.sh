#!/usr/bin/env bash
# The test suite: fetch the default model (the end-to-end tests use it) and
# Gemma 3 270M (its config and tokenizer tests use it; 253 MB, cached),
# fetch NVRTC (for the CUDA kernel compile test), then run every test of
# the workspace. GPU tests say they were skipped when there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export KILN_MODEL="${KILN_MODEL:-$(bash scripts/fetch-model.sh)}"
export KILN_GEMMA="${KILN_GEMMA:-$(bash scripts/fetch-gemma.sh)}"
# NVRTC from PyPI, so the kernel compile test runs without a GPU.
source scripts/nvrtc-env.sh
cargo test --workspace "$@"
