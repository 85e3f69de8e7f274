#!/usr/bin/env bash
# The shortest useful GPU call (about 8 minutes): the bundle only, the most
# informative checks first, each bounded by a timeout, every log under $OUT:
# SmolLM2-shaped decode/prefill speed (staged mat-vec on/off, tensor-core
# prefill attention off / v1), attention and op parity, the Qwen3-30B-A3B-shaped
# MoE bench, MoE parity (ring KV caches: parity_cuattn, parity_cuops,
# parity_graph, parity_cufused), three architectures CPU vs CUDA graph, the attention
# bench beside PyTorch SDPA, matmul parity.
#   device call: carry ["gpu-bundle"], command: bash gpu-bundle/gpu-essentials.sh
set -uo pipefail
cd "$(dirname "$0")/.."
B=$(basename "$(cd "$(dirname "$0")" && pwd)")
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}" KILN_CACHE=/tmp/kiln-cache
L=${OUT:-/tmp/ess}; mkdir -p "$L"
exec > >(tee "$L/stdout.txt") 2>&1
T0=$(date +%s); el() { echo "[t=$(( $(date +%s) - T0 ))s]"; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader
par() { [ -x "$B/$1" ] || { echo "$1 missing"; return 0; }
  timeout "$2" "$B/$1" > "$L/$1.log" 2>&1; rc=$?; echo "$(el) $1 rc=$rc $(grep -E '^test result' "$L/$1.log" | tail -1)"
  grep -E "FAIL|panicked|failed" -A6 "$L/$1.log" | head -40; }
"$B/kiln" synth /tmp/smol.gguf --type Q4_1 --embd-type Q8_0 --vocab-from "$B/vocab.gguf" --seed 1 > /dev/null
for st in 1 0; do
  echo "$(el) == bench SmolLM2-shaped Q4_1 KILN_MV_STAGED=$st"
  KILN_MV_STAGED=$st timeout 100 "$B/kiln" bench --device cuda -m /tmp/smol.gguf -p 512 -n 128 -r 2 2>&1 | grep -E '\||rror'
done
echo "$(el) == pp512 with KILN_ATTN_MMA=0 (f32 tiled prefill attention)"
KILN_ATTN_MMA=0 timeout 60 "$B/kiln" bench --device cuda -m /tmp/smol.gguf -p 512 -n 16 -r 2 2>&1 | grep -E '\||rror'
echo "$(el) == pp512 with KILN_ATTN_MMA=v1 (tensor-core prefill v1 instead of v2)"
KILN_ATTN_MMA=v1 timeout 60 "$B/kiln" bench --device cuda -m /tmp/smol.gguf -p 512 -n 16 -r 2 2>&1 | grep -E '\||rror'
par parity_cuattn 360
par parity_cuops 100
par parity_graph 60
par parity_cufused 60
t0=$(date +%s)
"$B/kiln" synth /tmp/q30.gguf --preset qwen3moe-30b-a3b --type Q4_K --pool-rows 256 --vocab-from "$B/vocab.gguf" 2>&1 | tail -1
echo "$(el) synth 30B took $(( $(date +%s) - t0 )) s"
KILN_CUDA_ARCHS=1 timeout 120 "$B/kiln" bench --device cuda -m /tmp/q30.gguf -p 512 -n 64 -r 1 2>&1 | grep -E '\||rror'
rm -f /tmp/q30.gguf
par parity_cumoe 100
common=(--embd 128 --heads 4 --kv-heads 2 --ff 256 --ctx 512 --type F32 --seed 3 --vocab-from "$B/vocab.gguf")
for a in qwen3moe gemma3 qwen2; do
  extra=(--layers 2); arch=$a; runx=()
  # gemma3: batches of 4 make its local layers rings of 9 rows (wrapped).
  case $a in qwen3moe) extra+=(--head-dim 32 --experts 8 --experts-used 2 --expert-ff 128);; gemma3) extra=(--layers 7 --head-dim 32 --sliding-window 6); runx=(-b 4);; esac
  "$B/kiln" synth "/tmp/$a.gguf" --arch "$arch" "${common[@]}" "${extra[@]}" > /dev/null 2>&1 || { echo "arch $a synth FAIL"; continue; }
  for dev in cpu cuda; do KILN_CUDA_ARCHS=1 timeout 40 "$B/kiln" run --device $dev -m "/tmp/$a.gguf" -p "The capital of France is" -n 24 --temp 0 "${runx[@]}" > "$L/arch-$a-$dev.txt" 2> "$L/arch-$a-$dev.err"; done
  if cmp -s "$L/arch-$a-cpu.txt" "$L/arch-$a-cuda.txt"; then r=same; else r=DIFFERENT; fi
  echo "$(el) arch $a greedy 24 cuda-graph vs cpu: $r | $(tail -c 150 "$L/arch-$a-cuda.err" | tr '\n' ' ')"
done
timeout 150 "$B/bench_attention" > "$L/bench_attention.txt" 2>&1; rc=$?; echo "$(el) bench_attention rc=$rc"; grep -E '^\|' "$L/bench_attention.txt"
PYTHONUNBUFFERED=1 timeout 90 python3 scripts/bench-sdpa.py --iters 50 > "$L/sdpa.txt" 2>&1; rc=$?; echo "$(el) bench-sdpa rc=$rc"; grep -E '^\|' "$L/sdpa.txt"
par parity_cumatmul 200
echo "$(el) done"
