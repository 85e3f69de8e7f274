// embedding: out[t, :] = dequantize(table[ids[t], :]) for GGML row formats
// (layouts in common.cuh, reference kiln-core ops/embedding.rs + quant/)
// and MLX affine rows (mlx.cuh: one module per format, compiled on first use
// with the format's KILN_MLX_* defines, holding only embedding_mlx_<tag>_f32).
// An id >= n_vocab is never read: its output row is filled with NaN, so a
// bad id the host did not check shows up instead of reading out of bounds.
#include "common.cuh"
#include "matvec.cuh"
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

// table: [n_vocab, row_bytes] bytes, ids: [n_ids], out: [n_ids, dim].
// grid.x walks ids, grid.y * blockDim.x walks the row's elements.
template <typename Row>
__device__ __forceinline__ void embedding_rows(const EmbeddingParams& p, const u8* __restrict__ table,
                                               const u32* __restrict__ ids, float* __restrict__ out) {
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
#else
KILN_EMBEDDING(KILN_MLX_NAME(embedding_mlx_, _f32), MlxFmtRow)
#endif
