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
        Backend::Cuda(_) => Err(crate::Error::NotSupported {
            op: OP,
            device: s.device().to_string(),
        }),
    }
}
