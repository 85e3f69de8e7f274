// copy_rows: dst[dst_off .. dst_off + n] = src[src_off .. src_off + n] with
// n = n_rows * row_len, src_off = src_row * row_len, dst_off = dst_row *
// row_len (reference kiln-core ops/copy_rows.rs: rows are contiguous, so the
// copy is one range). Grid-stride, float4 when both ends are 16-byte aligned.
#include "common.cuh"

struct CopyRowsParams {
    u64 n;
    u64 src_off;
    u64 dst_off;
};

__device__ __forceinline__ void copy_range(const float* __restrict__ s, float* __restrict__ d, u64 n) {
    const u64 tid = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    const u64 stride = (u64)gridDim.x * blockDim.x;
    u64 done = 0;
    if ((((u64)s | (u64)d) & 15) == 0) {
        const u64 n4 = n / 4;
        for (u64 i = tid; i < n4; i += stride) ((float4*)d)[i] = ((const float4*)s)[i];
        done = n4 * 4;
    }
    for (u64 i = done + tid; i < n; i += stride) d[i] = s[i];
}

// src: [>= src_off + n], dst: [>= dst_off + n]
extern "C" __global__ void copy_rows_f32(CopyRowsParams p, const float* __restrict__ src,
                                         float* __restrict__ dst) {
    copy_range(src + p.src_off, dst + p.dst_off, p.n);
}

// The destination row read from device memory (CUDA-graph decode: the
// KV-cache append row changes every token, the graph does not).
struct CopyRowsAtParams {
    u64 n;        // n_rows * row_len
    u64 src_off;  // src_row * row_len
    u64 row_len;
    u64 max_row;  // the largest dst row the launcher validated
};

// row: [1] the dst row, clamped to [0, max_row];
// src: [>= src_off + n], dst: [>= (max_row * row_len) + n]
extern "C" __global__ void copy_rows_at_f32(CopyRowsAtParams p, const i32* __restrict__ row,
                                            const float* __restrict__ src,
                                            float* __restrict__ dst) {
    const i32 r = row[0];
    const u64 dst_row = r < 0 ? 0 : min((u64)r, p.max_row);
    copy_range(src + p.src_off, dst + dst_row * p.row_len, p.n);
}
