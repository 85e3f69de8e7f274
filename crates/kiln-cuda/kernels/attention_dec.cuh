// attention_dec.cuh: the lane-group decode kernel of attention.cu
// (attention_decg_d<D>[_at]_<kv>, AttentionKernel::DecodeGroups in
// src/attention/dec.rs), for few queries (n_tokens <= DECODE_MAX_TOKENS)
// and head dims D = 64, 128, 256. Included by attention.cu after the warp
// decode kernel, whose grid, plan fields, partial layout and ticket merge
// it shares; uses AttnParams, kv_row, first_key, cap_score, kv_cvt2.
//
// Work split: grid (split, kv head x head chunk, token) as attention_split.
// A warp is cut into NG = 32 / G lane groups of G = D / 8 lanes; lane `sub`
// of a group holds the 8 elements sub*8 .. sub*8+7 of a row (16 bytes of a
// 16-bit cache, 32 of f32). The block's 4 * NG groups are key streams:
// stream s takes keys k_begin + s, + S, + 2S, ... (S = 4 * NG), and keeps
// its own online softmax (m, l) and acc slice per query head, so no key
// depends on another stream's; a score is the group's 8-element partial
// dots plus log2(G) shuffles. The update rescales acc and l only when a
// score raises the stream's running max (every key at first, rarely
// later), so a key costs one exp2 and 8 FMAs per head and lane instead of
// two and 16. The warp's loop count is uniform (a group past the range
// masks its update, never its shuffles).
//
// Loads: a per-thread cp.async ring in shared memory. Each lane copies its
// own 16-byte pieces of its stream's next keys' K and V rows into its own
// slots of DECG_STAGES stages (cp.async.cg, 16 bytes, sm_80+) and reads
// back only what it copied itself, so the ring needs no barrier, only
// cp.async.wait_group: key i is read after its group completes, while the
// keys i + 1 .. i + DECG_STAGES - 1 are still in flight. The ring is
// DECG_STAGE_BYTES per thread whatever the type (8 keys of a 16-bit cache,
// 4 of f32): 32 KiB per block, so a 16-bit cache keeps 7 rows of K and V
// per stream in flight (28 KiB per block, ~112 KiB per SM at 4 blocks)
// instead of the one register-prefetched row before (4 KiB per block),
// and the raw rows cost no registers. The slot written at step i is the
// one read at step i - 1, whose values step i - 1 already consumed. Caches
// off the 16-byte alignment (and pre-sm_80 GPUs) copy synchronously through
// registers into the same slots.
//
// Then the streams merge through shared memory (aliasing the ring, after a
// barrier); with several splits the block writes its partial (acc, m, l)
// and the last block of the group (ticket) merges the splits: every
// split's (m, l) loaded at once into shared memory, the weights
// 2^(m_s - M) / L computed once per (head, split), then every (head, column
// quad) of the block summed at once with 16-byte loads, eight splits in
// flight per thread (decg_combine).
//
// The `_at` entries read the position from the device. The grid is planned
// for the largest position (a graph decode step plans for the whole
// context); at an earlier position the kernel re-plans its key range with
// the host's rule (decg_replan: splits of at least DECG_MIN_KEYS_PER_STREAM
// keys per stream, no more than planned) and the blocks past the new split
// count exit at once, so a short context does not pay for the empty splits
// of a long plan, nor does its merge read them.
//
// Up to DECG_MAX_HEADS query heads per block (q and acc in registers).
// Dynamic shared memory: max(DECG_THREADS * DECG_STAGE_BYTES / 4, S * hb *
// (D + 2), 2 * hb * n_splits + 4 * DECG_THREADS) floats (decg_smem_floats
// in src/attention/dec.rs).

#define DECG_WARPS 4
#define DECG_THREADS (DECG_WARPS * 32)
// Blocks per SM the launch bounds ask for (<= 128 registers per thread;
// DECG_BLOCKS_PER_SM in src/attention/dec.rs plans for as many).
#define DECG_MIN_BLOCKS 4
#define DECG_MAX_HEADS 4
#define DECG_EPL 8  // cache elements per lane
// The per-thread load ring (DECG_STAGE_BYTES in src/attention/dec.rs).
#define DECG_STAGE_BYTES 256
// Fewest keys per stream of a split, and the chunk grain: the host plan's
// rule (DECG_MIN_KEYS_PER_STREAM, DECG_CHUNK_GRAIN in src/attention/dec.rs),
// which decg_replan repeats at the device position.
#define DECG_MIN_KEYS_PER_STREAM 8
#define DECG_CHUNK_GRAIN 16

