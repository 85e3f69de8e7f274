//! gelu_mul on the CPU: `out = gelu(gate) * up` (spec:
//! [`kiln_core::ops::gelu_mul`]), chunked over the rayon pool.
//!
//! - [`GeluMode::Tanh`]: computed in the sigmoid form `gate * up / (1 +
//!   exp(-2u))`, `u = √(2/π)(g + 0.044715 g³)`, with the vectorised
//!   [`exp8`](crate::vmath::avx2::exp8) on AVX2 (relative error < 4e-7) and
//!   an exact division, so results are within a few ulp of the f64 reference.
//! - [`GeluMode::Erf`]: `0.5 g erfc(-g/√2) u` with [`erfc_fast`] (piecewise
//!   polynomials fitted for kiln, evaluated in f64, relative error < 1e-8),
//!   rounded once to f32: within 1 ulp of the reference. Scalar on every
//!   CPU (no model kiln runs uses the erf GELU on a hot path yet).

use crate::CpuContext;
use kiln_core::ops::gelu_mul::{
    GeluMode, GeluMulParams, GELU_COEF_A, GELU_FRAC_1_SQRT_2, GELU_SQRT_2_OVER_PI,
};
use kiln_core::Result;
use rayon::prelude::*;

/// Below this many elements one thread does the whole vector.
const PAR_MIN: usize = 1 << 14;
/// Elements per parallel task.
const CHUNK: usize = 1 << 13;
/// `-2 √(2/π)` and `-2 √(2/π) · 0.044715` in f32: `-2u = g (C1 + C3 g²)`.
const C1: f32 = (-2.0 * GELU_SQRT_2_OVER_PI) as f32;
const C3: f32 = (-2.0 * GELU_SQRT_2_OVER_PI * GELU_COEF_A) as f32;

/// `erf(z)/z` as a polynomial in `z²` on `|z| < 1` (highest degree first;
/// least-squares fit at Chebyshev nodes against 40-digit values, relative
/// error < 1.4e-9).
const ERF_SMALL: [f64; 7] = [
    7.882_503_710_518_925e-5,
    -0.000_801_886_300_623_893_1,
    0.005_189_313_677_923_408_5,
    -0.026_854_330_277_364_648,
    0.112_835_975_195_314_26,
    -0.376_126_269_121_907_16,
    1.128_379_165_885_150_3,
];
/// `z e^(z²) erfc(z)` as a polynomial in `u = 1/z` on `u ∈ [0.4, 1]`
/// (`z ∈ [1, 2.5]`; same fit, relative error < 4.8e-9).
const ERFC_MID: [f64; 9] = [
    0.025_692_467_213_303_212,
    -0.155_103_476_856_031_93,
    0.389_752_734_068_780_25,
    -0.490_999_420_765_789_56,
    0.223_468_377_884_129_6,
    0.219_442_559_205_138_3,
    -0.362_097_251_508_356_03,
    0.014_287_574_485_500_762,
    0.563_140_014_412_605_3,
];
/// The same on `u ∈ [1/10.1, 0.4)` (`z ∈ (2.5, 10.1]`; relative error <
/// 3.2e-9). Past 10.1 `erfc(z) < 1.4e-45`, below the smallest f32, so the
/// extrapolated polynomial there (up to the cut at 27) only has to stay
/// finite and tiny.
const ERFC_TAIL: [f64; 8] = [
    -0.023_370_642_125_821_253,
    0.418_695_242_993_068_4,
    -0.871_426_688_046_097_4,
    0.681_928_053_105_415_3,
    -0.045_412_038_849_379_25,
    -0.277_345_577_056_754_56,
    -0.000_273_204_023_900_298_6,
    0.564_196_221_803_059_5,
];

fn horner(c: &[f64], x: f64) -> f64 {
    c.iter().fold(0.0, |acc, &k| acc * x + k)
}

