//! Index of the largest finite value among the first `n` elements.
use crate::{Device, Result, Stream, Tensor};

pub fn argmax(s: &Stream, x: &Tensor, n: usize) -> Result<u32> {
    let x = x.f32_prefix("argmax", "x", n)?;
    match s.device() {
        Device::Cpu => Ok(kiln_cpu::argmax::argmax(s.cpu_ctx(), x)?),
    }
}
