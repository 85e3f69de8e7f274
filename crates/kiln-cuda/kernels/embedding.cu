// embedding: out[t, :] = dequantize(table[ids[t], :]) for GGML row formats
// (layouts in common.cuh, reference kiln-core ops/embedding.rs + quant/)
// and MLX affine rows (mlx.cuh: one module per format, compiled on first use
// with the format's KILN_MLX_* defines, holding only embedding_mlx_<tag>_f32).
// An id >= n_vocab is never read: its output row is filled with NaN, so a
// bad id the host did not check shows up instead of reading out of bounds.
#include "common.cuh"
#include "matvec.cuh"
#include "decode_kq.cuh"
#include "decode_iq.cuh"
#include "mlx.cuh"

struct EmbeddingParams {
    u64 n_ids;
    u64 n_vocab;
    u64 dim;
    u64 row_bytes;
};

// Element j of one table row, per format. `row` is at least 2-byte aligned
// (4 for f32): the launcher checks the table pointer; row sizes keep it.
struct RowF32 {
    static __device__ __forceinline__ float get(const u8* row, u64 j) {
        return ((const float*)row)[j];
    }
};
struct RowF16 {
    static __device__ __forceinline__ float get(const u8* row, u64 j) {
        return kiln_f16_to_f32(((const u16*)row)[j]);
    }
};
struct RowBF16 {
    static __device__ __forceinline__ float get(const u8* row, u64 j) {
        return kiln_bf16_to_f32(((const u16*)row)[j]);
    }
};
// Q4: byte k of a block holds element k (low nibble) and k + 16 (high).
struct RowQ4_0 {
    static __device__ __forceinline__ float get(const u8* row, u64 j) {
        const block_q4_0* b = (const block_q4_0*)row + j / QK;
        const u32 k = (u32)(j % QK);
        const u32 q = k < 16 ? (b->qs[k] & 0xF) : (b->qs[k - 16] >> 4);
        return __fmul_rn(kiln_f16_to_f32(b->d), (float)q - 8.0f);
    }
};
struct RowQ4_1 {
    static __device__ __forceinline__ float get(const u8* row, u64 j) {
        const block_q4_1* b = (const block_q4_1*)row + j / QK;
        const u32 k = (u32)(j % QK);
        const u32 q = k < 16 ? (b->qs[k] & 0xF) : (b->qs[k - 16] >> 4);
        // d * q + m with two roundings, as the reference (no fused multiply-add).
        return __fadd_rn(__fmul_rn(kiln_f16_to_f32(b->d), (float)q), kiln_f16_to_f32(b->m));
    }
};
struct RowQ8_0 {
    static __device__ __forceinline__ float get(const u8* row, u64 j) {
        const block_q8_0* b = (const block_q8_0*)row + j / QK;
        return __fmul_rn((float)b->qs[j % QK], kiln_f16_to_f32(b->d));
    }
};
struct RowQ8_1 {
    static __device__ __forceinline__ float get(const u8* row, u64 j) {
        const block_q8_1* b = (const block_q8_1*)row + j / QK;
        return __fmul_rn((float)b->qs[j % QK], kiln_f16_to_f32(b->d));
    }
};

// Q8_K: x = d * q, d an f32 at byte 0 of the 292-byte block (4-byte aligned:
// the launcher checks the table, 292 keeps rows aligned). An f32 scale can
// be subnormal, or make subnormal products: kiln_mul_rn keeps them (the
// f16-scaled formats never produce one: every nonzero value is a multiple
// of 2^-24, so the flush-to-zero __fmul_rn / __fadd_rn are exact there).
struct RowQ8_K {
    static __device__ __forceinline__ float get(const u8* row, u64 j) {
        const block_q8_K* b = (const block_q8_K*)row + j / QK_K;
        return kiln_mul_rn(b->d, (float)b->qs[j % QK_K]);
    }
};

// table: [n_vocab, row_bytes] bytes, ids: [n_ids], out: [n_ids, dim].
// grid.x walks ids, grid.y * blockDim.x walks the row's elements.
template <typename Row>
__device__ __forceinline__ void embedding_rows(const EmbeddingParams& p, const u8* __restrict__ table,
                                               const u32* __restrict__ ids, float* __restrict__ out) {
    kiln_pdl_enter();  // PDL: everything it reads or writes is the previous kernels'
    for (u64 t = blockIdx.x; t < p.n_ids; t += gridDim.x) {
        const u32 id = ids[t];
        float* o = out + t * p.dim;
        const u64 j0 = (u64)blockIdx.y * blockDim.x + threadIdx.x;
        const u64 step = (u64)gridDim.y * blockDim.x;
        if ((u64)id >= p.n_vocab) {
            // Out-of-range id: poison the row, read nothing.
            for (u64 j = j0; j < p.dim; j += step) o[j] = __int_as_float(0x7fc00000);
            continue;
        }
        const u8* row = table + (u64)id * p.row_bytes;
        for (u64 j = j0; j < p.dim; j += step) o[j] = Row::get(row, j);
    }
}

