//! argmax on CUDA: validate → launch (`kernels/argmax.cu`). Implements
//! `kiln_core::ops::argmax`: index of the largest finite value, lowest index
//! on ties, NaN/inf ignored. [`argmax`] writes the index to device memory
//! without syncing (u32::MAX when no value is finite, [`NO_FINITE`]);
//! [`argmax_host`] downloads it and maps that sentinel to the CPU's error.

use crate::kernels::ARGMAX;
use crate::launch::ExArgs;
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{CudaView, CudaViewMut, DeviceRepr, LaunchConfig};
use kiln_core::error::check_len;
use kiln_core::ops::argmax::validate;
use kiln_core::Error;

/// Written by [`argmax`] when `x` holds no finite value.
pub const NO_FINITE: u32 = u32::MAX;

/// Mirrors `struct ArgmaxParams` in argmax.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct ArgmaxK {
    n: u64,
}
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for ArgmaxK {}

/// `out[0] = argmax(x)` (or [`NO_FINITE`]) on the backend's stream; `out: [1]`.
pub fn argmax(
    be: &CudaBackend,
    x: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, u32>,
) -> Result<()> {
    validate(x.len())?;
    check_len("argmax", "out", out.len(), 1)?;
    let f = be.function("argmax", ARGMAX, "argmax_f32")?;
    // One block: about four values (one float4) per thread, up to 1024 threads.
    let threads = crate::launch::row_threads(x.len());
    let cfg = LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    };
    let k = ArgmaxK { n: x.len() as u64 };
    let mut a = ExArgs::new(be);
    a.val(k).buf(x).buf_mut(out);
    // SAFETY: argument list matches argmax_f32(ArgmaxParams, const float*, u32*);
    // x holds n floats, out one u32 (validated above); blockDim % 32 == 0.
    // PDL: the kernel waits (kiln_pdl_enter) before touching anything.
    unsafe { a.launch(be, &f, cfg, be.pdl_entry()) }
        .map_err(|e| CudaError::driver("launch argmax_f32", e))?;
    Ok(())
}

/// [`argmax`] into the backend's result word, downloaded (syncs the stream). No finite
/// value is the same error as `kiln_core::ops::argmax::argmax_ref`'s.
pub fn argmax_host(be: &CudaBackend, x: &CudaView<'_, f32>) -> Result<u32> {
    validate(x.len())?;
    // The index lands in the backend's one-word result buffer (allocated
    // once: no allocation per sampled token).
    let host = be.with_result_u32(|idx| {
        argmax(be, x, idx)?;
        be.download(&*idx)
    })?;
    match host.first() {
        Some(&i) if i != NO_FINITE => Ok(i),
        _ => Err(Error::invalid(
            "argmax",
            format!("no finite value among {} inputs", x.len()),
        )
        .into()),
    }
}
