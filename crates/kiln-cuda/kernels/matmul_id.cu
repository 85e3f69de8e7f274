// matmul_id: the expert-routed mat-vec of mixture-of-experts layers
// (reference kiln-core ops/matmul_id.rs): for output row r = t * top_k + s,
// e = ids[r], out[r, j] = dot(w_e[j], x_row(r)), x_row(r) = r (x per slot)
// or r / top_k (x per token); expert e's rows start e * expert_stride bytes
// into w. Both paths use the dense mat-vec's tiling and block decoders
// (matvec.cuh, decode_kq.cuh): one CTA = 4 warps on pairs of weight rows of
// one expert, blockIdx.x the pair group.
//
// - mul_mv_id_<w>_f32 (decode): every output row is its own mat-vec
//   (M = 1): blockIdx.y = output row r0 + blockIdx.y (the host launches
//   chunks of at most 65535 rows).
// - mm_id_plan + mul_mm_id_<w>_f32 (prefill): the plan kernel (one block)
//   buckets the output rows by expert, in row order (ids >= n_experts into
//   one extra bucket), and cuts each bucket into chunks of up to 8 rows;
//   blockIdx.y of the mat-vec is a chunk, whose rows share each weight read
//   (M = 8, the dense mat-vec's m8 loop with gathered x rows). CTAs past
//   the plan's chunk count exit.
//
// - mul_mv_id_swiglu_<w>_f32 (decode, the expert FFN's first half): as
//   mul_mv_id with two stacks of the same layout, gate and up, routed by the
//   same ids; the CTA reduces both rows of each column and stores
//   silu(gate) * up, so the pair is one launch and the intermediates never
//   reach memory.
//
// - mul_mv_id_tile_<w>_f32 / mul_mv_id_swiglu_tile_<w>_f32 (decode,
//   quantized GGML formats; matvec_tile.cuh): the same products with one
//   CTA per (tile of p.tile_rows consecutive weight rows, output row):
//   grid (ceil(n / tile_rows), rows), dynamic shared memory p.tile_slot
//   per stack. The CTA requests its tile of each stack at once (gate and up
//   as two cp.async groups, so gate is decoded while up still lands), then
//   its 4 warps take row pairs of the tile; the gated path keeps silu's
//   inputs in shared memory between the two passes. The tiles decode to
//   floats (FloatTile); mul_mv_id[_swiglu]_q8tile_<w>_f32 (Q4_0, Q4_1,
//   Q8_0, Q4_K, Q5_K, Q6_K; opt-in) take int8 activations instead (Q8Tile:
//   x quantized per 32 by each CTA while its tile lands, dp4a dot products).
//
// An id >= n_experts, which the host did not check, turns the CTA's part of
// its row into NaN and reads no weights.
//
// MLX affine weights (mlx.cuh): one module per format, compiled on first use
// with the format's KILN_MLX_* defines, holding only mul_mv_id_mlx_<tag>_f32,
// mul_mm_id_mlx_<tag>_f32 and mul_mv_id_swiglu_mlx_<tag>_f32; the grouped path's plan comes from the base
// module's mm_id_plan (it does not depend on the format).
#include "common.cuh"
#include "matvec.cuh"
#include "decode_kq.cuh"
#include "decode_iq.cuh"
#include "matvec_staged.cuh"
#include "matvec_tile.cuh"
#include "mlx.cuh"

// Rows per mm_id chunk.
#define MM_ID_ROWS 8

struct MatmulIdParams {
    u64 n;              // rows of each expert matrix = columns of out
    u64 k;              // row length
    u64 row_bytes;      // bytes of one weight row
    u64 kw;             // warps per row pair (quantized 1, 2 or 4; float 4)
    u64 expert_stride;  // bytes from one expert matrix to the next
    u64 n_experts;
    u64 top_k;
    u64 rows;           // n_tokens * top_k
    u64 r0;             // mv_id: first output row of this launch
    u64 x_per_slot;     // 1: x has one row per output row, 0: one per token
    u64 cw;             // quantized: staged copy width (matvec_staged.cuh), 0 = direct loads
    u64 tile_rows;      // mv_id tile kernels: weight rows per CTA (even, <= TILE_MAX_ROWS)
    u64 tile_slot;      // mv_id tile kernels: shared bytes per stack (>= tile_rows * row_bytes + 16)
    u64 tile_xq;        // mv_id tile kernels: shared bytes after the stacks (Q8Tile: tile_xq_bytes(k))
};

