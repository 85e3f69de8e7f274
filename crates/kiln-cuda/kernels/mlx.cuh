// MLX affine weights (kiln-core quant/mlx_block.rs, quant/mlx.rs): the
// mat-vec block decoder (SubBlocks interface of matvec.cuh / decode_kq.cuh)
// and the row-element reader of the embedding lookup. Included after
// common.cuh and matvec.cuh.
//
// Layout, one block per group of GROUP values (BITS 2, 3, 4, 5, 6, 8; GROUP
// 32, 64, 128; SCALE f16, bf16 or f32):
//
//   scale | bias (SCALE dtype each) | GROUP * BITS / 32 u32 words of codes
//
// value = scale * q + bias. The codes of a group are one little-endian bit
// stream: code i is bits i*BITS .. (i+1)*BITS, bit b being bit b % 32 of
// word b / 32, so 3-, 5- and 6-bit codes may straddle two words. A block is
// a multiple of 4 bytes (the launchers require 4-byte aligned weights).
//
// The kernels of a format are compiled per format: kiln-cuda/src/mlx.rs
// prepends KILN_MLX_BITS, KILN_MLX_GROUP, KILN_MLX_SCALE and KILN_MLX_TAG
// (e.g. q4_g64_bf16) to a family's source, which then emits only its MLX
// entry points, named with KILN_MLX_NAME (mul_mv_mlx_q4_g64_bf16_f32_m1).
//
// scripts/check-cuda-mlx.py runs this code on the host against the
// reference dequantize for every format (no GPU).
#pragma once

#define KILN_MLX_F16 0
#define KILN_MLX_BF16 1
#define KILN_MLX_F32 2

// A scale or bias: the f16 / bf16 bits in the low half of `h`, or the f32 bits.
template <int SCALE>
__device__ __forceinline__ float mlx_scale(u32 h) {
    if constexpr (SCALE == KILN_MLX_F32) {
        return __uint_as_float(h);
    } else if constexpr (SCALE == KILN_MLX_BF16) {
        return kiln_bf16_to_f32((u16)(h & 0xFFFFu));
    } else {
        return kiln_f16_to_f32((u16)(h & 0xFFFFu));
    }
}

// A code (< 2^23) as an exact float: 0x4B000000 | q is the float 2^23 + q.
__device__ __forceinline__ float mlx_code_f32(u32 q) {
    return __uint_as_float(0x4B000000u | q) - 8388608.0f;
}

