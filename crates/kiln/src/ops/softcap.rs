//! `out = cap * tanh(x / cap)` over the first `p.n` elements (spec:
//! [`kiln_core::ops::softcap`]).
use crate::device::Backend;
use crate::{ops::SoftcapParams, Result, Stream, Tensor};

pub fn softcap(s: &Stream, p: &SoftcapParams, x: &Tensor, out: &mut Tensor) -> Result<()> {
    const OP: &str = "softcap";
    let _timer = s.scope(OP);
    match s.backend() {
        Backend::Cpu(ctx) => {
            let x = x.f32_prefix(OP, "x", p.n)?;
            let out = out.f32_prefix_mut(OP, "out", p.n)?;
            Ok(kiln_cpu::softcap::softcap(ctx, p, x, out)?)
        }
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            let x = x.cuda_f32(OP, "x", p.n)?;
            let mut out = out.cuda_f32_mut(OP, "out", p.n)?;
            kiln_cuda::softcap::softcap(be, p, &x, &mut out).map_err(super::cuda_err)
        }
    }
}
