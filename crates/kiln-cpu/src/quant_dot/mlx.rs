//! Dots of MLX affine weight rows (kiln's [`DType::Mlx`] blocks:
//! `[scale][bias][codes]` per group, see `kiln_core::quant::mlx_block`) with
//! f32 activations. Activations are not quantized: per group
//!
//! ```text
//! dot += scale * sum_j q_j * x_j + bias * sum_j x_j
//! ```
//!
//! with `sum_j x_j` (the group sums) computed once per activation row and
//! shared by every weight row. The reference is `kiln_core::quant::vec_dot_ref`
//! (dequantize `w = scale*q + bias` in f32, then an f64 dot); these kernels
//! differ from it only in f32 rounding and summation order.
//!
//! Codes are unpacked 8 at a time: 8 codes of `bits <= 8` bits are exactly
//! `bits` bytes (byte-aligned, since every group starts on a word), read as
//! one little-endian u64 `v`; codes 0..3 are `v >> (j*bits)` and codes 4..7
//! `(v >> 4*bits) >> ((j-4)*bits)`, each masked, so both halves fit a 32-bit
//! lane for every supported width (4 * 8 = 32 bits at most). On AVX2 that is
//! one variable shift of two broadcast halves per 8 codes; 4- and 8-bit
//! codes (the common widths) are instead split into bytes 16 at a time and
//! widened with `vpmovzxbd` (about half the instructions per code).

use crate::CpuFeatures;
use kiln_core::quant::MlxFormat;

/// Group sums of one activation row: `gsum[g] = sum of x[g*group..(g+1)*group]`.
pub fn mlx_group_sums(group: usize, x: &[f32], gsum: &mut [f32]) {
    for (s, xg) in gsum.iter_mut().zip(x.chunks_exact(group.max(1))) {
        *s = xg.iter().sum();
    }
}

/// The `bits` bytes of codes `8c..8c+8` of a block's code bytes, as a u64
/// (zero-padded when the 8-byte read would leave `codes`).
#[inline(always)]
fn load_codes8(codes: &[u8], c: usize, bits: usize) -> u64 {
    let off = c * bits;
    match codes.get(off..off + 8) {
        Some(&[a, b, c2, d, e, f, g, h]) => u64::from_le_bytes([a, b, c2, d, e, f, g, h]),
        _ => {
            let mut buf = [0u8; 8];
            let tail = codes.get(off..).unwrap_or(&[]);
            let n = tail.len().min(8);
            buf[..n].copy_from_slice(&tail[..n]);
            u64::from_le_bytes(buf)
        }
    }
}

/// `dot(w_row, x)` for one row of MLX blocks. `w_row` holds `x.len() /
/// group` blocks and `gsum` the group sums of `x` ([`mlx_group_sums`]);
/// a shorter row or `gsum` only contributes its prefix.
pub fn dot_mlx_row(
    features: CpuFeatures,
    f: MlxFormat,
    w_row: &[u8],
    x: &[f32],
    gsum: &[f32],
) -> f32 {
    let (g, bb) = (f.group_size(), f.block_bytes());
    let nb = (x.len() / g).min(w_row.len() / bb).min(gsum.len());
    let (w_row, x, gsum) = (&w_row[..nb * bb], &x[..nb * g], &gsum[..nb]);
    #[cfg(target_arch = "x86_64")]
    if features.has_avx2_fma() {
        // SAFETY: features detected at run time; w_row holds exactly nb
        // blocks, x exactly nb groups and gsum nb sums (sliced above).
        return unsafe { avx2::dot(f, w_row, x, gsum) };
    }
    let _ = features;
    dot_mlx_row_scalar(f, w_row, x, gsum)
}

/// Portable kernel (same lengths as [`dot_mlx_row`] after slicing).
pub fn dot_mlx_row_scalar(f: MlxFormat, w_row: &[u8], x: &[f32], gsum: &[f32]) -> f32 {
    let (g, bits, sb) = (f.group_size(), f.bits() as usize, f.scale_bytes());
    let mask = (1u32 << bits) - 1;
    let half = 4 * bits;
    let mut total = 0.0f32;
    for ((block, xg), &sx) in w_row
        .chunks_exact(f.block_bytes())
        .zip(x.chunks_exact(g))
        .zip(gsum)
    {
        let scale = f.read_scale(block);
        let bias = f.read_scale(&block[sb..]);
        let codes = &block[2 * sb..];
        let mut acc = [0.0f32; 8];
        for (c, x8) in xg.chunks_exact(8).enumerate() {
            let v = load_codes8(codes, c, bits);
            let (lo, hi) = (v as u32, (v >> half) as u32);
            for j in 0..4 {
                acc[j] += ((lo >> (j * bits)) & mask) as f32 * x8[j];
                acc[j + 4] += ((hi >> (j * bits)) & mask) as f32 * x8[j + 4];
            }
        }
        let qx: f32 = acc.iter().sum();
        total += scale * qx + bias * sx;
    }
    total
}

