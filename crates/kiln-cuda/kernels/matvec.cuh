// Mat-vec building blocks shared by matmul.cu and matvec_fused.cu: the GGML
// block decoders and the accumulation loop of one CTA over a pair of weight
// rows (see matmul.cu for the tiling). Included after common.cuh.
#pragma once

#define MV_WARPS 4
#define MV_ROWS 2
#define MV_THREADS (MV_WARPS * 32)
// Blocks one warp covers per step (4 lanes per block).
#define MV_BLOCKS_PER_WARP 8

// Byte i of `bytes` (0..255) as an exact float, minus `bias`:
// 0x4B0000bb is the float 2^23 + bb.
__device__ __forceinline__ float byte_f32(u32 bytes, u32 i, float bias) {
    return __uint_as_float(__byte_perm(bytes, 0x4B000000u, 0x7540u + i)) - bias;
}

__device__ __forceinline__ u32 ld_u16x2(const u8* p) {
    const u16* q = (const u16*)p;
    return (u32)q[0] | ((u32)q[1] << 16);
}

// Each block format fetches, for lane part s (0..3) of a block, its raw bytes
// (`Raw`, a few registers, so two steps can be in flight) and decodes them to
// 8 codes c[e] with weight = d * c[e] + mo, for the elements at xoff0(s)+e
// (e < 4) and xoff1(s)+e-4 (e >= 4).
struct Q4_0T {
    static constexpr int TS = 18;
    static constexpr bool MIN = true;
    struct Raw { u32 d; u32 q; };
    __device__ static int xoff0(int s) { return 4 * s; }
    __device__ static int xoff1(int s) { return 16 + 4 * s; }
    __device__ static Raw fetch(const u8* blk, int s) {
        Raw r;
        r.d = *(const u16*)blk;
        r.q = ld_u16x2(blk + 2 + 4 * s);
        return r;
    }
    __device__ static void decode(const Raw& r, float& d, float& mo, float c[8]) {
        d = kiln_f16_to_f32((u16)r.d);
        mo = -8.0f * d;
        const u32 lo = r.q & 0x0F0F0F0Fu, hi = (r.q >> 4) & 0x0F0F0F0Fu;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            c[i] = byte_f32(lo, i, 8388608.0f);
            c[4 + i] = byte_f32(hi, i, 8388608.0f);
        }
    }
};

struct Q4_1T {
    static constexpr int TS = 20;
    static constexpr bool MIN = true;
    struct Raw { u32 h; u32 q; };
    __device__ static int xoff0(int s) { return 4 * s; }
    __device__ static int xoff1(int s) { return 16 + 4 * s; }
    __device__ static Raw fetch(const u8* blk, int s) {
        Raw r;
        r.h = *(const u32*)blk;
        r.q = *(const u32*)(blk + 4 + 4 * s);
        return r;
    }
    __device__ static void decode(const Raw& r, float& d, float& mo, float c[8]) {
        d = kiln_f16_to_f32((u16)(r.h & 0xFFFFu));
        mo = kiln_f16_to_f32((u16)(r.h >> 16));
        const u32 lo = r.q & 0x0F0F0F0Fu, hi = (r.q >> 4) & 0x0F0F0F0Fu;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            c[i] = byte_f32(lo, i, 8388608.0f);
            c[4 + i] = byte_f32(hi, i, 8388608.0f);
        }
    }
};

struct Q8_0T {
    static constexpr int TS = 34;
    static constexpr bool MIN = false;
    struct Raw { u32 d; u32 a; u32 b; };
    __device__ static int xoff0(int s) { return 8 * s; }
    __device__ static int xoff1(int s) { return 8 * s + 4; }
    __device__ static Raw fetch(const u8* blk, int s) {
        Raw r;
        r.d = *(const u16*)blk;
        r.a = ld_u16x2(blk + 2 + 8 * s);
        r.b = ld_u16x2(blk + 6 + 8 * s);
        return r;
    }
    __device__ static void decode(const Raw& r, float& d, float& mo, float c[8]) {
        d = kiln_f16_to_f32((u16)r.d);
        mo = 0.0f;
        // Flipping the sign bit maps the i8 code q to the byte q + 128.
        const u32 a = r.a ^ 0x80808080u, b = r.b ^ 0x80808080u;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            c[i] = byte_f32(a, i, 8388736.0f);
            c[4 + i] = byte_f32(b, i, 8388736.0f);
        }
    }
};