// 16-byte pieces of a lane's 8 elements, and ring stages (keys) per thread.
#define DECG_PIECES ((DECG_EPL * (int)sizeof(kv_t)) / 16)
#define DECG_STAGES (DECG_STAGE_BYTES / (2 * DECG_EPL * (int)sizeof(kv_t)))
// uint4 slots of one stage: [K, V][piece][thread].
#define DECG_STAGE_SLOTS (2 * DECG_PIECES * DECG_THREADS)

// --- cp.async (scripts/check-cuda-attn.py swaps these for a host emulation)
// Copy 16 bytes global -> shared: asynchronously on sm_80+, else through a
// register.
__device__ __forceinline__ void decg_cp16(uint4* dst, const kv_t* src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    u32 d;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(d) : "l"(dst));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d), "l"(src) : "memory");
#else
    *dst = *(const uint4*)src;
#endif
}
// Close this thread's group of copies (an empty group is fine).
__device__ __forceinline__ void decg_cp_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
// Wait until at most N of this thread's groups are pending; the copies of
// the others are then visible to this thread.
template <int N>
__device__ __forceinline__ void decg_cp_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}
// --- end of cp.async

// Stage this lane's 8 elements of a K row (at ks) and a V row (at vs) into
// its slots `slot` (slot[(kv * DECG_PIECES + piece) * DECG_THREADS]):
// 16-byte copies when `vec` (k and v 16-byte aligned), else element by
// element, synchronously.
__device__ __forceinline__ void decg_stage(uint4* slot, const kv_t* __restrict__ ks,
                                           const kv_t* __restrict__ vs, bool vec) {
    if (vec) {
#pragma unroll
        for (int c = 0; c < DECG_PIECES; ++c) {
            decg_cp16(slot + c * DECG_THREADS, ks + c * (16 / (int)sizeof(kv_t)));
            decg_cp16(slot + (DECG_PIECES + c) * DECG_THREADS, vs + c * (16 / (int)sizeof(kv_t)));
        }
        return;
    }
    constexpr int PE = 16 / (int)sizeof(kv_t);  // elements per piece
#pragma unroll
    for (int c = 0; c < DECG_PIECES; ++c) {
        kv_t* dk = (kv_t*)(slot + c * DECG_THREADS);
        kv_t* dv = (kv_t*)(slot + (DECG_PIECES + c) * DECG_THREADS);
#pragma unroll
        for (int i = 0; i < PE; ++i) {
            dk[i] = ks[c * PE + i];
            dv[i] = vs[c * PE + i];
        }
    }
}

// A staged piece as f32: 8 16-bit elements, or 4 f32.
__device__ __forceinline__ void decg_widen(const uint4& x, float* r) {
#if KILN_KV == 0
    r[0] = __uint_as_float(x.x);
    r[1] = __uint_as_float(x.y);
    r[2] = __uint_as_float(x.z);
    r[3] = __uint_as_float(x.w);
#else
    kv_cvt2(x.x, r[0], r[1]);
    kv_cvt2(x.y, r[2], r[3]);
    kv_cvt2(x.z, r[4], r[5]);
    kv_cvt2(x.w, r[6], r[7]);
#endif
}

// This lane's staged K and V elements of one key as f32.
__device__ __forceinline__ void decg_unstage(const uint4* slot, float (&k)[DECG_EPL],
                                             float (&v)[DECG_EPL]) {
    constexpr int PE = 16 / (int)sizeof(kv_t);
#pragma unroll
    for (int c = 0; c < DECG_PIECES; ++c) {
        decg_widen(slot[c * DECG_THREADS], k + c * PE);
        decg_widen(slot[(DECG_PIECES + c) * DECG_THREADS], v + c * PE);
    }
}

// Four partial sums at p (16-byte aligned when `vec`), read through L2.
__device__ __forceinline__ float4 decg_ld4(const float* p, bool vec) {
    if (vec) return __ldcg((const float4*)p);
    return make_float4(__ldcg(p), __ldcg(p + 1), __ldcg(p + 2), __ldcg(p + 3));
}

