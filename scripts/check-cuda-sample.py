#!/usr/bin/env python3
"""Check the CUDA sampling kernel without a GPU, by running its device code
as host C++ (the technique of check-cuda-staged.py / check-cuda-moe.py).

sample.cu is compiled with g++ behind shims: one std::thread per CUDA
thread of the block, __syncthreads a block-wide std::barrier, and every
warp primitive the kernel uses (__shfl_*_sync, __ballot_sync, __any_sync,
__match_any_sync, __reduce_add_sync) an exchange through per-warp memory
between two per-warp barriers; shared-memory atomics are GCC atomics. The
kernel's inline-PTX arithmetic (smp_add ... smp_d2u) is replaced by the
plain C++ operation each instruction performs (g++ with
-ffp-contract=off: SSE single / double, round to nearest, no flush to
zero). So the penalty copy, the key order, both radix selects (digits,
prefixes, the warp-0 bin search, warp-aggregated histograms), the Z / mass
sums and the ordered draw (warp ranges, the crossing warp's scan) run as
written, with blocks of 32 to 1024 threads. What this cannot check is
timing, and that the PTX instructions round as their C++ stand-ins do
(the GPU parity tests do: crates/kiln-cuda/tests/parity_cuops.rs,
parity_sample).

The reference is a third, independent implementation of the spec in
kiln-core ops/sample.rs, here in Python: full sorts, Python integers for
the sums, the shared exponential `weight` in numpy float32 step by step.
Ids must match exactly.

Usage: python3 scripts/check-cuda-sample.py   (needs g++ with C++20 and numpy)
"""
import pathlib
import struct
import subprocess
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
KERNEL = ROOT / "crates/kiln-cuda/kernels/sample.cu"
SEED = 4242
NO_TOKEN = 0xFFFFFFFF

PRELUDE = r"""
#include <atomic>
#include <climits>
#define KILN_SHIM_BLOCK_SYNC
#define KILN_SHIM_SLURP
#include "cuda_host_shim.h"
#define __CUDA_ARCH__ 900
typedef unsigned char u8;
typedef unsigned int u32;
typedef int i32;
typedef unsigned long long u64;
static inline int __popc(u32 x) { return __builtin_popcount(x); }
static inline int __ffs(u32 x) { return __builtin_ffs((int)x); }
static inline int __clz(u32 x) { return x ? __builtin_clz(x) : 32; }
static inline u64 atomicAdd(u64* p, u64 v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }

// The inline-PTX operations of sample.cu, as the C++ operation each performs.
static inline float smp_add(float a, float b) { return a + b; }
static inline float smp_sub(float a, float b) { return a - b; }
static inline float smp_mul(float a, float b) { return a * b; }
static inline float smp_div(float a, float b) { return a / b; }
static inline float smp_floor(float a) { return std::floor(a); }
static inline int smp_f2i(float a) { return (int)a; }
static inline u32 smp_f2u(float a) { return a >= 4294967296.0f ? UINT_MAX : (a > 0.0f ? (u32)a : 0u); }
static inline double smp_dmul(double a, double b) { return a * b; }
static inline double smp_dfloor(double a) { return std::floor(a); }
static inline double smp_dceil(double a) { return std::ceil(a); }
static inline double smp_u2d(u64 a) { return (double)a; }
static inline u64 smp_d2u(double a) { return a >= 18446744073709551616.0 ? ~0ull : (a > 0.0 ? (u64)a : 0ull); }

static u64 xbuf[32][32];
static inline unsigned lane_id() { return threadIdx.x % 32; }
// Publish v, wait for the warp, read everything, wait again.
template <class F>
static inline auto exchange(u64 v, F f) {
    const unsigned w = threadIdx.x / 32;
    xbuf[w][lane_id()] = v;
    warp_bars[w]->arrive_and_wait();
    auto r = f(xbuf[w]);
    warp_bars[w]->arrive_and_wait();
    return r;
}
template <class T> static inline u64 to_bits(T v) { u64 b = 0; memcpy(&b, &v, sizeof(T)); return b; }
template <class T> static inline T from_bits(u64 b) { T v; memcpy(&v, &b, sizeof(T)); return v; }
template <class T> static inline T __shfl_xor_sync(u32, T v, int o) {
    return from_bits<T>(exchange(to_bits(v), [&](u64* b) { return b[lane_id() ^ o]; }));
}
template <class T> static inline T __shfl_down_sync(u32, T v, int o) {
    return from_bits<T>(exchange(to_bits(v), [&](u64* b) { return lane_id() + o < 32 ? b[lane_id() + o] : b[lane_id()]; }));
}
template <class T> static inline T __shfl_up_sync(u32, T v, int o) {
    return from_bits<T>(exchange(to_bits(v), [&](u64* b) { return lane_id() >= (unsigned)o ? b[lane_id() - o] : b[lane_id()]; }));
}
template <class T> static inline T __shfl_sync(u32, T v, int src) {
    return from_bits<T>(exchange(to_bits(v), [&](u64* b) { return b[src]; }));
}
static inline u32 __ballot_sync(u32, bool p) {
    return exchange(p ? 1 : 0, [](u64* b) { u32 m = 0; for (int l = 0; l < 32; l++) m |= (u32)b[l] << l; return m; });
}
static inline bool __any_sync(u32 m, bool p) { return __ballot_sync(m, p) != 0; }
static inline u32 __match_any_sync(u32, u32 v) {
    return exchange(v, [&](u64* b) { u32 m = 0; for (int l = 0; l < 32; l++) m |= (u32)(b[l] == v) << l; return m; });
}
static inline u32 __reduce_add_sync(u32 mask, u32 v) {
    if (!(mask >> lane_id() & 1)) { fprintf(stderr, "reduce: lane outside its mask\n"); abort(); }
    return exchange(v, [&](u64* b) { u32 s = 0; for (int l = 0; l < 32; l++) if (mask >> l & 1) s += (u32)b[l]; return s; });
}

"""

