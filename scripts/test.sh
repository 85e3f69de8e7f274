#!/usr/bin/env bash
# The test suite: fetch the default model (the end-to-end tests use it),
# then run every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
export KILN_MODEL="${KILN_MODEL:-$(bash scripts/fetch-model.sh)}"
cargo test --workspace "$@"
