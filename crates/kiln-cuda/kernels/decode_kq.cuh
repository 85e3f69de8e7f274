// Mat-vec block decoders for the GGML formats with a fifth bit, a
// non-linear grid or 256-element super-blocks: Q5_0, Q5_1, IQ4_NL (SUB = 1)
// and Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS (SUB = 8). The reference
// dequantizers of kiln-core (quant/q5.rs, k_quants.rs, iq4.rs) are the spec.
// Included after common.cuh and matvec.cuh.
//
// Interface (SubBlocks in matvec.cuh): a weight row is a run of TS-byte
// (super-)blocks, each SUB virtual blocks of 32 elements. fetch(sblk, sub,
// s) loads, for lane part s (0..3) of virtual block `sub` of the (super-)
// block at sblk, the raw words that lane needs (no arithmetic on them, so
// the loads stay in flight until decode); decode turns them into 8 codes
// c[e] with weight = d * c[e] + mo (mo = 0 where MIN is false) for the
// elements xoff0(s) + e (e < 4) and xoff1(s) + e - 4 (e >= 4) of the
// virtual block. Sub-block scales (per 32 or per 16 elements) go into d and
// mo: the lanes are laid out so that the 8 elements of one lane always
// share one scale (per-16 formats use xoff0 = 8s, xoff1 = 8s + 4: lanes
// 0, 1 cover the first 16 elements, lanes 2, 3 the second).
//
// Codes are turned into floats with byte_f32 (exact, no conversion
// instructions); signed code offsets (q - 16, q - 32, q - 4, grid + 128)
// are removed in that step, exactly. Formats whose super-blocks are not a
// multiple of 4 bytes (Q5_0 22, IQ4_NL 18, Q3_K 110, Q6_K 210) load 16-bit
// halves; the others load aligned 32-bit words.
//
// Field offsets are not static_asserted here (NVRTC 13.0 has no
// __builtin_offsetof); the struct sizes are, in common.cuh, and
// scripts/check-cuda-decoders.py builds these decoders as host C++ and
// checks every decoded weight against gguf.quants' dequantizer (no GPU).
#pragma once

__device__ __forceinline__ u32 ld_u32(const u8* p) { return *(const u32*)p; }

// Bits 0..3 of x to bit 0 of bytes 0..3 (the shifted copies x << 7i do not
// overlap, so the multiply adds without carries).
__device__ __forceinline__ u32 spread4(u32 x) {
    return ((x & 0xFu) * 0x00204081u) & 0x01010101u;
}

// Byte i of v (each 0..15) -> byte i of the result = IQ4 grid value + 128
// (kiln-core KVALUES_IQ4NL: -127, -104, -83, -65, -49, -35, -22, -10, 1, 13,
// 25, 38, 53, 69, 89, 113), by two byte-permutes over the table held in
// four immediate words and a per-byte select on the code's bit 3.
__device__ __forceinline__ u32 iq4_grid4(u32 v) {
    const u32 x = v | (v >> 4);  // byte 0: v0 | v1 << 4, byte 2: v2 | v3 << 4
    const u32 sel = ((x & 0xFFu) | ((x >> 8) & 0xFF00u)) & 0x7777u;
    const u32 lo = __byte_perm(0x3F2D1801u, 0x766A5D4Fu, sel);  // grid[0..8] + 128
    const u32 hi = __byte_perm(0xA6998D81u, 0xF1D9C5B5u, sel);  // grid[8..16] + 128
    const u32 m = ((v >> 3) & 0x01010101u) * 0xFFu;
    return (lo & ~m) | (hi & m);
}

// 2^23 + bias: byte_f32 subtracts it to give (byte - bias) exactly.
#define KQ_BIAS(b) (8388608.0f + (float)(b))

