// mul: out[i] = a[i] * b[i] over n f32 elements (reference kiln-core
// ops/mul.rs): one f32 multiply per element, bit-exact with the reference.
// Grid-stride, float4 when all three pointers are 16-byte aligned. The
// multiply is common.cuh's kiln_mul_rn (inline PTX mul.rn.f32): kernels
// compile with --use_fast_math, which makes a C++ `*` (and __fmul_rn)
// mul.rn.ftz.f32, flushing subnormal inputs and products to zero where the
// reference keeps them.
#include "common.cuh"

struct MulParams { u64 n; };

__device__ __forceinline__ bool mul_aligned16(const void* q) { return ((u64)q & 15) == 0; }

// a, b, out: [n]
extern "C" __global__ void mul_f32(MulParams p, const float* __restrict__ a,
                                   const float* __restrict__ b, float* __restrict__ out) {
    const u64 tid = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    const u64 stride = (u64)gridDim.x * blockDim.x;
    u64 done = 0;
    if (mul_aligned16(a) && mul_aligned16(b) && mul_aligned16(out)) {
        const u64 n4 = p.n / 4;
        const float4* a4 = (const float4*)a;
        const float4* b4 = (const float4*)b;
        float4* o4 = (float4*)out;
        for (u64 i = tid; i < n4; i += stride) {
            const float4 x = a4[i];
            const float4 y = b4[i];
            o4[i] = make_float4(kiln_mul_rn(x.x, y.x), kiln_mul_rn(x.y, y.y),
                                kiln_mul_rn(x.z, y.z), kiln_mul_rn(x.w, y.w));
        }
        done = n4 * 4;
    }
    for (u64 i = done + tid; i < p.n; i += stride) out[i] = kiln_mul_rn(a[i], b[i]);
}
