// moe_route: each token's top_k experts and their weights from router logits
// (reference kiln-core ops/moe_route.rs): softmax or sigmoid scores, an
// optional selection bias, optional grouped top-k (a group scores the sum of
// its two largest selection scores; the topk_group best groups stay
// eligible), renormalisation and a routed scaling factor.
//
// One block per token (grid-stride over tokens); the token's scores live in
// shared memory (n_experts <= MR_MAX_EXPERTS). Top-k by rank: expert e's
// slot is the number of eligible experts ahead of it (larger selection
// score, or equal score and lower index: the reference's tie rule), so every
// rank below top_k is one slot, written by exactly one thread, and the ids
// match the reference wherever the scores are ordered alike. Groups are
// ranked the same way.
//
// A token whose logits (or the bias) hold a non-finite value gets every id
// MR_BAD_ID (u32 max: past any expert, so matmul_id poisons its rows) and
// NaN weights; the host reports the error.
#include "common.cuh"

#define MR_MAX_EXPERTS 512
#define MR_MAX_TOP_K 16
#define MR_BAD_ID 0xFFFFFFFFu

struct MoeRouteParams {
    u64 n_tokens;
    u32 n_experts;
    u32 top_k;
    u32 n_group;
    u32 topk_group;
    u32 sigmoid;    // 0: softmax, 1: sigmoid
    u32 norm_topk;  // renormalise the chosen weights
    u32 has_bias;
    float routed_scaling;
};

__device__ __forceinline__ float mr_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float mr_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
// Block-wide sum / max (blockDim.x a multiple of 32), returned to every thread.
__device__ __forceinline__ float mr_block_sum(float v, float* sh) {
    const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = mr_warp_sum(v);
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < (blockDim.x >> 5) ? sh[lane] : 0.0f;
    v = mr_warp_sum(v);
    __syncthreads();
    return v;
}
__device__ __forceinline__ float mr_block_max(float v, float* sh) {
    const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = mr_warp_max(v);
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < (blockDim.x >> 5) ? sh[lane] : __int_as_float(0xff800000);
    v = mr_warp_max(v);
    __syncthreads();
    return v;
}

// v[i] ranks ahead of v[j]: larger, or equal and lower index.
__device__ __forceinline__ bool mr_ahead(float vi, u32 i, float vj, u32 j) {
    return vi > vj || (vi == vj && i < j);
}

// logits: [n_tokens, n_experts]; bias: [n_experts] (read only when has_bias);
// ids, weights: [n_tokens, top_k]. blockDim.x a multiple of 32, <= 1024.
extern "C" __global__ void moe_route_f32(MoeRouteParams p, const float* __restrict__ logits,
                                         const float* __restrict__ bias, u32* __restrict__ ids,
                                         float* __restrict__ weights) {
    kiln_pdl_enter();  // PDL: everything it reads or writes is the previous kernels'
    __shared__ float score[MR_MAX_EXPERTS];
    __shared__ float sel[MR_MAX_EXPERTS];
    __shared__ float gscore[MR_MAX_EXPERTS];
    __shared__ unsigned char keep[MR_MAX_EXPERTS];
    __shared__ u32 chosen[MR_MAX_TOP_K];
    __shared__ float red[32];
    const u32 ne = min(p.n_experts, (u32)MR_MAX_EXPERTS);
    const u32 k = min(p.top_k, min(ne, (u32)MR_MAX_TOP_K));
    const u32 ng = max(p.n_group, 1u);
    const u32 gs = ne / ng;
    // Every slot names a real expert even if a rank were missing (it is not
    // for validated params: at least top_k experts are eligible).
    if (threadIdx.x < MR_MAX_TOP_K) chosen[threadIdx.x] = 0;
    for (u64 t = blockIdx.x; t < p.n_tokens; t += gridDim.x) {
        const float* l = logits + t * p.n_experts;
        int bad = 0;
        float m = __int_as_float(0xff800000);
        for (u32 e = threadIdx.x; e < ne; e += blockDim.x) {
            const float v = l[e];
            const float b = p.has_bias ? bias[e] : 0.0f;
            bad |= !isfinite(v) || !isfinite(b);
            score[e] = v;
            m = fmaxf(m, v);
        }
        if (__syncthreads_or(bad)) {  // block-uniform
            for (u32 s = threadIdx.x; s < p.top_k; s += blockDim.x) {
                ids[t * p.top_k + s] = MR_BAD_ID;
                weights[t * p.top_k + s] = __int_as_float(0x7fc00000);
            }
            continue;
        }
        // Scores (each thread rewrites only the entries it loaded).
        if (p.sigmoid) {
            for (u32 e = threadIdx.x; e < ne; e += blockDim.x)
                score[e] = 1.0f / (1.0f + expf(-score[e]));
        } else {
            m = mr_block_max(m, red);
            float sum = 0.0f;
            for (u32 e = threadIdx.x; e < ne; e += blockDim.x) {
                const float x = expf(score[e] - m);
                score[e] = x;
                sum += x;
            }
            const float inv = 1.0f / mr_block_sum(sum, red);
            for (u32 e = threadIdx.x; e < ne; e += blockDim.x) score[e] *= inv;
        }
        for (u32 e = threadIdx.x; e < ne; e += blockDim.x)
            sel[e] = score[e] + (p.has_bias ? bias[e] : 0.0f);
        __syncthreads();
        // Groups: score = sum of the two largest sel; keep the topk_group best.
        if (ng > 1) {
            for (u32 g = threadIdx.x; g < ng; g += blockDim.x) {
                float a = __int_as_float(0xff800000), b = a;
                for (u32 i = 0; i < gs; i++) {
                    const float v = sel[g * gs + i];
                    if (v > a) {
                        b = a;
                        a = v;
                    } else if (v > b) {
                        b = v;
                    }
                }
                gscore[g] = gs >= 2 ? a + b : a;
            }
            __syncthreads();
            for (u32 g = threadIdx.x; g < ng; g += blockDim.x) {
                u32 rank = 0;
                for (u32 h = 0; h < ng && rank < p.topk_group; h++)
                    rank += mr_ahead(gscore[h], h, gscore[g], g);
                keep[g] = rank < p.topk_group;
            }
            __syncthreads();
        }
        // Top-k by rank among the eligible experts. The scan has no early
        // exit (a loop-carried test on rank serialises it; a warp runs as
        // long as its slowest lane anyway), so its shared loads pipeline.
        for (u32 e = threadIdx.x; e < ne; e += blockDim.x) {
            if (ng > 1 && !keep[e / gs]) continue;
            const float v = sel[e];
            u32 rank = 0;
            if (ng > 1) {
                for (u32 f = 0; f < ne; f++) rank += keep[f / gs] && mr_ahead(sel[f], f, v, e);
            } else {
#pragma unroll 8
                for (u32 f = 0; f < ne; f++) rank += mr_ahead(sel[f], f, v, e);
            }
            if (rank < k) chosen[rank] = e;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            float sum = 0.0f;
            for (u32 s = 0; s < k; s++) sum += score[chosen[s]];
            // sum > 0 always (positive scores); a zero sum would give inf/NaN weights.
            const float scale = p.norm_topk ? p.routed_scaling / sum : p.routed_scaling;
            for (u32 s = 0; s < k; s++) {
                ids[t * p.top_k + s] = chosen[s];
                weights[t * p.top_k + s] = score[chosen[s]] * scale;
            }
        }
        __syncthreads();  // shared arrays are reused by the next token
    }
}
