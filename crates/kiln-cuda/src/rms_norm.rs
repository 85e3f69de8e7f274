//! rms_norm on CUDA: validate → launch (`kernels/rms_norm.cu`). Implements
//! `kiln_core::ops::rms_norm`: one block per row, f32 accumulation.

use crate::kernels::RMS_NORM;
use crate::launch::ExArgs;
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{CudaView, CudaViewMut, DeviceRepr};
use kiln_core::ops::rms_norm::RmsNormParams;

/// Mirrors `struct RmsNormParams` in rms_norm.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct RmsNormK {
    rows: u64,
    dim: u64,
    eps: f32,
    pad: u32,
}
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for RmsNormK {}

/// `out = x * rsqrt(mean(x^2) + eps) * w` per row of `x: [rows, dim]`, `w: [dim]`.
pub fn rms_norm(
    be: &CudaBackend,
    p: &RmsNormParams,
    x: &CudaView<'_, f32>,
    w: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate(x.len(), w.len(), out.len())?;
    if p.rows == 0 {
        return Ok(());
    }
    let f = be.function("rms_norm", RMS_NORM, "rms_norm_f32")?;
    let cfg = crate::launch::row_grid(p.rows, p.dim);
    let k = RmsNormK {
        rows: p.rows as u64,
        dim: p.dim as u64,
        eps: p.eps,
        pad: 0,
    };
    let mut a = ExArgs::new(be);
    a.val(k).buf(x).buf(w).buf_mut(out);
    // SAFETY: argument list matches rms_norm_f32(RmsNormParams, const float*,
    // const float*, float*); x and out hold rows * dim floats and w dim
    // (validated above); blockDim is a multiple of 32 as the kernel requires.
    // PDL: the kernel waits (kiln_pdl_enter) before touching anything.
    unsafe { a.launch(be, &f, cfg, be.pdl_entry()) }
        .map_err(|e| CudaError::driver("launch rms_norm_f32", e))?;
    Ok(())
}
