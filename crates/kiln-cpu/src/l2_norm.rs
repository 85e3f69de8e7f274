//! l2_norm on the CPU (spec: [`kiln_core::ops::l2_norm`]): per row the sum
//! of squares in f64, then `out = x / max(norm, eps)` in f32; rows spread
//! over the rayon pool when the batch is large.

use crate::rows::for_rows;
use crate::CpuContext;
use kiln_core::ops::l2_norm::L2NormParams;
use kiln_core::Result;

/// `out[r] = x[r] / max(|x[r]|, eps)`.
pub fn l2_norm(ctx: &CpuContext, p: &L2NormParams, x: &[f32], out: &mut [f32]) -> Result<()> {
    p.validate(x.len(), out.len())?;
    let eps = f64::from(p.eps);
    for_rows(ctx, p.dim, x, out, |xr, or| {
        let ss: f64 = xr.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let inv = (1.0 / ss.sqrt().max(eps)) as f32;
        for (o, &v) in or.iter_mut().zip(xr) {
            *o = v * inv;
        }
    });
    Ok(())
}