// Q5_0: x = d * (q - 16), q = low nibble | bit of qh << 4; byte j of qs
// holds elements j (low) and j + 16 (high), qh bit j is element j's.
struct Q5_0T {
    static constexpr int TS = 22;
    static constexpr int SUB = 1;
    static constexpr bool MIN = false;
    struct Raw { u32 d; u32 h; u32 q; int s; };
    __device__ static int xoff0(int s) { return 4 * s; }
    __device__ static int xoff1(int s) { return 16 + 4 * s; }
    __device__ static Raw fetch(const u8* blk, int, int s) {
        Raw r;
        r.d = *(const u16*)blk;
        r.h = ld_u16x2(blk + 2);
        r.q = ld_u16x2(blk + 6 + 4 * s);
        r.s = s;
        return r;
    }
    __device__ static void decode(const Raw& r, float& d, float& mo, float c[8]) {
        d = kiln_f16_to_f32((u16)r.d);
        mo = 0.0f;
        const u32 lo = (r.q & 0x0F0F0F0Fu) | (spread4(r.h >> (4 * r.s)) << 4);
        const u32 hi = ((r.q >> 4) & 0x0F0F0F0Fu) | (spread4(r.h >> (16 + 4 * r.s)) << 4);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            c[i] = byte_f32(lo, i, KQ_BIAS(16));
            c[4 + i] = byte_f32(hi, i, KQ_BIAS(16));
        }
    }
};

// Q5_1: x = d * q + m, q as Q5_0.
struct Q5_1T {
    static constexpr int TS = 24;
    static constexpr int SUB = 1;
    static constexpr bool MIN = true;
    struct Raw { u32 dm; u32 h; u32 q; int s; };
    __device__ static int xoff0(int s) { return 4 * s; }
    __device__ static int xoff1(int s) { return 16 + 4 * s; }
    __device__ static Raw fetch(const u8* blk, int, int s) {
        Raw r;
        r.dm = ld_u32(blk);
        r.h = ld_u32(blk + 4);
        r.q = ld_u32(blk + 8 + 4 * s);
        r.s = s;
        return r;
    }
    __device__ static void decode(const Raw& r, float& d, float& mo, float c[8]) {
        d = kiln_f16_to_f32((u16)(r.dm & 0xFFFFu));
        mo = kiln_f16_to_f32((u16)(r.dm >> 16));
        const u32 lo = (r.q & 0x0F0F0F0Fu) | (spread4(r.h >> (4 * r.s)) << 4);
        const u32 hi = ((r.q >> 4) & 0x0F0F0F0Fu) | (spread4(r.h >> (16 + 4 * r.s)) << 4);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            c[i] = byte_f32(lo, i, KQ_BIAS(0));
            c[4 + i] = byte_f32(hi, i, KQ_BIAS(0));
        }
    }
};

// IQ4_NL: x = d * grid[q], nibbles packed as Q4_0.
struct IQ4_NLT {
    static constexpr int TS = 18;
    static constexpr int SUB = 1;
    static constexpr bool MIN = false;
    struct Raw { u32 d; u32 q; };
    __device__ static int xoff0(int s) { return 4 * s; }
    __device__ static int xoff1(int s) { return 16 + 4 * s; }
    __device__ static Raw fetch(const u8* blk, int, int s) {
        Raw r;
        r.d = *(const u16*)blk;
        r.q = ld_u16x2(blk + 2 + 4 * s);
        return r;
    }
    __device__ static void decode(const Raw& r, float& d, float& mo, float c[8]) {
        d = kiln_f16_to_f32((u16)r.d);
        mo = 0.0f;
        const u32 lo = iq4_grid4(r.q & 0x0F0F0F0Fu), hi = iq4_grid4((r.q >> 4) & 0x0F0F0F0Fu);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            c[i] = byte_f32(lo, i, KQ_BIAS(128));
            c[4 + i] = byte_f32(hi, i, KQ_BIAS(128));
        }
    }
};

// The 6-bit scale and min of sub-block `sub` (0..7) from the 12 packed
// bytes of Q4_K / Q5_K, given as words s0 (bytes 0..3), s1 (4..7), s2 (8..11):
// sub < 4: sc = s[sub] & 63, mn = s[sub + 4] & 63; sub >= 4 (j = sub - 4):
// sc = s[sub + 4] & 15 | (s[j] >> 6) << 4, mn = s[sub + 4] >> 4 | (s[sub] >> 6) << 4.
__device__ __forceinline__ void k4_scale_min(u32 s0, u32 s1, u32 s2, int sub, float& sc, float& mn) {
    const int sh = 8 * (sub & 3);
    const u32 a = (s0 >> sh) & 0xFFu, b = (s1 >> sh) & 0xFFu, e = (s2 >> sh) & 0xFFu;
    const u32 lo_sc = a & 63u, lo_mn = b & 63u;
    const u32 hi_sc = (e & 0xFu) | ((a >> 6) << 4), hi_mn = (e >> 4) | ((b >> 6) << 4);
    sc = (float)(sub < 4 ? lo_sc : hi_sc);
    mn = (float)(sub < 4 ? lo_mn : hi_mn);
}

