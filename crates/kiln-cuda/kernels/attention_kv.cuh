// attention_kv.cuh: the cache element type of an attention.cu module and
// its loads. attention.cu is compiled once per type: the family module with
// f32 caches (KILN_KV undefined or 0) and the variants KILN_KV 1 (f16 bits)
// and 2 (bf16 bits) (src/attention.rs, kv_variant). kv_t is the element
// type; every value is widened to f32 when loaded (exact). Entry points are
// named with KV_NAME(base), e.g. attention_split_bf16. Included after
// common.cuh.
#pragma once

#ifndef KILN_KV
#define KILN_KV 0
#endif
#if KILN_KV == 0
typedef float kv_t;
#define KV_SFX f32
#elif KILN_KV == 1
typedef u16 kv_t;
#define KV_SFX f16
#elif KILN_KV == 2
typedef u16 kv_t;
#define KV_SFX bf16
#else
#error "KILN_KV must be 0 (f32), 1 (f16) or 2 (bf16)"
#endif
#define KV_CAT2(a, b) a##b
#define KV_CAT(a, b) KV_CAT2(a, b)
// Entry point name: base followed by the cache type, e.g. attention_split_bf16.
#define KV_NAME(base) KV_CAT(base, KV_SFX)

// One cache element as f32 (exact).
__device__ __forceinline__ float kv_cvt(kv_t x) {
#if KILN_KV == 0
    return x;
#elif KILN_KV == 1
    return kiln_f16_to_f32(x);
#else
    return kiln_bf16_to_f32(x);
#endif
}

// Two 16-bit elements packed in a 32-bit word (the lower address in the
// low half, little-endian) as f32.
__device__ __forceinline__ void kv_cvt2(u32 w, float& a, float& b) {
#if KILN_KV == 1
    a = kiln_f16_to_f32((u16)(w & 0xffffu));
    b = kiln_f16_to_f32((u16)(w >> 16));
#else
    a = __uint_as_float(w << 16);
    b = __uint_as_float(w & 0xffff0000u);
#endif
}

// Elements per vector piece of a lane's DPL cache values: the largest
// power of two dividing DPL with at most 16 bytes.
template <int DPL>
struct DecPiece {
    static constexpr int by_dpl = (DPL % 8 == 0) ? 8 : (DPL % 4 == 0) ? 4 : (DPL % 2 == 0) ? 2 : 1;
    static constexpr int max_elems = 16 / (int)sizeof(kv_t);
    static constexpr int value = by_dpl < max_elems ? by_dpl : max_elems;
};

// PE consecutive cache elements at src (aligned to PE * sizeof(kv_t)) as f32.
template <int PE>
__device__ __forceinline__ void kv_piece(const kv_t* __restrict__ src, float* r) {
#if KILN_KV == 0
    if constexpr (PE == 4) {
        const float4 x = *(const float4*)src;
        r[0] = x.x; r[1] = x.y; r[2] = x.z; r[3] = x.w;
    } else if constexpr (PE == 2) {
        const float2 x = *(const float2*)src;
        r[0] = x.x; r[1] = x.y;
    } else {
        r[0] = src[0];
    }
#else
    if constexpr (PE == 8) {
        const uint4 x = *(const uint4*)src;
        kv_cvt2(x.x, r[0], r[1]); kv_cvt2(x.y, r[2], r[3]);
        kv_cvt2(x.z, r[4], r[5]); kv_cvt2(x.w, r[6], r[7]);
    } else if constexpr (PE == 4) {
        const uint2 x = *(const uint2*)src;
        kv_cvt2(x.x, r[0], r[1]); kv_cvt2(x.y, r[2], r[3]);
    } else if constexpr (PE == 2) {
        kv_cvt2(*(const u32*)src, r[0], r[1]);
    } else {
        r[0] = kv_cvt(src[0]);
    }
#endif
}
