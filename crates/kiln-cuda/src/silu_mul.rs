//! silu_mul on CUDA: validate → launch (`kernels/silu_mul.cu`). Implements
//! `kiln_core::ops::silu_mul`: `out = gate / (1 + exp(-gate)) * up`.

use crate::kernels::SILU_MUL;
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{CudaView, CudaViewMut, DeviceRepr, PushKernelArg};
use kiln_core::ops::silu_mul::SiluMulParams;

/// Mirrors the `{ u64 n; }` params struct of the gated elementwise kernels
/// (`SiluMulParams` in silu_mul.cu, `SigmoidMulParams` in sigmoid_mul.cu).
#[repr(C)]
#[derive(Clone, Copy)]
struct GatedK {
    n: u64,
}
// SAFETY: plain-old-data with the same layout as the .cu structs.
unsafe impl DeviceRepr for GatedK {}

/// `out[i] = silu(gate[i]) * up[i]` for `i < n`.
pub fn silu_mul(
    be: &CudaBackend,
    p: &SiluMulParams,
    gate: &CudaView<'_, f32>,
    up: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate(gate.len(), up.len(), out.len())?;
    launch_gated(
        be,
        ("silu_mul", SILU_MUL, "silu_mul_f32"),
        p.n,
        gate,
        up,
        out,
    )
}

/// Launch the gated kernel `(family, source, entry)` over `n` validated
/// values: `entry(GatedK, const float* gate, const float* up, float* out)`.
pub(crate) fn launch_gated(
    be: &CudaBackend,
    (family, src, entry): (&'static str, &'static str, &'static str),
    n: usize,
    gate: &CudaView<'_, f32>,
    up: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let f = be.function(family, src, entry)?;
    let k = GatedK { n: n as u64 };
    let mut l = be.stream().launch_builder(&f);
    l.arg(&k).arg(gate).arg(up).arg(out);
    // SAFETY: argument list matches entry(GatedK-layout params, const float*,
    // const float*, float*); the caller validated that all three hold n floats.
    unsafe { l.launch(crate::launch::vec4_grid(n)) }.map_err(|e| CudaError::driver(entry, e))?;
    Ok(())
}
