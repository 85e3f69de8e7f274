#!/usr/bin/env python3
"""Check matmul_id's tile kernels (mv_id_tile, matvec_tile.cuh) without a
GPU, by running their device code as host C++ (the technique of
check-cuda-staged.py).

The template mv_id_tile<T, GATED> (cut textually out of matmul_id.cu, with
MatmulIdParams and id_x_row), matvec_tile.cuh, matvec_staged.cuh's
stage_commit / stage_wait and the block decoders (matvec.cuh,
decode_kq.cuh) are compiled with g++ behind cuda_host_shim.h and a few
shims of this file: one std::thread per CUDA thread of a 128-thread CTA,
__syncthreads a block barrier, __shfl_xor_sync an exchange through memory
between two per-warp barriers, __dp4a on signed bytes, __float2int_rn
rounding half to even, the dynamic shared memory one exact-size heap buffer
per launch (0xCD-poisoned before every CTA) and the gate array a per-CTA
buffer poisoned with NaN. cp.async is emulated as deferred copies:
tile_cp16 (its pre-sm_80 fallback line replaced) queues each 16-byte piece
in its thread's open group, stage_commit closes the group, stage_wait<N>
marks all but the N newest groups done, and a done piece lands at the next
__syncthreads; so a tile read before its wait and barrier sees the poison
whatever the schedule, and a CTA ending with copies not waited for fails.
Each piece is checked when queued: its source bytes inside the stack it
copies from (weights allocated with guard zones, the last expert ending at
the buffer's end), its destination inside its stack's slot.
Built with AddressSanitizer and UBSan (misaligned 2- / 4- / 16-byte loads
from shared memory abort). So the tile geometry (the host planner's
tile_plan and tile_xq_bytes are mirrored here for the launch: grid
(ceil(n / tile_rows), rows), 128 threads, stacks * tile_slot + tile_xq
shared bytes), the lead offset of tiles that start off 16-byte alignment,
partial last tiles and half pairs, the gated path's two cp.async groups
and shared gate values, the int8 quantization of x and the Q8 dot units,
bad ids (NaN rows) and x per token / per slot run as written. What this
cannot check: cp.async's timing and memory ordering on the GPU, the GPU's
fast-math intrinsics (__expf, __frcp_rn: emulated in full precision), and
occupancy or shared-memory limits (the GPU parity tests do: parity_cumoe).

Checked against the `gguf` package's dequantizer (gguf.quants.dequantize),
not against kiln code, with random valid blocks (random bytes, f16 scale
fields in [-1, 1]):
- FloatTile formats (cases "Q5_K/float", "Q6_K/float"): each output within
  1e-5 sum |w x| of the float64 dot product of the dequantized weights and x.
- Q8Tile formats (Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K): (a) an exact numpy
  model of the int8 path (codes round-half-even(x * (127 / amax)) per 32 in
  f32, integer dot products of the weight codes per 16 (the model's own
  decode of the codes, asserted equal to gguf's dequantizer), scales in
  float64 from the f32 / f16 / i8 values; offsets times the stored d * code
  sum per 32, or for Q6_K's per-16 scales d times each half's code sum),
  within 1e-5 of the sum of its terms' magnitudes; (b) the float64
  reference within the activation-rounding bound sum_b (amax_b / 127 / 2)
  sum_{e in b} |w_e| (kiln-testkit cases/matmul.rs, without its f16-scale
  term) plus 1e-5 of the terms' magnitudes. Q4_0, Q4_1, Q4_K, Q5_K and
  Q6_K have a case whose every other weight row is all zeros with nonzero
  codes (Q4_0 codes 8, Q4_1 m = -8 d, Q4_K / Q5_K mins that cancel the
  codes, Q6_K codes 32): the bound is
  then ~0, so a kernel whose error scales with the codes rather than the
  weights fails it. (It did: tile_quantize_x stored the exact f32 sum of x
  for the offset / min terms; it now stores d times the code sum.)
- Gated kernels: silu(g) u against silu and the references of both stacks,
  the tolerances of g and u propagated.
- Rows of ids >= n_experts all NaN; every other output finite and within
  tolerance (out starts as 12345.0); 64 guard floats each side of out
  unchanged.

--mutate OLD NEW edits the kernel source (matvec_tile.cuh + the
mv_id_tile template) first, to see the check fail, e.g.
  --mutate 'xi[8 + w], i1' 'xi[w], i1'         (Q4_KDot's / Q5_KDot's high half)
  --mutate '(hw & 0x02020202u) << 3' '(hw & 0x01010101u) << 4'
                                                (Q5_KDot: high half, low's qh bit)
  --mutate 'sc1 * (i1 - 32 * c1)' 'sc1 * (i1 - 32 * c0)'
                                                (Q6_KDot: first half's code sum)
  --mutate 'ls = 4 * ((j >> 1) & 1)' 'ls = 4 * (j & 1)'
                                                (Q6_KDot: wrong ql nibble)
  --mutate 'tile_smem + lead,' 'tile_smem,'     (drop the lead offset)
  --mutate '(u32)min((u64)16, end - at)' '16u'  (whole last pieces: guard)
  --mutate 'stage_wait<1>();' 'stage_wait<2>();' (gate read before it lands)

Usage: python3 scripts/check-cuda-tile.py [--mutate OLD NEW] [--quick]
(needs g++ with C++20 and libasan/libubsan, numpy, gguf)
"""
import argparse
import pathlib
import subprocess
import sys
import tempfile

