#!/usr/bin/env bash
# PDL at kernel entry (kiln_pdl_enter), the int8 expert tiles and the dense
# tile mat-vec in one device call (under 10 minutes; later steps are skipped
# when time runs short): parity (graph, MoE every load mode incl. int8
# tiles, matmul incl. dense tiles, fused), bench_moe decode rows, the
# Qwen3-30B-A3B-shaped Q4_K tg with KILN_PDL_ENTRY=1 (PDL for the kernels
# that wait at entry; opt-in) against the default and float against int8 tiles, the
# SmolLM2-shaped pp512/tg128 likewise, greedy text CPU vs CUDA graph
# (llama / qwen3 / qwen3moe synthetic, qwen3moe also with int8 tiles),
# bench_matmul's decode rows (dense tiles), an ncu per-kernel table of the
# 30B decode. The summary is written to $OUT as it goes; the logs come back
# as one archive.
#   device call: carry ["gpu-bundle"], command: bash gpu-bundle/gpu-pdl.sh
set -uo pipefail
cd "$(dirname "$0")/.."
B=$(basename "$(cd "$(dirname "$0")" && pwd)")
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}" KILN_CACHE=/tmp/kiln-cache
L=/tmp/pdl-logs; rm -rf "$L"; mkdir -p "$L"
finish() { [ -n "${OUT:-}" ] && tar -czf "$OUT/pdl-logs.tar.gz" -C "$L" . 2>/dev/null; }
trap finish EXIT
exec > >(tee "$L/pdl.txt" "${OUT:-/tmp}/pdl-summary.txt") 2>&1
T0=$(date +%s); el() { echo "[t=$(( $(date +%s) - T0 ))s]"; }
# left N: at least N seconds remain before the 570 s budget.
left() { [ $(( $(date +%s) - T0 + $1 )) -lt 570 ] || { echo "$(el) skipped (time): ${*:2}"; return 1; }; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
par() { [ -x "$B/$1" ] || { echo "$1 missing"; return 0; }
  timeout "$2" "$B/$1" > "$L/$1.log" 2>&1; echo "$(el) $1 rc=$? $(grep -E '^test result' "$L/$1.log" | tail -1)"
  grep -E "FAIL|panicked|failed" -A6 "$L/$1.log" | cut -c1-300 | head -30; }
KILN_PDL_ENTRY=1 par parity_graph 150
KILN_PDL_ENTRY=1 par parity_cumoe 150
KILN_BENCH_ONLY=decode timeout 100 "$B/bench_moe" > "$L/bench_moe.txt" 2>&1
echo "$(el) bench_moe decode rc=$?"
grep -E 'ceiling|Q4_K|Q8_0|Q4_0|Q4_1' "$L/bench_moe.txt" | head -60
"$B/kiln" synth /tmp/q30.gguf --preset qwen3moe-30b-a3b --type Q4_K --pool-rows 256 --vocab-from "$B/vocab.gguf" 2>&1 | tail -1
q30() { # $1 label, $2 prompt tokens, then env assignments
  local label=$1 pp=$2; shift 2
  left 40 "30B $label" || return 0
  echo "$(el) 30B-A3B-shaped Q4_K $label"
  env "$@" timeout "${Q30_T:-90}" "$B/kiln" bench --device cuda -m /tmp/q30.gguf -p "$pp" -n 64 -r 1 2>&1 | grep -E '\| (pp|tg)|rror'
}
# The first run compiles the model's kernels (NVRTC, cold machine).
Q30_T=170 q30 "default (float tiles)" 512 KILN_X=1
q30 "PDL entry on" 0 KILN_PDL_ENTRY=1
q30 "int8 tiles" 0 KILN_MV_TILE_Q8=1
q30 "int8 tiles, PDL entry on" 0 KILN_MV_TILE_Q8=1 KILN_PDL_ENTRY=1
q30 "tiles off" 0 KILN_MV_TILE=0
"$B/kiln" synth /tmp/smol.gguf --type Q4_1 --embd-type Q8_0 --vocab-from "$B/vocab.gguf" --seed 1 > /dev/null
for e in 1 0; do
  left 30 "smol PDL_ENTRY=$e" || break
  echo "$(el) smol KILN_PDL_ENTRY=$e"
  KILN_PDL_ENTRY=$e timeout 60 "$B/kiln" bench --device cuda -m /tmp/smol.gguf -p 512 -n 128 -r 3 2>&1 | grep -E '\| (pp|tg)|rror'
done
greedy() { # $1 label, $2 model, then env assignments for the CUDA run
  local label=$1 m=$2; shift 2
  left 30 "greedy $label" || return 0
  timeout 40 "$B/kiln" run --device cpu -m "$m" -p "The capital of France is" -n 24 --temp 0 \
    > "$L/greedy-$label-cpu.txt" 2> "$L/greedy-$label-cpu.err"
  env "$@" timeout 60 "$B/kiln" run --device cuda -m "$m" -p "The capital of France is" -n 24 --temp 0 \
    > "$L/greedy-$label-cuda.txt" 2> "$L/greedy-$label-cuda.err"
  if cmp -s "$L/greedy-$label-cpu.txt" "$L/greedy-$label-cuda.txt"; then r=same; else r=DIFFERENT; fi
  echo "$(el) greedy 24 $label cuda-graph vs cpu: $r | $(tail -c 120 "$L/greedy-$label-cuda.err" | tr '\n' ' ')"
}
common=(--embd 256 --heads 4 --kv-heads 2 --ff 512 --ctx 512 --layers 3 --seed 3 --vocab-from "$B/vocab.gguf")
"$B/kiln" synth /tmp/v-q3moe.gguf --arch qwen3moe "${common[@]}" --head-dim 64 --experts 8 --experts-used 2 --expert-ff 256 --type Q4_K > /dev/null 2>&1
greedy qwen3moe-Q4_K-pdl /tmp/v-q3moe.gguf KILN_PDL_ENTRY=1
greedy qwen3moe-Q4_K-q8tiles /tmp/v-q3moe.gguf KILN_MV_TILE_Q8=1
"$B/kiln" synth /tmp/v-q41.gguf "${common[@]}" --type Q4_1 > /dev/null 2>&1 && greedy llama-Q4_1-pdl /tmp/v-q41.gguf KILN_PDL_ENTRY=1
"$B/kiln" synth /tmp/v-qwen3.gguf --arch qwen3 "${common[@]}" --head-dim 64 --type Q4_K > /dev/null 2>&1 && greedy qwen3-Q4_K-pdl /tmp/v-qwen3.gguf KILN_PDL_ENTRY=1
left 90 parity_cumatmul && par parity_cumatmul 90
if left 100 bench_matmul; then
  KILN_BENCH_ONLY=decode timeout 100 "$B/bench_matmul" > "$L/bench_matmul.txt" 2>&1
  echo "$(el) bench_matmul decode rc=$?"
  grep -E 'ceiling|14336|576×576|49152' "$L/bench_matmul.txt" | grep -E 'Q|ceiling' | head -120
fi
left 60 parity_cufused && par parity_cufused 60
if left 60 ncu; then
  KILN_MV_TILE_Q8=1 timeout 60 ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv \
    --print-units base "$B/kiln" bench --device cuda -m /tmp/q30.gguf -p 0 -n 4 -r 1 > "$L/ncu-q30.csv" 2> "$L/ncu-q30.err"
  echo "$(el) ncu q30 (int8 tiles) rc=$?"; python3 scripts/ncu-breakdown.py "$L/ncu-q30.csv" | head -25
fi
echo "$(el) done"
