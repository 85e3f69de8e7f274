#!/usr/bin/env bash
# The end-to-end and attention figures in one device call (about 6
# minutes): the SmolLM2-shaped Q4_1 model (pp512,
# tg128; the previous prefill and decode attention kernels for A/B), the
# Qwen3-30B-A3B-shaped Q4_K model with direct and staged expert weights
# (and bench_moe's decode rows, direct and staged),
# the attention bench beside PyTorch SDPA. Logs: one archive in $OUT.
#   device call: carry ["gpu-bundle"], command: bash gpu-bundle/gpu-perf.sh
set -uo pipefail
cd "$(dirname "$0")/.."
B=$(basename "$(cd "$(dirname "$0")" && pwd)")
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}" KILN_CACHE=/tmp/kiln-cache
# Logs go to one folder and come back as one archive (+ the summary) in
# $OUT: the device tool returns only a few files per call.
L=/tmp/perf-logs; rm -rf "$L"; mkdir -p "$L"
finish() { [ -n "${OUT:-}" ] && tar -czf "$OUT/perf-logs.tar.gz" -C "$L" . 2>/dev/null; }
trap finish EXIT
exec > >(tee "$L/perf.txt") 2>&1
T0=$(date +%s); el() { echo "[t=$(( $(date +%s) - T0 ))s]"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
bench() { timeout "$1" "$B/kiln" bench --device cuda "${@:2}" 2>&1 | grep -E '\| (pp|tg)|rror'; }
"$B/kiln" synth /tmp/smol.gguf --type Q4_1 --embd-type Q8_0 --vocab-from "$B/vocab.gguf" --seed 1 > /dev/null
timeout 200 "$B/kiln" bench --device cuda -m /tmp/smol.gguf -p 64 -n 16 -r 1 > /dev/null 2>&1
echo "$(el) SmolLM2-shaped Q4_1 (default kernels)"; bench 100 -m /tmp/smol.gguf -p 512 -n 128 -r 3
echo "$(el) KILN_ATTN_DEC=old KILN_ATTN_MMA=v1 (previous decode and prefill attention)"
KILN_ATTN_DEC=old KILN_ATTN_MMA=v1 bench 100 -m /tmp/smol.gguf -p 512 -n 128 -r 3
"$B/kiln" synth /tmp/q30.gguf --preset qwen3moe-30b-a3b --type Q4_K --pool-rows 256 --vocab-from "$B/vocab.gguf" 2>&1 | tail -1
for st in 0 1; do
  echo "$(el) 30B-A3B-shaped Q4_K KILN_MV_STAGED=$st"
  KILN_MV_STAGED=$st KILN_CUDA_ARCHS=1 bench 150 -m /tmp/q30.gguf -p 512 -n 64 -r 1
done
rm -f /tmp/q30.gguf
KILN_BENCH_ONLY=decode timeout 75 "$B/bench_moe" > "$L/bench_moe.txt" 2>&1; rc=$?; echo "$(el) bench_moe decode rc=$rc"
grep -E 'ceiling|Q4_K|Q8_0|Q4_1' "$L/bench_moe.txt"
timeout 150 "$B/bench_attention" > "$L/bench_attention.txt" 2>&1; rc=$?; echo "$(el) bench_attention rc=$rc"
grep -E '^\||ceiling' "$L/bench_attention.txt"
PYTHONUNBUFFERED=1 timeout 90 python3 scripts/bench-sdpa.py --iters 50 > "$L/sdpa.txt" 2>&1; rc=$?; echo "$(el) bench-sdpa rc=$rc"
grep -E '^\|' "$L/sdpa.txt"
echo "$(el) done"
