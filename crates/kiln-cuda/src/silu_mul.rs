//! silu_mul on CUDA: validate → launch (`kernels/silu_mul.cu`). Implements
//! `kiln_core::ops::silu_mul`: `out = gate / (1 + exp(-gate)) * up`.

use crate::kernels::SILU_MUL;
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{CudaView, CudaViewMut, DeviceRepr, PushKernelArg};
use kiln_core::ops::silu_mul::SiluMulParams;

/// Mirrors `struct SiluMulParams` in silu_mul.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct SiluMulK {
    n: u64,
}
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for SiluMulK {}

/// `out[i] = silu(gate[i]) * up[i]` for `i < n`.
pub fn silu_mul(
    be: &CudaBackend,
    p: &SiluMulParams,
    gate: &CudaView<'_, f32>,
    up: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate(gate.len(), up.len(), out.len())?;
    if p.n == 0 {
        return Ok(());
    }
    let f = be.function("silu_mul", SILU_MUL, "silu_mul_f32")?;
    let cfg = crate::launch::vec4_grid(p.n);
    let k = SiluMulK { n: p.n as u64 };
    let mut l = be.stream().launch_builder(&f);
    l.arg(&k).arg(gate).arg(up).arg(out);
    // SAFETY: argument list matches silu_mul_f32(SiluMulParams, const float*,
    // const float*, float*); all three hold n floats (validated above).
    unsafe { l.launch(cfg) }.map_err(|e| CudaError::driver("launch silu_mul_f32", e))?;
    Ok(())
}