// Float weights: ld reads element e of a row; unpack turns 16 bytes into
// 16 / SIZE floats (matvec_staged.cuh).
struct F32T {
    static constexpr int SIZE = 4;
    __device__ static float ld(const u8* row, u64 e) { return ((const float*)row)[e]; }
    __device__ static void unpack(const uint4& v, float f[4]) {
        f[0] = __uint_as_float(v.x);
        f[1] = __uint_as_float(v.y);
        f[2] = __uint_as_float(v.z);
        f[3] = __uint_as_float(v.w);
    }
};
struct F16T {
    static constexpr int SIZE = 2;
    __device__ static float ld(const u8* row, u64 e) { return kiln_f16_to_f32(((const u16*)row)[e]); }
    __device__ static void unpack(const uint4& v, float f[8]) {
        const u32 u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            f[2 * i] = kiln_f16_to_f32((u16)(u[i] & 0xFFFFu));
            f[2 * i + 1] = kiln_f16_to_f32((u16)(u[i] >> 16));
        }
    }
};
struct BF16T {
    static constexpr int SIZE = 2;
    __device__ static float ld(const u8* row, u64 e) { return kiln_bf16_to_f32(((const u16*)row)[e]); }
    __device__ static void unpack(const uint4& v, float f[8]) {
        const u32 u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            f[2 * i] = __uint_as_float(u[i] << 16);
            f[2 * i + 1] = __uint_as_float(u[i] & 0xFFFF0000u);
        }
    }
};

// acc[r][0..2] += the block-part's contribution of weight rows (a, b) to x row r.
template <class Q, int M>
__device__ __forceinline__ void mv_step(const typename Q::Raw& ra, const typename Q::Raw& rb,
                                        const float* const (&xr)[M], u64 b, int s,
                                        float (&acc)[M][MV_ROWS]) {
    float d0, mo0, c0[8], d1, mo1, c1[8];
    Q::decode(ra, d0, mo0, c0);
    Q::decode(rb, d1, mo1, c1);
#pragma unroll
    for (int r = 0; r < M; r++) {
        const float* xb = xr[r] + b * QK;
        const float4 xa = *(const float4*)(xb + Q::xoff0(s));
        const float4 xc = *(const float4*)(xb + Q::xoff1(s));
        const float xv[8] = {xa.x, xa.y, xa.z, xa.w, xc.x, xc.y, xc.z, xc.w};
        float s0 = 0.0f, s1 = 0.0f, sx = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; e++) {
            s0 = fmaf(c0[e], xv[e], s0);
            s1 = fmaf(c1[e], xv[e], s1);
            if (Q::MIN) sx += xv[e];
        }
        if (Q::MIN) {
            acc[r][0] += fmaf(d0, s0, mo0 * sx);
            acc[r][1] += fmaf(d1, s1, mo1 * sx);
        } else {
            acc[r][0] = fmaf(d0, s0, acc[r][0]);
            acc[r][1] = fmaf(d1, s1, acc[r][1]);
        }
    }
}

// The shape a mat-vec CTA needs (fields of MatmulParams / FusedParams).
struct MvShape {
    u64 n;          // weight rows
    u64 k;          // row length
    u64 row_bytes;  // bytes of one weight row
    int kw;         // warps per row pair (quantized: 1, 2 or 4; float: MV_WARPS)
    bool halves;    // pair j (columns 2j, 2j + 1) reads rows j and j + n / 2, not 2j and 2j + 1
    int cw = 0;     // matvec_staged.cuh: copy width in bytes (16, 8, 4); 0 = direct loads
};

