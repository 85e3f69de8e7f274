// attention_mma2: the pipelined tensor-core causal GQA prefill (sm_80+),
// "prefill v2": the semantics and the arithmetic of attention_mma.cuh (16-bit
// operands, f32 accumulation, base-2 online softmax with P rounded to the
// operand type and l summed from the rounded values), reorganised for
// throughput. Included by attention.cu after attention_mma.cuh, whose
// helpers (mma_pack_bf16, mma_ldsm_x4[_trans], mma_bf16_16816, KvStage,
// kv_fetch, kv_to_bf16) it uses.
//
// Operands: bf16 for f32 and bf16 caches (as v1); f16 for f16 caches, whose
// K and V then go to the tensor cores as stored (no conversion; v1 rounds
// them to bf16 per element), with q * scale and P rounded to f16. f16 has 3
// more mantissa bits than bf16, so these results are closer to the
// reference than the bf16 ones (same bound, Tol::ATTENTION_BF16). Its
// range: P is in [0, 1] (values below 2^-24 of the row max round to 0: at
// most 2^-25 of the row's mass per key); q * scale is scaled per warp by a
// power of two so its largest magnitude is at most 2^15 and the scores
// multiplied back (exact), so any finite q works. The row sums l come from
// the tensor cores (P times a column of ones) instead of decoding P.
//
// One CTA = 8 warps = MMA2_BM = 128 query rows of one head; warp w owns rows
// 16w .. 16w + 15. Each K/V tile of MMA2_BN = 64 keys is read from shared
// memory by all 8 warps: twice the queries per loaded key of the v1 kernel
// (64 rows x 32 keys), so half the K/V traffic per FLOP.
//
// Shared memory (dynamic): STAGES stages, each a K tile then a V tile of
// [BN][D] 16-bit values, unpadded and swizzled: the 16-byte chunk c (elements 8c ..
// 8c + 7) of row r sits at chunk c ^ (r % 8) of the row (mma2_off). The 8
// rows one ldmatrix phase reads are consecutive, so their chunks land in 8
// distinct 16-byte bank groups (no conflicts), as the v1 kernel's padding
// did, without the padding (3 stages of d128 fit the 99 KiB of sm_86/89).
//
// K/V pipeline, one __syncthreads per key tile (tile j in stage j % STAGES):
//   - f16 and bf16 caches: cp.async.cg 16-byte copies straight from the
//     cache rows into shared memory, no registers; keys past the tile's end
//     are zero-filled (src-size 0). STAGES = 3: the prologue issues tiles 0
//     and 1, one commit group each; iteration j waits until tile j's group
//     has landed (cp.async.wait_group 1: at most tile j + 1's still in
//     flight), then the barrier (every thread's copies of tile j visible,
//     and every warp done with tile j - 1, whose stage (j + 2) % 3 is),
//     then issues tile j + 2 into that stage (a group, empty past the last
//     tile so the counting stays uniform) and computes tile j. Loads run
//     two tiles ahead of the tensor cores.
//   - f32 caches: register-staged (the values must be rounded to bf16),
//     STAGES = 2: after iteration j's barrier each thread issues the
//     global loads of K_{j+1} into registers (KvStage), computes S_j, stores
//     K_{j+1} converted into stage (j + 1) % 2 (free: every warp finished
//     tile j - 1 before the barrier), issues V_{j+1}'s loads, computes
//     O += P V_j, stores V_{j+1}. The next barrier publishes both.
// Key tiles run from the CTA's first row's first key (its window) to the
// last row's own key, as in v1; a warp skips the tensor-core work of a
// tile none of its 16 rows sees (above its diagonal or before its
// windows), and masks only a tile that holds a key one of its rows must
// not see (per warp, not per CTA).
//
// The cp.async instructions and the dynamic shared memory sit in small
// functions, which scripts/check-cuda-attn-mma.py replaces (KILN_MMA_EMULATED)
// with emulations: a copy is deferred until the issuing thread's matching
// wait_group and its destination poisoned (NaN) when issued, so a missing
// wait or barrier, or a stage overwritten while another warp reads it,
// shows as NaN or wrong output.

