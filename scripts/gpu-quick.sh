#!/usr/bin/env bash
# A short GPU run that needs no real model (one device call, the bundle
# only): the matmul / fused / ops / MoE parity tests, the kernel compile
# test, the mat-vec and prefill bench (direct vs staged, cuBLAS bf16 peer),
# and `kiln bench` on a synthetic model of the default model's shape and
# types (random weights: the same kernels and bytes; tokenizer from the
# bundle's vocab.gguf) with the staged mat-vec off and on.
#   device call: carry ["gpu-bundle"], command: bash gpu-bundle/gpu-quick.sh
# A device call is limited to 10 minutes: KILN_QUICK_PART=a runs the first
# half (matmul parity, the SmolLM2-shaped bench, the architectures, the
# 30B-A3B MoE bench), KILN_QUICK_PART=b the second (bench_matmul, the other
# parity binaries); unset runs both.
set -uo pipefail
cd "$(dirname "$0")/.."
B=gpu-bundle
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}" KILN_CACHE=/tmp/kiln-cache
L=/tmp/kiln-quick; rm -rf "$L"; mkdir -p "$L"
# Everything printed also lands in $OUT (kept if the call is cut short).
[ -n "${OUT:-}" ] && exec > >(tee "$OUT/stdout.txt") 2>&1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
# Most important first (a short lease may end the call): decode/prefill
# speed, the architectures on CUDA, the MoE bench, then parity.
par() {
  [ -x "$B/$1" ] || return 0
  timeout "$2" "$B/$1" > "$L/$1.log" 2>&1
  echo "$1 rc=$? $(grep -E '^test result' "$L/$1.log" | tail -1)"
  grep -E "FAIL|panicked" -A4 "$L/$1.log" | head -30
}
PART=${KILN_QUICK_PART:-ab}
if [[ $PART == *a* ]]; then
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
common=(--embd 128 --heads 4 --kv-heads 2 --ff 256 --ctx 512 --type F32 --seed 3
  --vocab-from "$B/vocab.gguf")
for a in qwen2 qwen3 qwen3moe qwen2moe mixtral llama-swa gemma3; do
  extra=(--layers 2); arch=$a; case $a in
    qwen3*) extra+=(--head-dim 32);;& qwen2moe) extra+=(--shared-ff 192);;& *moe|mixtral) extra+=(--experts 8 --experts-used 2 --expert-ff 128);;
    llama-swa) arch=llama; extra+=(--sliding-window 6);;
    # 7 layers: five local (window 6), one global, one local.
    gemma3) extra=(--layers 7 --head-dim 32 --sliding-window 6);;
  esac
  "$B/kiln" synth "/tmp/$a.gguf" --arch "$arch" "${common[@]}" "${extra[@]}" > /dev/null 2>&1 || { echo "arch $a: synth FAIL"; continue; }
  # cuda: decode steps as one recorded graph; eager: KILN_NO_GRAPH=1.
  for dev in cpu cuda eager; do
    d=$dev; [ $dev = eager ] && d=cuda
    KILN_NO_GRAPH=$([ $dev = eager ] && echo 1 || echo 0) KILN_CUDA_ARCHS=1 timeout 60 \
      "$B/kiln" run --device $d -m "/tmp/$a.gguf" -p "The capital of France is" \
      -n 24 --temp 0 > "$L/arch-$a-$dev.txt" 2> "$L/arch-$a-$dev.err"
  done
  r=""; for dev in cuda eager; do
    if cmp -s "$L/arch-$a-cpu.txt" "$L/arch-$a-$dev.txt"; then r+="$dev=same "; else r+="$dev=DIFFERENT "; fi
  done
  echo "arch $a greedy 24 vs cpu: $r| $(tail -c 120 "$L/arch-$a-cuda.err" | tr '\n' ' ')"
done
# Issue 6's end-to-end bar: a Qwen3-30B-A3B-shaped Q4_K model (pool rows:
# written in seconds; same bytes and formats), decode as a graph and eager.
t0=$(date +%s)
"$B/kiln" synth /tmp/q30.gguf --preset qwen3moe-30b-a3b --type Q4_K --pool-rows 256 \
  --vocab-from "$B/vocab.gguf" 2>&1 | tail -1
echo "synth took $(( $(date +%s) - t0 )) s"
for g in 0 1; do
  echo "== kiln bench, Qwen3-30B-A3B-shaped Q4_K, KILN_NO_GRAPH=$g"
  KILN_NO_GRAPH=$g KILN_CUDA_ARCHS=1 timeout 150 "$B/kiln" bench --device cuda -m /tmp/q30.gguf \
    -p 512 -n 128 -r 2 2>&1 | grep -E '\||rror'
done
rm -f /tmp/q30.gguf
# Parity last in part a: parity_cumatmul compiles every MLX variant (slow).
par parity_kiln_moe 60
par parity_cumoe 120
par parity_cumatmul 240
fi
[[ $PART == *b* ]] || exit 0
timeout 300 "$B/bench_matmul" > "$L/bench_matmul.txt" 2>&1
echo "bench_matmul rc=$?"
[ -n "${OUT:-}" ] && cp "$L/bench_matmul.txt" "$OUT/"
cat "$L/bench_matmul.txt"
timeout 180 "$B/bench_attention" > "$L/bench_attention.txt" 2>&1
echo "bench_attention rc=$?"
[ -n "${OUT:-}" ] && cp "$L/bench_attention.txt" "$OUT/"
grep -E '^\|' "$L/bench_attention.txt"
# PyTorch's SDPA at the attention bench's issue shapes (the peer figures).
PYTHONUNBUFFERED=1 timeout 120 python3 scripts/bench-sdpa.py > "$L/sdpa.txt" 2>&1
echo "bench-sdpa rc=$?"; grep -E '^\|' "$L/sdpa.txt"
for t in parity_cuops parity_cuelementwise parity_kiln_cast_mul parity_cuattn parity_cumoe parity_kiln_moe parity_cufused parity_graph compile_kernels; do
  par "$t" 240
done
# MLX model directories on CUDA vs mlx-lm (the GPU test only: a name filter).
if [ -x "$B/mlx_model_gpu" ]; then
  timeout 120 "$B/mlx_model_gpu" tiny_mlx_dirs_on_gpu --nocapture > "$L/mlx_model_gpu.log" 2>&1
  echo "mlx_model_gpu rc=$? $(grep -E '^test result' "$L/mlx_model_gpu.log" | tail -1)"
  grep -E "on CUDA|FAIL|panicked" -A4 "$L/mlx_model_gpu.log" | head -20
fi
[ -n "${OUT:-}" ] && tar -czf "$OUT/quick-logs.tar.gz" -C "$L" .