__device__ __forceinline__ void decg_fma4(float4& a, const float4& x, float w) {
    a.x = fmaf(x.x, w, a.x);
    a.y = fmaf(x.y, w, a.y);
    a.z = fmaf(x.z, w, a.z);
    a.w = fmaf(x.w, w, a.w);
}

__device__ __forceinline__ void decg_add4(float4& a, const float4& x) {
    a.x += x.x;
    a.y += x.y;
    a.z += x.z;
    a.w += x.w;
}

// The lane-group merge of the split partials of query heads qh0 .. qh0 + nh
// (see combine_heads for the math). `w`: shared memory of 2 * nh *
// n_splits + 4 * DECG_THREADS floats. Every split's (m, l) is loaded in
// one parallel step; one warp per head turns them into weights
// 2^(m_s - M) / L (0 exactly for a split that saw no key); then the
// block's nh * D / 4 (head, column quad) items are summed all at once: R
// threads per item (the most that fit the block), each over every R-th
// split with eight 16-byte loads in flight, skipping zero weights (empty
// splits); with R > 1 the R sums of an item are added through shared
// memory.
template <int D>
__device__ __forceinline__ void decg_combine(const AttnParams& p, const float* part, u64 qh0, u32 nh,
                                             float* w, float* __restrict__ out) {
    constexpr u32 Q = D / 4;  // column quads of a head
    const u32 ns = p.n_splits;
    const u32 tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const u64 n_qh = (u64)p.n_tokens * p.n_heads;
    const float* ml = part + n_qh * ns * D + qh0 * ns * 2;  // heads qh0.. are contiguous
    float* ws = w;                 // [nh][ns]: m, then the weight
    float* ls = w + nh * ns;       // [nh][ns]: l
    float* red = w + 2 * nh * ns;  // [items][R][4]: partial quad sums
    for (u32 i = tid; i < nh * ns; i += DECG_THREADS) {
        ws[i] = __ldcg(ml + 2 * (u64)i);
        ls[i] = __ldcg(ml + 2 * (u64)i + 1);
    }
    __syncthreads();
    // Some split holds the query's own key: M is finite, L > 0; an empty
    // split (m = -inf, l = 0) weighs exactly 0.
    for (u32 g = warp; g < nh; g += DECG_WARPS) {
        float* wg = ws + g * ns;
        const float* lg = ls + g * ns;
        float mx = KILN_NEG_INF;
        for (u32 s = lane; s < ns; s += 32) mx = fmaxf(mx, wg[s]);
        mx = warp_max(mx);
        float den = 0.f;
        for (u32 s = lane; s < ns; s += 32) den += lg[s] * exp2f(wg[s] - mx);
        const float inv = 1.f / warp_sum(den);
        // Each lane rewrites only the entries it read.
        for (u32 s = lane; s < ns; s += 32) wg[s] = exp2f(wg[s] - mx) * inv;
    }
    __syncthreads();
    const u32 items = nh * Q;
    u32 R = 1;  // threads per item: items * R <= DECG_THREADS
    while (items * R * 2 <= DECG_THREADS) R *= 2;
    // Partials are rows of D floats at a 16-byte multiple from part.
    const bool vec = ((u64)part % 16) == 0;
    for (u32 it = tid; it < items * R; it += DECG_THREADS) {
        const u32 r = it % R, item = it / R, g = item / Q, cq = item % Q;
        const float* wg = ws + g * ns;
        const float* pa = part + (qh0 + g) * ns * D + 4 * cq;
        // Eight accumulators: eight loads in flight (a merge of 64 splits
        // is 8 rounds of L2 loads per thread).
        float4 a[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) a[i] = make_float4(0.f, 0.f, 0.f, 0.f);
        u32 s = r;
        for (; s + 7 * R < ns; s += 8 * R) {
#pragma unroll
            for (u32 i = 0; i < 8; ++i) {
                const float wi = wg[s + i * R];
                if (wi != 0.f) decg_fma4(a[i], decg_ld4(pa + (u64)(s + i * R) * D, vec), wi);
            }
        }
#pragma unroll
        for (u32 i = 0; i < 7; ++i) {  // the last (at most 7) splits
            const u32 si = s + i * R;
            if (si < ns && wg[si] != 0.f) decg_fma4(a[i], decg_ld4(pa + (u64)si * D, vec), wg[si]);
        }
#pragma unroll
        for (int i = 1; i < 8; ++i) decg_add4(a[0], a[i]);
        const float4 a0 = a[0];
        if (R == 1) {
            float* o = out + (qh0 + g) * D + 4 * cq;
            o[0] = a0.x;
            o[1] = a0.y;
            o[2] = a0.z;
            o[3] = a0.w;
        } else {
            float* rr = red + 4 * it;
            rr[0] = a0.x;
            rr[1] = a0.y;
            rr[2] = a0.z;
            rr[3] = a0.w;
        }
    }
    if (R > 1) {  // uniform across the block
        __syncthreads();
        for (u32 i = tid; i < items * 4; i += DECG_THREADS) {
            const u32 item = i / 4, e = i % 4, g = item / Q, cq = item % Q;
            float sum = 0.f;
            for (u32 r = 0; r < R; ++r) sum += red[4 * (item * R + r) + e];
            out[(qh0 + g) * D + 4 * cq + e] = sum;
        }
    }
}

