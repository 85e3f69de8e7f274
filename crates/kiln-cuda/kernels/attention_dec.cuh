// attention_dec.cuh: the lane-group decode kernel of attention.cu
// (attention_decg_d<D>[_at]_<kv>, AttentionKernel::DecodeGroups in
// src/attention/dec.rs), for few queries (n_tokens <= DECODE_MAX_TOKENS)
// and head dims D = 64, 128, 256. Included by attention.cu after the warp
// decode kernel, whose grid, plan fields, partial layout and ticket merge
// it shares; uses AttnParams, kv_row, first_key, cap_score, kv_piece.
//
// Work split: grid (split, kv head x head chunk, token) as attention_split.
// A warp is cut into NG = 32 / G lane groups of G = D / 8 lanes; lane `sub`
// of a group holds the 8 elements sub*8 .. sub*8+7 of a row (one 16-byte
// load for a 16-bit cache, two for f32). The block's 4 * NG groups are key
// streams: stream s takes keys k_begin + s, + S, + 2S, ... (S = 4 * NG), and
// keeps its own online softmax (m, l) and acc slice per query head, so no
// key depends on another stream's; a score is the group's 8-element partial
// dots plus log2(G) shuffles. The next key's K/V are loaded while the
// current one is used. The warp's loop count is uniform (a group past the
// range masks its update, never its shuffles). Then the streams merge
// through shared memory; with several splits the block writes its partial
// (acc, m, l) and the last block of the group (ticket) merges the splits:
// every split's (m, l) loaded at once into shared memory, the weights
// 2^(m_s - M) / L computed once per (head, split), then the weighted sums
// with 16-byte loads, every thread of the block on a share of the splits
// (decg_combine).
//
// Up to DECG_MAX_HEADS query heads per block (q and acc in registers).
// Dynamic shared memory: max(S * hb * (D + 2), 2 * hb * n_splits + 4 *
// DECG_THREADS) floats (decg_smem_floats in src/attention/dec.rs).

#define DECG_WARPS 4
#define DECG_THREADS (DECG_WARPS * 32)
// Blocks per SM the launch bounds ask for (<= 128 registers per thread;
// DECG_BLOCKS_PER_SM in src/attention/dec.rs plans for as many).
#define DECG_MIN_BLOCKS 4
#define DECG_MAX_HEADS 4
#define DECG_EPL 8  // cache elements per lane

