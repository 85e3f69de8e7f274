//! vmath: small vector kernels shared by the elementwise, reduction and
//! attention ops — dot, axpy, scale, max, sum of squares, and a vectorised
//! `exp` — each with an AVX2+FMA version and a scalar fallback.
//!
//! The `avx2` functions are `unsafe` only because they require the CPU to
//! support AVX2 and FMA; callers check [`CpuFeatures::has_avx2_fma`] first.
//! Slices passed in pairs must have equal lengths (checked by debug asserts
//! in callers; the kernels read `min(len)` elements).
//!
//! ## `exp8` accuracy
//! `exp(x) = 2^n * e^r` with `n = round(x / ln2)` and `r = x - n ln2`
//! (Cody–Waite split of ln2, exact product for |n| < 2^15), `|r| <= ln2/2`,
//! and `e^r` by its degree-7 Taylor polynomial (truncation
//! `|r|^8/8! * e^|r| < 7.5e-9`, 1/8 ulp). With Horner rounding the result is
//! within 3 ulp (relative error < 4e-7) for `x` in `[-87.33, 88]`.
//! Outside: `x < -87.33` (results below the smallest normal f32) gives 0,
//! including `-inf`; `x > 88` gives `e^88` (callers here only pass `x <= 0`,
//! or `-gate` in silu where the clamp changes the result by < 1e-36);
//! NaN propagates.

use crate::{CpuContext, CpuFeatures};
use rayon::prelude::*;

/// `out[i] = a[i] + b[i]` for [`zip_with`].
pub const ZIP_ADD: u8 = 0;
/// `out[i] = a[i] * b[i]` for [`zip_with`].
pub const ZIP_MUL: u8 = 1;

/// `out = a OP b` elementwise (OP: [`ZIP_ADD`] or [`ZIP_MUL`], one
/// correctly rounded f32 operation per element, so bit-identical to the
/// scalar reference), chunked over the rayon pool for long vectors, AVX2
/// inside a chunk. Shared by the add and mul families, which validate the
/// lengths first.
pub fn zip_with<const OP: u8>(ctx: &CpuContext, a: &[f32], b: &[f32], out: &mut [f32]) {
    /// Below this many elements one thread does the whole vector.
    const PAR_MIN: usize = 1 << 15;
    /// Elements per parallel task.
    const CHUNK: usize = 1 << 14;
    let f = ctx.features();
    let run = |a: &[f32], b: &[f32], o: &mut [f32]| {
        #[cfg(target_arch = "x86_64")]
        if f.has_avx2_fma() {
            // SAFETY: AVX2 was detected at run time; the kernel reads min(len).
            unsafe { avx2::zip_with::<OP>(a, b, o) };
            return;
        }
        for ((o, &x), &y) in o.iter_mut().zip(a).zip(b) {
            *o = if OP == ZIP_MUL { x * y } else { x + y };
        }
    };
    if out.len() < PAR_MIN || ctx.threads() == 1 {
        run(a, b, out);
    } else {
        ctx.pool().install(|| {
            out.par_chunks_mut(CHUNK)
                .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
                .for_each(|(o, (a, b))| run(a, b, o));
        });
    }
}

/// Scalar fallbacks (also the reference shape of the SIMD code).
pub mod scalar {
    /// `sum a_i b_i`, f32 accumulation.
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// `y += alpha * x`.
    pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y += alpha * x;
        }
    }

    /// `x *= s`.
    pub fn scale(x: &mut [f32], s: f32) {
        x.iter_mut().for_each(|v| *v *= s);
    }

    /// Largest value; NaN ignored; `-inf` for an empty slice.
    pub fn max(x: &[f32]) -> f32 {
        x.iter().copied().fold(f32::NEG_INFINITY, f32::max)
    }

    /// `x_i = exp(x_i - m)`, returning the sum (accumulated in f64).
    pub fn exp_sub_sum(x: &mut [f32], m: f32) -> f32 {
        let mut s = 0.0f64;
        for v in x.iter_mut() {
            *v = (*v - m).exp();
            s += f64::from(*v);
        }
        s as f32
    }

    /// `sum x_i^2` in f64.
    pub fn sum_sq(x: &[f32]) -> f64 {
        x.iter().map(|&v| f64::from(v) * f64::from(v)).sum()
    }
}

