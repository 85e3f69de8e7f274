// attention: causal scaled-dot-product attention with grouped-query heads over
// a KV cache, the semantics of kiln_core::ops::attention::attention_ref:
// query t (position i = pos0 + t) attends keys 0..=i, or with a sliding
// window w keys i - w < j <= i (first_key below); query head h reads kv head
// h / group. Scores are kept in base 2 (q is pre-multiplied by
// scale * log2(e)), so every exponential is one exp2. With a logit soft cap
// c, q is pre-multiplied by scale / c instead and a score is
// (c log2(e)) tanh(q . k) (cap_score below).
//
// Cache element type (kv_t): this file is compiled once per type, the
// family module with f32 caches (KILN_KV undefined or 0) and the variants
// KILN_KV 1 (f16 bits) and 2 (bf16 bits) (src/attention.rs); every value
// is widened to f32 when loaded (kv_cvt, exact) and all arithmetic is f32.
// Kernel names end in the type: attention_decode_l4_f32, .._f16, .._bf16.
//
// Two kernels:
// - split-KV ("flash decoding"): grid (split, kv head x head chunk, token);
//   each block streams the keys of [k_lo + split * chunk, k_lo + (split + 1) *
//   chunk) that its query sees (k_lo: the first key of token 0, so the
//   splits cover only the keys some query sees; a split with none of them
//   writes an empty partial)
//   through shared memory with an online softmax for up to 8 query heads of
//   one kv head (K/V rows are loaded once for the whole group), and writes
//   the unnormalised partial (acc, max, sum) per split; the last block of a
//   (token, head chunk) to finish (a ticket counter, reset by that block)
//   merges the splits, so decode attention is one kernel. With one split the
//   block writes the output directly.
//   Any head_dim up to 256; used for prefill with head dims the tiled
//   kernel has no instance for (decode takes the lane-group decode kernel
//   of attention_dec.cuh for head dims 64, 128, 256, else the warp decode
//   kernel below, head dims up to 512).
// - tiled (prefill): one block per (32-query tile, head), key tiles of 32 in
//   shared memory, online softmax per query row, causal (and window) mask;
//   key tiles start at the first key of the block's first row; head_dim is
//   a template parameter (64, 80, 96, 128).
//
// Positions and cache rows: position j's keys and values are in row
// kv_row(j) = j % kv_rows (kv_rows = kv_stride), which is j itself unless
// the cache is a ring (a sliding window and positions past kv_stride; the
// host validated that the ring keeps every key a query of the call sees).
// Every kernel works on positions (masks, key ranges, splits) and maps
// each one to its row where it loads it, row by row: a tile that straddles
// the ring's end is not contiguous in memory. Every mapped row is below
// kv_rows <= kv_stride, so in bounds whatever the position; and no kernel
// loads a position at or past pos0 + n_tokens, nor one before the first
// query's window.
#include "common.cuh"

#include "attention_kv.cuh"

// Mirrored by `AttnK` in src/attention.rs.
struct AttnParams {
    u32 n_tokens;
    u32 n_heads;
    u32 n_kv_heads;
    u32 head_dim;
    u32 pos0;
    u32 group;            // n_heads / n_kv_heads
    u32 n_splits;         // split-KV: splits over the key range
    u32 chunk;            // split-KV: keys per split (a multiple of key_tile)
    u32 heads_per_block;  // split-KV: query heads per block (<= 8)
    u32 key_tile;         // split-KV: keys per shared-memory tile (16 or 32)
    float scale_log2;     // q multiplier: scale * log2(e), or scale / c with a soft cap c
    u32 window;           // sliding window (keys per query); 0 = none
    float cap_log2;       // soft cap: c * log2(e); 0 = none
    u32 kv_rows;          // cache rows (kv_stride, >= 1): position j is row kv_row(j)
    u32 prefetch;         // decode kernels: 1 = warm L2 with the older cache rows before the PDL wait
};

// A score from the dot product of the pre-multiplied q and k: as is, or
// soft-capped (c log2(e)) tanh(s / c) (q already holds the 1 / c).
__device__ __forceinline__ float cap_score(const AttnParams& p, float s) {
    return p.cap_log2 != 0.f ? p.cap_log2 * tanhf(s) : s;
}

#define KILN_NEG_INF __int_as_float(0xff800000)
#define FULL_MASK 0xffffffffu

// The first key a query sees when it sees n_keys = position + 1 keys causally.
__device__ __forceinline__ u32 first_key(const AttnParams& p, u32 n_keys) {
    return (p.window != 0u && n_keys > p.window) ? n_keys - p.window : 0u;
}

// The cache row of position j: j itself below kv_rows (no ring, or a ring
// not yet full), else j % kv_rows. Below kv_rows either way.
__device__ __forceinline__ u32 kv_row(const AttnParams& p, u32 j) {
    return j < p.kv_rows ? j : j % p.kv_rows;
}

