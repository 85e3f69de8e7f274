//! `out = sigmoid(gate) * up` over the first `p.n` elements (gated attention's output gate).
use crate::device::Backend;
use crate::{ops::SigmoidMulParams, Result, Stream, Tensor};

pub fn sigmoid_mul(
    s: &Stream,
    p: &SigmoidMulParams,
    gate: &Tensor,
    up: &Tensor,
    out: &mut Tensor,
) -> Result<()> {
    const OP: &str = "sigmoid_mul";
    let _timer = s.scope(OP);
    match s.backend() {
        Backend::Cpu(ctx) => {
            let gate = gate.f32_prefix(OP, "gate", p.n)?;
            let up = up.f32_prefix(OP, "up", p.n)?;
            let out = out.f32_prefix_mut(OP, "out", p.n)?;
            Ok(kiln_cpu::sigmoid_mul::sigmoid_mul(ctx, p, gate, up, out)?)
        }
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            let gate = gate.cuda_f32(OP, "gate", p.n)?;
            let up = up.cuda_f32(OP, "up", p.n)?;
            let mut out = out.cuda_f32_mut(OP, "out", p.n)?;
            kiln_cuda::sigmoid_mul::sigmoid_mul(be, p, &gate, &up, &mut out)
                .map_err(super::cuda_err)
        }
    }
}