__device__ __forceinline__ u64 id_x_row(const MatmulIdParams& p, u64 r) {
    return p.x_per_slot ? r : r / p.top_k;
}

// The mm_id plan in one u32 buffer: [0] chunk count, then off[n_experts + 2]
// (bucket b's rows are list[off[b] .. off[b + 1]]), list[rows], and per
// chunk (bucket, first list index).
struct IdPlan {
    u32* count;
    u32* off;
    u32* list;
    u32* table;
};
__device__ __forceinline__ IdPlan id_plan(const MatmulIdParams& p, u32* plan) {
    IdPlan q;
    q.count = plan;
    q.off = plan + 1;
    q.list = q.off + p.n_experts + 2;
    q.table = q.list + p.rows;
    return q;
}

// Column j of out that thread t stores (t < pairs * MV_ROWS), as in mv_reduce's layout.
__device__ __forceinline__ u64 mv_id_col(int pairs, int t) {
    return ((u64)blockIdx.x * pairs + t / MV_ROWS) * MV_ROWS + (u64)(t % MV_ROWS);
}

// One output row: expert and x row from ids, the accumulation loop `acc_fn`
// (a matvec.cuh mv_*_acc over one expert matrix), reduce, store. GATED (the
// expert FFN's first half): a second matrix wu, accumulated from the same x
// before either reduction, and out = silu(w . x) * (wu . x). Every test below
// is block-uniform, so the early returns keep __syncthreads safe.
template <bool GATED, class AccFn>
__device__ __forceinline__ void mv_id_row(const MatmulIdParams& p, const u8* __restrict__ w,
                                          const u8* __restrict__ wu,
                                          const float* __restrict__ x,
                                          const u32* __restrict__ ids,
                                          float* __restrict__ out, int kw, AccFn acc_fn) {
    kiln_pdl_enter();  // the ids and x come from the previous kernels
    const u64 r = p.r0 + blockIdx.y;
    if (r >= p.rows) return;
    const int t = threadIdx.x, pairs = MV_WARPS / kw;
    float* orow = out + r * p.n;
    const u64 e = ids[r];
    if (e >= p.n_experts) {
        if (t < pairs * MV_ROWS) {
            const u64 j = mv_id_col(pairs, t);
            if (j < p.n) orow[j] = __int_as_float(0x7fc00000);
        }
        return;
    }
    const u64 off = e * p.expert_stride;
    const float* xrow = x + id_x_row(p, r) * p.k;
    const MvShape sh = {p.n, p.k, p.row_bytes, kw, false, (int)p.cw};
    float acc[1][MV_ROWS], acc_u[1][MV_ROWS];
    auto pro = [&](const float* (&xr)[1]) { xr[0] = xrow; };
    acc_fn.template operator()<1>(sh, w + off, pro, acc);
    if constexpr (GATED) acc_fn.template operator()<1>(sh, wu + off, pro, acc_u);
    __shared__ float part[MV_WARPS][MV_ROWS], part_u[MV_WARPS][MV_ROWS];
    mv_reduce<1>(acc, kw, part);
    if constexpr (GATED) mv_reduce<1>(acc_u, kw, part_u);
    if (t < pairs * MV_ROWS) {
        const u64 j = mv_id_col(pairs, t);
        const float v = part[t / MV_ROWS][t % MV_ROWS];
        if (j < p.n) orow[j] = GATED ? kiln_silu(v) * part_u[t / MV_ROWS][t % MV_ROWS] : v;
    }
}

