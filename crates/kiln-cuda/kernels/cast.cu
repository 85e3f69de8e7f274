// cast: dst[i] = convert(src[i]) over n elements between f32, f16 and bf16
// (reference kiln-core ops/cast.rs, whose module docs are the spec). The
// conversions are integer code on the bit patterns, not cvt instructions:
// cvt.rn.f16.f32 / cvt.rn.bf16.f32 (behind __float2half_rn /
// __float2bfloat16_rn) return a canonical NaN, and --use_fast_math's
// flush-to-zero must not touch subnormals; the reference keeps NaN payloads
// and subnormals. f32 data is read and written as its u32 bits.
// scripts/check-cuda-cast.py runs these functions on the host against the
// spec for every 16-bit pattern and millions of f32 patterns.
#include "common.cuh"

struct CastParams { u64 n; };

// f16 bits -> f32 bits, exact. NaN keeps sign and payload, gets the quiet bit.
__device__ __forceinline__ u32 cast_f16_to_f32(u32 h) {
    const u32 sign = (h & 0x8000u) << 16;
    const u32 e = (h >> 10) & 0x1fu;
    const u32 m = h & 0x3ffu;
    if (e == 0x1fu) return sign | 0x7f800000u | (m ? 0x400000u | (m << 13) : 0u);
    if (e != 0) return sign | ((e + 112u) << 23) | (m << 13);
    if (m == 0) return sign;
    // Subnormal m * 2^-24: shift the leading one to bit 10 (the implicit bit).
    const u32 sh = (u32)__clz(m) - 21u;  // m < 2^10: __clz(m) >= 22, sh in 1..10
    return sign | ((113u - sh) << 23) | (((m << sh) & 0x3ffu) << 13);
}

// f32 bits -> f16 bits, round to nearest even; >= 65520 -> inf; subnormal
// results kept. NaN keeps sign and top 10 payload bits, gets the quiet bit.
__device__ __forceinline__ u32 cast_f32_to_f16(u32 x) {
    const u32 sign = (x >> 16) & 0x8000u;
    const u32 a = x & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00u | ((a >> 13) & 0x3ffu);
    if (a >= 0x477ff000u) return sign | 0x7c00u;  // 65520 (ties up to 65536) and past, inf
    if (a >= 0x38800000u) {                        // normal f16: 2^-14 and up
        const u32 r = a - 0x38000000u;             // rebias the exponent: 127 -> 15
        return sign | ((r + 0xfffu + ((r >> 13) & 1u)) >> 13);
    }
    if (a <= 0x33000000u) return sign;  // <= 2^-25 (the tie with 0 goes to even 0)
    // Subnormal f16: the significand m * 2^(e-150) in units of 2^-24 is
    // m >> (126 - e), rounded to nearest even (a carry into 0x400 gives the
    // smallest normal's bits, which is right).
    const u32 e = a >> 23;               // 102..112
    const u32 m = (a & 0x7fffffu) | 0x800000u;
    const u32 s = 126u - e;              // 14..24
    const u32 q = m >> s;
    const u32 rem = m & ((1u << s) - 1u);
    const u32 half = 1u << (s - 1u);
    return sign | (q + ((rem > half || (rem == half && (q & 1u))) ? 1u : 0u));
}

// bf16 bits -> f32 bits, exact.
__device__ __forceinline__ u32 cast_bf16_to_f32(u32 b) { return b << 16; }

// f32 bits -> bf16 bits (ggml's rule): NaN keeps its top bits and gets the
// quiet bit; everything else rounds to nearest even on the raw bits.
__device__ __forceinline__ u32 cast_f32_to_bf16(u32 x) {
    if ((x & 0x7fffffffu) > 0x7f800000u) return (x >> 16) | 0x40u;
    return (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
}

// One conversion per direction: Src and Dst are the storage types.
struct CastF32F16 { typedef u32 Src; typedef u16 Dst;
    static __device__ __forceinline__ Dst op(Src x) { return (Dst)cast_f32_to_f16(x); } };
struct CastF32Bf16 { typedef u32 Src; typedef u16 Dst;
    static __device__ __forceinline__ Dst op(Src x) { return (Dst)cast_f32_to_bf16(x); } };
struct CastF16F32 { typedef u16 Src; typedef u32 Dst;
    static __device__ __forceinline__ Dst op(Src x) { return cast_f16_to_f32(x); } };
struct CastBf16F32 { typedef u16 Src; typedef u32 Dst;
    static __device__ __forceinline__ Dst op(Src x) { return cast_bf16_to_f32(x); } };
struct CastF16Bf16 { typedef u16 Src; typedef u16 Dst;
    static __device__ __forceinline__ Dst op(Src x) { return (Dst)cast_f32_to_bf16(cast_f16_to_f32(x)); } };
struct CastBf16F16 { typedef u16 Src; typedef u16 Dst;
    static __device__ __forceinline__ Dst op(Src x) { return (Dst)cast_f32_to_f16(cast_bf16_to_f32(x)); } };
// Same-type casts: bit copies.
struct CastCopy32 { typedef u32 Src; typedef u32 Dst;
    static __device__ __forceinline__ Dst op(Src x) { return x; } };
struct CastCopy16 { typedef u16 Src; typedef u16 Dst;
    static __device__ __forceinline__ Dst op(Src x) { return x; } };

// src, dst: [n]; grid-stride.
template <class C>
__device__ __forceinline__ void cast_loop(CastParams p, const typename C::Src* __restrict__ src,
                                          typename C::Dst* __restrict__ dst) {
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += stride) {
        dst[i] = C::op(src[i]);
    }
}

#define KILN_CAST(name, C)                                                              \
    extern "C" __global__ void name(CastParams p, const C::Src* __restrict__ src,      \
                                    C::Dst* __restrict__ dst) {                         \
        cast_loop<C>(p, src, dst);                                                      \
    }
KILN_CAST(cast_f32_f16, CastF32F16)
KILN_CAST(cast_f32_bf16, CastF32Bf16)
KILN_CAST(cast_f16_f32, CastF16F32)
KILN_CAST(cast_bf16_f32, CastBf16F32)
KILN_CAST(cast_f16_bf16, CastF16Bf16)
KILN_CAST(cast_bf16_f16, CastBf16F16)
KILN_CAST(cast_copy_b32, CastCopy32)
KILN_CAST(cast_copy_b16, CastCopy16)
