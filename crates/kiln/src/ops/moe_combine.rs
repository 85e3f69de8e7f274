//! Weighted sum of expert outputs plus the residual (spec:
//! [`kiln_core::ops::moe_combine`]).
use crate::device::Backend;
use crate::{ops::MoeCombineParams, Result, Stream, Tensor};

pub fn moe_combine(
    s: &Stream,
    p: &MoeCombineParams,
    y: &Tensor,
    weights: &Tensor,
    residual: &Tensor,
    out: &mut Tensor,
) -> Result<()> {
    const OP: &str = "moe_combine";
    let _timer = s.scope(OP);
    let rows = p.n_tokens * p.top_k;
    match s.backend() {
        Backend::Cpu(ctx) => {
            let ys = y.f32_prefix(OP, "y", rows * p.dim)?;
            let ws = weights.f32_prefix(OP, "weights", rows)?;
            let rs = residual.f32_prefix(OP, "residual", p.n_tokens * p.dim)?;
            let os = out.f32_prefix_mut(OP, "out", p.n_tokens * p.dim)?;
            Ok(kiln_cpu::moe_combine::moe_combine(ctx, p, ys, ws, rs, os)?)
        }
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            let ys = y.cuda_f32(OP, "y", rows * p.dim)?;
            let ws = weights.cuda_f32(OP, "weights", rows)?;
            let rs = residual.cuda_f32(OP, "residual", p.n_tokens * p.dim)?;
            let mut os = out.cuda_f32_mut(OP, "out", p.n_tokens * p.dim)?;
            kiln_cuda::moe_combine::moe_combine(be, p, &ys, &ws, &rs, &mut os)
                .map_err(super::cuda_err)
        }
    }
}
