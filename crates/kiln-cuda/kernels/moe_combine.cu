// moe_combine: out[t, c] = residual[t, c] + sum_s weights[t * top_k + s] *
// y[t * top_k + s, c] (reference kiln-core ops/moe_combine.rs, which sums in
// f64; here f32, slots in order). Grid-stride over the n_tokens * dim
// outputs; each thread reads its column of the token's top_k rows.
#include "common.cuh"

struct MoeCombineParams {
    u64 n_tokens;
    u64 top_k;
    u64 dim;
};

// y: [n_tokens * top_k, dim]; weights: [n_tokens * top_k];
// residual, out: [n_tokens, dim].
extern "C" __global__ void moe_combine_f32(MoeCombineParams p, const float* __restrict__ y,
                                           const float* __restrict__ weights,
                                           const float* __restrict__ residual,
                                           float* __restrict__ out) {
    kiln_pdl_enter();  // PDL: everything it reads or writes is the previous kernels'
    const u64 total = p.n_tokens * p.dim;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (u64)gridDim.x * blockDim.x) {
        const u64 t = i / p.dim, c = i - t * p.dim;
        float acc = residual[i];
        for (u64 s = 0; s < p.top_k; s++) {
            const u64 r = t * p.top_k + s;
            acc = fmaf(weights[r], y[r * p.dim + c], acc);
        }
        out[i] = acc;
    }
}
