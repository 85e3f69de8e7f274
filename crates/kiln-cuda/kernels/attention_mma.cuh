// attention_mma: FlashAttention-2-style causal GQA prefill on tensor cores
// (sm_80+), the semantics of kiln_core::ops::attention::attention_ref with
// bf16 operands and f32 accumulation. Included by attention.cu (AttnParams,
// first_key, kv_row, kv_row_step, KILN_NEG_INF come from there).
//
// One CTA = 4 warps = one tile of MMA_BM = 64 query rows of one head; warp w
// owns rows 16w .. 16w + 15 (one m16 tile). Scores are in base 2: q is
// multiplied by scale * log2(e) before it is rounded to bf16.
//   - Q: each lane builds its A fragments of S = Q K^T straight from global
//     memory once (f32 -> bf16), D/16 k-chunks of 4 registers.
//   - K/V: key tiles of BN = 32 rows (a template parameter), converted to
//     bf16 on the load (load_kv8 = kv_to_bf16(kv_fetch): 8 elements of a
//     KV_T row -> 8 bf16; KV_T is attention_kv.cuh's kv_t: f32 values, or
//     f16 / bf16 bits by KILN_KV, each with its own KvStage) into shared
//     memory rows padded to D + 8 elements (16 bytes: the 8 rows an
//     ldmatrix phase reads fall in distinct banks). Rows past the keys any
//     query sees are written as zeros and never read from global memory.
//     Each key's row is mapped from its position (kv_row: a ring cache
//     wraps, possibly inside a tile), so tiles and masks work on positions.
//   - S = Q K^T: mma.m16n8k16 (bf16 -> f32) with K fragments by ldmatrix
//     (K rows are the B operand's columns: no transpose).
//   - mask (only on tiles that need it): key j visible to the row at
//     position i iff first_key(i + 1) <= j <= i.
//   - online softmax in registers: a lane holds 2 rows (g, g + 8) x 16
//     keys of the tile; row max over the 4 lanes of a row by two xor
//     shuffles; P = exp2(S - m) rounded to bf16, and the row sum l adds the
//     rounded values, so out = sum p~ v~ / sum p~ is an exact convex
//     combination of the bf16 values. The S accumulators of two n8 tiles
//     are the A fragment of one k16 chunk of O += P V.
//   - O += P V: mma with V fragments by ldmatrix.trans.
//   - out = O / l (l summed over the row's 4 lanes), f32.
// Key tiles run from the first key of the CTA's first row (its window) to
// the last row's own key: tiles wholly above the causal diagonal or before
// every row's window are never loaded.
//
// The tensor-core, ldmatrix and bf16-conversion instructions sit in the small
// functions below, which scripts/check-cuda-attn-mma.py replaces
// (KILN_MMA_EMULATED) with an emulation of a warp per the PTX ISA's fragment
// layouts, to check the indexing on the host.

// The cache element type (attention_kv.cuh: the module's KILN_KV variant).
#ifndef KV_T
#define KV_T kv_t
#endif

#define MMA_BM 64
#define MMA_THREADS 128

// Everything below needs sm_80 (bf16 mma, cvt.bf16x2); on older devices the
// entry points compile to nothing and the launcher never selects them.
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define KILN_MMA_ENABLED 1
#endif

#ifdef KILN_MMA_ENABLED
#ifndef KILN_MMA_EMULATED
// bf16x2 of (lo, hi): lo in bits 0..15, round to nearest even.
__device__ __forceinline__ u32 mma_pack_bf16(float lo, float hi) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

__device__ __forceinline__ u32 mma_smem_addr(const void* p) {
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

// Four 8x8 b16 matrices; lane l gives the address of row l % 8 of matrix
// l / 8 and receives, of each matrix i, row l / 4, columns 2 (l % 4) and
// 2 (l % 4) + 1 in r[i].
__device__ __forceinline__ void mma_ldsm_x4(u32 (&r)[4], const u16* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(mma_smem_addr(p)));
}

