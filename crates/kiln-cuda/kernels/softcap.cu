// softcap: out[i] = cap * tanh(x[i] / cap) (reference kiln-core
// ops/softcap.rs). Grid-stride, float4 when both pointers are 16-byte
// aligned.
//
// tanh as expm1(2a) / (expm1(2a) + 2), a = min(|y|, 9) (tanh(9) rounds to 1
// in f32), sign restored: the module compiles with --use_fast_math, under
// which tanhf became the hardware approximation (measured on an H100:
// errors up to 2.4e-4 at |out| ~ 30, 8e-6 relative, against the testkit's
// 4e-5); expm1f has no fast intrinsic, so this stays within a few ulp
// (numpy float32 emulation over |y| <= 12: max error 8.9e-8, 2.1e-7
// relative).
#include "common.cuh"

struct SoftcapParams {
    u64 n;
    float cap;
    float inv_cap;
};

__device__ __forceinline__ bool scap_aligned16(const void* q) { return ((u64)q & 15) == 0; }
__device__ __forceinline__ float scap_tanh(float y) {
    const float e = expm1f(2.f * fminf(fabsf(y), 9.f));
    return copysignf(e / (e + 2.f), y);
}
__device__ __forceinline__ float scap1(float v, float c, float ic) { return c * scap_tanh(v * ic); }

// x, out: [n]
extern "C" __global__ void softcap_f32(SoftcapParams p, const float* __restrict__ x,
                                       float* __restrict__ out) {
    const u64 tid = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    const u64 stride = (u64)gridDim.x * blockDim.x;
    const float c = p.cap, ic = p.inv_cap;
    u64 done = 0;
    if (scap_aligned16(x) && scap_aligned16(out)) {
        const u64 n4 = p.n / 4;
        const float4* x4 = (const float4*)x;
        float4* o4 = (float4*)out;
        for (u64 i = tid; i < n4; i += stride) {
            const float4 v = x4[i];
            o4[i] = make_float4(scap1(v.x, c, ic), scap1(v.y, c, ic), scap1(v.z, c, ic),
                                scap1(v.w, c, ic));
        }
        done = n4 * 4;
    }
    for (u64 i = done + tid; i < p.n; i += stride) out[i] = scap1(x[i], c, ic);
}
