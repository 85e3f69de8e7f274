#!/usr/bin/env python3
"""Check the f32-math attention kernels of attention.cu (split-KV with and
without the merge, the warp decode kernels, the lane-group decode kernels
of attention_dec.cuh, the tiled prefill, and the `_at` entry points that
read the position from device memory) without a GPU, by running their
device code as host C++ against a numpy reference.

attention.cu (up to the tensor-core section, which check-cuda-attn-mma.py
covers) and attention_kv.cuh are compiled as they are, for each cache type
(KILN_KV 0 f32, 1 f16, 2 bf16), with g++ -fsanitize=address,undefined
behind shims: one std::thread per CUDA thread of a block (blocks run one
after another, in a shuffled order, so the "last block merges" ticket
logic meets every order the GPU might give it), __syncthreads a block-wide
std::barrier, the warp shuffles (__shfl_xor_sync, __shfl_sync) exchanged
through memory between two per-warp barriers, __shared__ variables
function statics, dynamic shared memory a NaN-filled buffer per block,
atomicAdd a host atomic. The caches, q, the split scratch and the tickets
are allocated at exactly the size the launcher validates, so any read
outside them stops the run (AddressSanitizer); the output lives between
guard zones; the tickets must be back to zero after every launch. The
caches start 64-byte aligned (the 16-byte vector loads), or a few
elements past that (the element-by-element loads).

What it checks, above all, is the ring cache (kiln_core::ops::attention:
a window w, a cache of kv_stride >= w + n_tokens - 1 rows, position j in
row j % kv_stride): the keys and values of every position are drawn and
stored in their rows in order (later laps overwrite earlier ones), rows
no query sees are NaN, and the reference (kiln-core's attention_ref in
float64) attends over the positions themselves, knowing nothing of the
ring. Cases: decode many laps in, rings of 1 to 3 rows (fewer than the
decode kernel's 4 warps), partial rows, every decode instance size class,
forced split plans (one split, many, one head per block with 16-key
tiles), split-KV prefill, the tiled kernel on every head_dim with tiles
that straddle the ring's end and rings shorter than a tile, soft caps,
the `_at` kernels at device positions before, at and past (clamped) the
planned one and negative; and plain (non-ring) caches as a control. The
lane-group decode kernel runs every decode case of the warp decode kernel
that has its head dims, its own cases (every head dim, head chunks of
groups wider than 4 heads, MHA, one key, 4 tokens with windows, soft caps,
forced plans of one split, 16-key splits, one and two heads per block,
shifted caches) and `_at` cases, each with f32, f16 and bf16 caches. The
kernel params and split plans are computed as src/attention.rs and
src/attention/dec.rs compute them (ported below: key_span, kernel_window,
split_kv_plan, decg_plan).

Bound: Tol::ATTENTION (max abs 1e-4, NMSE 1e-9), which the GPU tests
hold these kernels to. Host libm replaces the GPU's fast-math exp2 and
tanh, so only the indexing, masking and merging are under test here, not
the GPU's rounding.

Usage: python3 scripts/check-cuda-attn.py   (needs g++ with C++20 and numpy;
CHECK_ONLY=text runs only the cases whose name contains it, or whose
kernel is `text` (split, decode, decg, tiled); ~6 minutes on two cores)
"""
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
KERNELS = ROOT / "crates/kiln-cuda/kernels"
SEED = 4242
MAX_ABS = 1e-4
NMSE = 1e-9
SM_COUNT = 132  # an H100's SMs, for the ported split plan

PRELUDE = r"""
#include <atomic>
#include <barrier>
#include <cassert>
#include <memory>
#include <random>
#include <thread>
#include "cuda_host_shim.h"
"""

