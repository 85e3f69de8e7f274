//! layer_norm on CUDA: validate → launch (`kernels/layer_norm.cu`).
//! Implements `kiln_core::ops::layer_norm`: one block per row, two f32
//! passes over deviations from the row's first value.

use crate::kernels::LAYER_NORM;
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{CudaView, CudaViewMut, DeviceRepr, PushKernelArg};
use kiln_core::ops::layer_norm::LayerNormParams;

/// Mirrors `struct LayerNormParams` in layer_norm.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct LayerNormK {
    rows: u64,
    dim: u64,
    eps: f32,
    pad: u32,
}
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for LayerNormK {}

/// `out = (x - mean) / sqrt(var + eps) * w + b` per row of `x: [rows, dim]`;
/// `w`, `b` (`[dim]`) optional.
pub fn layer_norm(
    be: &CudaBackend,
    p: &LayerNormParams,
    x: &CudaView<'_, f32>,
    w: Option<&CudaView<'_, f32>>,
    b: Option<&CudaView<'_, f32>>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate(x.len(), w.map(|v| v.len()), b.map(|v| v.len()), out.len())?;
    if p.rows == 0 {
        return Ok(());
    }
    let f = be.function("layer_norm", LAYER_NORM, "layer_norm_f32")?;
    let cfg = crate::launch::row_grid(p.rows, p.dim);
    let k = LayerNormK {
        rows: p.rows as u64,
        dim: p.dim as u64,
        eps: p.eps,
        pad: 0,
    };
    // A missing weight or bias is a null pointer (the kernel skips it).
    let null: u64 = 0;
    let mut l = be.stream().launch_builder(&f);
    l.arg(&k).arg(x);
    match w {
        Some(w) => l.arg(w),
        None => l.arg(&null),
    };
    match b {
        Some(b) => l.arg(b),
        None => l.arg(&null),
    };
    l.arg(out);
    // SAFETY: argument list matches layer_norm_f32(LayerNormParams, const
    // float*, const float* (or null), const float* (or null), float*); x and
    // out hold rows * dim floats, w and b dim (validated above); blockDim is
    // a multiple of 32 as the kernel requires.
    unsafe { l.launch(cfg) }.map_err(|e| CudaError::driver("launch layer_norm_f32", e))?;
    Ok(())
}
