//! mul on CUDA: validate → launch (`kernels/mul.cu`). Implements
//! `kiln_core::ops::mul`: `out = a * b`, bit-exact.

use crate::kernels::MUL;
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{CudaView, CudaViewMut, DeviceRepr, PushKernelArg};
use kiln_core::ops::mul::MulParams;

/// Mirrors `struct MulParams` in mul.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct MulK {
    n: u64,
}
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for MulK {}

/// `out[i] = a[i] * b[i]` for `i < n` on the backend's stream.
pub fn mul(
    be: &CudaBackend,
    p: &MulParams,
    a: &CudaView<'_, f32>,
    b: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate(a.len(), b.len(), out.len())?;
    if p.n == 0 {
        return Ok(());
    }
    let f = be.function("mul", MUL, "mul_f32")?;
    let cfg = crate::launch::vec4_grid(p.n);
    let k = MulK { n: p.n as u64 };
    let mut l = be.stream().launch_builder(&f);
    l.arg(&k).arg(a).arg(b).arg(out);
    // SAFETY: argument list matches mul_f32(MulParams, const float*, const
    // float*, float*); all three hold n floats (validated above).
    unsafe { l.launch(cfg) }.map_err(|e| CudaError::driver("launch mul_f32", e))?;
    Ok(())
}