/// AVX2 + FMA kernels.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    /// [`super::zip_with`]'s kernel over `min(len)` elements.
    ///
    /// # Safety
    /// The CPU supports AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn zip_with<const OP: u8>(a: &[f32], b: &[f32], out: &mut [f32]) {
        let n = out.len().min(a.len()).min(b.len());
        let (pa, pb, po) = (a.as_ptr(), b.as_ptr(), out.as_mut_ptr());
        let mut i = 0;
        // SAFETY: every index is below n, within all three slices.
        unsafe {
            while i + 8 <= n {
                let (x, y) = (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
                let r = if OP == super::ZIP_MUL {
                    _mm256_mul_ps(x, y)
                } else {
                    _mm256_add_ps(x, y)
                };
                _mm256_storeu_ps(po.add(i), r);
                i += 8;
            }
            while i < n {
                let (x, y) = (*pa.add(i), *pb.add(i));
                *po.add(i) = if OP == super::ZIP_MUL { x * y } else { x + y };
                i += 1;
            }
        }
    }

    use std::arch::x86_64::*;

    /// Horizontal sum of 8 lanes.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// Horizontal max of 8 lanes.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn hmax(v: __m256) -> f32 {
        let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// Add the 8 lanes of `v`, widened to f64, into two f64x4 accumulators.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn acc_f64(acc: &mut (__m256d, __m256d), v: __m256) {
        acc.0 = _mm256_add_pd(acc.0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
        acc.1 = _mm256_add_pd(acc.1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    }

    /// Horizontal sum of two f64x4 accumulators.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn hsum_f64(acc: (__m256d, __m256d)) -> f64 {
        let v = _mm256_add_pd(acc.0, acc.1);
        let s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
        _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)))
    }

    /// `exp` of 8 lanes; see the module docs for range and accuracy.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp8(x: __m256) -> __m256 {
        const LO: f32 = -87.336_55; // ln(2^-126): below it the result is subnormal → 0
        const HI: f32 = 88.0;
        const LOG2E: f32 = std::f32::consts::LOG2_E;
        const LN2_HI: f32 = 0.693_359_4; // 0.693359375: 9 significant bits
        const LN2_LO: f32 = -2.121_944_4e-4; // ln2 - LN2_HI
                                             // min/max return their second operand when either is NaN: x stays NaN.
        let xc = _mm256_max_ps(_mm256_set1_ps(LO), _mm256_min_ps(_mm256_set1_ps(HI), x));
        let n = _mm256_round_ps(
            _mm256_mul_ps(xc, _mm256_set1_ps(LOG2E)),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), xc);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        // Taylor series of e^r to degree 7, Horner form.
        let mut p = _mm256_set1_ps(1.0 / 5040.0);
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0 / 720.0));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0 / 120.0));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0 / 24.0));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0 / 6.0));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
        // 2^n: n is in [-126, 127], so n + 127 is a valid biased exponent.
        let e = _mm256_slli_epi32(
            _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
            23,
        );
        let y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
        // Flush x < LO (including -inf) to 0; NaN compares false and stays NaN.
        let under = _mm256_cmp_ps(x, _mm256_set1_ps(LO), _CMP_LT_OQ);
        _mm256_andnot_ps(under, y)
    }

    /// `sum a_i b_i` over `min(len)` elements.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
            s1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 8)),
                _mm256_loadu_ps(pb.add(i + 8)),
                s1,
            );
            i += 16;
        }
        if i + 8 <= n {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
            i += 8;
        }
        let mut s = hsum(_mm256_add_ps(s0, s1));
        while i < n {
            s += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        s
    }

    /// `y += alpha * x` over `min(len)` elements.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        let (px, py) = (x.as_ptr(), y.as_mut_ptr());
        let va = _mm256_set1_ps(alpha);
        let mut i = 0;
        while i + 8 <= n {
            let v = _mm256_fmadd_ps(va, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)));
            _mm256_storeu_ps(py.add(i), v);
            i += 8;
        }
        while i < n {
            *py.add(i) += alpha * *px.add(i);
            i += 1;
        }
    }

    /// `x *= s`.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn scale(x: &mut [f32], s: f32) {
        let n = x.len();
        let p = x.as_mut_ptr();
        let vs = _mm256_set1_ps(s);
        let mut i = 0;
        while i + 8 <= n {
            _mm256_storeu_ps(p.add(i), _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), vs));
            i += 8;
        }
        while i < n {
            *p.add(i) *= s;
            i += 1;
        }
    }

    /// Largest value; NaN ignored; `-inf` for an empty slice.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn max(x: &[f32]) -> f32 {
        let n = x.len();
        let p = x.as_ptr();
        let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut i = 0;
        while i + 8 <= n {
            // max_ps returns the second operand (m) when the loaded lane is NaN.
            m = _mm256_max_ps(_mm256_loadu_ps(p.add(i)), m);
            i += 8;
        }
        let mut s = hmax(m);
        while i < n {
            s = s.max(*p.add(i));
            i += 1;
        }
        s
    }

    /// `x_i = exp(x_i - m)` (with [`exp8`]), returning the sum (f64 lanes).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_sub_sum(x: &mut [f32], m: f32) -> f32 {
        let n = x.len();
        let p = x.as_mut_ptr();
        let vm = _mm256_set1_ps(m);
        let mut acc = (_mm256_setzero_pd(), _mm256_setzero_pd());
        let mut i = 0;
        while i + 8 <= n {
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), vm));
            _mm256_storeu_ps(p.add(i), e);
            acc_f64(&mut acc, e);
            i += 8;
        }
        let mut s = hsum_f64(acc);
        if i < n {
            // Tail through the same exp8 so every element sees one formula.
            let mut buf = [f32::NEG_INFINITY; 8];
            buf[..n - i].copy_from_slice(&x[i..]);
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(buf.as_ptr()), vm));
            _mm256_storeu_ps(buf.as_mut_ptr(), e);
            for (k, v) in buf[..n - i].iter().enumerate() {
                x[i + k] = *v;
                s += f64::from(*v);
            }
        }
        s as f32
    }

    /// `sum x_i^2`: squares in f32, accumulated in f64 lanes.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn sum_sq(x: &[f32]) -> f64 {
        let n = x.len();
        let p = x.as_ptr();
        let mut acc = (_mm256_setzero_pd(), _mm256_setzero_pd());
        let mut i = 0;
        while i + 8 <= n {
            let lo = _mm256_cvtps_pd(_mm_loadu_ps(p.add(i)));
            let hi = _mm256_cvtps_pd(_mm_loadu_ps(p.add(i + 4)));
            acc.0 = _mm256_fmadd_pd(lo, lo, acc.0);
            acc.1 = _mm256_fmadd_pd(hi, hi, acc.1);
            i += 8;
        }
        let mut s = hsum_f64(acc);
        while i < n {
            let v = f64::from(*p.add(i));
            s += v * v;
            i += 1;
        }
        s
    }
}

