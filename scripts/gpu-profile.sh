#!/usr/bin/env bash
# Where decode time goes, in one device call (about 6 minutes): the
# SmolLM2-shaped Q4_1 synthetic model (tg128 with and without PDL, a
# synchronized per-op profile, ncu kernel durations with warm caches, one
# ncu detail page of a fused Q4_1 mat-vec) and the Qwen3-30B-A3B-shaped
# Q4_K model (per-op profile, ncu kernel durations). Logs: one archive in $OUT.
#   device call: carry ["gpu-bundle"], command: bash gpu-bundle/gpu-profile.sh
# KILN_PROF_PART=smol or moe runs one half.
set -uo pipefail
cd "$(dirname "$0")/.."
B=$(basename "$(cd "$(dirname "$0")" && pwd)")
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}" KILN_CACHE=/tmp/kiln-cache
# Logs go to one folder and come back as one archive (+ the summary) in
# $OUT: the device tool returns only a few files per call.
L=/tmp/prof-logs; rm -rf "$L"; mkdir -p "$L"
finish() { [ -n "${OUT:-}" ] && tar -czf "$OUT/prof-logs.tar.gz" -C "$L" . 2>/dev/null; }
trap finish EXIT
exec > >(tee "$L/stdout.txt") 2>&1
T0=$(date +%s); el() { echo "[t=$(( $(date +%s) - T0 ))s]"; }
PART="${KILN_PROF_PART:-all}"
want() { [ "$PART" = all ] || [ "$PART" = "$1" ]; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader
ncu_times() { # $1 log name, then the program and its arguments
  local n=$1; shift
  timeout 200 ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv \
    --print-units base "$@" > "$L/$n.csv" 2> "$L/$n.err"
  rc=$?; echo "$(el) ncu $n rc=$rc"; python3 scripts/ncu-breakdown.py "$L/$n.csv" | head -25
}
if want smol; then
  "$B/kiln" synth /tmp/smol.gguf --type Q4_1 --embd-type Q8_0 --vocab-from "$B/vocab.gguf" --seed 1 > /dev/null
  # Warm the kernel cache (NVRTC compiles on first use) before timing.
  timeout 300 "$B/kiln" bench --device cuda -m /tmp/smol.gguf -p 64 -n 16 -r 1 > /dev/null 2>&1
  echo "$(el) warm"
  timeout 100 "$B/kiln" bench --device cuda -m /tmp/smol.gguf -p 512 -n 128 -r 3 2>&1 | grep -E '\||rror'
  echo "$(el) KILN_NO_PDL=1"
  KILN_NO_PDL=1 timeout 60 "$B/kiln" bench --device cuda -m /tmp/smol.gguf -p 0 -n 128 -r 3 2>&1 | grep -E 'tg|rror'
  echo "$(el) per-op profile (synchronized per op)"
  timeout 60 "$B/kiln" bench --device cuda -m /tmp/smol.gguf -p 0 -n 128 -r 1 --profile 2>&1 | tail -25
  ncu_times ncu-smol "$B/kiln" bench --device cuda -m /tmp/smol.gguf -p 0 -n 8 -r 1
  # One fused Q4_1 mat-vec in detail (stall reasons, memory), warm caches.
  timeout 120 ncu --clock-control none --cache-control none -k regex:matvec_fused --launch-skip 400 \
    --launch-count 3 --section SpeedOfLight --section LaunchStats --section Occupancy \
    --section WarpStateStats --section MemoryWorkloadAnalysis \
    "$B/kiln" bench --device cuda -m /tmp/smol.gguf -p 0 -n 8 -r 1 > "$L/ncu-mv.txt" 2>&1
  rc=$?; echo "$(el) ncu detail rc=$rc"; grep -vE '^==PROF==|^ *-+ *$' "$L/ncu-mv.txt" | grep -E 'matvec|Duration|Stall|Warp Cycles|Throughput|Registers|Block Size|Grid Size|Achieved Occ|L2 Hit|Mem Busy|Eligible|Issued Warp' | head -60
fi
if want moe; then
  t0=$(date +%s)
  "$B/kiln" synth /tmp/q30.gguf --preset qwen3moe-30b-a3b --type Q4_K --pool-rows 256 --vocab-from "$B/vocab.gguf" 2>&1 | tail -1
  echo "$(el) synth 30B took $(( $(date +%s) - t0 )) s"
  KILN_CUDA_ARCHS=1 timeout 200 "$B/kiln" bench --device cuda -m /tmp/q30.gguf -p 64 -n 32 -r 1 --profile 2>&1 | grep -vE '^\s*$' | tail -40
  KILN_CUDA_ARCHS=1 ncu_times ncu-moe "$B/kiln" bench --device cuda -m /tmp/q30.gguf -p 0 -n 4 -r 1
  rm -f /tmp/q30.gguf
fi
echo "$(el) done"