import gguf
import gguf.quants
import numpy as np

from kernel_src import common_decls, device_src, matvec_src

ROOT = pathlib.Path(__file__).resolve().parent.parent
KERNELS = ROOT / "crates/kiln-cuda/kernels"
SEED = 1606

# case name (the GGML format, "/float" for its float tile) -> (tile policy,
# Q8Tile?, weight alignment the decoders need, f16 offsets)
FORMATS = {
    "Q4_0": ("Q8Tile<Q4Dot<false>>", True, 2, [0]),
    "Q4_1": ("Q8Tile<Q4Dot<true>>", True, 4, [0, 2]),
    "Q8_0": ("Q8Tile<Q8_0Dot>", True, 2, [0]),
    "Q4_K": ("Q8Tile<Q4_KDot>", True, 4, [0, 2]),
    "Q5_K": ("Q8Tile<Q5_KDot>", True, 4, [0, 2]),
    "Q6_K": ("Q8Tile<Q6_KDot>", True, 2, [208]),
    "Q5_K/float": ("FloatTile<Q5_KT, SubBlocks<Q5_KT>>", False, 4, [0, 2]),
    "Q6_K/float": ("FloatTile<Q6_KT, SubBlocks<Q6_KT>>", False, 2, [208]),
    "IQ2_XS/float": ("FloatTile<IQ2_XST, SubBlocks<IQ2_XST>>", False, 2, [0]),
    "IQ3_S/float": ("FloatTile<IQ3_ST, SubBlocks<IQ3_ST>>", False, 2, [0]),
}
# Q8Tile formats whose offset term is per 16 elements (integer code sums of
# each half of an x block) rather than the block's stored sum.
HALF_OFFSETS = {"Q6_K"}
# (format, k, n, wanted tile rows, x per slot, zero-weight blocks)
CASES = [
    ("Q4_0", 32, 67, 64, False, False),
    ("Q4_0", 96, 13, 8, True, False),
    ("Q4_0", 2048, 9, 2, False, False),
    ("Q4_0", 96, 11, 8, False, True),
    ("Q4_1", 32, 37, 16, True, False),
    ("Q4_1", 96, 21, 64, False, False),
    ("Q4_1", 2048, 5, 8, False, False),
    ("Q4_1", 96, 7, 2, True, True),
    ("Q8_0", 32, 19, 2, False, False),
    ("Q8_0", 96, 67, 16, True, False),
    ("Q8_0", 2048, 11, 8, False, False),
    ("Q4_K", 256, 67, 64, False, False),
    ("Q4_K", 768, 17, 16, True, False),
    ("Q4_K", 2048, 9, 2, False, False),
    ("Q4_K", 2048, 13, 8, True, False),
    ("Q4_K", 256, 9, 8, False, True),
    ("Q5_K", 256, 67, 64, False, False),
    ("Q5_K", 768, 17, 16, True, False),
    ("Q5_K", 2048, 9, 2, False, False),
    ("Q5_K", 2560, 13, 8, True, False),
    ("Q5_K", 256, 9, 8, False, True),
    ("Q6_K", 256, 45, 16, False, False),
    ("Q6_K", 768, 19, 8, True, False),
    ("Q6_K", 1280, 7, 2, False, False),
    ("Q6_K", 2048, 13, 8, True, False),
    ("Q6_K", 768, 11, 8, False, True),
    ("Q5_K/float", 256, 23, 8, True, False),
    ("Q5_K/float", 768, 5, 2, False, False),
    ("Q6_K/float", 256, 45, 16, False, False),
    ("IQ2_XS/float", 256, 23, 8, True, False),
    ("IQ2_XS/float", 768, 5, 2, False, False),
    ("IQ3_S/float", 256, 45, 16, False, False),
    ("IQ3_S/float", 768, 7, 8, True, False),
    ("Q6_K/float", 2048, 3, 2, True, False),
]
N_TOKENS, TOP_K, N_EXPERTS = 2, 3, 4
GUARD = 64  # bytes of guard zone before and after each weight stack