// The two weight rows of the pair that starts at output column j0 (missing
// rows, from an odd n, repeat the last real one; their results are not stored).
__device__ __forceinline__ void mv_pair_rows(const MvShape& p, u64 j0, u64& ja, u64& jb) {
    if (p.halves) {
        ja = j0 / 2;
        jb = j0 / 2 + p.n / 2;
    } else {
        ja = min(j0, p.n - 1);
        jb = min(j0 + 1, p.n - 1);
    }
}

// First weight row of this CTA's warp's pair; the CTA's pairs start at
// blockIdx.x * (MV_WARPS / kw) * MV_ROWS.
__device__ __forceinline__ u64 mv_row0(int kw) {
    const int warp = threadIdx.x >> 5, pairs = MV_WARPS / kw;
    return ((u64)blockIdx.x * pairs + warp / kw) * MV_ROWS;
}

// Where virtual block b (32 elements) of a weight row lies. FlatBlocks: the
// format's own 32-element blocks of TS bytes (Q4_0T, Q4_1T, Q8_0T:
// fetch(blk, s)). SubBlocks: sub-block b % SUB of super-block b / SUB, TS
// bytes per super-block (decode_kq.cuh: fetch(sblk, sub, s)); SUB = 1 for
// the 32-element formats there.
template <class Q>
struct FlatBlocks {
    static constexpr int SUB = 1;
    __device__ static typename Q::Raw at(const u8* row, u64 b, int s) {
        return Q::fetch(row + b * Q::TS, s);
    }
};
template <class Q>
struct SubBlocks {
    static constexpr int SUB = Q::SUB;
    __device__ static typename Q::Raw at(const u8* row, u64 b, int s) {
        return Q::fetch(row + (b / Q::SUB) * Q::TS, (int)(b % Q::SUB), s);
    }
};

// acc[r][j] = this thread's share of dot(weight row j of the warp's pair,
// xr[r]) for quantized w: [n, row_bytes] blocks; xr rows 16-byte aligned.
// Warp w of the CTA works on row pair w / kw, virtual blocks (w % kw) * 8 +
// lane / 4 + t * kw * 8; each loop step handles two strides of blocks,
// fetched one step ahead. The first step's weights are fetched before
// `pro(xr)` runs: pro may wait for the previous kernel (kiln_grid_wait) and
// stage x, so the weight reads overlap both. pro is called once by every
// thread. B (FlatBlocks / SubBlocks) locates a virtual block. With 8-block
// super-blocks every stride is a multiple of 8, so lane group lane / 4 always
// decodes sub-block lane / 4 and a warp step covers whole super-blocks.
template <class Q, class B, int M, class Pro>
__device__ __forceinline__ void mv_blocks_acc(const MvShape& p, const u8* __restrict__ w, Pro pro,
                                              float (&acc)[M][MV_ROWS]) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, s = lane & 3;
    const int kw = p.kw, ks = warp % kw;
    u64 ja, jb;
    mv_pair_rows(p, min(mv_row0(kw), p.n - 1), ja, jb);
    const u64 nb = p.k / QK;
    const u8* w0 = w + ja * p.row_bytes;
    const u8* w1 = w + jb * p.row_bytes;
#pragma unroll
    for (int r = 0; r < M; r++) {
        acc[r][0] = 0.0f;
        acc[r][1] = 0.0f;
    }
    const u64 stride = (u64)kw * MV_BLOCKS_PER_WARP;
    u64 b = (u64)ks * MV_BLOCKS_PER_WARP + (u64)(lane >> 2);
    typename Q::Raw ra, rb, rc, rd;
    bool two = false;
    if (b < nb) {
        ra = B::at(w0, b, s);
        rb = B::at(w1, b, s);
        rc = ra;
        rd = rb;
        two = b + stride < nb;
        if (two) {
            rc = B::at(w0, b + stride, s);
            rd = B::at(w1, b + stride, s);
        }
    }
    const float* xr[M];
    pro(xr);
    while (b < nb) {
        const typename Q::Raw ca = ra, cb = rb, cc = rc, cd = rd;
        const bool ctwo = two;
        const u64 cur = b;
        b += 2 * stride;
        if (b < nb) {
            ra = B::at(w0, b, s);
            rb = B::at(w1, b, s);
            rc = ra;
            rd = rb;
            two = b + stride < nb;
            if (two) {
                rc = B::at(w0, b + stride, s);
                rd = B::at(w1, b + stride, s);
            }
        }
        mv_step<Q, M>(ca, cb, xr, cur, s, acc);
        if (ctwo) mv_step<Q, M>(cc, cd, xr, cur + stride, s, acc);
    }
}