// As mma_ldsm_x4, transposed: lane l receives, of each matrix i, rows
// 2 (l % 4) and 2 (l % 4) + 1 of column l / 4.
__device__ __forceinline__ void mma_ldsm_x4_trans(u32 (&r)[4], const u16* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(mma_smem_addr(p)));
}

// d += a b: a 16x16 bf16 (row), b 16x8 bf16 (col), d 16x8 f32.
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#endif  // KILN_MMA_EMULATED

// The f32 value of the low / high bf16 of a pair.
__device__ __forceinline__ float mma_bf16_lo(u32 x) { return __uint_as_float(x << 16); }
__device__ __forceinline__ float mma_bf16_hi(u32 x) { return __uint_as_float(x & 0xffff0000u); }

// K/V loads, split in two so a tile's global loads can be in flight while
// the previous tile is computed: kv_fetch issues the loads of 8 consecutive
// elements of a K or V row into a KvStage (registers), kv_to_bf16 turns one
// into 8 bf16 (the shared-memory layout); load_kv8 is the two at once.
// Each cache type has its own KvStage: f32 rows are read 16 bytes at a
// time (two loads per 8 elements), f16 / bf16 rows one 16-byte load per 8
// elements; the launcher checks the base pointers; head_dim is a multiple
// of 8. bf16 bits go to shared memory as they are; f16 values are widened
// (exact) and rounded to bf16 like f32 ones.
#if !defined(KILN_KV) || KILN_KV == 0
struct KvStage {
    float4 a, b;
};
__device__ __forceinline__ KvStage kv_fetch(const float* __restrict__ src) {
    return {*(const float4*)src, *(const float4*)(src + 4)};
}
__device__ __forceinline__ uint4 kv_to_bf16(const KvStage& x) {
    return make_uint4(mma_pack_bf16(x.a.x, x.a.y), mma_pack_bf16(x.a.z, x.a.w),
                      mma_pack_bf16(x.b.x, x.b.y), mma_pack_bf16(x.b.z, x.b.w));
}
#else
struct KvStage {
    uint4 a;
};
__device__ __forceinline__ KvStage kv_fetch(const u16* __restrict__ src) { return {*(const uint4*)src}; }
#if KILN_KV == 2
__device__ __forceinline__ uint4 kv_to_bf16(const KvStage& x) { return x.a; }
#else
__device__ __forceinline__ u32 mma_f16x2_to_bf16x2(u32 w) {
    return mma_pack_bf16(kiln_f16_to_f32((u16)(w & 0xffffu)), kiln_f16_to_f32((u16)(w >> 16)));
}
__device__ __forceinline__ uint4 kv_to_bf16(const KvStage& x) {
    return make_uint4(mma_f16x2_to_bf16x2(x.a.x), mma_f16x2_to_bf16x2(x.a.y), mma_f16x2_to_bf16x2(x.a.z),
                      mma_f16x2_to_bf16x2(x.a.w));
}
#endif
#endif
__device__ __forceinline__ uint4 load_kv8(const KV_T* __restrict__ src) { return kv_to_bf16(kv_fetch(src)); }

// One K or V tile of BN keys in flight: thread tid holds chunks (8
// elements) tid + r * MMA_THREADS, i.e. key i / (D / 8) of the tile,
// columns (i % (D / 8)) * 8 .. + 7. Keys at or past nk are not read (they
// may be NaN or outside the cache) and are stored as zeros.
template <int D, int BN>
struct KvTile {
    static constexpr int CH = BN * D / 8 / MMA_THREADS;
    static_assert(CH * 8 * MMA_THREADS == BN * D, "tile not a whole number of chunks per thread");
    KvStage st[CH];