// One chunk of up to MM_ID_ROWS rows of one bucket (see the header).
// Block-uniform tests only, as in mv_id_row.
template <class AccFn>
__device__ __forceinline__ void mm_id(const MatmulIdParams& p, const u8* __restrict__ w,
                                      const float* __restrict__ x, const u32* __restrict__ plan,
                                      float* __restrict__ out, int kw, AccFn acc_fn) {
    const IdPlan q = id_plan(p, (u32*)plan);
    const u64 c = blockIdx.y;
    if (c >= *q.count) return;
    const u64 b = q.table[2 * c], s = q.table[2 * c + 1];
    const int len = (int)min((u64)MM_ID_ROWS, (u64)q.off[b + 1] - s);
    const int t = threadIdx.x, pairs = MV_WARPS / kw;
    const u32* rows = q.list + s;
    if (b >= p.n_experts) {
        for (int i = t; i < pairs * MV_ROWS * len; i += blockDim.x) {
            const u64 j = mv_id_col(pairs, i % (pairs * MV_ROWS));
            if (j < p.n) out[(u64)rows[i / (pairs * MV_ROWS)] * p.n + j] = __int_as_float(0x7fc00000);
        }
        return;
    }
    const u8* we = w + b * p.expert_stride;
    const MvShape sh = {p.n, p.k, p.row_bytes, kw, false, (int)p.cw};
    float acc[MM_ID_ROWS][MV_ROWS];
    auto pro = [&](const float* (&xr)[MM_ID_ROWS]) {
#pragma unroll
        for (int r = 0; r < MM_ID_ROWS; r++) xr[r] = x + id_x_row(p, rows[min(r, len - 1)]) * p.k;
    };
    acc_fn.template operator()<MM_ID_ROWS>(sh, we, pro, acc);
    __shared__ float part[MV_WARPS][MM_ID_ROWS * MV_ROWS];
    mv_reduce<MM_ID_ROWS>(acc, kw, part);
    if (t < pairs * MM_ID_ROWS * MV_ROWS) {
        const int pair = t / (MM_ID_ROWS * MV_ROWS), idx = t % (MM_ID_ROWS * MV_ROWS);
        const int r = idx / MV_ROWS;
        const u64 j = ((u64)blockIdx.x * pairs + pair) * MV_ROWS + (u64)(idx % MV_ROWS);
        if (r < len && j < p.n) out[(u64)rows[r] * p.n + j] = part[pair][idx];
    }
}


// One tile CTA of the mv_id tile kernels (see the header). T: FloatTile or
// Q8Tile (matvec_tile.cuh; Q8Tile quantizes x into the shared bytes after
// the stacks while they land). Block-uniform early returns only (the
// barriers follow them).
template <class T, bool GATED>
__device__ __forceinline__ void mv_id_tile(const MatmulIdParams& p, const u8* __restrict__ w,
                                           const u8* __restrict__ wu, const float* __restrict__ x,
                                           const u32* __restrict__ ids, float* __restrict__ out) {
    extern __shared__ __align__(16) u8 tile_smem[];
    __shared__ float gate[TILE_MAX_ROWS];
    kiln_pdl_enter();  // the ids (which tile to fetch) and x come from the previous kernels
    const u64 r = p.r0 + blockIdx.y;
    const u64 j0 = (u64)blockIdx.x * p.tile_rows;
    if (r >= p.rows || j0 >= p.n) return;
    const int nr = (int)min(p.tile_rows, p.n - j0);
    float* orow = out + r * p.n + j0;
    const u64 e = ids[r];
    if (e >= p.n_experts) {
        for (int i = threadIdx.x; i < nr; i += blockDim.x) orow[i] = __int_as_float(0x7fc00000);
        return;
    }
    const u64 off = e * p.expert_stride + j0 * p.row_bytes, len = (u64)nr * p.row_bytes;
    const u32 lead = tile_request(tile_smem, w + off, len);
    stage_commit();
    u32 lead_u = 0;
    if constexpr (GATED) lead_u = tile_request(tile_smem + p.tile_slot, wu + off, len);
    stage_commit();
    const float* xrow = x + id_x_row(p, r) * p.k;
    u8* area = tile_smem + (GATED ? 2 : 1) * p.tile_slot;
    if constexpr (T::XQ) tile_quantize_x(xrow, p.k, area);
    stage_wait<1>();
    __syncthreads();
    if constexpr (GATED) {
        T::rows(tile_smem + lead, p.row_bytes, nr, p.k, xrow, area, [&](int i, float v) { gate[i] = v; });
        stage_wait<0>();
        __syncthreads();
        // Row i's gate value was stored by this same lane (same pair mapping).
        T::rows(tile_smem + p.tile_slot + lead_u, p.row_bytes, nr, p.k, xrow, area,
                [&](int i, float v) { orow[i] = kiln_silu(gate[i]) * v; });
    } else {
        T::rows(tile_smem + lead, p.row_bytes, nr, p.k, xrow, area, [&](int i, float v) { orow[i] = v; });
    }
}

#ifndef KILN_MLX_BITS
// Bucket of every row of ids tile [r0, r0 + n) into tile (shared).
#define MM_PLAN_TILE 4096
__device__ __forceinline__ void mm_plan_tile(const MatmulIdParams& p, const u32* __restrict__ ids,
                                             u64 r0, u64 n, u32* tile) {
    for (u64 i = threadIdx.x; i < n; i += blockDim.x)
        tile[i] = (u32)min((u64)ids[r0 + i], p.n_experts);
}

