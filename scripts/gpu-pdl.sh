#!/usr/bin/env bash
# Session 11's opt-in GPU paths, to measure and check before any becomes a
# default: PDL at kernel entry (KILN_PDL_ENTRY=1), the int8 expert tiles
# (KILN_MV_TILE_Q8=1), dense one-row mat-vecs through the tile kernels
# (KILN_MV_DENSE_TILE=1), matvec_fused tiles (KILN_MVF_TILE=1 float,
# =q8 int8) and qwen3's one-launch q/k norm + RoPE + KV append
# (KILN_QKNR=1). Two device calls of under 10 minutes each (later steps are
# skipped when time runs short; the summary is written to $OUT as it goes,
# the logs come back as one archive):
#   KILN_GPU_PART=check: parity (graph, MoE every load mode, fused with its
#     tile modes, matmul with dense tiles) with PDL entry on, then greedy
#     text CPU vs CUDA graph for llama / qwen3 / qwen3moe synthetic models
#     under each switch;
#   KILN_GPU_PART=perf: bench_moe and bench_matmul decode rows (tile rows
#     beside the pair kernels), the SmolLM2-shaped pp512/tg128 and the
#     Qwen3-30B-A3B-shaped Q4_K tg64 under each switch, then an ncu
#     per-kernel table of the 30B decode.
#   device call: carry ["gpu-bundle"], command: KILN_GPU_PART=check bash gpu-bundle/gpu-pdl.sh
#   scarce device pool: KILN_GPU_PART=key does the most valuable of both parts in one call.
#   KILN_GPU_PART=prefetch: perf.md §24's A/B with parity and greedy text,
#     ncu of the decode attention and of one gated expert tile, then the
#     fused tiles' parity and the i-quants' GPU parity (session 12's next call).
set -uo pipefail
cd "$(dirname "$0")/.."
B=$(basename "$(cd "$(dirname "$0")" && pwd)")
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}" KILN_CACHE=/tmp/kiln-cache
PART="${KILN_GPU_PART:-check}"
L=/tmp/pdl-logs-$PART; rm -rf "$L"; mkdir -p "$L"
finish() { [ -n "${OUT:-}" ] && tar -czf "$OUT/pdl-$PART-logs.tar.gz" -C "$L" . 2>/dev/null; }
trap finish EXIT
exec > >(tee "$L/summary.txt" "${OUT:-/tmp}/pdl-$PART-summary.txt") 2>&1
T0=$(date +%s); el() { echo "[t=$(( $(date +%s) - T0 ))s]"; }
# left N: at least N seconds remain before the budget (KILN_GPU_BUDGET, 570 s).
left() { [ $(( $(date +%s) - T0 + $1 )) -lt "${KILN_GPU_BUDGET:-570}" ] || { echo "$(el) skipped (time): ${*:2}"; return 1; }; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
# par BINARY SECONDS [TEST FILTERS...]: a parity binary of the bundle, its
# log in $L/BINARY[-FILTERS].log, its result line and any failure printed.
par() { [ -x "$B/$1" ] || { echo "$1 missing"; return 0; }
  local bin=$1 t=$2; shift 2
  local name="$bin${*:+ $*}" log="$L/$bin" a
  for a in "$@"; do log+="-$a"; done; log+=.log
  left 40 "$name" || return 0
  timeout "$t" "$B/$bin" "$@" > "$log" 2>&1; rc=$?; echo "$(el) $name rc=$rc $(grep -E '^test result' "$log" | tail -1)"
  grep -E "FAIL|panicked|failed" -A6 "$log" | cut -c1-300 | head -30
  grep -E "^(staged|tiles|dense)" "$log" | cut -c1-200 | head -12; }
common=(--embd 256 --heads 4 --kv-heads 2 --ff 512 --ctx 512 --layers 3 --seed 3 --vocab-from "$B/vocab.gguf")
# kiln bench on the SmolLM2-shaped (/tmp/smol.gguf: pp512, tg128) and the
# 30B-A3B-shaped (/tmp/q30.gguf: pp $2, tg64) models the parts synthesize:
# $1 label, then env assignments (SMOL_T / Q30_T: the time limit).
smol() {
  local label=$1; shift
  left 30 "smol $label" || return 0
  echo "$(el) smol $label"
  env "$@" timeout "${SMOL_T:-60}" "$B/kiln" bench --device cuda -m /tmp/smol.gguf -p 512 -n 128 -r 3 2>&1 | grep -E '\| (pp|tg)|rror'
}
q30() {
  local label=$1 pp=$2; shift 2
  left 40 "30B $label" || return 0
  echo "$(el) 30B-A3B-shaped Q4_K $label"
  env "$@" timeout "${Q30_T:-90}" "$B/kiln" bench --device cuda -m /tmp/q30.gguf -p "$pp" -n 64 -r 1 2>&1 | grep -E '\| (pp|tg)|rror'
}
if [ "$PART" = check ]; then
  export KILN_PDL_ENTRY=1
  par parity_graph 120
  par parity_cumoe 150
  par parity_cufused 150
  par parity_cumatmul 120
  par parity_kiln_qknr 60
  par parity_cuops 60 qk_norm_rope norm_rope
  unset KILN_PDL_ENTRY
  greedy() { # $1 label, $2 model, then env assignments for the CUDA runs
    local label=$1 m=$2; shift 2
    left 30 "greedy $label" || return 0
    [ -s "$L/greedy-$label-cpu.txt" ] || timeout 40 "$B/kiln" run --device cpu -m "$m" -p "The capital of France is" \
      -n 24 --temp 0 > "$L/greedy-$label-cpu.txt" 2> "$L/greedy-$label-cpu.err"
    local i=0
    for sw in KILN_X=1 KILN_PDL_ENTRY=1 KILN_MV_TILE_Q8=1 KILN_MVF_TILE=1 KILN_MVF_TILE=q8 KILN_MV_DENSE_TILE=1 KILN_QKNR=1; do
      i=$((i + 1))
      env "$sw" timeout 90 "$B/kiln" run --device cuda -m "$m" -p "The capital of France is" -n 24 --temp 0 \
        > "$L/greedy-$label-cuda$i.txt" 2> "$L/greedy-$label-cuda$i.err"
      if cmp -s "$L/greedy-$label-cpu.txt" "$L/greedy-$label-cuda$i.txt"; then r=same; else r=DIFFERENT; fi
      echo "$(el) greedy 24 $label $sw cuda-graph vs cpu: $r | $(tail -c 100 "$L/greedy-$label-cuda$i.err" | tr '\n' ' ')"
    done
  }
  "$B/kiln" synth /tmp/v-q3moe.gguf --arch qwen3moe "${common[@]}" --head-dim 64 --experts 8 --experts-used 2 --expert-ff 256 --type Q4_K > /dev/null 2>&1
  greedy qwen3moe-Q4_K /tmp/v-q3moe.gguf
  "$B/kiln" synth /tmp/v-q41.gguf "${common[@]}" --type Q4_1 > /dev/null 2>&1 && greedy llama-Q4_1 /tmp/v-q41.gguf
  "$B/kiln" synth /tmp/v-qwen3.gguf --arch qwen3 "${common[@]}" --head-dim 64 --type Q4_K > /dev/null 2>&1 && greedy qwen3-Q4_K /tmp/v-qwen3.gguf
  "$B/kiln" synth /tmp/v-q80.gguf "${common[@]}" --type Q8_0 > /dev/null 2>&1 && greedy llama-Q8_0 /tmp/v-q80.gguf
fi
if [ "$PART" = key ]; then
  # One call for when the device pool is scarce: the most valuable checks
  # and figures first, the time guards skip the rest.
  KILN_PDL_ENTRY=1 par parity_cumoe 150
  par parity_cuattn 100 decode
  KILN_BENCH_ONLY=decode timeout 100 "$B/bench_moe" > "$L/bench_moe.txt" 2>&1
  rc=$?; echo "$(el) bench_moe decode rc=$rc"
  grep -E 'ceiling|Q4_K|Q8_0|Q4_0' "$L/bench_moe.txt" | head -40
  "$B/kiln" synth /tmp/smol.gguf --type Q4_1 --embd-type Q8_0 --vocab-from "$B/vocab.gguf" --seed 1 > /dev/null
  SMOL_T=120 smol default KILN_X=1
  smol "attention L2 prefetch on" KILN_ATTN_PREFETCH=1
  smol "fused tiles int8 + PDL entry" KILN_MVF_TILE=q8 KILN_PDL_ENTRY=1
  smol "PDL entry" KILN_PDL_ENTRY=1
  "$B/kiln" synth /tmp/q30.gguf --preset qwen3moe-30b-a3b --type Q4_K --pool-rows 256 --vocab-from "$B/vocab.gguf" 2>&1 | tail -1
  Q30_T=170 q30 "default" 512 KILN_X=1
  q30 "int8 expert tiles" 0 KILN_MV_TILE_Q8=1
  q30 "all: int8 expert + fused tiles, PDL entry, qk_norm_rope_kv" 0 KILN_MV_TILE_Q8=1 KILN_MVF_TILE=q8 KILN_PDL_ENTRY=1 KILN_QKNR=1
  q30 "PDL entry" 0 KILN_PDL_ENTRY=1
  KILN_PDL_ENTRY=1 par parity_cufused 150
  "$B/kiln" synth /tmp/v-q3moe.gguf --arch qwen3moe "${common[@]}" --head-dim 64 --experts 8 --experts-used 2 --expert-ff 256 --type Q4_K > /dev/null 2>&1
  if left 60 greedy; then
    timeout 40 "$B/kiln" run --device cpu -m /tmp/v-q3moe.gguf -p "The capital of France is" -n 24 --temp 0 > "$L/gk-cpu.txt" 2>/dev/null
    for sw in "KILN_X=1" "KILN_MV_TILE_Q8=1 KILN_MVF_TILE=q8 KILN_PDL_ENTRY=1 KILN_QKNR=1"; do
      env $sw timeout 60 "$B/kiln" run --device cuda -m /tmp/v-q3moe.gguf -p "The capital of France is" -n 24 --temp 0 > "$L/gk-cuda.txt" 2> "$L/gk-cuda.err"
      if cmp -s "$L/gk-cpu.txt" "$L/gk-cuda.txt"; then r=same; else r=DIFFERENT; fi
      echo "$(el) greedy 24 qwen3moe-Q4_K [$sw] cuda-graph vs cpu: $r"
    done
  fi
  KILN_PDL_ENTRY=1 par parity_graph 100
fi
if [ "$PART" = prefetch ]; then
  # perf.md §24: the decode attention's L2 prefetch (KILN_ATTN_PREFETCH=1,
  # opt-in) against the default, with parity and greedy text (run the
  # parity binaries with the switch on too before making it a default).
  KILN_ATTN_PREFETCH=1 par parity_cuattn 120 decode
  KILN_ATTN_PREFETCH=1 par parity_graph 60
  "$B/kiln" synth /tmp/smol.gguf --type Q4_1 --embd-type Q8_0 --vocab-from "$B/vocab.gguf" --seed 1 > /dev/null
  SMOL_T=120 smol "prefetch on" KILN_ATTN_PREFETCH=1
  smol "prefetch off (default)" KILN_ATTN_PREFETCH=0
  smol "prefetch on" KILN_ATTN_PREFETCH=1
  smol "prefetch off (default)" KILN_ATTN_PREFETCH=0
  "$B/kiln" synth /tmp/v-q41.gguf "${common[@]}" --type Q4_1 > /dev/null 2>&1
  "$B/kiln" synth /tmp/v-qwen3.gguf --arch qwen3 "${common[@]}" --head-dim 64 --type Q4_K > /dev/null 2>&1
  for m in v-q41 v-qwen3 smol; do
    left 40 "greedy $m" || break
    timeout 40 "$B/kiln" run --device cpu -m /tmp/$m.gguf -p "The capital of France is" -n 32 --temp 0 > "$L/g-$m-cpu.txt" 2>/dev/null
    KILN_ATTN_PREFETCH=1 timeout 60 "$B/kiln" run --device cuda -m /tmp/$m.gguf -p "The capital of France is" -n 32 --temp 0 > "$L/g-$m-cuda.txt" 2> "$L/g-$m-cuda.err"
    if cmp -s "$L/g-$m-cpu.txt" "$L/g-$m-cuda.txt"; then r=same; else r=DIFFERENT; fi
    echo "$(el) greedy 32 $m cuda-graph (prefetch on) vs cpu: $r"
  done
  for pf in 1 0; do
    left 70 "ncu attention prefetch=$pf" || break
    KILN_ATTN_PREFETCH=$pf timeout 60 ncu --clock-control none --cache-control none --kernel-name regex:attention_decg \
      --metrics gpu__time_duration.sum --csv --print-units base "$B/kiln" bench --device cuda -m /tmp/smol.gguf -p 0 -n 8 -r 1 \
      > "$L/ncu-attn-$pf.csv" 2> "$L/ncu-attn-$pf.err"
    rc=$?; echo "$(el) ncu decode attention prefetch=$pf rc=$rc: $(python3 - "$L/ncu-attn-$pf.csv" <<'PY'
import csv, sys
v = [float(r["Metric Value"]) for r in csv.DictReader(l for l in open(sys.argv[1]) if l.startswith('"'))
     if r.get("Metric Name") == "gpu__time_duration.sum"]
print(f"{len(v)} launches, mean {sum(v) / max(len(v), 1) / 1e3:.2f} us" if v else "no rows")
PY
)"
  done
  # Why the expert tiles sit at ~10 us whatever the format (bench_moe,
  # session 12): one gated Q4_K tile launch of a 30B-A3B-shaped layer
  # under ncu's sections, float tiles then int8 tiles.
  "$B/kiln" synth /tmp/moe2.gguf --arch qwen3moe --embd 2048 --heads 32 --kv-heads 4 --head-dim 128 --ff 768 \
    --layers 2 --experts 128 --experts-used 8 --expert-ff 768 --type Q4_K --pool-rows 256 --vocab-from "$B/vocab.gguf" > /dev/null 2>&1
  for q8 in 0 1; do
    left 90 "ncu expert tile q8=$q8" || break
    KILN_MV_TILE_Q8=$q8 timeout 80 ncu --clock-control none --kernel-name regex:mul_mv_id_swiglu_tile --launch-skip 2 --launch-count 1 \
      --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis \
      "$B/kiln" bench --device cuda -m /tmp/moe2.gguf -p 0 -n 4 -r 1 > "$L/ncu-tile-q8$q8.txt" 2>&1
    rc=$?; echo "$(el) ncu swiglu tile q8=$q8 rc=$rc"
    grep -E "mul_mv_id|Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Shared Memory Config|Dynamic Shared|Block Limit|Grid Size|Warp Cycles Per Issued|Issued Warp|L2 Hit|Compute \(SM\) Thr" "$L/ncu-tile-q8$q8.txt" | head -24
  done
  KILN_PDL_ENTRY=1 par parity_cufused 240
  # The i-quants (IQ2_XXS, IQ2_XS, IQ3_XXS, IQ3_S; session 12): the
  # testkit tables carry them, so these binaries run them; then greedy text
  # CPU vs CUDA on synthetic models (random weights: a near tie may part).
  par parity_cumatmul 150
  par parity_cuops 60 embedding
  par parity_cumoe 120 matmul_id
  for t in IQ2_XXS IQ3_S; do
    left 60 "greedy $t" || break
    "$B/kiln" synth /tmp/iq-$t.gguf "${common[@]}" --type $t > /dev/null 2>&1
    timeout 40 "$B/kiln" run --device cpu -m /tmp/iq-$t.gguf -p "The capital of France is" -n 24 --temp 0 > "$L/g-$t-cpu.txt" 2>/dev/null
    timeout 60 "$B/kiln" run --device cuda -m /tmp/iq-$t.gguf -p "The capital of France is" -n 24 --temp 0 > "$L/g-$t-cuda.txt" 2> "$L/g-$t-cuda.err"
    if cmp -s "$L/g-$t-cpu.txt" "$L/g-$t-cuda.txt"; then r=same; else r=DIFFERENT; fi
    echo "$(el) greedy 24 $t cuda-graph vs cpu: $r"
  done
