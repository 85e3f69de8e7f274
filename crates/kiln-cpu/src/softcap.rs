//! softcap on the CPU: `out = cap * tanh(x / cap)` (spec:
//! [`kiln_core::ops::softcap`]), f32 `tanh` per element (within a few ulp
//! of the f64 reference); chunked over the rayon pool for long vectors.

use crate::CpuContext;
use kiln_core::ops::softcap::SoftcapParams;
use kiln_core::Result;
use rayon::prelude::*;

/// Below this many elements one thread does the whole vector.
const PAR_MIN: usize = 1 << 15;
/// Elements per parallel task.
const CHUNK: usize = 1 << 13;

/// `out = cap * tanh(x / cap)`.
pub fn softcap(ctx: &CpuContext, p: &SoftcapParams, x: &[f32], out: &mut [f32]) -> Result<()> {
    p.validate(x.len(), out.len())?;
    let (cap, inv) = (p.cap, 1.0 / p.cap);
    let run = |x: &[f32], o: &mut [f32]| {
        for (o, &v) in o.iter_mut().zip(x) {
            *o = cap * (v * inv).tanh();
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
