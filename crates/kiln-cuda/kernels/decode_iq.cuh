// Mat-vec block decoders for the lattice i-quants IQ2_XXS, IQ2_XS, IQ3_XXS
// and IQ3_S (SUB = 8), with decode_kq.cuh's interface (see there): lane
// part s (0..3) of virtual block `sub` decodes the 8 elements 8s..8s+7 of
// the super-block's 32-element sub-block `sub` (xoff0 = 8s, xoff1 = 8s + 4),
// i.e. one 8-wide IQ2 grid row or two 4-wide IQ3 rows, which always share
// one scale (IQ2_XS's per-16 scales: lanes 0, 1 the first, 2, 3 the second).
// The reference dequantizer of kiln-core (quant/iq23.rs) is the spec:
// weight = db * (grid * sign), db = d * (0.5 + ls) * 0.25 (IQ2), * 0.5
// (IQ3_XXS), d * (1 + 2 ls) (IQ3_S), rounded in f32 in that order; c[e] is
// the signed grid value (exact), d is db. Included after decode_kq.cuh.
//
// All four block sizes (66, 74, 98, 110) are 2 bytes apart only: 16-bit
// loads. The grids and the sign table are iq23_grids.cuh (generated from the
// gguf package by scripts/fixtures/make_iq_grids.py), in global memory
// (lanes index them divergently). scripts/check-cuda-decoders.py builds
// these decoders as host C++ and checks them against gguf.quants.
#pragma once
#include "iq23_grids.cuh"

// Signed element: grid byte i of g with bit i of sg as its sign (exact).
__device__ __forceinline__ float iq_signed(u32 g, int i, u32 sg) {
    const float v = byte_f32(g, i, KQ_BIAS(0));
    return __uint_as_float(__float_as_uint(v) ^ (((sg >> i) & 1u) << 31));
}

// 8 elements from two 4-byte grid words and 8 sign bits.
__device__ __forceinline__ void iq_lane(u32 lo, u32 hi, u32 sg, float c[8]) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
        c[i] = iq_signed(lo, i, sg);
        c[4 + i] = iq_signed(hi, i, sg >> 4);
    }
}

// IQ2_XXS: per sub-block two u32 at 2 + 8 sub: grid indices (a byte each,
// IQ2XXS_GRID rows of 8), then 4 7-bit sign indices (KSIGNS_IQ2XS) and the
// scale ls in bits 28..31.
struct IQ2_XXST {
    static constexpr int TS = 66;
    static constexpr int SUB = 8;
    static constexpr bool MIN = false;
    struct Raw { u32 d; u32 g; u32 w; int s; };
    __device__ static int xoff0(int s) { return 8 * s; }
    __device__ static int xoff1(int s) { return 8 * s + 4; }
    __device__ static Raw fetch(const u8* blk, int sub, int s) {
        Raw r;
        r.d = *(const u16*)blk;
        r.g = *(const u16*)(blk + 2 + 8 * sub + 2 * (s >> 1));
        r.w = ld_u16x2(blk + 6 + 8 * sub);
        r.s = s;
        return r;
    }
    __device__ static void decode(const Raw& r, float& d, float& mo, float c[8]) {
        d = kiln_f16_to_f32((u16)r.d) * (0.5f + (float)(r.w >> 28)) * 0.25f;
        mo = 0.0f;
        const unsigned long long g = IQ2XXS_GRID[(r.g >> (8 * (r.s & 1))) & 0xFFu];
        const u32 sg = KSIGNS_IQ2XS[(r.w >> (7 * r.s)) & 127u];
        iq_lane((u32)g, (u32)(g >> 32), sg, c);
    }
};

