// matvec_fused: the decode mat-vec with its neighbours folded in
// (reference kiln-core ops/matvec_fused.rs): an optional RMSNorm of the
// input rows before the product and one epilogue on each pair of output
// columns (2j, 2j + 1), which one thread of the CTA owns after the
// reduction:
// - EPI_STORE:    out[i, j] = y[i, j]
// - EPI_RESIDUAL: out[i, j] = res[i, j] + y[i, j]
// - EPI_SWIGLU:   w = [gate; up] (n / 2 rows each): out[i, j] =
//                 silu(y[i, j]) * y[i, j + n / 2], out: [m, n / 2]; the CTA's
//                 row pairs are (j, j + n / 2) instead of (2j, 2j + 1)
// - EPI_QKV:      y = [q | k | v] (n = q_dim + 2 kv_dim); normal-mode RoPE at
//                 position pos[i] on q and k pairs (2p, 2p + 1) below n_rot
//                 of each head; q -> out[i, :q_dim], k and v -> row pos[i] of
//                 the caches kc, vc: [n_ctx, kv_dim] (rows past n_ctx are
//                 dropped; the host checks positions before launching), or
//                 with p.ring (a sliding-window ring cache) row pos[i] % n_ctx,
//                 f32 or, by kv_type, f16 / bf16 bits rounded to nearest
//                 even as the KV append (copy_rows.cu) rounds them.
// Tiling, block decoding and accumulation are matmul.cu's (matvec.cuh).
#include "common.cuh"
#include "matvec.cuh"
#include "decode_kq.cuh"
#include "decode_iq.cuh"
#include "matvec_staged.cuh"
#include "matvec_tile.cuh"

#define EPI_STORE 0
#define EPI_RESIDUAL 1
#define EPI_SWIGLU 2
#define EPI_QKV 3

// Mirrored by `FusedK` in src/matvec_fused.rs.
struct FusedParams {
    u64 m;          // rows of x
    u64 n;          // weight rows
    u64 k;          // row length
    u64 row_bytes;  // bytes of one weight row
    u64 kw;         // warps per row pair
    u32 norm;       // 1: x rows are RMS-normalized with norm_w first
    float eps;
    u32 epi;        // EPI_*
    u32 q_dim;      // EPI_QKV
    u32 kv_dim;
    u32 head_dim;
    u32 n_rot;
    u32 n_ctx;
    float freq_base;
    float freq_scale;
    double log2_base;  // log2(freq_base), from the host
    u64 cw;            // matmul.cu's MatmulParams::cw (staged copy width / 16-byte float loads)
    u64 stage_off;     // staged: byte offset of the staging area in dynamic shared memory
    u32 kv_type;       // EPI_QKV cache element type: KV_F32, KV_F16, KV_BF16
    u32 ring;          // EPI_QKV: 1 = the caches are rings of n_ctx rows (row pos % n_ctx)
    u64 tile_rows;     // tile kernels: weight rows per CTA and stack (even, <= TILE_MAX_ROWS)
    u64 tile_slot;     // tile kernels: shared bytes per stack (>= tile_rows * row_bytes + 16)
};

#define KV_F32 0
#define KV_F16 1
#define KV_BF16 2

