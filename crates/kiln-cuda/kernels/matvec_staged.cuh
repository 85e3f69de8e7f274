// Staged mat-vec: each warp streams the bytes of its weight-row pair through
// shared memory with cp.async (16-, 8- or 4-byte pieces, whatever the row
// length allows), STAGE_N chunks deep, and decodes blocks from there with the
// block decoders of matvec.cuh / decode_kq.cuh. Included after both.
//
// Why: the direct loop (mv_blocks_acc) issues 2-4-byte loads per lane, two
// steps ahead, so a warp has ~600 bytes in flight; the memory system needs
// ~25 KB in flight per SM to run at the read ceiling. Here a warp has
// (STAGE_N - 1) chunks of both rows in flight (~3 KB) at the cost of no
// registers, and the decoders read shared memory at low latency.
//
// A chunk is a whole number of (super-)blocks whose byte length is a
// multiple of 16 and whose virtual-block count is a multiple of 8 (one warp
// step of 4 lanes per block), so every chunk starts 16-byte aligned relative
// to its row and one warp step never straddles two chunks. The host mirrors
// stage_sblocks() (kiln-cuda/src/matmul.rs) to plan how many warps share a
// row; only that plan depends on the mirror, never memory safety.
#pragma once

#define STAGE_N 3
#define STAGE_TARGET_BYTES 768

__host__ __device__ constexpr int kiln_gcd(int a, int b) { return b == 0 ? a : kiln_gcd(b, a % b); }
__host__ __device__ constexpr int kiln_lcm(int a, int b) { return a / kiln_gcd(a, b) * b; }

// Super-blocks (TS bytes, SUB virtual 32-element blocks each) per chunk.
__host__ __device__ constexpr int stage_sblocks(int ts, int sub) {
    return kiln_lcm(16 / kiln_gcd(ts, 16), 8 / kiln_gcd(sub, 8)) *
           (STAGE_TARGET_BYTES / (kiln_lcm(16 / kiln_gcd(ts, 16), 8 / kiln_gcd(sub, 8)) * ts) > 0
                ? STAGE_TARGET_BYTES / (kiln_lcm(16 / kiln_gcd(ts, 16), 8 / kiln_gcd(sub, 8)) * ts)
                : 1);
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
__device__ __forceinline__ u32 smem_addr(const void* p) {
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}
#endif

// Copy `cw` (16, 8 or 4) bytes global -> shared, asynchronously where the
// architecture has cp.async (sm_80+), else synchronously.
__device__ __forceinline__ void stage_copy(u8* dst, const u8* src, int cw) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const u32 d = smem_addr(dst);
    if (cw == 16) {
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d), "l"(src) : "memory");
    } else if (cw == 8) {
        asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" ::"r"(d), "l"(src) : "memory");
    } else {
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(d), "l"(src) : "memory");
    }
#else
    if (cw == 16) {
        *(uint4*)dst = *(const uint4*)src;
    } else if (cw == 8) {
        *(uint2*)dst = *(const uint2*)src;
    } else {
        *(u32*)dst = *(const u32*)src;
    }
#endif
}

__device__ __forceinline__ void stage_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}

// Wait until at most N of this thread's committed groups are pending.
template <int N>
__device__ __forceinline__ void stage_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}

// Chunk geometry of format Q under block walker B, and the shared memory one
// CTA's staging needs (BYTES, 16-byte aligned by the caller).
template <class Q, class B>
struct StagePlan {
    static constexpr int SB = stage_sblocks(Q::TS, B::SUB);
    static constexpr int CHB = SB * Q::TS;
    static constexpr int BYTES = MV_WARPS * STAGE_N * MV_ROWS * CHB;
};

