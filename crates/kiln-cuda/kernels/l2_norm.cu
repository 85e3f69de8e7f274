// l2_norm: out[r, i] = x[r, i] / max(sqrt(sum_i x[r, i]^2), eps)
// (reference kiln-core ops/l2_norm.rs). One block per row, f32 accumulation.
#include "common.cuh"

struct L2NormParams {
    u64 rows;
    u64 dim;
    float eps;
    u32 pad;  // explicit, as in the Rust mirror
};

// x, out: [rows, dim]. grid.x walks rows; blockDim.x % 32 == 0.
extern "C" __global__ void l2_norm_f32(L2NormParams p, const float* __restrict__ x,
                                       float* __restrict__ out) {
    __shared__ float sh[32];
    for (u64 r = blockIdx.x; r < p.rows; r += gridDim.x) {
        const float* xr = x + r * p.dim;
        float* orow = out + r * p.dim;
        float ss = 0.0f;
        for (u64 i = threadIdx.x; i < p.dim; i += blockDim.x) ss += xr[i] * xr[i];
        const float inv = 1.0f / fmaxf(sqrtf(kiln_block_sum(ss, sh)), p.eps);
        for (u64 i = threadIdx.x; i < p.dim; i += blockDim.x) orow[i] = xr[i] * inv;
    }
}
