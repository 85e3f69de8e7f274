// qk_norm_rope_kv: the step between a Qwen3-style stacked QKV projection and
// attention, in one launch (reference kiln-core ops/qk_norm_rope_kv.rs):
// qkv: [n_tokens, q_dim + 2 kv_dim], token t's row [q | k | v];
// q_out: [n_tokens, q_dim] = norm_rope(q, q_norm);
// k_cache / v_cache: [rows, kv_dim], row r(t) = norm_rope(k, k_norm) / v of
// token t, stored as f32, or rounded to f16 / bf16 to nearest even (the KV
// append of copy_rows.cu, bit for bit); pos: [n_tokens] (the RoPE
// positions), factors: [n_rot / 2] or null.
// Cache rows: r(t) = base + t, or (base + t) % ring for a ring of `ring`
// rows, with base = dst_row, or in the _at kernels (a CUDA graph's
// position-independent launch) base = pos[0] clamped to [0, dst_row] (as
// copy_rows_at reads its row).
//
// Numerics: norm_rope.cuh, the same code as norm_rope.cu, so q and k carry
// the bits the unfused norm_rope launches give them.
//
// Layout: norm_rope.cu's, over the n_heads + 2 n_heads_kv head rows of a
// token (q heads, then k heads, then v heads). Block (blockIdx.x,
// blockIdx.y) = (token t, row group g) covers rows [g * rpb, min((g + 1) *
// rpb, n_rows)) of token t (rpb = rows_per_block); both indices
// grid-stride. One warp per row: a q or k row is normalized and rotated
// (nr_head) and stored to q_out or the K cache; a v row is copied (each lane
// every 32nd element) into the V cache. A block computes the token's
// angles only when its groups hold a q or k row (the condition is the same
// for every thread of the block, so the barriers stay uniform).
#include "common.cuh"
#include "norm_rope.cuh"

struct QkNormRopeKvParams {
    u64 n_tokens;
    u64 n_heads;         // q heads
    u64 n_heads_kv;      // k and v heads
    u64 head_dim;        // 1..=NR_MAX_DIM
    u64 n_rot;           // even, <= head_dim
    u64 rows_per_block;  // >= 1
    u64 dst_row;         // first cache row; _at: the largest row allowed
    u64 ring;            // ring rows, 0 = none
    float freq_base;
    float freq_scale;
    float eps;
    u32 pad;  // explicit, as in the Rust mirror
};

// Cache element stores: f32, or rounded to 16 bits.
struct QkStoreF32 {
    typedef float T;
    static __device__ __forceinline__ float cvt(float x) { return x; }
};
struct QkStoreF16 {
    typedef u16 T;
    static __device__ __forceinline__ u16 cvt(float x) { return kiln_f32_to_f16(x); }
};
struct QkStoreBF16 {
    typedef u16 T;
    static __device__ __forceinline__ u16 cvt(float x) { return kiln_f32_to_bf16(x); }
};

