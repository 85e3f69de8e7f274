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