// q: [n_tokens, n_heads, D]; k, v: [kv_stride, n_kv_heads, D]; part,
// tickets, out as attention_decode.
template <int D>
__device__ __forceinline__ void attention_decg(const AttnParams& p, const float* __restrict__ q,
                                               const kv_t* __restrict__ k,
                                               const kv_t* __restrict__ v,
                                               float* __restrict__ part, u32* __restrict__ tickets,
                                               float* __restrict__ out) {
    constexpr int G = D / DECG_EPL;  // lanes per group
    constexpr int NG = 32 / G;       // groups per warp
    constexpr int S = DECG_WARPS * NG;  // key streams per block
    constexpr int H = DECG_MAX_HEADS;
    constexpr u32 NS = DECG_STAGES;
    static_assert(D % DECG_EPL == 0 && G <= 32 && 32 % G == 0, "D must be 8 * a power of two <= 256");
    static_assert(DECG_PIECES >= 1 && DECG_STAGES >= 2, "the ring holds at least two keys");
    extern __shared__ __align__(16) float smem[];
    __shared__ u32 ticket;
    kiln_grid_launch_dependents();
    kiln_grid_wait();  // q and the cache rows come from the previous kernel
    const u32 hb = p.heads_per_block;
    const u32 split = blockIdx.x;
    const u32 n_chunks = (p.group + hb - 1) / hb;
    const u32 kvh = blockIdx.y / n_chunks;
    const u32 g0 = (blockIdx.y % n_chunks) * hb;
    const u32 nh = min(hb, p.group - g0);  // query heads in this block (<= H)
    const u32 h0 = kvh * p.group + g0;
    const u32 tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const u32 grp = lane / G, sub = lane % G;
    const u32 stream = warp * NG + grp;
    const u64 row = (u64)p.n_kv_heads * D;
    const kv_t* kb = k + (u64)kvh * D + sub * DECG_EPL;
    const kv_t* vb = v + (u64)kvh * D + sub * DECG_EPL;
    // Row strides and offsets are multiples of 8 elements: aligned bases
    // make every piece aligned.
    const bool vec = (((u64)k | (u64)v) % 16) == 0;
    // This thread's ring: stage s is ring + s * DECG_STAGE_SLOTS.
    uint4* ring = (uint4*)smem + tid;
    const u32 s_begin = first_key(p, p.pos0 + 1) + split * p.chunk;  // this split's keys
    for (u32 t = blockIdx.z; t < p.n_tokens; t += gridDim.z) {
        const u32 n_keys = p.pos0 + t + 1;
        const u32 k_begin = max(s_begin, first_key(p, n_keys));
        const u32 k_end = min(s_begin + p.chunk, n_keys);  // empty when <= k_begin
        const u64 qh0 = (u64)t * p.n_heads + h0;
        float qr[H][DECG_EPL], acc[H][DECG_EPL], m[H], l[H];
#pragma unroll
        for (u32 g = 0; g < H; ++g) {
            m[g] = KILN_NEG_INF;
            l[g] = 0.f;
#pragma unroll
            for (int i = 0; i < DECG_EPL; ++i) {
                acc[g][i] = 0.f;
                qr[g][i] = g < nh ? q[(qh0 + g) * D + sub * DECG_EPL + i] * p.scale_log2 : 0.f;
            }
        }
        // The warp's first key is jw; this lane's group takes j = jw + grp;
        // each step adds S. jw is uniform across the warp. ji (cache row
        // ri) is the next key to stage, NS - 1 keys ahead of j.
        u32 jw = k_begin + warp * NG, j = jw + grp;
        u32 ji = j, ri = kv_row(p, ji);
#pragma unroll
        for (u32 s = 0; s + 1 < NS; ++s) {
            if (ji < k_end) decg_stage(ring + s * DECG_STAGE_SLOTS, kb + (u64)ri * row, vb + (u64)ri * row, vec);
            decg_cp_commit();
            ri = kv_row_step(p, ri, ji, S);
            ji += S;
        }
        u32 st = 0;  // the stage of key j
        while (jw < k_end) {
            // Refill the stage read last step (its values are consumed).
            const u32 sf = st == 0 ? NS - 1 : st - 1;
            if (ji < k_end) decg_stage(ring + sf * DECG_STAGE_SLOTS, kb + (u64)ri * row, vb + (u64)ri * row, vec);
            decg_cp_commit();
            ri = kv_row_step(p, ri, ji, S);
            ji += S;
            decg_cp_wait<NS - 1>();  // key j's group is complete
            // A group past the range reads stale slots: its scores stay in
            // the group's lanes and its update is masked.
            float kc[DECG_EPL], vc[DECG_EPL];
            decg_unstage(ring + st * DECG_STAGE_SLOTS, kc, vc);
#if KILN_KV != 0 && defined(__CUDA_ARCH__)
            // Widen once per key, not once per head (the compiler would
            // rather keep the 16-bit words and widen them again per head:
            // 64 more instructions per key at 4 heads).
#pragma unroll
            for (int i = 0; i < DECG_EPL; ++i) asm volatile("" : "+f"(kc[i]), "+f"(vc[i]));
#endif
            const bool valid = j < k_end;
#pragma unroll
            for (u32 g = 0; g < H; ++g) {
                if (g < nh) {  // uniform across the block
                    float sp = 0.f;
#pragma unroll
                    for (int i = 0; i < DECG_EPL; ++i) sp = fmaf(qr[g][i], kc[i], sp);
#pragma unroll
                    for (int o = G / 2; o > 0; o >>= 1) sp += __shfl_xor_sync(FULL_MASK, sp, o);
                    if (valid) {
                        const float sc = cap_score(p, sp);
                        if (sc > m[g]) {
                            // A new running max (every key at first, rarely
                            // later): rescale what the stream has summed.
                            const float a = exp2f(m[g] - sc);
                            l[g] *= a;
#pragma unroll
                            for (int i = 0; i < DECG_EPL; ++i) acc[g][i] *= a;
                            m[g] = sc;
                        }
                        const float e = exp2f(sc - m[g]);
                        l[g] += e;
#pragma unroll
                        for (int i = 0; i < DECG_EPL; ++i) acc[g][i] = fmaf(e, vc[i], acc[g][i]);
                    }
                }
            }
            jw += S;
            j += S;
            st = st + 1 == NS ? 0 : st + 1;
        }
        decg_cp_wait<0>();  // (every staged key was read: nothing is pending)
        __syncthreads();    // every ring is read: the merge slots alias them
        // Merge the streams: smem [stream][g] = (m, l, acc[D]).
        constexpr u32 stride = D + 2;
#pragma unroll
        for (u32 g = 0; g < H; ++g) {
            if (g < nh) {
                float* slot = smem + ((u64)stream * hb + g) * stride;
#pragma unroll
                for (int i = 0; i < DECG_EPL; ++i) slot[2 + sub * DECG_EPL + i] = acc[g][i];
                if (sub == 0) {
                    slot[0] = m[g];
                    slot[1] = l[g];
                }
            }
        }
        __syncthreads();
        const bool direct = p.n_splits == 1;
        const u64 n_qh = (u64)p.n_tokens * p.n_heads;
        for (u32 i = tid; i < nh * D; i += blockDim.x) {
            const u32 g = i / D, c = i - g * D;
            float mx = KILN_NEG_INF;
#pragma unroll
            for (u32 s = 0; s < S; ++s) mx = fmaxf(mx, smem[((u64)s * hb + g) * stride]);
            float num = 0.f, den = 0.f;
            if (mx != KILN_NEG_INF) {
#pragma unroll
                for (u32 s = 0; s < S; ++s) {
                    const float* slot = smem + ((u64)s * hb + g) * stride;
                    const float wt = exp2f(slot[0] - mx);
                    num = fmaf(slot[2 + c], wt, num);
                    den = fmaf(slot[1], wt, den);
                }
            }
            if (direct) {
                out[(qh0 + g) * D + c] = num / den;  // one split holds every key: den > 0
            } else {
                part[((qh0 + g) * p.n_splits + split) * D + c] = num;
                if (c == 0) {
                    float* ml = part + n_qh * p.n_splits * D + ((qh0 + g) * p.n_splits + split) * 2;
                    ml[0] = mx;
                    ml[1] = den;
                }
            }
        }
        if (!direct) {
            // Publish the partials, then take a ticket; the last block of
            // the group merges every split (smem is free again after the
            // barrier).
            __threadfence();
            __syncthreads();
            u32* tk = tickets + (u64)t * gridDim.y + blockIdx.y;
            if (tid == 0) ticket = atomicAdd(tk, 1u);
            __syncthreads();
            if (ticket == p.n_splits - 1) {
                __threadfence();
                decg_combine<D>(p, part, qh0, nh, smem, out);
                if (tid == 0) *tk = 0u;  // ready for the next launch (graph replay)
            }
        }
        __syncthreads();  // shared memory is reused by the next token
    }
}