SHIMS = r"""
__device__ __forceinline__ void kiln_grid_wait() {}
__device__ __forceinline__ void kiln_grid_launch_dependents() {}

// One exchange area per warp and the warp's barrier; the block's barrier
// and dynamic shared memory.
struct WarpX {
    float slot[32];
    std::barrier<> bar{32};
};
static thread_local WarpX* warpx;
static thread_local std::barrier<>* block_bar;
static thread_local float* dyn_smem;
static inline void __syncthreads() { block_bar->arrive_and_wait(); }
static inline float shfl_from(float v, unsigned src) {
    const unsigned l = threadIdx.x % 32;
    assert(src < 32);
    warpx->slot[l] = v;
    warpx->bar.arrive_and_wait();
    const float r = warpx->slot[src];
    warpx->bar.arrive_and_wait();
    return r;
}
static inline float __shfl_xor_sync(unsigned mask, float v, int m) {
    assert(mask == 0xffffffffu);
    return shfl_from(v, (threadIdx.x % 32) ^ (unsigned)m);
}
static inline float __shfl_sync(unsigned mask, float v, int src) {
    assert(mask == 0xffffffffu);
    return shfl_from(v, (unsigned)src);
}
static inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
static inline u32 atomicAdd(u32* p, u32 v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
static inline float __ldcg(const float* p) { return *p; }
static inline float4 __ldcg(const float4* p) { return *p; }
static inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
"""

