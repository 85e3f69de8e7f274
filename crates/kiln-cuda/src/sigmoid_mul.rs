//! sigmoid_mul on CUDA: validate → launch (`kernels/sigmoid_mul.cu`). Implements
//! `kiln_core::ops::sigmoid_mul`: `out = up / (1 + exp(-gate))`.

use crate::kernels::SIGMOID_MUL;
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{CudaView, CudaViewMut, DeviceRepr, PushKernelArg};
use kiln_core::ops::sigmoid_mul::SigmoidMulParams;

/// Mirrors `struct SigmoidMulParams` in sigmoid_mul.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct SigmoidMulK {
    n: u64,
}
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for SigmoidMulK {}

/// `out[i] = sigmoid(gate[i]) * up[i]` for `i < n`.
pub fn sigmoid_mul(
    be: &CudaBackend,
    p: &SigmoidMulParams,
    gate: &CudaView<'_, f32>,
    up: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate(gate.len(), up.len(), out.len())?;
    if p.n == 0 {
        return Ok(());
    }
    let f = be.function("sigmoid_mul", SIGMOID_MUL, "sigmoid_mul_f32")?;
    let cfg = crate::launch::vec4_grid(p.n);
    let k = SigmoidMulK { n: p.n as u64 };
    let mut l = be.stream().launch_builder(&f);
    l.arg(&k).arg(gate).arg(up).arg(out);
    // SAFETY: argument list matches sigmoid_mul_f32(SigmoidMulParams, const float*,
    // const float*, float*); all three hold n floats (validated above).
    unsafe { l.launch(cfg) }.map_err(|e| CudaError::driver("launch sigmoid_mul_f32", e))?;
    Ok(())
}
