//! RMSNorm of `p.rows` rows, scaled by `w`.
use crate::device::Backend;
use crate::{ops::RmsNormParams, Result, Stream, Tensor};

pub fn rms_norm(
    s: &Stream,
    p: &RmsNormParams,
    x: &Tensor,
    w: &Tensor,
    out: &mut Tensor,
) -> Result<()> {
    const OP: &str = "rms_norm";
    let _timer = s.scope(OP);
    let n = p.rows * p.dim;
    match s.backend() {
        Backend::Cpu(ctx) => {
            let x = x.f32_prefix(OP, "x", n)?;
            let w = w.f32_prefix(OP, "w", p.dim)?;
            let out = out.f32_prefix_mut(OP, "out", n)?;
            Ok(kiln_cpu::rms_norm::rms_norm(ctx, p, x, w, out)?)
        }
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            let x = x.cuda_f32(OP, "x", n)?;
            let w = w.cuda_f32(OP, "w", p.dim)?;
            let mut out = out.cuda_f32_mut(OP, "out", n)?;
            kiln_cuda::rms_norm::rms_norm(be, p, &x, &w, &mut out).map_err(super::cuda_err)
        }
    }
}
