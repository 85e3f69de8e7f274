// matmul: out[m, n] = x[m, k] · w[n, k]^T with w in GGML blocks (Q4_0, Q4_1,
// Q8_0) or floats (F32, F16, BF16), x and out f32 (kiln_core::ops::matmul).
//
// - mul_mv_<w>_f32_m<M>: mat-vec for M = 1..8 rows of x. One CTA = 4 warps
//   on 2 weight rows; the warps split k, so each row is read once while all M
//   activation rows are applied to it. Activations stay f32 (no activation
//   quantization). Quantized weights: 4 lanes per 32-element block, each
//   lane decodes 8 codes to floats with a byte-permute (no int->float
//   conversion instructions) and reads its 8 activations as two float4.
//   gridDim.y > 1 runs the same kernel over consecutive chunks of M rows.
// - dequant_<w>_f16 / convert_*: operands for the cuBLAS prefill path.
#include "common.cuh"

struct MatmulParams {
    u64 m;          // rows of x and out
    u64 n;          // weight rows = columns of out
    u64 k;          // row length of w and x
    u64 row_bytes;  // bytes of one weight row
    u64 kw;         // mat-vec: warps per row pair (1, 2 or 4; float weights: 4)
};

struct ConvParams { u64 n; };

#define MV_WARPS 4
#define MV_ROWS 2
#define MV_THREADS (MV_WARPS * 32)
// Blocks one warp covers per step (4 lanes per block).
#define MV_BLOCKS_PER_WARP 8

__device__ __forceinline__ u16 kiln_f32_to_f16(float f) {
    u16 h;
    asm("{ .reg .b16 t; cvt.rn.f16.f32 t, %1; mov.b16 %0, t; }" : "=h"(h) : "f"(f));
    return h;
}

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

struct F32T {
    __device__ static float ld(const u8* row, u64 e) { return ((const float*)row)[e]; }
};
struct F16T {
    __device__ static float ld(const u8* row, u64 e) { return kiln_f16_to_f32(((const u16*)row)[e]); }
};
struct BF16T {
    __device__ static float ld(const u8* row, u64 e) { return kiln_bf16_to_f32(((const u16*)row)[e]); }
};

// Sum acc over the warp, then over the kw warps sharing a row pair; writes
// out[i0 + r, j] for the rows and columns that exist. The CTA's row pairs
// start at column blockIdx.x * (MV_WARPS / kw) * MV_ROWS.
template <int M>
__device__ __forceinline__ void mv_store(const MatmulParams& p, float (&acc)[M][MV_ROWS], u64 i0,
                                         int kw, float* __restrict__ out) {
    __shared__ float part[MV_WARPS][M * MV_ROWS];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
    for (int r = 0; r < M; r++) {
#pragma unroll
        for (int j = 0; j < MV_ROWS; j++) {
            float v = acc[r][j];
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, off);
            if (lane == 0) part[warp][r * MV_ROWS + j] = v;
        }
    }
    __syncthreads();
    const int t = threadIdx.x, pairs = MV_WARPS / kw;
    if (t < pairs * M * MV_ROWS) {
        const int pair = t / (M * MV_ROWS), idx = t % (M * MV_ROWS);
        float v = 0.0f;
        for (int w = pair * kw; w < (pair + 1) * kw; w++) v += part[w][idx];
        const u64 i = i0 + (u64)(idx / MV_ROWS);
        const u64 j = ((u64)blockIdx.x * pairs + pair) * MV_ROWS + (u64)(idx % MV_ROWS);
        if (i < p.m && j < p.n) out[i * p.n + j] = v;
    }
}

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