#define MMA2_BM 128
#define MMA2_THREADS 256
#define MMA2_BN 64
// 16-bit caches are copied by cp.async into a 3-stage ring and used as
// stored: bf16 caches with bf16 operands, f16 caches with f16 operands (Q
// and P rounded to f16; see attention_mma2 below). f32 caches are
// register-staged (rounded to bf16) in a 2-stage ring.
#if KILN_KV == 0
#define MMA2_STAGES 2
#else
#define MMA2_ASYNC 1
#define MMA2_STAGES 3
#endif
#if KILN_KV == 1
#define MMA2_F16 1
#endif

#ifdef KILN_MMA_ENABLED
#ifndef KILN_MMA_EMULATED
// The dynamic shared memory of the CTA (the launcher sizes it:
// MMA2_STAGES * 2 * MMA2_BN * D bf16).
__device__ __forceinline__ u16* mma2_smem() {
    extern __shared__ __align__(128) u16 mma2_dyn_smem[];
    return mma2_dyn_smem;
}
// Copy 16 bytes global -> shared asynchronously; n = 16, or 0 to zero-fill
// dst without reading src.
__device__ __forceinline__ void mma2_cp16(u16* dst, const void* src, u32 n) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(mma_smem_addr(dst)), "l"(src),
                 "r"(n)
                 : "memory");
}
__device__ __forceinline__ void mma2_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
// f16x2 of (lo, hi): lo in bits 0..15, round to nearest even (overflow: inf).
__device__ __forceinline__ u32 mma_pack_f16(float lo, float hi) {
    u32 r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
// d += a b: a 16x16 f16 (row), b 16x8 f16 (col), d 16x8 f32.
__device__ __forceinline__ void mma_f16_16816(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// Wait until at most N of this thread's newest commit groups are pending.
template <int N>
__device__ __forceinline__ void mma2_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}
#endif  // KILN_MMA_EMULATED

// The operands of the kernel's tensor-core math: f16 with f16 caches, else bf16.
__device__ __forceinline__ u32 mma2_pack(float lo, float hi) {
#ifdef MMA2_F16
    return mma_pack_f16(lo, hi);
#else
    return mma_pack_bf16(lo, hi);
#endif
}
__device__ __forceinline__ void mma2_mma(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
#ifdef MMA2_F16
    mma_f16_16816(d, a, b0, b1);
#else
    mma_bf16_16816(d, a, b0, b1);
#endif
}

// Element offset of (row r, 16-byte chunk c) in a swizzled [rows][D] tile.
template <int D>
__device__ __forceinline__ u32 mma2_off(u32 r, u32 c) {
    static_assert(D % 64 == 0, "the swizzle needs at least 8 chunks per row");
    return r * D + ((c ^ (r & 7u)) << 3);
}

// One K or V tile's share of one thread: chunks (8 elements) i = tid + r *
// MMA2_THREADS, key i / (D / 8), chunk i % (D / 8) of the row.
template <int D, int BN>
struct Mma2Tile {
    static constexpr int CH = BN * D / 8 / MMA2_THREADS;
    static_assert(CH * 8 * MMA2_THREADS == BN * D, "tile not a whole number of chunks per thread");
#ifdef MMA2_ASYNC
    // Copy positions k0 .. k0 + nk - 1 of `base` (row stride `row`) into
    // the tile at dst, each from its cache row; zero-fill keys past nk.
    __device__ __forceinline__ static void copy(const AttnParams& p, u16* dst, const KV_T* __restrict__ base,
                                                u64 row, u32 k0, u32 nk) {
        const u32 r0 = kv_row(p, k0);
#pragma unroll
        for (int r = 0; r < CH; ++r) {
            const u32 i = threadIdx.x + r * MMA2_THREADS, j = i / (D / 8), c = i % (D / 8);
            if (j < nk)
                mma2_cp16(dst + mma2_off<D>(j, c), base + (u64)kv_row_step(p, r0, k0, j) * row + c * 8, 16);
            else
                mma2_cp16(dst + mma2_off<D>(j, c), base, 0);
        }
    }
#else
    KvStage st[CH];
    // Issue the loads of positions k0 .. k0 + nk - 1 into registers.
    __device__ __forceinline__ void fetch(const AttnParams& p, const KV_T* __restrict__ base, u64 row, u32 k0,
                                          u32 nk) {
        const u32 r0 = kv_row(p, k0);
#pragma unroll
        for (int r = 0; r < CH; ++r) {
            const u32 i = threadIdx.x + r * MMA2_THREADS, j = i / (D / 8), c = i % (D / 8);
            if (j < nk) st[r] = kv_fetch(base + (u64)kv_row_step(p, r0, k0, j) * row + c * 8);
        }
    }
    // Store them as bf16 into the tile at dst, zeros past nk.
    __device__ __forceinline__ void put(u16* dst, u32 nk) const {
#pragma unroll
        for (int r = 0; r < CH; ++r) {
            const u32 i = threadIdx.x + r * MMA2_THREADS, j = i / (D / 8), c = i % (D / 8);
            *(uint4*)(dst + mma2_off<D>(j, c)) = j < nk ? kv_to_bf16(st[r]) : make_uint4(0u, 0u, 0u, 0u);
        }
    }
#endif
};

// q: [n_tokens, n_heads, D] f32; k, v: [kv_stride, n_kv_heads, D] KV_T;
// out: [n_tokens, n_heads, D] f32. Grid (n_heads, ceil(n_tokens / 128)),
// MMA2_THREADS threads, MMA2_STAGES * 2 * MMA2_BN * D * 2 bytes of dynamic
// shared memory; the last query tiles (most keys) start first.
template <int D>
__device__ __forceinline__ void attention_mma2(const AttnParams& p, const float* __restrict__ q,
                                               const KV_T* __restrict__ k, const KV_T* __restrict__ v,
                                               float* __restrict__ out) {
    constexpr int BN = MMA2_BN, S = MMA2_STAGES;
    constexpr int KC = D / 16;  // k16 chunks of Q K^T
    constexpr int NT = BN / 8;  // n8 tiles of S
    constexpr int DT = D / 8;   // n8 tiles of O
    constexpr int TILE = BN * D;
    u16* const sm = mma2_smem();  // [S][K, V][BN][D], swizzled
    const u32 tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const u32 g = lane / 4, tq = lane % 4;
    const u32 h = blockIdx.x, kvh = h / p.group;
    const u32 n_qt = (p.n_tokens + MMA2_BM - 1) / MMA2_BM;
    const u32 t0 = (n_qt - 1 - blockIdx.y) * MMA2_BM;
    const u32 nq = min((u32)MMA2_BM, p.n_tokens - t0);
    const u64 row = (u64)p.n_kv_heads * D;  // elements per cache row
    const KV_T* kb = k + (u64)kvh * D;
    const KV_T* vb = v + (u64)kvh * D;

    // This lane's rows: r0 = 16 warp + g, r1 = r0 + 8; Q fragments as in v1.
    const u32 r0 = warp * 16 + g, r1 = r0 + 8;
    u32 qf[KC][4];
    // Scores come out of the tensor cores multiplied by 1 / s_mul (f16
    // operands only; a power of two, so the correction is exact).
    float s_mul = 1.f;
    {
        float sc = p.scale_log2;
        const float* q0 = q + ((u64)(t0 + min(r0, nq - 1)) * p.n_heads + h) * D + 2 * tq;
        const float* q1 = q + ((u64)(t0 + min(r1, nq - 1)) * p.n_heads + h) * D + 2 * tq;
#ifdef MMA2_F16
        // f16 holds magnitudes up to 65504: scale the warp's q by a power of
        // two so its largest |q * scale| is at most 2^15 (real q is far below;
        // the loop is bounded for inf / NaN q, which give NaN as in f32).
        float mx = 0.f;
#pragma unroll
        for (int kc = 0; kc < KC; ++kc) {
            const int c = kc * 16;
            mx = fmaxf(mx, fmaxf(fmaxf(fabsf(q0[c]), fabsf(q0[c + 1])), fmaxf(fabsf(q0[c + 8]), fabsf(q0[c + 9]))));
            mx = fmaxf(mx, fmaxf(fmaxf(fabsf(q1[c]), fabsf(q1[c + 1])), fmaxf(fabsf(q1[c + 8]), fabsf(q1[c + 9]))));
        }
        mx *= fabsf(sc);
#pragma unroll
        for (int m = 1; m < 32; m *= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, m));
        for (int i = 0; i < 120 && mx > 32768.f; ++i) {
            mx *= 0.5f;
            sc *= 0.5f;
            s_mul *= 2.f;
        }
#endif
#pragma unroll
        for (int kc = 0; kc < KC; ++kc) {
            const int c = kc * 16;
            qf[kc][0] = r0 < nq ? mma2_pack(q0[c] * sc, q0[c + 1] * sc) : 0u;
            qf[kc][1] = r1 < nq ? mma2_pack(q1[c] * sc, q1[c + 1] * sc) : 0u;
            qf[kc][2] = r0 < nq ? mma2_pack(q0[c + 8] * sc, q0[c + 9] * sc) : 0u;
            qf[kc][3] = r1 < nq ? mma2_pack(q1[c + 8] * sc, q1[c + 9] * sc) : 0u;
        }
    }
    // Visible keys per row: [first, last] (rows past the last token take
    // the last token's; their output is not written).
    const u32 base_pos = p.pos0 + t0;
    const u32 last0 = base_pos + min(r0, nq - 1), last1 = base_pos + min(r1, nq - 1);
    const u32 first0 = first_key(p, last0 + 1), first1 = first_key(p, last1 + 1);
    // The warp's rows: active if it has a token; its first row's position
    // and first key, its last row's position and first key.
    const bool w_active = warp * 16 < nq;
    const u32 w_lo_pos = base_pos + min(warp * 16, nq - 1), w_hi_pos = base_pos + min(warp * 16 + 15, nq - 1);
    const u32 w_lo_first = first_key(p, w_lo_pos + 1), w_hi_first = first_key(p, w_hi_pos + 1);
    const u32 k_start = first_key(p, base_pos + 1);  // the CTA's first row's first key
    const u32 k_end = base_pos + nq;                  // past the last row's own key
    const u32 n_tiles = (k_end - k_start + BN - 1) / BN;

    float o[DT][4];
#pragma unroll
    for (int i = 0; i < DT; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float m0 = KILN_NEG_INF, m1 = KILN_NEG_INF, l0 = 0.f, l1 = 0.f;
#ifdef MMA2_F16
    // The row sums of the rounded P by the tensor cores (P times a column
    // of ones: every column of lacc holds its row's sum; decoding f16 P to
    // f32 would cost two conversions per pair).
    float lacc[4] = {0.f, 0.f, 0.f, 0.f};
    constexpr u32 ONES = 0x3c003c00u;  // f16x2 (1, 1)
#endif

    // Keys of tile t (0 past the last).
    auto tile_keys = [&](u32 t) -> u32 { return t < n_tiles ? min((u32)BN, k_end - (k_start + t * BN)) : 0u; };

#ifdef MMA2_ASYNC
    // Prologue: tiles 0 .. S - 2 in flight, one group each.
#pragma unroll
    for (int t = 0; t < S - 1; ++t) {
        const u32 nk = tile_keys(t);
        if (nk > 0) {
            u16* st = sm + t * 2 * TILE;
            Mma2Tile<D, BN>::copy(p, st, kb, row, k_start + t * BN, nk);
            Mma2Tile<D, BN>::copy(p, st + TILE, vb, row, k_start + t * BN, nk);
        }
        mma2_commit();
    }
#else
    Mma2Tile<D, BN> tile;
    {
        const u32 nk = tile_keys(0);
        tile.fetch(p, kb, row, k_start, nk);
        tile.put(sm, nk);
        tile.fetch(p, vb, row, k_start, nk);
        tile.put(sm + TILE, nk);
    }
#endif

    for (u32 j = 0; j < n_tiles; ++j) {
        const u32 k0 = k_start + j * BN;
        const u32 nk = tile_keys(j);
        const u16* ks = sm + (j % S) * 2 * TILE;
        const u16* vs = ks + TILE;
#ifdef MMA2_ASYNC
        mma2_wait<S - 2>();  // this thread's copies of tile j landed
        __syncthreads();     // everyone's; every warp is done with tile j - 1
        {
            const u32 t = j + S - 1, nkt = tile_keys(t);
            if (nkt > 0) {
                u16* st = sm + (t % S) * 2 * TILE;
                Mma2Tile<D, BN>::copy(p, st, kb, row, k_start + t * BN, nkt);
                Mma2Tile<D, BN>::copy(p, st + TILE, vb, row, k_start + t * BN, nkt);
            }
            mma2_commit();
        }
#else
        __syncthreads();  // tile j stored by every thread; every warp is done with tile j - 1
        const u32 nk1 = tile_keys(j + 1);
        u16* nxt = sm + ((j + 1) % S) * 2 * TILE;
        if (nk1 > 0) tile.fetch(p, kb, row, k0 + BN, nk1);
#endif
        // Does a row of this warp see a key of the tile?
        const bool run = w_active && k0 <= w_hi_pos && k0 + nk - 1 >= w_lo_first;
        u32 pf[NT / 2][4];
        if (run) {
            // S = Q K^T: s[nt] is keys k0 + 8 nt .. + 7; lane holds (r0, 2 tq),
            // (r0, 2 tq + 1), (r1, 2 tq), (r1, 2 tq + 1).
            float s[NT][4];
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
            for (int kc = 0; kc < KC; ++kc) {
#pragma unroll
                for (int np = 0; np < NT / 2; ++np) {
                    // Matrices: keys +0..7 / dims +0..7, keys +0..7 / dims
                    // +8..15, keys +8..15 / dims +0..7, keys +8..15 / dims +8..15.
                    u32 b[4];
                    mma_ldsm_x4(b, ks + mma2_off<D>(np * 16 + lane % 8 + 8 * (lane / 16), kc * 2 + (lane / 8) % 2));
                    mma2_mma(s[2 * np], qf[kc], b[0], b[1]);
                    mma2_mma(s[2 * np + 1], qf[kc], b[2], b[3]);
                }
            }
#ifdef MMA2_F16
            if (s_mul != 1.f) {
#pragma unroll
                for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
                    for (int e = 0; e < 4; ++e) s[nt][e] *= s_mul;
                }
            }
#endif
            if (p.cap_log2 != 0.f) {
#pragma unroll
                for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
                    for (int e = 0; e < 4; ++e) s[nt][e] = cap_score(p, s[nt][e]);
                }
            }
            // Mask when the tile holds a key past the warp's first row's own
            // (keys past nk are past every row's) or before its last row's
            // first key.
            if (k0 + BN - 1 > w_lo_pos || k0 < w_hi_first) {
#pragma unroll
                for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const u32 key = k0 + nt * 8 + 2 * tq + (e & 1);
                        const bool vis =
                            e < 2 ? (key >= first0 && key <= last0) : (key >= first1 && key <= last1);
                        if (!vis) s[nt][e] = KILN_NEG_INF;
                    }
                }
            }
            // Online softmax as in v1 (a row with no key yet keeps m = -inf
            // and exponentiates against 0).
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
#ifdef MMA2_F16
            lacc[0] *= a0;
            lacc[1] *= a0;
            lacc[2] *= a1;
            lacc[3] *= a1;
