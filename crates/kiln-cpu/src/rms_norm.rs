//! rms_norm on the CPU (spec: [`kiln_core::ops::rms_norm`]): per row the sum
//! of squares in f64 lanes, then `out = x * inv_rms * w`; rows spread over
//! the rayon pool when the batch is large.

use crate::vmath;
use crate::CpuContext;
use kiln_core::ops::rms_norm::RmsNormParams;
use kiln_core::Result;
use rayon::prelude::*;

/// Below this many elements one thread does every row.
const PAR_MIN: usize = 1 << 14;

/// `out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w`.
pub fn rms_norm(
    ctx: &CpuContext,
    p: &RmsNormParams,
    x: &[f32],
    w: &[f32],
    out: &mut [f32],
) -> Result<()> {
    p.validate(x.len(), w.len(), out.len())?;
    let f = ctx.features();
    let (dim, eps) = (p.dim, f64::from(p.eps));
    let row = |xr: &[f32], or: &mut [f32]| {
        #[cfg(target_arch = "x86_64")]
        if f.has_avx2_fma() {
            // SAFETY: AVX2+FMA were detected at run time; xr, or and w all have `dim` elements.
            unsafe { row_avx2(xr, w, or, eps) };
            return;
        }
        let inv = (1.0 / (vmath::scalar::sum_sq(xr) / dim as f64 + eps).sqrt()) as f32;
        for ((o, &v), &wi) in or.iter_mut().zip(xr).zip(w) {
            *o = v * inv * wi;
        }
    };
    if p.rows * dim < PAR_MIN || ctx.threads() == 1 {
        x.chunks_exact(dim)
            .zip(out.chunks_exact_mut(dim))
            .for_each(|(xr, or)| row(xr, or));
    } else {
        let rows_per_task = (PAR_MIN / 4 / dim).max(1);
        ctx.pool().install(|| {
            x.par_chunks(rows_per_task * dim)
                .zip(out.par_chunks_mut(rows_per_task * dim))
                .for_each(|(xs, os)| {
                    xs.chunks_exact(dim)
                        .zip(os.chunks_exact_mut(dim))
                        .for_each(|(xr, or)| row(xr, or));
                });
        });
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_avx2(x: &[f32], w: &[f32], out: &mut [f32], eps: f64) {
    use std::arch::x86_64::*;
    let n = out.len().min(x.len()).min(w.len());
    let inv = (1.0 / (vmath::avx2::sum_sq(x) / n as f64 + eps).sqrt()) as f32;
    let vi = _mm256_set1_ps(inv);
    let (px, pw, po) = (x.as_ptr(), w.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    while i + 8 <= n {
        let v = _mm256_mul_ps(
            _mm256_mul_ps(_mm256_loadu_ps(px.add(i)), vi),
            _mm256_loadu_ps(pw.add(i)),
        );
        _mm256_storeu_ps(po.add(i), v);
        i += 8;
    }
    while i < n {
        *po.add(i) = *px.add(i) * inv * *pw.add(i);
        i += 1;
    }
}