// The cache row of position j + dj given r = kv_row(p, j): one addition,
// the modulo only where the ring wraps.
__device__ __forceinline__ u32 kv_row_step(const AttnParams& p, u32 r, u32 j, u32 dj) {
    const u32 rn = r + dj;
    return rn < p.kv_rows ? rn : kv_row(p, j + dj);
}

__device__ __forceinline__ float warp_max(float x) {
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(FULL_MASK, x, o));
    return x;
}
__device__ __forceinline__ float warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(FULL_MASK, x, o);
    return x;
}

// ---------------------------------------------------------------------------
// split-KV

// Dynamic shared memory (floats), laid out as in attention_split below:
// qs [hb][d], acc [hb][d], ks [bk][d+1], vs [bk][d], ps [hb][bk], m/l/alpha [hb].
// src/attention.rs computes the same size.

#define SPLIT_THREADS 128
// Most query heads per block (MAX_HEADS_PER_BLOCK in src/attention.rs).
#define MAX_DEC_HEADS 8
// K/V elements of one tile per thread: key_tile * head_dim <= 4096 (the
// launcher checks), held in registers so the next tile's loads are in flight
// while the current tile is computed.
#define SPLIT_STAGE 32

// Element r of thread tid in a tile is tid + r * SPLIT_THREADS, i.e. key row
// j, column c; (j0, c0) is element 0 and each step adds (dj, dc), dc < d.
struct TileMap {
    u32 j0, c0, dj, dc;
};

// Load the keys of positions k0 .. k0 + nk (all below the split's end) of K
// and V into registers, each from its cache row (kv_row).
__device__ __forceinline__ void split_load(const AttnParams& p, const TileMap& tm, u64 row, u64 kv_off,
                                           const kv_t* __restrict__ k,
                                           const kv_t* __restrict__ v, u32 k0, u32 nk,
                                           float (&kr)[SPLIT_STAGE], float (&vr)[SPLIT_STAGE]) {
    const u32 d = p.head_dim, r0 = kv_row(p, k0);
    u32 j = tm.j0, c = tm.c0;
#pragma unroll
    for (int r = 0; r < SPLIT_STAGE; ++r) {
        if (j < nk) {
            const u64 src = (u64)kv_row_step(p, r0, k0, j) * row + kv_off + c;
            kr[r] = kv_cvt(k[src]);
            vr[r] = kv_cvt(v[src]);
        }
        c += tm.dc;
        j += tm.dj;
        if (c >= d) {
            c -= d;
            ++j;
        }
    }
}

// Store the registers of split_load into ks [bk][d+1] and vs [bk][d].
__device__ __forceinline__ void split_store(const TileMap& tm, u32 d, u32 nk, float* ks, float* vs,
                                            const float (&kr)[SPLIT_STAGE],
                                            const float (&vr)[SPLIT_STAGE]) {
    u32 j = tm.j0, c = tm.c0;
#pragma unroll
    for (int r = 0; r < SPLIT_STAGE; ++r) {
        if (j < nk) {
            ks[j * (d + 1) + c] = kr[r];
            vs[j * d + c] = vr[r];
        }
        c += tm.dc;
        j += tm.dj;
        if (c >= d) {
            c -= d;
            ++j;
        }
    }
}

// Merge the n_splits partials of query heads qh0 .. qh0 + nh (rows of one
// token): out = sum_s acc_s 2^(m_s - M) / sum_s l_s 2^(m_s - M), M = max_s m_s.
// Some split holds the query's own key, so M is finite and the denominator
// > 0; an empty split (m = -inf, l = 0, acc = 0) weighs exactly 0. One
// warp per head, no block-wide step: lanes hold the splits' (m, l) 32 at a
// time and broadcast the weights by shuffle. The partials were written by
// other blocks of this grid: read them through L2 (ld.global.cg), never a
// stale L1 line.
__device__ __forceinline__ void combine_heads(const AttnParams& p, const float* part, u64 qh0,
                                              u32 nh, float* __restrict__ out) {
    const u32 ns = p.n_splits, d = p.head_dim;
    const u32 warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
    const u64 n_qh = (u64)p.n_tokens * p.n_heads;
    for (u32 g = warp; g < nh; g += nwarps) {
        const u64 qh = qh0 + g;
        const float* ml = part + n_qh * ns * d + qh * ns * 2;
        const float* pa = part + qh * ns * d;
        float mx = KILN_NEG_INF;
        for (u32 s = lane; s < ns; s += 32) mx = fmaxf(mx, __ldcg(ml + 2 * s));
        mx = warp_max(mx);
        float den = 0.f;
        for (u32 s = lane; s < ns; s += 32) den += __ldcg(ml + 2 * s + 1) * exp2f(__ldcg(ml + 2 * s) - mx);
        const float inv = 1.f / warp_sum(den);
        for (u32 c0 = 0; c0 < d; c0 += 32) {
            const u32 c = c0 + lane;
            float num = 0.f;
            for (u32 s0 = 0; s0 < ns; s0 += 32) {
                const u32 sl = s0 + lane;
                const float wl = sl < ns ? exp2f(__ldcg(ml + 2 * sl) - mx) : 0.f;
                const u32 cnt = min(32u, ns - s0);
#pragma unroll 8
                for (u32 s = 0; s < cnt; ++s) {
                    const float w = __shfl_sync(FULL_MASK, wl, s);
                    if (c < d) num = fmaf(__ldcg(pa + (u64)(s0 + s) * d + c), w, num);
                }
            }
            if (c < d) out[qh * d + c] = num * inv;
        }
    }
}

