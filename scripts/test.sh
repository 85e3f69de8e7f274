#!/usr/bin/env bash
# The test suite: fetch the default model (the end-to-end tests use it),
# fetch NVRTC (for the CUDA kernel compile test), then run every test of
# the workspace. GPU tests say they were skipped when there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export KILN_MODEL="${KILN_MODEL:-$(bash scripts/fetch-model.sh)}"
# NVRTC from PyPI, so the kernel compile test runs without a GPU.
source scripts/nvrtc-env.sh
cargo test --workspace "$@"
