// argmax: index of the largest finite value of x: [n] (reference kiln-core
// ops/argmax.rs): NaN and +-inf ignored, lowest index on ties, -0 == +0.
// Writes u32::MAX (0xffffffff) when no value is finite; the host maps that
// to an error when it downloads. One block: each candidate is a u64 key
// (order-preserving value bits << 32 | ~index), so one max reduction picks
// the largest value and, among equals, the lowest index. Key 0 = none.
#include "common.cuh"

#define ARGMAX_UNROLL 4

struct ArgmaxParams {
    u64 n;
};

__device__ __forceinline__ u64 argmax_key(float v, u32 i) {
    u32 bits = __float_as_uint(v);
    if ((bits & 0x7f800000u) == 0x7f800000u) return 0;  // NaN or inf
    if ((bits & 0x7fffffffu) == 0) bits = 0;             // -0 ties with +0
    const u32 ord = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
    // ord >= 0x00800000 for every finite value, so a real key is never 0.
    return ((u64)ord << 32) | (u64)(~i);
}

__device__ __forceinline__ u64 argmax_max(u64 a, u64 b) { return a > b ? a : b; }

// x: [n], out: [1]. One block, blockDim.x % 32 == 0.
extern "C" __global__ void argmax_f32(ArgmaxParams p, const float* __restrict__ x, u32* __restrict__ out) {
    kiln_pdl_enter();  // PDL: everything it reads or writes is the previous kernels'
    __shared__ u64 sh[32];
    u64 best = 0;
    u64 done = 0;
    if (((u64)x & 15) == 0) {
        const u64 n4 = p.n / 4;
        // ARGMAX_UNROLL independent float4 loads in flight per thread: one
        // block streams the whole vector, so load latency, not bandwidth, rules.
        for (u64 base = threadIdx.x; base < n4; base += ARGMAX_UNROLL * (u64)blockDim.x) {
            float4 v[ARGMAX_UNROLL];
#pragma unroll
            for (int u = 0; u < ARGMAX_UNROLL; ++u) {
                const u64 i = base + (u64)u * blockDim.x;
                v[u] = i < n4 ? ((const float4*)x)[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            }
#pragma unroll
            for (int u = 0; u < ARGMAX_UNROLL; ++u) {
                const u64 i = base + (u64)u * blockDim.x;
                if (i >= n4) break;
                const u32 j = (u32)(4 * i);
                best = argmax_max(best, argmax_max(argmax_max(argmax_key(v[u].x, j), argmax_key(v[u].y, j + 1)),
                                                   argmax_max(argmax_key(v[u].z, j + 2), argmax_key(v[u].w, j + 3))));
            }
        }
        done = n4 * 4;
    }
    for (u64 i = done + threadIdx.x; i < p.n; i += blockDim.x) best = argmax_max(best, argmax_key(x[i], (u32)i));
    for (int o = 16; o > 0; o >>= 1) best = argmax_max(best, __shfl_xor_sync(0xffffffffu, best, o));
    const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) sh[warp] = best;
    __syncthreads();
    if (warp == 0) {
        best = lane < (blockDim.x >> 5) ? sh[lane] : 0;
        for (int o = 16; o > 0; o >>= 1) best = argmax_max(best, __shfl_xor_sync(0xffffffffu, best, o));
        if (lane == 0) out[0] = best == 0 ? 0xffffffffu : ~(u32)best;
    }
}
