//! add on CUDA: validate → select → launch (`kernels/add.cu`).

use crate::kernels::ADD;
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use kiln_core::ops::add::AddParams;

/// Mirrors `struct AddParams` in add.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct AddK {
    n: u64,
}
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for AddK {}

/// `out[..n] = a[..n] + b[..n]` on the backend's stream.
pub fn add(
    be: &CudaBackend,
    p: &AddParams,
    a: &cudarc::driver::CudaView<'_, f32>,
    b: &cudarc::driver::CudaView<'_, f32>,
    out: &mut cudarc::driver::CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate(a.len(), b.len(), out.len())?;
    if p.n == 0 {
        return Ok(());
    }
    let f = be.function("add", ADD, "add_f32")?;
    let k = AddK { n: p.n as u64 };
    let threads = 256u32;
    let blocks = (p.n as u64).div_ceil(threads as u64).min(65_535) as u32;
    let cfg = LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut l = be.stream().launch_builder(&f);
    l.arg(&k).arg(a).arg(b).arg(out);
    // SAFETY: argument list matches add_f32(AddParams, const float*, const float*, float*);
    // lengths were validated above and the kernel reads/writes only [0, n).
    unsafe { l.launch(cfg) }.map_err(|e| CudaError::driver("launch add_f32", e))?;
    Ok(())
}
