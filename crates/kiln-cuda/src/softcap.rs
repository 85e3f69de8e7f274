//! softcap on CUDA: validate → launch (`kernels/softcap.cu`). Implements
//! `kiln_core::ops::softcap`: `out = cap * tanh(x / cap)`.

use crate::kernels::SOFTCAP;
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{CudaView, CudaViewMut, DeviceRepr, PushKernelArg};
use kiln_core::ops::softcap::SoftcapParams;

/// Mirrors `struct SoftcapParams` in softcap.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct SoftcapK {
    n: u64,
    cap: f32,
    inv_cap: f32,
}
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for SoftcapK {}

/// `out[i] = cap * tanh(x[i] / cap)` for `i < n`.
pub fn softcap(
    be: &CudaBackend,
    p: &SoftcapParams,
    x: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate(x.len(), out.len())?;
    if p.n == 0 {
        return Ok(());
    }
    let f = be.function("softcap", SOFTCAP, "softcap_f32")?;
    let k = SoftcapK {
        n: p.n as u64,
        cap: p.cap,
        inv_cap: 1.0 / p.cap,
    };
    let mut l = be.stream().launch_builder(&f);
    l.arg(&k).arg(x).arg(out);
    // SAFETY: argument list matches softcap_f32(SoftcapParams, const float*,
    // float*); both hold n floats (validated above).
    unsafe { l.launch(crate::launch::vec4_grid(p.n)) }
        .map_err(|e| CudaError::driver("launch softcap_f32", e))?;
    Ok(())
}
