//! softmax on CUDA: validate → launch (`kernels/softmax.cu`). Implements
//! `kiln_core::ops::softmax` (scale, max subtraction, `-inf` → 0, all `-inf`
//! rows → zeros): one block per row.

use crate::kernels::SOFTMAX;
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{CudaView, CudaViewMut, DeviceRepr, PushKernelArg};
use kiln_core::ops::softmax::SoftmaxParams;

/// Mirrors `struct SoftmaxParams` in softmax.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct SoftmaxK {
    rows: u64,
    cols: u64,
    scale: f32,
    pad: u32,
}
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for SoftmaxK {}

/// Row-wise softmax of `scale * x` for `x, out: [rows, cols]`.
pub fn softmax(
    be: &CudaBackend,
    p: &SoftmaxParams,
    x: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate(x.len(), out.len())?;
    if p.rows == 0 {
        return Ok(());
    }
    let f = be.function("softmax", SOFTMAX, "softmax_f32")?;
    let cfg = crate::launch::row_grid(p.rows, p.cols);
    let k = SoftmaxK {
        rows: p.rows as u64,
        cols: p.cols as u64,
        scale: p.scale,
        pad: 0,
    };
    let mut l = be.stream().launch_builder(&f);
    l.arg(&k).arg(x).arg(out);
    // SAFETY: argument list matches softmax_f32(SoftmaxParams, const float*,
    // float*); x and out hold rows * cols floats (validated above); blockDim
    // is a multiple of 32 as the kernel requires.
    unsafe { l.launch(cfg) }.map_err(|e| CudaError::driver("launch softmax_f32", e))?;
    Ok(())
}
