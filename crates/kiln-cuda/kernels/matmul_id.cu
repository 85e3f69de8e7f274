// matmul_id: the expert-routed mat-vec of mixture-of-experts layers
// (reference kiln-core ops/matmul_id.rs): for output row r = t * top_k + s,
// e = ids[r], out[r, j] = dot(w_e[j], x_row(r)), x_row(r) = r (x per slot)
// or r / top_k (x per token); expert e's rows start e * expert_stride bytes
// into w.
//
// mul_mv_id_<w>_f32: every output row is its own mat-vec (M = 1) with the
// dense mat-vec's tiling and block decoders (matvec.cuh, decode_kq.cuh): one
// CTA = 4 warps on pairs of weight rows of one expert, blockIdx.x the pair
// group, blockIdx.y the output row (r0 + blockIdx.y: the host launches
// chunks of at most 65535 rows). An id >= n_experts, which the host did not
// check, turns the CTA's part of its row into NaN and reads no weights.
#include "common.cuh"
#include "matvec.cuh"
#include "decode_kq.cuh"

struct MatmulIdParams {
    u64 n;              // rows of each expert matrix = columns of out
    u64 k;              // row length
    u64 row_bytes;      // bytes of one weight row
    u64 kw;             // warps per row pair (quantized 1, 2 or 4; float 4)
    u64 expert_stride;  // bytes from one expert matrix to the next
    u64 n_experts;
    u64 top_k;
    u64 rows;           // n_tokens * top_k
    u64 r0;             // first output row of this launch
    u64 x_per_slot;     // 1: x has one row per output row, 0: one per token
};

// Column j of out that thread t stores (t < pairs * MV_ROWS), as in mv_reduce's layout.
__device__ __forceinline__ u64 mv_id_col(int pairs, int t) {
    return ((u64)blockIdx.x * pairs + t / MV_ROWS) * MV_ROWS + (u64)(t % MV_ROWS);
}

// One output row: expert and x row from ids, the accumulation loop `acc_fn`
// (a matvec.cuh mv_*_acc over one expert matrix), reduce, store. Every test
// below is block-uniform, so the early returns keep __syncthreads safe.
template <class AccFn>
__device__ __forceinline__ void mv_id(const MatmulIdParams& p, const u8* __restrict__ w,
                                      const float* __restrict__ x, const u32* __restrict__ ids,
                                      float* __restrict__ out, int kw, AccFn acc_fn) {
    const u64 r = p.r0 + blockIdx.y;
    if (r >= p.rows) return;
    const int t = threadIdx.x, pairs = MV_WARPS / kw;
    float* orow = out + r * p.n;
    const u64 e = ids[r];
    if (e >= p.n_experts) {
        if (t < pairs * MV_ROWS) {
            const u64 j = mv_id_col(pairs, t);
            if (j < p.n) orow[j] = __int_as_float(0x7fc00000);
        }
        return;
    }
    const u8* we = w + e * p.expert_stride;
    const float* xrow = x + (p.x_per_slot ? r : r / p.top_k) * p.k;
    const MvShape sh = {p.n, p.k, p.row_bytes, kw, false, 0};
    float acc[1][MV_ROWS];
    auto pro = [&](const float* (&xr)[1]) { xr[0] = xrow; };
    acc_fn(sh, we, pro, acc);
    __shared__ float part[MV_WARPS][MV_ROWS];
    mv_reduce<1>(acc, kw, part);
    if (t < pairs * MV_ROWS) {
        const u64 j = mv_id_col(pairs, t);
        if (j < p.n) orow[j] = part[t / MV_ROWS][t % MV_ROWS];
    }
}

// The accumulation loops of matvec.cuh as functors (the template argument
// of mv_id): quantized 32-element blocks, sub-block formats, floats.
template <class Q>
struct IdQuant {
    template <class Pro>
    __device__ void operator()(const MvShape& sh, const u8* w, Pro pro,
                               float (&acc)[1][MV_ROWS]) const {
        mv_quant_acc<Q, 1>(sh, w, pro, acc);
    }
};
template <class Q>
struct IdSub {
    template <class Pro>
    __device__ void operator()(const MvShape& sh, const u8* w, Pro pro,
                               float (&acc)[1][MV_ROWS]) const {
        mv_sub_acc<Q, 1>(sh, w, pro, acc);
    }
};
template <class F>
struct IdFloat {
    template <class Pro>
    __device__ void operator()(const MvShape& sh, const u8* w, Pro pro,
                               float (&acc)[1][MV_ROWS]) const {
        mv_float_acc<F, 1>(sh, w, pro, acc);
    }
};

// w: n_experts matrices [n, row_bytes] at expert_stride; x: [rows or
// n_tokens, k] (16-byte aligned for quantized w); ids: [rows]; out: [rows, n].
// Quantized: the host's kw (1, 2 or 4; anything else runs as 4).
#define MV_ID_KW (p.kw == 1 || p.kw == 2 ? (int)p.kw : MV_WARPS)
#define MV_ID_ENTRY(name, acc, KW)                                                             \
    extern "C" __global__ void __launch_bounds__(MV_THREADS)                                   \
        name(MatmulIdParams p, const u8* __restrict__ w, const float* __restrict__ x,          \
             const u32* __restrict__ ids, float* __restrict__ out) {                           \
        mv_id(p, w, x, ids, out, KW, acc());                                                   \
    }

MV_ID_ENTRY(mul_mv_id_q4_0_f32, IdQuant<Q4_0T>, MV_ID_KW)
MV_ID_ENTRY(mul_mv_id_q4_1_f32, IdQuant<Q4_1T>, MV_ID_KW)
MV_ID_ENTRY(mul_mv_id_q8_0_f32, IdQuant<Q8_0T>, MV_ID_KW)
MV_ID_ENTRY(mul_mv_id_q5_0_f32, IdSub<Q5_0T>, MV_ID_KW)
MV_ID_ENTRY(mul_mv_id_q5_1_f32, IdSub<Q5_1T>, MV_ID_KW)
MV_ID_ENTRY(mul_mv_id_iq4_nl_f32, IdSub<IQ4_NLT>, MV_ID_KW)
MV_ID_ENTRY(mul_mv_id_q4_K_f32, IdSub<Q4_KT>, MV_ID_KW)
MV_ID_ENTRY(mul_mv_id_q5_K_f32, IdSub<Q5_KT>, MV_ID_KW)
MV_ID_ENTRY(mul_mv_id_q6_K_f32, IdSub<Q6_KT>, MV_ID_KW)
MV_ID_ENTRY(mul_mv_id_iq4_xs_f32, IdSub<IQ4_XST>, MV_ID_KW)
MV_ID_ENTRY(mul_mv_id_q3_K_f32, IdSub<Q3_KT>, MV_ID_KW)
MV_ID_ENTRY(mul_mv_id_q2_K_f32, IdSub<Q2_KT>, MV_ID_KW)
MV_ID_ENTRY(mul_mv_id_f32_f32, IdFloat<F32T>, MV_WARPS)
MV_ID_ENTRY(mul_mv_id_f16_f32, IdFloat<F16T>, MV_WARPS)
MV_ID_ENTRY(mul_mv_id_bf16_f32, IdFloat<BF16T>, MV_WARPS)