#else
            l0 *= a0;
            l1 *= a1;
#endif
#pragma unroll
            for (int i = 0; i < DT; ++i) {
                o[i][0] *= a0;
                o[i][1] *= a0;
                o[i][2] *= a1;
                o[i][3] *= a1;
            }
            // P rounded to the operand type as the A fragments of O += P V
            // (layout as in v1); l sums the rounded values.
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                const u32 lo = mma2_pack(exp2f(s[nt][0] - ref0), exp2f(s[nt][1] - ref0));
                const u32 hi = mma2_pack(exp2f(s[nt][2] - ref1), exp2f(s[nt][3] - ref1));
#ifndef MMA2_F16
                l0 += mma_bf16_lo(lo) + mma_bf16_hi(lo);
                l1 += mma_bf16_lo(hi) + mma_bf16_hi(hi);
#endif
                pf[nt / 2][(nt % 2) * 2] = lo;
                pf[nt / 2][(nt % 2) * 2 + 1] = hi;
            }
#ifdef MMA2_F16
#pragma unroll
            for (int kc = 0; kc < NT / 2; ++kc) mma2_mma(lacc, pf[kc], ONES, ONES);
#endif
        }
#ifndef MMA2_ASYNC
        if (nk1 > 0) {
            tile.put(nxt, nk1);
            tile.fetch(p, vb, row, k0 + BN, nk1);
        }