// blockDim.x = 32 * warps, 1 <= warps <= NR_MAX_WARPS.
template <bool NEOX, bool AT, class S>
__device__ __forceinline__ void qk_rows(const QkNormRopeKvParams& p, const float* __restrict__ qkv,
                                        const float* __restrict__ q_norm, const float* __restrict__ k_norm,
                                        const float* __restrict__ factors, const i32* __restrict__ pos,
                                        float* __restrict__ q_out, typename S::T* __restrict__ k_cache,
                                        typename S::T* __restrict__ v_cache) {
    kiln_pdl_enter();  // PDL: everything it reads or writes is the previous kernels'
    __shared__ double cos_sh[NR_MAX_DIM / 2];
    __shared__ double sin_sh[NR_MAX_DIM / 2];
    __shared__ float rows_sh[NR_MAX_WARPS][NR_MAX_DIM];
    const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    float* row = rows_sh[warp];
    const u64 dim = p.head_dim, rpb = p.rows_per_block;
    const u64 q_dim = p.n_heads * dim, kv_dim = p.n_heads_kv * dim;
    const u64 row_len = q_dim + 2 * kv_dim;
    const u64 n_qk = p.n_heads + p.n_heads_kv, n_rows = n_qk + p.n_heads_kv;
    const u64 n_groups = (n_rows + rpb - 1) / rpb;
    // This block's first group holds its lowest row: angles are needed iff it
    // is a q or k row.
    const bool rotates = (u64)blockIdx.y * rpb < n_qk;
    u64 base = p.dst_row;
    if (AT) {
        const i32 r = pos[0];
        base = r < 0 ? 0 : min((u64)r, p.dst_row);
    }
    for (u64 t = blockIdx.x; t < p.n_tokens; t += gridDim.x) {
        if (rotates) {
            if (factors != nullptr) {
                nr_angles<true>(pos[t], p.n_rot, p.freq_base, p.freq_scale, factors, cos_sh, sin_sh);
            } else {
                nr_angles<false>(pos[t], p.n_rot, p.freq_base, p.freq_scale, factors, cos_sh, sin_sh);
            }
            __syncthreads();  // the angles are read by every warp
        }
        u64 crow = base + t;
        if (p.ring != 0) crow %= p.ring;
        const float* src = qkv + t * row_len;
        for (u64 g = blockIdx.y; g < n_groups; g += gridDim.y) {
            const u64 h_end = (g + 1) * rpb < n_rows ? (g + 1) * rpb : n_rows;
            for (u64 h = g * rpb + warp; h < h_end; h += n_warps) {
                if (h < p.n_heads) {
                    float* orow = q_out + (t * p.n_heads + h) * dim;
                    nr_head<NEOX>(src + h * dim, q_norm, row, dim, p.n_rot, p.eps, cos_sh, sin_sh,
                                  [&](u64 j, float v) { orow[j] = v; });
                } else if (h < n_qk) {
                    const u64 kh = h - p.n_heads;
                    typename S::T* krow = k_cache + crow * kv_dim + kh * dim;
                    nr_head<NEOX>(src + q_dim + kh * dim, k_norm, row, dim, p.n_rot, p.eps, cos_sh,
                                  sin_sh, [&](u64 j, float v) { krow[j] = S::cvt(v); });
                } else {
                    const u64 vh = h - n_qk;
                    const float* vs = src + q_dim + kv_dim + vh * dim;
                    typename S::T* vrow = v_cache + crow * kv_dim + vh * dim;
                    for (u64 j = lane; j < dim; j += 32) vrow[j] = S::cvt(vs[j]);
                }
            }
        }
        __syncthreads();  // every warp done with the angles before the next token's
    }
}

// qkv: [n_tokens, q_dim + 2 kv_dim]; q_norm, k_norm: [head_dim];
// factors: [n_rot / 2] or null; pos: [n_tokens] (>= 1 for _at);
// q_out: [n_tokens, q_dim]; caches: [ring, kv_dim] with a ring, else
// [>= dst_row + n_tokens, kv_dim].
#define QK_NORM_ROPE_KV(NAME, NEOX, AT, S)                                                                   \
    extern "C" __global__ void NAME(QkNormRopeKvParams p, const float* __restrict__ qkv,                      \
                                    const float* __restrict__ q_norm, const float* __restrict__ k_norm,       \
                                    const float* __restrict__ factors, const i32* __restrict__ pos,           \
                                    float* __restrict__ q_out, S::T* __restrict__ k_cache,                    \
                                    S::T* __restrict__ v_cache) {                                             \
        qk_rows<NEOX, AT, S>(p, qkv, q_norm, k_norm, factors, pos, q_out, k_cache, v_cache);                  \
    }
QK_NORM_ROPE_KV(qk_norm_rope_kv_normal_f32, false, false, QkStoreF32)
QK_NORM_ROPE_KV(qk_norm_rope_kv_neox_f32, true, false, QkStoreF32)
QK_NORM_ROPE_KV(qk_norm_rope_kv_normal_f16, false, false, QkStoreF16)
QK_NORM_ROPE_KV(qk_norm_rope_kv_neox_f16, true, false, QkStoreF16)
QK_NORM_ROPE_KV(qk_norm_rope_kv_normal_bf16, false, false, QkStoreBF16)
QK_NORM_ROPE_KV(qk_norm_rope_kv_neox_bf16, true, false, QkStoreBF16)
QK_NORM_ROPE_KV(qk_norm_rope_kv_at_normal_f32, false, true, QkStoreF32)
QK_NORM_ROPE_KV(qk_norm_rope_kv_at_neox_f32, true, true, QkStoreF32)
QK_NORM_ROPE_KV(qk_norm_rope_kv_at_normal_f16, false, true, QkStoreF16)
QK_NORM_ROPE_KV(qk_norm_rope_kv_at_neox_f16, true, true, QkStoreF16)
QK_NORM_ROPE_KV(qk_norm_rope_kv_at_normal_bf16, false, true, QkStoreBF16)
QK_NORM_ROPE_KV(qk_norm_rope_kv_at_neox_bf16, true, true, QkStoreBF16)
