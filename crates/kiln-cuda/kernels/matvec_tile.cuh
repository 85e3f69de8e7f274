// Tile mat-vec: one CTA reads a block of consecutive weight rows (a "tile",
// contiguous bytes) into shared memory with cp.async, all of it requested
// at once, then its warps decode row pairs from there with the block
// decoders of matvec.cuh / decode_kq.cuh. Included after matvec_staged.cuh.
//
// Why (docs/perf.md §22): the expert mat-vecs of a MoE decode step are
// small (Qwen3-30B-A3B: 8 experts x 768 rows x 1152 bytes per stack, 7 MB)
// and the per-pair kernels (matvec.cuh, matvec_staged.cuh) keep only a few
// hundred bytes to a few KB per warp in flight and read the gated path's
// two stacks one after the other. A tile CTA asks for its whole block (16-
// 32 KB) in its first instructions, so the memory system sees the whole
// product's bytes at once; its warps then work from shared memory.
//
// A tile is copied as 16-byte pieces from its start rounded down to 16
// bytes (the caller's base is 16-byte aligned, so the rounding stays
// inside the weights) to its end, the last piece reading only the bytes
// before the end (cp.async's src-size; the rest of the piece is zeroed).
// Row i of the tile then starts `lead + i * row_bytes` bytes into the
// shared copy, with the same alignment modulo 16 as in global memory, so
// the decoders' 2- and 4-byte loads stay aligned.
#pragma once

// Rows one tile CTA holds at most (the host's tile_rows <= this).
#define TILE_MAX_ROWS 64

// cp.async of the `n` (0..16) bytes at src into the 16 bytes at dst (both
// 16-byte aligned), zero-filling the rest; synchronous below sm_80.
__device__ __forceinline__ void tile_cp16(u8* dst, const u8* src, u32 n) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_addr(dst)), "l"(src), "r"(n)
                 : "memory");
#else
    for (u32 i = 0; i < 16; i++) dst[i] = i < n ? src[i] : (u8)0;
#endif
}

// Request bytes [src, src + len) into dst (shared, 16-byte aligned, room
// for len + 16 bytes), split over the CTA's threads; returns where src
// landed (bytes into dst). Every thread must call it; commit and wait with
// stage_commit / stage_wait (matvec_staged.cuh).
__device__ __forceinline__ u32 tile_request(u8* dst, const u8* src, u64 len) {
    const u64 a = (u64)src & ~(u64)15;
    const u64 end = (u64)src + len;
    const u64 pieces = (end - a + 15) / 16;
    for (u64 c = threadIdx.x; c < pieces; c += blockDim.x) {
        const u64 at = a + 16 * c;
        tile_cp16(dst + 16 * c, (const u8*)at, (u32)min((u64)16, end - at));
    }
    return (u32)((u64)src - a);
}

// Dot products of the tile's rows 0 .. nr - 1 (row i at rows + i *
// row_bytes, shared memory) with x (k floats, 16-byte aligned): warp w of
// the CTA takes row pairs w, w + warps, ...; each pair as one warp step
// of mv_blocks_acc (4 lanes per virtual block, 8 blocks per step), reduced
// over the warp. store(i, v) runs on lane 0 for every row i < nr.
template <class Q, class B, class Store>
__device__ __forceinline__ void tile_rows_dot(const u8* rows, u64 row_bytes, int nr, u64 k,
                                              const float* __restrict__ x, Store store) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, s = lane & 3;
    const int warps = blockDim.x >> 5;
    const u64 nvb = k / QK;
    const float* const xr[1] = {x};
    for (int pp = warp; 2 * pp < nr; pp += warps) {
        const int ja = 2 * pp, jb = min(2 * pp + 1, nr - 1);
        const u8* wa = rows + (u64)ja * row_bytes;
        const u8* wb = rows + (u64)jb * row_bytes;
        float acc[1][MV_ROWS] = {{0.0f, 0.0f}};
#pragma unroll 2
        for (u64 v = (u64)(lane >> 2); v < nvb; v += MV_BLOCKS_PER_WARP) {
            const typename Q::Raw ra = B::at(wa, v, s);
            const typename Q::Raw rb = B::at(wb, v, s);
            mv_step<Q, 1>(ra, rb, xr, v, s, acc);
        }
#pragma unroll
        for (int j = 0; j < MV_ROWS; j++) {
#pragma unroll
            for (int off = 16; off > 0; off >>= 1)
                acc[0][j] += __shfl_xor_sync(0xFFFFFFFFu, acc[0][j], off);
        }
        if (lane == 0) {
            store(ja, acc[0][0]);
            if (ja + 1 < nr) store(ja + 1, acc[0][1]);
        }
    }
}

