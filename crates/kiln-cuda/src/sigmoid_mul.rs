//! sigmoid_mul on CUDA: validate → launch (`kernels/sigmoid_mul.cu`). Implements
//! `kiln_core::ops::sigmoid_mul`: `out = up / (1 + exp(-gate))`.

use crate::kernels::SIGMOID_MUL;
use crate::{CudaBackend, Result};
use cudarc::driver::{CudaView, CudaViewMut};
use kiln_core::ops::sigmoid_mul::SigmoidMulParams;

/// `out[i] = sigmoid(gate[i]) * up[i]` for `i < n`.
pub fn sigmoid_mul(
    be: &CudaBackend,
    p: &SigmoidMulParams,
    gate: &CudaView<'_, f32>,
    up: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate(gate.len(), up.len(), out.len())?;
    let kernel = ("sigmoid_mul", SIGMOID_MUL, "sigmoid_mul_f32");
    crate::silu_mul::launch_gated(be, kernel, p.n, gate, up, out)
}
