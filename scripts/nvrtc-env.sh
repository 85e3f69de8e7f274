#!/usr/bin/env bash
# Source this: makes NVRTC (the CUDA runtime compiler) and the CUDA headers
# available without a CUDA toolkit, from NVIDIA's PyPI wheels, so the test
# that compiles every kiln kernel runs on machines with no GPU (CI).
# Sets LD_LIBRARY_PATH and KILN_NVRTC_INCLUDE. Failure to fetch is not fatal:
# the compile test then says it was skipped.
# The version is the GPU machine's toolkit (CUDA 13.0): a newer NVRTC accepts
# code 13.0 rejects (e.g. __builtin_offsetof in static_assert), which then
# fails only on the GPU.
KILN_NVRTC_VERSION=13.0.88
KILN_NVRTC_DIR="${KILN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}/nvrtc-$KILN_NVRTC_VERSION"
if [ ! -f "$KILN_NVRTC_DIR/ok" ]; then
  (
    set -e
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    python3 -m pip download --no-deps --quiet --disable-pip-version-check -d "$tmp" \
      "nvidia-cuda-nvrtc==$KILN_NVRTC_VERSION" "nvidia-cuda-runtime==$KILN_NVRTC_VERSION" >&2
    mkdir -p "$KILN_NVRTC_DIR"
    for w in "$tmp"/*.whl; do python3 -m zipfile -e "$w" "$KILN_NVRTC_DIR"; done
    touch "$KILN_NVRTC_DIR/ok"
  ) || echo "nvrtc-env: could not fetch NVRTC from PyPI; kernel compile test will be skipped" >&2
fi
if [ -d "$KILN_NVRTC_DIR/nvidia/cu13/lib" ]; then
  export LD_LIBRARY_PATH="$KILN_NVRTC_DIR/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export KILN_NVRTC_INCLUDE="$KILN_NVRTC_DIR/nvidia/cu13/include"
fi