// An `_at` launch at device position p.pos0, below the planned position:
// the splits the host would plan for the keys seen there (at least
// DECG_MIN_KEYS_PER_STREAM keys per stream each, chunks a multiple of
// DECG_CHUNK_GRAIN, never more than planned: the partials and the shared
// memory were sized for the plan) replace the plan's in p. Every block
// computes the same plan; false for a block past its splits (it exits:
// it would see no key, and the merge counts only the new splits).
template <int D>
__device__ __forceinline__ bool decg_replan(AttnParams& p) {
    constexpr u32 S = DECG_WARPS * (32 / (D / DECG_EPL));
    constexpr u32 MIN_KEYS = DECG_MIN_KEYS_PER_STREAM * S;
    const u32 span = p.pos0 + p.n_tokens - first_key(p, p.pos0 + 1);  // >= 1
    u32 n = min(p.n_splits, (span + MIN_KEYS - 1) / MIN_KEYS);
    n = max(n, 1u);
    const u32 chunk = ((span + n - 1) / n + DECG_CHUNK_GRAIN - 1) / DECG_CHUNK_GRAIN * DECG_CHUNK_GRAIN;
    p.n_splits = (span + chunk - 1) / chunk;
    p.chunk = chunk;
    return blockIdx.x < p.n_splits;
}