#endif
        if (run) {
            // O += P V: V fragments by ldmatrix.trans.
#pragma unroll
            for (int kc = 0; kc < NT / 2; ++kc) {
#pragma unroll
                for (int dp = 0; dp < DT / 2; ++dp) {
                    // Matrices (transposed): keys +0..7 / dims +0..7, keys
                    // +8..15 / dims +0..7, keys +0..7 / dims +8..15, keys
                    // +8..15 / dims +8..15.
                    u32 b[4];
                    mma_ldsm_x4_trans(b, vs + mma2_off<D>(kc * 16 + lane % 8 + 8 * ((lane / 8) % 2), dp * 2 + lane / 16));
                    mma2_mma(o[2 * dp], pf[kc], b[0], b[1]);
                    mma2_mma(o[2 * dp + 1], pf[kc], b[2], b[3]);
                }
            }
        }
#ifndef MMA2_ASYNC
        if (nk1 > 0) tile.put(nxt + TILE, nk1);
#endif
    }
#ifdef MMA2_ASYNC
    mma2_wait<0>();  // no copy outlives the CTA (the last groups are empty)
#endif
    if (!w_active) return;  // no barrier follows
    // Every row sees its own key: l > 0.
#ifdef MMA2_F16
    l0 = lacc[0];
    l1 = lacc[2];
#else
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
#endif
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
#define KILN_ATTN_MMA2_BODY(D) attention_mma2<D>(p, q, k, v, out);
#else
#define KILN_ATTN_MMA2_BODY(D)
#endif
// MINB CTAs of 256 threads per SM caps the registers: d64 at 2 (128
// registers), d128 at 1 (255); the compile test checks neither spills.
#define KILN_ATTN_MMA2(D, MINB)                                                                        \
    extern "C" __global__ void __launch_bounds__(MMA2_THREADS, MINB) KV_NAME(attention_mma2_d##D##_)( \
        AttnParams p, const float* __restrict__ q, const KV_T* __restrict__ k,                        \
        const KV_T* __restrict__ v, float* __restrict__ out) {                                        \
        KILN_ATTN_MMA2_BODY(D)                                                                        \
    }
KILN_ATTN_MMA2(64, 2)
KILN_ATTN_MMA2(128, 1)
