//! Row-parallel driver shared by the row-wise families (layer_norm, l2_norm):
//! `f(x_row, out_row)` over `[rows, dim]` buffers, on one thread for small
//! work and spread over the rayon pool in runs of rows otherwise.

use crate::CpuContext;
use rayon::prelude::*;

/// Below this many elements one thread does every row.
const PAR_MIN: usize = 1 << 14;

/// Apply `f` to each `dim`-long row pair of `x` and `out` (equal lengths,
/// multiples of `dim`, checked by the caller's `validate`).
pub(crate) fn for_rows(
    ctx: &CpuContext,
    dim: usize,
    x: &[f32],
    out: &mut [f32],
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) {
    if dim == 0 {
        return;
    }
    let each = |xs: &[f32], os: &mut [f32]| {
        xs.chunks_exact(dim)
            .zip(os.chunks_exact_mut(dim))
            .for_each(|(xr, or)| f(xr, or));
    };
    if x.len() < PAR_MIN || ctx.threads() == 1 {
        each(x, out);
    } else {
        let per_task = (PAR_MIN / 4 / dim).max(1) * dim;
        ctx.pool().install(|| {
            x.par_chunks(per_task)
                .zip(out.par_chunks_mut(per_task))
                .for_each(|(xs, os)| each(xs, os));
        });
    }
}