/// `erfc(z)` in f64 to a relative error < 1e-8 for `z <= 10.1` (checked
/// against 40-digit values; absolute < 1e-45 beyond), without the
/// cancellation of `1 - erf` in the tail: `1 - z P(z²)` for `|z| < 1`,
/// `e^(-z²) Q(1/z) / z` for `z >= 1`, `2 - erfc(-z)` for `z <= -1`, 0 past 27.
pub fn erfc_fast(z: f64) -> f64 {
    let a = z.abs();
    if a < 1.0 {
        return 1.0 - z * horner(&ERF_SMALL, z * z);
    }
    let r = if a > 27.0 {
        0.0
    } else {
        let u = 1.0 / a;
        let q = horner(if u >= 0.4 { &ERFC_MID } else { &ERFC_TAIL }, u);
        (-a * a).exp() * u * q
    };
    if z < 0.0 {
        2.0 - r
    } else {
        r
    }
}

/// `gelu_erf(g) * u` rounded once to f32.
fn gelu_erf_mul1(g: f32, u: f32) -> f32 {
    let g = f64::from(g);
    (0.5 * g * erfc_fast(-g * GELU_FRAC_1_SQRT_2) * f64::from(u)) as f32
}

/// `out = gelu(gate) * up` with the GELU of `p.mode`.
pub fn gelu_mul(
    ctx: &CpuContext,
    p: &GeluMulParams,
    gate: &[f32],
    up: &[f32],
    out: &mut [f32],
) -> Result<()> {
    p.validate(gate.len(), up.len(), out.len())?;
    let f = ctx.features();
    let run = |g: &[f32], u: &[f32], o: &mut [f32]| {
        if p.mode == GeluMode::Erf {
            for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                *o = gelu_erf_mul1(g, u);
            }
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if f.has_avx2_fma() {
            // SAFETY: AVX2+FMA were detected at run time; equal lengths per chunk.
            unsafe { gelu_mul_avx2(g, u, o) };
            return;
        }
        for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
            *o = g * u / (1.0 + (g * (C1 + C3 * g * g)).exp());
        }
    };
    if p.n < PAR_MIN || ctx.threads() == 1 {
        run(gate, up, out);
    } else {
        ctx.pool().install(|| {
            out.par_chunks_mut(CHUNK)
                .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
                .for_each(|(o, (g, u))| run(g, u, o));
        });
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_mul_avx2(g: &[f32], u: &[f32], out: &mut [f32]) {
    use crate::vmath::avx2::exp8;
    use std::arch::x86_64::*;
    let n = out.len().min(g.len()).min(u.len());
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel(vg: __m256, vu: __m256) -> __m256 {
        let g2 = _mm256_mul_ps(vg, vg);
        let t = _mm256_fmadd_ps(_mm256_set1_ps(C3), g2, _mm256_set1_ps(C1));
        let e = exp8(_mm256_mul_ps(vg, t));
        _mm256_div_ps(_mm256_mul_ps(vg, vu), _mm256_add_ps(_mm256_set1_ps(1.0), e))
    }
    let (pg, pu, po) = (g.as_ptr(), u.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    while i + 8 <= n {
        _mm256_storeu_ps(
            po.add(i),
            kernel(_mm256_loadu_ps(pg.add(i)), _mm256_loadu_ps(pu.add(i))),
        );
        i += 8;
    }
    if i < n {
        let (mut bg, mut bu, mut bo) = ([0.0f32; 8], [0.0f32; 8], [0.0f32; 8]);
        bg[..n - i].copy_from_slice(&g[i..n]);
        bu[..n - i].copy_from_slice(&u[i..n]);
        _mm256_storeu_ps(
            bo.as_mut_ptr(),
            kernel(_mm256_loadu_ps(bg.as_ptr()), _mm256_loadu_ps(bu.as_ptr())),
        );
        out[i..n].copy_from_slice(&bo[..n - i]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_core::ops::gelu_mul::erfc_f64;

    #[test]
    fn erfc_fast_matches_the_reference() {
        // Dense sweep over the three pieces and both seams (|z| = 1, 2.5).
        for i in -6000..=10_100 {
            let z = f64::from(i) * 1e-3;
            let (got, want) = (erfc_fast(z), erfc_f64(z));
            assert!(
                (got - want).abs() <= 1e-8 * want,
                "erfc({z}): {got} vs {want}"
            );
        }
        assert_eq!(erfc_fast(30.0), 0.0);
        assert_eq!(erfc_fast(-30.0), 2.0);
        assert_eq!(erfc_fast(f64::INFINITY), 0.0);
        assert!(erfc_fast(f64::NAN).is_nan());
    }
}
