//! `out = silu(gate) * up` over the first `p.n` elements.
use crate::{ops::SiluMulParams, Device, Result, Stream, Tensor};

pub fn silu_mul(
    s: &Stream,
    p: &SiluMulParams,
    gate: &Tensor,
    up: &Tensor,
    out: &mut Tensor,
) -> Result<()> {
    const OP: &str = "silu_mul";
    let gate = gate.f32_prefix(OP, "gate", p.n)?;
    let up = up.f32_prefix(OP, "up", p.n)?;
    let out = out.f32_prefix_mut(OP, "out", p.n)?;
    match s.device() {
        Device::Cpu => Ok(kiln_cpu::silu_mul::silu_mul(s.cpu_ctx(), p, gate, up, out)?),
    }
}
