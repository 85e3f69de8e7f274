// sigmoid_mul: out[i] = sigmoid(gate[i]) * up[i] = up[i] / (1 + exp(-gate[i]))
// (reference kiln-core ops/sigmoid_mul.rs; gated attention's output gate).
// Grid-stride, float4 when the three pointers are 16-byte aligned (the
// layout of silu_mul.cu, without the factor gate).
#include "common.cuh"

struct SigmoidMulParams {
    u64 n;
};

// exp(-g) overflows to +inf for g < -88: __frcp_rn(inf) = 0 gives out = 0
// (the reference's limit); g > 88 gives exp(-g) = 0 and out = up.
__device__ __forceinline__ float sigmoid_mul1(float g, float u) {
    return u * __frcp_rn(1.0f + __expf(-g));
}

__device__ __forceinline__ bool sg_aligned16(const void* p) { return ((u64)p & 15) == 0; }

// gate, up, out: [n]
extern "C" __global__ void sigmoid_mul_f32(SigmoidMulParams p, const float* __restrict__ gate,
                                           const float* __restrict__ up,
                                           float* __restrict__ out) {
    const u64 tid = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    const u64 stride = (u64)gridDim.x * blockDim.x;
    u64 done = 0;
    if (sg_aligned16(gate) && sg_aligned16(up) && sg_aligned16(out)) {
        const u64 n4 = p.n / 4;
        const float4* g4 = (const float4*)gate;
        const float4* u4 = (const float4*)up;
        float4* o4 = (float4*)out;
        for (u64 i = tid; i < n4; i += stride) {
            const float4 g = g4[i], u = u4[i];
            o4[i] = make_float4(sigmoid_mul1(g.x, u.x), sigmoid_mul1(g.y, u.y),
                                sigmoid_mul1(g.z, u.z), sigmoid_mul1(g.w, u.w));
        }
        done = n4 * 4;
    }
    for (u64 i = done + tid; i < p.n; i += stride) out[i] = sigmoid_mul1(gate[i], up[i]);
}
