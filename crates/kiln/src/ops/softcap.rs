//! `out = cap * tanh(x / cap)` over the first `p.n` elements (spec:
//! [`kiln_core::ops::softcap`]). CUDA has no kernel yet: a CUDA stream gets
//! a typed error before any work.
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
        Backend::Cuda(_) => Err(crate::Error::NotSupported {
            op: OP,
            device: s.device().to_string(),
        }),
    }
}