MAIN = r"""
int main(int argc, char** argv) {
    const std::string dir = argv[1];
    FILE* res = fopen((dir + "/results").c_str(), "w");
    for (int c = 0;; c++) {
        const std::string b = dir + "/case" + std::to_string(c);
        const auto pb = slurp<u8>(b + ".p");
        if (pb.empty()) break;
        SampleParams p;
        static_assert(sizeof(SampleParams) == 56, "params layout");
        memcpy(&p, pb.data(), sizeof p);
        u32 threads;
        memcpy(&threads, pb.data() + sizeof p, 4);
        auto x = slurp<float>(b + ".x");
        auto ids = slurp<u32>(b + ".i");
        if (ids.empty()) ids.push_back(0);
        std::vector<float> work(p.n + 64, 12345.0f);
        std::vector<u32> out(4, 0xDEADBEEFu);  // out[1..3]; out[0], out[3] guards
        launch(1, 1, threads, [&] { sample_f32(p, x.data(), ids.data(), work.data(), out.data() + 1); });
        if (out[0] != 0xDEADBEEFu || out[3] != 0xDEADBEEFu) fprintf(stderr, "case %d: guard written\n", c);
        for (u64 i = p.n; i < p.n + 64; i++)
            if (work[i] != 12345.0f) fprintf(stderr, "case %d: work written past n\n", c);
        fprintf(res, "%u %u\n", out[1], out[2]);
    }
    fclose(res);
    return 0;
}
"""


def device_src() -> str:
    """sample.cu without its include and without its inline-PTX one-liners."""
    src = KERNEL.read_text()
    return "\n".join(
        l for l in src.splitlines() if not l.startswith("#include") and "asm(" not in l
    )


# ---- the reference (kiln-core ops/sample.rs), independently ----
F = np.float32


def key(v: np.float32) -> int:
    b = int(np.array([v], dtype=np.float32).view(np.uint32)[0])
    if np.isnan(v) or b == 0xFF800000:
        return 0
    if b & 0x7FFFFFFF == 0:
        b = 0
    return (~b & 0xFFFFFFFF) if b & 0x80000000 else (b | 0x80000000)


