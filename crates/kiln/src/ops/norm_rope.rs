//! Per-head RMSNorm then RoPE (Qwen3 / Gemma 3 q and k norms), from `x`
//! into `out`, both `[n_tokens, n_heads, head_dim]`, with one `[head_dim]`
//! weight shared by the heads (spec: `kiln_core::ops::norm_rope`). One CUDA
//! launch where `rms_norm` + `rope_with_factors` take two.
use crate::device::Backend;
use crate::{ops::NormRopeParams, Result, Stream, Tensor};

/// `out = rope(rms_norm(x, w, eps))` per head row. `factors` (f32, `n_rot /
/// 2`) divide the pairs' angles as in [`super::rope_with_factors`]: on the
/// CPU every call checks their values, a CUDA stream their length only (the
/// values are on the device: check them once with
/// `kiln_core::ops::rope::check_factors` where they are loaded). Positions
/// reach a CUDA stream through its device copy, as for [`super::rope`].
pub fn norm_rope(
    s: &Stream,
    p: &NormRopeParams,
    x: &Tensor,
    w: &Tensor,
    factors: Option<&Tensor>,
    positions: &[i32],
    out: &mut Tensor,
) -> Result<()> {
    const OP: &str = "norm_rope";
    let _timer = s.scope(OP);
    let r = &p.rope;
    // Checked before the prefixes are taken, so an overflowing shape is a
    // typed error, not a wrapped length.
    let n = r
        .n_tokens
        .saturating_mul(r.n_heads)
        .saturating_mul(r.head_dim);
    p.validate(n, r.head_dim, positions.len(), n)?;
    let n_factors = r.n_rot / 2;
    match s.backend() {
        Backend::Cpu(ctx) => {
            let f = factors
                .map(|f| f.f32_prefix(OP, "frequency factors", n_factors))
                .transpose()?;
            let x = x.f32_prefix(OP, "x", n)?;
            let w = w.f32_prefix(OP, "w", r.head_dim)?;
            let out = out.f32_prefix_mut(OP, "out", n)?;
            Ok(kiln_cpu::norm_rope::norm_rope(
                ctx, p, x, w, f, positions, out,
            )?)
        }
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            let f = factors
                .map(|f| f.cuda_f32(OP, "frequency factors", n_factors))
                .transpose()?;
            let x = x.cuda_f32(OP, "x", n)?;
            let w = w.cuda_f32(OP, "w", r.head_dim)?;
            let mut out = out.cuda_f32_mut(OP, "out", n)?;
            s.with_device_positions(be, positions, |pos| {
                kiln_cuda::norm_rope::norm_rope(be, p, &x, &w, f.as_ref(), pos, &mut out)
                    .map_err(super::cuda_err)
            })
        }
    }
}