// ---- int8 activations (tile kernels of the formats with a Q8 dot unit) ----
//
// The float decode above costs ~6 instructions per weight (Q4_K), which is
// what bounds the tile kernels (docs/perf.md §22). The Q8 variants quantize
// x once per CTA, while the tile's bytes are in flight, to int8 codes per
// 32 elements (d = amax / 127, code = round(x / d): |x - d code| <= d / 2)
// plus each block's sum of the quantized x (d times the code sum, for the
// formats' offset and min terms), and take dot products of the weight
// codes with dp4a: ~1 instruction per weight. Every term sees the same
// quantized x, so the result is sum_e w_e (d q)_e up to f32 rounding and
// its error against the f32 reference is the activation rounding, at most
// sum_b d_b / 2 sum |w_e|: the bound the testkit holds every quantized
// mat-vec to (kiln-testkit cases/matmul.rs). (With the exact sum of x in
// the offset terms the error would scale with the unsigned codes instead:
// a Q4_0 block of codes 8, all weights zero, would contribute
// 8 d (sum d q - sum x) != 0; scripts/check-cuda-tile.py checks this.)

// Shared bytes of the x area for row length k: codes, then d and sum per 32.
__host__ __device__ constexpr u64 tile_xq_bytes(u64 k) { return k + 8 * (k / 32); }

// x (k floats, k a multiple of 32) -> area: k int8 codes, then k / 32 f32
// scales d, then k / 32 f32 sums d * (sum of the codes). Every thread calls
// it; warp w takes blocks w, w + warps, ...; the caller's barrier publishes
// the area.
__device__ __forceinline__ void tile_quantize_x(const float* __restrict__ x, u64 k, u8* area) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    const u64 nb = k / 32;
    float* dxs = (float*)(area + k);
    float* sxs = dxs + nb;
    for (u64 b = warp; b < nb; b += warps) {
        const float v = x[b * 32 + lane];
        float amax = fabsf(v);
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, off));
        const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
        const int q = __float2int_rn(v * inv);
        ((signed char*)area)[b * 32 + lane] = (signed char)q;
        float s = (float)q;  // the code sum: exact in f32 (|s| <= 32 * 127)
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xFFFFFFFFu, s, off);
        if (lane == 0) {
            const float d = amax / 127.0f;
            dxs[b] = d;
            sxs[b] = d * s;
        }
    }
}

// Q8 dot units: D::dot(blk, g, xi, dx, sx) = the dot product of unit g of
// the TS-byte block at blk (UW = 32 or 64 weights: x blocks UW / 32 of the
// row's unit index) with the int8 codes xi (UW / 4 words, little-endian
// bytes = consecutive elements), their scales dx and sums sx (dx times the
// block's code sum).

// Q4_K: unit g (0..3) of a super-block is group g of qs (32 bytes:
// sub-blocks 2g in the low nibbles, 2g + 1 in the high ones).
struct Q4_KDot {
    static constexpr int TS = 144, UNITS = 4, UW = 64;
    __device__ static float dot(const u8* sb, int g, const int (&xi)[UW / 4], const float* dx,
                                const float* sx) {
        const u32 dm = ld_u32(sb), s0 = ld_u32(sb + 4), s1 = ld_u32(sb + 8), s2 = ld_u32(sb + 12);
        float sc0, mn0, sc1, mn1;
        k4_scale_min(s0, s1, s2, 2 * g, sc0, mn0);
        k4_scale_min(s0, s1, s2, 2 * g + 1, sc1, mn1);
        const u8* q = sb + 16 + 32 * g;
        int i0 = 0, i1 = 0;
#pragma unroll
        for (int w = 0; w < 8; w++) {
            const u32 qw = ld_u32(q + 4 * w);
            i0 = __dp4a((int)(qw & 0x0F0F0F0Fu), xi[w], i0);
            i1 = __dp4a((int)((qw >> 4) & 0x0F0F0F0Fu), xi[8 + w], i1);
        }
        const float d = kiln_f16_to_f32((u16)(dm & 0xFFFFu));
        const float dmin = kiln_f16_to_f32((u16)(dm >> 16));
        return d * (sc0 * dx[0] * (float)i0 + sc1 * dx[1] * (float)i1) - dmin * (mn0 * sx[0] + mn1 * sx[1]);
    }
};

