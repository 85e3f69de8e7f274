// layer_norm: out[r, i] = (x[r, i] - mean_r) * rsqrt(var_r + eps) * w[i] + b[i]
// (reference kiln-core ops/layer_norm.rs; w, b optional: null pointers).
// One block per row, f32 accumulation in two passes over the row. The row's
// first value is subtracted before summing (the sums see deviations, not a
// large common offset, so the variance does not cancel).
#include "common.cuh"

struct LayerNormParams {
    u64 rows;
    u64 dim;
    float eps;
    u32 pad;  // explicit, as in the Rust mirror
};

// x, out: [rows, dim]; w, b: [dim] or null. grid.x walks rows; blockDim.x % 32 == 0.
extern "C" __global__ void layer_norm_f32(LayerNormParams p, const float* __restrict__ x,
                                          const float* __restrict__ w,
                                          const float* __restrict__ b, float* __restrict__ out) {
    __shared__ float sh[32];
    const float inv_dim = 1.0f / (float)p.dim;
    for (u64 r = blockIdx.x; r < p.rows; r += gridDim.x) {
        const float* xr = x + r * p.dim;
        float* orow = out + r * p.dim;
        const float shift = xr[0];
        float s = 0.0f;
        for (u64 i = threadIdx.x; i < p.dim; i += blockDim.x) s += xr[i] - shift;
        // mean - shift
        const float m = kiln_block_sum(s, sh) * inv_dim;
        float ss = 0.0f;
        for (u64 i = threadIdx.x; i < p.dim; i += blockDim.x) {
            const float c = (xr[i] - shift) - m;
            ss += c * c;
        }
        const float inv = rsqrtf(kiln_block_sum(ss, sh) * inv_dim + p.eps);
        for (u64 i = threadIdx.x; i < p.dim; i += blockDim.x) {
            float v = ((xr[i] - shift) - m) * inv;
            if (w) v *= w[i];
            if (b) v += b[i];
            orow[i] = v;
        }
    }
}