MAIN = r"""
template <class T>
static std::vector<T> slurp(const char* dir, const char* name, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    std::vector<T> v(n);
    FILE* f = fopen(path, "rb");
    if (!f || fread(v.data(), sizeof(T), n, f) != n) { fprintf(stderr, "read %s\n", path); exit(2); }
    fclose(f);
    return v;
}

// Run `body` as grid x block (block = 128 threads), blocks in a shuffled order.
template <class F>
static void run_grid(Idx grid, size_t smem_floats, unsigned seed, F body) {
    gridDim = grid;
    blockDim = {128, 1, 1};
    std::vector<Idx> blocks;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) blocks.push_back({x, y, z});
    std::mt19937 rng(seed);
    std::shuffle(blocks.begin(), blocks.end(), rng);
    for (const Idx b : blocks) {
        std::barrier<> bar(128);
        std::vector<std::unique_ptr<WarpX>> wx;
        for (int w = 0; w < 4; w++) wx.emplace_back(new WarpX);
        std::vector<float> smem(std::max<size_t>(smem_floats, 1), NAN);
        std::vector<std::thread> th;
        for (unsigned t = 0; t < 128; t++)
            th.emplace_back([&, t] {
                threadIdx = {t, 0, 0};
                blockIdx = b;
                warpx = wx[t / 32].get();
                block_bar = &bar;
                dyn_smem = smem.data();
                body();
            });
        for (auto& t : th) t.join();
    }
}

#define DEC(L)                                                             \
    case L:                                                                \
        if (at) KV_NAME(attention_decode_l##L##_at_)(p, pos, qq, kk, vv, part, tk, o); \
        else KV_NAME(attention_decode_l##L##_)(p, qq, kk, vv, part, tk, o);   \
        break;
#define DECG(D)                                                            \
    case D:                                                                \
        if (at) KV_NAME(attention_decg_d##D##_at_)(p, pos, qq, kk, vv, part, tk, o); \
        else KV_NAME(attention_decg_d##D##_)(p, qq, kk, vv, part, tk, o);   \
        break;
#define TILED(D)                                                           \
    case D:                                                                \
        KV_NAME(attention_tiled_d##D##_)(p, qq, kk, vv, o);                \
        break;

// The cache at `shift` elements past a 64-byte aligned base, in a buffer
// of exactly shift + n elements (posix_memalign: AddressSanitizer still
// bounds the exact size); the vector loads need the alignment, the shifted
// bases take the element-by-element path.
template <class T>
static T* place(const std::vector<T>& x, size_t shift) {
    void* mem = nullptr;
    if (posix_memalign(&mem, 64, (shift + x.size()) * sizeof(T)) != 0) abort();
    T* base = (T*)mem;
    for (size_t i = 0; i < shift; i++) memset(&base[i], 0xff, sizeof(T));
    memcpy(base + shift, x.data(), x.size() * sizeof(T));
    return base + shift;
}

// args: dir kind at size n_tokens n_heads n_kv_heads head_dim pos0 n_splits
//       chunk heads_per_block key_tile scale_log2 window cap_log2 kv_rows
//       dev_pos seed kv_shift
// kind: split | decode | decg | tiled; size: values per lane (decode) or
// head_dim (decg, tiled)
int main(int argc, char** argv) {
    if (argc != 21) { fprintf(stderr, "argc %d\n", argc); return 2; }
    const char* dir = argv[1];
    const std::string kind = argv[2];
    const bool at = atoi(argv[3]) != 0;
    const int size = atoi(argv[4]);
    AttnParams p = {};
    p.n_tokens = atoi(argv[5]);
    p.n_heads = atoi(argv[6]);
    p.n_kv_heads = atoi(argv[7]);
    p.head_dim = atoi(argv[8]);
    p.pos0 = atoi(argv[9]);
    p.group = p.n_heads / p.n_kv_heads;
    p.n_splits = atoi(argv[10]);
    p.chunk = atoi(argv[11]);
    p.heads_per_block = atoi(argv[12]);
    p.key_tile = atoi(argv[13]);
    p.scale_log2 = (float)atof(argv[14]);
    p.window = atoi(argv[15]);
    p.cap_log2 = (float)atof(argv[16]);
    p.kv_rows = (u32)atoll(argv[17]);
    p.prefetch = 1;  // decg: the prefetch reads each address here (ASan checks the bounds)
    const i32 dev_pos = atoi(argv[18]);
    const unsigned seed = atoi(argv[19]);
    const size_t kv_shift = atoi(argv[20]);
    const u32 d = p.head_dim;
    const size_t nq = (size_t)p.n_tokens * p.n_heads * d;
    const size_t nkv = (size_t)p.kv_rows * p.n_kv_heads * d;
    // Exactly the validated sizes: a read past them is an ASan error.
    const auto q = slurp<float>(dir, "q", nq);
    const auto k = slurp<kv_t>(dir, "k", nkv);
    const auto v = slurp<kv_t>(dir, "v", nkv);
    const i32 pos_buf[1] = {dev_pos};
    const size_t guard = 64;
    std::vector<float> out(nq + 2 * guard, 12345.0f);
    for (size_t i = 0; i < nq; i++) out[guard + i] = NAN;
    float* o = out.data() + guard;
    const i32* pos = pos_buf;
    const u32 hb = p.heads_per_block ? p.heads_per_block : 1;
    const u32 head_chunks = (p.group + hb - 1) / hb;
    const Idx grid = {p.n_splits, p.n_kv_heads * head_chunks, std::min(p.n_tokens, 65535u)};
    const size_t n_part = p.n_splits > 1 ? nq / d * p.n_splits * (d + 2) : 1;
    std::vector<float> part_buf(n_part, NAN);
    std::vector<u32> tickets((size_t)grid.z * grid.y, 0u);
    float* part = part_buf.data();
    u32* tk = tickets.data();
    const float* qq = q.data();
    const kv_t* kk = place(k, kv_shift);
    const kv_t* vv = place(v, kv_shift);
    if (kind == "split") {
        const u32 bk = p.key_tile;
        const size_t smem = 2 * hb * d + bk * (d + 1) + bk * d + hb * bk + 3 * hb;
        run_grid(grid, smem, seed, [&] {
            if (p.n_splits == 1) {
                if (at) KV_NAME(attention_split_direct_at_)(p, pos, qq, kk, vv, o);
                else KV_NAME(attention_split_direct_)(p, qq, kk, vv, o);
            } else {
                if (at) KV_NAME(attention_split_at_)(p, pos, qq, kk, vv, part, tk, o);
                else KV_NAME(attention_split_)(p, qq, kk, vv, part, tk, o);
            }
        });
    } else if (kind == "decode") {
        run_grid(grid, (size_t)4 * hb * (d + 2), seed, [&] {
            switch (size) {
                DEC(1) DEC(2) DEC(3) DEC(4) DEC(5) DEC(6) DEC(7) DEC(8) DEC(16)
                default: abort();
            }
        });
    } else if (kind == "decg") {
        // src/attention/dec.rs, decg_smem_floats: 1024 / d key streams.
        const size_t smem = std::max<size_t>((size_t)(1024 / d) * hb * (d + 2), (size_t)2 * hb * p.n_splits + 4 * 128);
        run_grid(grid, smem, seed, [&] {
            switch (size) { DECG(64) DECG(128) DECG(256) default: abort(); }
        });
    } else if (kind == "tiled") {
        run_grid({(p.n_tokens + 31) / 32, p.n_heads, 1}, 0, seed, [&] {
            switch (size) { TILED(64) TILED(80) TILED(96) TILED(128) default: abort(); }
        });
    } else {
        return 2;
    }
    free((void*)(kk - kv_shift));
    free((void*)(vv - kv_shift));
    for (size_t i = 0; i < guard; i++)
        if (out[i] != 12345.0f || out[guard + nq + i] != 12345.0f) { printf("guard overwritten\n"); return 3; }
    for (u32 t : tickets)
        if (t != 0) { printf("a ticket was left at %u\n", t); return 4; }
    char path[512];
    snprintf(path, sizeof path, "%s/out", dir);
    FILE* f = fopen(path, "wb");
    fwrite(o, 4, nq, f);
    fclose(f);
    return 0;
}
"""


