// kiln common CUDA definitions: fixed-width types without system headers and
// the GGML block layouts, mirrored from kiln-core/src/quant (static_asserts
// keep the two in step).
#pragma once

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef int i32;
typedef unsigned int u32;
typedef long long i64;
typedef unsigned long long u64;

#define QK 32

struct block_q4_0 { u16 d; u8 qs[16]; };
struct block_q4_1 { u16 d; u16 m; u8 qs[16]; };
struct block_q8_0 { u16 d; i8 qs[32]; };
struct block_q8_1 { u16 d; u16 s; i8 qs[32]; };
static_assert(sizeof(block_q4_0) == 18, "block_q4_0 size");
static_assert(sizeof(block_q4_1) == 20, "block_q4_1 size");
static_assert(sizeof(block_q8_0) == 34, "block_q8_0 size");
static_assert(sizeof(block_q8_1) == 36, "block_q8_1 size");

// 32-element blocks with a fifth bit / a non-linear grid (kiln-core quant/q5.rs, iq4.rs).
struct block_q5_0 { u16 d; u8 qh[4]; u8 qs[16]; };
struct block_q5_1 { u16 d; u16 m; u8 qh[4]; u8 qs[16]; };
struct block_iq4_nl { u16 d; u8 qs[16]; };
static_assert(sizeof(block_q5_0) == 22, "block_q5_0 size");
static_assert(sizeof(block_q5_1) == 24, "block_q5_1 size");
static_assert(sizeof(block_iq4_nl) == 18, "block_iq4_nl size");

// 256-element super-blocks (kiln-core quant/k_quants.rs, iq4.rs).
#define QK_K 256
struct block_q2_K { u8 scales[16]; u8 qs[64]; u16 d; u16 dmin; };
struct block_q3_K { u8 hmask[32]; u8 qs[64]; u8 scales[12]; u16 d; };
struct block_q4_K { u16 d; u16 dmin; u8 scales[12]; u8 qs[128]; };
struct block_q5_K { u16 d; u16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]; };
struct block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; u16 d; };
struct block_iq4_xs { u16 d; u16 scales_h; u8 scales_l[4]; u8 qs[128]; };
static_assert(sizeof(block_q2_K) == 84, "block_q2_K size");
static_assert(sizeof(block_q3_K) == 110, "block_q3_K size");
static_assert(sizeof(block_q4_K) == 144, "block_q4_K size");
static_assert(sizeof(block_q5_K) == 176, "block_q5_K size");
static_assert(sizeof(block_q6_K) == 210, "block_q6_K size");
static_assert(sizeof(block_iq4_xs) == 136, "block_iq4_xs size");
// Lattice i-quants (kiln-core quant/iq23.rs; decoders in decode_iq.cuh).
struct block_iq2_xxs { u16 d; u16 qs[32]; };
struct block_iq2_xs { u16 d; u16 qs[32]; u8 scales[8]; };
struct block_iq3_xxs { u16 d; u8 qs[96]; };
struct block_iq3_s { u16 d; u8 qs[64]; u8 qh[8]; u8 signs[32]; u8 scales[4]; };
static_assert(sizeof(block_iq2_xxs) == 66, "block_iq2_xxs size");
static_assert(sizeof(block_iq2_xs) == 74, "block_iq2_xs size");
static_assert(sizeof(block_iq3_xxs) == 98, "block_iq3_xxs size");
static_assert(sizeof(block_iq3_s) == 110, "block_iq3_s size");
// Q8_K (kiln-core quant/q8k.rs): f32 scale, i8 codes, sums of 16 codes.
struct block_q8_K { float d; i8 qs[256]; short bsums[16]; };
static_assert(sizeof(block_q8_K) == 292, "block_q8_K size");

// f16 / bf16 bits -> f32 without cuda_fp16.h.
__device__ __forceinline__ float kiln_f16_to_f32(u16 h) {
    float f;
    asm("{ .reg .b16 t; mov.b16 t, %1; cvt.f32.f16 %0, t; }" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ float kiln_bf16_to_f32(u16 h) {
    return __uint_as_float(((u32)h) << 16);
}
// f32 -> f16 bits, round to nearest even (overflow to inf, subnormals kept;
// kiln-core f32_to_f16_bits).
__device__ __forceinline__ u16 kiln_f32_to_f16(float f) {
    u16 h;
    asm("{ .reg .b16 t; cvt.rn.f16.f32 t, %1; mov.b16 %0, t; }" : "=h"(h) : "f"(f));
    return h;
}
// a * b rounded to nearest even, subnormals kept: kernels compile with
// --use_fast_math, which makes a C++ `*` (and __fmul_rn) mul.rn.ftz.f32,
// flushing subnormal inputs and products to zero where the reference keeps
// them. Inline PTX, as the conversions above (host checkers strip them).
__device__ __forceinline__ float kiln_mul_rn(float a, float b) {
    float r;
    asm("mul.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
}
// f32 -> bf16 bits as kiln-core's f32_to_bf16_bits (ggml): NaN keeps its
// top bits and is made quiet, everything else rounds to nearest even on
// the raw bits.
__device__ __forceinline__ u16 kiln_f32_to_bf16(float x) {
    const u32 u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x0040u);
    return (u16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// Programmatic dependent launch (Hopper+; no-ops elsewhere and for kernels
// launched without the attribute). A kernel launched with it may start while
// the previous kernel on the stream still runs: before kiln_grid_wait() it
// may only touch what no earlier kernel writes or reads (weights, params);
// after it, every earlier kernel has finished and its writes are visible.
// kiln_grid_launch_dependents() lets the next such kernel start early.
__device__ __forceinline__ void kiln_grid_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void kiln_grid_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
// The entry of a kernel that touches nothing before the previous kernel
// finishes: let the next kernel launch (its CTAs then wait in their own
// kiln_grid_wait), then wait. What PDL buys such a kernel is the launch:
// its CTAs are resident when the previous kernel drains.
__device__ __forceinline__ void kiln_pdl_enter() {
    kiln_grid_launch_dependents();
    kiln_grid_wait();
}

// Sum of `v` over the block (blockDim.x a multiple of 32, at most 1024),
// returned to every thread. `sh` holds 32 floats, reusable once this returns.
__device__ __forceinline__ float kiln_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float kiln_block_sum(float v, float* sh) {
    const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = kiln_warp_sum(v);
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < (blockDim.x >> 5) ? sh[lane] : 0.0f;
    v = kiln_warp_sum(v);
    __syncthreads();
    return v;
}

// silu(g) = g / (1 + exp(-g)) as every SiLU kernel computes it (silu_mul,
// the fused decode gate/up, the gated expert mat-vec). exp(-g) overflows
// to +inf for g < -88: __frcp_rn(inf) = 0 gives -0 as the reference does;
// g > 88 gives exp(-g) = 0 and silu = g.
__device__ __forceinline__ float kiln_silu(float g) { return g * __frcp_rn(1.0f + __expf(-g)); }
