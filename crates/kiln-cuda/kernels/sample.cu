// sample: one token id from a row of logits (reference and spec: kiln-core
// ops/sample.rs; this follows its stages in order). One block; x: [n],
// pen_ids: [n_pen], work: [n] scratch (written only with a penalty),
// out[0] = the id, or 0xffffffff when no logit is usable; with
// SAMPLE_THRESHOLD also out[1] = the kept set's threshold key (kiln-core
// `Sampled::threshold`, for the parity tests).
//
// Exactness: every threshold is a key (the value's order-preserving bits)
// found by MSB-first radix select over 8-bit digits, counting with integer
// histograms; probabilities are integer weights from kiln-core's `weight`,
// evaluated here with the same correctly rounded f32 operations written as
// inline PTX (the registry compiles with --use_fast_math, whose .ftz and
// contraction would change bits); every sum is a u64 sum. So the id is the
// reference's for the same draw u.
#include "common.cuh"

struct SampleParams {
    u64 n;              // logits
    u64 n_pen;          // penalty ids
    u64 top_k;          // 0 = off; off too when >= the usable count
    double u;           // the draw, in [0, 1)
    double top_p;       // >= 1 = off
    float temperature;  // 0 = argmax
    float ln_min_p;     // min_p.ln() from the host, used with SAMPLE_MIN_P
    float penalty;      // used with SAMPLE_PENALIZE
    u32 flags;
};

#define SAMPLE_PENALIZE 1u
#define SAMPLE_MIN_P 2u
#define SAMPLE_THRESHOLD 4u
#define SAMPLE_NO_TOKEN 0xffffffffu
#define SAMPLE_KEY_INF 0xff800000u
#define SAMPLE_FULL 0xffffffffu

