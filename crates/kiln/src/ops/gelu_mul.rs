//! `out = gelu_tanh(gate) * up` over the first `p.n` elements (Gemma's GeGLU).
use crate::device::Backend;
use crate::{ops::GeluMulParams, Result, Stream, Tensor};

pub fn gelu_mul(
    s: &Stream,
    p: &GeluMulParams,
    gate: &Tensor,
    up: &Tensor,
    out: &mut Tensor,
) -> Result<()> {
    const OP: &str = "gelu_mul";
    let _timer = s.scope(OP);
    match s.backend() {
        Backend::Cpu(ctx) => {
            let gate = gate.f32_prefix(OP, "gate", p.n)?;
            let up = up.f32_prefix(OP, "up", p.n)?;
            let out = out.f32_prefix_mut(OP, "out", p.n)?;
            Ok(kiln_cpu::gelu_mul::gelu_mul(ctx, p, gate, up, out)?)
        }
        #[cfg(feature = "cuda")]
        Backend::Cuda(_) => Err(crate::Error::NotSupported {
            op: OP,
            device: s.device().to_string(),
        }),
    }
}