/// Dequantize one row of MLX blocks into `out` (`out.len() / group`
/// blocks of `w_row`): `scale * q + bias`, the product rounded first as in
/// the reference (`kiln_core::quant::dequantize_row`), so the values are
/// bit-identical to it; codes unpacked 8 at a time (AVX2: one variable
/// shift per 8).
pub fn dequantize_mlx_row(features: CpuFeatures, f: MlxFormat, w_row: &[u8], out: &mut [f32]) {
    let (g, bb, sb) = (f.group_size(), f.block_bytes(), f.scale_bytes());
    let bits = f.bits() as usize;
    let mask = (1u32 << bits) - 1;
    let half = 4 * bits;
    let nb = (out.len() / g).min(w_row.len() / bb);
    for (blk, og) in out.chunks_exact_mut(g).take(nb).enumerate() {
        let block = w_row.get(blk * bb..).unwrap_or(&[]);
        let scale = f.read_scale(block);
        let bias = f.read_scale(block.get(sb..).unwrap_or(&[]));
        let codes = block.get(2 * sb..).unwrap_or(&[]);
        #[cfg(target_arch = "x86_64")]
        if features.has_avx2_fma() {
            // SAFETY: features detected at run time; og holds g values.
            unsafe { avx2::dequant_group(bits, codes, scale, bias, og) };
            continue;
        }
        let _ = features;
        for (c, o8) in og.chunks_exact_mut(8).enumerate() {
            let v = load_codes8(codes, c, bits);
            let (lo, hi) = (v as u32, (v >> half) as u32);
            for j in 0..4 {
                let t = ((lo >> (j * bits)) & mask) as f32 * scale;
                o8[j] = t + bias;
                let t = ((hi >> (j * bits)) & mask) as f32 * scale;
                o8[j + 4] = t + bias;
            }
        }
    }
}

/// Weight rows × activation rows of [`dot_f32_tile`].
pub const F32_TILE_R: usize = 4;
/// Activation rows of [`dot_f32_tile`].
pub const F32_TILE_C: usize = 2;

