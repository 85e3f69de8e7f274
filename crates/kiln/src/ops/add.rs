//! `out = a + b` over the first `p.n` elements.
use crate::device::Backend;
use crate::{ops::AddParams, Result, Stream, Tensor};

pub fn add(s: &Stream, p: &AddParams, a: &Tensor, b: &Tensor, out: &mut Tensor) -> Result<()> {
    const OP: &str = "add";
    let _timer = s.scope(OP);
    match s.backend() {
        Backend::Cpu(ctx) => {
            let a = a.f32_prefix(OP, "a", p.n)?;
            let b = b.f32_prefix(OP, "b", p.n)?;
            let out = out.f32_prefix_mut(OP, "out", p.n)?;
            Ok(kiln_cpu::add::add(ctx, p, a, b, out)?)
        }
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            let a = a.cuda_f32(OP, "a", p.n)?;
            let b = b.cuda_f32(OP, "b", p.n)?;
            let mut out = out.cuda_f32_mut(OP, "out", p.n)?;
            kiln_cuda::add::add(be, p, &a, &b, &mut out).map_err(super::cuda_err)
        }
    }
}