// Q4_K: x = (d * sc) * q - dmin * mn per 32-element sub-block; sub-block j's
// element t is nibble j % 2 of qs[32 * (j / 2) + t].
struct Q4_KT {
    static constexpr int TS = 144;
    static constexpr int SUB = 8;
    static constexpr bool MIN = true;
    struct Raw { u32 dm; u32 s0, s1, s2; u32 q0, q1; int sub; };
    __device__ static int xoff0(int s) { return 8 * s; }
    __device__ static int xoff1(int s) { return 8 * s + 4; }
    __device__ static Raw fetch(const u8* sb, int sub, int s) {
        Raw r;
        r.dm = ld_u32(sb);
        r.s0 = ld_u32(sb + 4);
        r.s1 = ld_u32(sb + 8);
        r.s2 = ld_u32(sb + 12);
        const u8* q = sb + 16 + 32 * (sub >> 1) + 8 * s;
        r.q0 = ld_u32(q);
        r.q1 = ld_u32(q + 4);
        r.sub = sub;
        return r;
    }
    __device__ static void decode(const Raw& r, float& d, float& mo, float c[8]) {
        float sc, mn;
        k4_scale_min(r.s0, r.s1, r.s2, r.sub, sc, mn);
        d = kiln_f16_to_f32((u16)(r.dm & 0xFFFFu)) * sc;
        mo = -(kiln_f16_to_f32((u16)(r.dm >> 16)) * mn);
        const int sh = 4 * (r.sub & 1);
        const u32 a = (r.q0 >> sh) & 0x0F0F0F0Fu, b = (r.q1 >> sh) & 0x0F0F0F0Fu;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            c[i] = byte_f32(a, i, KQ_BIAS(0));
            c[4 + i] = byte_f32(b, i, KQ_BIAS(0));
        }
    }
};

// Q5_K: Q4_K's nibbles plus bit `sub` of qh[t] as bit 4.
struct Q5_KT {
    static constexpr int TS = 176;
    static constexpr int SUB = 8;
    static constexpr bool MIN = true;
    struct Raw { u32 dm; u32 s0, s1, s2; u32 h0, h1; u32 q0, q1; int sub; };
    __device__ static int xoff0(int s) { return 8 * s; }
    __device__ static int xoff1(int s) { return 8 * s + 4; }
    __device__ static Raw fetch(const u8* sb, int sub, int s) {
        Raw r;
        r.dm = ld_u32(sb);
        r.s0 = ld_u32(sb + 4);
        r.s1 = ld_u32(sb + 8);
        r.s2 = ld_u32(sb + 12);
        r.h0 = ld_u32(sb + 16 + 8 * s);
        r.h1 = ld_u32(sb + 20 + 8 * s);
        const u8* q = sb + 48 + 32 * (sub >> 1) + 8 * s;
        r.q0 = ld_u32(q);
        r.q1 = ld_u32(q + 4);
        r.sub = sub;
        return r;
    }
    __device__ static void decode(const Raw& r, float& d, float& mo, float c[8]) {
        float sc, mn;
        k4_scale_min(r.s0, r.s1, r.s2, r.sub, sc, mn);
        d = kiln_f16_to_f32((u16)(r.dm & 0xFFFFu)) * sc;
        mo = -(kiln_f16_to_f32((u16)(r.dm >> 16)) * mn);
        const int sh = 4 * (r.sub & 1);
        const u32 a = ((r.q0 >> sh) & 0x0F0F0F0Fu) | (((r.h0 >> r.sub) & 0x01010101u) << 4);
        const u32 b = ((r.q1 >> sh) & 0x0F0F0F0Fu) | (((r.h1 >> r.sub) & 0x01010101u) << 4);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            c[i] = byte_f32(a, i, KQ_BIAS(0));
            c[4 + i] = byte_f32(b, i, KQ_BIAS(0));
        }
    }
};