/// The mat-mat tile for dequantized weights: `out[c][r] = dot(w[r], x[c])`
/// for 4 f32 weight rows × 2 activation rows, each weight and activation
/// vector loaded once per 8 elements (6 loads for 8 FMAs). All slices must
/// have the same length (a shorter one limits every dot to its length).
pub fn dot_f32_tile(
    features: CpuFeatures,
    w: [&[f32]; F32_TILE_R],
    x: [&[f32]; F32_TILE_C],
) -> [[f32; F32_TILE_R]; F32_TILE_C] {
    let n = w.iter().chain(&x).map(|v| v.len()).min().unwrap_or(0);
    let w = w.map(|v| &v[..n]);
    let x = x.map(|v| &v[..n]);
    #[cfg(target_arch = "x86_64")]
    if features.has_avx2_fma() {
        // SAFETY: features detected at run time; every slice has n elements.
        return unsafe { avx2::tile(w, x) };
    }
    let _ = features;
    let mut out = [[0.0f32; F32_TILE_R]; F32_TILE_C];
    for (oc, xc) in out.iter_mut().zip(&x) {
        for (o, wr) in oc.iter_mut().zip(&w) {
            *o = wr.iter().zip(*xc).map(|(a, b)| a * b).sum();
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::load_codes8;
    use kiln_core::quant::MlxFormat;
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX2/FMA present; `w` holds exactly `x.len() / group` blocks and
    /// `gsum` that many sums.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(f: MlxFormat, w: &[u8], x: &[f32], gsum: &[f32]) -> f32 {
        let (g, bits, sb) = (f.group_size(), f.bits() as usize, f.scale_bytes());
        let b = bits as i32;
        let shifts = _mm256_setr_epi32(0, b, 2 * b, 3 * b, 0, b, 2 * b, 3 * b);
        let mask = _mm256_set1_epi32((1i32 << bits) - 1);
        let half = 4 * bits;
        let mut total = _mm256_setzero_ps();
        let mut bias_total = 0.0f32;
        let bb = f.block_bytes();
        for (blk, (xg, &sx)) in x.chunks_exact(g).zip(gsum).enumerate() {
            // This block to the end of the row: an 8-byte read past the
            // block's codes sees the next block's bytes, which the masks
            // drop, so only the row's last read takes the padded path.
            let block = w.get(blk * bb..).unwrap_or(&[]);
            let scale = f.read_scale(block);
            let bias = f.read_scale(block.get(sb..).unwrap_or(&[]));
            let codes = block.get(2 * sb..).unwrap_or(&[]);
            // Two accumulators hide the FMA latency (group >= 32: 4+ steps).
            let mut acc0 = _mm256_setzero_ps();
            let mut acc1 = _mm256_setzero_ps();
            let xp = xg.as_ptr();
            let steps = g / 8;
            let mut c = 0;
            if codes.len() >= g * bits / 8 && (bits == 4 || bits == 8) {
                // SAFETY: codes holds this group's g*bits/8 bytes (checked);
                // x holds g elements.
                let (a0, a1) = unsafe { group_4_8(bits, codes.as_ptr(), xp, g) };
                acc0 = a0;
                acc1 = a1;
                c = steps;
            }
            while c < steps {
                let v = load_codes8(codes, c, bits);
                let lo = v as u32 as i32;
                let hi = (v >> half) as u32 as i32;
                let q = _mm256_and_si256(
                    _mm256_srlv_epi32(_mm256_setr_epi32(lo, lo, lo, lo, hi, hi, hi, hi), shifts),
                    mask,
                );
                // SAFETY: x holds g elements for this group; c*8+8 <= g.
                let xv = unsafe { _mm256_loadu_ps(xp.add(c * 8)) };
                if c % 2 == 0 {
                    acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), xv, acc0);
                } else {
                    acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), xv, acc1);
                }
                c += 1;
            }
            total = _mm256_fmadd_ps(_mm256_set1_ps(scale), _mm256_add_ps(acc0, acc1), total);
            bias_total += bias * sx;
        }
        hsum(total) + bias_total
    }

    /// `sum q*x` of one group as two lane accumulators, for 4-bit (32
    /// codes = 16 bytes: low nibble of byte k is code 2k, high nibble code
    /// 2k+1) and 8-bit codes (one byte each), widened with `vpmovzxbd`.
    ///
    /// # Safety
    /// AVX2/FMA present; `codes` points at `g*bits/8` readable bytes, `x`
    /// at `g` f32; `g` a multiple of 32.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn group_4_8(
        bits: usize,
        codes: *const u8,
        x: *const f32,
        g: usize,
    ) -> (__m256, __m256) {
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        // SAFETY (whole body): reads stay within the g*bits/8 code bytes
        // and the g activations the caller guarantees.
        unsafe {
            let fma8 = |q: __m128i, off: usize, acc: __m256| {
                let qf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q));
                _mm256_fmadd_ps(qf, _mm256_loadu_ps(x.add(off)), acc)
            };
            if bits == 4 {
                let m = _mm_set1_epi8(0x0f);
                for c in 0..g / 32 {
                    let raw = _mm_loadu_si128(codes.add(16 * c).cast());
                    let lo = _mm_and_si128(raw, m);
                    let hi = _mm_and_si128(_mm_srli_epi16::<4>(raw), m);
                    let a = _mm_unpacklo_epi8(lo, hi); // codes 0..15
                    let b = _mm_unpackhi_epi8(lo, hi); // codes 16..31
                    acc0 = fma8(a, 32 * c, acc0);
                    acc1 = fma8(_mm_srli_si128::<8>(a), 32 * c + 8, acc1);
                    acc0 = fma8(b, 32 * c + 16, acc0);
                    acc1 = fma8(_mm_srli_si128::<8>(b), 32 * c + 24, acc1);
                }
            } else {
                for c in 0..g / 16 {
                    let raw = _mm_loadu_si128(codes.add(16 * c).cast());
                    acc0 = fma8(raw, 16 * c, acc0);
                    acc1 = fma8(_mm_srli_si128::<8>(raw), 16 * c + 8, acc1);
                }
            }
        }
        (acc0, acc1)
    }

    /// One group: `out = scale * q + bias` (product rounded first, no FMA).
    ///
    /// # Safety
    /// AVX2 present. `out.len()` is a multiple of 8 (the group size).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dequant_group(
        bits: usize,
        codes: &[u8],
        scale: f32,
        bias: f32,
        out: &mut [f32],
    ) {
        let b = bits as i32;
        let shifts = _mm256_setr_epi32(0, b, 2 * b, 3 * b, 0, b, 2 * b, 3 * b);
        let mask = _mm256_set1_epi32((1i32 << bits) - 1);
        let (vs, vb) = (_mm256_set1_ps(scale), _mm256_set1_ps(bias));
        let half = 4 * bits;
        for (c, o8) in out.chunks_exact_mut(8).enumerate() {
            let v = load_codes8(codes, c, bits);
            let lo = v as u32 as i32;
            let hi = (v >> half) as u32 as i32;
            let q = _mm256_and_si256(
                _mm256_srlv_epi32(_mm256_setr_epi32(lo, lo, lo, lo, hi, hi, hi, hi), shifts),
                mask,
            );
            let t = _mm256_mul_ps(_mm256_cvtepi32_ps(q), vs);
            // SAFETY: o8 holds exactly 8 f32.
            unsafe { _mm256_storeu_ps(o8.as_mut_ptr(), _mm256_add_ps(t, vb)) };
        }
    }

    /// # Safety
    /// AVX2/FMA present; every slice has the same length.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile(w: [&[f32]; 4], x: [&[f32]; 2]) -> [[f32; 4]; 2] {
        let n = x[0].len();
        let mut acc = [[_mm256_setzero_ps(); 4]; 2];
        let mut e = 0;
        while e + 8 <= n {
            // SAFETY: e + 8 <= n, the length of every slice.
            unsafe {
                let x0 = _mm256_loadu_ps(x[0].as_ptr().add(e));
                let x1 = _mm256_loadu_ps(x[1].as_ptr().add(e));
                for r in 0..4 {
                    let wv = _mm256_loadu_ps(w[r].as_ptr().add(e));
                    acc[0][r] = _mm256_fmadd_ps(wv, x0, acc[0][r]);
                    acc[1][r] = _mm256_fmadd_ps(wv, x1, acc[1][r]);
                }
            }
            e += 8;
        }
        let mut out = [[0.0f32; 4]; 2];
        for c in 0..2 {
            for r in 0..4 {
                let tail: f32 = (e..n).map(|i| w[r][i] * x[c][i]).sum();
                out[c][r] = hsum(acc[c][r]) + tail;
            }
        }
        out
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum(total: __m256) -> f32 {
        let s = _mm_add_ps(
            _mm256_castps256_ps128(total),
            _mm256_extractf128_ps::<1>(total),
        );
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use kiln_core::quant::{vec_dot_ref, MlxAffine, MLX_AFFINE_BITS, MLX_AFFINE_GROUP_SIZES};
    use kiln_core::DType;

    /// Scalar and AVX2 kernels against the f64 reference, every format.
    #[test]
    fn kernels_match_the_reference() {
        let mut seed = 99u32;
        let mut rnd = || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        };
        for bits in MLX_AFFINE_BITS {
            for g in MLX_AFFINE_GROUP_SIZES {
                for sd in [DType::F16, DType::BF16, DType::F32] {
                    let dt = MlxAffine::new(bits, g, sd).unwrap().dtype().unwrap();
                    let DType::Mlx(f) = dt else { unreachable!() };
                    let k = 5 * g;
                    let w: Vec<f32> = (0..k).map(|_| rnd()).collect();
                    let x: Vec<f32> = (0..k).map(|_| rnd()).collect();
                    let mut row = vec![0u8; dt.row_bytes("t", k).unwrap()];
                    kiln_core::quant::quantize_row(dt, &w, &mut row).unwrap();
                    let want = vec_dot_ref(dt, &row, &x).unwrap();
                    let mut gs = vec![0.0; k / g];
                    mlx_group_sums(g, &x, &mut gs);
                    let tol = 1e-4 * (1.0 + want.abs());
                    let s = dot_mlx_row_scalar(f, &row, &x, &gs);
                    assert!((s - want).abs() < tol, "{dt}: scalar {s} want {want}");
                    let v = dot_mlx_row(CpuFeatures::detect(), f, &row, &x, &gs);
                    assert!((v - want).abs() < tol, "{dt}: simd {v} want {want}");
                    let mut deq = vec![0.0; k];
                    kiln_core::quant::dequantize_row(dt, &row, &mut deq).unwrap();
                    for feat in [CpuFeatures::default(), CpuFeatures::detect()] {
                        let mut got = vec![f32::NAN; k];
                        dequantize_mlx_row(feat, f, &row, &mut got);
                        assert_eq!(got, deq, "{dt}: dequantize {feat:?}");
                    }
                }
            }
        }
    }
}
