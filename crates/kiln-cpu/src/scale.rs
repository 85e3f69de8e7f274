//! scale on the CPU: `out = alpha * x` (spec: [`kiln_core::ops::scale`]).
//! One f32 multiply per element (the compiler vectorises the loop), so the
//! result equals the reference bit for bit; chunked over the rayon pool for
//! long vectors.

use crate::CpuContext;
use kiln_core::ops::scale::ScaleParams;
use kiln_core::Result;
use rayon::prelude::*;

/// Below this many elements one thread does the whole vector.
const PAR_MIN: usize = 1 << 16;
/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// `out = alpha * x`.
pub fn scale(ctx: &CpuContext, p: &ScaleParams, x: &[f32], out: &mut [f32]) -> Result<()> {
    p.validate(x.len(), out.len())?;
    let a = p.alpha;
    let run = |x: &[f32], o: &mut [f32]| {
        for (o, &v) in o.iter_mut().zip(x) {
            *o = a * v;
        }
    };
    if p.n < PAR_MIN || ctx.threads() == 1 {
        run(x, out);
    } else {
        ctx.pool().install(|| {
            out.par_chunks_mut(CHUNK)
                .zip(x.par_chunks(CHUNK))
                .for_each(|(o, x)| run(x, o));
        });
    }
    Ok(())
}
