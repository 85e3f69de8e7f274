// add: out = a + b over n f32 elements.
#include "common.cuh"

struct AddParams { u64 n; };

// a, b, out: [n]
extern "C" __global__ void add_f32(AddParams p, const float* __restrict__ a,
                                   const float* __restrict__ b, float* __restrict__ out) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += (u64)gridDim.x * blockDim.x) {
        out[i] = a[i] + b[i];
    }
}
