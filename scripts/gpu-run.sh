#!/usr/bin/env bash
# Runs every GPU check from the bundle that scripts/gpu-check.sh builds:
# the CUDA parity tests, the CUDA kernel benches (bench_*: one table each
# beside the same-run read ceiling), `kiln selftest`, CPU-vs-GPU greedy
# agreement on the default model, `kiln bench` on it, `kiln synth` of a
# 1B-parameter-shaped model (its tokenizer from the default model) and
# `kiln bench` on that, and compute-sanitizer on the parity tests. Prints a
# summary last.
set -uo pipefail
cd "$(dirname "$0")/.."
B=gpu-bundle
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export KILN_CACHE=/tmp/kiln-cache
FINAL="${OUT:-}"
OUT=/tmp/kiln-logs; rm -rf "$OUT"; mkdir -p "$OUT"
model=/tmp/kiln-model.gguf
# The model arrives in two halves (scripts/gpu-check.sh): part a, then part b
# in /tmp from earlier calls, or part b beside this bundle.
partb=/tmp/kiln-model.b; [ -f "$partb" ] || partb=gpu-model/b/part
if [ ! -f "$model" ] && [ -f /tmp/kiln-model.a ] && [ -f "$partb" ]; then
  cat /tmp/kiln-model.a "$partb" > "$model"
