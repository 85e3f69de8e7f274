// add_rows: x[r, c] += bias[c] in place over rows x dim f32 values
// (reference kiln-core ops/add_rows.rs; Qwen2's q/k/v biases): one f32 add
// per element, bit-exact with the reference. (blockIdx.x, threadIdx.x)
// stride over columns, blockIdx.y over rows, so no division per element and
// each thread reads its bias value once per row.
#include "common.cuh"

struct AddRowsParams {
    u64 rows;
    u64 dim;
};

// x: [rows, dim] (in place), bias: [dim]
extern "C" __global__ void add_rows_f32(AddRowsParams p, float* __restrict__ x,
                                        const float* __restrict__ bias) {
    for (u64 r = blockIdx.y; r < p.rows; r += gridDim.y) {
        float* row = x + r * p.dim;
        for (u64 c = (u64)blockIdx.x * blockDim.x + threadIdx.x; c < p.dim;
             c += (u64)gridDim.x * blockDim.x) {
            row[c] += bias[c];
        }
    }
}