PRELUDE = r"""
#include <atomic>
#include <cfenv>
#define KILN_SHIM_BLOCK_SYNC
#define KILN_SHIM_WARP_SHFL
#define KILN_SHIM_SLURP
#include "cuda_host_shim.h"
typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef int i32;
typedef unsigned int u32;
typedef long long i64;
typedef unsigned long long u64;
static inline float fmaf_(float a, float b, float c) { return std::fma(a, b, c); }
#define fmaf fmaf_
#define __expf(v) std::exp(v)
static inline void __syncwarp() { warp_bars[threadIdx.x / 32]->arrive_and_wait(); }
static inline float __frcp_rn(float v) { return 1.0f / v; }
static inline float kiln_silu(float g) { return g * __frcp_rn(1.0f + __expf(-g)); }
// PDL at kernel entry (common.cuh): the emulated grid runs after everything before it.
static inline void kiln_pdl_enter() {}
struct alignas(16) int4 { int x, y, z, w; };
// PTX dp4a.s32.s32: c + the dot product of the four signed bytes of a and b.
static inline int __dp4a(int a, int b, int c) {
    for (int i = 0; i < 4; i++) c += (int)(i8)(a >> (8 * i)) * (int)(i8)(b >> (8 * i));
    return c;
}
// Round to nearest, ties to even (the default rounding mode).
static inline int __float2int_rn(float v) { return (int)std::nearbyint(v); }

// The CTA's dynamic shared memory and gate array (set per launch / CTA).
static u8* dyn_smem;
static u64 dyn_bytes, dyn_slot;
static float gate_smem[64];
// Where tile_cp16 may read from: the stacks' weight bytes.
struct SrcRange { const u8* base; u64 len; };
static SrcRange src_ranges[2];
static std::atomic<int> guard_fail{0};
// cp.async as deferred copies: tile_cp16 queues its piece in the open group
// of its thread, stage_commit closes the group, stage_wait<N> marks all but
// the N newest groups done, and the piece lands at the next __syncthreads
// (between two barrier phases). So a read of the tile before its wait and
// barrier sees the 0xCD poison whatever the thread schedule.
struct Copy { u8* dst; const u8* src; u32 n; int group; bool ready; };
static thread_local std::vector<Copy> copies;
static thread_local int groups_committed;
static std::atomic<int> copy_fail{0};
static void shim_commit() { groups_committed++; }
static void shim_wait(int n) {
    for (Copy& c : copies)
        if (c.group < groups_committed - n) c.ready = true;
}
static inline void shim_syncthreads() {
    block_bar->arrive_and_wait();
    std::vector<Copy> left;
    for (const Copy& c : copies)
        if (c.ready) {
            for (u32 i = 0; i < 16; i++) c.dst[i] = i < c.n ? c.src[i] : (u8)0;
        } else {
            left.push_back(c);
        }
    copies.swap(left);
    block_bar->arrive_and_wait();
}
#define __syncthreads() shim_syncthreads()
static void cta_begin() {
    copies.clear();
    groups_committed = 0;
}
static void cta_end() {
    if (!copies.empty() && copy_fail++ < 5) printf("CTA (%u, %u) ended with %zu copies not waited for\n",
                                                  blockIdx.x, blockIdx.y, copies.size());
}
static void tile_cp16_check(u8* dst, const u8* src, u32 n) {
    bool ok = n <= 16 && dst >= dyn_smem && (u64)(dst - dyn_smem) + 16 <= dyn_bytes &&
              (u64)(dst - dyn_smem) % dyn_slot + 16 <= dyn_slot && ((u64)dst & 15) == 0;
    bool in = false;
    for (const SrcRange& r : src_ranges)
        if (r.base && src >= r.base && src + n <= r.base + r.len) in = true;
    if (!(ok && in) && guard_fail++ < 5)
        printf("tile_cp16 out of bounds: dst +%lld, src %p, n %u\n", (long long)(dst - dyn_smem),
               (const void*)src, n);
    copies.push_back({dst, src, n, groups_committed, false});
}
"""