// The 8 elements of a cache row at src (an offset that is a multiple of 8)
// as f32; whole 16-byte pieces when `vec` (k and v 16-byte aligned).
__device__ __forceinline__ void decg_load(const kv_t* __restrict__ src, bool vec, float (&r)[DECG_EPL]) {
    if (vec) {
#if KILN_KV == 0
        kv_piece<4>(src, r);
        kv_piece<4>(src + 4, r + 4);
#else
        kv_piece<8>(src, r);
#endif
        return;
    }
#pragma unroll
    for (int i = 0; i < DECG_EPL; ++i) r[i] = kv_cvt(src[i]);
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

// The lane-group merge of the split partials of query heads qh0 .. qh0 + nh
// (see combine_heads for the math). `w`: shared memory of 2 * nh *
// n_splits + 4 * DECG_THREADS floats. Every split's (m, l) is loaded in
// one parallel step; one warp per head turns them into weights
// 2^(m_s - M) / L (0 exactly for a split that saw no key); then each
// thread sums four output columns (one 16-byte load per split) over every
// R-th split, skipping zero weights (the empty splits of a plan made for a
// later position: the `_at` kernels), two loads in flight, and the R
// partial sums of a column are added through shared memory.
template <int D>
__device__ __forceinline__ void decg_combine(const AttnParams& p, const float* part, u64 qh0, u32 nh,
                                             float* w, float* __restrict__ out) {
    constexpr u32 Q = D / 4;              // column quads of a head
    constexpr u32 R = DECG_THREADS / Q;   // threads per quad, each every R-th split
    static_assert(DECG_THREADS % Q == 0, "D / 4 must divide the block");
    const u32 ns = p.n_splits;
    const u32 tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const u64 n_qh = (u64)p.n_tokens * p.n_heads;
    const float* ml = part + n_qh * ns * D + qh0 * ns * 2;  // heads qh0.. are contiguous
    float* ws = w;                // [nh][ns]: m, then the weight
    float* ls = w + nh * ns;      // [nh][ns]: l
    float* red = w + 2 * nh * ns; // [R][D]: partial column sums
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
    const u32 cq = tid % Q, r = tid / Q;
    // Partials are rows of D floats at a 16-byte multiple from part.
    const bool vec = ((u64)part % 16) == 0;
    for (u32 g = 0; g < nh; ++g) {
        const float* wg = ws + g * ns;
        const float* pa = part + (qh0 + g) * ns * D + 4 * cq;
        float4 a0 = make_float4(0.f, 0.f, 0.f, 0.f), a1 = a0;
        u32 s = r;
        for (; s + R < ns; s += 2 * R) {
            const float w0 = wg[s], w1 = wg[s + R];
            if (w0 != 0.f) decg_fma4(a0, decg_ld4(pa + (u64)s * D, vec), w0);
            if (w1 != 0.f) decg_fma4(a1, decg_ld4(pa + (u64)(s + R) * D, vec), w1);
        }
        if (s < ns && wg[s] != 0.f) decg_fma4(a0, decg_ld4(pa + (u64)s * D, vec), wg[s]);
        float* rr = red + r * D + 4 * cq;
        rr[0] = a0.x + a1.x;
        rr[1] = a0.y + a1.y;
        rr[2] = a0.z + a1.z;
        rr[3] = a0.w + a1.w;
        __syncthreads();
        for (u32 c = tid; c < D; c += DECG_THREADS) {
            float sum = 0.f;
#pragma unroll
            for (u32 i = 0; i < R; ++i) sum += red[i * D + c];
            out[(qh0 + g) * D + c] = sum;
        }
        __syncthreads();  // red is rewritten for the next head
    }
}

// Keys at most this many per block are prefetched (decg_prefetch).
#define DECG_PREFETCH_KEYS 256

// Ask L2 for the line holding a (a hint that returns no value). The host
// emulators (compiled without __CUDA_ARCH__, under AddressSanitizer) read
// the byte instead, so an address outside the caches fails there.
__device__ __forceinline__ void decg_prefetch_l2(const void* a) {
#if defined(__CUDA_ARCH__)
    asm volatile("prefetch.global.L2 [%0];" ::"l"(a));
#else
    (void)*(const volatile char*)a;
#endif
}

// Before the PDL wait: ask L2 for the K and V rows (this block's kv head)
// of the first DECG_PREFETCH_KEYS keys of the block's range that are older
// than the first query (positions < pos0, written by earlier steps'
// kernels; the newest rows, which the previous kernel may still be writing,
// are left to the loop). L2 is the point of coherence, so a prefetched line
// never hides a later write; the addresses are rows the loop reads. In the
// last layers of a decode step the cache rows were last read a whole step
// ago, so they come from DRAM: the prefetch overlaps that latency with the
// previous kernel's tail instead of paying it key by key in the loop.
template <int D>
__device__ __forceinline__ void decg_prefetch(const AttnParams& p, const kv_t* k, const kv_t* v, u32 kvh) {
    const u32 lo = first_key(p, p.pos0 + 1) + blockIdx.x * p.chunk;  // the split's first key
    const u32 hi = min(min(lo + p.chunk, p.pos0), lo + DECG_PREFETCH_KEYS);
    constexpr u32 bytes = D * sizeof(kv_t);
    constexpr u32 lines = (bytes + 127) / 128;  // 128-byte steps; a row may straddle one more
    const u64 row = (u64)p.n_kv_heads * D;
    for (u32 i = threadIdx.x; lo + i / (2 * lines) < hi; i += DECG_THREADS) {
        const u32 j = lo + i / (2 * lines), piece = i % (2 * lines);
        const kv_t* base = (piece < lines ? k : v) + (u64)kv_row(p, j) * row + (u64)kvh * D;
        const char* a = (const char*)base + (u64)(piece % lines) * 128;
        decg_prefetch_l2(a);
        if (piece % lines == lines - 1) decg_prefetch_l2((const char*)base + bytes - 1);
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
    static_assert(D % DECG_EPL == 0 && G <= 32 && 32 % G == 0, "D must be 8 * a power of two <= 256");
    extern __shared__ float smem[];
    __shared__ u32 ticket;
    kiln_grid_launch_dependents();
    const u32 hb = p.heads_per_block;
    const u32 split = blockIdx.x;
    const u32 n_chunks = (p.group + hb - 1) / hb;
    const u32 kvh = blockIdx.y / n_chunks;
    if (p.prefetch) decg_prefetch<D>(p, k, v, kvh);
    kiln_grid_wait();  // q and the newest cache rows come from the previous kernel
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
        // The warp's first key is jw; this lane's group takes j = jw + grp
        // (cache row rj); each step adds S. jw is uniform across the warp.
        u32 jw = k_begin + warp * NG, j = jw + grp, rj = kv_row(p, j);
        float kn[DECG_EPL], vn[DECG_EPL];
        if (j < k_end) {
            decg_load(kb + (u64)rj * row, vec, kn);
            decg_load(vb + (u64)rj * row, vec, vn);
        } else {
#pragma unroll
            for (int i = 0; i < DECG_EPL; ++i) kn[i] = vn[i] = 0.f;
        }
        while (jw < k_end) {
            float kc[DECG_EPL], vc[DECG_EPL];
#pragma unroll
            for (int i = 0; i < DECG_EPL; ++i) {
                kc[i] = kn[i];
                vc[i] = vn[i];
            }
            const bool valid = j < k_end;
            const u32 jn = j + S, rn = kv_row_step(p, rj, j, S);
            if (jn < k_end) {
                decg_load(kb + (u64)rn * row, vec, kn);
                decg_load(vb + (u64)rn * row, vec, vn);
            }
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
                        const float mn = fmaxf(m[g], sc);
                        const float a = exp2f(m[g] - mn), e = exp2f(sc - mn);
                        l[g] = fmaf(l[g], a, e);
#pragma unroll
                        for (int i = 0; i < DECG_EPL; ++i) acc[g][i] = fmaf(acc[g][i], a, e * vc[i]);
                        m[g] = mn;
                    }
                }
            }
            jw += S;
            j = jn;
            rj = rn;
        }
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
        /* With the prefetch, pos is read before the wait (attention_decg waits after */       \
        /* prefetching the rows of the real range).                                    */       \
        attn_device_pos(p, pos, !p.prefetch);                                                    \
        attention_decg<D>(p, q, k, v, part, tickets, out);                                       \
    }
DECG_ENTRY(64)
DECG_ENTRY(128)
DECG_ENTRY(256)
