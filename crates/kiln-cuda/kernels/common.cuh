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

// f16 / bf16 bits -> f32 without cuda_fp16.h.
__device__ __forceinline__ float kiln_f16_to_f32(u16 h) {
    float f;
    asm("{ .reg .b16 t; mov.b16 t, %1; cvt.f32.f16 %0, t; }" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ float kiln_bf16_to_f32(u16 h) {
    return __uint_as_float(((u32)h) << 16);
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
