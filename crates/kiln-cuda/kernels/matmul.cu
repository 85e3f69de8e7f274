// matmul: out[m, n] = x[m, k] · w[n, k]^T with w in GGML blocks (Q4_0, Q4_1,
// Q8_0, Q5_0, Q5_1, IQ4_NL; super-blocks Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
// IQ4_XS) or floats (F32, F16, BF16), x and out f32 (kiln_core::ops::matmul).
//
// - mul_mv_<w>_f32_m<M>: mat-vec for M = 1..8 rows of x. One CTA = 4 warps
//   on 2 weight rows; the warps split k, so each row is read once while all M
//   activation rows are applied to it. Activations stay f32 (no activation
//   quantization). Quantized weights: 4 lanes per 32-element block, each
//   lane decodes 8 codes to floats with a byte-permute (no int->float
//   conversion instructions) and reads its 8 activations as two float4.
//   gridDim.y > 1 runs the same kernel over consecutive chunks of M rows.
//   256-element super-blocks are walked as 8 virtual 32-element blocks
//   (decode_kq.cuh): the same tiling, each lane group on one sub-block.
//   Where the row length allows (p.cw != 0), the weight bytes are staged
//   through shared memory with cp.async first (matvec_staged.cuh), and float
//   weights are read 16 bytes per thread.
// - dequant_<w>_f16 / convert_*: operands for the cuBLAS prefill path.
// - MLX affine weights (mlx.cuh): one module per format, compiled on first
//   use with the format's KILN_MLX_* defines; it holds only
//   mul_mv_mlx_<tag>_f32_m<M> (the sub-block mat-vec, GROUP / 32 virtual
//   blocks per block) and dequant_mlx_<tag>_f16, not the GGML entries.
#include "common.cuh"
#include "matvec.cuh"
#include "decode_kq.cuh"
#include "decode_iq.cuh"
#include "matvec_staged.cuh"
#include "mlx.cuh"

struct MatmulParams {
    u64 m;          // rows of x and out
    u64 n;          // weight rows = columns of out
    u64 k;          // row length of w and x
    u64 row_bytes;  // bytes of one weight row
    u64 kw;         // mat-vec: warps per row pair (1, 2 or 4; float weights: 4)
    u64 cw;         // mat-vec: 0 = direct loads; quantized: staged copy width (16, 8, 4);
                    // float: 16 = 16-byte loads (k a multiple of 16 bytes, rows aligned)
};

struct ConvParams { u64 n; };

// out[i0 + r, j] for the rows and columns that exist, from the reduced
// partials of mv_reduce.
template <int M>
__device__ __forceinline__ void mv_store(const MatmulParams& p, float (&acc)[M][MV_ROWS], u64 i0,
                                         int kw, float* __restrict__ out) {
    __shared__ float part[MV_WARPS][M * MV_ROWS];
    mv_reduce<M>(acc, kw, part);
    const int t = threadIdx.x, pairs = MV_WARPS / kw;
    if (t < pairs * M * MV_ROWS) {
        const int pair = t / (M * MV_ROWS), idx = t % (M * MV_ROWS);
        const u64 i = i0 + (u64)(idx / MV_ROWS);
        const u64 j = ((u64)blockIdx.x * pairs + pair) * MV_ROWS + (u64)(idx % MV_ROWS);
        if (i < p.m && j < p.n) out[i * p.n + j] = part[pair][idx];
    }
}

// x rows i0 .. i0 + M of x: [m, k]; a short last chunk repeats row m - 1
// (its results are not stored).
template <int M>
__device__ __forceinline__ void mv_rows(const MatmulParams& p, const float* __restrict__ x, u64 i0,
                                        const float* (&xr)[M]) {
    // Runs after the first weight fetch (matvec.cuh): the wait for the previous
    // kernel (PDL) overlaps it.
    kiln_grid_wait();
#pragma unroll
    for (int r = 0; r < M; r++) xr[r] = x + min(i0 + (u64)r, p.m - 1) * p.k;
}