// Q5_K: Q4_K's units (group g of qs: sub-blocks 2g and 2g + 1) plus bits
// 2g and 2g + 1 of qh[t] (32 bytes at 16) as the codes' bit 4.
struct Q5_KDot {
    static constexpr int TS = 176, UNITS = 4, UW = 64;
    __device__ static float dot(const u8* sb, int g, const int (&xi)[UW / 4], const float* dx,
                                const float* sx) {
        const u32 dm = ld_u32(sb), s0 = ld_u32(sb + 4), s1 = ld_u32(sb + 8), s2 = ld_u32(sb + 12);
        float sc0, mn0, sc1, mn1;
        k4_scale_min(s0, s1, s2, 2 * g, sc0, mn0);
        k4_scale_min(s0, s1, s2, 2 * g + 1, sc1, mn1);
        const u8* q = sb + 48 + 32 * g;
        int i0 = 0, i1 = 0;
#pragma unroll
        for (int w = 0; w < 8; w++) {
            const u32 qw = ld_u32(q + 4 * w), hw = ld_u32(sb + 16 + 4 * w) >> (2 * g);
            const u32 lo = (qw & 0x0F0F0F0Fu) | ((hw & 0x01010101u) << 4);
            const u32 hi = ((qw >> 4) & 0x0F0F0F0Fu) | ((hw & 0x02020202u) << 3);
            i0 = __dp4a((int)lo, xi[w], i0);
            i1 = __dp4a((int)hi, xi[8 + w], i1);
        }
        const float d = kiln_f16_to_f32((u16)(dm & 0xFFFFu));
        const float dmin = kiln_f16_to_f32((u16)(dm >> 16));
        return d * (sc0 * dx[0] * (float)i0 + sc1 * dx[1] * (float)i1) - dmin * (mn0 * sx[0] + mn1 * sx[1]);
    }
};

// Q6_K: unit j (0..7) of a super-block is its 32-element sub-block j (the
// layout of Q6_KT, decode_kq.cuh): codes q = low nibble (j / 2) % 2 of
// ql[64 (j / 4) + 32 (j % 2) + t] | 2 bits at 2 (j % 4) of qh[32 (j / 4) + t]
// << 4, w = d sc (q - 32) with an i8 scale per 16 elements. The two halves
// take separate integer dot products, their offsets -32 times the half's
// code sum (dp4a with ones: the same for both rows of a pair, so computed
// once), so the unit is one exact integer times d dx. 210-byte blocks are
// only 2-byte aligned: 16-bit loads.
struct Q6_KDot {
    static constexpr int TS = 210, UNITS = 8, UW = 32;
    __device__ static float dot(const u8* sb, int j, const int (&xi)[UW / 4], const float* dx,
                                const float*) {
        const u8* l = sb + 64 * (j >> 2) + 32 * (j & 1);
        const u8* h = sb + 128 + 32 * (j >> 2);
        const int ls = 4 * ((j >> 1) & 1), hs = 2 * (j & 3);
        int i0 = 0, i1 = 0, c0 = 0, c1 = 0;
#pragma unroll
        for (int w = 0; w < 8; w++) {
            const u32 q = ((ld_u16x2(l + 4 * w) >> ls) & 0x0F0F0F0Fu) |
                          (((ld_u16x2(h + 4 * w) >> hs) & 0x03030303u) << 4);
            if (w < 4) {
                i0 = __dp4a((int)q, xi[w], i0);
                c0 = __dp4a(0x01010101, xi[w], c0);
            } else {
                i1 = __dp4a((int)q, xi[w], i1);
                c1 = __dp4a(0x01010101, xi[w], c1);
            }
        }
        const u32 sc = *(const u16*)(sb + 192 + 2 * j);
        const int sc0 = (int)(i8)(u8)(sc & 0xFFu), sc1 = (int)(i8)(u8)(sc >> 8);
        // |sc (i - 32 c)| <= 128 * 16 * 95 * 127 per half: exact in i32.
        const int acc = sc0 * (i0 - 32 * c0) + sc1 * (i1 - 32 * c1);
        return kiln_f16_to_f32(*(const u16*)(sb + 208)) * dx[0] * (float)acc;
    }
};