// Mat-vec decoder: virtual block `sub` (32 values) of a block, lane part s
// (0..3) takes the 8 consecutive values 8s .. 8s + 7, i.e. the 8 * BITS bits
// from bit (32 sub + 8 s) BITS of the block's codes: one word for 2 and 4
// bits (at a 16- or 32-bit boundary), else two (word of the first and of
// the last bit; at most 64 bits from the first word's start: the shift is
// 0 or 16 for 6 bits, 8 * (s % 4) for 3 and 5, 0 for 8).
template <int BITS, int GROUP, int SCALE>
struct MlxT {
    static_assert(BITS == 2 || BITS == 3 || BITS == 4 || BITS == 5 || BITS == 6 || BITS == 8,
                  "MLX bits");
    static_assert(GROUP == 32 || GROUP == 64 || GROUP == 128, "MLX group size");
    static_assert(SCALE == KILN_MLX_F16 || SCALE == KILN_MLX_BF16 || SCALE == KILN_MLX_F32,
                  "MLX scale dtype");
    static constexpr int SB = SCALE == KILN_MLX_F32 ? 4 : 2;  // bytes of the scale (and the bias)
    static constexpr int WORDS = GROUP * BITS / 32;           // code words per block
    static constexpr int TS = 2 * SB + 4 * WORDS;             // bytes per block
    static constexpr int SUB = GROUP / 32;                    // virtual blocks per block
    static constexpr bool MIN = true;
    static constexpr bool TWO = BITS != 2 && BITS != 4;  // a lane's codes span two words
    static_assert(TS % 4 == 0, "MLX blocks are whole words");
    // h: scale (f32) or scale | bias << 16 (f16 / bf16); b: bias (f32);
    // lo, hi: the code words; sh: bit of the first code in lo.
    struct Raw { u32 h; u32 b; u32 lo; u32 hi; u32 sh; };
    __device__ static int xoff0(int s) { return 8 * s; }
    __device__ static int xoff1(int s) { return 8 * s + 4; }
    __device__ static Raw fetch(const u8* blk, int sub, int s) {
        Raw r;
        r.h = *(const u32*)blk;
        r.b = SB == 4 ? *(const u32*)(blk + 4) : 0u;
        const u32 bit0 = (u32)(32 * sub + 8 * s) * BITS;
        const u32* codes = (const u32*)(blk + 2 * SB);
        r.lo = codes[bit0 >> 5];
        r.hi = TWO ? codes[(bit0 + 8 * BITS - 1) >> 5] : 0u;
        r.sh = bit0 & 31u;
        return r;
    }
    __device__ static void decode(const Raw& r, float& d, float& mo, float c[8]) {
        d = mlx_scale<SCALE>(r.h);
        mo = mlx_scale<SCALE>(SB == 4 ? r.b : r.h >> 16);
        if constexpr (BITS == 8) {
#pragma unroll
            for (int i = 0; i < 4; i++) {
                c[i] = byte_f32(r.lo, i, 8388608.0f);
                c[4 + i] = byte_f32(r.hi, i, 8388608.0f);
            }
        } else if constexpr (BITS == 4) {
            // Byte i holds values 2i (low nibble) and 2i + 1 (high).
            const u32 ev = r.lo & 0x0F0F0F0Fu, od = (r.lo >> 4) & 0x0F0F0F0Fu;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                c[2 * i] = byte_f32(ev, i, 8388608.0f);
                c[2 * i + 1] = byte_f32(od, i, 8388608.0f);
            }
        } else if constexpr (BITS == 2) {
            const u32 q = r.lo >> r.sh;
#pragma unroll
            for (int e = 0; e < 8; e++) c[e] = mlx_code_f32((q >> (2 * e)) & 3u);
        } else {
            const u64 v = (((u64)r.hi << 32) | r.lo) >> r.sh;
#pragma unroll
            for (int e = 0; e < 8; e++) c[e] = mlx_code_f32((u32)(v >> (e * BITS)) & ((1u << BITS) - 1u));
        }
    }
};

// Element j of a row of MLX blocks (the embedding lookup), rounded as the
// reference: scale * q, then + bias, each in f32 (no fused multiply-add).
// The second code word is read only when the code straddles it (it then
// lies in the same block).
template <int BITS, int GROUP, int SCALE>
struct MlxRow {
    using T = MlxT<BITS, GROUP, SCALE>;
    static __device__ __forceinline__ float get(const u8* row, u64 j) {
        const u8* blk = row + (j / GROUP) * T::TS;
        const u32 bit = (u32)(j % GROUP) * BITS, w = bit >> 5, sh = bit & 31u;
        const u32* codes = (const u32*)(blk + 2 * T::SB);
        u64 v = codes[w];
        if (sh + BITS > 32u) v |= (u64)codes[w + 1] << 32;
        const u32 q = (u32)(v >> sh) & ((1u << BITS) - 1u);
        const u32 h = *(const u32*)blk;
        const float d = mlx_scale<SCALE>(h);
        const float mo = mlx_scale<SCALE>(T::SB == 4 ? *(const u32*)(blk + 4) : h >> 16);
        return __fadd_rn(__fmul_rn(d, (float)q), mo);
    }
};

#ifdef KILN_MLX_BITS
// This module's format (see the header) and its entry-point names.
typedef MlxT<KILN_MLX_BITS, KILN_MLX_GROUP, KILN_MLX_SCALE> MlxFmt;
typedef MlxRow<KILN_MLX_BITS, KILN_MLX_GROUP, KILN_MLX_SCALE> MlxFmtRow;
#define KILN_CAT3_(a, b, c) a##b##c
#define KILN_CAT3(a, b, c) KILN_CAT3_(a, b, c)
// KILN_MLX_NAME(mul_mv_mlx_, _f32_m1) -> mul_mv_mlx_<tag>_f32_m1
#define KILN_MLX_NAME(prefix, suffix) KILN_CAT3(prefix, KILN_MLX_TAG, suffix)
#endif