// w: [n, row_bytes] blocks, x: [m, k] (16-byte aligned), out: [m, n].
// Warp w of the CTA works on row pair w / kw, blocks (w % kw) * 8 + lane / 4
// + t * kw * 8; two steps are fetched before either is used.
template <class Q, int M>
__device__ __forceinline__ void mv_quant(const MatmulParams& p, const u8* __restrict__ w,
                                         const float* __restrict__ x, float* __restrict__ out) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, s = lane & 3;
    const int kw = (int)p.kw, pairs = MV_WARPS / kw;
    const int pair = warp / kw, ks = warp % kw;
    const u64 j0 = ((u64)blockIdx.x * pairs + pair) * MV_ROWS;
    const u64 i0 = (u64)blockIdx.y * M;
    const u64 nb = p.k / QK;
    // Missing rows (odd n, a short last chunk of x) repeat the last real one;
    // their results are not stored.
    const u8* w0 = w + min(j0, p.n - 1) * p.row_bytes;
    const u8* w1 = w + min(j0 + 1, p.n - 1) * p.row_bytes;
    const float* xr[M];
#pragma unroll
    for (int r = 0; r < M; r++) xr[r] = x + min(i0 + (u64)r, p.m - 1) * p.k;
    float acc[M][MV_ROWS];
#pragma unroll
    for (int r = 0; r < M; r++) {
        acc[r][0] = 0.0f;
        acc[r][1] = 0.0f;
    }
    const u64 stride = (u64)kw * MV_BLOCKS_PER_WARP;
    for (u64 b = (u64)ks * MV_BLOCKS_PER_WARP + (u64)(lane >> 2); b < nb; b += 2 * stride) {
        const u64 b2 = b + stride;
        const bool two = b2 < nb;
        const typename Q::Raw ra = Q::fetch(w0 + b * Q::TS, s);
        const typename Q::Raw rb = Q::fetch(w1 + b * Q::TS, s);
        typename Q::Raw rc = ra, rd = rb;
        if (two) {
            rc = Q::fetch(w0 + b2 * Q::TS, s);
            rd = Q::fetch(w1 + b2 * Q::TS, s);
        }
        mv_step<Q, M>(ra, rb, xr, b, s, acc);
        if (two) mv_step<Q, M>(rc, rd, xr, b2, s, acc);
    }
    mv_store<M>(p, acc, i0, kw, out);
}

// w: [n, k] floats (row_bytes = k * element size), x: [m, k], out: [m, n].
// The whole CTA (kw = MV_WARPS) splits k over one row pair.
template <class F, int M>
__device__ __forceinline__ void mv_float(const MatmulParams& p, const u8* __restrict__ w,
                                         const float* __restrict__ x, float* __restrict__ out) {
    const u64 j0 = (u64)blockIdx.x * MV_ROWS;
    const u64 i0 = (u64)blockIdx.y * M;
    const u8* w0 = w + j0 * p.row_bytes;
    const u8* w1 = w + min(j0 + 1, p.n - 1) * p.row_bytes;
    const float* xr[M];
#pragma unroll
    for (int r = 0; r < M; r++) xr[r] = x + min(i0 + (u64)r, p.m - 1) * p.k;
    float acc[M][MV_ROWS];
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
    mv_store<M>(p, acc, i0, MV_WARPS, out);
}

#define MV_ENTRY(name, impl, T, M)                                                              \
    extern "C" __global__ void __launch_bounds__(MV_THREADS)                                   \
        name(MatmulParams p, const u8* __restrict__ w, const float* __restrict__ x,            \
             float* __restrict__ out) {                                                        \
        impl<T, M>(p, w, x, out);                                                              \
    }