fi
[ -f "$model" ] && export KILN_MODEL="$model"
summary=()
note() { summary+=("$1"); echo "== $1"; }
# KILN_GPU_PART=checks (parity, selftest, greedy text, sanitizer) or perf
# (kernel benches, kiln bench, ncu, the synthetic 1B model); default all.
# The two halves each fit one 10-minute device call.
PART="${KILN_GPU_PART:-all}"
want() { [ "$PART" = all ] || [ "$PART" = "$1" ]; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
for t in "$B"/parity_* "$B"/compile_kernels; do
  want checks || break
  [ -x "$t" ] || continue
  if "$t" > "$OUT/$(basename "$t").log" 2>&1; then r=ok; else r=FAIL; fi
  note "$(basename "$t"): $r ($(grep -E '^test result' "$OUT/$(basename "$t").log" | tail -1))"
done
for b in "$B"/bench_*; do
  want perf || break
  [ -x "$b" ] || continue
  n=$(basename "$b")
  if "$b" > "$OUT/$n.txt" 2>&1; then r=ok; else r=FAIL; fi
  echo "== $n:"; cat "$OUT/$n.txt"
  note "$n: $r ($(grep -m1 -E 'read ceiling|SKIPPED' "$OUT/$n.txt"))"
done
if want checks; then
  "$B/kiln" selftest --device cuda > "$OUT/selftest.log" 2>&1 && r=ok || r=FAIL
  note "selftest: $r ($(tail -1 "$OUT/selftest.log"))"
  if [ -x "$B/mlx_model_gpu" ]; then
    "$B/mlx_model_gpu" tiny_mlx_dirs_on_gpu --nocapture > "$OUT/mlx_model_gpu.log" 2>&1 && r=ok || r=FAIL
    note "mlx_model_gpu: $r ($(grep -E '^test result' "$OUT/mlx_model_gpu.log" | tail -1))"
  fi
fi
if [ -n "${KILN_MODEL:-}" ] && want checks; then
  for dev in cpu cuda; do
    "$B/kiln" run --device $dev -m "$model" -p "The capital of France is" -n 32 --temp 0 \
      > "$OUT/greedy-$dev.txt" 2> "$OUT/greedy-$dev.err"
  done
  if cmp -s "$OUT/greedy-cpu.txt" "$OUT/greedy-cuda.txt"; then r=same; else r=DIFFERENT; fi
  note "greedy 32 tokens cpu vs cuda: $r"
  note "cuda text: $(tr '\n' ' ' < "$OUT/greedy-cuda.txt" | cut -c1-160)"
  note "cuda speed: $(grep -o 'generation:.*' "$OUT/greedy-cuda.err")"
fi
if [ -n "${KILN_MODEL:-}" ] && want perf; then
  "$B/kiln" bench --device cuda -m "$model" -p 512 -n 128 -r 5 --profile > "$OUT/bench.txt" 2>&1
  cat "$OUT/bench.txt"
  # The same without CUDA graphs (every decode op launched from the host).
  KILN_NO_GRAPH=1 "$B/kiln" bench --device cuda -m "$model" -p 512 -n 128 -r 5 > "$OUT/bench-nograph.txt" 2>&1
  echo "== KILN_NO_GRAPH=1:"; cat "$OUT/bench-nograph.txt"
  KILN_NO_PDL=1 "$B/kiln" bench --device cuda -m "$model" -p 0 -n 128 -r 5 > "$OUT/bench-nopdl.txt" 2>&1
  echo "== KILN_NO_PDL=1:"; grep tg128 "$OUT/bench-nopdl.txt"
  # Decode kernel times (ncu, warm caches, 8 tokens + warm-up): where a
  # token's GPU time goes.
  if command -v ncu >/dev/null && command -v python3 >/dev/null; then
    ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv --print-units base \
      "$B/kiln" bench --device cuda -m "$model" -p 0 -n 8 -r 1 > "$OUT/ncu-decode.csv" 2> "$OUT/ncu-decode.err"
    python3 scripts/ncu-breakdown.py "$OUT/ncu-decode.csv" | tee "$OUT/ncu-decode.txt"
  fi
  # A bigger model made here: Llama-3.2-1B-like shape (16 layers, d 2048,
  # 32/8 heads of 64, ff 8192), Q4_1 layers, Q8_0 tied embeddings (the
  # default model's layout), SmolLM2's 49152-token vocab: ~1.07 B params,
  # ~0.7 GB, written in seconds. Random weights: speed only, not text.
  synth=/tmp/kiln-synth-1b.gguf
  "$B/kiln" synth "$synth" --layers 16 --embd 2048 --heads 32 --kv-heads 8 --ff 8192 \
    --ctx 4096 --type Q4_1 --embd-type Q8_0 --vocab-from "$model" --seed 1 \
    > "$OUT/synth.txt" 2>&1 && r=ok || r=FAIL
  note "synth 1B-shaped: $r ($(tail -1 "$OUT/synth.txt"))"
  if [ "$r" = ok ]; then
    "$B/kiln" bench --device cuda -m "$synth" -p 512 -n 128 -r 3 > "$OUT/bench-synth-1b.txt" 2>&1 \
      && r=ok || r=FAIL
    echo "== kiln bench, synthetic 1B-shaped Q4_1:"; cat "$OUT/bench-synth-1b.txt"
    note "bench synth 1B: $r $(grep -E '\| (pp|tg)[0-9]+ \|' "$OUT/bench-synth-1b.txt" \
      | awk -F'|' '{gsub(/ /, "", $7); gsub(/^ +| +$/, "", $8); printf "%s %s t/s; ", $7, $8}')"
  fi
  rm -f "$synth"
fi
if command -v compute-sanitizer >/dev/null && want checks; then
  for t in "$B"/parity_*; do
    [ -x "$t" ] || continue
    compute-sanitizer --tool memcheck --print-limit 5 "$t" > "$OUT/sanitizer-$(basename "$t").log" 2>&1
    note "memcheck $(basename "$t"): $(grep -E 'ERROR SUMMARY' "$OUT/sanitizer-$(basename "$t").log" | tail -1)"
  done
fi
echo; echo "==== summary"; printf '%s\n' "${summary[@]}"
# One archive of every log for the caller (the device tool returns few files).
[ -n "$FINAL" ] && tar -czf "$FINAL/logs.tar.gz" -C "$OUT" . 2>/dev/null