// w: [n, row_bytes] blocks, x: [m, k] (16-byte aligned), out: [m, n].
template <class Q, int M>
__device__ __forceinline__ void mv_quant(const MatmulParams& p, const u8* __restrict__ w,
                                         const float* __restrict__ x, float* __restrict__ out) {
    const u64 i0 = (u64)blockIdx.y * M;
    float acc[M][MV_ROWS];
    const MvShape sh = {p.n, p.k, p.row_bytes, (int)p.kw, false, (int)p.cw};
    auto pro = [&](const float* (&xr)[M]) { mv_rows<M>(p, x, i0, xr); };
    if (p.cw != 0) {
        __shared__ __align__(16) u8 stage[StagePlan<Q, FlatBlocks<Q>>::BYTES];
        mv_staged_acc<Q, FlatBlocks<Q>, M>(sh, w, pro, acc, stage);
    } else {
        mv_quant_acc<Q, M>(sh, w, pro, acc);
    }
    mv_store<M>(p, acc, i0, (int)p.kw, out);
}

// The same for the sub-block formats of decode_kq.cuh.
template <class Q, int M>
__device__ __forceinline__ void mv_sub(const MatmulParams& p, const u8* __restrict__ w,
                                       const float* __restrict__ x, float* __restrict__ out) {
    const u64 i0 = (u64)blockIdx.y * M;
    float acc[M][MV_ROWS];
    const MvShape sh = {p.n, p.k, p.row_bytes, (int)p.kw, false, (int)p.cw};
    auto pro = [&](const float* (&xr)[M]) { mv_rows<M>(p, x, i0, xr); };
    if (p.cw != 0) {
        __shared__ __align__(16) u8 stage[StagePlan<Q, SubBlocks<Q>>::BYTES];
        mv_staged_acc<Q, SubBlocks<Q>, M>(sh, w, pro, acc, stage);
    } else {
        mv_sub_acc<Q, M>(sh, w, pro, acc);
    }
    mv_store<M>(p, acc, i0, (int)p.kw, out);
}

// w: [n, k] floats, x: [m, k], out: [m, n].
template <class F, int M>
__device__ __forceinline__ void mv_float(const MatmulParams& p, const u8* __restrict__ w,
                                         const float* __restrict__ x, float* __restrict__ out) {
    // A float "weight" may be what an earlier kernel just wrote (ops::matmul
    // of two activations): wait before the first read. The quantized
    // formats read their weights first (no kernel writes GGML blocks).
    kiln_grid_wait();
    const u64 i0 = (u64)blockIdx.y * M;
    float acc[M][MV_ROWS];
    const MvShape sh = {p.n, p.k, p.row_bytes, MV_WARPS, false, (int)p.cw};
    auto pro = [&](const float* (&xr)[M]) { mv_rows<M>(p, x, i0, xr); };
    if (p.cw != 0) {
        mv_float_vec_acc<F, M>(sh, w, pro, acc);
    } else {
        mv_float_acc<F, M>(sh, w, pro, acc);
    }
    mv_store<M>(p, acc, i0, MV_WARPS, out);
}

