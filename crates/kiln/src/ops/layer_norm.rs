//! `out = (x - mean) / sqrt(var + eps) * w + b` per row (spec:
//! [`kiln_core::ops::layer_norm`]); `w`, `b` optional.
use crate::device::Backend;
use crate::{ops::LayerNormParams, Result, Stream, Tensor};

pub fn layer_norm(
    s: &Stream,
    p: &LayerNormParams,
    x: &Tensor,
    w: Option<&Tensor>,
    b: Option<&Tensor>,
    out: &mut Tensor,
) -> Result<()> {
    const OP: &str = "layer_norm";
    let _timer = s.scope(OP);
    let n = p.rows.saturating_mul(p.dim);
    match s.backend() {
        Backend::Cpu(ctx) => {
            let x = x.f32_prefix(OP, "x", n)?;
            let w = w.map(|w| w.f32_prefix(OP, "w", p.dim)).transpose()?;
            let b = b.map(|b| b.f32_prefix(OP, "b", p.dim)).transpose()?;
            let out = out.f32_prefix_mut(OP, "out", n)?;
            Ok(kiln_cpu::layer_norm::layer_norm(ctx, p, x, w, b, out)?)
        }
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            let x = x.cuda_f32(OP, "x", n)?;
            let w = w.map(|w| w.cuda_f32(OP, "w", p.dim)).transpose()?;
            let b = b.map(|b| b.cuda_f32(OP, "b", p.dim)).transpose()?;
            let mut out = out.cuda_f32_mut(OP, "out", n)?;
            kiln_cuda::layer_norm::layer_norm(be, p, &x, w.as_ref(), b.as_ref(), &mut out)
                .map_err(super::cuda_err)
        }
    }
}