// The accumulation loop for the 32-element block formats of this file.
template <class Q, int M, class Pro>
__device__ __forceinline__ void mv_quant_acc(const MvShape& p, const u8* __restrict__ w, Pro pro,
                                             float (&acc)[M][MV_ROWS]) {
    mv_blocks_acc<Q, FlatBlocks<Q>, M>(p, w, pro, acc);
}

// The same for the sub-block formats of decode_kq.cuh.
template <class Q, int M, class Pro>
__device__ __forceinline__ void mv_sub_acc(const MvShape& p, const u8* __restrict__ w, Pro pro,
                                           float (&acc)[M][MV_ROWS]) {
    mv_blocks_acc<Q, SubBlocks<Q>, M>(p, w, pro, acc);
}

// The same for float weights w: [n, k] (row_bytes = k * element size): the
// whole CTA (kw = MV_WARPS) splits k over one row pair.
template <class F, int M, class Pro>
__device__ __forceinline__ void mv_float_acc(const MvShape& p, const u8* __restrict__ w, Pro pro,
                                             float (&acc)[M][MV_ROWS]) {
    const float* xr[M];
    pro(xr);
    u64 ja, jb;
    mv_pair_rows(p, min((u64)blockIdx.x * MV_ROWS, p.n - 1), ja, jb);
    const u8* w0 = w + ja * p.row_bytes;
    const u8* w1 = w + jb * p.row_bytes;
#pragma unroll
    for (int r = 0; r < M; r++) {
        acc[r][0] = 0.0f;
        acc[r][1] = 0.0f;
    }
    for (u64 e = threadIdx.x; e < p.k; e += MV_THREADS) {
        const float a0 = F::ld(w0, e), a1 = F::ld(w1, e);
#pragma unroll
        for (int r = 0; r < M; r++) {
            const float xv = xr[r][e];
            acc[r][0] = fmaf(a0, xv, acc[r][0]);
            acc[r][1] = fmaf(a1, xv, acc[r][1]);
        }
    }
}

// Reduce acc over the warp, then over the kw warps sharing a row pair, into
// part[pair][r * MV_ROWS + j] (shared); ends with __syncthreads().
template <int M>
__device__ __forceinline__ void mv_reduce(float (&acc)[M][MV_ROWS], int kw,
                                          float (&part)[MV_WARPS][M * MV_ROWS]) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
    for (int r = 0; r < M; r++) {
#pragma unroll
        for (int j = 0; j < MV_ROWS; j++) {
            float v = acc[r][j];
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, off);
            acc[r][j] = v;
        }
    }
    __syncthreads();
    if (lane == 0) {
#pragma unroll
        for (int r = 0; r < M; r++)
#pragma unroll
            for (int j = 0; j < MV_ROWS; j++) part[warp][r * MV_ROWS + j] = acc[r][j];
    }
    __syncthreads();
    // Sum the kw warps of each pair into the pair's first warp slot.
    const int t = threadIdx.x, pairs = MV_WARPS / kw;
    float v = 0.0f;
    const int pair = t / (M * MV_ROWS), idx = t % (M * MV_ROWS);
    if (t < pairs * M * MV_ROWS) {
        for (int w2 = pair * kw; w2 < (pair + 1) * kw; w2++) v += part[w2][idx];
    }
    __syncthreads();
    if (t < pairs * M * MV_ROWS) part[pair][idx] = v;
    __syncthreads();
}
