// rope_multi: multi-section RoPE (MROPE / IMROPE / Vision) from x into out,
// both [seq_len, n_heads, head_dim], f32 or bf16 (reference kiln-core
// ops/rope_multi.rs). The host builds the per-pair pack (kiln-core
// RopeMultiParams::pack): for pair p < n_pairs its axis (0..4, or 255: the
// pair passes through) and inverse frequency (f64). A pair is
// (x[p], x[p + half]); element c of a head is
//   c < n_pairs, axis[c] rotates:              a cos - b sin, (a, b) = (x[c], x[c + half])
//   c >= half, axis[c - half] rotates:         a sin + b cos, (a, b) = (x[c - half], x[c])
//   otherwise:                                 x[c]
// (the firsts [0, n_pairs) and seconds [half, half + n_pairs) never overlap:
// n_pairs <= half). Angle pos[axis * seq_len + t] * inv_freq, its sine and
// cosine and the rotation in f64, like the reference; bf16 results are
// rounded f64 -> f32 -> bf16 (nearest even), as the reference rounds them.
// One thread per output element, grid-stride.
#include "common.cuh"

struct RopeMultiParams {
    u64 seq_len;
    u64 n_heads;
    u64 head_dim;
    u64 half;     // offset of a pair's second element
    u64 n_pairs;  // pairs that may rotate (<= half)
};

#define RM_PASS 255

__device__ __forceinline__ float rm_bf16_to_f32(u16 b) { return __uint_as_float((u32)b << 16); }

// Round to nearest even; NaN stays a quiet NaN (kiln-core f32_to_bf16_bits).
__device__ __forceinline__ u16 rm_f32_to_bf16(float x) {
    const u32 u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x0040u);
    return (u16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

__device__ __forceinline__ float rm_load(const float* x, u64 i) { return x[i]; }
__device__ __forceinline__ float rm_load(const u16* x, u64 i) { return rm_bf16_to_f32(x[i]); }
__device__ __forceinline__ void rm_store(float* o, u64 i, double v) { o[i] = (float)v; }
__device__ __forceinline__ void rm_store(u16* o, u64 i, double v) { o[i] = rm_f32_to_bf16((float)v); }

// pos: [4, seq_len] (axis-major), axis, inv_freq: [n_pairs]
template <typename T>
__device__ __forceinline__ void rope_multi_rows(const RopeMultiParams& p, const i32* __restrict__ pos,
                                                const u8* __restrict__ axis,
                                                const double* __restrict__ inv_freq,
                                                const T* __restrict__ x, T* __restrict__ out) {
    const u64 n = p.seq_len * p.n_heads * p.head_dim;
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const u64 c = i % p.head_dim;
        const u64 head = i - c;                  // element 0 of this head
        const u64 t = i / (p.n_heads * p.head_dim);  // token
        const bool first = c < p.n_pairs && axis[c] != RM_PASS;
        const bool second = !first && c >= p.half && c - p.half < p.n_pairs && axis[c - p.half] != RM_PASS;
        if (!first && !second) {
            out[i] = x[i];
            continue;
        }
        const u64 pair = first ? c : c - p.half;
        const double theta = (double)pos[(u64)axis[pair] * p.seq_len + t] * inv_freq[pair];
        double sn, cs;
        sincos(theta, &sn, &cs);
        const double a = rm_load(x, head + pair), b = rm_load(x, head + pair + p.half);
        rm_store(out, i, first ? a * cs - b * sn : a * sn + b * cs);
    }
}

extern "C" __global__ void rope_multi_f32(RopeMultiParams p, const i32* __restrict__ pos,
                                          const u8* __restrict__ axis,
                                          const double* __restrict__ inv_freq,
                                          const float* __restrict__ x, float* __restrict__ out) {
    rope_multi_rows<float>(p, pos, axis, inv_freq, x, out);
}

// x, out: bf16 bits
extern "C" __global__ void rope_multi_bf16(RopeMultiParams p, const i32* __restrict__ pos,
                                           const u8* __restrict__ axis,
                                           const double* __restrict__ inv_freq,
                                           const u16* __restrict__ x, u16* __restrict__ out) {
    rope_multi_rows<u16>(p, pos, axis, inv_freq, x, out);
}
