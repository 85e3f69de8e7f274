//! Row softmax of `x * scale`.
use crate::{ops::SoftmaxParams, Device, Result, Stream, Tensor};

pub fn softmax(s: &Stream, p: &SoftmaxParams, x: &Tensor, out: &mut Tensor) -> Result<()> {
    const OP: &str = "softmax";
    let n = p.rows * p.cols;
    let x = x.f32_prefix(OP, "x", n)?;
    let out = out.f32_prefix_mut(OP, "out", n)?;
    match s.device() {
        Device::Cpu => Ok(kiln_cpu::softmax::softmax(s.cpu_ctx(), p, x, out)?),
    }
}