// acc as mv_blocks_acc computes it (same decoders, same per-lane order of
// virtual blocks within a warp step), for weight rows whose byte length is a
// multiple of p.cw and which start p.cw-aligned. Warp w of the CTA works on
// row pair w / kw and chunks (w % kw) + kw * i of it. pro(xr) runs once per
// thread after the first chunks were requested. smem: StagePlan<Q, B>::BYTES
// of shared memory, 16-byte aligned.
template <class Q, class B, int M, class Pro>
__device__ __forceinline__ void mv_staged_acc(const MvShape& p, const u8* __restrict__ w, Pro pro,
                                              float (&acc)[M][MV_ROWS], u8* smem) {
    constexpr int SB = StagePlan<Q, B>::SB;
    constexpr int CHB = StagePlan<Q, B>::CHB;
    auto stage = (u8 (*)[STAGE_N][MV_ROWS][CHB])smem;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, s = lane & 3;
    const int kw = p.kw, ks = warp % kw, cw = p.cw;
    u64 ja, jb;
    mv_pair_rows(p, min(mv_row0(kw), p.n - 1), ja, jb);
    const u8* w0 = w + ja * p.row_bytes;
    const u8* w1 = w + jb * p.row_bytes;
#pragma unroll
    for (int r = 0; r < M; r++) {
        acc[r][0] = 0.0f;
        acc[r][1] = 0.0f;
    }
    const u64 nsb = p.row_bytes / Q::TS;
    const u64 nch = (nsb + SB - 1) / SB;
    const u64 mine = nch > (u64)ks ? (nch - (u64)ks + kw - 1) / kw : 0;
    // Request chunk i of this warp (an empty group past the end, so the
    // group count, and with it stage_wait's meaning, stays uniform).
    auto request = [&](u64 i) {
        if (i < mine) {
            const u64 off = ((u64)ks + (u64)kw * i) * CHB;
            const u32 bytes = (u32)min((u64)CHB, p.row_bytes - off);
            u8* dst = &stage[warp][i % STAGE_N][0][0];
            for (u32 o = (u32)lane * cw; o < bytes; o += 32u * cw) {
                stage_copy(dst + o, w0 + off + o, cw);
                stage_copy(dst + CHB + o, w1 + off + o, cw);
            }
        }
        stage_commit();
    };
#pragma unroll
    for (int i = 0; i < STAGE_N - 1; i++) request((u64)i);
    const float* xr[M];
    pro(xr);
    for (u64 i = 0; i < mine; i++) {
        request(i + STAGE_N - 1);
        stage_wait<STAGE_N - 1>();
        __syncwarp();
        const u8* a = &stage[warp][i % STAGE_N][0][0];
        const u64 sb0 = ((u64)ks + (u64)kw * i) * SB;
        const int nvb = (int)min((u64)SB, nsb - sb0) * B::SUB;
#pragma unroll 2
        for (int v = lane >> 2; v < nvb; v += 8) {
            const typename Q::Raw ra = B::at(a, (u64)v, s);
            const typename Q::Raw rb = B::at(a + CHB, (u64)v, s);
            mv_step<Q, M>(ra, rb, xr, sb0 * B::SUB + (u64)v, s, acc);
        }
        __syncwarp();
    }
    stage_wait<0>();
}

// Float weights w: [n, k] with k a multiple of 16 / sizeof(element) and
// rows 16-byte aligned: the whole CTA splits k over one row pair as
// mv_float_acc does, but each thread loads 16 bytes per row per load (4 f32
// or 8 f16/bf16 elements), STAGE_FLOAT_U loads per row in flight.
#define STAGE_FLOAT_U 4
template <class F, int M, class Pro>
__device__ __forceinline__ void mv_float_vec_acc(const MvShape& p, const u8* __restrict__ w, Pro pro,
                                                 float (&acc)[M][MV_ROWS]) {
    constexpr int VE = 16 / F::SIZE, U = STAGE_FLOAT_U;
    u64 ja, jb;
    mv_pair_rows(p, min((u64)blockIdx.x * MV_ROWS, p.n - 1), ja, jb);
    const uint4* w0 = (const uint4*)(w + ja * p.row_bytes);
    const uint4* w1 = (const uint4*)(w + jb * p.row_bytes);
#pragma unroll
    for (int r = 0; r < M; r++) {
        acc[r][0] = 0.0f;
        acc[r][1] = 0.0f;
    }
    const u64 nv = p.k / VE, v0 = threadIdx.x;
    uint4 a[U], b[U];
    auto load = [&](u64 base) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            const u64 v = base + (u64)u * MV_THREADS;
            if (v < nv) {
                a[u] = w0[v];
                b[u] = w1[v];
            }
        }
    };
    // The first loads are requested before pro (which may wait for the
    // previous kernel).
    load(v0);
    const float* xr[M];
    pro(xr);
    for (u64 base = v0; base < nv; base += (u64)U * MV_THREADS) {
        if (base != v0) load(base);
#pragma unroll
        for (int u = 0; u < U; u++) {
            const u64 v = base + (u64)u * MV_THREADS;
            if (v >= nv) break;
            float fa[VE], fb[VE];
            F::unpack(a[u], fa);
            F::unpack(b[u], fb);
#pragma unroll
            for (int r = 0; r < M; r++) {
                const float4* xv = (const float4*)(xr[r] + v * VE);
#pragma unroll
                for (int q = 0; q < VE / 4; q++) {
                    const float4 x4 = xv[q];
                    const float xs[4] = {x4.x, x4.y, x4.z, x4.w};
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        acc[r][0] = fmaf(fa[4 * q + e], xs[e], acc[r][0]);
                        acc[r][1] = fmaf(fb[4 * q + e], xs[e], acc[r][1]);
                    }
                }
            }
        }
    }
}
