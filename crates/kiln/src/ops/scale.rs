//! `out = alpha * x` over the first `p.n` elements.
use crate::device::Backend;
use crate::{ops::ScaleParams, Result, Stream, Tensor};

pub fn scale(s: &Stream, p: &ScaleParams, x: &Tensor, out: &mut Tensor) -> Result<()> {
    const OP: &str = "scale";
    let _timer = s.scope(OP);
    match s.backend() {
        Backend::Cpu(ctx) => {
            let x = x.f32_prefix(OP, "x", p.n)?;
            let out = out.f32_prefix_mut(OP, "out", p.n)?;
            Ok(kiln_cpu::scale::scale(ctx, p, x, out)?)
        }
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            let x = x.cuda_f32(OP, "x", p.n)?;
            let mut out = out.cuda_f32_mut(OP, "out", p.n)?;
            kiln_cuda::scale::scale(be, p, &x, &mut out).map_err(super::cuda_err)
        }
    }
}
