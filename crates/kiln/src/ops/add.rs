//! `out = a + b` over the first `p.n` elements.
use crate::{ops::AddParams, Device, Result, Stream, Tensor};

pub fn add(s: &Stream, p: &AddParams, a: &Tensor, b: &Tensor, out: &mut Tensor) -> Result<()> {
    const OP: &str = "add";
    let a = a.f32_prefix(OP, "a", p.n)?;
    let b = b.f32_prefix(OP, "b", p.n)?;
    let out = out.f32_prefix_mut(OP, "out", p.n)?;
    match s.device() {
        Device::Cpu => Ok(kiln_cpu::add::add(s.cpu_ctx(), p, a, b, out)?),
    }
}