// q: [n_tokens, n_heads, d]; k, v: [kv_stride, n_kv_heads, d]
// DIRECT: out: [n_tokens, n_heads, d] (one split)
// else:   part: acc [n_tokens, n_heads, n_splits, d] then (m, l) [n_tokens, n_heads, n_splits, 2],
//         tickets: [n_tokens, gridDim.y] zeros (left zero), out as above.
template <bool DIRECT>
__device__ __forceinline__ void attention_split(const AttnParams& p, const float* __restrict__ q,
                                                const kv_t* __restrict__ k,
                                                const kv_t* __restrict__ v,
                                                float* __restrict__ dst, u32* __restrict__ tickets,
                                                float* __restrict__ out) {
    __shared__ u32 ticket;
    // q and the cache rows come from the previous kernel (PDL: wait first).
    kiln_grid_launch_dependents();
    kiln_grid_wait();
    extern __shared__ float smem[];
    const u32 d = p.head_dim, hb = p.heads_per_block, bk = p.key_tile;
    const u32 split = blockIdx.x;
    const u32 n_chunks = (p.group + hb - 1) / hb;
    const u32 kvh = blockIdx.y / n_chunks;
    const u32 g0 = (blockIdx.y % n_chunks) * hb;
    const u32 nh = min(hb, p.group - g0);  // query heads in this block
    const u32 h0 = kvh * p.group + g0;     // the first of them
    float* qs = smem;
    float* acc = qs + hb * d;
    float* ks = acc + hb * d;
    float* vs = ks + bk * (d + 1);
    float* ps = vs + bk * d;
    float* ms = ps + hb * bk;  // running max (base 2)
    float* ls = ms + hb;       // running sum of exp2(s - m)
    float* al = ls + hb;       // this tile's rescale factor
    const u32 tid = threadIdx.x, nthr = blockDim.x;
    const u32 warp = tid / 32, lane = tid % 32, nwarps = nthr / 32;
    const u64 row = (u64)p.n_kv_heads * d;  // floats per cache row
    const u64 kv_off = (u64)kvh * d;
    const TileMap tm = {tid / d, tid % d, SPLIT_THREADS / d, SPLIT_THREADS % d};
    float kr[SPLIT_STAGE], vr[SPLIT_STAGE];

    const u32 s_begin = first_key(p, p.pos0 + 1) + split * p.chunk;  // this split's keys
    for (u32 t = blockIdx.z; t < p.n_tokens; t += gridDim.z) {
        const u32 n_keys = p.pos0 + t + 1;
        const u32 k_begin = max(s_begin, first_key(p, n_keys));
        const u32 k_end = min(s_begin + p.chunk, n_keys);  // empty when <= k_begin
        const u64 q_base = ((u64)t * p.n_heads + h0) * d;  // heads h0.. are contiguous
        for (u32 i = tid; i < nh * d; i += nthr) {
            qs[i] = q[q_base + i] * p.scale_log2;
            acc[i] = 0.f;
        }
        for (u32 g = tid; g < nh; g += nthr) {
            ms[g] = KILN_NEG_INF;
            ls[g] = 0.f;
        }
        if (k_begin < k_end) split_load(p, tm, row, kv_off, k, v, k_begin, min(bk, k_end - k_begin), kr, vr);
        __syncthreads();
        for (u32 k0 = k_begin; k0 < k_end; k0 += bk) {
            const u32 nk = min(bk, k_end - k0);  // >= 1
            // Stage the K and V of positions k0 .. k0 + nk (all < n_keys),
            // then start loading the next tile.
            split_store(tm, d, nk, ks, vs, kr, vr);
            __syncthreads();
            const u32 k1 = k0 + bk;
            if (k1 < k_end) split_load(p, tm, row, kv_off, k, v, k1, min(bk, k_end - k1), kr, vr);
            // Scores, one (head, key) pair per thread.
            for (u32 i = tid; i < nh * bk; i += nthr) {
                const u32 g = i / bk, j = i - g * bk;
                float s = KILN_NEG_INF;
                if (j < nk) {
                    const float* qr = qs + g * d;
                    const float* krow = ks + j * (d + 1);
                    float a0 = 0.f, a1 = 0.f;
                    u32 c = 0;
                    for (; c + 1 < d; c += 2) {
                        a0 = fmaf(qr[c], krow[c], a0);
                        a1 = fmaf(qr[c + 1], krow[c + 1], a1);
                    }
                    if (c < d) a0 = fmaf(qr[c], krow[c], a0);
                    s = cap_score(p, a0 + a1);
                }
                ps[i] = s;
            }
            __syncthreads();
            // Online softmax, one warp per head. The tile holds >= 1 key, so
            // m_new is finite; masked slots become exp2(-inf) = 0.
            for (u32 g = warp; g < nh; g += nwarps) {
                float* pr = ps + g * bk;
                float mx = KILN_NEG_INF;
                for (u32 j = lane; j < bk; j += 32) mx = fmaxf(mx, pr[j]);
                mx = warp_max(mx);
                const float m_old = ms[g];
                const float m_new = fmaxf(m_old, mx);
                float sum = 0.f;
                for (u32 j = lane; j < bk; j += 32) {
                    const float e = exp2f(pr[j] - m_new);
                    pr[j] = e;
                    sum += e;
                }
                sum = warp_sum(sum);
                if (lane == 0) {
                    const float a = exp2f(m_old - m_new);
                    al[g] = a;
                    ls[g] = ls[g] * a + sum;
                    ms[g] = m_new;
                }
            }
            __syncthreads();
            // acc = acc * alpha + P V
            for (u32 i = tid; i < nh * d; i += nthr) {
                const u32 g = i / d, c = i - g * d;
                const float* pr = ps + g * bk;
                float a = 0.f;
                for (u32 j = 0; j < nk; ++j) a = fmaf(pr[j], vs[j * d + c], a);
                acc[i] = acc[i] * al[g] + a;
            }
            __syncthreads();
        }
        const u64 qh0 = (u64)t * p.n_heads + h0;
        if (DIRECT) {
            // One split covers every key: ls > 0.
            for (u32 i = tid; i < nh * d; i += nthr) {
                const u32 g = i / d;
                dst[q_base + i] = acc[i] / ls[g];
            }
        } else {
            // An empty split (k_begin >= k_end) writes m = -inf, l = 0, acc = 0.
            const u64 n_qh = (u64)p.n_tokens * p.n_heads;
            for (u32 i = tid; i < nh * d; i += nthr) {
                const u32 g = i / d, c = i - g * d;
                dst[((qh0 + g) * p.n_splits + split) * d + c] = acc[i];
            }
            float* ml = dst + n_qh * p.n_splits * d;
            for (u32 g = tid; g < nh; g += nthr) {
                const u64 o = ((qh0 + g) * p.n_splits + split) * 2;
                ml[o] = ms[g];
                ml[o + 1] = ls[g];
            }
            // Publish the partials, then take a ticket; the block that takes
            // the last one merges every split of these heads.
            __threadfence();
            __syncthreads();
            u32* tk = tickets + (u64)t * gridDim.y + blockIdx.y;
            if (tid == 0) ticket = atomicAdd(tk, 1u);
            __syncthreads();
            if (ticket == p.n_splits - 1) {
                __threadfence();
                combine_heads(p, dst, qh0, nh, out);
                if (tid == 0) *tk = 0u;  // ready for the next launch (graph replay)
            }
        }
        __syncthreads();  // shared memory is reused by the next token
    }
}