// IQ2_XS: qs[4 sub + s] (u16 at 2 + 8 sub + 2 s): low 9 bits IQ2XS_GRID
// row, high 7 sign index; scales[sub] (byte 66 + sub): low nibble for
// elements 0..15, high for 16..31.
struct IQ2_XST {
    static constexpr int TS = 74;
    static constexpr int SUB = 8;
    static constexpr bool MIN = false;
    struct Raw { u32 d; u32 q; u32 sc; int sub; int s; };
    __device__ static int xoff0(int s) { return 8 * s; }
    __device__ static int xoff1(int s) { return 8 * s + 4; }
    __device__ static Raw fetch(const u8* blk, int sub, int s) {
        Raw r;
        r.d = *(const u16*)blk;
        r.q = *(const u16*)(blk + 2 + 8 * sub + 2 * s);
        r.sc = *(const u16*)(blk + 66 + (sub & 6));
        r.sub = sub;
        r.s = s;
        return r;
    }
    __device__ static void decode(const Raw& r, float& d, float& mo, float c[8]) {
        const u32 ls = (r.sc >> (8 * (r.sub & 1) + 4 * (r.s >> 1))) & 0xFu;
        d = kiln_f16_to_f32((u16)r.d) * (0.5f + (float)ls) * 0.25f;
        mo = 0.0f;
        const unsigned long long g = IQ2XS_GRID[r.q & 511u];
        iq_lane((u32)g, (u32)(g >> 32), KSIGNS_IQ2XS[r.q >> 9], c);
    }
};

// IQ3_XXS: 64 grid-index bytes (IQ3XXS_GRID rows of 4; sub-block sub's at
// 2 + 8 sub), then per sub-block a u32 at 66 + 4 sub laid out like
// IQ2_XXS's second word.
struct IQ3_XXST {
    static constexpr int TS = 98;
    static constexpr int SUB = 8;
    static constexpr bool MIN = false;
    struct Raw { u32 d; u32 g; u32 w; int s; };
    __device__ static int xoff0(int s) { return 8 * s; }
    __device__ static int xoff1(int s) { return 8 * s + 4; }
    __device__ static Raw fetch(const u8* blk, int sub, int s) {
        Raw r;
        r.d = *(const u16*)blk;
        r.g = *(const u16*)(blk + 2 + 8 * sub + 2 * s);
        r.w = ld_u16x2(blk + 66 + 4 * sub);
        r.s = s;
        return r;
    }
    __device__ static void decode(const Raw& r, float& d, float& mo, float c[8]) {
        d = kiln_f16_to_f32((u16)r.d) * (0.5f + (float)(r.w >> 28)) * 0.5f;
        mo = 0.0f;
        const u32 sg = KSIGNS_IQ2XS[(r.w >> (7 * r.s)) & 127u];
        iq_lane(IQ3XXS_GRID[r.g & 0xFFu], IQ3XXS_GRID[r.g >> 8], sg, c);
    }
};

// IQ3_S: index j = 8 sub + k (k = 2 s, 2 s + 1 here) is qs[j] (byte 2 + j)
// with bit k of qh[sub] (byte 66 + sub) as bit 8 (IQ3S_GRID rows of 4);
// sign bits of elements 8 s.. in signs[4 sub + s] (byte 74 + 4 sub + s);
// ls = nibble sub % 2 of scales[sub / 2] (byte 106 + sub / 2).
struct IQ3_ST {
    static constexpr int TS = 110;
    static constexpr int SUB = 8;
    static constexpr bool MIN = false;
    struct Raw { u32 d; u32 q; u32 h; u32 sg; u32 sc; int sub; int s; };
    __device__ static int xoff0(int s) { return 8 * s; }
    __device__ static int xoff1(int s) { return 8 * s + 4; }
    __device__ static Raw fetch(const u8* blk, int sub, int s) {
        Raw r;
        r.d = *(const u16*)blk;
        r.q = *(const u16*)(blk + 2 + 8 * sub + 2 * s);
        r.h = *(const u16*)(blk + 66 + (sub & 6));
        r.sg = *(const u16*)(blk + 74 + 4 * sub + (s & 2));
        r.sc = *(const u16*)(blk + 106 + (sub & 4) / 2);
        r.sub = sub;
        r.s = s;
        return r;
    }
    __device__ static void decode(const Raw& r, float& d, float& mo, float c[8]) {
        const u32 ls = (r.sc >> (8 * ((r.sub >> 1) & 1) + 4 * (r.sub & 1))) & 0xFu;
        d = kiln_f16_to_f32((u16)r.d) * (float)(1u + 2u * ls);
        mo = 0.0f;
        const u32 hb = (r.h >> (8 * (r.sub & 1) + 2 * r.s)) & 3u;
        const u32 i0 = (r.q & 0xFFu) | ((hb & 1u) << 8), i1 = (r.q >> 8) | ((hb & 2u) << 7);
        const u32 sg = (r.sg >> (8 * (r.s & 1))) & 0xFFu;
        iq_lane(IQ3S_GRID[i0], IQ3S_GRID[i1], sg, c);
    }
};