def kernel_source(kv: int) -> str:
    att = (KERNELS / "attention.cu").read_text()
    att = att[: att.index("// tensor-core prefill (sm_80+)")]
    kvh = (KERNELS / "attention_kv.cuh").read_text().replace("#pragma once", "")
    dec = (KERNELS / "attention_dec.cuh").read_text()
    att = att.replace('#include "common.cuh"', "").replace('#include "attention_kv.cuh"', kvh)
    att = att.replace('#include "attention_dec.cuh"', dec)
    shared = "extern __shared__ float smem[];"
    assert shared in att
    att = att.replace(shared, "float* smem = dyn_smem;")
    common = (KERNELS / "common.cuh").read_text()
    decls = "\n".join(l for l in common.splitlines() if l.startswith("typedef"))
    return "\n".join([PRELUDE, decls, SHIMS, f"#define KILN_KV {kv}", att, MAIN])


# --- src/attention.rs, ported -------------------------------------------------

DECODE_MAX_TOKENS = 4
DEC_DPLS = [1, 2, 3, 4, 5, 6, 7, 8, 16]
DECG_HEAD_DIMS = [64, 128, 256]
DECG_BLOCKS_PER_SM = 4


def key_span(p):
    allk = max(p["pos0"] + p["n"], 1)
    if p["window"]:
        return min(allk, max(p["window"] + p["n"] - 1, 1))
    return allk


def kernel_window(p):
    w = p["window"]
    return w if w and w < p["pos0"] + p["n"] else 0