MAIN = r"""
template <class T>
static void spit(const std::string& path, const std::vector<T>& v) {
    FILE* f = fopen(path.c_str(), "wb");
    fwrite(v.data(), sizeof(T), v.size(), f);
    fclose(f);
}

// Every CTA of a gx x gy grid, one at a time, run by 128 persistent
// threads (a block barrier between CTAs; thread 0 poisons shared memory).
template <class F>
static void launch_ctas(unsigned gx, unsigned gy, F body) {
    const unsigned threads = MV_THREADS;
    blockDim.x = threads;
    gridDim.x = gx;
    gridDim.y = gy;
    std::barrier<> bar(threads);
    block_bar = &bar;
    warp_bars.clear();
    for (unsigned w = 0; w < threads / 32; w++) warp_bars.emplace_back(new std::barrier<>(32));
    std::vector<std::thread> th;
    for (unsigned t = 0; t < threads; t++)
        th.emplace_back([&, t] {
            threadIdx.x = t;
            for (unsigned by = 0; by < gy; by++)
                for (unsigned bx = 0; bx < gx; bx++) {
                    if (t == 0) {
                        memset(dyn_smem, 0xCD, dyn_bytes);
                        for (float& g : gate_smem) g = __int_as_float(0x7fc00000);
                    }
                    bar.arrive_and_wait();
                    blockIdx.x = bx;
                    blockIdx.y = by;
                    cta_begin();
                    body();
                    cta_end();
                    bar.arrive_and_wait();
                }
        });
    for (auto& t : th) t.join();
}

template <class T, bool GATED>
static void run(const MatmulIdParams& p, const std::string& b) {
    const auto w = slurp<u8>(b + ".w");
    const auto wu = slurp<u8>(b + ".u");
    const auto xv = slurp<float>(b + ".x");
    std::vector<float4> xa(xv.size() / 4);  // 16-byte aligned x, exact size
    memcpy(xa.data(), xv.data(), xv.size() * 4);
    const auto ids = slurp<u32>(b + ".i");
    // Guard zones: GUARD bytes before and after each stack.
    const u64 len = w.size() - 2 * GUARD;
    src_ranges[0] = {w.data() + GUARD, len};
    src_ranges[1] = {GATED ? wu.data() + GUARD : nullptr, len};
    std::vector<float> out(p.rows * p.n + 128, 12345.0f);  // 64 guard floats each side
    const u64 stacks = GATED ? 2 : 1;
    dyn_slot = p.tile_slot;
    dyn_bytes = stacks * p.tile_slot + p.tile_xq;
    dyn_smem = (u8*)malloc(dyn_bytes);
    // One more CTA each way than needed: those must exit (j0 >= n, r >= rows).
    const unsigned gx = (unsigned)((p.n + p.tile_rows - 1) / p.tile_rows) + 1;
    const unsigned gy = (unsigned)p.rows + 1;
    launch_ctas(gx, gy, [&] {
        mv_id_tile<T, GATED>(p, w.data() + GUARD, GATED ? wu.data() + GUARD : nullptr,
                             (const float*)xa.data(), ids.data(), out.data() + 64);
    });
    free(dyn_smem);
    spit(b + (GATED ? ".og" : ".op"), out);
}

int main(int argc, char** argv) {
    const std::string dir = argv[1];
    for (int c = 0;; c++) {
        const std::string b = dir + "/case" + std::to_string(c);
        const auto pv = slurp<u64>(b + ".p");
        if (pv.empty()) break;
        // (format, n, k, row_bytes, stride, n_experts, top_k, rows, x_per_slot,
        //  gated, tile_rows, tile_slot, tile_xq)
        MatmulIdParams p = {};
        p.n = pv[1];
        p.k = pv[2];
        p.row_bytes = pv[3];
        p.kw = 4;
        p.expert_stride = pv[4];
        p.n_experts = pv[5];
        p.top_k = pv[6];
        p.rows = pv[7];
        p.r0 = 0;
        p.x_per_slot = pv[8];
        p.tile_rows = pv[10];
        p.tile_slot = pv[11];
        p.tile_xq = pv[12];
        switch (pv[0] * 2 + pv[9]) {
DISPATCH
        }
    }
    return guard_fail.load() != 0 || copy_fail.load() != 0 ? 3 : 0;
}
"""


def segment(src: str, start: str, end: str) -> str:
    i = src.index(start)
    return src[i : src.index(end, i)]


def replace_once(src: str, old: str, new: str, what: str) -> str:
    if src.count(old) != 1:
        sys.exit(f"{what}: {old!r} found {src.count(old)} times")
    return src.replace(old, new)


def staged_src() -> str:
    """matvec_staged.cuh with stage_commit / stage_wait hooked to the shim."""
    src = device_src("matvec_staged.cuh")
    src = replace_once(src, "__device__ __forceinline__ void stage_commit() {",
                       "__device__ __forceinline__ void stage_commit() {\n    shim_commit();", "stage_commit")
    return replace_once(src, "__device__ __forceinline__ void stage_wait() {",
                        "__device__ __forceinline__ void stage_wait() {\n    shim_wait(N);", "stage_wait")


def kernel_src(mutate) -> str:
    """matvec_tile.cuh + MatmulIdParams + mv_id_tile, with the shim hooks."""
    tile = device_src("matvec_tile.cuh")
    mid = (KERNELS / "matmul_id.cu").read_text()
    params = segment(mid, "struct MatmulIdParams {", "// The mm_id plan")
    body = segment(mid, "// One tile CTA of the mv_id tile kernels", "\n#ifndef KILN_MLX_BITS")
    code = tile + "\n" + body
    for old, new in mutate:
        if old not in code:
            sys.exit(f"--mutate: {old!r} not in matvec_tile.cuh / mv_id_tile")
        code = code.replace(old, new)
    code = replace_once(code, "for (u32 i = 0; i < 16; i++) dst[i] = i < n ? src[i] : (u8)0;",
                        "tile_cp16_check(dst, src, n);", "tile_cp16's fallback")
    code = replace_once(code, "extern __shared__ __align__(16) u8 tile_smem[];", "u8* const tile_smem = dyn_smem;", "tile_smem")
    code = replace_once(code, "__shared__ float gate[TILE_MAX_ROWS];", "float* const gate = gate_smem;", "gate")
    return params + code


