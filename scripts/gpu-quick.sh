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
# Everything printed also lands in $OUT (kept if the call is cut short).
[ -n "${OUT:-}" ] && exec > >(tee "$OUT/stdout.txt") 2>&1
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
# The architectures whose CUDA forwards have not run on a GPU before
# (KILN_CUDA_ARCHS=1 lets them load there): small synthetic models, greedy
# text on the CPU and on CUDA (f32 weights: both keep f32 activations).
common=(--layers 2 --embd 128 --heads 4 --kv-heads 2 --ff 256 --ctx 512 --type F32 --seed 3
  --vocab-from "$B/vocab.gguf")
for a in qwen2 qwen3 qwen3moe qwen2moe mixtral; do
  extra=(); case $a in
    qwen3*) extra=(--head-dim 32);;& qwen2moe) extra=(--shared-ff 192);;& *moe|mixtral) extra+=(--experts 8 --experts-used 2 --expert-ff 128);;
  esac
  "$B/kiln" synth "/tmp/$a.gguf" --arch "$a" "${common[@]}" "${extra[@]}" > /dev/null 2>&1 || { echo "arch $a: synth FAIL"; continue; }
  for dev in cpu cuda; do
    KILN_CUDA_ARCHS=1 timeout 60 "$B/kiln" run --device $dev -m "/tmp/$a.gguf" -p "The capital of France is" \
      -n 24 --temp 0 > "$L/arch-$a-$dev.txt" 2> "$L/arch-$a-$dev.err"
  done
  if cmp -s "$L/arch-$a-cpu.txt" "$L/arch-$a-cuda.txt"; then r=same; else r=DIFFERENT; fi
  echo "arch $a greedy 24 cpu vs cuda: $r | $(tail -c 120 "$L/arch-$a-cuda.err" | tr '\n' ' ')"
done
timeout 300 "$B/bench_matmul" > "$L/bench_matmul.txt" 2>&1
echo "bench_matmul rc=$?"
[ -n "${OUT:-}" ] && cp "$L/bench_matmul.txt" "$OUT/"
cat "$L/bench_matmul.txt"
for t in parity_cuops parity_cuattn parity_cumoe parity_kiln_moe parity_cufused parity_graph compile_kernels; do
  par "$t" 240
done
[ -n "${OUT:-}" ] && tar -czf "$OUT/quick-logs.tar.gz" -C "$L" .