// Q6_K: x = (d * sc) * (q - 32) per 16-element sub-block (sc: i8); sub-block
// j's element t: low nibble (j / 2) % 2 of ql[64 * (j / 4) + 32 * (j % 2) + t],
// high 2 bits at bit 2 * (j % 4) of qh[32 * (j / 4) + t], scale
// scales[2j + t / 16] (= 2j + s / 2 for this lane layout).
struct Q6_KT {
    static constexpr int TS = 210;
    static constexpr int SUB = 8;
    static constexpr bool MIN = false;
    struct Raw { u32 d; u32 sc; u32 l0, l1; u32 h0, h1; int sub; int s; };
    __device__ static int xoff0(int s) { return 8 * s; }
    __device__ static int xoff1(int s) { return 8 * s + 4; }
    __device__ static Raw fetch(const u8* sb, int sub, int s) {
        Raw r;
        r.d = *(const u16*)(sb + 208);
        r.sc = *(const u16*)(sb + 192 + 2 * sub);
        const u8* l = sb + 64 * (sub >> 2) + 32 * (sub & 1) + 8 * s;
        r.l0 = ld_u16x2(l);
        r.l1 = ld_u16x2(l + 4);
        const u8* h = sb + 128 + 32 * (sub >> 2) + 8 * s;
        r.h0 = ld_u16x2(h);
        r.h1 = ld_u16x2(h + 4);
        r.sub = sub;
        r.s = s;
        return r;
    }
    __device__ static void decode(const Raw& r, float& d, float& mo, float c[8]) {
        const int sc = (int)(i8)(u8)((r.sc >> (8 * (r.s >> 1))) & 0xFFu);
        d = kiln_f16_to_f32((u16)r.d) * (float)sc;
        mo = 0.0f;
        const int ls = 4 * ((r.sub >> 1) & 1), hs = 2 * (r.sub & 3);
        const u32 a = ((r.l0 >> ls) & 0x0F0F0F0Fu) | (((r.h0 >> hs) & 0x03030303u) << 4);
        const u32 b = ((r.l1 >> ls) & 0x0F0F0F0Fu) | (((r.h1 >> hs) & 0x03030303u) << 4);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            c[i] = byte_f32(a, i, KQ_BIAS(32));
            c[4 + i] = byte_f32(b, i, KQ_BIAS(32));
        }
    }
};

// IQ4_XS: x = (d * (ls - 32)) * grid[q] per 32-element sub-block; ls = low
// nibble sub % 2 of scales_l[sub / 2] | bits 2 * sub of scales_h << 4; the
// sub-block's codes are qs[16 * sub ..], packed as Q4_0.
struct IQ4_XST {
    static constexpr int TS = 136;
    static constexpr int SUB = 8;
    static constexpr bool MIN = false;
    struct Raw { u32 dh; u32 sl; u32 q; int sub; };
    __device__ static int xoff0(int s) { return 4 * s; }
    __device__ static int xoff1(int s) { return 16 + 4 * s; }
    __device__ static Raw fetch(const u8* sb, int sub, int s) {
        Raw r;
        r.dh = ld_u32(sb);
        r.sl = ld_u32(sb + 4);
        r.q = ld_u32(sb + 8 + 16 * sub + 4 * s);
        r.sub = sub;
        return r;
    }
    __device__ static void decode(const Raw& r, float& d, float& mo, float c[8]) {
        const u32 ls = ((r.sl >> (4 * r.sub)) & 0xFu) | (((r.dh >> (16 + 2 * r.sub)) & 3u) << 4);
        d = kiln_f16_to_f32((u16)(r.dh & 0xFFFFu)) * (float)((int)ls - 32);
        mo = 0.0f;
        const u32 lo = iq4_grid4(r.q & 0x0F0F0F0Fu), hi = iq4_grid4((r.q >> 4) & 0x0F0F0F0Fu);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            c[i] = byte_f32(lo, i, KQ_BIAS(128));
            c[4 + i] = byte_f32(hi, i, KQ_BIAS(128));
        }
    }
};