def split_kv_plan(p, sm_count=SM_COUNT):
    d, group = p["d"], p["h"] // p["hk"]
    key_tile = 32 if d <= 128 else 16
    max_heads = 2 if d > 256 else 8
    hb = min(group, max(1024 // d, 1), max_heads)
    head_chunks = -(-group // hb)
    base_blocks = min(max(p["n"], 1), 65535) * p["hk"] * head_chunks
    max_keys = key_span(p)
    target = -(-150 * sm_count // 100)
    min_keys = 64 if p["n"] <= DECODE_MAX_TOKENS else 32
    splits = max(1, min(-(-target // base_blocks), -(-max_keys // min_keys), 256))
    chunk = -(-(-(-max_keys // splits)) // key_tile) * key_tile
    return dict(splits=-(-max_keys // chunk), chunk=chunk, hb=hb, key_tile=key_tile)


def decg_plan(p, sm_count=SM_COUNT):
    """src/attention/dec.rs, decg_plan."""
    d, group = p["d"], p["h"] // p["hk"]
    hb = min(group, 4)
    head_chunks = -(-group // hb)
    base_blocks = min(max(p["n"], 1), 65535) * p["hk"] * head_chunks
    max_keys = key_span(p)
    min_keys = max(2 * (1024 // d), 16)
    target = DECG_BLOCKS_PER_SM * sm_count
    splits = max(1, min(-(-target // base_blocks), -(-max_keys // min_keys), 256))
    chunk = -(-(-(-max_keys // splits)) // 16) * 16
    return dict(splits=-(-max_keys // chunk), chunk=chunk, hb=hb, key_tile=16)


# --- inputs and reference ------------------------------------------------------


def bf16_bits(x):
    u = x.view(np.uint32).astype(np.uint64)
    return (((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF).astype(np.uint16)


def encode(kv, x):
    """The cache as stored (raw array) and widened to f32 (what the kernel reads)."""
    if kv == 0:
        return x, x
    if kv == 1:
        h = x.astype(np.float16)
        return h.view(np.uint16), h.astype(np.float32)
    b = bf16_bits(x)
    return b, (b.astype(np.uint32) << 16).view(np.float32)


def inputs(rng, p, stride, kv):
    """q; the caches: position j's k/v drawn per position and stored in row j %
    stride in order (later laps overwrite), NaN in rows no query sees; and the
    per-position arrays (widened) the reference reads."""
    n, h, hk, d, pos0, w = p["n"], p["h"], p["hk"], p["d"], p["pos0"], p["window"]
    end = pos0 + n
    first = max(0, pos0 + 1 - w) if w else 0
    q = rng.uniform(-1, 1, n * h * d).astype(np.float32)
    k_pos = rng.uniform(-1, 1, (end, hk, d)).astype(np.float32)
    v_pos = rng.uniform(-1, 1, (end, hk, d)).astype(np.float32)
    k_raw, k_wide = encode(kv, k_pos)
    v_raw, v_wide = encode(kv, v_pos)
    nan_raw = encode(kv, np.full(1, np.nan, dtype=np.float32))[0][0]
    k = np.full((stride, hk, d), nan_raw, dtype=k_raw.dtype)
    v = np.full((stride, hk, d), nan_raw, dtype=v_raw.dtype)
    for j in range(first, end):
        k[j % stride] = k_raw[j]
        v[j % stride] = v_raw[j]
    k_wide = k_wide.copy()
    v_wide = v_wide.copy()
    k_wide[:first] = np.nan
    v_wide[:first] = np.nan
    return q, k, v, k_wide, v_wide


def reference(p, q, k, v):
    """kiln-core's attention_ref in float64 over positions (k, v: [pos, hk, d])."""
    n, h, hk, d, pos0, w, scale, cap = (
        p["n"], p["h"], p["hk"], p["d"], p["pos0"], p["window"], p["scale"], p["cap"])
    group = h // hk
    q = q.reshape(n, h, d).astype(np.float64)
    k = k.astype(np.float64)
    v = v.astype(np.float64)
    out = np.zeros((n, h, d))
    for t in range(n):
        end = pos0 + t + 1
        first = max(0, end - w) if w else 0
        for hh in range(h):
            s = k[first:end, hh // group] @ q[t, hh] * scale
            if cap:
                s = cap * np.tanh(s / cap)
            e = np.exp(s - s.max())
            out[t, hh] = (e / e.sum()) @ v[first:end, hh // group]
    return out.reshape(-1)


# --- cases -----------------------------------------------------------------------


def P(n, h, hk, d, pos0, window=0, cap=0.0):
    return dict(n=n, h=h, hk=hk, d=d, pos0=pos0, window=window, cap=cap, scale=1.0 / np.sqrt(d))


def cases():
    """(name, params, kv_stride, kernel, plan or None (the launcher's), device
    positions for the _at kernels or None)."""
    c = []
    # Decode (warp decode kernel, the launcher's plan).
    for name, p, stride in [
        ("decode, ring of 6 many laps in", P(1, 1, 1, 8, 13, 6), 6),
        ("decode d256, 3000 positions in a 512-row ring", P(1, 4, 1, 256, 3000, 512), 512),
        ("decode d33 (partial rows), ring of 5", P(3, 2, 1, 33, 9, 3), 5),
        ("decode, ring of 1 row", P(1, 1, 1, 64, 777, 1), 1),
        ("decode, ring of 3 rows < 4 warps", P(2, 4, 2, 40, 20, 2), 3),
        ("decode d512 (wide instance), ring of 64", P(1, 8, 1, 512, 4000, 64), 64),
        ("decode d96, ring of 300, soft cap", P(1, 8, 2, 96, 2000, 300, 30.0), 300),
        ("decode, plain cache", P(1, 9, 3, 64, 1000), 1001),
        ("decode, plain cache, window", P(4, 9, 3, 64, 1200, 31), 1210),
        ("decode, plain cache, soft cap", P(1, 8, 2, 128, 2000, 0, 5.0), 2001),
    ]:
        c.append((name, p, stride, "decode", None, None))
        if p["d"] in DECG_HEAD_DIMS:
            c.append((name, p, stride, "decg", None, None))
    # The lane-group decode kernel on its own: every head dim, GQA groups
    # over DECG_MAX_HEADS (several head chunks), MHA, rings, windows, soft
    # caps, contexts shorter than a block's key streams, a split plan of
    # many splits (4k keys); and caches off the 16-byte alignment its
    # vector loads want (the element-by-element path).
    for name, p, stride, shift in [
        ("decg d64 SmolLM2 9/3, 1k keys", P(1, 9, 3, 64, 1023), 1024, 0),
        ("decg d64 SmolLM2 9/3, 4k keys", P(1, 9, 3, 64, 4095), 4096, 0),
        ("decg d128 32/8, 2 tokens", P(2, 32, 8, 128, 700), 702, 0),
        ("decg d256 group 8 (2 head chunks), ring of 40", P(1, 8, 1, 256, 500, 33), 40, 0),
        ("decg d64 group 8 (2 head chunks)", P(1, 8, 1, 64, 2000), 2001, 0),
        ("decg d128 group 8, 2 tokens", P(2, 8, 1, 128, 1000), 1002, 0),
        ("decg d64 MHA 16/16", P(1, 16, 16, 64, 500), 501, 0),
        ("decg d64, 3 keys (< streams)", P(1, 4, 2, 64, 2), 3, 0),
        ("decg d64, 1 key", P(1, 9, 3, 64, 0), 7, 0),
        ("decg d128, 4 tokens, window 5, ring of 8", P(4, 6, 1, 128, 90, 5), 8, 0),
        ("decg d256, 4 tokens, window 5", P(4, 6, 1, 256, 90, 5), 96, 0),
        ("decg d64 group 7, soft cap, ring of 17", P(3, 7, 1, 64, 1000, 15, 20.0), 17, 0),
        ("decg d256 soft cap", P(1, 8, 1, 256, 700, 0, 30.0), 701, 0),
        ("decg d64, 4 tokens, soft cap, window", P(4, 9, 3, 64, 900, 40, 5.0), 905, 0),
        ("decg d64 cache shifted by 1", P(1, 9, 3, 64, 1000), 1001, 1),
        ("decg d128 ring of 101 shifted by 1", P(2, 32, 8, 128, 3000, 100), 101, 1),
        ("decg d256 cache shifted by 4, soft cap", P(1, 8, 1, 256, 300, 0, 20.0), 301, 4),
    ]:
        c.append((name, p, stride, "decg", None, None, shift))
    # Forced plans on a ring (decode kernel and split kernel).
    p = P(2, 9, 3, 64, 3000, 100)
    span = key_span(p)
    one = dict(splits=1, chunk=-(-span // 32) * 32, hb=3, key_tile=32)
    most = dict(splits=-(-span // 32), chunk=32, hb=3, key_tile=32)
    narrow = dict(splits=-(-span // 16), chunk=16, hb=1, key_tile=16)
    for plan_name, plan in [("one split", one), ("32-key splits", most), ("one head per block", narrow)]:
        c.append((f"decode ring of 101, {plan_name}", p, 101, "decode", plan, None))
        c.append((f"decg ring of 101, {plan_name}", p, 101, "decg", dict(plan, key_tile=16), None))
        if plan is narrow:
            two = dict(plan, hb=2, key_tile=16)  # head chunks of 2 + 1
            c.append(("decg ring of 101, two heads per block", p, 101, "decg", two, None))
        pp = dict(p, n=6)  # the split kernel: more than 4 queries
        sp = key_span(pp)
        plan = dict(plan, splits=-(-sp // plan["chunk"]))
        if plan["splits"] == 1:
            plan["chunk"] = -(-sp // plan["key_tile"]) * plan["key_tile"]
        c.append((f"split prefill ring of 105, {plan_name}", pp, 105, "split", plan, None))
    # Split-KV prefill (head dims the tiled kernel lacks), the launcher's plan.
    for name, p, stride in [
        ("split prefill d256, 64 tokens in a 575-row ring", P(64, 4, 1, 256, 1000, 512), 575),
        ("split prefill d48, ring of 13", P(9, 2, 1, 48, 50, 5), 13),
        ("split prefill d48, plain cache", P(40, 6, 3, 48, 200), 249),
        ("split prefill d48, ring of 50, soft cap", P(20, 6, 3, 48, 700, 31, 3.0), 50),
    ]:
        c.append((name, p, stride, "split", None, None))
    # Tiled prefill, every head_dim.
    for name, p, stride in [
        ("tiled d64, ring of 85", P(70, 9, 3, 64, 200, 16), 85),
        ("tiled d128, ring of 139", P(100, 8, 2, 128, 3000, 40), 139),
        ("tiled d80, ring of 144", P(45, 10, 2, 80, 517, 100), 144),
        ("tiled d96, window 1, ring of 33", P(33, 4, 4, 96, 40, 1), 33),
        ("tiled d64, ring of 24 (< a tile)", P(20, 2, 1, 64, 100, 5), 24),
        ("tiled d128, ring of 71, soft cap", P(40, 4, 2, 128, 900, 32, 20.0), 71),
        ("tiled d64, ring not yet full", P(30, 4, 2, 64, 10, 50), 100),
        ("tiled d64, plain cache", P(77, 9, 3, 64, 1000), 1090),
    ]:
        c.append((name, p, stride, "tiled", None, None))
    # _at kernels: planned for the largest position, run at device positions
    # below it, at it, past it (clamped) and negative (clamped to 0).
    for name, p, stride, kernel, devs in [
        ("decode_at d128, ring of 512", P(1, 8, 1, 128, 5000, 512), 512, "decode",
         [5000, 4321, 511, 100, 0, 9999, -3]),
        ("decode_at, plain cache", P(2, 4, 2, 40, 331, 0), 333, "decode", [0, 1, 33, 165, 331]),
        ("decode_at, plain cache, window", P(1, 9, 3, 64, 999, 31), 1000, "decode", [0, 31, 32, 500, 999]),
        ("decg_at d128, ring of 512", P(1, 8, 1, 128, 5000, 512), 512, "decg",
         [5000, 4321, 511, 100, 0, 9999, -3]),
        ("decg_at d64, plain cache, window", P(1, 9, 3, 64, 999, 31), 1000, "decg", [0, 31, 32, 500, 999]),
        ("decg_at d256, plain cache", P(2, 4, 2, 256, 331, 0), 333, "decg", [0, 1, 33, 165, 331]),
        ("split_at d32, ring of 13", P(6, 2, 1, 32, 300, 8), 13, "split", [300, 250, 3, 0]),
        ("split_at d32, ring of 65 (3 splits)", P(6, 2, 1, 32, 300, 60), 65, "split", [300, 271, 64, 7]),
        ("decg_at d64 SmolLM2 9/3, ring of 48", P(1, 9, 3, 64, 999, 48), 48, "decg", [0, 1, 47, 48, 53, 999]),
    ]:
        c.append((name, p, stride, kernel, None, devs))
    # (name, params, kv_stride, kernel, plan, device positions, cache shift)
    return [x if len(x) == 7 else x + (0,) for x in c]


def main() -> int:
    rng = np.random.default_rng(SEED)
    bad = total = 0
    with tempfile.TemporaryDirectory() as tmp:
        t = pathlib.Path(tmp)
        exes = {}
        for kv in (0, 1, 2):
            (t / f"emu{kv}.cpp").write_text(kernel_source(kv))
            cc = subprocess.run(
                ["g++", "-std=c++20", "-O1", "-g", "-w", "-fsanitize=address,undefined", "-pthread",
                 "-I", str(ROOT / "scripts"), "-o", str(t / f"emu{kv}"), str(t / f"emu{kv}.cpp")],
                capture_output=True, text=True)
            if cc.returncode != 0:
                print(cc.stderr[-6000:])
                return 2
            exes[kv] = t / f"emu{kv}"
        only = os.environ.get("CHECK_ONLY", "")
        for ci, (name, p, stride, kernel, plan, devs, shift) in enumerate(cases()):
            if only not in name and only != kernel:
                continue
            assert p["pos0"] + p["n"] <= stride or (p["window"] and p["window"] + p["n"] - 1 <= stride)
            plan = plan or (decg_plan(p) if kernel == "decg" else split_kv_plan(p))
            assert plan["splits"] * plan["chunk"] >= key_span(p)
            # One cache type per case; the lane-group kernel (its loads
            # differ per type) on all three.
            kvs = (0, 1, 2) if kernel == "decg" else (ci % 3,)
            for kv, dev in ((kv, dev) for kv in kvs for dev in (devs if devs is not None else [None])):
                eff = p if dev is None else dict(p, pos0=min(max(dev, 0), p["pos0"]))
                q, k, v, k_wide, v_wide = inputs(rng, eff, stride, kv)
                want = reference(eff, q, k_wide, v_wide)
                q.tofile(t / "q")
                k.tofile(t / "k")
                v.tofile(t / "v")
                d = p["d"]
                size = {"decode": next(l for l in DEC_DPLS if l >= -(-d // 32)), "split": 0, "tiled": d,
                        "decg": d}[kernel]
                if kernel == "tiled":
                    plan_args = [1, 0, 0, 0]
                else:
                    plan_args = [plan["splits"], plan["chunk"], plan["hb"], plan["key_tile"]]
                log2e = 1.4426950408889634
                scale_log2 = p["scale"] / p["cap"] if p["cap"] else p["scale"] * log2e
                cap_log2 = p["cap"] * log2e if p["cap"] else 0.0
                args = [str(t), kernel, int(dev is not None), size, p["n"], p["h"], p["hk"], d, p["pos0"],
                        *plan_args, repr(float(np.float32(scale_log2))), kernel_window(p),
                        repr(float(np.float32(cap_log2))), stride, dev or 0, SEED + ci, shift]
                run = subprocess.run([str(exes[kv]), *map(str, args)], capture_output=True, text=True,
                                     timeout=900)
                label = f"{name} [{['f32', 'f16', 'bf16'][kv]}, {kernel}"
                label += f" splits={plan['splits']} chunk={plan['chunk']} hb={plan['hb']}]" if kernel != "tiled" else "]"
                if dev is not None:
                    label += f" device pos {dev}"
                if shift:
                    label += f" cache shift {shift}"
                total += 1
                if run.returncode != 0:
                    print(f"FAIL {label}: rc {run.returncode}\n{run.stdout}{run.stderr[-3000:]}")
                    bad += 1
                    continue
                got = np.fromfile(t / "out", dtype=np.float32).astype(np.float64)
                err = np.abs(got - want)
                nmse = float(np.sum((got - want) ** 2) / np.sum(want ** 2))
                ok = not np.isnan(got).any() and err.max() <= MAX_ABS and nmse <= NMSE
                print(f"{'ok  ' if ok else 'FAIL'} {label}: max abs err {err.max():.2e}, nmse {nmse:.1e}")
                bad += not ok
    print(f"seed {SEED}: {total - bad}/{total} runs ok")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
