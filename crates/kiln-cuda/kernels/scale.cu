// scale: out[i] = alpha * x[i] (reference kiln-core ops/scale.rs): one f32
// multiply per element, bit-exact with the reference. Grid-stride, float4
// when both pointers are 16-byte aligned.
#include "common.cuh"

struct ScaleParams {
    u64 n;
    float alpha;
};

__device__ __forceinline__ bool sc_aligned16(const void* q) { return ((u64)q & 15) == 0; }

// x, out: [n]
extern "C" __global__ void scale_f32(ScaleParams p, const float* __restrict__ x,
                                     float* __restrict__ out) {
    const u64 tid = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    const u64 stride = (u64)gridDim.x * blockDim.x;
    const float a = p.alpha;
    u64 done = 0;
    if (sc_aligned16(x) && sc_aligned16(out)) {
        const u64 n4 = p.n / 4;
        const float4* x4 = (const float4*)x;
        float4* o4 = (float4*)out;
        for (u64 i = tid; i < n4; i += stride) {
            const float4 v = x4[i];
            o4[i] = make_float4(a * v.x, a * v.y, a * v.z, a * v.w);
        }
        done = n4 * 4;
    }
    for (u64 i = done + tid; i < p.n; i += stride) out[i] = a * x[i];
}
