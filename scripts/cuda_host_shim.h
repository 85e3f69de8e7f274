// cuda_host_shim.h: what the scripts/check-cuda-*.py checkers need to
// compile CUDA device code from crates/kiln-cuda/kernels/ as host C++ (g++,
// C++17; KILN_SHIM_BLOCK_SYNC needs C++20) and run it on the CPU: the CUDA
// qualifiers as no-ops, threadIdx / blockIdx / blockDim / gridDim, the vector
// types, the bit-cast and byte intrinsics, and host versions of common.cuh's
// inline-PTX f16 / bf16 conversions.
//
// The checkers write their generated source with `#include
// "cuda_host_shim.h"` and compile it with `-I scripts`. Their own #includes go
// before it; what only one checker needs (fast-math overrides, its own
// shuffles, its typedefs) stays in that checker.
//
// Opt-in parts (#define before the #include):
//   KILN_SHIM_BLOCK_SYNC  one std::thread per CUDA thread: block_bar and
//                         warp_bars (set by launch()), __syncthreads, and
//                         launch(), which runs a grid one block at a time.
//   KILN_SHIM_WARP_SHFL   (with KILN_SHIM_BLOCK_SYNC) the f32 __shfl_xor_sync,
//                         exchanged through memory between two warp barriers.
//   KILN_SHIM_SLURP       slurp<T>(path): a whole file as a vector of T.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
#ifdef KILN_SHIM_BLOCK_SYNC
#include <barrier>
#include <memory>
#include <thread>
#endif

#define __device__
#define __host__
#define __global__
#define __forceinline__ inline
#define __restrict__
#define __shared__ static
#define __launch_bounds__(...)
// Not alignas: `__shared__ __align__(16) u16 ks[...]` puts it after `static`.
#define __align__(n) __attribute__((aligned(n)))

struct Idx { unsigned x = 0, y = 0, z = 0; };
thread_local Idx threadIdx, blockIdx;
Idx blockDim, gridDim;

struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
static inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return {a, b, c, d}; }
static inline uint2 make_uint2(unsigned a, unsigned b) { return {a, b}; }
static inline float2 make_float2(float a, float b) { return {a, b}; }

// The kernels call min / max on integers only (where std's and an
// `a < b ? a : b` template agree).
using std::min;
using std::max;

static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
static inline float __int_as_float(int u) { float f; memcpy(&f, &u, 4); return f; }
static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    const unsigned long long in = ((unsigned long long)y << 32) | x;
    unsigned r = 0;
    for (int n = 0; n < 4; n++) r |= (unsigned)((in >> (8 * ((s >> (4 * n)) & 7))) & 0xFF) << (8 * n);
    return r;
}

// common.cuh's f16 / bf16 conversions (inline PTX there).
static inline float kiln_f16_to_f32(unsigned short h) { _Float16 f; memcpy(&f, &h, 2); return (float)f; }
static inline float kiln_bf16_to_f32(unsigned short h) { return __uint_as_float(((unsigned)h) << 16); }
static inline unsigned short kiln_f32_to_f16(float v) {
    _Float16 f = (_Float16)v;
    unsigned short h;
    memcpy(&h, &f, 2);
    return h;
}

#ifdef KILN_SHIM_BLOCK_SYNC
static std::barrier<>* block_bar;
static std::vector<std::unique_ptr<std::barrier<>>> warp_bars;
static inline void __syncthreads() { block_bar->arrive_and_wait(); }

#ifdef KILN_SHIM_WARP_SHFL
static float shfl_buf[32][32];
static inline float __shfl_xor_sync(unsigned, float v, int o) {
    const unsigned w = threadIdx.x / 32, l = threadIdx.x % 32;
    shfl_buf[w][l] = v;
    warp_bars[w]->arrive_and_wait();
    const float r = shfl_buf[w][l ^ o];
    warp_bars[w]->arrive_and_wait();
    return r;
}
#endif

// Run `body` for every block of a gx x gy grid as `threads` std::threads.
// Blocks run one at a time, in order, or with `reverse` last row first (so
// a block writing rows that belong to another is caught in either order).
template <class F>
void launch(unsigned gx, unsigned gy, unsigned threads, F body, bool reverse = false) {
    blockDim.x = threads;
    gridDim.x = gx;
    gridDim.y = gy;
    for (unsigned yy = 0; yy < gy; yy++)
        for (unsigned bx = 0; bx < gx; bx++) {
            const unsigned by = reverse ? gy - 1 - yy : yy;
            std::barrier<> bar(threads);
            block_bar = &bar;
            warp_bars.clear();
            for (unsigned w = 0; w < threads / 32; w++) warp_bars.emplace_back(new std::barrier<>(32));
            std::vector<std::thread> th;
            for (unsigned t = 0; t < threads; t++)
                th.emplace_back([&, t] {
                    threadIdx.x = t;
                    blockIdx.x = bx;
                    blockIdx.y = by;
                    body();
                });
            for (auto& t : th) t.join();
        }
}
#endif

#ifdef KILN_SHIM_SLURP
template <class T>
static std::vector<T> slurp(const std::string& path) {
    std::vector<T> v;
    FILE* f = fopen(path.c_str(), "rb");
    if (!f) return v;
    T x;
    while (fread(&x, sizeof x, 1, f) == 1) v.push_back(x);
    fclose(f);
    return v;
}
#endif
