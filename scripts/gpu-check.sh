#!/usr/bin/env bash
# Build the GPU-check bundle: the kiln binary, the CUDA test binaries and the
# CUDA bench binaries (bench_*), stripped, in gpu-bundle/ (git-ignored), plus
# the default model split in two parts (gpu-model/) because one device call
# carries at most 64 MiB, the tracked tree (~10 MB) included.
# The GPU machine has no Rust toolchain: everything is built here.
#
# Then, on the GPU machine (two back-to-back calls of the device tool, the
# first only to leave the model's first half in /tmp while the machine is
# warm):
#   1) carry ["gpu-model/a"], command: cp gpu-model/a/part /tmp/kiln-model.a
#   2) carry ["gpu-model/b"], command: cp gpu-model/b/part /tmp/kiln-model.b
#   3) carry ["gpu-bundle"], command: bash gpu-bundle/gpu-run.sh
#      (a device call is limited to 10 minutes: run it as two calls,
#      KILN_GPU_PART=checks then KILN_GPU_PART=perf, re-sending parts a and b first
#      if the machine went cold in between)
# Shorter, one call with no model transfer: carry ["gpu-bundle"], command:
#   bash gpu-bundle/gpu-quick.sh (parity, kernel benches, kiln bench on a
#   synthetic model of the default model's shape)
# A contributor with a local GPU just runs: bash gpu-bundle/gpu-run.sh
set -euo pipefail
# KILN_BUNDLE_DIR: build into another folder (e.g. gpu-bundle2 while a
# device call still carries gpu-bundle).
BD="${KILN_BUNDLE_DIR:-gpu-bundle}"
cd "$(dirname "$0")/.."
rm -rf "$BD" && mkdir -p "$BD" gpu-model/a gpu-model/b
cargo build --release -p kiln-cli --features cuda
cp "${CARGO_TARGET_DIR:-target}/release/kiln" "$BD"/kiln
# CUDA test binaries (each skips by itself where there is no GPU).
cargo test -p kiln-cuda --release --no-run --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys, shutil
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        shutil.copy(m["executable"], sys.argv[1] + "/" + m["target"]["name"])
        print("bundled", m["target"]["name"])
' "$BD"
# CUDA bench binaries (harness = false; each prints its table beside the
# same-run read ceiling, or skips where there is no GPU).
cargo bench -p kiln-cuda --no-run --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys, shutil
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["bench"]:
        shutil.copy(m["executable"], sys.argv[1] + "/bench_" + m["target"]["name"])
        print("bundled bench_" + m["target"]["name"])
' "$BD"
cargo test -p kiln-models --features cuda --release --test gpu_e2e --no-run --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys, shutil
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "gpu_e2e":
        shutil.copy(m["executable"], sys.argv[1] + "/parity_gpu_e2e")
        print("bundled gpu_e2e")
' "$BD"
# The MLX model directories on the GPU (kiln-models/tests/mlx_model.rs, run
# with the test-name filter tiny_mlx_dirs_on_gpu: its other tests are CPU
# ones; the fixtures are read from tests/fixtures under the repository root).
cargo test -p kiln-models --features cuda --release --test mlx_model --no-run --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys, shutil
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "mlx_model":
        shutil.copy(m["executable"], sys.argv[1] + "/mlx_model_gpu")
        print("bundled mlx_model_gpu")
' "$BD"
# The kiln crate's MoE dispatch test (route -> matmul_id -> combine through
# the stream's device copy of expert ids).
cargo test -p kiln --features cuda --release --test moe --no-run --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys, shutil
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "moe":
        shutil.copy(m["executable"], sys.argv[1] + "/parity_kiln_moe")
        print("bundled kiln moe")
' "$BD"
# The kiln crate's mul / cast dispatch test (tensor dtypes -> direction,
# 16-bit device views).
cargo test -p kiln --features cuda --release --test cast_mul --no-run --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys, shutil
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "cast_mul":
        shutil.copy(m["executable"], sys.argv[1] + "/parity_kiln_cast_mul")
        print("bundled kiln cast_mul")
' "$BD"
# The kiln crate's qk_norm_rope_kv test (the fused op against the ops it
# replaces in Qwen3 decode, bit for bit; CUDA graph replay).
cargo test -p kiln --features cuda --release --test qk_norm_rope_kv --no-run --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys, shutil
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "qk_norm_rope_kv":
        shutil.copy(m["executable"], sys.argv[1] + "/parity_kiln_qknr")
        print("bundled kiln qk_norm_rope_kv")
' "$BD"
strip "$BD"/* 2>/dev/null || true
cp scripts/gpu-run.sh "$BD"/gpu-run.sh
cp scripts/gpu-quick.sh "$BD"/gpu-quick.sh
cp scripts/gpu-essentials.sh "$BD"/gpu-essentials.sh
cp scripts/gpu-profile.sh "$BD"/gpu-profile.sh
cp scripts/gpu-moe.sh "$BD"/gpu-moe.sh
cp scripts/gpu-pdl.sh "$BD"/gpu-pdl.sh
cp scripts/gpu-verify.sh "$BD"/gpu-verify.sh
cp scripts/gpu-perf.sh "$BD"/gpu-perf.sh
model=$(bash scripts/fetch-model.sh)
# The default model's tokenizer alone (~2 MB): lets the GPU machine make
# models of any shape with `kiln synth` without carrying the 98 MB file.
"$BD"/kiln synth "$BD"/vocab.gguf --vocab-only --vocab-from "$model" > /dev/null
size=$(stat -c %s "$model")
# Each part travels alone beside the tracked tree: two near-equal halves.
half=$(( size / 2 ))
head -c "$half" "$model" > gpu-model/a/part
tail -c +"$((half + 1))" "$model" > gpu-model/b/part
du -sh "$BD" gpu-model/a gpu-model/b
echo "bundle ready; see the header of scripts/gpu-check.sh for the two device calls"