__device__ __forceinline__ float fused_block_sum(float v, float* sh) {
    const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < (blockDim.x >> 5) ? sh[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    return v;
}

// Rotate the pair (a, b) at pair index ip of a head by pos, in f64 like the
// rope kernel and the reference.
__device__ __forceinline__ void fused_rope(const FusedParams& p, i32 pos, u64 ip, float& a, float& b) {
    // base^(-2 ip / n_rot) as exp2 of a product with the host's log2(base):
    // within an ulp or two of pow in f64, at a fraction of its cost.
    const double inv_freq = exp2(-2.0 * (double)ip / (double)p.n_rot * p.log2_base);
    double sn, cs;
    sincos((double)pos * (double)p.freq_scale * inv_freq, &sn, &cs);
    const double x = a, y = b;
    a = (float)(x * cs - y * sn);
    b = (float)(x * sn + y * cs);
}

// One output column pair (j0, j0 + 1) of row i.
__device__ __forceinline__ void fused_epilogue(const FusedParams& p, u64 i, u64 j0, float y0, float y1,
                                               const float* __restrict__ res,
                                               const i32* __restrict__ pos,
                                               float* __restrict__ out, void* __restrict__ kc,
                                               void* __restrict__ vc) {
    switch (p.epi) {
    case EPI_SWIGLU:
        out[i * (p.n / 2) + j0 / 2] = kiln_silu(y0) * y1;
        return;
    case EPI_QKV: {
        // 32-bit index math (the launcher checks the dims fit): 64-bit
        // division costs ~70 instructions on the critical path.
        const u32 qd = p.q_dim, kvd = p.kv_dim, jj = (u32)j0;
        const u32 seg = jj < qd ? 0u : (jj < qd + kvd ? 1u : 2u);
        const u32 c = jj - (seg == 0 ? 0u : (seg == 1 ? qd : qd + kvd));
        const i32 ps = pos[i];
        const u32 in_head = c % p.head_dim;
        if (seg < 2 && in_head < p.n_rot) fused_rope(p, ps, in_head / 2, y0, y1);
        if (seg == 0) {
            out[i * qd + c] = y0;
            out[i * qd + c + 1] = y1;
            return;
        }
        // The cache row: pos, or pos % n_ctx in a ring; always < n_ctx.
        if (ps < 0 || p.n_ctx == 0) return;
        const u32 cr = p.ring ? (u32)ps % p.n_ctx : (u32)ps;
        if (cr >= p.n_ctx) return;
        const u64 at = (u64)cr * kvd + c;
        void* cache = seg == 1 ? kc : vc;
        if (p.kv_type == KV_F32) {
            float* dst = (float*)cache + at;
            dst[0] = y0;
            dst[1] = y1;
        } else {
            u16* dst = (u16*)cache + at;
            const bool f16 = p.kv_type == KV_F16;
            dst[0] = f16 ? kiln_f32_to_f16(y0) : kiln_f32_to_bf16(y0);
            dst[1] = f16 ? kiln_f32_to_f16(y1) : kiln_f32_to_bf16(y1);
        }
        return;
    }
    default: {
        const bool add = p.epi == EPI_RESIDUAL;
        out[i * p.n + j0] = add ? res[i * p.n + j0] + y0 : y0;
        if (j0 + 1 < p.n) out[i * p.n + j0 + 1] = add ? res[i * p.n + j0 + 1] + y1 : y1;
    }
    }
}

// w: [n, row_bytes], x: [m, k] (16-byte aligned rows), norm_w: [k] or null,
// res: [m, n] or null, pos: [m] or null; dynamic shared memory: (M + 1) * k
// floats when p.norm (the normalized rows, then the staged norm weight),
// then, from byte p.stage_off (16-byte aligned), the staging area of
// matvec_staged.cuh when p.cw != 0 (quantized weights). KIND: MVF_FLOAT
// (F32T, F16T, BF16T), MVF_FLAT (the 32-element block formats of
// matvec.cuh) or MVF_SUB (decode_kq.cuh's sub-block formats).
#define MVF_FLOAT 0
#define MVF_FLAT 1
#define MVF_SUB 2
template <class Q, int KIND, int M>
__device__ __forceinline__ void matvec_fused(const FusedParams& p, const u8* __restrict__ w,
                                             const float* __restrict__ x,
                                             const float* __restrict__ norm_w,
                                             const float* __restrict__ res,
                                             const i32* __restrict__ pos, float* __restrict__ out,
                                             void* __restrict__ kc, void* __restrict__ vc) {
    extern __shared__ float xs[];
    __shared__ float red[32];
    kiln_grid_launch_dependents();
    const u64 i0 = (u64)blockIdx.y * M;
    // Runs after the first weight fetch. The norm weight (a weight: no
    // earlier kernel writes it) is staged in shared memory before waiting
    // for the previous kernel (PDL); then each x row is loaded once (two
    // float4 per thread held in registers when k <= 8 * blockDim.x: one
    // memory round trip), reduced, and written normalized to shared memory.
    // 32-bit indices (the launcher checks k fits): the prologue is on every
    // CTA's critical path.
    auto pro = [&](const float* (&xr)[M]) {
        const u32 k = (u32)p.k, tid = threadIdx.x, nt = blockDim.x;
        float* nws = xs + M * k;
        if (p.norm) {
#pragma unroll 4
            for (u32 e = tid; e < k; e += nt) nws[e] = norm_w[e];
        }
        kiln_grid_wait();
        const u32 k4 = k / 4;
        const bool vec = k % 4 == 0 && ((u64)x & 15) == 0 && k4 <= 2 * nt;
#pragma unroll
        for (int r = 0; r < M; r++) {
            const float* row = x + min(i0 + (u64)r, p.m - 1) * p.k;
            xr[r] = row;
            if (!p.norm) continue;
            float* dst = xs + (u32)r * k;
            xr[r] = dst;
            if (vec) {
                const float4 z = make_float4(0.f, 0.f, 0.f, 0.f);
                const float4* r4 = (const float4*)row;
                const bool ha = tid < k4, hb = tid + nt < k4;
                const float4 a = ha ? r4[tid] : z;
                const float4 b = hb ? r4[tid + nt] : z;
                float ss = a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w;
                ss += b.x * b.x + b.y * b.y + b.z * b.z + b.w * b.w;
                ss = fused_block_sum(ss, red);  // also orders the nws writes
                const float inv = rsqrtf(__fdiv_rn(ss, (float)k) + p.eps);
                const float4* g4 = (const float4*)nws;
                float4* d4 = (float4*)dst;
                if (ha) {
                    const float4 g = g4[tid];
                    d4[tid] = make_float4(a.x * inv * g.x, a.y * inv * g.y, a.z * inv * g.z, a.w * inv * g.w);
                }
                if (hb) {
                    const float4 g = g4[tid + nt];
                    d4[tid + nt] = make_float4(b.x * inv * g.x, b.y * inv * g.y, b.z * inv * g.z, b.w * inv * g.w);
                }
            } else {
                float ss = 0.0f;
#pragma unroll 4
                for (u32 e = tid; e < k; e += nt) ss += row[e] * row[e];
                ss = fused_block_sum(ss, red);
                const float inv = rsqrtf(__fdiv_rn(ss, (float)k) + p.eps);
#pragma unroll 4
                for (u32 e = tid; e < k; e += nt) dst[e] = row[e] * inv * nws[e];
            }
        }
        if (p.norm) __syncthreads();
    };
    float acc[M][MV_ROWS];
    const MvShape sh = {p.n, p.k, p.row_bytes, KIND != MVF_FLOAT ? (int)p.kw : MV_WARPS,
                        p.epi == EPI_SWIGLU, (int)p.cw};
    if constexpr (KIND == MVF_FLAT) {
        if (p.cw != 0) {
            mv_staged_acc<Q, FlatBlocks<Q>, M>(sh, w, pro, acc, (u8*)xs + p.stage_off);
        } else {
            mv_quant_acc<Q, M>(sh, w, pro, acc);
        }
    } else if constexpr (KIND == MVF_SUB) {
        if (p.cw != 0) {
            mv_staged_acc<Q, SubBlocks<Q>, M>(sh, w, pro, acc, (u8*)xs + p.stage_off);
        } else {
            mv_sub_acc<Q, M>(sh, w, pro, acc);
        }
    } else {
        if (p.cw != 0) {
            mv_float_vec_acc<Q, M>(sh, w, pro, acc);
        } else {
            mv_float_acc<Q, M>(sh, w, pro, acc);
        }
    }
    __shared__ float part[MV_WARPS][M * MV_ROWS];
    mv_reduce<M>(acc, sh.kw, part);
    const int t = threadIdx.x, pairs = MV_WARPS / sh.kw;
    if (t < pairs * M) {
        const int pair = t / M, r = t % M;
        const u64 i = i0 + (u64)r;
        const u64 j0 = ((u64)blockIdx.x * pairs + pair) * MV_ROWS;
        if (i < p.m && j0 < p.n)
            fused_epilogue(p, i, j0, part[pair][r * MV_ROWS], part[pair][r * MV_ROWS + 1], res, pos,
                           out, kc, vc);
    }
}

// The tile variant (m = 1; matvec_tile.cuh): CTA b holds weight rows
// [b * tile_rows, ...) of the weight (EPI_SWIGLU: of the gate half and the
// same rows of the up half, two stacks, two cp.async groups), requested in
// its first instructions; then it waits for the previous kernel (PDL),
// RMS-normalizes x into shared memory when p.norm, and (Q8Tile) quantizes
// x to int8 codes while the tile lands; its warps take row pairs from
// shared memory into vals, and the epilogue runs on the CTA's row pairs as
// in the pair kernel: (2j, 2j + 1), or (j, j + n / 2) for EPI_SWIGLU.
// Dynamic shared memory: stacks * tile_slot, then k floats when p.norm,
// then tile_xq_bytes(k) for a Q8Tile. Block-uniform early return only.
template <class T>
__device__ __forceinline__ void matvec_fused_tile(const FusedParams& p, const u8* __restrict__ w,
                                                  const float* __restrict__ x,
                                                  const float* __restrict__ norm_w,
                                                  const float* __restrict__ res,
                                                  const i32* __restrict__ pos, float* __restrict__ out,
                                                  void* __restrict__ kc, void* __restrict__ vc) {
    extern __shared__ __align__(16) u8 tile_smem[];
    __shared__ float vals[2 * TILE_MAX_ROWS];
    __shared__ float red[32];
    kiln_grid_launch_dependents();
    const bool gated = p.epi == EPI_SWIGLU;
    const u64 rows = gated ? p.n / 2 : p.n;  // rows per stack
    const u64 j0 = (u64)blockIdx.x * p.tile_rows;
    if (j0 >= rows) return;
    const int nr = (int)min(p.tile_rows, rows - j0);
    const u64 len = (u64)nr * p.row_bytes;
    // Weights before the wait: no kernel writes GGML blocks.
    const u32 lead = tile_request(tile_smem, w + j0 * p.row_bytes, len);
    stage_commit();
    u32 lead_u = 0;
    if (gated) lead_u = tile_request(tile_smem + p.tile_slot, w + (rows + j0) * p.row_bytes, len);
    stage_commit();
    u8* area = tile_smem + (gated ? 2 : 1) * p.tile_slot;
    kiln_grid_wait();
    const float* xr = x;
    if (p.norm) {
        const u32 k = (u32)p.k, tid = threadIdx.x, nt = blockDim.x;
        float* xs = (float*)area;
        float ss = 0.0f;
        for (u32 e = tid; e < k; e += nt) ss += x[e] * x[e];
        ss = fused_block_sum(ss, red);
        const float inv = rsqrtf(__fdiv_rn(ss, (float)k) + p.eps);
        for (u32 e = tid; e < k; e += nt) xs[e] = x[e] * inv * norm_w[e];
        __syncthreads();
        xr = xs;
        area += 4 * p.k;
    }
    if constexpr (T::XQ) tile_quantize_x(xr, p.k, area);
    stage_wait<1>();
    __syncthreads();
    T::rows(tile_smem + lead, p.row_bytes, nr, p.k, xr, area, [&](int i, float v) { vals[i] = v; });
    if (gated) {
        stage_wait<0>();
        __syncthreads();
        T::rows(tile_smem + p.tile_slot + lead_u, p.row_bytes, nr, p.k, xr, area,
                [&](int i, float v) { vals[TILE_MAX_ROWS + i] = v; });
    }
    __syncthreads();
    const int t = threadIdx.x;
    if (gated) {
        if (t < nr) fused_epilogue(p, 0, 2 * (j0 + (u64)t), vals[t], vals[TILE_MAX_ROWS + t], res, pos, out, kc, vc);
    } else if (2 * t < nr) {
        const float y1 = 2 * t + 1 < nr ? vals[2 * t + 1] : 0.0f;
        fused_epilogue(p, 0, j0 + 2 * (u64)t, vals[2 * t], y1, res, pos, out, kc, vc);
    }
}

#define MVF_ENTRY(name, T, KIND, M)                                                            \
    extern "C" __global__ void __launch_bounds__(MV_THREADS)                                  \
        name(FusedParams p, const u8* __restrict__ w, const float* __restrict__ x,            \
             const float* __restrict__ norm_w, const float* __restrict__ res,                 \
             const i32* __restrict__ pos, float* __restrict__ out, void* __restrict__ kc,     \
             void* __restrict__ vc) {                                                         \
        matvec_fused<T, KIND, M>(p, w, x, norm_w, res, pos, out, kc, vc);                     \
    }
#define MVF_ALL_M(prefix, T, KIND)                                                            \
    MVF_ENTRY(prefix##_m1, T, KIND, 1)                                                        \
    MVF_ENTRY(prefix##_m2, T, KIND, 2)                                                        \
    MVF_ENTRY(prefix##_m3, T, KIND, 3)                                                        \
    MVF_ENTRY(prefix##_m4, T, KIND, 4)                                                        \
    MVF_ENTRY(prefix##_m5, T, KIND, 5)                                                        \
    MVF_ENTRY(prefix##_m6, T, KIND, 6)                                                        \
    MVF_ENTRY(prefix##_m7, T, KIND, 7)                                                        \
    MVF_ENTRY(prefix##_m8, T, KIND, 8)

// One weight format per compiled variant: src/matvec_fused.rs defines
// KILN_MVF_W (the block type) and KILN_MVF_KIND, so a process compiles only
// the formats its model uses. Without them, Q4_1 (the default model's
// format; the compile test builds every format's variant by itself).
#ifndef KILN_MVF_W
#define KILN_MVF_W Q4_1T
#define KILN_MVF_KIND MVF_FLAT
#endif
MVF_ALL_M(matvec_fused, KILN_MVF_W, KILN_MVF_KIND)

#define MVF_TILE_ENTRY(name, POLICY)                                                           \
    extern "C" __global__ void __launch_bounds__(MV_THREADS)                                  \
        name(FusedParams p, const u8* __restrict__ w, const float* __restrict__ x,            \
             const float* __restrict__ norm_w, const float* __restrict__ res,                 \
             const i32* __restrict__ pos, float* __restrict__ out, void* __restrict__ kc,     \
             void* __restrict__ vc) {                                                         \
        matvec_fused_tile<POLICY>(p, w, x, norm_w, res, pos, out, kc, vc);                    \
    }
// Quantized formats: the float-activation tile; with KILN_MVF_Q8DOT (the
// formats with a Q8 dot unit, matvec_tile.cuh) also the int8 one.
#if KILN_MVF_KIND == MVF_FLAT
using MvfFloatTile = FloatTile<KILN_MVF_W, FlatBlocks<KILN_MVF_W>>;
MVF_TILE_ENTRY(matvec_fused_tile_m1, MvfFloatTile)
#elif KILN_MVF_KIND == MVF_SUB
using MvfFloatTile = FloatTile<KILN_MVF_W, SubBlocks<KILN_MVF_W>>;
MVF_TILE_ENTRY(matvec_fused_tile_m1, MvfFloatTile)
#endif
#ifdef KILN_MVF_Q8DOT
using MvfQ8Tile = Q8Tile<KILN_MVF_Q8DOT>;
MVF_TILE_ENTRY(matvec_fused_q8tile_m1, MvfQ8Tile)
#endif
