// rms_norm: out[r, i] = x[r, i] * rsqrt(mean(x[r, :]^2) + eps) * w[i]
// (reference kiln-core ops/rms_norm.rs). One block per row, f32 accumulation,
// warp-shuffle then shared-memory reduction.
#include "common.cuh"

struct RmsNormParams {
    u64 rows;
    u64 dim;
    float eps;
    u32 pad;  // explicit, as in the Rust mirror
};

__device__ __forceinline__ bool rms_aligned16(const void* p) { return ((u64)p & 15) == 0; }

// x, out: [rows, dim], w: [dim]. grid.x walks rows; blockDim.x % 32 == 0.
extern "C" __global__ void rms_norm_f32(RmsNormParams p, const float* __restrict__ x,
                                        const float* __restrict__ w, float* __restrict__ out) {
    kiln_pdl_enter();  // PDL: everything it reads or writes is the previous kernels'
    __shared__ float sh[32];
    // Rows are 16-byte aligned when the bases are and dim % 4 == 0: float4 path.
    const bool vec = (p.dim % 4 == 0) && rms_aligned16(x) && rms_aligned16(w) && rms_aligned16(out);
    const u64 d4 = p.dim / 4;
    for (u64 r = blockIdx.x; r < p.rows; r += gridDim.x) {
        const float* xr = x + r * p.dim;
        float* orow = out + r * p.dim;
        float ss = 0.0f;
        if (vec) {
            const float4* x4 = (const float4*)xr;
            for (u64 i = threadIdx.x; i < d4; i += blockDim.x) {
                const float4 v = x4[i];
                ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
            }
        } else {
            for (u64 i = threadIdx.x; i < p.dim; i += blockDim.x) ss += xr[i] * xr[i];
        }
        ss = kiln_block_sum(ss, sh);
        const float inv = rsqrtf(__fdiv_rn(ss, (float)p.dim) + p.eps);
        if (vec) {
            const float4* x4 = (const float4*)xr;
            const float4* w4 = (const float4*)w;
            float4* o4 = (float4*)orow;
            for (u64 i = threadIdx.x; i < d4; i += blockDim.x) {
                const float4 v = x4[i], g = w4[i];
                o4[i] = make_float4(v.x * inv * g.x, v.y * inv * g.y, v.z * inv * g.z, v.w * inv * g.w);
            }
        } else {
            for (u64 i = threadIdx.x; i < p.dim; i += blockDim.x) orow[i] = xr[i] * inv * w[i];
        }
    }
}
