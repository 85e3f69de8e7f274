//! add on the CPU: `out = a + b` (spec: [`kiln_core::ops::add`]), chunked
//! over the rayon pool for long vectors, AVX2 inside a chunk (the driver
//! shared with the other elementwise family: [`crate::vmath::zip_with`]).

use crate::vmath::{zip_with, ZIP_ADD};
use crate::CpuContext;
use kiln_core::ops::add::AddParams;
use kiln_core::Result;

/// `out = a + b` (bit-identical to [`kiln_core::ops::add::add_ref`]).
pub fn add(ctx: &CpuContext, p: &AddParams, a: &[f32], b: &[f32], out: &mut [f32]) -> Result<()> {
    p.validate(a.len(), b.len(), out.len())?;
    let n = p.n;
    zip_with::<ZIP_ADD>(ctx, &a[..n], &b[..n], &mut out[..n]);
    Ok(())
}
