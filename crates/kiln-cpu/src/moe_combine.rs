//! moe_combine on the CPU (spec: [`kiln_core::ops::moe_combine`]): per
//! token, the residual plus each slot's weighted row, in f32 with FMAs
//! (slots in order); tokens spread over the pool for large batches.

use crate::CpuContext;
use kiln_core::ops::moe_combine::MoeCombineParams;
use kiln_core::Result;
use rayon::prelude::*;

/// Below this many output elements one thread does everything.
const PAR_MIN: usize = 1 << 15;

pub fn moe_combine(
    ctx: &CpuContext,
    p: &MoeCombineParams,
    y: &[f32],
    weights: &[f32],
    residual: &[f32],
    out: &mut [f32],
) -> Result<()> {
    p.validate(y.len(), weights.len(), residual.len(), out.len())?;
    if p.dim == 0 || p.n_tokens == 0 {
        return Ok(());
    }
    let (k, d) = (p.top_k, p.dim);
    let one = |t: usize, o: &mut [f32]| {
        o.copy_from_slice(&residual[t * d..][..d]);
        for s in 0..k {
            let r = t * k + s;
            let w = weights[r];
            for (ov, &yv) in o.iter_mut().zip(&y[r * d..][..d]) {
                *ov = w.mul_add(yv, *ov);
            }
        }
    };
    if out.len() < PAR_MIN || ctx.threads() == 1 {
        out.chunks_exact_mut(d)
            .enumerate()
            .for_each(|(t, o)| one(t, o));
    } else {
        ctx.pool().install(|| {
            out.par_chunks_exact_mut(d)
                .enumerate()
                .for_each(|(t, o)| one(t, o));
        });
    }
    Ok(())
}
