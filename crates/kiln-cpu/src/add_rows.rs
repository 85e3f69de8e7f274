//! add_rows on the CPU (spec: [`kiln_core::ops::add_rows`]): one f32 add
//! per element, so bit-identical to the reference; rows split over the
//! pool for large inputs.

use crate::CpuContext;
use kiln_core::ops::add_rows::AddRowsParams;
use kiln_core::Result;
use rayon::prelude::*;

/// Below this many elements one thread does everything.
const PAR_MIN: usize = 1 << 15;

pub fn add_rows(ctx: &CpuContext, p: &AddRowsParams, x: &mut [f32], bias: &[f32]) -> Result<()> {
    p.validate(x.len(), bias.len())?;
    if p.dim == 0 {
        return Ok(());
    }
    let row = |r: &mut [f32]| r.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
    if x.len() < PAR_MIN || ctx.threads() == 1 {
        x.chunks_exact_mut(p.dim).for_each(row);
    } else {
        ctx.pool()
            .install(|| x.par_chunks_exact_mut(p.dim).for_each(row));
    }
    Ok(())
}