// Q4_0 / Q4_1: one 32-element block per unit; element i < 16 is the low
// nibble of qs[i], element 16 + i the high one; w = d (q - 8) or d q + m.
// Q4_0's 18-byte blocks are only 2-byte aligned: 16-bit loads.
template <bool MIN>
struct Q4Dot {
    static constexpr int TS = MIN ? 20 : 18, UNITS = 1, UW = 32;
    __device__ static float dot(const u8* blk, int, const int (&xi)[UW / 4], const float* dx,
                                const float* sx) {
        const u8* q = blk + (MIN ? 4 : 2);
        int acc = 0;
#pragma unroll
        for (int w = 0; w < 4; w++) {
            const u32 qw = MIN ? ld_u32(q + 4 * w) : ld_u16x2(q + 4 * w);
            acc = __dp4a((int)(qw & 0x0F0F0F0Fu), xi[w], acc);
            acc = __dp4a((int)((qw >> 4) & 0x0F0F0F0Fu), xi[4 + w], acc);
        }
        const float d = kiln_f16_to_f32(*(const u16*)blk);
        if (MIN) return d * dx[0] * (float)acc + kiln_f16_to_f32(*(const u16*)(blk + 2)) * sx[0];
        return d * (dx[0] * (float)acc - 8.0f * sx[0]);
    }
};

// Q8_0: one 32-element block of int8 codes per unit (2-byte aligned).
struct Q8_0Dot {
    static constexpr int TS = 34, UNITS = 1, UW = 32;
    __device__ static float dot(const u8* blk, int, const int (&xi)[UW / 4], const float* dx,
                                const float*) {
        int acc = 0;
#pragma unroll
        for (int w = 0; w < 8; w++) acc = __dp4a((int)ld_u16x2(blk + 2 + 4 * w), xi[w], acc);
        return kiln_f16_to_f32(*(const u16*)blk) * dx[0] * (float)acc;
    }
};

// tile_rows_dot with int8 activations (area: tile_quantize_x's output) and
// dot unit D: warp w takes row pairs w, w + warps, ...; lane l units l, l +
// 32, ... of both rows (each unit's 64 codes loaded once for the pair);
// reduced over the warp. store(i, v) on lane 0 for every row i < nr.
template <class D, class Store>
__device__ __forceinline__ void tile_rows_dot_q8(const u8* rows, u64 row_bytes, int nr, u64 k,
                                                 const u8* area, Store store) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    constexpr int XW = D::UW / 4, XB = D::UW / 32;  // code words and x blocks per unit
    const int units = (int)(row_bytes / D::TS) * D::UNITS;
    const float* dxs = (const float*)(area + k);
    const float* sxs = dxs + k / 32;
    for (int pp = warp; 2 * pp < nr; pp += warps) {
        const int ja = 2 * pp, jb = min(2 * pp + 1, nr - 1);
        const u8* wa = rows + (u64)ja * row_bytes;
        const u8* wb = rows + (u64)jb * row_bytes;
        float a0 = 0.0f, a1 = 0.0f;
        for (int u = lane; u < units; u += 32) {
            int xi[XW];
            const int4* xv = (const int4*)(area + D::UW * (u64)u);
#pragma unroll
            for (int i = 0; i < XW / 4; i++) {
                const int4 t = xv[i];
                xi[4 * i] = t.x;
                xi[4 * i + 1] = t.y;
                xi[4 * i + 2] = t.z;
                xi[4 * i + 3] = t.w;
            }
            const float* dx = dxs + XB * u;
            const float* sx = sxs + XB * u;
            const int blk = u / D::UNITS, g = u % D::UNITS;
            a0 += D::dot(wa + (u64)blk * D::TS, g, xi, dx, sx);
            a1 += D::dot(wb + (u64)blk * D::TS, g, xi, dx, sx);
        }
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
            a0 += __shfl_xor_sync(0xFFFFFFFFu, a0, off);
            a1 += __shfl_xor_sync(0xFFFFFFFFu, a1, off);
        }
        if (lane == 0) {
            store(ja, a0);
            if (ja + 1 < nr) store(ja + 1, a1);
        }
    }
}

// The two ways a tile CTA takes its dot products (mv_id_tile's template
// argument): float activations with block decoder Q / walker B, or int8
// activations with dot unit D (XQ: needs tile_xq_bytes(k) of shared memory
// after the stacks).
template <class Q, class B>
struct FloatTile {
    static constexpr bool XQ = false;
    template <class Store>
    __device__ static void rows(const u8* rows, u64 row_bytes, int nr, u64 k, const float* x,
                                const u8*, Store store) {
        tile_rows_dot<Q, B>(rows, row_bytes, nr, k, x, store);
    }
};
template <class D>
struct Q8Tile {
    static constexpr bool XQ = true;
    template <class Store>
    __device__ static void rows(const u8* rows, u64 row_bytes, int nr, u64 k, const float*,
                                const u8* area, Store store) {
        tile_rows_dot_q8<D>(rows, row_bytes, nr, k, area, store);
    }
};
