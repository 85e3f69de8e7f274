#!/usr/bin/env bash
# Correctness on the GPU in one device call (about 5 minutes): the fused
# mat-vec parity (every format, direct and staged), graph parity, greedy
# text CPU vs CUDA graph for small kiln-synth'd models that exercise the
# fused decode pieces per format (a Q4_K_M mix made by `kiln quantize`,
# pure Q5_0 / Q6_K / IQ4_XS / Q4_K files, qwen3 and qwen3moe), then
# `kiln selftest --device cuda` (KILN_VERIFY_SELFTEST=0 skips it). Logs:
# one archive in $OUT.
#   device call: carry ["gpu-bundle"], command: bash gpu-bundle/gpu-verify.sh
set -uo pipefail
cd "$(dirname "$0")/.."
B=$(basename "$(cd "$(dirname "$0")" && pwd)")
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}" KILN_CACHE=/tmp/kiln-cache
# Logs go to one folder and come back as one archive (+ the summary) in
# $OUT: the device tool returns only a few files per call.
L=/tmp/verify-logs; rm -rf "$L"; mkdir -p "$L"
finish() { [ -n "${OUT:-}" ] && tar -czf "$OUT/verify-logs.tar.gz" -C "$L" . 2>/dev/null; }
trap finish EXIT
exec > >(tee "$L/verify.txt") 2>&1
T0=$(date +%s); el() { echo "[t=$(( $(date +%s) - T0 ))s]"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
par() { [ -x "$B/$1" ] || { echo "$1 missing"; return 0; }
  timeout "$2" "$B/$1" > "$L/$1.log" 2>&1; rc=$?; echo "$(el) $1 rc=$rc $(grep -E '^test result' "$L/$1.log" | tail -1)"
  grep -E "FAIL|panicked|failed" -A6 "$L/$1.log" | head -30; }
par parity_cufused 200
par parity_cumoe 150
par parity_graph 90
greedy() { # $1 label, $2 model, then extra run flags
  local label=$1 m=$2; shift 2
  for dev in cpu cuda; do
    KILN_CUDA_ARCHS=1 timeout 60 "$B/kiln" run --device $dev -m "$m" -p "The capital of France is" -n 24 --temp 0 "$@" \
      > "$L/greedy-$label-$dev.txt" 2> "$L/greedy-$label-$dev.err"
  done
  if cmp -s "$L/greedy-$label-cpu.txt" "$L/greedy-$label-cuda.txt"; then r=same; else r=DIFFERENT; fi
  echo "$(el) greedy 24 $label cuda-graph vs cpu: $r | $(tail -c 120 "$L/greedy-$label-cuda.err" | tr '\n' ' ')"
}
common=(--embd 256 --heads 4 --kv-heads 2 --ff 512 --ctx 512 --layers 3 --seed 3 --vocab-from "$B/vocab.gguf")
"$B/kiln" synth /tmp/v-f32.gguf "${common[@]}" --type F32 > /dev/null 2>&1
"$B/kiln" quantize /tmp/v-f32.gguf /tmp/v-q4km.gguf --type Q4_K_M > "$L/quantize.txt" 2>&1 || echo "quantize FAIL"
"$B/kiln" info /tmp/v-q4km.gguf 2>&1 | grep -E "blk.0.attn_v|blk.0.attn_q|blk.0.ffn_down|types" | head -5
greedy llama-q4km /tmp/v-q4km.gguf
for t in Q5_0 Q6_K IQ4_XS Q4_K Q8_0; do
  "$B/kiln" synth "/tmp/v-$t.gguf" "${common[@]}" --type $t > /dev/null 2>&1 || { echo "synth $t FAIL"; continue; }
  greedy "llama-$t" "/tmp/v-$t.gguf"
done
"$B/kiln" synth /tmp/v-qwen3.gguf --arch qwen3 "${common[@]}" --head-dim 64 --type Q4_K > /dev/null 2>&1 && greedy qwen3-Q4_K /tmp/v-qwen3.gguf
"$B/kiln" synth /tmp/v-q3moe.gguf --arch qwen3moe "${common[@]}" --head-dim 64 --experts 8 --experts-used 2 --expert-ff 256 --type Q4_K > /dev/null 2>&1 && greedy qwen3moe-Q4_K /tmp/v-q3moe.gguf
"$B/kiln" synth /tmp/v-qwen2.gguf --arch qwen2 "${common[@]}" --type Q5_K > /dev/null 2>&1 && greedy qwen2-Q5_K /tmp/v-qwen2.gguf
if [ "${KILN_VERIFY_SELFTEST:-1}" = 1 ]; then
  timeout 240 "$B/kiln" selftest --device cuda > "$L/selftest.log" 2>&1; rc=$?; echo "$(el) selftest rc=$rc $(tail -1 "$L/selftest.log")"
  grep -iE "fail" "$L/selftest.log" | head -20
fi
echo "$(el) done"