#define DECG_ENTRY(D)                                                                       \
    extern "C" __global__ void __launch_bounds__(DECG_THREADS, DECG_MIN_BLOCKS)                  \
        KV_NAME(attention_decg_d##D##_)(AttnParams p, const float* __restrict__ q,               \
                                        const kv_t* __restrict__ k, const kv_t* __restrict__ v,  \
                                        float* __restrict__ part, u32* __restrict__ tickets,     \
                                        float* __restrict__ out) {                               \
        attention_decg<D>(p, q, k, v, part, tickets, out);                                       \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(DECG_THREADS, DECG_MIN_BLOCKS)                  \
        KV_NAME(attention_decg_d##D##_at_)(AttnParams p, const i32* __restrict__ pos,            \
                                           const float* __restrict__ q,                          \
                                           const kv_t* __restrict__ k,                           \
                                           const kv_t* __restrict__ v,                           \
                                           float* __restrict__ part, u32* __restrict__ tickets,  \
                                           float* __restrict__ out) {                            \
        kiln_grid_wait();                                                                        \
        const i32 p0 = pos[0];                                                                   \
        const u32 planned = p.pos0;                                                              \
        p.pos0 = p0 < 0 ? 0u : min((u32)p0, planned);                                           \
        if (p.pos0 < planned && !decg_replan<D>(p)) return;                                      \
        attention_decg<D>(p, q, k, v, part, tickets, out);                                       \
    }
DECG_ENTRY(64)
DECG_ENTRY(128)
DECG_ENTRY(256)
