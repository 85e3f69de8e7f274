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
L=/tmp/kiln-quick; rm -rf "$L"; mkdir -p "$L"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
# Most important first (a short lease may end the call): matmul parity
# (the 4-thread dequantize is on by default), then decode/prefill speed.
par() {
  [ -x "$B/$1" ] || return 0
  timeout "$2" "$B/$1" > "$L/$1.log" 2>&1
  echo "$1 rc=$? $(grep -E '^test result' "$L/$1.log" | tail -1)"
  grep -E "FAIL|panicked" -A4 "$L/$1.log" | head -30
}
par parity_cumatmul 240
"$B/kiln" synth /tmp/smol.gguf --type Q4_1 --embd-type Q8_0 --vocab-from "$B/vocab.gguf" \
  --seed 1 > /dev/null
for st in 0 1; do
  echo "== kiln bench, SmolLM2-shaped synthetic Q4_1, KILN_MV_STAGED=$st"
  KILN_MV_STAGED=$st timeout 120 "$B/kiln" bench --device cuda -m /tmp/smol.gguf -p 512 -n 128 -r 3 \
    2>&1 | grep -E '\|'
done
timeout 300 "$B/bench_matmul" > "$L/bench_matmul.txt" 2>&1
echo "bench_matmul rc=$?"
[ -n "${OUT:-}" ] && cp "$L/bench_matmul.txt" "$OUT/"
cat "$L/bench_matmul.txt"
for t in parity_cuops parity_cuattn parity_cumoe parity_kiln_moe parity_cufused parity_graph compile_kernels; do
  par "$t" 240
done
[ -n "${OUT:-}" ] && tar -czf "$OUT/quick-logs.tar.gz" -C "$L" .