extern "C" __global__ void __launch_bounds__(SPLIT_THREADS)
    KV_NAME(attention_split_)(AttnParams p, const float* __restrict__ q, const kv_t* __restrict__ k,
                              const kv_t* __restrict__ v, float* __restrict__ part,
                              u32* __restrict__ tickets, float* __restrict__ out) {
    attention_split<false>(p, q, k, v, part, tickets, out);
}

extern "C" __global__ void __launch_bounds__(SPLIT_THREADS)
    KV_NAME(attention_split_direct_)(AttnParams p, const float* __restrict__ q,
                                     const kv_t* __restrict__ k, const kv_t* __restrict__ v,
                                     float* __restrict__ out) {
    attention_split<true>(p, q, k, v, out, nullptr, nullptr);
}

// The `_at` kernels' entry: p.pos0 = the device position pos[0], clamped
// to [0, the planned p.pos0]. With `wait`, the next kernel may launch (PDL)
// and this one waits for the previous kernel first; without, pos is read
// at once, which is safe because positions are staged by a copy before the
// step runs (Stream::stage_inputs) and no kernel writes them.
__device__ __forceinline__ void attn_device_pos(AttnParams& p, const i32* pos, bool wait) {
    if (wait) {
        kiln_grid_launch_dependents();
        kiln_grid_wait();
    }
    const i32 p0 = pos[0];
    p.pos0 = p0 < 0 ? 0u : min((u32)p0, p.pos0);
}

// The same kernels with pos0 read from device memory (CUDA-graph decode: the
// launch is recorded once, the position changes every token). The launcher
// plans the splits for p.pos0 = the largest position it allows; pos[0] is
// clamped to it, and splits past the current keys write empty partials
// (m = -inf, l = 0, acc = 0) that the merge weighs by zero.
// pos: [1]
extern "C" __global__ void __launch_bounds__(SPLIT_THREADS)
    KV_NAME(attention_split_at_)(AttnParams p, const i32* __restrict__ pos,
                                 const float* __restrict__ q, const kv_t* __restrict__ k,
                                 const kv_t* __restrict__ v, float* __restrict__ part,
                                 u32* __restrict__ tickets, float* __restrict__ out) {
    attn_device_pos(p, pos, true);
    attention_split<false>(p, q, k, v, part, tickets, out);
}

