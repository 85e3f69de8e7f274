// gelu_mul: out[i] = gelu_tanh(gate[i]) * up[i] (reference kiln-core
// ops/gelu_mul.rs), in the sigmoid form the reference's docs derive:
// gelu_tanh(g) = g / (1 + exp(-2u)), u = sqrt(2/pi) (g + 0.044715 g^3), so
// -2u = g (c1 + c3 g^2) with c1, c3 passed in from kiln-core's constants.
// Grid-stride, float4 when the three pointers are 16-byte aligned.
#include "common.cuh"

struct GeluMulParams {
    u64 n;
    float c1;  // -2 sqrt(2/pi)
    float c3;  // -2 sqrt(2/pi) * 0.044715
};

// exp(-2u) overflows to +inf for very negative g: __frcp_rn(inf) = 0 gives
// -> -0 as the reference; very positive g gives exp(-2u) = 0 and out = g*up.
// g^3 overflowing to +-inf moves -2u to -+inf: the same two limits.
__device__ __forceinline__ float gelu_mul1(const GeluMulParams& p, float g, float u) {
    const float e = __expf(g * (p.c1 + p.c3 * g * g));
    return g * u * __frcp_rn(1.0f + e);
}

__device__ __forceinline__ bool gm_aligned16(const void* q) { return ((u64)q & 15) == 0; }

// gate, up, out: [n]
extern "C" __global__ void gelu_mul_f32(GeluMulParams p, const float* __restrict__ gate,
                                        const float* __restrict__ up, float* __restrict__ out) {
    const u64 tid = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    const u64 stride = (u64)gridDim.x * blockDim.x;
    u64 done = 0;
    if (gm_aligned16(gate) && gm_aligned16(up) && gm_aligned16(out)) {
        const u64 n4 = p.n / 4;
        const float4* g4 = (const float4*)gate;
        const float4* u4 = (const float4*)up;
        float4* o4 = (float4*)out;
        for (u64 i = tid; i < n4; i += stride) {
            const float4 g = g4[i], u = u4[i];
            o4[i] = make_float4(gelu_mul1(p, g.x, u.x), gelu_mul1(p, g.y, u.y),
                                gelu_mul1(p, g.z, u.z), gelu_mul1(p, g.w, u.w));
        }
        done = n4 * 4;
    }
    for (u64 i = done + tid; i < p.n; i += stride) out[i] = gelu_mul1(p, gate[i], up[i]);
}
