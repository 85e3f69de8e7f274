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

// src: [>= src_off + n], dst: [>= dst_off + n]
extern "C" __global__ void copy_rows_f32(CopyRowsParams p, const float* __restrict__ src,
                                         float* __restrict__ dst) {
    const float* s = src + p.src_off;
    float* d = dst + p.dst_off;
    const u64 tid = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    const u64 stride = (u64)gridDim.x * blockDim.x;
    u64 done = 0;
    if ((((u64)s | (u64)d) & 15) == 0) {
        const u64 n4 = p.n / 4;
        for (u64 i = tid; i < n4; i += stride) ((float4*)d)[i] = ((const float4*)s)[i];
        done = n4 * 4;
    }
    for (u64 i = done + tid; i < p.n; i += stride) d[i] = s[i];
}