// Q3_K: x = (d * (sc - 32)) * (q - 4 + 4 * hbit) per 16-element sub-block;
// sub-block j's element t: 2 bits at bit 2 * (j % 4) of qs[32 * (j / 4) + t],
// hbit = bit j of hmask[t]; 6-bit scale J = 2j + t / 16: low 4 bits nibble
// J / 8 of scales[J % 8], high 2 bits at bit 2 * (J / 4) of scales[8 + J % 4].
struct Q3_KT {
    static constexpr int TS = 110;
    static constexpr int SUB = 8;
    static constexpr bool MIN = false;
    struct Raw { u32 d; u32 sa, sb; u32 h0, h1; u32 q0, q1; int sub; int s; };
    __device__ static int xoff0(int s) { return 8 * s; }
    __device__ static int xoff1(int s) { return 8 * s + 4; }
    __device__ static Raw fetch(const u8* blk, int sub, int s) {
        Raw r;
        const int J = 2 * sub + (s >> 1);
        r.d = *(const u16*)(blk + 108);
        r.sa = *(const u16*)(blk + 96 + (J & 6));  // scales[J % 8] at byte J & 1
        r.sb = *(const u16*)(blk + 104 + (J & 2));  // scales[8 + J % 4] at byte J & 1
        r.h0 = ld_u16x2(blk + 8 * s);
        r.h1 = ld_u16x2(blk + 8 * s + 4);
        const u8* q = blk + 32 + 32 * (sub >> 2) + 8 * s;
        r.q0 = ld_u16x2(q);
        r.q1 = ld_u16x2(q + 4);
        r.sub = sub;
        r.s = s;
        return r;
    }
    __device__ static void decode(const Raw& r, float& d, float& mo, float c[8]) {
        const int J = 2 * r.sub + (r.s >> 1);
        const u32 lo = (r.sa >> (8 * (J & 1) + 4 * (J >> 3))) & 0xFu;
        const u32 hi = (r.sb >> (8 * (J & 1) + 2 * (J >> 2))) & 3u;
        d = kiln_f16_to_f32((u16)r.d) * (float)((int)(lo | (hi << 4)) - 32);
        mo = 0.0f;
        const int qs = 2 * (r.sub & 3);
        const u32 a = ((r.q0 >> qs) & 0x03030303u) | (((r.h0 >> r.sub) & 0x01010101u) << 2);
        const u32 b = ((r.q1 >> qs) & 0x03030303u) | (((r.h1 >> r.sub) & 0x01010101u) << 2);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            c[i] = byte_f32(a, i, KQ_BIAS(4));
            c[4 + i] = byte_f32(b, i, KQ_BIAS(4));
        }
    }
};

// Q2_K: x = (d * sc) * q - dmin * mn per 16-element sub-block; byte
// scales[2j + t / 16] holds sc (low nibble) and mn (high); sub-block j's
// element t: 2 bits at bit 2 * (j % 4) of qs[32 * (j / 4) + t].
struct Q2_KT {
    static constexpr int TS = 84;
    static constexpr int SUB = 8;
    static constexpr bool MIN = true;
    struct Raw { u32 sc; u32 dm; u32 q0, q1; int sub; int s; };
    __device__ static int xoff0(int s) { return 8 * s; }
    __device__ static int xoff1(int s) { return 8 * s + 4; }
    __device__ static Raw fetch(const u8* sb, int sub, int s) {
        Raw r;
        r.sc = ld_u32(sb + 4 * (sub >> 1));
        r.dm = ld_u32(sb + 80);
        const u8* q = sb + 16 + 32 * (sub >> 2) + 8 * s;
        r.q0 = ld_u32(q);
        r.q1 = ld_u32(q + 4);
        r.sub = sub;
        r.s = s;
        return r;
    }
    __device__ static void decode(const Raw& r, float& d, float& mo, float c[8]) {
        const u32 byte = (r.sc >> (8 * (2 * (r.sub & 1) + (r.s >> 1)))) & 0xFFu;
        d = kiln_f16_to_f32((u16)(r.dm & 0xFFFFu)) * (float)(byte & 0xFu);
        mo = -(kiln_f16_to_f32((u16)(r.dm >> 16)) * (float)(byte >> 4));
        const int qs = 2 * (r.sub & 3);
        const u32 a = (r.q0 >> qs) & 0x03030303u, b = (r.q1 >> qs) & 0x03030303u;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            c[i] = byte_f32(a, i, KQ_BIAS(0));
            c[4 + i] = byte_f32(b, i, KQ_BIAS(0));
        }
    }
};
