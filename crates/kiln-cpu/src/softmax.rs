//! softmax on the CPU (spec: [`kiln_core::ops::softmax`]): per row scale,
//! max, `exp(y - max)` with the vectorised exp (relative error < 4e-7) and a
//! sum in f64 lanes, then one multiply by the reciprocal. Rows spread over
//! the rayon pool when the batch is large.

use crate::vmath;
use crate::CpuContext;
use kiln_core::ops::softmax::SoftmaxParams;
use kiln_core::Result;
use rayon::prelude::*;

/// Below this many elements one thread does every row.
const PAR_MIN: usize = 1 << 14;

/// Row-wise `softmax(scale * x)`; a row that is entirely `-inf` gives zeros.
pub fn softmax(ctx: &CpuContext, p: &SoftmaxParams, x: &[f32], out: &mut [f32]) -> Result<()> {
    p.validate(x.len(), out.len())?;
    let f = ctx.features();
    let (cols, scale) = (p.cols, p.scale);
    let row = |xr: &[f32], or: &mut [f32]| {
        for (o, &v) in or.iter_mut().zip(xr) {
            *o = v * scale;
        }
        let m = vmath::max(f, or);
        if m == f32::NEG_INFINITY {
            or.fill(0.0);
            return;
        }
        let sum = vmath::exp_sub_sum(f, or, m);
        let inv = 1.0 / sum;
        or.iter_mut().for_each(|v| *v *= inv);
    };
    if p.rows * cols < PAR_MIN || ctx.threads() == 1 {
        x.chunks_exact(cols)
            .zip(out.chunks_exact_mut(cols))
            .for_each(|(xr, or)| row(xr, or));
    } else {
        let rows_per_task = (PAR_MIN / 4 / cols).max(1);
        ctx.pool().install(|| {
            x.par_chunks(rows_per_task * cols)
                .zip(out.par_chunks_mut(rows_per_task * cols))
                .for_each(|(xs, os)| {
                    xs.chunks_exact(cols)
                        .zip(os.chunks_exact_mut(cols))
                        .for_each(|(xr, or)| row(xr, or));
                });
        });
    }
    Ok(())
}