fi
if [ "$PART" = prefetch-short ]; then
  # The least of the prefetch part: parity, then tg128 on/off twice.
  KILN_ATTN_PREFETCH=1 par parity_cuattn 120 decode
  KILN_ATTN_PREFETCH=1 par parity_graph 60
  "$B/kiln" synth /tmp/smol.gguf --type Q4_1 --embd-type Q8_0 --vocab-from "$B/vocab.gguf" --seed 1 > /dev/null
  for pf in 1 0 1 0; do
    left 25 "smol prefetch=$pf" || break
    echo "$(el) smol KILN_ATTN_PREFETCH=$pf"
    KILN_ATTN_PREFETCH=$pf timeout 60 "$B/kiln" bench --device cuda -m /tmp/smol.gguf -p 0 -n 128 -r 3 2>&1 | grep -E '\| tg|rror'
  done
fi
if [ "$PART" = perf ]; then
  KILN_BENCH_ONLY=decode timeout 100 "$B/bench_moe" > "$L/bench_moe.txt" 2>&1
  rc=$?; echo "$(el) bench_moe decode rc=$rc"
  grep -E 'ceiling|Q4_K|Q8_0|Q4_0|Q4_1' "$L/bench_moe.txt" | head -60
  "$B/kiln" synth /tmp/smol.gguf --type Q4_1 --embd-type Q8_0 --vocab-from "$B/vocab.gguf" --seed 1 > /dev/null
  SMOL_T=150 smol default KILN_X=1
  smol "PDL entry" KILN_PDL_ENTRY=1
  smol "fused tiles float" KILN_MVF_TILE=1
  smol "fused tiles int8" KILN_MVF_TILE=q8
  smol "fused tiles int8 + PDL entry + dense tile" KILN_MVF_TILE=q8 KILN_PDL_ENTRY=1 KILN_MV_DENSE_TILE=1
  "$B/kiln" synth /tmp/q30.gguf --preset qwen3moe-30b-a3b --type Q4_K --pool-rows 256 --vocab-from "$B/vocab.gguf" 2>&1 | tail -1
  # The first run compiles the model's kernels (NVRTC, cold machine).
  Q30_T=170 q30 "default (float expert tiles)" 512 KILN_X=1
  q30 "PDL entry" 0 KILN_PDL_ENTRY=1
  q30 "int8 expert tiles" 0 KILN_MV_TILE_Q8=1
  q30 "int8 expert + fused tiles" 0 KILN_MV_TILE_Q8=1 KILN_MVF_TILE=q8
  q30 "all: int8 expert + fused tiles, PDL entry" 0 KILN_MV_TILE_Q8=1 KILN_MVF_TILE=q8 KILN_PDL_ENTRY=1
  q30 "qk_norm_rope_kv" 0 KILN_QKNR=1
  q30 "all: int8 expert + fused tiles, PDL entry, qk_norm_rope_kv" 0 KILN_MV_TILE_Q8=1 KILN_MVF_TILE=q8 KILN_PDL_ENTRY=1 KILN_QKNR=1
  q30 "expert tiles off" 0 KILN_MV_TILE=0
  if left 110 bench_matmul; then
    KILN_BENCH_ONLY=decode timeout 100 "$B/bench_matmul" > "$L/bench_matmul.txt" 2>&1
    rc=$?; echo "$(el) bench_matmul decode rc=$rc"
    grep -E 'ceiling|14336|576×576|49152' "$L/bench_matmul.txt" | grep -E 'Q|ceiling' | head -120
  fi
  if left 60 ncu; then
    KILN_MV_TILE_Q8=1 KILN_MVF_TILE=q8 timeout 60 ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv \
      --print-units base "$B/kiln" bench --device cuda -m /tmp/q30.gguf -p 0 -n 4 -r 1 > "$L/ncu-q30.csv" 2> "$L/ncu-q30.err"
    rc=$?; echo "$(el) ncu q30 (int8 tiles) rc=$rc"; python3 scripts/ncu-breakdown.py "$L/ncu-q30.csv" | head -25
  fi
fi
echo "$(el) done"