extern "C" __global__ void __launch_bounds__(SPLIT_THREADS)
    KV_NAME(attention_split_direct_at_)(AttnParams p, const i32* __restrict__ pos,
                                        const float* __restrict__ q, const kv_t* __restrict__ k,
                                        const kv_t* __restrict__ v, float* __restrict__ out) {
    attn_device_pos(p, pos, true);
    attention_split<true>(p, q, k, v, out, nullptr, nullptr);
}

// ---------------------------------------------------------------------------
// warp decode: the split-KV work split for few queries (decode), with no
// block-wide step per key. Grid and partial layout as attention_split; each
// of the DEC_WARPS warps of a block takes every DEC_WARPS-th key of the
// block's range and keeps, per query head, an online softmax (m, l) and its
// share of acc in registers: lane l holds dims l * DPL .. l * DPL + DPL - 1
// (d <= 32 * DPL), a score is a lane-partial dot plus one warp all-reduce.
// The next key's K/V row is loaded while the current one is used; when the
// row fills the warp (d == 32 DPL) and the caches are aligned, a lane loads
// its DPL values in pieces of up to 16 bytes (dec_load_kv). The warps then
// merge through shared memory; with several splits the block writes its
// partial and the last block of the group merges the splits. MAXH: the most
// query heads per block the instance holds in registers (8; 2 for the
// DPL 16 instance of head dims 257..512).

#define DEC_WARPS 4
#define DEC_THREADS (DEC_WARPS * 32)

template <int DPL>
__device__ __forceinline__ void dec_load(const float* __restrict__ src, u32 lane, u32 d, float (&r)[DPL]) {
#pragma unroll
    for (int i = 0; i < DPL; ++i) {
        const u32 c = lane * DPL + i;
        r[i] = c < d ? src[c] : 0.f;
    }
}

// Lane `lane`'s values c = lane * DPL + i of a cache row at src (0 past d).
// vec: d == 32 * DPL and src aligned to a piece, so whole pieces load.
template <int DPL>
__device__ __forceinline__ void dec_load_kv(const kv_t* __restrict__ src, u32 lane, u32 d, bool vec,
                                            float (&r)[DPL]) {
    constexpr int PE = DecPiece<DPL>::value;
    if (vec) {
        const kv_t* s = src + lane * DPL;
#pragma unroll
        for (int i = 0; i < DPL; i += PE) kv_piece<PE>(s + i, r + i);
        return;
    }
#pragma unroll
    for (int i = 0; i < DPL; ++i) {
        const u32 c = lane * DPL + i;
        r[i] = c < d ? kv_cvt(src[c]) : 0.f;
    }
}