// ids: [rows]; plan: see IdPlan, room for 1 + (n_experts + 2) + rows +
// 2 * (ceil(rows / 8) + n_experts + 1) words. One block; thread b of a pass
// counts, then lists, bucket b's rows, scanning the ids through shared
// memory a tile at a time (rows in order, so the plan is deterministic).
extern "C" __global__ void mm_id_plan(MatmulIdParams p, const u32* __restrict__ ids,
                                      u32* __restrict__ plan) {
    __shared__ u32 tile[MM_PLAN_TILE];
    const IdPlan q = id_plan(p, plan);
    const u64 nb = p.n_experts + 1;  // the last bucket holds bad ids
    for (u64 b0 = 0; b0 < nb; b0 += blockDim.x) {
        const u64 b = b0 + threadIdx.x;
        u32 n = 0;
        for (u64 r0 = 0; r0 < p.rows; r0 += MM_PLAN_TILE) {
            const u64 len = min((u64)MM_PLAN_TILE, p.rows - r0);
            mm_plan_tile(p, ids, r0, len, tile);
            __syncthreads();
            if (b < nb)
                for (u64 i = 0; i < len; i++) n += tile[i] == b;
            __syncthreads();
        }
        if (b < nb) q.off[b + 1] = n;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        q.off[0] = 0;
        u32 c = 0;
        for (u64 b = 0; b < nb; b++) {
            q.off[b + 1] += q.off[b];
            for (u32 s = q.off[b]; s < q.off[b + 1]; s += MM_ID_ROWS) {
                q.table[2 * c] = (u32)b;
                q.table[2 * c + 1] = s;
                c++;
            }
        }
        *q.count = c;
    }
    __syncthreads();
    for (u64 b0 = 0; b0 < nb; b0 += blockDim.x) {
        const u64 b = b0 + threadIdx.x;
        u32 at = b < nb ? q.off[b] : 0;
        for (u64 r0 = 0; r0 < p.rows; r0 += MM_PLAN_TILE) {
            const u64 len = min((u64)MM_PLAN_TILE, p.rows - r0);
            mm_plan_tile(p, ids, r0, len, tile);
            __syncthreads();
            if (b < nb)
                for (u64 i = 0; i < len; i++)
                    if (tile[i] == b) q.list[at++] = (u32)(r0 + i);
            __syncthreads();
        }
    }
}

#endif  // KILN_MLX_BITS

// The accumulation loops of matvec.cuh as functors (the template argument
// of mv_id): block formats (B = FlatBlocks: 32-element blocks, SubBlocks:
// decode_kq.cuh's sub-block formats), their rows loaded directly or, with
// sh.cw != 0, staged through shared memory (matvec_staged.cuh; the gated
// path's second matrix reuses the staging area after the first drained it).
template <class Q, class B>
struct IdBlocks {
    template <int M, class Pro>
    __device__ void operator()(const MvShape& sh, const u8* w, Pro pro,
                               float (&acc)[M][MV_ROWS]) const {
        if (sh.cw != 0) {
            __shared__ __align__(16) u8 stage[StagePlan<Q, B>::BYTES];
            mv_staged_acc<Q, B, M>(sh, w, pro, acc, stage);
        } else {
            mv_blocks_acc<Q, B, M>(sh, w, pro, acc);
        }
    }
};
template <class Q>
using IdQuant = IdBlocks<Q, FlatBlocks<Q>>;
template <class Q>
using IdSub = IdBlocks<Q, SubBlocks<Q>>;
template <class F>
struct IdFloat {
    template <int M, class Pro>
    __device__ void operator()(const MvShape& sh, const u8* w, Pro pro,
                               float (&acc)[M][MV_ROWS]) const {
        mv_float_acc<F, M>(sh, w, pro, acc);
    }
};

