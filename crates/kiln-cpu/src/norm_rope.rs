//! norm_rope on the CPU (spec: [`kiln_core::ops::norm_rope`]): the
//! composition of this crate's [`crate::rms_norm::rms_norm`] over the head
//! rows and [`crate::rope::rope_with_factors`] on its output, each
//! multithreaded and vectorised as it is on its own.
//!
//! No fused loop: the fusion exists to save CUDA launches, and the CPU has
//! no launch cost; its q/k norm and rotation are bandwidth-bound, and the
//! second pass reads rows the first has just written (cache-resident for
//! decode batches). Running the two existing kernels also keeps the CPU
//! model outputs bit-identical to the unfused sequence.

use crate::CpuContext;
use kiln_core::ops::norm_rope::{check_norm_rope_factors, NormRopeParams};
use kiln_core::Result;

/// `out = rope(rms_norm(x, w, eps))` over the `n_tokens * n_heads` head
/// rows of `x, out: [n_tokens, n_heads, head_dim]`; `w: [head_dim]`,
/// `positions: [n_tokens]`, `factors: [n_rot / 2]`. Everything is checked
/// before `out` is written.
pub fn norm_rope(
    ctx: &CpuContext,
    p: &NormRopeParams,
    x: &[f32],
    w: &[f32],
    factors: Option<&[f32]>,
    positions: &[i32],
    out: &mut [f32],
) -> Result<()> {
    p.validate(x.len(), w.len(), positions.len(), out.len())?;
    check_norm_rope_factors(p, factors)?;
    crate::rms_norm::rms_norm(ctx, &p.norm(), x, w, out)?;
    crate::rope::rope_with_factors(ctx, &p.rope, factors, positions, out)
}
