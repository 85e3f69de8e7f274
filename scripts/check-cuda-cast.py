#!/usr/bin/env python3
"""Check the cast CUDA kernels without a GPU, by running their device code as
host C++ (the technique of check-cuda-staged.py).

crates/kiln-cuda/kernels/cast.cu is compiled with g++ behind small shims
(the CUDA qualifiers, __clz, the thread indices as globals; the threads of
a launch run one after another, which is exact here: no thread reads what
another writes). Every entry point (six directions and the two bit copies)
runs under the launcher's geometry (kiln-cuda/src/cast.rs: vec4_grid,
256 threads, ceil(n / 1024) blocks) and under a small grid (7 x 64), so the
grid-stride loop takes many passes. Outputs start poisoned between guard
zones, so an unwritten element or a stray write shows.

Inputs: every 16-bit pattern for the f16 / bf16 sources; for f32 sources,
every top-16-bit pattern with the low bits 0, 1, the f16 and bf16 rounding
points (0x0fff, 0x1000, 0x1001, 0x3000, 0x7fff, 0x8000, 0x8001, 0x9000,
0xffff ...), 2M random patterns, and hand-picked specials: 3M values
covering every exponent, NaN payloads, subnormals and ties of both formats.

The reference is the spec in kiln-core ops/cast.rs, written here
independently with numpy: f16 <-> f32 of non-NaN values by numpy's own
conversions (IEEE round to nearest even, overflow to inf, subnormals kept),
f32 -> bf16 by comparing the dropped 16 bits with one half (checked against
a float64 distance comparison where the upper neighbour is finite), NaN per
the spec's payload rules. Every output must match bit for bit.

Usage: python3 scripts/check-cuda-cast.py   (needs g++ and numpy)
"""
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
KERNEL = ROOT / "crates/kiln-cuda/kernels/cast.cu"
SEED = 20240531

PRELUDE = r"""
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
typedef unsigned char u8;
typedef unsigned short u16;
typedef int i32;
typedef unsigned int u32;
typedef unsigned long long u64;
struct Dim3 { unsigned x = 0, y = 0, z = 0; };
static Dim3 threadIdx, blockIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
static inline int __clz(u32 x) { return x ? __builtin_clz(x) : 32; }
"""

MAIN = r"""
static const u64 GUARD = 64;

template <class S, class D, class K>
static int run(const char* in, const char* out, u64 n, unsigned blocks, unsigned threads, K kernel) {
    std::vector<S> src(n);
    FILE* f = fopen(in, "rb");
    if (!f || fread(src.data(), sizeof(S), n, f) != n) { fprintf(stderr, "read %s\n", in); return 2; }
    fclose(f);
    std::vector<D> dst(n + 2 * GUARD);
    memset(dst.data(), 0xA5, dst.size() * sizeof(D));  // guards
    memset(dst.data() + GUARD, 0xFF, n * sizeof(D));   // poison
    CastParams p = {n};
    blockDim.x = threads;
    gridDim.x = blocks;
    for (unsigned b = 0; b < blocks; b++)
        for (unsigned t = 0; t < threads; t++) {
            blockIdx.x = b;
            threadIdx.x = t;
            kernel(p, src.data(), dst.data() + GUARD);
        }
    for (u64 i = 0; i < GUARD; i++) {
        D g;
        memset(&g, 0xA5, sizeof g);
        if (dst[i] != g || dst[GUARD + n + i] != g) { fprintf(stderr, "guard overwritten\n"); return 3; }
    }
    f = fopen(out, "wb");
    fwrite(dst.data() + GUARD, sizeof(D), n, f);
    fclose(f);
    return 0;
}

int main(int argc, char** argv) {
    const std::string k = argv[1];
    const u64 n = strtoull(argv[4], 0, 10);
    const unsigned blocks = atoi(argv[5]), threads = atoi(argv[6]);
#define CASE(name, S, D) if (k == #name) return run<S, D>(argv[2], argv[3], n, blocks, threads, name);
    CASE(cast_f32_f16, u32, u16)
    CASE(cast_f32_bf16, u32, u16)
    CASE(cast_f16_f32, u16, u32)
    CASE(cast_bf16_f32, u16, u32)
    CASE(cast_f16_bf16, u16, u16)
    CASE(cast_bf16_f16, u16, u16)
    CASE(cast_copy_b32, u32, u32)
    CASE(cast_copy_b16, u16, u16)
    fprintf(stderr, "unknown kernel %s\n", k.c_str());
    return 1;
}
"""

# ---- the spec, independently -------------------------------------------


def f16_to_f32(h):
    """uint16 array of f16 bits -> uint32 array of f32 bits."""
    h = h.astype(np.uint16)
    out = h.view(np.float16).astype(np.float32).view(np.uint32).copy()
    hi = h.astype(np.uint32)
    nan = ((hi & 0x7C00) == 0x7C00) & ((hi & 0x3FF) != 0)
    out[nan] = ((hi[nan] & 0x8000) << 16) | 0x7FC00000 | ((hi[nan] & 0x3FF) << 13)
    return out


def f32_to_f16(x):
    """uint32 array of f32 bits -> uint16 array of f16 bits."""
    x = x.astype(np.uint32)
    with np.errstate(over="ignore"):
        out = x.view(np.float32).astype(np.float16).view(np.uint16).astype(np.uint32)
    nan = (x & 0x7FFFFFFF) > 0x7F800000
    out[nan] = ((x[nan] >> 16) & 0x8000) | 0x7E00 | ((x[nan] >> 13) & 0x3FF)
    return out.astype(np.uint16)


