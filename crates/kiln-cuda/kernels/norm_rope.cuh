// norm_rope.cuh: the per-head RMSNorm + RoPE of norm_rope.cu, shared with
// qk_norm_rope_kv.cu (which runs it on the q and k heads of a [q | k | v]
// row and stores k into a KV cache), so both give the same bits.
// Include after common.cuh.
//
// Numerics are those of the two unfused kernels: the sum of squares in f32,
// inv = rsqrtf(__fdiv_rn(ss, dim) + eps) and the normalized value x * inv * w
// in f32 (rms_norm.cu); pair i's angle pos * freq_scale * freq_base^(-2i/n_rot)
// (divided by factors[i] with FF), its sine/cosine and the rotation in f64
// (rope.cu). Pairs are (2i, 2i+1) (normal) or (i, i + n_rot/2) (neox); dims
// >= n_rot are normalized only.

#define NR_MAX_DIM 512
#define NR_MAX_WARPS 8

// The cosine and sine of every pair's angle at position `pos` into
// cos_sh / sin_sh ([n_rot / 2]), the block's threads striding over the pairs.
// The caller synchronizes before reading them.
template <bool FF>
__device__ __forceinline__ void nr_angles(i32 pos, u64 n_rot, float freq_base, float freq_scale,
                                          const float* __restrict__ factors, double* cos_sh,
                                          double* sin_sh) {
    const u64 half = n_rot / 2;
    const double pt = (double)pos * (double)freq_scale;
    for (u64 i = threadIdx.x; i < half; i += blockDim.x) {
        const double inv_freq = pow((double)freq_base, -2.0 * (double)i / (double)n_rot);
        double theta = pt * inv_freq;
        if (FF) theta /= (double)factors[i];
        double sn, cs;
        sincos(theta, &sn, &cs);
        cos_sh[i] = cs;
        sin_sh[i] = sn;
    }
}

// One head row of `dim` floats by one warp (every lane calls it): copies
// xr into the warp's shared `row` while summing squares (warp shuffles),
// then each lane normalizes and rotates the pairs i = lane, lane + 32, ...
// (reading both elements from `row`) and normalizes the tail dims >= n_rot;
// out(j, v) stores element j's value v. Returns once every lane is done
// reading `row` (the next head may refill it).
template <bool NEOX, class Out>
__device__ __forceinline__ void nr_head(const float* __restrict__ xr, const float* __restrict__ w,
                                        float* row, u64 dim, u64 n_rot, float eps,
                                        const double* cos_sh, const double* sin_sh, Out out) {
    const u32 lane = threadIdx.x & 31;
    const u64 half = n_rot / 2;
    float ss = 0.0f;
    for (u64 j = lane; j < dim; j += 32) {
        const float v = xr[j];
        row[j] = v;
        ss += v * v;
    }
    ss = kiln_warp_sum(ss);
    __syncwarp();  // row[] written by every lane, read across lanes below
    const float inv = rsqrtf(__fdiv_rn(ss, (float)dim) + eps);
    for (u64 i = lane; i < half; i += 32) {
        const u64 ia = NEOX ? i : 2 * i;
        const u64 ib = NEOX ? i + half : 2 * i + 1;
        // The normalized f32 values (rms_norm's output), rotated in f64.
        const double a = row[ia] * inv * w[ia];
        const double b = row[ib] * inv * w[ib];
        const double cs = cos_sh[i], sn = sin_sh[i];
        out(ia, (float)(a * cs - b * sn));
        out(ib, (float)(a * sn + b * cs));
    }
    for (u64 j = n_rot + lane; j < dim; j += 32) out(j, row[j] * inv * w[j]);
    __syncwarp();  // every lane done reading row[] before the next head refills it
}