#define MV_ENTRY(name, impl, T, M)                                                              \
    extern "C" __global__ void __launch_bounds__(MV_THREADS)                                   \
        name(MatmulParams p, const u8* __restrict__ w, const float* __restrict__ x,            \
             float* __restrict__ out) {                                                        \
        kiln_grid_launch_dependents();                                                         \
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

#ifndef KILN_MLX_BITS
MV_ALL_M(mul_mv_q4_0_f32, mv_quant, Q4_0T)
MV_ALL_M(mul_mv_q4_1_f32, mv_quant, Q4_1T)
MV_ALL_M(mul_mv_q8_0_f32, mv_quant, Q8_0T)
MV_ALL_M(mul_mv_q5_0_f32, mv_sub, Q5_0T)
MV_ALL_M(mul_mv_q5_1_f32, mv_sub, Q5_1T)
MV_ALL_M(mul_mv_iq4_nl_f32, mv_sub, IQ4_NLT)
MV_ALL_M(mul_mv_q4_K_f32, mv_sub, Q4_KT)
MV_ALL_M(mul_mv_q5_K_f32, mv_sub, Q5_KT)
MV_ALL_M(mul_mv_q6_K_f32, mv_sub, Q6_KT)
MV_ALL_M(mul_mv_iq4_xs_f32, mv_sub, IQ4_XST)
MV_ALL_M(mul_mv_q3_K_f32, mv_sub, Q3_KT)
MV_ALL_M(mul_mv_q2_K_f32, mv_sub, Q2_KT)
MV_ALL_M(mul_mv_iq2_xxs_f32, mv_sub, IQ2_XXST)
MV_ALL_M(mul_mv_iq2_xs_f32, mv_sub, IQ2_XST)
MV_ALL_M(mul_mv_iq3_xxs_f32, mv_sub, IQ3_XXST)
MV_ALL_M(mul_mv_iq3_s_f32, mv_sub, IQ3_ST)
MV_ALL_M(mul_mv_f32_f32, mv_float, F32T)
MV_ALL_M(mul_mv_f16_f32, mv_float, F16T)
MV_ALL_M(mul_mv_bf16_f32, mv_float, BF16T)
#else
#define MV_MLX(M) MV_ENTRY(KILN_MLX_NAME(mul_mv_mlx_, _f32_m##M), mv_sub, MlxFmt, M)
MV_MLX(1)
MV_MLX(2)
MV_MLX(3)
MV_MLX(4)
MV_MLX(5)
MV_MLX(6)
MV_MLX(7)
MV_MLX(8)
#endif

// w: [n, row_bytes] blocks -> dst: [n, k] f16. Four threads per virtual
// 32-element block, as in the mat-vec: thread part s fetches and decodes its
// 8 codes (the same small loads, 4x the threads in flight of one thread per
// block) and writes them as two 8-byte pieces; a warp writes 8 consecutive
// blocks (512 contiguous bytes). B as in mv_blocks_acc.
template <class Q, class B = FlatBlocks<Q>>
__device__ __forceinline__ void dequant_f16(const MatmulParams& p, const u8* __restrict__ w,
                                            u16* __restrict__ dst) {
    const u64 nb = p.k / QK, total = p.n * nb * 4;
    for (u64 t = (u64)blockIdx.x * blockDim.x + threadIdx.x; t < total;
         t += (u64)gridDim.x * blockDim.x) {
        const u64 g = t >> 2, row = g / nb, b = g - row * nb;
        const int s = (int)(t & 3);
        float d, mo, c[8];
        Q::decode(B::at(w + row * p.row_bytes, b, s), d, mo, c);
        u32 h[4];
#pragma unroll
        for (int e = 0; e < 8; e += 2) {
            h[e / 2] = (u32)kiln_f32_to_f16(fmaf(d, c[e], mo)) |
                       ((u32)kiln_f32_to_f16(fmaf(d, c[e + 1], mo)) << 16);
        }
        u16* o = dst + g * QK;
        *(uint2*)(o + Q::xoff0(s)) = make_uint2(h[0], h[1]);
        *(uint2*)(o + Q::xoff1(s)) = make_uint2(h[2], h[3]);
    }
}

#define DEQUANT_SUB(name, T)                                                                   \
    extern "C" __global__ void name(MatmulParams p, const u8* __restrict__ w,                  \
                                    u16* __restrict__ dst) {                                   \
        dequant_f16<T, SubBlocks<T>>(p, w, dst);                                               \
    }
#ifndef KILN_MLX_BITS
extern "C" __global__ void dequant_q4_0_f16(MatmulParams p, const u8* __restrict__ w, u16* __restrict__ dst) {
    dequant_f16<Q4_0T>(p, w, dst);
}
extern "C" __global__ void dequant_q4_1_f16(MatmulParams p, const u8* __restrict__ w, u16* __restrict__ dst) {
    dequant_f16<Q4_1T>(p, w, dst);
}
extern "C" __global__ void dequant_q8_0_f16(MatmulParams p, const u8* __restrict__ w, u16* __restrict__ dst) {
    dequant_f16<Q8_0T>(p, w, dst);
}

DEQUANT_SUB(dequant_q5_0_f16, Q5_0T)
DEQUANT_SUB(dequant_q5_1_f16, Q5_1T)
DEQUANT_SUB(dequant_iq4_nl_f16, IQ4_NLT)
DEQUANT_SUB(dequant_q4_K_f16, Q4_KT)
DEQUANT_SUB(dequant_q5_K_f16, Q5_KT)
DEQUANT_SUB(dequant_q6_K_f16, Q6_KT)
DEQUANT_SUB(dequant_iq4_xs_f16, IQ4_XST)
DEQUANT_SUB(dequant_q3_K_f16, Q3_KT)
DEQUANT_SUB(dequant_q2_K_f16, Q2_KT)
DEQUANT_SUB(dequant_iq2_xxs_f16, IQ2_XXST)
DEQUANT_SUB(dequant_iq2_xs_f16, IQ2_XST)
DEQUANT_SUB(dequant_iq3_xxs_f16, IQ3_XXST)
DEQUANT_SUB(dequant_iq3_s_f16, IQ3_ST)
#else
DEQUANT_SUB(KILN_MLX_NAME(dequant_mlx_, _f16), MlxFmt)
#endif

#ifndef KILN_MLX_BITS
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
#endif  // KILN_MLX_BITS