def f32_to_bf16(x):
    """uint32 array of f32 bits -> uint16 array of bf16 bits (ggml's rule)."""
    x = x.astype(np.uint32)
    lo = x >> 16
    r = x & 0xFFFF
    up = (r > 0x8000) | ((r == 0x8000) & ((lo & 1) == 1))
    out = lo + up.astype(np.uint32)
    nan = (x & 0x7FFFFFFF) > 0x7F800000
    out[nan] = (x[nan] >> 16) | 0x40
    # The rounding rule against real distances: |x| between the truncated
    # value a and the next bf16 magnitude b (finite only).
    fin = ~nan & ((x & 0x7FFFFFFF) < 0x7F7F0000)
    ax = (x[fin] & 0x7FFFFFFF).view(np.float32).astype(np.float64)
    a = ((x[fin] & 0x7FFF0000)).view(np.float32).astype(np.float64)
    b = ((x[fin] & 0x7FFF0000) + 0x10000).view(np.float32).astype(np.float64)
    da, db = ax - a, b - ax
    want_up = (db < da) | ((db == da) & ((x[fin] >> 16) & 1 == 1))
    assert np.array_equal(want_up, up[fin]), "bf16 rounding reference disagrees with itself"
    return out.astype(np.uint16)


def reference(src, dst, x):
    if src == dst:
        return x
    f = {"f32": lambda v: v.astype(np.uint32), "f16": f16_to_f32,
         "bf16": lambda v: v.astype(np.uint32) << 16}[src](x)
    return {"f32": lambda v: v, "f16": f32_to_f16, "bf16": f32_to_bf16}[dst](f)


def f32_inputs(rng):
    top = np.arange(1 << 16, dtype=np.uint32) << 16
    lows = [0, 1, 0x0FFF, 0x1000, 0x1001, 0x2000, 0x3000, 0x5000, 0x7FFF, 0x8000, 0x8001,
            0x9000, 0xB000, 0xF000, 0xFFFF]
    parts = [top | lo for lo in lows]
    parts.append(rng.integers(0, 1 << 32, size=2_000_000, dtype=np.uint64).astype(np.uint32))
    # f16 subnormal-range ties: exponents 102..112, the tie bit at 126 - e - 1.
    ties = []
    for e in range(102, 113):
        s = 126 - e
        mant = rng.integers(0, 1 << 23, size=2000, dtype=np.uint64).astype(np.uint32)
        mant = (mant >> s) << s
        tie = (1 << (s - 1)) if s < 24 else 0
        ties.append((np.uint32(e) << 23) | mant | np.uint32(tie))
    t = np.concatenate(ties)
    parts += [t, t | 0x80000000]
    return np.concatenate(parts)


SPECS = [  # kernel, src, dst
    ("cast_f32_f16", "f32", "f16"), ("cast_f32_bf16", "f32", "bf16"),
    ("cast_f16_f32", "f16", "f32"), ("cast_bf16_f32", "bf16", "f32"),
    ("cast_f16_bf16", "f16", "bf16"), ("cast_bf16_f16", "bf16", "f16"),
    ("cast_copy_b32", "f32", "f32"), ("cast_copy_b16", "f16", "f16"),
    ("cast_copy_b16", "bf16", "bf16"),
]


def main():
    rng = np.random.default_rng(SEED)
    src_text = KERNEL.read_text().replace('#include "common.cuh"', "")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        cpp = tmp / "cast.cpp"
        cpp.write_text(PRELUDE + src_text + MAIN)
        exe = tmp / "cast"
        subprocess.run(["g++", "-std=c++17", "-O2", "-Wall", "-Wno-unused-function",
                        "-fsanitize=address,undefined", "-o", str(exe), str(cpp)], check=True)
        x32 = f32_inputs(rng)
        x16 = np.arange(1 << 16, dtype=np.uint32)
        failures = 0
        for kernel, src, dst in SPECS:
            x = x32 if src == "f32" else x16
            n = len(x)
            want = reference(src, dst, x).astype(np.uint32)
            sdt = np.uint32 if src == "f32" else np.uint16
            ddt = np.uint32 if dst == "f32" else np.uint16
            (tmp / "in.bin").write_bytes(x.astype(sdt).tobytes())
            launcher_blocks = min(max((n + 1023) // 1024, 1), 65535)
            for blocks, threads in [(launcher_blocks, 256), (7, 64)]:
                r = subprocess.run([str(exe), kernel, str(tmp / "in.bin"), str(tmp / "out.bin"),
                                    str(n), str(blocks), str(threads)])
                if r.returncode != 0:
                    print(f"FAIL {kernel} ({src}->{dst}) grid {blocks}x{threads}: exit {r.returncode}")
                    failures += 1
                    continue
                got = np.frombuffer((tmp / "out.bin").read_bytes(), dtype=ddt).astype(np.uint32)
                bad = np.nonzero(got != want)[0]
                if len(bad):
                    failures += 1
                    ex = ", ".join(f"{x[i]:#x}->{got[i]:#x} (want {want[i]:#x})" for i in bad[:6])
                    print(f"FAIL {kernel} ({src}->{dst}) grid {blocks}x{threads}: "
                          f"{len(bad)} of {n} differ: {ex}")
                else:
                    print(f"ok   {kernel} ({src}->{dst}) grid {blocks}x{threads}: {n} values bit-exact")
        if failures:
            sys.exit(f"{failures} failure(s)")
        print("all cast kernels match the spec bit for bit")


if __name__ == "__main__":
    main()
