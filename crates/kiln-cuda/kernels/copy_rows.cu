// copy_rows: dst[dst_off .. dst_off + n] = src[src_off .. src_off + n] with
// n = n_rows * row_len, src_off = src_row * row_len, dst_off = dst_row *
// row_len (reference kiln-core ops/copy_rows.rs: rows are contiguous, so the
// copy is one range). Grid-stride, float4 when both ends are 16-byte aligned.
// Into an f16 / bf16 cache (the KV append) every value is rounded to
// nearest even as kiln-core's KvSliceMut::store does (bit-exact); a float4
// becomes one 8-byte store when the destination is 8-byte aligned.
// A ring destination of r rows (dst_ring: row dst_row + i lands in row
// (dst_row + i) % r, n_rows <= r) is two ranges: the rows up to the ring's
// end, then the rest from row 0 (copy_split).
#include "common.cuh"

// n_first <= n elements go to dst_off, the other n - n_first to 0 (a ring
// that wraps; n_first = n otherwise).
struct CopyRowsParams {
    u64 n;
    u64 src_off;
    u64 dst_off;
    u64 n_first;
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

// Plain f32 rows (copy_range) or rounded to 16 bits by S::cvt (copy_range_16).
struct StoreF32 {
    typedef float T;
};
template <class S>
__device__ __forceinline__ void copy_any(const float* __restrict__ s, typename S::T* __restrict__ d, u64 n) {
    if constexpr (sizeof(typename S::T) == 4) {
        copy_range(s, d, n);
    } else {
        copy_range_16<S>(s, d, n);
    }
}

// s[0 .. n_first] to d + dst_off, s[n_first .. n] to d (the part of a ring
// append past the ring's end); each range grid-stride on its own.
template <class S>
__device__ __forceinline__ void copy_split(const float* __restrict__ s, typename S::T* __restrict__ d,
                                           u64 dst_off, u64 n, u64 n_first) {
    kiln_pdl_enter();  // PDL: everything it reads or writes is the previous kernels'
    copy_any<S>(s, d + dst_off, n_first);
    if (n_first < n) copy_any<S>(s + n_first, d, n - n_first);
}

// src: [>= src_off + n], dst: [>= max(dst_off + n_first, n - n_first)]
extern "C" __global__ void copy_rows_f32(CopyRowsParams p, const float* __restrict__ src,
                                         float* __restrict__ dst) {
    copy_split<StoreF32>(src + p.src_off, dst, p.dst_off, p.n, p.n_first);
}
extern "C" __global__ void copy_rows_f16(CopyRowsParams p, const float* __restrict__ src,
                                         u16* __restrict__ dst) {
    copy_split<StoreF16>(src + p.src_off, dst, p.dst_off, p.n, p.n_first);
}
extern "C" __global__ void copy_rows_bf16(CopyRowsParams p, const float* __restrict__ src,
                                          u16* __restrict__ dst) {
    copy_split<StoreBF16>(src + p.src_off, dst, p.dst_off, p.n, p.n_first);
}

// The destination row read from device memory (CUDA-graph decode: the
// KV-cache append row changes every token, the graph does not).
struct CopyRowsAtParams {
    u64 n;        // n_rows * row_len
    u64 src_off;  // src_row * row_len
    u64 row_len;
    u64 max_row;  // the largest dst row (position) the launcher validated
    u64 ring;     // dst_ring's rows (n_rows <= ring), 0 = none
};

// The device row clamped to [0, max_row], then, with a ring, split where the
// rows pass its end: the first row's offset and the elements before the wrap.
template <class S>
__device__ __forceinline__ void copy_at(const CopyRowsAtParams& p, const i32* __restrict__ row,
                                        const float* __restrict__ src, typename S::T* __restrict__ dst) {
    kiln_pdl_enter();  // PDL: everything it reads or writes is the previous kernels'
    const i32 r = row[0];
    const u64 pos = r < 0 ? 0 : min((u64)r, p.max_row);
    u64 first = pos, n_first = p.n;
    if (p.ring != 0) {
        first = pos % p.ring;
        n_first = min(p.n, (p.ring - first) * p.row_len);
    }
    copy_split<S>(src + p.src_off, dst, first * p.row_len, p.n, n_first);
}

// row: [1] the dst row, clamped to [0, max_row]; src: [>= src_off + n];
// dst: [>= max_row * row_len + n], or with a ring [>= ring * row_len]
// (n <= ring * row_len: the two ranges stay inside the ring's rows).
extern "C" __global__ void copy_rows_at_f32(CopyRowsAtParams p, const i32* __restrict__ row,
                                            const float* __restrict__ src,
                                            float* __restrict__ dst) {
    copy_at<StoreF32>(p, row, src, dst);
}
extern "C" __global__ void copy_rows_at_f16(CopyRowsAtParams p, const i32* __restrict__ row,
                                            const float* __restrict__ src, u16* __restrict__ dst) {
    copy_at<StoreF16>(p, row, src, dst);
}
extern "C" __global__ void copy_rows_at_bf16(CopyRowsAtParams p, const i32* __restrict__ row,
                                             const float* __restrict__ src, u16* __restrict__ dst) {
    copy_at<StoreBF16>(p, row, src, dst);
}
