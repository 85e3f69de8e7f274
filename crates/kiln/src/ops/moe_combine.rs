//! Weighted sum of expert outputs plus the residual (spec:
//! [`kiln_core::ops::moe_combine`]). CUDA has no kernel yet: a CUDA stream
//! gets a typed error before any work.
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
        Backend::Cuda(_) => Err(kiln_core::Error::invalid(
            OP,
            "no CUDA kernel yet: run moe_combine on a CPU stream",
        )
        .into()),
    }
}
