// rope: rotary position embedding in place on x: [n_tokens, n_heads, head_dim]
// (reference kiln-core ops/rope.rs). For pair i < n_rot/2 of token t,
// theta = pos[t] * freq_scale * freq_base^(-2i/n_rot); (a, b) becomes
// (a cos - b sin, a sin + b cos). Pairs are (2i, 2i+1) (normal, llama GGUF)
// or (i, i + n_rot/2) (neox). Dims >= n_rot are not touched.
// The angle, its sine/cosine and the rotation are computed in f64 like the
// reference: f32 angles lose ~pos * 2^-24 rad, and this kernel is tiny.
#include "common.cuh"

struct RopeParams {
    u64 n_tokens;
    u64 n_heads;
    u64 head_dim;
    u64 n_rot;
    float freq_base;
    float freq_scale;
};

// grid.x walks tokens, (grid.y, threadIdx.x) walk pairs, threadIdx.y walks heads.
template <bool NEOX, bool FF>
__device__ __forceinline__ void rope_rows(const RopeParams& p, const i32* __restrict__ pos,
                                          const float* __restrict__ factors,
                                          float* __restrict__ x) {
    const u64 half = p.n_rot / 2;
    for (u64 t = blockIdx.x; t < p.n_tokens; t += gridDim.x) {
        const double pt = (double)pos[t] * (double)p.freq_scale;
        for (u64 i = (u64)blockIdx.y * blockDim.x + threadIdx.x; i < half; i += (u64)gridDim.y * blockDim.x) {
            const double inv_freq = pow((double)p.freq_base, -2.0 * (double)i / (double)p.n_rot);
            double theta = pt * inv_freq;
            if (FF) theta /= (double)factors[i];
            double sn, cs;
            sincos(theta, &sn, &cs);
            const u64 ia = NEOX ? i : 2 * i;
            const u64 ib = NEOX ? i + half : 2 * i + 1;
            for (u64 h = threadIdx.y; h < p.n_heads; h += blockDim.y) {
                float* head = x + (t * p.n_heads + h) * p.head_dim;
                const double a = head[ia], b = head[ib];
                head[ia] = (float)(a * cs - b * sn);
                head[ib] = (float)(a * sn + b * cs);
            }
        }
    }
}

// pos: [n_tokens], x: [n_tokens, n_heads, head_dim] (in place), factors: [n_rot/2]
extern "C" __global__ void rope_normal_f32(RopeParams p, const i32* __restrict__ pos, float* __restrict__ x) {
    rope_rows<false, false>(p, pos, nullptr, x);
}
extern "C" __global__ void rope_neox_f32(RopeParams p, const i32* __restrict__ pos, float* __restrict__ x) {
    rope_rows<true, false>(p, pos, nullptr, x);
}
extern "C" __global__ void rope_normal_ff_f32(RopeParams p, const i32* __restrict__ pos,
                                              const float* __restrict__ factors, float* __restrict__ x) {
    rope_rows<false, true>(p, pos, factors, x);
}
extern "C" __global__ void rope_neox_ff_f32(RopeParams p, const i32* __restrict__ pos,
                                            const float* __restrict__ factors, float* __restrict__ x) {
    rope_rows<true, true>(p, pos, factors, x);
}