# ---- the host planner (crates/kiln-cuda/src/matvec_tile.rs), mirrored ----
TILE_MAX_ROWS, TILE_MAX_SMEM, TILE_STATIC_SMEM = 64, 48 * 1024, 1024


def tile_plan(row_bytes, mats, target, extra):
    if row_bytes == 0 or mats == 0 or target == 0:
        return None
    limit = max(0, TILE_MAX_SMEM - TILE_STATIC_SMEM - extra)
    slot = lambda rows: -(-(rows * row_bytes + 16) // 16) * 16
    fit = target // (mats * row_bytes)
    rows = max(8, (fit + 4) // 8 * 8) if fit >= 4 else max(2, fit // 2 * 2)
    rows = min(rows, TILE_MAX_ROWS)
    while rows > 2 and mats * slot(rows) > limit:
        rows -= 8 if rows > 8 else 2
    return (rows, slot(rows)) if mats * slot(rows) <= limit else None


def tile_xq_bytes(name, k):
    return k + 8 * (k // 32) if FORMATS[name][1] else 0


# ---- weights and the int8 model ----
def f16(a, off):
    return a[:, off : off + 2].copy().view(np.float16).astype(np.float64)[:, 0]


def k4_scale_min(s):
    """get_scale_min_k4 for the 12 scale bytes of each row of s: (sc, mn) [.., 8]."""
    s = s.astype(np.int64)
    sc = np.zeros((s.shape[0], 8), np.int64)
    mn = np.zeros_like(sc)
    for j in range(8):
        if j < 4:
            sc[:, j] = s[:, j] & 63
            mn[:, j] = s[:, j + 4] & 63
        else:
            sc[:, j] = (s[:, j + 4] & 0xF) | ((s[:, j - 4] >> 6) << 4)
            mn[:, j] = (s[:, j + 4] >> 4) | ((s[:, j] >> 6) << 4)
    return sc, mn


def ggml(name):
    """The GGML format of a case name."""
    return name.split("/")[0]


def int8_terms(name, blocks):
    """Per 32 weights: integer codes [nb32, 32] and per half (16 weights) the
    code coefficient a and the offset coefficient c [nb32, 2] (w = a q + c,
    f64 from the stored f16 / int fields)."""
    two = lambda v: np.repeat(np.asarray(v)[:, None], 2, axis=1)
    if name in ("Q4_0", "Q4_1"):
        o = 2 if name == "Q4_0" else 4
        qs = blocks[:, o : o + 16].astype(np.int64)
        q = np.concatenate([qs & 15, qs >> 4], axis=1)
        d = f16(blocks, 0)
        c = -8.0 * d if name == "Q4_0" else f16(blocks, 2)
        return q, two(d), two(c)
    if name == "Q8_0":
        return blocks[:, 2:34].view(np.int8).astype(np.int64), two(f16(blocks, 0)), np.zeros((len(blocks), 2))
    if name in ("Q4_K", "Q5_K"):
        d, dmin = f16(blocks, 0), f16(blocks, 2)
        sc, mn = k4_scale_min(blocks[:, 4:16])
        o = 16 if name == "Q4_K" else 48
        qs = blocks[:, o : o + 128].astype(np.int64).reshape(-1, 4, 32)
        q = np.stack([qs & 15, qs >> 4], axis=2).reshape(-1, 8, 32)  # sub 2g low, 2g + 1 high
        if name == "Q5_K":
            qh = blocks[:, 16:48].astype(np.int64)
            q |= np.stack([((qh >> j) & 1) << 4 for j in range(8)], axis=1)  # bit j of qh[t]: sub j
        a = d[:, None] * sc
        c = -dmin[:, None] * mn
        return q.reshape(-1, 32), two(a.reshape(-1)), two(c.reshape(-1))
    assert name == "Q6_K"
    ql = blocks[:, 0:128].astype(np.int64)
    qh = blocks[:, 128:192].astype(np.int64)
    sc = blocks[:, 192:208].view(np.int8).astype(np.float64)
    d = f16(blocks, 208)
    q = np.zeros((len(blocks), 8, 32), np.int64)
    for j in range(8):
        n_, m = j // 4, j % 4
        lo = (ql[:, 64 * n_ + 32 * (m % 2) : 64 * n_ + 32 * (m % 2) + 32] >> (4 * (m // 2))) & 15
        hi = (qh[:, 32 * n_ : 32 * n_ + 32] >> (2 * m)) & 3
        q[:, j] = lo | (hi << 4)
    a = d[:, None] * sc  # [nb, 16]: scale of each 16 weights
    return q.reshape(-1, 32), a.reshape(-1, 2), (-32.0 * a).reshape(-1, 2)


def quantize_x(x):
    """tile_quantize_x in numpy: codes [nb, 32], scales dx, sums sx = dx * code
    sum (both f32 values), amax per 32."""
    xb = x.reshape(-1, 32).astype(np.float32)
    amax = np.abs(xb).max(axis=1)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, np.float32(127.0) / amax, np.float32(0.0)).astype(np.float32)
    codes = np.rint((xb * inv[:, None]).astype(np.float32)).astype(np.int64)
    dx = (amax / np.float32(127.0)).astype(np.float32)
    sx = (dx * codes.sum(axis=1).astype(np.float32)).astype(np.float32)  # d * code sum, f32
    return codes, dx.astype(np.float64), sx.astype(np.float64), amax.astype(np.float64)


def random_blocks(rng, name, count, nb, zero):
    qt = getattr(gguf.GGMLQuantizationType, ggml(name))
    _, ts = gguf.GGML_QUANT_SIZES[qt]
    data = rng.integers(0, 256, size=(count, ts), dtype=np.uint8)
    for off in FORMATS[name][3]:
        data[:, off : off + 2] = rng.uniform(-1, 1, size=count).astype(np.float16).view(np.uint8).reshape(-1, 2)
    if zero:
        # Every other row's weights all zero, the codes not.
        rows = data.reshape(-1, nb, ts)
        z = rows[::2].reshape(-1, ts)
        if name == "Q4_0":
            z[:, 2:] = 0x88
        elif name == "Q4_1":
            d = rng.uniform(0.01, 1, size=len(z)).astype(np.float16)
            z[:, 0:2] = d.view(np.uint8).reshape(-1, 2)
            z[:, 2:4] = (-8 * d.astype(np.float32)).astype(np.float16).view(np.uint8).reshape(-1, 2)
            z[:, 4:] = 0x88
        elif name == "Q4_K":
            # d = dmin, sc = mn = 1 for every sub-block, codes 1: w = d - d = 0.
            d = rng.uniform(0.01, 1, size=len(z)).astype(np.float16).view(np.uint8).reshape(-1, 2)
            z[:, 0:2] = d
            z[:, 2:4] = d
            z[:, 4:8] = 1
            z[:, 8:12] = 1
            z[:, 12:16] = 0x11
            z[:, 16:] = 0x11
        elif name == "Q5_K":
            # d = dmin, sc = 1 and mn = 17 for every sub-block, codes 17 (qh
            # bits set): w = 17 d - 17 d = 0.
            d = rng.uniform(0.01, 1, size=len(z)).astype(np.float16).view(np.uint8).reshape(-1, 2)
            z[:, 0:2] = d
            z[:, 2:4] = d
            z[:, 4:8] = 1
            z[:, 8:12] = 0x51  # mn 17 (sub < 4); bits 6..7: mn's bit 4 for sub >= 4
            z[:, 12:16] = 0x11
            z[:, 16:48] = 0xFF
            z[:, 48:] = 0x11
        elif name == "Q6_K":
            # codes 32 (low nibbles 0, high bits 2), random scales: w = 0.
            z[:, 0:128] = 0x00
            z[:, 128:192] = 0xAA
        rows[::2] = z.reshape(-1, nb, ts)
    return data


def silu(g):
    with np.errstate(over="ignore"):
        return g / (1.0 + np.exp(-g))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mutate", nargs=2, action="append", default=[], metavar=("OLD", "NEW"),
                    help="replace text in matvec_tile.cuh / mv_id_tile first (to see the check fail)")
    ap.add_argument("--quick", action="store_true", help="the first case of each format only")
    args = ap.parse_args()
    rng = np.random.default_rng(SEED)
    names = list(FORMATS)
    cases = CASES
    if args.quick:
        seen = set()
        cases = [c for c in CASES if not (c[0] in seen or seen.add(c[0]))]
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        t = pathlib.Path(tmp)
        data = []
        for c, (name, k, n, want_rows, per_slot, zero) in enumerate(cases):
            policy, q8, align, _ = FORMATS[name]
            qt = getattr(gguf.GGMLQuantizationType, ggml(name))
            bs, ts = gguf.GGML_QUANT_SIZES[qt]
            nb = k // bs
            row_bytes = nb * ts
            xq = tile_xq_bytes(name, k)
            plans = {}
            for mats in (1, 2):
                plan = tile_plan(row_bytes, mats, want_rows * mats * row_bytes, xq)
                assert plan is not None, (name, k, mats)
                plans[mats] = plan
            # Expert stride: a multiple of the format's alignment, not of 16,
            # so the tiles of experts >= 1 start off 16-byte alignment.
            pad = align * int(rng.integers(1, 8))
            while (n * row_bytes + pad) % 16 == 0:
                pad += align
            stride = n * row_bytes + pad
            stacks = []
            wfs = []
            for s in range(2):
                blocks = random_blocks(rng, name, N_EXPERTS * n * nb, nb, zero)
                wf = gguf.quants.dequantize(blocks.reshape(-1), qt).astype(np.float64).reshape(N_EXPERTS, n, k)
                buf = bytearray(rng.integers(0, 256, size=GUARD, dtype=np.uint8).tobytes())
                for e in range(N_EXPERTS):
                    buf += blocks[e * n * nb : (e + 1) * n * nb].tobytes()
                    if e + 1 < N_EXPERTS:
                        buf += rng.integers(0, 256, size=pad, dtype=np.uint8).tobytes()
                buf += rng.integers(0, 256, size=GUARD, dtype=np.uint8).tobytes()
                stacks.append((bytes(buf), blocks))
                wfs.append(wf)
            rows = N_TOKENS * TOP_K
            ids = rng.integers(0, N_EXPERTS, size=rows).astype(np.uint32)
            ids[:2] = (1, N_EXPERTS - 1)  # experts whose tiles start off 16-byte alignment
            ids[rows // 2] = N_EXPERTS
            if c % 3 == 0:
                ids[-1] = 0xFFFFFFFF
            x = rng.uniform(-1, 1, size=((rows if per_slot else N_TOKENS), k)).astype(np.float32)
            x[rng.random(x.shape) < 0.05] *= 8  # outliers: block scales differ
            if c % 4 == 1:
                x[0, :32] = 0  # a zero x block (scale 0)
            (t / f"case{c}.w").write_bytes(stacks[0][0])
            (t / f"case{c}.u").write_bytes(stacks[1][0])
            x.tofile(t / f"case{c}.x")
            ids.tofile(t / f"case{c}.i")
            for gated in (0, 1):
                tr, slot = plans[1 + gated]
                np.array([names.index(name), n, k, row_bytes, stride, N_EXPERTS, TOP_K, rows, int(per_slot),
                          gated, tr, slot, xq], dtype=np.uint64).tofile(t / f"case{c}.p{gated}")
            data.append((name, k, n, per_slot, zero, stride, plans, stacks, wfs, ids, x))
        dispatch = []
        for i, name in enumerate(names):
            for g in (0, 1):
                dispatch.append(f"        case {2 * i + g}: run<{FORMATS[name][0]}, {'true' if g else 'false'}>(p, b); break;")
        main_src = MAIN.replace("DISPATCH", "\n".join(dispatch)).replace(
            'slurp<u64>(b + ".p")', "slurp<u64>(b + \".p\" + std::string(argv[2]))")
        src = "\n".join([PRELUDE, common_decls(), matvec_src(), device_src("decode_kq.cuh"),
                         device_src("iq23_grids.cuh"), device_src("decode_iq.cuh"),
                         staged_src(), kernel_src(args.mutate),
                         f"#define GUARD {GUARD}", main_src])
        (t / "emu.cpp").write_text(src)
        cc = subprocess.run(
            ["g++", "-std=c++20", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
             "-pthread", "-Wno-unknown-pragmas", "-I", str(ROOT / "scripts"), "-o", str(t / "emu"), str(t / "emu.cpp")],
            capture_output=True, text=True)
        if cc.returncode != 0:
            print(cc.stderr[-6000:])
            return 2
        for gated in ("0", "1"):
            run = subprocess.run([str(t / "emu"), str(t), gated])
            if run.returncode != 0:
                print(f"emulator failed (rc {run.returncode}{': tile_cp16 guard / copies' if run.returncode == 3 else ''})")
                bad += 1
                if run.returncode != 3:
                    return 2
        for c, (name, k, n, per_slot, zero, stride, plans, stacks, wfs, ids, x) in enumerate(data):
            q8 = FORMATS[name][1]
            rows = len(ids)
            # Per stack, expert, x row: reference, sum |w x|, model, model magnitude, bound.
            ref = np.zeros((2, rows, n))
            mag = np.zeros((2, rows, n))
            model = np.zeros((2, rows, n))
            mterm = np.zeros((2, rows, n))
            bound = np.zeros((2, rows, n))
            for s in range(2):
                blocks = stacks[s][1]
                for r in range(rows):
                    e = int(ids[r])
                    if e >= N_EXPERTS:
                        continue
                    xr = x[r if per_slot else r // TOP_K].astype(np.float64)
                    wf = wfs[s][e]
                    ref[s, r] = wf @ xr
                    mag[s, r] = np.abs(wf) @ np.abs(xr)
                    if q8:
                        nb32 = k // 32
                        eb = blocks.reshape(N_EXPERTS, -1, blocks.shape[1])[e]
                        qc, a, cc_ = int8_terms(name, eb)
                        qc = qc.reshape(n, nb32, 2, 16)
                        a = a.reshape(n, nb32, 2)
                        cc_ = cc_.reshape(n, nb32, 2)
                        assert np.allclose(a[..., None] * qc + cc_[..., None], wf.reshape(n, nb32, 2, 16),
                                           rtol=1e-6, atol=1e-6), "int8 model decode != gguf"
                        codes, dx, sx, amax = quantize_x(xr)
                        ch = codes.reshape(nb32, 2, 16)
                        idot = (qc * ch[None]).sum(axis=3)  # per half
                        terms_a = a * dx[None, :, None] * idot
                        if name in HALF_OFFSETS:
                            # Integer code sums per half, times dx.
                            terms_c = cc_ * (dx[:, None] * ch.sum(axis=2))[None]
                        else:
                            # One offset per x block, times its stored sum.
                            assert np.array_equal(cc_[..., 0], cc_[..., 1])
                            terms_c = cc_[..., :1] * sx[None, :, None]
                        model[s, r] = terms_a.sum(axis=(1, 2)) + terms_c.sum(axis=(1, 2))
                        mterm[s, r] = np.abs(terms_a).sum(axis=(1, 2)) + np.abs(terms_c).sum(axis=(1, 2))
                        wabs = np.abs(wf.reshape(n, nb32, 32)).sum(axis=2)
                        bound[s, r] = (amax / 127.0 * 0.5 * wabs).sum(axis=1)
            got = {g: np.fromfile(t / f"case{c}.o{g}", dtype=np.float32) for g in ("p", "g")}
            desc = (f"{name} k={k} n={n} x per {'slot' if per_slot else 'token'} stride={stride}"
                    f"{' zero-weight blocks' if zero else ''}")
            for g, mats in (("p", 1), ("g", 2)):
                tr, slot = plans[mats]
                o = got[g]
                errs = []
                if not (np.all(o[:64] == 12345.0) and np.all(o[-64:] == 12345.0)):
                    errs.append("guard floats around out changed")
                o = o[64:-64].astype(np.float64).reshape(rows, n)
                row_bytes = len(stacks[0][1]) // (N_EXPERTS * n) * stacks[0][1].shape[1]
                leads = sum(1 for r in range(rows) if ids[r] < N_EXPERTS for j0 in range(0, n, tr)
                            if (int(ids[r]) * stride + j0 * row_bytes) % 16)
                worst = {"ref": 0.0, "model": 0.0}
                for r in range(rows):
                    if ids[r] >= N_EXPERTS:
                        if not np.all(np.isnan(o[r])):
                            errs.append(f"row {r} (id {ids[r]}) not all NaN")
                        continue
                    if not np.all(np.isfinite(o[r])):
                        errs.append(f"row {r}: non-finite or unwritten outputs")
                        continue
                    # Tolerances of one stack's dot products: against the
                    # float64 reference (and the int8 model for Q8 tiles).
                    checks = [("ref", ref, (bound if q8 else 0) + 1e-5 * (mag + (mterm if q8 else 0)) + 1e-30)]
                    if q8:
                        checks.append(("model", model, 1e-5 * mterm + 1e-30))
                    for what, want, tol in checks:
                        if g == "p":
                            w_, t_ = want[0, r], tol[0, r]
                        else:
                            gw, uw, gt, ut = want[0, r], want[1, r], tol[0, r], tol[1, r]
                            w_ = silu(gw) * uw
                            t_ = 1.1 * gt * (np.abs(uw) + ut) + (np.abs(silu(gw)) + 1.1 * gt) * ut + 1e-6 * np.abs(w_) + 1e-30
                        err = np.abs(o[r] - w_)
                        worst[what] = max(worst[what], float((err / t_).max()))
                        for j in np.nonzero(~(err <= t_))[0][:3]:
                            errs.append(f"row {r} col {j} ({what}): got {o[r, j]:.9g} want {w_[j]:.9g} tol {t_[j]:.3g}")
                kind = "gated" if g == "g" else "plain"
                ratio = f"err/tol ref {worst['ref']:.3f}" + (f" model {worst['model']:.3f}" if q8 else "")
                if errs:
                    bad += 1
                    print(f"FAIL {desc} {kind} tile_rows={tr} slot={slot}: {len(errs)} problems")
                    for m in errs[:5]:
                        print("   ", m)
                else:
                    print(f"ok   {desc} {kind} tile_rows={tr} slot={slot} lead!=0 tiles={leads}: {ratio}")
    print(f"seed {SEED}: {'ok' if bad == 0 else 'MISMATCH'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
