//! `out = a * b` over the first `p.n` elements.
use crate::device::Backend;
use crate::{ops::MulParams, Result, Stream, Tensor};

pub fn mul(s: &Stream, p: &MulParams, a: &Tensor, b: &Tensor, out: &mut Tensor) -> Result<()> {
    const OP: &str = "mul";
    let _timer = s.scope(OP);
    match s.backend() {
        Backend::Cpu(ctx) => {
            let a = a.f32_prefix(OP, "a", p.n)?;
            let b = b.f32_prefix(OP, "b", p.n)?;
            let out = out.f32_prefix_mut(OP, "out", p.n)?;
            Ok(kiln_cpu::mul::mul(ctx, p, a, b, out)?)
        }
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            let a = a.cuda_f32(OP, "a", p.n)?;
            let b = b.cuda_f32(OP, "b", p.n)?;
            let mut out = out.cuda_f32_mut(OP, "out", p.n)?;
            kiln_cuda::mul::mul(be, p, &a, &b, &mut out).map_err(super::cuda_err)
        }
    }
}