def key_value(k: int) -> np.float32:
    b = (k & 0x7FFFFFFF) if k & 0x80000000 else (~k & 0xFFFFFFFF)
    return np.array([b], dtype=np.uint32).view(np.float32)[0]


def fbits(b: int) -> np.float32:
    return np.array([b], dtype=np.uint32).view(np.float32)[0]


POLY = [0x39500D01, 0x3AB60B61, 0x3C088889, 0x3D2AAAAB, 0x3E2AAAAB, 0x3F000000]


def weight(x: np.float32) -> int:
    x = F(x)
    if not (x > F(-22.0)):
        return 0
    t = x * fbits(0x3FB8AA3B)
    n = F(np.floor(t + F(0.5)))
    r = (x - n * fbits(0x3F317200)) - n * fbits(0x35BFBE8E)
    p = fbits(POLY[0])
    for c in POLY[1:]:
        p = p * r + fbits(c)
    p = p * r + F(1.0)
    p = p * r + F(1.0)
    scale = fbits((int(n) + 127) << 23)
    y = p * scale * F(2147483648.0)
    return min(int(y), 0xFFFFFFFF)


def draw_target(u: float, total: int) -> int:
    return min(int(np.floor(u * float(total))), total - 1)


def top_p_target(top_p: float, z: int) -> int:
    t = int(np.ceil(float(np.float32(top_p)) * float(z)))
    return max(1, min(t, z))


def penalize(v: np.float32, pen: np.float32) -> np.float32:
    return v / pen if v > 0 else v * pen


def reference(x, ids, temp, top_k, top_p, ln_min_p, pen, u):
    n = len(x)
    v = x.copy()
    if pen != F(1.0) and len(ids):
        for i in ids:
            if i < n:
                v[i] = penalize(x[i], pen)
    keys = [key(a) for a in v]
    mk = max(keys)
    if mk == 0:
        return NO_TOKEN, 0
    if mk == 0xFF800000 or temp == 0:
        top = [i for i in range(n) if keys[i] == mk]
        return (top[0] if temp == 0 else top[draw_target(u, len(top))]), mk
    m = key_value(mk)
    order = sorted((i for i in range(n) if keys[i]), key=lambda i: (-keys[i], i))
    k_top = keys[order[top_k - 1]] if 0 < top_k < len(order) else 0
    k_min = key(m + ln_min_p) if ln_min_p is not None else 0
    k_nuc = 0
    if top_p < 1.0:
        s = [i for i in order if keys[i] >= k_top]
        z = sum(weight(v[i] - m) for i in s)
        target = top_p_target(top_p, z)
        cum = 0
        for j, i in enumerate(s):
            cum += weight(v[i] - m)
            if (j + 1 == len(s) or keys[s[j + 1]] != keys[i]) and cum >= target:
                k_nuc = keys[i]
                break
    lo = max(k_top, k_min, k_nuc, 1)
    kept = [(i, weight((v[i] - m) / temp)) for i in range(n) if keys[i] >= lo]
    total = sum(w for _, w in kept)
    target = draw_target(u, total)
    cum = 0
    for i, w in kept:
        cum += w
        if cum > target:
            return i, lo
    return NO_TOKEN, lo