// w: n_experts matrices [n, row_bytes] at expert_stride; x: [rows or
// n_tokens, k] (16-byte aligned for quantized w); ids: [rows]; out: [rows, n].
// Quantized: the host's kw (1, 2 or 4; anything else runs as 4).
#define MV_ID_KW (p.kw == 1 || p.kw == 2 ? (int)p.kw : MV_WARPS)
// plan: mm_id_plan's output for these ids.
#define MV_ID_ENTRY(fmt, acc, KW)                                                              \
    extern "C" __global__ void __launch_bounds__(MV_THREADS)                                   \
        mul_mv_id_##fmt##_f32(MatmulIdParams p, const u8* __restrict__ w,                      \
                              const float* __restrict__ x, const u32* __restrict__ ids,        \
                              float* __restrict__ out) {                                       \
        mv_id_row<false>(p, w, nullptr, x, ids, out, KW, acc());                               \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(MV_THREADS)                                   \
        mul_mm_id_##fmt##_f32(MatmulIdParams p, const u8* __restrict__ w,                      \
                              const float* __restrict__ x, const u32* __restrict__ plan,       \
                              float* __restrict__ out) {                                       \
        mm_id(p, w, x, plan, out, KW, acc());                                                  \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(MV_THREADS) mul_mv_id_swiglu_##fmt##_f32(     \
        MatmulIdParams p, const u8* __restrict__ wg, const u8* __restrict__ wu,                \
        const float* __restrict__ x, const u32* __restrict__ ids, float* __restrict__ out) {   \
        mv_id_row<true>(p, wg, wu, x, ids, out, KW, acc());                                    \
    }

#ifndef KILN_MLX_BITS
MV_ID_ENTRY(q4_0, IdQuant<Q4_0T>, MV_ID_KW)
MV_ID_ENTRY(q4_1, IdQuant<Q4_1T>, MV_ID_KW)
MV_ID_ENTRY(q8_0, IdQuant<Q8_0T>, MV_ID_KW)
MV_ID_ENTRY(q5_0, IdSub<Q5_0T>, MV_ID_KW)
MV_ID_ENTRY(q5_1, IdSub<Q5_1T>, MV_ID_KW)
MV_ID_ENTRY(iq4_nl, IdSub<IQ4_NLT>, MV_ID_KW)
MV_ID_ENTRY(q4_K, IdSub<Q4_KT>, MV_ID_KW)
MV_ID_ENTRY(q5_K, IdSub<Q5_KT>, MV_ID_KW)
MV_ID_ENTRY(q6_K, IdSub<Q6_KT>, MV_ID_KW)
MV_ID_ENTRY(iq4_xs, IdSub<IQ4_XST>, MV_ID_KW)
MV_ID_ENTRY(q3_K, IdSub<Q3_KT>, MV_ID_KW)
MV_ID_ENTRY(q2_K, IdSub<Q2_KT>, MV_ID_KW)
MV_ID_ENTRY(iq2_xxs, IdSub<IQ2_XXST>, MV_ID_KW)
MV_ID_ENTRY(iq2_xs, IdSub<IQ2_XST>, MV_ID_KW)
MV_ID_ENTRY(iq3_xxs, IdSub<IQ3_XXST>, MV_ID_KW)
MV_ID_ENTRY(iq3_s, IdSub<IQ3_ST>, MV_ID_KW)
MV_ID_ENTRY(f32, IdFloat<F32T>, MV_WARPS)
MV_ID_ENTRY(f16, IdFloat<F16T>, MV_WARPS)
MV_ID_ENTRY(bf16, IdFloat<BF16T>, MV_WARPS)

// The tile kernels of the quantized GGML formats (w, wg, wu 16-byte aligned;
// dynamic shared memory p.tile_slot per stack, then tile_xq_bytes(k) for a
// Q8Tile); T: the tile policy. KIND tile: float activations (FloatTile),
// every format; KIND q8tile: int8 activations (Q8Tile), the formats with a
// Q8 dot unit (opt-in on the host until measured on a GPU).
#define MV_ID_TILE_ENTRY(KIND, fmt, T)                                                          \
    extern "C" __global__ void __launch_bounds__(MV_THREADS)                                   \
        mul_mv_id_##KIND##_##fmt##_f32(MatmulIdParams p, const u8* __restrict__ w,             \
                                       const float* __restrict__ x,                            \
                                       const u32* __restrict__ ids, float* __restrict__ out) { \
        mv_id_tile<T, false>(p, w, nullptr, x, ids, out);                                      \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(MV_THREADS)                                   \
        mul_mv_id_swiglu_##KIND##_##fmt##_f32(                                                 \
            MatmulIdParams p, const u8* __restrict__ wg, const u8* __restrict__ wu,            \
            const float* __restrict__ x, const u32* __restrict__ ids, float* __restrict__ out) { \
        mv_id_tile<T, true>(p, wg, wu, x, ids, out);                                           \
    }
