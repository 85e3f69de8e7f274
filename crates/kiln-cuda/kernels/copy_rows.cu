// copy_rows: dst[dst_off .. dst_off + n] = src[src_off .. src_off + n] with
// n = n_rows * row_len, src_off = src_row * row_len, dst_off = dst_row *
// row_len (reference kiln-core ops/copy_rows.rs: rows are contiguous, so the
// copy is one range). Grid-stride, float4 when both ends are 16-byte aligned.
// Into an f16 / bf16 cache (the KV append) every value is rounded to
// nearest even as kiln-core's KvSliceMut::store does (bit-exact); a float4
// becomes one 8-byte store when the destination is 8-byte aligned.
#include "common.cuh"

struct CopyRowsParams {
    u64 n;
    u64 src_off;
    u64 dst_off;
};

struct StoreF16 {
    typedef u16 T;
    static __device__ __forceinline__ u16 cvt(float x) { return kiln_f32_to_f16(x); }
};
struct StoreBF16 {
    typedef u16 T;
    static __device__ __forceinline__ u16 cvt(float x) { return kiln_f32_to_bf16(x); }
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

// The same into 16-bit elements, each rounded by S::cvt.
template <class S>
__device__ __forceinline__ void copy_range_16(const float* __restrict__ s, u16* __restrict__ d, u64 n) {
    const u64 tid = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    const u64 stride = (u64)gridDim.x * blockDim.x;
    u64 done = 0;
    if (((u64)s & 15) == 0 && ((u64)d & 7) == 0) {
        const u64 n4 = n / 4;
        for (u64 i = tid; i < n4; i += stride) {
            const float4 x = ((const float4*)s)[i];
            const u32 lo = (u32)S::cvt(x.x) | ((u32)S::cvt(x.y) << 16);
            const u32 hi = (u32)S::cvt(x.z) | ((u32)S::cvt(x.w) << 16);
            ((uint2*)d)[i] = make_uint2(lo, hi);
        }
        done = n4 * 4;
    }
    for (u64 i = done + tid; i < n; i += stride) d[i] = S::cvt(s[i]);
}

// src: [>= src_off + n], dst: [>= dst_off + n]
extern "C" __global__ void copy_rows_f32(CopyRowsParams p, const float* __restrict__ src,
                                         float* __restrict__ dst) {
    copy_range(src + p.src_off, dst + p.dst_off, p.n);
}
extern "C" __global__ void copy_rows_f16(CopyRowsParams p, const float* __restrict__ src,
                                         u16* __restrict__ dst) {
    copy_range_16<StoreF16>(src + p.src_off, dst + p.dst_off, p.n);
}
extern "C" __global__ void copy_rows_bf16(CopyRowsParams p, const float* __restrict__ src,
                                          u16* __restrict__ dst) {
    copy_range_16<StoreBF16>(src + p.src_off, dst + p.dst_off, p.n);
}

// The destination row read from device memory (CUDA-graph decode: the
// KV-cache append row changes every token, the graph does not).
struct CopyRowsAtParams {
    u64 n;        // n_rows * row_len
    u64 src_off;  // src_row * row_len
    u64 row_len;
    u64 max_row;  // the largest dst row the launcher validated
};

__device__ __forceinline__ u64 at_row(const CopyRowsAtParams& p, const i32* __restrict__ row) {
    const i32 r = row[0];
    return r < 0 ? 0 : min((u64)r, p.max_row);
}

// row: [1] the dst row, clamped to [0, max_row];
// src: [>= src_off + n], dst: [>= (max_row * row_len) + n]
extern "C" __global__ void copy_rows_at_f32(CopyRowsAtParams p, const i32* __restrict__ row,
                                            const float* __restrict__ src,
                                            float* __restrict__ dst) {
    copy_range(src + p.src_off, dst + at_row(p, row) * p.row_len, p.n);
}
extern "C" __global__ void copy_rows_at_f16(CopyRowsAtParams p, const i32* __restrict__ row,
                                            const float* __restrict__ src, u16* __restrict__ dst) {
    copy_range_16<StoreF16>(src + p.src_off, dst + at_row(p, row) * p.row_len, p.n);
}
extern "C" __global__ void copy_rows_at_bf16(CopyRowsAtParams p, const i32* __restrict__ row,
                                             const float* __restrict__ src, u16* __restrict__ dst) {
    copy_range_16<StoreBF16>(src + p.src_off, dst + at_row(p, row) * p.row_len, p.n);
}