// Dynamic shared memory: DEC_WARPS * hb * (d + 2) floats.
template <int DPL, int MAXH>
__device__ __forceinline__ void attention_decode(const AttnParams& p, const float* __restrict__ q,
                                                 const kv_t* __restrict__ k,
                                                 const kv_t* __restrict__ v,
                                                 float* __restrict__ part,
                                                 u32* __restrict__ tickets,
                                                 float* __restrict__ out) {
    extern __shared__ float smem[];
    __shared__ u32 ticket;
    kiln_grid_launch_dependents();
    kiln_grid_wait();  // q and the cache rows come from the previous kernel
    const u32 d = p.head_dim, hb = p.heads_per_block;
    const u32 split = blockIdx.x;
    const u32 n_chunks = (p.group + hb - 1) / hb;
    const u32 kvh = blockIdx.y / n_chunks;
    const u32 g0 = (blockIdx.y % n_chunks) * hb;
    const u32 nh = min(hb, p.group - g0);
    const u32 h0 = kvh * p.group + g0;
    const u32 warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const u64 row = (u64)p.n_kv_heads * d;
    const kv_t* kb = k + (u64)kvh * d;
    const kv_t* vb = v + (u64)kvh * d;
    // Whole-piece loads: full rows (so every row offset is a multiple of
    // DPL, hence of the piece) and piece-aligned caches.
    constexpr u64 piece_bytes = DecPiece<DPL>::value * sizeof(kv_t);
    const bool vec = d == 32u * DPL && (((u64)k | (u64)v) % piece_bytes) == 0;
    const u32 s_begin = first_key(p, p.pos0 + 1) + split * p.chunk;  // this split's keys
    for (u32 t = blockIdx.z; t < p.n_tokens; t += gridDim.z) {
        const u32 n_keys = p.pos0 + t + 1;
        const u32 k_begin = max(s_begin, first_key(p, n_keys));
        const u32 k_end = min(s_begin + p.chunk, n_keys);  // empty when <= k_begin
        const u64 qh0 = (u64)t * p.n_heads + h0;
        float qr[MAXH][DPL], acc[MAXH][DPL], m[MAXH], l[MAXH];
#pragma unroll
        for (u32 g = 0; g < MAXH; ++g) {
            m[g] = KILN_NEG_INF;
            l[g] = 0.f;
#pragma unroll
            for (int i = 0; i < DPL; ++i) acc[g][i] = 0.f;
            if (g < nh) {
                dec_load<DPL>(q + (qh0 + g) * d, lane, d, qr[g]);
#pragma unroll
                for (int i = 0; i < DPL; ++i) qr[g][i] *= p.scale_log2;
            }
        }
        // Position j is in cache row rj (kv_row); the warp steps DEC_WARPS
        // positions at a time.
        u32 j = k_begin + warp, rj = kv_row(p, j);
        float kn[DPL], vn[DPL];
        if (j < k_end) {
            dec_load_kv<DPL>(kb + (u64)rj * row, lane, d, vec, kn);
            dec_load_kv<DPL>(vb + (u64)rj * row, lane, d, vec, vn);
        }
        while (j < k_end) {
            float kc[DPL], vc[DPL];
#pragma unroll
            for (int i = 0; i < DPL; ++i) {
                kc[i] = kn[i];
                vc[i] = vn[i];
            }
            const u32 jn = j + DEC_WARPS, rn = kv_row_step(p, rj, j, DEC_WARPS);
            if (jn < k_end) {
                dec_load_kv<DPL>(kb + (u64)rn * row, lane, d, vec, kn);
                dec_load_kv<DPL>(vb + (u64)rn * row, lane, d, vec, vn);
            }
#pragma unroll
            for (u32 g = 0; g < MAXH; ++g) {
                if (g < nh) {
                    float sp = 0.f;
#pragma unroll
                    for (int i = 0; i < DPL; ++i) sp = fmaf(qr[g][i], kc[i], sp);
                    const float sc = cap_score(p, warp_sum(sp));
                    const float mn = fmaxf(m[g], sc);
                    const float a = exp2f(m[g] - mn), e = exp2f(sc - mn);
                    l[g] = fmaf(l[g], a, e);
#pragma unroll
                    for (int i = 0; i < DPL; ++i) acc[g][i] = fmaf(acc[g][i], a, e * vc[i]);
                    m[g] = mn;
                }
            }
            j = jn;
            rj = rn;
        }
        // Merge the warps: smem [warp][g] = (m, l, acc[d]).
        const u32 stride = d + 2;
#pragma unroll
        for (u32 g = 0; g < MAXH; ++g) {
            if (g < nh) {
                float* slot = smem + ((u64)warp * hb + g) * stride;
#pragma unroll
                for (int i = 0; i < DPL; ++i) {
                    const u32 c = lane * DPL + i;
                    if (c < d) slot[2 + c] = acc[g][i];
                }
                if (lane == 0) {
                    slot[0] = m[g];
                    slot[1] = l[g];
                }
            }
        }
        __syncthreads();
        const bool direct = p.n_splits == 1;
        const u64 n_qh = (u64)p.n_tokens * p.n_heads;
        for (u32 i = threadIdx.x; i < nh * d; i += blockDim.x) {
            const u32 g = i / d, c = i - g * d;
            float mx = KILN_NEG_INF;
            for (u32 w = 0; w < DEC_WARPS; ++w) mx = fmaxf(mx, smem[((u64)w * hb + g) * stride]);
            float num = 0.f, den = 0.f;
            if (mx != KILN_NEG_INF) {
                for (u32 w = 0; w < DEC_WARPS; ++w) {
                    const float* slot = smem + ((u64)w * hb + g) * stride;
                    const float wt = exp2f(slot[0] - mx);
                    num = fmaf(slot[2 + c], wt, num);
                    den = fmaf(slot[1], wt, den);
                }
            }
            if (direct) {
                out[(qh0 + g) * d + c] = num / den;  // one split holds every key: den > 0
            } else {
                part[((qh0 + g) * p.n_splits + split) * d + c] = num;
                if (c == 0) {
                    float* ml = part + n_qh * p.n_splits * d + ((qh0 + g) * p.n_splits + split) * 2;
                    ml[0] = mx;
                    ml[1] = den;
                }
            }
        }
        if (!direct) {
            __threadfence();
            __syncthreads();
            u32* tk = tickets + (u64)t * gridDim.y + blockIdx.y;
            if (threadIdx.x == 0) ticket = atomicAdd(tk, 1u);
            __syncthreads();
            if (ticket == p.n_splits - 1) {
                __threadfence();
                combine_heads(p, part, qh0, nh, out);
                if (threadIdx.x == 0) *tk = 0u;
            }
        }
        __syncthreads();  // shared memory is reused by the next token
    }
}

