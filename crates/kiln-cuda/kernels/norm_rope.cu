// norm_rope: per-head RMSNorm then RoPE (Qwen3 / Gemma 3 q and k norms),
// out = rope(rms_norm(x, w, eps)) over the head rows of
// x, out: [n_tokens, n_heads, head_dim]; w: [head_dim] (shared by every head),
// pos: [n_tokens], factors: [n_rot/2] (reference kiln-core ops/norm_rope.rs:
// rms_norm_ref over the rows, then rope_ref_with_factors).
//
// Numerics: norm_rope.cuh (shared with qk_norm_rope_kv.cu).
//
// Layout. Block (blockIdx.x, blockIdx.y) = (token t, head group g) covers the
// heads [g * hpb, min((g + 1) * hpb, n_heads)) of token t (hpb =
// heads_per_block); both indices grid-stride, so any n_tokens and n_heads run.
// - The block's threads first put the cos/sin of every pair's angle at pos[t]
//   in shared memory: the f64 pow and sincos are the expensive part, and the
//   heads of a token share them, so they are computed once per block and
//   token instead of once per head.
// - Then one warp per head row: heads are 2..512 floats (64-256 in the
//   models), too short for a block-wide reduction to pay for its barriers; a
//   warp sums with shuffles alone. The warp copies the raw row into its own
//   shared row while summing squares, then each lane normalizes and rotates
//   the pairs i = lane, lane + 32, ... reading both elements from shared
//   memory, and normalizes the tail dims >= n_rot.
// The launcher chooses hpb: one head per warp (several blocks per token) for
// few tokens (decode: more blocks in flight), all of a token's heads per block
// when the tokens alone fill the GPU (prefill: fewest angle computations).
// Positions are read from device memory, so a recorded graph replays at the
// position staged before it.
#include "common.cuh"
#include "norm_rope.cuh"

struct NormRopeParams {
    u64 n_tokens;
    u64 n_heads;
    u64 head_dim;         // 1..=NR_MAX_DIM
    u64 n_rot;            // even, <= head_dim
    u64 heads_per_block;  // >= 1
    float freq_base;
    float freq_scale;
    float eps;
    u32 pad;  // explicit, as in the Rust mirror
};

// blockDim.x = 32 * warps, 1 <= warps <= NR_MAX_WARPS.
template <bool NEOX, bool FF>
__device__ __forceinline__ void norm_rope_rows(const NormRopeParams& p, const float* __restrict__ x,
                                               const float* __restrict__ w, const float* __restrict__ factors,
                                               const i32* __restrict__ pos, float* __restrict__ out) {
    kiln_pdl_enter();  // PDL: everything it reads or writes is the previous kernels'
    __shared__ double cos_sh[NR_MAX_DIM / 2];
    __shared__ double sin_sh[NR_MAX_DIM / 2];
    __shared__ float rows_sh[NR_MAX_WARPS][NR_MAX_DIM];
    const u32 warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    float* row = rows_sh[warp];
    const u64 dim = p.head_dim, hpb = p.heads_per_block;
    const u64 n_groups = (p.n_heads + hpb - 1) / hpb;
    for (u64 t = blockIdx.x; t < p.n_tokens; t += gridDim.x) {
        nr_angles<FF>(pos[t], p.n_rot, p.freq_base, p.freq_scale, factors, cos_sh, sin_sh);
        __syncthreads();  // the angles are read by every warp
        for (u64 g = blockIdx.y; g < n_groups; g += gridDim.y) {
            const u64 h_end = (g + 1) * hpb < p.n_heads ? (g + 1) * hpb : p.n_heads;
            for (u64 h = g * hpb + warp; h < h_end; h += n_warps) {
                const u64 base = (t * p.n_heads + h) * dim;
                float* orow = out + base;
                nr_head<NEOX>(x + base, w, row, dim, p.n_rot, p.eps, cos_sh, sin_sh,
                              [&](u64 j, float v) { orow[j] = v; });
            }
        }
        __syncthreads();  // every warp done with the angles before the next token's
    }
}

extern "C" __global__ void norm_rope_normal_f32(NormRopeParams p, const float* __restrict__ x,
                                                const float* __restrict__ w, const i32* __restrict__ pos,
                                                float* __restrict__ out) {
    norm_rope_rows<false, false>(p, x, w, nullptr, pos, out);
}
extern "C" __global__ void norm_rope_neox_f32(NormRopeParams p, const float* __restrict__ x,
                                              const float* __restrict__ w, const i32* __restrict__ pos,
                                              float* __restrict__ out) {
    norm_rope_rows<true, false>(p, x, w, nullptr, pos, out);
}
extern "C" __global__ void norm_rope_normal_ff_f32(NormRopeParams p, const float* __restrict__ x,
                                                   const float* __restrict__ w, const float* __restrict__ factors,
                                                   const i32* __restrict__ pos, float* __restrict__ out) {
    norm_rope_rows<false, true>(p, x, w, factors, pos, out);
}
extern "C" __global__ void norm_rope_neox_ff_f32(NormRopeParams p, const float* __restrict__ x,
                                                 const float* __restrict__ w, const float* __restrict__ factors,
                                                 const i32* __restrict__ pos, float* __restrict__ out) {
    norm_rope_rows<true, true>(p, x, w, factors, pos, out);
}
