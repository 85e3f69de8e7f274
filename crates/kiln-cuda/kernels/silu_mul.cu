// silu_mul: out[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g))
// (reference kiln-core ops/silu_mul.rs). Grid-stride, float4 when the three
// pointers are 16-byte aligned.
#include "common.cuh"

struct SiluMulParams {
    u64 n;
};

__device__ __forceinline__ float silu_mul1(float g, float u) { return kiln_silu(g) * u; }

__device__ __forceinline__ bool sm_aligned16(const void* p) { return ((u64)p & 15) == 0; }

// gate, up, out: [n]
extern "C" __global__ void silu_mul_f32(SiluMulParams p, const float* __restrict__ gate,
                                        const float* __restrict__ up, float* __restrict__ out) {
    const u64 tid = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    const u64 stride = (u64)gridDim.x * blockDim.x;
    u64 done = 0;
    if (sm_aligned16(gate) && sm_aligned16(up) && sm_aligned16(out)) {
        const u64 n4 = p.n / 4;
        const float4* g4 = (const float4*)gate;
        const float4* u4 = (const float4*)up;
        float4* o4 = (float4*)out;
        for (u64 i = tid; i < n4; i += stride) {
            const float4 g = g4[i], u = u4[i];
            o4[i] = make_float4(silu_mul1(g.x, u.x), silu_mul1(g.y, u.y), silu_mul1(g.z, u.z),
                                silu_mul1(g.w, u.w));
        }
        done = n4 * 4;
    }
    for (u64 i = done + tid; i < p.n; i += stride) out[i] = silu_mul1(gate[i], up[i]);
}
