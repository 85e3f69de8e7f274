//! `out = x / max(|x|, eps)` per row (spec: [`kiln_core::ops::l2_norm`]).
//! CUDA has no kernel yet: a CUDA stream gets a typed error before any work.
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
        Backend::Cuda(_) => Err(crate::Error::NotSupported {
            op: OP,
            device: s.device().to_string(),
        }),
    }
}