// The formats of decode_kq.cuh (Q5_0, Q5_1, IQ4_NL, Q2_K..Q6_K, IQ4_XS),
// through the mat-vec decoders: a row is dim / 32 virtual blocks located by
// SubBlocks, each 4 lane parts of 8 values; one thread decodes one lane part
// (grid.y * blockDim.x walks the row's dim / 8 lane parts). Each value is
// d * c + mo rounded twice, or d * c (formats without a min), as the
// reference: the __f*_rn intrinsics keep the compiler from fusing them.
template <class Q>
__device__ __forceinline__ void embedding_lanes(const EmbeddingParams& p, const u8* __restrict__ table,
                                                const u32* __restrict__ ids, float* __restrict__ out) {
    kiln_pdl_enter();  // PDL: everything it reads or writes is the previous kernels'
    const u64 parts = p.dim / 8;  // dim is a multiple of 32 (validated)
    for (u64 t = blockIdx.x; t < p.n_ids; t += gridDim.x) {
        const u32 id = ids[t];
        float* o = out + t * p.dim;
        const u64 k0 = (u64)blockIdx.y * blockDim.x + threadIdx.x;
        const u64 step = (u64)gridDim.y * blockDim.x;
        if ((u64)id >= p.n_vocab) {
            for (u64 k = k0; k < parts; k += step)
                for (int e = 0; e < 8; e++) o[8 * k + e] = __int_as_float(0x7fc00000);
            continue;
        }
        const u8* row = table + (u64)id * p.row_bytes;
        for (u64 k = k0; k < parts; k += step) {
            const u64 b = k / 4;
            const int s = (int)(k % 4);
            float d, mo, c[8];
            Q::decode(SubBlocks<Q>::at(row, b, s), d, mo, c);
            float* ob = o + 32 * b;
#pragma unroll
            for (int e = 0; e < 8; e++) {
                const int at = e < 4 ? Q::xoff0(s) + e : Q::xoff1(s) + e - 4;
                ob[at] = Q::MIN ? __fadd_rn(__fmul_rn(d, c[e]), mo) : __fmul_rn(d, c[e]);
            }
        }
    }
}

#define KILN_EMBEDDING_LANES(name, Q)                                                              \
    extern "C" __global__ void name(EmbeddingParams p, const u8* __restrict__ table,               \
                                    const u32* __restrict__ ids, float* __restrict__ out) {        \
        embedding_lanes<Q>(p, table, ids, out);                                                    \
    }

#define KILN_EMBEDDING(name, Row)                                                                  \
    extern "C" __global__ void name(EmbeddingParams p, const u8* __restrict__ table,               \
                                    const u32* __restrict__ ids, float* __restrict__ out) {        \
        embedding_rows<Row>(p, table, ids, out);                                                   \
    }

#ifndef KILN_MLX_BITS
KILN_EMBEDDING(embedding_f32_f32, RowF32)
KILN_EMBEDDING(embedding_f16_f32, RowF16)
KILN_EMBEDDING(embedding_bf16_f32, RowBF16)
KILN_EMBEDDING(embedding_q4_0_f32, RowQ4_0)
KILN_EMBEDDING(embedding_q4_1_f32, RowQ4_1)
KILN_EMBEDDING(embedding_q8_0_f32, RowQ8_0)
KILN_EMBEDDING(embedding_q8_1_f32, RowQ8_1)
KILN_EMBEDDING(embedding_q8_k_f32, RowQ8_K)
KILN_EMBEDDING_LANES(embedding_q5_0_f32, Q5_0T)
KILN_EMBEDDING_LANES(embedding_q5_1_f32, Q5_1T)
KILN_EMBEDDING_LANES(embedding_iq4_nl_f32, IQ4_NLT)
KILN_EMBEDDING_LANES(embedding_q2_k_f32, Q2_KT)
KILN_EMBEDDING_LANES(embedding_q3_k_f32, Q3_KT)
KILN_EMBEDDING_LANES(embedding_q4_k_f32, Q4_KT)
KILN_EMBEDDING_LANES(embedding_q5_k_f32, Q5_KT)
KILN_EMBEDDING_LANES(embedding_q6_k_f32, Q6_KT)
KILN_EMBEDDING_LANES(embedding_iq4_xs_f32, IQ4_XST)
KILN_EMBEDDING_LANES(embedding_iq2_xxs_f32, IQ2_XXST)
KILN_EMBEDDING_LANES(embedding_iq2_xs_f32, IQ2_XST)
KILN_EMBEDDING_LANES(embedding_iq3_xxs_f32, IQ3_XXST)
KILN_EMBEDDING_LANES(embedding_iq3_s_f32, IQ3_ST)
#else
KILN_EMBEDDING(KILN_MLX_NAME(embedding_mlx_, _f32), MlxFmtRow)
#endif