/// `sum a_i b_i` with the best available kernel.
pub fn dot(f: CpuFeatures, a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if f.has_avx2_fma() {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { avx2::dot(a, b) };
    }
    let _ = f;
    scalar::dot(a, b)
}

/// `x_i = exp(x_i - m)`, returning the sum, with the best available kernel.
pub fn exp_sub_sum(f: CpuFeatures, x: &mut [f32], m: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if f.has_avx2_fma() {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { avx2::exp_sub_sum(x, m) };
    }
    let _ = f;
    scalar::exp_sub_sum(x, m)
}

/// Largest value (NaN ignored, `-inf` when empty) with the best available kernel.
pub fn max(f: CpuFeatures, x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if f.has_avx2_fma() {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { avx2::max(x) };
    }
    let _ = f;
    scalar::max(x)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// exp8 against f64 exp over its whole range, in ulp of the f32 result.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exp8_error_bound() {
        if !CpuFeatures::detect().has_avx2_fma() {
            eprintln!("skipped: no AVX2+FMA on this CPU");
            return;
        }
        use std::arch::x86_64::*;
        let mut worst = 0.0f64;
        let mut x = -87.3f32;
        let mut buf = [0.0f32; 8];
        while x < 88.0 {
            let xs: [f32; 8] = std::array::from_fn(|k| x + k as f32 * 0.001);
            // SAFETY: features checked above; buffers are 8 floats.
            unsafe { _mm256_storeu_ps(buf.as_mut_ptr(), avx2::exp8(_mm256_loadu_ps(xs.as_ptr()))) };
            for (&xi, &yi) in xs.iter().zip(&buf) {
                let want = f64::from(xi).exp();
                let rel = ((f64::from(yi) - want) / want).abs();
                worst = worst.max(rel);
            }
            x += 0.0173;
        }
        assert!(worst < 4e-7, "worst relative error {worst:e}");
        let xs = [
            f32::NEG_INFINITY,
            -1000.0,
            -87.4,
            0.0,
            f32::NAN,
            -0.0,
            1.0,
            88.0,
        ];
        // SAFETY: as above.
        unsafe { _mm256_storeu_ps(buf.as_mut_ptr(), avx2::exp8(_mm256_loadu_ps(xs.as_ptr()))) };
        assert_eq!(&buf[..4], &[0.0, 0.0, 0.0, 1.0]);
        assert!(buf[4].is_nan());
        assert_eq!(buf[5], 1.0);
        assert!((buf[6] - std::f32::consts::E).abs() < 1e-6);
        assert!((f64::from(buf[7]) / 88f64.exp() - 1.0).abs() < 4e-7);
    }

    #[test]
    fn kernels_agree_with_scalar() {
        let f = CpuFeatures::detect();
        for n in [0usize, 1, 7, 8, 15, 16, 17, 33, 64, 257] {
            let a: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 17) as f32 - 8.0) * 0.25)
                .collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 11 % 13) as f32 - 6.0) * 0.5).collect();
            assert!((dot(f, &a, &b) - scalar::dot(&a, &b)).abs() < 1e-4);
            assert_eq!(max(f, &a), scalar::max(&a));
            let (mut x1, mut x2) = (a.clone(), a.clone());
            let m = scalar::max(&a);
            let (s1, s2) = (exp_sub_sum(f, &mut x1, m), scalar::exp_sub_sum(&mut x2, m));
            assert!((s1 - s2).abs() <= 1e-6 * s2.max(1.0), "{s1} {s2}");
        }
    }
}
