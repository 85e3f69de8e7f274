//! scale on CUDA: validate → launch (`kernels/scale.cu`). Implements
//! `kiln_core::ops::scale`: `out = alpha * x`, bit-exact.

use crate::kernels::SCALE;
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{CudaView, CudaViewMut, DeviceRepr, PushKernelArg};
use kiln_core::ops::scale::ScaleParams;

/// Mirrors `struct ScaleParams` in scale.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct ScaleK {
    n: u64,
    alpha: f32,
}
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for ScaleK {}

/// `out[i] = alpha * x[i]` for `i < n`.
pub fn scale(
    be: &CudaBackend,
    p: &ScaleParams,
    x: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate(x.len(), out.len())?;
    if p.n == 0 {
        return Ok(());
    }
    let f = be.function("scale", SCALE, "scale_f32")?;
    let cfg = crate::launch::vec4_grid(p.n);
    let k = ScaleK {
        n: p.n as u64,
        alpha: p.alpha,
    };
    let mut l = be.stream().launch_builder(&f);
    l.arg(&k).arg(x).arg(out);
    // SAFETY: argument list matches scale_f32(ScaleParams, const float*,
    // float*); both hold n floats (validated above).
    unsafe { l.launch(cfg) }.map_err(|e| CudaError::driver("launch scale_f32", e))?;
    Ok(())
}
