#!/usr/bin/env bash
# A short GPU run that needs no real model (one device call, the bundle
# only): the matmul / fused / ops / MoE parity tests, the kernel compile
# test, the mat-vec and prefill bench (direct vs staged, cuBLAS bf16 peer),
# and `kiln bench` on a synthetic model of the default model's shape and
# types (random weights: the same kernels and bytes; tokenizer from the
# bundle's vocab.gguf) with the staged mat-vec off and on.
#   device call: carry ["gpu-bundle"], command: bash gpu-bundle/gpu-quick.sh
set -uo pipefail
cd "$(dirname "$0")/.."
B=gpu-bundle
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}" KILN_CACHE=/tmp/kiln-cache
L=${OUT:-/tmp}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
for t in parity_cumatmul parity_cufused parity_cuops parity_cumoe parity_cuattn compile_kernels; do
  [ -x "$B/$t" ] || continue
  timeout 240 "$B/$t" > "$L/$t.log" 2>&1
  echo "$t rc=$? $(grep -E '^test result' "$L/$t.log" | tail -1)"
  grep -E "FAIL|panicked" -A4 "$L/$t.log" | head -30
done
timeout 300 "$B/bench_matmul" > "$L/bench_matmul.txt" 2>&1
echo "bench_matmul rc=$?"
"$B/kiln" synth /tmp/smol.gguf --type Q4_1 --embd-type Q8_0 --vocab-from "$B/vocab.gguf" \
  --seed 1 > /dev/null
for st in 0 1; do
  echo "== kiln bench, SmolLM2-shaped synthetic Q4_1, KILN_MV_STAGED=$st"
  KILN_MV_STAGED=$st timeout 120 "$B/kiln" bench --device cuda -m /tmp/smol.gguf -p 512 -n 128 -r 5 \
    2>&1 | grep -E '\|'
done
cat "$L/bench_matmul.txt"
