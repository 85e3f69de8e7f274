//! `out = gelu(gate) * up` over the first `p.n` elements (Gemma's GeGLU;
//! tanh or erf GELU by `p.mode`).
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
        Backend::Cuda(be) => {
            let gate = gate.cuda_f32(OP, "gate", p.n)?;
            let up = up.cuda_f32(OP, "up", p.n)?;
            let mut out = out.cuda_f32_mut(OP, "out", p.n)?;
            kiln_cuda::gelu_mul::gelu_mul(be, p, &gate, &up, &mut out).map_err(super::cuda_err)
        }
    }
}
