//! Rotary position embedding, in place on `x: [n_tokens, n_heads, head_dim]`.
use crate::{ops::RopeParams, Device, Result, Stream, Tensor};

pub fn rope(s: &Stream, p: &RopeParams, positions: &[i32], x: &mut Tensor) -> Result<()> {
    let x = x.f32_prefix_mut("rope", "x", p.n_tokens * p.n_heads * p.head_dim)?;
    match s.device() {
        Device::Cpu => Ok(kiln_cpu::rope::rope(s.cpu_ctx(), p, positions, x)?),
    }
}