    // Issue the loads of positions k0 .. k0 + nk - 1 of `base` (row stride
    // `row`), each from its cache row (kv_row).
    __device__ __forceinline__ void fetch(const AttnParams& p, const KV_T* __restrict__ base, u64 row,
                                          u32 k0, u32 nk) {
        const u32 r0 = kv_row(p, k0);
#pragma unroll
        for (int r = 0; r < CH; ++r) {
            const u32 i = threadIdx.x + r * MMA_THREADS, j = i / (D / 8), c = (i % (D / 8)) * 8;
            if (j < nk) st[r] = kv_fetch(base + (u64)kv_row_step(p, r0, k0, j) * row + c);
        }
    }
    // Store the fetched rows as bf16 into dst [BN][D + 8], zeros past nk.
    __device__ __forceinline__ void put(u16* dst, u32 nk) const {
#pragma unroll
        for (int r = 0; r < CH; ++r) {
            const u32 i = threadIdx.x + r * MMA_THREADS, j = i / (D / 8), c = (i % (D / 8)) * 8;
            *(uint4*)(dst + j * (D + 8) + c) = j < nk ? kv_to_bf16(st[r]) : make_uint4(0u, 0u, 0u, 0u);
        }
    }
};

// q: [n_tokens, n_heads, D] f32; k, v: [kv_stride, n_kv_heads, D] KV_T;
// out: [n_tokens, n_heads, D] f32. Grid (n_heads, ceil(n_tokens / 64)),
// MMA_THREADS threads; the last query tiles (most keys) start first. BN
// keys per tile (32 for both head dims: registers, see the entry points).
//
// Pipeline, two barriers per key tile: V_j's loads are in flight during
// S_j = Q K_j^T and the softmax, then stored; K_{j+1}'s during O += P V_j,
// then stored; so no warp waits on global memory between the barriers
// unless the loads take longer than the tensor-core work.
template <int D, int BN>
__device__ __forceinline__ void attention_mma(const AttnParams& p, const float* __restrict__ q,
                                              const KV_T* __restrict__ k,
                                              const KV_T* __restrict__ v,
                                              float* __restrict__ out) {
    constexpr int DS = D + 8;       // shared row stride (bf16)
    constexpr int KC = D / 16;      // k16 chunks of Q K^T
    constexpr int NT = BN / 8;      // n8 tiles of S
    constexpr int DT = D / 8;       // n8 tiles of O
    __shared__ __align__(16) u16 ks[BN * DS];
    __shared__ __align__(16) u16 vs[BN * DS];
    const u32 tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const u32 g = lane / 4, tq = lane % 4;
    const u32 h = blockIdx.x, kvh = h / p.group;
    const u32 n_qt = (p.n_tokens + MMA_BM - 1) / MMA_BM;
    const u32 t0 = (n_qt - 1 - blockIdx.y) * MMA_BM;
    const u32 nq = min((u32)MMA_BM, p.n_tokens - t0);
    const u64 row = (u64)p.n_kv_heads * D;  // elements per cache row
    const KV_T* kb = k + (u64)kvh * D;
    const KV_T* vb = v + (u64)kvh * D;

    // This lane's rows of the tile: r0 = 16 warp + g and r1 = r0 + 8.
    const u32 r0 = warp * 16 + g, r1 = r0 + 8;
    u32 qf[KC][4];
    {
        const float sc = p.scale_log2;
        const float* q0 = q + ((u64)(t0 + r0) * p.n_heads + h) * D + 2 * tq;
        const float* q1 = q + ((u64)(t0 + r1) * p.n_heads + h) * D + 2 * tq;
#pragma unroll
        for (int kc = 0; kc < KC; ++kc) {
            const int c = kc * 16;
            qf[kc][0] = r0 < nq ? mma_pack_bf16(q0[c] * sc, q0[c + 1] * sc) : 0u;
            qf[kc][1] = r1 < nq ? mma_pack_bf16(q1[c] * sc, q1[c + 1] * sc) : 0u;
            qf[kc][2] = r0 < nq ? mma_pack_bf16(q0[c + 8] * sc, q0[c + 9] * sc) : 0u;
            qf[kc][3] = r1 < nq ? mma_pack_bf16(q1[c + 8] * sc, q1[c + 9] * sc) : 0u;
        }
    }
    // Visible keys per row: [first, last]. Rows past the last token take the
    // last token's (their output is not written).
    const u32 last0 = p.pos0 + t0 + min(r0, nq - 1), last1 = p.pos0 + t0 + min(r1, nq - 1);
    const u32 first0 = first_key(p, last0 + 1), first1 = first_key(p, last1 + 1);
    const u32 k_start = first_key(p, p.pos0 + t0 + 1);  // row 0's first key
    const u32 k_end = p.pos0 + t0 + nq;                  // past the last row's own key
    const u32 all_first = first_key(p, k_end);           // the last row's first key

    float o[DT][4];
#pragma unroll
    for (int i = 0; i < DT; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float m0 = KILN_NEG_INF, m1 = KILN_NEG_INF, l0 = 0.f, l1 = 0.f;

    // Prologue: K_0 in shared memory, V_0's loads in flight.
    KvTile<D, BN> tile;
    if (k_start < k_end) {
        const u32 nk = min((u32)BN, k_end - k_start);
        tile.fetch(p, kb, row, k_start, nk);
        tile.put(ks, nk);
        tile.fetch(p, vb, row, k_start, nk);
    }
    __syncthreads();

    for (u32 k0 = k_start; k0 < k_end; k0 += BN) {
        const u32 nk = min((u32)BN, k_end - k0);
        const u32 k1 = k0 + BN;  // the next tile
        const u32 nk1 = k1 < k_end ? min((u32)BN, k_end - k1) : 0u;
        // S = Q K^T: s[nt] is keys k0 + 8 nt .. + 7; lane holds (r0, 2 tq),
        // (r0, 2 tq + 1), (r1, 2 tq), (r1, 2 tq + 1).
        float s[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
        for (int kc = 0; kc < KC; ++kc) {
#pragma unroll
            for (int np = 0; np < NT / 2; ++np) {
                // Matrices: keys +0..7 / dims +0..7, keys +0..7 / dims +8..15,
                // keys +8..15 / dims +0..7, keys +8..15 / dims +8..15.
                u32 b[4];
                mma_ldsm_x4(b, ks + (np * 16 + lane % 8 + 8 * (lane / 16)) * DS + kc * 16 +
                                   8 * ((lane / 8) % 2));
                mma_bf16_16816(s[2 * np], qf[kc], b[0], b[1]);
                mma_bf16_16816(s[2 * np + 1], qf[kc], b[2], b[3]);
            }
        }
        // Soft cap (q carries scale / c): s = c log2(e) tanh(s), before the mask.
        if (p.cap_log2 != 0.f) {
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
                for (int e = 0; e < 4; ++e) s[nt][e] = cap_score(p, s[nt][e]);
            }
        }
        // Mask the tiles that hold a key some row must not see.
        if (k0 + BN - 1 > p.pos0 + t0 || k0 < all_first) {
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const u32 key = k0 + nt * 8 + 2 * tq + (e & 1);
                    const bool vis = e < 2 ? (key >= first0 && key <= last0) : (key >= first1 && key <= last1);
                    if (!vis) s[nt][e] = KILN_NEG_INF;
                }
            }
        }
        // Online softmax. A row that has seen no key yet (a window starting
        // past this tile) keeps m = -inf: exponentiate against 0 so it adds 0.
        float mx0 = KILN_NEG_INF, mx1 = KILN_NEG_INF;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            mx0 = fmaxf(mx0, fmaxf(s[nt][0], s[nt][1]));
            mx1 = fmaxf(mx1, fmaxf(s[nt][2], s[nt][3]));
        }
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
        const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
        const float ref0 = mn0 == KILN_NEG_INF ? 0.f : mn0;
        const float ref1 = mn1 == KILN_NEG_INF ? 0.f : mn1;
        const float a0 = exp2f(m0 - ref0), a1 = exp2f(m1 - ref1);
        m0 = mn0;
        m1 = mn1;
        l0 *= a0;
        l1 *= a1;
