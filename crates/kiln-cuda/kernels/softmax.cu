// softmax: out[r, c] = exp(s*x[r,c] - m) / sum_c' exp(s*x[r,c'] - m), m the
// row max of s*x (reference kiln-core ops/softmax.rs). -inf entries give 0; a
// row whose max is -inf (every entry -inf) is all zeros. NaN is skipped by the
// max (fmaxf, like f64::max) and then poisons the row's sum, as in the
// reference. One block per row: max, sum, write (three reads of the row,
// the later two from cache).
#include "common.cuh"

struct SoftmaxParams {
    u64 rows;
    u64 cols;
    float scale;
    u32 pad;  // explicit, as in the Rust mirror
};

#define SOFTMAX_NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float sm_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float sm_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Block-wide sum / max (blockDim.x a multiple of 32), returned to every thread.
__device__ __forceinline__ float sm_block_sum(float v, float* sh) {
    const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = sm_warp_sum(v);
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < (blockDim.x >> 5) ? sh[lane] : 0.0f;
    v = sm_warp_sum(v);
    __syncthreads();
    return v;
}
__device__ __forceinline__ float sm_block_max(float v, float* sh) {
    const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = sm_warp_max(v);
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < (blockDim.x >> 5) ? sh[lane] : SOFTMAX_NEG_INF;
    v = sm_warp_max(v);
    __syncthreads();
    return v;
}

// x, out: [rows, cols]. grid.x walks rows; blockDim.x % 32 == 0.
extern "C" __global__ void softmax_f32(SoftmaxParams p, const float* __restrict__ x,
                                       float* __restrict__ out) {
    __shared__ float sh[32];
    const float s = p.scale;
    for (u64 r = blockIdx.x; r < p.rows; r += gridDim.x) {
        const float* xr = x + r * p.cols;
        float* orow = out + r * p.cols;
        float m = SOFTMAX_NEG_INF;
        for (u64 c = threadIdx.x; c < p.cols; c += blockDim.x) m = fmaxf(m, xr[c] * s);
        m = sm_block_max(m, sh);
        if (m == SOFTMAX_NEG_INF) {  // block-uniform: every entry masked
            for (u64 c = threadIdx.x; c < p.cols; c += blockDim.x) orow[c] = 0.0f;
            continue;
        }
        float sum = 0.0f;
        for (u64 c = threadIdx.x; c < p.cols; c += blockDim.x) sum += __expf(xr[c] * s - m);
        sum = sm_block_sum(sum, sh);
        const float inv = __frcp_rn(sum);
        for (u64 c = threadIdx.x; c < p.cols; c += blockDim.x) orow[c] = __expf(xr[c] * s - m) * inv;
    }
}