def logits(rng, n, pattern):
    x = rng.uniform(-8, 8, n).astype(np.float32)
    if pattern == "peaked":
        x = (rng.normal(0, 3, n)).astype(np.float32)
        x[rng.integers(n)] = x.max() + 12
    elif pattern == "ties":
        x = (np.round(x * 2) / 4).astype(np.float32)
    elif pattern == "flat":
        x[:] = 0.5
    elif pattern == "nonfinite":
        r = rng.integers(0, 20, n)
        x[r < 3] = np.nan
        x[(r >= 3) & (r < 6)] = -np.inf
    elif pattern == "posinf":
        x[rng.integers(0, n, max(1, min(5, n // 300)))] = np.inf
    elif pattern == "none":
        x[:] = np.where(rng.integers(0, 2, n) == 0, np.nan, -np.inf)
    elif pattern == "subnormal":
        bits = rng.integers(0, 0x800000, n) >> rng.integers(0, 24, n)
        bits |= np.where(rng.integers(0, 2, n) == 0, 0, 0x80000000)
        x = bits.astype(np.uint32).view(np.float32)
    return x


def main() -> int:
    rng = np.random.default_rng(SEED)
    # (temperature, top_k, top_p, min_p, penalty) x (n, threads) x pattern
    stages = [
        (1.0, 0, 1.0, 0.0, 1.0),
        (0.0, 0, 1.0, 0.0, 1.0),
        (0.7, 0, 1.0, 0.0, 1.0),
        (1.0, 1, 1.0, 0.0, 1.0),
        (1.0, 5, 1.0, 0.0, 1.0),
        (1.0, 40, 1.0, 0.0, 1.0),
        (1.0, 0, 0.9, 0.0, 1.0),
        (1.0, 0, 0.3, 0.0, 1.0),
        (1.0, 0, 1.0, 0.6, 1.0),
        (1.0, 0, 1.0, 0.0, 1.3),
        (0.8, 40, 0.95, 0.05, 1.1),
        (1.3, 0, 0.8, 0.02, 1.0),
        (0.5, 3, 0.5, 0.0, 0.8),
    ]
    shapes = [(1, 32), (7, 32), (33, 64), (1000, 96), (1000, 1024), (5003, 256)]
    patterns = ["random", "peaked", "ties", "flat", "nonfinite", "posinf", "none", "subnormal"]
    cases = []
    for n, threads in shapes:
        for pat in patterns:
            for temp, top_k, top_p, min_p, pen in stages:
                if pat == "subnormal" and temp > 0:
                    temp = 1e-37
                cases.append((n, threads, pat, temp, top_k, top_p, min_p, pen))
    with tempfile.TemporaryDirectory() as tmp:
        t = pathlib.Path(tmp)
        src = PRELUDE + device_src() + MAIN
        (t / "k.cpp").write_text(src)
        exe = t / "k"
        subprocess.run(
            ["g++", "-std=c++20", "-O2", "-ffp-contract=off", "-pthread", "-w", "-I", str(ROOT / "scripts"), str(t / "k.cpp"), "-o", str(exe)],
            check=True,
        )
        expect = []
        for c, (n, threads, pat, temp, top_k, top_p, min_p, pen) in enumerate(cases):
            x = logits(rng, n, pat)
            ids = []
            if pen != 1.0:
                ids = list(rng.integers(0, n + 4, max(1, min(64, 2 * n // 3))))
                ids += [ids[0], 0xFFFFFFFF]
            u = float(rng.choice([0.0, rng.uniform(), 1.0 - 2.0**-53]))
            ln_min_p = F(np.log(F(min_p))) if min_p > 0 else None
            flags = (1 if (pen != 1.0 and ids) else 0) | (2 if ln_min_p is not None else 0) | 4
            params = struct.pack(
                "<QQQddfffI",
                n,
                len(ids),
                min(top_k, n),
                u,
                float(np.float32(top_p)),
                temp,
                float(ln_min_p) if ln_min_p is not None else 0.0,
                pen,
                flags,
            )
            (t / f"case{c}.p").write_bytes(params + struct.pack("<I", threads))
            x.tofile(t / f"case{c}.x")
            np.array(ids, dtype=np.uint32).tofile(t / f"case{c}.i")
            expect.append(reference(x, [int(i) for i in ids], F(temp), top_k, top_p, ln_min_p, F(pen), u))
        run = subprocess.run([str(exe), tmp], capture_output=True, text=True)
        if run.returncode != 0 or run.stderr:
            print(run.stderr)
            print(f"emulated kernel failed (rc {run.returncode})")
            return 1
        got = [tuple(int(w) for w in l.split()) for l in (t / "results").read_text().splitlines()]
    bad = 0
    for case, want, g in zip(cases, expect, got):
        if want != g:
            bad += 1
            if bad <= 20:
                print(f"MISMATCH {case}: kernel (id, threshold) {g}, reference {want}")
    print(f"sample: {len(cases) - bad}/{len(cases)} cases match the reference")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