#pragma unroll
        for (int i = 0; i < DT; ++i) {
            o[i][0] *= a0;
            o[i][1] *= a0;
            o[i][2] *= a1;
            o[i][3] *= a1;
        }
        // P in bf16 as the A fragments of O += P V: chunk c (keys 16c ..
        // 16c + 15) = {row r0 of tile 2c, row r1 of tile 2c, row r0 of tile
        // 2c + 1, row r1 of tile 2c + 1}.
        u32 pf[NT / 2][4];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            const u32 lo = mma_pack_bf16(exp2f(s[nt][0] - ref0), exp2f(s[nt][1] - ref0));
            const u32 hi = mma_pack_bf16(exp2f(s[nt][2] - ref1), exp2f(s[nt][3] - ref1));
            l0 += mma_bf16_lo(lo) + mma_bf16_hi(lo);
            l1 += mma_bf16_lo(hi) + mma_bf16_hi(hi);
            pf[nt / 2][(nt % 2) * 2] = lo;
            pf[nt / 2][(nt % 2) * 2 + 1] = hi;
        }
        // V_j to shared memory (every warp finished O += P V_{j-1} before the
        // last barrier), then K_{j+1}'s loads.
        tile.put(vs, nk);
        if (nk1 > 0) tile.fetch(p, kb, row, k1, nk1);
        __syncthreads();  // vs written; every warp is done with ks (S_j)
        // O += P V.
