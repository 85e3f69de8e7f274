//! l2_norm on CUDA: validate → launch (`kernels/l2_norm.cu`). Implements
//! `kiln_core::ops::l2_norm`: one block per row, f32 accumulation.

use crate::kernels::L2_NORM;
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{CudaView, CudaViewMut, DeviceRepr, PushKernelArg};
use kiln_core::ops::l2_norm::L2NormParams;

/// Mirrors `struct L2NormParams` in l2_norm.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct L2NormK {
    rows: u64,
    dim: u64,
    eps: f32,
    pad: u32,
}
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for L2NormK {}

/// `out = x / max(|x|, eps)` per row of `x: [rows, dim]`.
pub fn l2_norm(
    be: &CudaBackend,
    p: &L2NormParams,
    x: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate(x.len(), out.len())?;
    if p.rows == 0 {
        return Ok(());
    }
    let f = be.function("l2_norm", L2_NORM, "l2_norm_f32")?;
    let cfg = crate::launch::row_grid(p.rows, p.dim);
    let k = L2NormK {
        rows: p.rows as u64,
        dim: p.dim as u64,
        eps: p.eps,
        pad: 0,
    };
    let mut l = be.stream().launch_builder(&f);
    l.arg(&k).arg(x).arg(out);
    // SAFETY: argument list matches l2_norm_f32(L2NormParams, const float*,
    // float*); x and out hold rows * dim floats (validated above); blockDim
    // is a multiple of 32 as the kernel requires.
    unsafe { l.launch(cfg) }.map_err(|e| CudaError::driver("launch l2_norm_f32", e))?;
    Ok(())
}