// ---- IEEE operations, immune to --use_fast_math (no .ftz, no fusion) ----
__device__ __forceinline__ float smp_add(float a, float b) { float r; asm("add.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b)); return r; }
__device__ __forceinline__ float smp_sub(float a, float b) { float r; asm("sub.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b)); return r; }
__device__ __forceinline__ float smp_mul(float a, float b) { float r; asm("mul.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b)); return r; }
__device__ __forceinline__ float smp_div(float a, float b) { float r; asm("div.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b)); return r; }
__device__ __forceinline__ float smp_floor(float a) { float r; asm("cvt.rmi.f32.f32 %0, %1;" : "=f"(r) : "f"(a)); return r; }
__device__ __forceinline__ int smp_f2i(float a) { int r; asm("cvt.rzi.s32.f32 %0, %1;" : "=r"(r) : "f"(a)); return r; }
// Truncating and saturating, like Rust's `as u32`.
__device__ __forceinline__ u32 smp_f2u(float a) { u32 r; asm("cvt.rzi.u32.f32 %0, %1;" : "=r"(r) : "f"(a)); return r; }
__device__ __forceinline__ double smp_dmul(double a, double b) { double r; asm("mul.rn.f64 %0, %1, %2;" : "=d"(r) : "d"(a), "d"(b)); return r; }
__device__ __forceinline__ double smp_dfloor(double a) { double r; asm("cvt.rmi.f64.f64 %0, %1;" : "=d"(r) : "d"(a)); return r; }
__device__ __forceinline__ double smp_dceil(double a) { double r; asm("cvt.rpi.f64.f64 %0, %1;" : "=d"(r) : "d"(a)); return r; }
__device__ __forceinline__ double smp_u2d(u64 a) { double r; asm("cvt.rn.f64.u64 %0, %1;" : "=d"(r) : "l"(a)); return r; }
__device__ __forceinline__ u64 smp_d2u(double a) { u64 r; asm("cvt.rzi.u64.f64 %0, %1;" : "=l"(r) : "d"(a)); return r; }

// kiln-core `key`: 0 for NaN and -inf, else order-preserving bits (-0 == +0).
__device__ __forceinline__ u32 smp_key(float v) {
    u32 b = __float_as_uint(v);
    const u32 a = b & 0x7fffffffu;
    if (a > 0x7f800000u || b == 0xff800000u) return 0;
    if (a == 0) b = 0;
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// kiln-core `key_value`.
__device__ __forceinline__ float smp_key_value(u32 k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// kiln-core `penalize`; "v > 0" read from the bits (a flushed compare would
// call a positive subnormal 0). A NaN stays NaN on either branch.
__device__ __forceinline__ float smp_penalize(float v, float pen) {
    const u32 b = __float_as_uint(v);
    return ((b >> 31) == 0 && b != 0) ? smp_div(v, pen) : smp_mul(v, pen);
}

// kiln-core `weight`: floor(2^31 e^x) for x <= 0, step for step.
__device__ __forceinline__ u32 smp_weight(float x) {
    if (!(x > -22.0f)) return 0;
    const float t = smp_mul(x, __uint_as_float(0x3fb8aa3bu));
    const float n = smp_floor(smp_add(t, 0.5f));
    const float r = smp_sub(smp_sub(x, smp_mul(n, __uint_as_float(0x3f317200u))), smp_mul(n, __uint_as_float(0x35bfbe8eu)));
    float p = __uint_as_float(0x39500d01u);
    p = smp_add(smp_mul(p, r), __uint_as_float(0x3ab60b61u));
    p = smp_add(smp_mul(p, r), __uint_as_float(0x3c088889u));
    p = smp_add(smp_mul(p, r), __uint_as_float(0x3d2aaaabu));
    p = smp_add(smp_mul(p, r), __uint_as_float(0x3e2aaaabu));
    p = smp_add(smp_mul(p, r), __uint_as_float(0x3f000000u));
    p = smp_add(smp_mul(p, r), 1.0f);
    p = smp_add(smp_mul(p, r), 1.0f);
    const float scale = __int_as_float((smp_f2i(n) + 127) << 23);
    return smp_f2u(smp_mul(smp_mul(p, scale), 2147483648.0f));
}

// kiln-core `draw_target` and `top_p_target`.
__device__ __forceinline__ u64 smp_draw_target(double u, u64 total) {
    const u64 t = smp_d2u(smp_dfloor(smp_dmul(u, smp_u2d(total))));
    return t < total - 1 ? t : total - 1;
}
__device__ __forceinline__ u64 smp_top_p_target(double top_p, u64 z) {
    const u64 t = smp_d2u(smp_dceil(smp_dmul(top_p, smp_u2d(z))));
    return t < 1 ? 1 : (t > z ? z : t);
}

// ---- block helpers (blockDim.x a multiple of 32, at most 1024) ----
// Every thread gets the result; `sh` holds 32 words and may be reused after.
__device__ __forceinline__ u64 smp_block_sum(u64 v, u64* sh) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(SAMPLE_FULL, v, o);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
    __syncthreads();
    u64 r = 0;
    for (u32 w = 0; w < (blockDim.x >> 5); ++w) r += sh[w];
    return r;
}
__device__ __forceinline__ u32 smp_block_max(u32 v, u64* sh) {
    for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(SAMPLE_FULL, v, o));
    __syncthreads();
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
    __syncthreads();
    u32 r = 0;
    for (u32 w = 0; w < (blockDim.x >> 5); ++w) r = max(r, (u32)sh[w]);
    return r;
}

// The sum of `val` (< 2^31) over the lanes in `peers`: the calling lane's
// group from __match_any_sync (every lane of the warp calls, each with its
// own group's mask).
__device__ __forceinline__ u64 smp_peer_sum(u32 peers, u32 val) {
#if __CUDA_ARCH__ >= 800
    // Two 16-bit halves: at most 32 * 2^16 each, no u32 overflow.
    const u32 lo = __reduce_add_sync(peers, val & 0xffffu);
    const u32 hi = __reduce_add_sync(peers, val >> 16);
    return ((u64)hi << 16) + lo;
#else
    u64 s = 0;
    for (u32 m = peers; m; m &= m - 1) s += __shfl_sync(peers, val, __ffs(m) - 1);
    return s;
#endif
}

// The largest key K with F(K) >= target, where F(K) sums f(i) (< 2^31,
// MASS) or 1 (count) over the elements i with a usable key >= max(set_lo,
// K). Requires F(set_lo) >= target >= 1. Four passes of 8-bit digits, most
// significant first; a pass histograms the digit of the elements whose
// higher digits equal the prefix found so far (warp-aggregated shared
// atomics: lanes with the same digit add once), then warp 0 finds the bin
// where the mass from the top reaches the target.
template <bool MASS, class F>
__device__ u32 smp_select(const float* v, u64 n, u32 set_lo, u64 target, F f, u64* hist, u64* sh) {
    const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    u32 prefix = 0;
    u64 above = 0;  // F of the keys above the prefix's range (< target)
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (u32 b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
        __syncthreads();
        const u32 high = shift == 24 ? 0u : (0xffffffffu << (shift + 8));
        for (u64 i0 = threadIdx.x - lane; i0 < n; i0 += blockDim.x) {
            const u64 i = i0 + lane;
            u32 digit = 256;  // not in this pass
            u32 val = 0;
            if (i < n) {
                const u32 k = smp_key(v[i]);
                if (k != 0 && k >= set_lo && (k & high) == prefix) {
                    digit = (k >> shift) & 255u;
                    val = MASS ? f(i) : 1u;
                }
            }
            if (!__any_sync(SAMPLE_FULL, digit < 256)) continue;
            // Every lane takes part (the idle ones as one group of their own).
            const u32 peers = __match_any_sync(SAMPLE_FULL, digit);
            const u64 s = MASS ? smp_peer_sum(peers, val) : (u64)__popc(peers);
            if (digit < 256 && lane == (u32)(__ffs(peers) - 1)) atomicAdd(&hist[digit], s);
        }
        __syncthreads();
        if (warp == 0) {
            // Lane l holds bins 8l .. 8l+7; suf = their sum and all above.
            u64 b[8], s = 0;
            for (int j = 0; j < 8; ++j) {
                b[j] = hist[8 * lane + j];
                s += b[j];
            }
            u64 suf = s;
            for (int o = 1; o < 32; o <<= 1) {
                const u64 y = __shfl_down_sync(SAMPLE_FULL, suf, o);
                if (lane + o < 32) suf += y;
            }
            // Lane 0 always qualifies (F over the prefix's range >= target).
            const u32 ok = __ballot_sync(SAMPLE_FULL, above + suf >= target);
            if (lane == 31u - __clz(ok)) {
                u64 acc = above + suf - s;
                int d = 7;
                for (; d > 0; --d) {
                    if (acc + b[d] >= target) break;
                    acc += b[d];
                }
                sh[0] = prefix | ((u32)(8 * lane + d) << shift);
                sh[1] = acc;
            }
        }
        __syncthreads();
        prefix = (u32)sh[0];
        above = sh[1];
        __syncthreads();
    }
    return prefix;
}

// Write to out[0] the first id, in ascending order, at which the running
// sum of w(i) exceeds the target: draw_target(u, total), or 0 when `first`.
// Warp w owns a contiguous range of ids; the warp holding the crossing walks
// its range 32 ids at a time with a warp-wide inclusive scan.
template <class W>
__device__ void smp_draw(u64 n, W w, double u, bool first, u32* out, u64* sh) {
    const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const u64 span = ((n + nw - 1) / nw + 31) / 32 * 32;
    const u64 lo = (u64)warp * span, hi = lo + span < n ? lo + span : n;
    u64 s = 0;
    for (u64 i = lo + lane; i < hi; i += 32) s += w(i);
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(SAMPLE_FULL, s, o);
    __syncthreads();
    if (lane == 0) sh[warp] = s;
    __syncthreads();
    u64 before = 0, total = 0;
    for (u32 k = 0; k < nw; ++k) {
        if (k < warp) before += sh[k];
        total += sh[k];
    }
    if (total == 0) {  // unreachable (the maximum always weighs > 0)
        if (threadIdx.x == 0) out[0] = SAMPLE_NO_TOKEN;
        return;
    }
    const u64 target = first ? 0 : smp_draw_target(u, total);
    if (!(before <= target && target < before + s)) return;
    u64 cum = before;
    for (u64 i0 = lo; i0 < hi; i0 += 32) {
        const u64 i = i0 + lane;
        const u64 wi = i < hi ? w(i) : 0;
        u64 inc = wi;
        for (int o = 1; o < 32; o <<= 1) {
            const u64 y = __shfl_up_sync(SAMPLE_FULL, inc, o);
            if (lane >= (u32)o) inc += y;
        }
        const u64 step = __shfl_sync(SAMPLE_FULL, inc, 31);
        if (cum + step > target) {
            // The first lane past the target has weight > 0: a kept id.
            const u32 past = __ballot_sync(SAMPLE_FULL, cum + inc > target);
            if (lane == (u32)(__ffs(past) - 1)) out[0] = (u32)i;
            return;
        }
        cum += step;
    }
}

// At most 1024 threads (the launcher's row_threads): registers capped to fit.
extern "C" __global__ void __launch_bounds__(1024) sample_f32(SampleParams p, const float* __restrict__ x, const u32* __restrict__ pen_ids,
                                      float* work, u32* __restrict__ out) {
    __shared__ u64 hist[256];
    __shared__ u64 sh[32];
    const u64 n = p.n;
    // Temperature 0 read from the bits: a flushed compare would call a
    // subnormal temperature 0.
    const bool argmax = (__float_as_uint(p.temperature) & 0x7fffffffu) == 0;

    // 1. Penalty: a copy of the row with the distinct in-range ids penalized
    // (a repeated id writes the same value, computed from x).
    const float* v = x;
    if (p.flags & SAMPLE_PENALIZE) {
        for (u64 i = threadIdx.x; i < n; i += blockDim.x) work[i] = x[i];
        __syncthreads();
        for (u64 j = threadIdx.x; j < p.n_pen; j += blockDim.x) {
            const u32 id = pen_ids[j];
            if (id < n) work[id] = smp_penalize(x[id], p.penalty);
        }
        __syncthreads();  // also makes the global writes visible to the block
        v = work;
    }

    // 2. The largest key and the usable count.
    u32 mk = 0;
    u64 usable = 0;
    for (u64 i = threadIdx.x; i < n; i += blockDim.x) {
        const u32 k = smp_key(v[i]);
        mk = max(mk, k);
        usable += k != 0;
    }
    const u32 max_key = smp_block_max(mk, sh);
    usable = smp_block_sum(usable, sh);
    const bool report = (p.flags & SAMPLE_THRESHOLD) != 0;
    if (max_key == 0) {
        if (threadIdx.x == 0) {
            out[0] = SAMPLE_NO_TOKEN;
            if (report) out[1] = 0;
        }
        return;
    }

    // 3. +inf tokens equally likely; temperature 0: the first maximum.
    if (max_key == SAMPLE_KEY_INF || argmax) {
        if (report && threadIdx.x == 0) out[1] = max_key;
        smp_draw(n, [&](u64 i) -> u64 { return smp_key(v[i]) == max_key ? 1 : 0; }, p.u, argmax, out, sh);
        return;
    }
    const float m = smp_key_value(max_key);
    const auto w1 = [&](u64 i) -> u32 { return smp_weight(smp_sub(v[i], m)); };

    // 4. Thresholds: top-k (count select), min-p, top-p (mass select).
    u32 k_top = 0;
    if (p.top_k > 0 && p.top_k < usable) k_top = smp_select<false>(v, n, 1u, p.top_k, w1, hist, sh);
    const u32 k_min = (p.flags & SAMPLE_MIN_P) ? smp_key(smp_add(m, p.ln_min_p)) : 0u;
    const u32 k_cut = max(max(k_top, k_min), 1u);
    u32 lo = k_cut;
    if (p.top_p < 1.0) {
        // Z over the top-k survivors; the mass of those at or above k_cut.
        u64 z = 0, mc = 0;
        for (u64 i = threadIdx.x; i < n; i += blockDim.x) {
            const u32 k = smp_key(v[i]);
            if (k != 0 && k >= k_top) {
                const u64 w = w1(i);
                z += w;
                if (k >= k_cut) mc += w;
            }
        }
        z = smp_block_sum(z, sh);
        mc = smp_block_sum(mc, sh);
        const u64 target = smp_top_p_target(p.top_p, z);
        // Below k_cut the nucleus threshold cuts nothing more.
        if (mc >= target) lo = max(lo, smp_select<true>(v, n, k_cut, target, w1, hist, sh));
    }

    // 5. Temperature and the draw over the kept tokens.
    if (report && threadIdx.x == 0) out[1] = lo;
    const float temp = p.temperature;
    smp_draw(
        n,
        [&](u64 i) -> u64 {
            const float vi = v[i];
            const u32 k = smp_key(vi);
            return k >= lo ? smp_weight(smp_div(smp_sub(vi, m), temp)) : 0;
        },
        p.u, false, out, sh);
}