#pragma unroll
        for (int kc = 0; kc < NT / 2; ++kc) {
#pragma unroll
            for (int dp = 0; dp < DT / 2; ++dp) {
                // Matrices (transposed): keys +0..7 / dims +0..7, keys +8..15 /
                // dims +0..7, keys +0..7 / dims +8..15, keys +8..15 / dims +8..15.
                u32 b[4];
                mma_ldsm_x4_trans(b, vs + (kc * 16 + lane % 8 + 8 * ((lane / 8) % 2)) * DS + dp * 16 +
                                         8 * (lane / 16));
                mma_bf16_16816(o[2 * dp], pf[kc], b[0], b[1]);
                mma_bf16_16816(o[2 * dp + 1], pf[kc], b[2], b[3]);
            }
        }
        // K_{j+1} to shared memory, then V_{j+1}'s loads.
        if (nk1 > 0) {
            tile.put(ks, nk1);
            tile.fetch(p, vb, row, k1, nk1);
        }
        __syncthreads();  // ks written; every warp is done with vs (P V_j)
    }
    // Every row sees its own key: l > 0.
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float inv0 = 1.f / l0, inv1 = 1.f / l1;
    float* o0 = out + ((u64)(t0 + r0) * p.n_heads + h) * D + 2 * tq;
    float* o1 = out + ((u64)(t0 + r1) * p.n_heads + h) * D + 2 * tq;
#pragma unroll
    for (int i = 0; i < DT; ++i) {
        if (r0 < nq) *(float2*)(o0 + i * 8) = make_float2(o[i][0] * inv0, o[i][1] * inv0);
        if (r1 < nq) *(float2*)(o1 + i * 8) = make_float2(o[i][2] * inv1, o[i][3] * inv1);
    }
}

#endif  // KILN_MMA_ENABLED

// Entry points; empty below sm_80 (the launcher selects them only on sm_80+).
#ifdef KILN_MMA_ENABLED
#define KILN_ATTN_MMA_BODY(D, BN) attention_mma<D, BN>(p, q, k, v, out);
#else
#define KILN_ATTN_MMA_BODY(D, BN)
#endif
// MINB CTAs per SM caps the registers. ptxas (CUDA 13.0, sm_90 and sm_80):
// D = 64 uses 128 (4 CTAs, 16 warps per SM), D = 128 uses 238 (2 CTAs),
// neither spills. (Tried: D = 64 with 64-key tiles at 3 CTAs spills 28
// bytes, D = 128 at 3 CTAs spills 152 bytes, i.e. the staged loads.)
#define KILN_ATTN_MMA(D, BN, MINB)                                                             \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS, MINB) KV_NAME(attention_mma_d##D##_)( \
        AttnParams p, const float* __restrict__ q, const KV_T* __restrict__ k,                 \
        const KV_T* __restrict__ v, float* __restrict__ out) {                                 \
        KILN_ATTN_MMA_BODY(D, BN)                                                              \
    }
KILN_ATTN_MMA(64, 32, 4)
KILN_ATTN_MMA(128, 32, 2)
