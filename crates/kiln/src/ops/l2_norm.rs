//! `out = x / max(|x|, eps)` per row (spec: [`kiln_core::ops::l2_norm`]).
use crate::device::Backend;
use crate::{ops::L2NormParams, Result, Stream, Tensor};

pub fn l2_norm(s: &Stream, p: &L2NormParams, x: &Tensor, out: &mut Tensor) -> Result<()> {
    const OP: &str = "l2_norm";
    let _timer = s.scope(OP);
    let n = p.rows.saturating_mul(p.dim);
    match s.backend() {
        Backend::Cpu(ctx) => {
            let x = x.f32_prefix(OP, "x", n)?;
            let out = out.f32_prefix_mut(OP, "out", n)?;
            Ok(kiln_cpu::l2_norm::l2_norm(ctx, p, x, out)?)
        }
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            let x = x.cuda_f32(OP, "x", n)?;
            let mut out = out.cuda_f32_mut(OP, "out", n)?;
            kiln_cuda::l2_norm::l2_norm(be, p, &x, &mut out).map_err(super::cuda_err)
        }
    }
}