#define MV_ID_FLOAT_TILE(fmt, Q, B) \
    using FloatTile_##fmt = FloatTile<Q, B>; \
    MV_ID_TILE_ENTRY(tile, fmt, FloatTile_##fmt)
MV_ID_FLOAT_TILE(q4_0, Q4_0T, FlatBlocks<Q4_0T>)
MV_ID_FLOAT_TILE(q4_1, Q4_1T, FlatBlocks<Q4_1T>)
MV_ID_FLOAT_TILE(q8_0, Q8_0T, FlatBlocks<Q8_0T>)
MV_ID_FLOAT_TILE(q5_0, Q5_0T, SubBlocks<Q5_0T>)
MV_ID_FLOAT_TILE(q5_1, Q5_1T, SubBlocks<Q5_1T>)
MV_ID_FLOAT_TILE(iq4_nl, IQ4_NLT, SubBlocks<IQ4_NLT>)
MV_ID_FLOAT_TILE(q4_K, Q4_KT, SubBlocks<Q4_KT>)
MV_ID_FLOAT_TILE(q5_K, Q5_KT, SubBlocks<Q5_KT>)
MV_ID_FLOAT_TILE(q6_K, Q6_KT, SubBlocks<Q6_KT>)
MV_ID_FLOAT_TILE(iq4_xs, IQ4_XST, SubBlocks<IQ4_XST>)
MV_ID_FLOAT_TILE(q3_K, Q3_KT, SubBlocks<Q3_KT>)
MV_ID_FLOAT_TILE(q2_K, Q2_KT, SubBlocks<Q2_KT>)
MV_ID_FLOAT_TILE(iq2_xxs, IQ2_XXST, SubBlocks<IQ2_XXST>)
MV_ID_FLOAT_TILE(iq2_xs, IQ2_XST, SubBlocks<IQ2_XST>)
MV_ID_FLOAT_TILE(iq3_xxs, IQ3_XXST, SubBlocks<IQ3_XXST>)
MV_ID_FLOAT_TILE(iq3_s, IQ3_ST, SubBlocks<IQ3_ST>)
using Q8Tile_q4_0 = Q8Tile<Q4Dot<false>>;
using Q8Tile_q4_1 = Q8Tile<Q4Dot<true>>;
using Q8Tile_q8_0 = Q8Tile<Q8_0Dot>;
using Q8Tile_q4_K = Q8Tile<Q4_KDot>;
using Q8Tile_q5_K = Q8Tile<Q5_KDot>;
using Q8Tile_q6_K = Q8Tile<Q6_KDot>;
MV_ID_TILE_ENTRY(q8tile, q4_0, Q8Tile_q4_0)
MV_ID_TILE_ENTRY(q8tile, q4_1, Q8Tile_q4_1)
MV_ID_TILE_ENTRY(q8tile, q8_0, Q8Tile_q8_0)
MV_ID_TILE_ENTRY(q8tile, q4_K, Q8Tile_q4_K)
MV_ID_TILE_ENTRY(q8tile, q5_K, Q8Tile_q5_K)
MV_ID_TILE_ENTRY(q8tile, q6_K, Q8Tile_q6_K)
#else
extern "C" __global__ void __launch_bounds__(MV_THREADS)
    KILN_MLX_NAME(mul_mv_id_mlx_, _f32)(MatmulIdParams p, const u8* __restrict__ w,
                                        const float* __restrict__ x, const u32* __restrict__ ids,
                                        float* __restrict__ out) {
    mv_id_row<false>(p, w, nullptr, x, ids, out, MV_ID_KW, IdSub<MlxFmt>());
}
extern "C" __global__ void __launch_bounds__(MV_THREADS)
    KILN_MLX_NAME(mul_mm_id_mlx_, _f32)(MatmulIdParams p, const u8* __restrict__ w,
                                        const float* __restrict__ x, const u32* __restrict__ plan,
                                        float* __restrict__ out) {
    mm_id(p, w, x, plan, out, MV_ID_KW, IdSub<MlxFmt>());
}
extern "C" __global__ void __launch_bounds__(MV_THREADS)
    KILN_MLX_NAME(mul_mv_id_swiglu_mlx_, _f32)(MatmulIdParams p, const u8* __restrict__ wg,
                                               const u8* __restrict__ wu,
                                               const float* __restrict__ x,
                                               const u32* __restrict__ ids,
                                               float* __restrict__ out) {
    mv_id_row<true>(p, wg, wu, x, ids, out, MV_ID_KW, IdSub<MlxFmt>());
}
#endif  // KILN_MLX_BITS
