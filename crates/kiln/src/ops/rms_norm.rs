//! RMSNorm of `p.rows` rows, scaled by `w`.
use crate::{ops::RmsNormParams, Device, Result, Stream, Tensor};

pub fn rms_norm(
    s: &Stream,
    p: &RmsNormParams,
    x: &Tensor,
    w: &Tensor,
    out: &mut Tensor,
) -> Result<()> {
    const OP: &str = "rms_norm";
    let n = p.rows * p.dim;
    let x = x.f32_prefix(OP, "x", n)?;
    let w = w.f32_prefix(OP, "w", p.dim)?;
    let out = out.f32_prefix_mut(OP, "out", n)?;
    match s.device() {
        Device::Cpu => Ok(kiln_cpu::rms_norm::rms_norm(s.cpu_ctx(), p, x, w, out)?),
    }
}
