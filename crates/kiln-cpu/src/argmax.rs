//! argmax on the CPU (spec: [`kiln_core::ops::argmax`]): largest finite
//! value, lowest index on ties, NaN/inf ignored. AVX2 does two passes — the
//! maximum over finite lanes, then the first index holding it — which keeps
//! the lowest-index rule trivially right. Single-threaded: a vocabulary row
//! (~50k values) takes microseconds.

use crate::CpuContext;
use kiln_core::ops::argmax;
use kiln_core::{Error, Result};

/// Index of the largest finite value of `x`.
pub fn argmax(ctx: &CpuContext, x: &[f32]) -> Result<u32> {
    argmax::validate(x.len())?;
    #[cfg(target_arch = "x86_64")]
    if ctx.features().has_avx2_fma() {
        // SAFETY: AVX2 was detected at run time.
        let m = unsafe { finite_max_avx2(x) };
        return match m {
            Some(m) => Ok(x.iter().position(|&v| v == m).map_or(0, |i| i as u32)),
            None => Err(no_finite(x.len())),
        };
    }
    let _ = ctx;
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in x.iter().enumerate() {
        match best {
            Some((_, b)) if v <= b => {}
            _ if !v.is_finite() => {}
            _ => best = Some((i, v)),
        }
    }
    best.map(|(i, _)| i as u32)
        .ok_or_else(|| no_finite(x.len()))
}

fn no_finite(n: usize) -> Error {
    Error::invalid("argmax", format!("no finite value among {n} inputs"))
}

/// The largest finite value, or `None` when there is none.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn finite_max_avx2(x: &[f32]) -> Option<f32> {
    use std::arch::x86_64::*;
    let n = x.len();
    let p = x.as_ptr();
    let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
    let inf = _mm256_set1_ps(f32::INFINITY);
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let (mut m0, mut m1) = (ninf, ninf);
    let mut i = 0;
    while i + 16 <= n {
        let a = _mm256_loadu_ps(p.add(i));
        let b = _mm256_loadu_ps(p.add(i + 8));
        // |v| < inf is false for ±inf and NaN: those lanes become -inf.
        let fa = _mm256_cmp_ps(_mm256_and_ps(a, abs_mask), inf, _CMP_LT_OQ);
        let fb = _mm256_cmp_ps(_mm256_and_ps(b, abs_mask), inf, _CMP_LT_OQ);
        m0 = _mm256_max_ps(m0, _mm256_blendv_ps(ninf, a, fa));
        m1 = _mm256_max_ps(m1, _mm256_blendv_ps(ninf, b, fb));
        i += 16;
    }
    let mut m = crate::vmath::avx2::hmax(_mm256_max_ps(m0, m1));
    while i < n {
        let v = *p.add(i);
        if v.is_finite() && v > m {
            m = v;
        }
        i += 1;
    }
    // Finite values are > -inf, so -inf here means none was finite.
    (m != f32::NEG_INFINITY).then_some(m)
}
