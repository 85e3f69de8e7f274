#!/usr/bin/env bash
# The main job: fetch the default model if missing, build kiln in release,
# generate text and print tokens/s (GPU when kiln finds one, else CPU).
# Extra arguments are passed to `kiln run` (e.g. -p "..." -n 64).
set -euo pipefail
cd "$(dirname "$0")/.."
model=$(bash scripts/fetch-model.sh)
cargo build --release -p kiln-cli
if [ $# -eq 0 ]; then
  set -- -p "The capital of France is" -n 64 --temp 0
fi
exec ./target/release/kiln run -m "$model" "$@"