#define DEC_ENTRY(DPL, MAXH)                                                                     \
    extern "C" __global__ void __launch_bounds__(DEC_THREADS) KV_NAME(attention_decode_l##DPL##_)( \
        AttnParams p, const float* __restrict__ q, const kv_t* __restrict__ k,                   \
        const kv_t* __restrict__ v, float* __restrict__ part, u32* __restrict__ tickets,         \
        float* __restrict__ out) {                                                               \
        attention_decode<DPL, MAXH>(p, q, k, v, part, tickets, out);                             \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(DEC_THREADS)                                    \
        KV_NAME(attention_decode_l##DPL##_at_)(AttnParams p, const i32* __restrict__ pos,         \
                                               const float* __restrict__ q,                      \
                                               const kv_t* __restrict__ k,                       \
                                               const kv_t* __restrict__ v,                       \
                                               float* __restrict__ part,                         \
                                               u32* __restrict__ tickets,                        \
                                               float* __restrict__ out) {                        \
        attn_device_pos(p, pos, true);                                                           \
        attention_decode<DPL, MAXH>(p, q, k, v, part, tickets, out);                             \
    }
DEC_ENTRY(1, MAX_DEC_HEADS)
DEC_ENTRY(2, MAX_DEC_HEADS)
DEC_ENTRY(3, MAX_DEC_HEADS)
DEC_ENTRY(4, MAX_DEC_HEADS)
DEC_ENTRY(5, MAX_DEC_HEADS)
DEC_ENTRY(6, MAX_DEC_HEADS)
DEC_ENTRY(7, MAX_DEC_HEADS)
DEC_ENTRY(8, MAX_DEC_HEADS)
// Head dims 257..512 (e.g. 512): at most 2 heads per block (DEC_WIDE_MAX_HEADS
// in src/attention.rs) keep q and acc in registers.
DEC_ENTRY(16, 2)

// The lane-group decode kernel (head dims 64, 128, 256): attention_decg_d<D>.
#include "attention_dec.cuh"

// ---------------------------------------------------------------------------
// tiled prefill

#define TILE_Q 32
#define TILE_K 32
#define TILE_THREADS 128

// The keys of positions k0 .. k0 + nk of a K or V cache (head at kv_off;
// each position from its row, kv_row) into the shared tile [TILE_K][D + 1]
// as f32, zeros past nk. 16-bit caches load element pairs as one 32-bit
// word when `pairs` (the cache 4-byte aligned; D, rows and kv_off are
// even).
template <int D>
__device__ __forceinline__ void tile_load(const AttnParams& p, float* __restrict__ kv,
                                          const kv_t* __restrict__ src, u32 k0, u32 nk, u64 row,
                                          u64 kv_off, bool pairs) {
    constexpr int DP = D + 1;
    const u32 tid = threadIdx.x, r0 = kv_row(p, k0);
#if KILN_KV != 0
    if (pairs) {
        for (u32 i = tid; i < TILE_K * D / 2; i += TILE_THREADS) {
            const u32 j = i / (D / 2), c = 2 * (i % (D / 2));
            float a = 0.f, b = 0.f;
            if (j < nk) kv_cvt2(*(const u32*)(src + (u64)kv_row_step(p, r0, k0, j) * row + kv_off + c), a, b);
            kv[j * DP + c] = a;
            kv[j * DP + c + 1] = b;
        }
        return;
    }
#endif
    for (u32 i = tid; i < TILE_K * D; i += TILE_THREADS) {
        const u32 j = i / D, c = i % D;
        kv[j * DP + c] = j < nk ? kv_cvt(src[(u64)kv_row_step(p, r0, k0, j) * row + kv_off + c]) : 0.f;
    }
}

// 128 threads: thread (r = tid / 4, cg = tid % 4) owns query row r of the tile,
// scores of keys cg + 4 m (m < 8) of each key tile, and output columns
// cg + 4 i (i < D / 4). The 4 threads of a row are adjacent lanes of one warp.
// q: [n_tokens, n_heads, D]; k, v: [kv_stride, n_kv_heads, D]; out: [n_tokens, n_heads, D]
template <int D>
__device__ __forceinline__ void attention_tiled(const AttnParams& p, const float* __restrict__ q,
                                                const kv_t* __restrict__ k,
                                                const kv_t* __restrict__ v,
                                                float* __restrict__ out) {
    constexpr int DP = D + 1;  // odd row stride: conflict-free column reads
    __shared__ float qs[TILE_Q * DP];
    __shared__ float kv[TILE_K * DP];  // the K tile, then the V tile
    const u32 tid = threadIdx.x, lane = tid % 32;
    const u32 r = tid / 4, cg = tid % 4;
    const u32 h = blockIdx.y, kvh = h / p.group;
    const u32 t0 = blockIdx.x * TILE_Q;
    const u32 nq = min((u32)TILE_Q, p.n_tokens - t0);
    const u64 row = (u64)p.n_kv_heads * D;
    const u64 kv_off = (u64)kvh * D;
    const bool pairs = (((u64)k | (u64)v) & 3) == 0;

    for (u32 i = tid; i < TILE_Q * D; i += TILE_THREADS) {
        const u32 rr = i / D, c = i % D;
        qs[rr * DP + c] = rr < nq ? q[((u64)(t0 + rr) * p.n_heads + h) * D + c] * p.scale_log2 : 0.f;
    }
    // Rows past the last token copy the last token's window (never written).
    const u32 my_last = p.pos0 + t0 + min(r, nq - 1);  // last key this row sees
    const u32 my_first = first_key(p, my_last + 1);     // first key this row sees
    const u32 k_end = p.pos0 + t0 + nq;                 // keys any row sees: [k_start, k_end)
    // Row 0's first key: the rows' windows [my_first, my_last] move up by one
    // per row, so their union is [k_start, k_end) and no tile of it is
    // masked for the whole block.
    const u32 k_start = first_key(p, p.pos0 + t0 + 1);
    float o[D / 4];
#pragma unroll
    for (int i = 0; i < D / 4; ++i) o[i] = 0.f;
    float m = KILN_NEG_INF, l = 0.f;

    for (u32 k0 = k_start; k0 < k_end; k0 += TILE_K) {
        const u32 nk = min((u32)TILE_K, k_end - k0);
        __syncthreads();  // Q is loaded / the previous V tile is consumed
        tile_load<D>(p, kv, k, k0, nk, row, kv_off, pairs);
        __syncthreads();
        float s[TILE_K / 4];
#pragma unroll
        for (int mm = 0; mm < TILE_K / 4; ++mm) s[mm] = 0.f;
        const float* qr = qs + r * DP;
#pragma unroll 4
        for (int c = 0; c < D; ++c) {
            const float qc = qr[c];
#pragma unroll
            for (int mm = 0; mm < TILE_K / 4; ++mm) s[mm] = fmaf(qc, kv[(cg + 4 * mm) * DP + c], s[mm]);
        }
        // Soft cap, then the causal and window mask (also masks the keys
        // past the tile's end: my_last < k_end).
        float mx = KILN_NEG_INF;
#pragma unroll
        for (int mm = 0; mm < TILE_K / 4; ++mm) {
            const u32 key = k0 + cg + 4 * mm;
            s[mm] = cap_score(p, s[mm]);
            if (key > my_last || key < my_first) s[mm] = KILN_NEG_INF;
            mx = fmaxf(mx, s[mm]);
        }
        mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 2));
        // The first tile holds every row's first key (my_first - k_start <= r
        // < 32), so m_new is finite from then on; should a row ever see no
        // key of a tile before its first, exponentiate against 0 instead of
        // -inf so the tile adds exactly 0 (never NaN).
        const float m_new = fmaxf(m, mx);
        const float m_ref = m_new == KILN_NEG_INF ? 0.f : m_new;
        const float alpha = exp2f(m - m_ref);
        float sum = 0.f;
#pragma unroll
        for (int mm = 0; mm < TILE_K / 4; ++mm) {
            s[mm] = exp2f(s[mm] - m_ref);
            sum += s[mm];
        }
        sum += __shfl_xor_sync(FULL_MASK, sum, 1);
        sum += __shfl_xor_sync(FULL_MASK, sum, 2);
        l = l * alpha + sum;
        m = m_new;
#pragma unroll
        for (int i = 0; i < D / 4; ++i) o[i] *= alpha;
        __syncthreads();  // every thread is done with the K tile
        tile_load<D>(p, kv, v, k0, nk, row, kv_off, pairs);
        __syncthreads();
#pragma unroll
        for (int src = 0; src < 4; ++src) {
#pragma unroll
            for (int mm = 0; mm < TILE_K / 4; ++mm) {
                const float pj = __shfl_sync(FULL_MASK, s[mm], (lane & ~3u) | src);
                const float* vr = kv + (src + 4 * mm) * DP + cg;
#pragma unroll
                for (int i = 0; i < D / 4; ++i) o[i] = fmaf(pj, vr[4 * i], o[i]);
            }
        }
    }
    if (r < nq) {
        const float inv = 1.f / l;
        float* dst = out + ((u64)(t0 + r) * p.n_heads + h) * D + cg;
#pragma unroll
        for (int i = 0; i < D / 4; ++i) dst[4 * i] = o[i] * inv;
    }
}

#define KILN_ATTN_TILED(D)                                                                      \
    extern "C" __global__ void __launch_bounds__(TILE_THREADS) KV_NAME(attention_tiled_d##D##_)( \
        AttnParams p, const float* __restrict__ q, const kv_t* __restrict__ k,                  \
        const kv_t* __restrict__ v, float* __restrict__ out) {                                  \
        attention_tiled<D>(p, q, k, v, out);                                                    \
    }
KILN_ATTN_TILED(64)
KILN_ATTN_TILED(80)
KILN_ATTN_TILED(96)
KILN_ATTN_TILED(128)

// ---------------------------------------------------------------------------
// tensor-core prefill (sm_80+): attention_mma_d{64,128}_<kv> (v1) and the
// pipelined attention_mma2_d{64,128}_<kv> (v2)
#include "attention_mma.cuh"
#include "attention_mma2.cuh"