#define MV_ALL_M(prefix, impl, T)                                                              \
    MV_ENTRY(prefix##_m1, impl, T, 1)                                                          \
    MV_ENTRY(prefix##_m2, impl, T, 2)                                                          \
    MV_ENTRY(prefix##_m3, impl, T, 3)                                                          \
    MV_ENTRY(prefix##_m4, impl, T, 4)                                                          \
    MV_ENTRY(prefix##_m5, impl, T, 5)                                                          \
    MV_ENTRY(prefix##_m6, impl, T, 6)                                                          \
    MV_ENTRY(prefix##_m7, impl, T, 7)                                                          \
    MV_ENTRY(prefix##_m8, impl, T, 8)

MV_ALL_M(mul_mv_q4_0_f32, mv_quant, Q4_0T)
MV_ALL_M(mul_mv_q4_1_f32, mv_quant, Q4_1T)
MV_ALL_M(mul_mv_q8_0_f32, mv_quant, Q8_0T)
MV_ALL_M(mul_mv_f32_f32, mv_float, F32T)
MV_ALL_M(mul_mv_f16_f32, mv_float, F16T)
MV_ALL_M(mul_mv_bf16_f32, mv_float, BF16T)

// w: [n, row_bytes] blocks -> dst: [n, k] f16 (one thread per block).
template <class Q>
__device__ __forceinline__ void dequant_f16(const MatmulParams& p, const u8* __restrict__ w,
                                            u16* __restrict__ dst) {
    const u64 nb = p.k / QK, total = p.n * nb;
    for (u64 g = (u64)blockIdx.x * blockDim.x + threadIdx.x; g < total;
         g += (u64)gridDim.x * blockDim.x) {
        const u64 row = g / nb, b = g - row * nb;
        const u8* blk = w + row * p.row_bytes + b * Q::TS;
        u32 h[QK / 2];
#pragma unroll
        for (int s = 0; s < 4; s++) {
            float d, mo, c[8];
            Q::decode(Q::fetch(blk, s), d, mo, c);
#pragma unroll
            for (int e = 0; e < 8; e += 2) {
                const int at = (e < 4 ? Q::xoff0(s) + e : Q::xoff1(s) + e - 4) / 2;
                h[at] = (u32)kiln_f32_to_f16(fmaf(d, c[e], mo)) |
                        ((u32)kiln_f32_to_f16(fmaf(d, c[e + 1], mo)) << 16);
            }
        }
        uint4* o = (uint4*)(dst + g * QK);
#pragma unroll
        for (int v = 0; v < 4; v++) o[v] = make_uint4(h[4 * v], h[4 * v + 1], h[4 * v + 2], h[4 * v + 3]);
    }
}

extern "C" __global__ void dequant_q4_0_f16(MatmulParams p, const u8* __restrict__ w, u16* __restrict__ dst) {
    dequant_f16<Q4_0T>(p, w, dst);
}
extern "C" __global__ void dequant_q4_1_f16(MatmulParams p, const u8* __restrict__ w, u16* __restrict__ dst) {
    dequant_f16<Q4_1T>(p, w, dst);
}
extern "C" __global__ void dequant_q8_0_f16(MatmulParams p, const u8* __restrict__ w, u16* __restrict__ dst) {
    dequant_f16<Q8_0T>(p, w, dst);
}

// src: [n] -> dst: [n]
extern "C" __global__ void convert_f32_f16(ConvParams p, const float* __restrict__ src, u16* __restrict__ dst) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += (u64)gridDim.x * blockDim.x)
        dst[i] = kiln_f32_to_f16(src[i]);
}
extern "C" __global__ void convert_f16_f32(ConvParams p, const u8* __restrict__ src, float* __restrict__ dst) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += (u64)gridDim.x * blockDim.x)
        dst[i] = kiln_f16_to_f32(((const u16*)src)[i]);
}
extern "C" __global__ void convert_bf16_f32(ConvParams p, const u8* __restrict__ src, float* __restrict__ dst) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += (u64)gridDim.x * blockDim.x)
        dst[i] = kiln_bf16_to_f32(((const u16*)src)[i]);
}

// Streaming-read ceiling for benchmarks: sums n u32 words (uint4 loads) into
// one atomic per CTA. src: [n] (n a multiple of 4, 16-byte aligned), sum: [1].
extern "C" __global__ void bench_read_sum(ConvParams p, const uint4* __restrict__ src, u32* __restrict__ sum) {
    u32 acc = 0;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < p.n / 4; i += (u64)gridDim.x * blockDim.x) {
        const uint4 v = src[i];
        acc += v.x ^ v.y ^ v.z ^ v.w;
    }
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xFFFFFFFFu, acc, off);
    if ((threadIdx.x & 31) == 0) atomicAdd(sum, acc);
}
