//! Kernel launches through `cuLaunchKernelEx`, for programmatic dependent
//! launch (PDL, Hopper+): a kernel launched with
//! `CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION` may start while
//! the previous kernel on the stream is still running, up to its
//! `griddepcontrol.wait` (`kiln_grid_wait()` in common.cuh). The decode
//! kernels fetch their weights before that wait, so a step's chain of small
//! kernels overlaps each one's launch and first memory reads with the
//! previous one's tail. Stream capture turns these launches into
//! programmatic edges of the CUDA graph.
//!
//! Only kernels that call `kiln_grid_wait()` before touching anything an
//! earlier kernel writes or reads may be launched with `pdl = true`.

use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::sys;
use cudarc::driver::{CudaFunction, LaunchConfig};
use std::ffi::c_void;

/// Launch `f` with `params` (one pointer to each argument's value, in the
/// kernel's order) on the backend's stream; with PDL when `pdl`.
///
/// # Safety
/// `params` must match the kernel's parameter list in number, order and
/// type, every pointer argument must be valid for what the kernel accesses,
/// and with `pdl` the kernel must wait (`kiln_grid_wait`) before touching
/// data earlier kernels produce or consume.
pub(crate) unsafe fn launch_ex(
    be: &CudaBackend,
    f: &CudaFunction,
    cfg: LaunchConfig,
    pdl: bool,
    params: &mut [*mut c_void],
) -> Result<()> {
    // SAFETY: a zeroed attribute is a valid "ignored" value; only the PDL
    // field is set below.
    let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
    attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
    attr.value.programmaticStreamSerializationAllowed = 1;
    let conf = sys::CUlaunchConfig {
        gridDimX: cfg.grid_dim.0,
        gridDimY: cfg.grid_dim.1,
        gridDimZ: cfg.grid_dim.2,
        blockDimX: cfg.block_dim.0,
        blockDimY: cfg.block_dim.1,
        blockDimZ: cfg.block_dim.2,
        sharedMemBytes: cfg.shared_mem_bytes,
        hStream: be.stream().cu_stream(),
        attrs: &mut attr,
        numAttrs: u32::from(pdl),
    };
    // SAFETY: the caller guarantees the arguments; the config points at a
    // live attribute; the function belongs to the backend's context.
    let r = unsafe {
        sys::cuLaunchKernelEx(
            &conf,
            f.cu_function(),
            params.as_mut_ptr(),
            std::ptr::null_mut(),
        )
    };
    r.result()
        .map_err(|e| CudaError::driver("cuLaunchKernelEx", e))
}

/// A kernel argument's address, as `cuLaunchKernelEx` wants it.
pub(crate) fn arg<T>(v: &mut T) -> *mut c_void {
    (v as *mut T).cast()
}

/// Threads per block of the grid-stride elementwise kernels.
const VEC4_THREADS: u32 = 256;

/// The launch of a grid-stride elementwise kernel over `n` values, four
/// (one float4) per thread and pass: enough blocks for one pass, at most
/// 65 535 (the kernels loop over the rest).
pub(crate) fn vec4_grid(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(4 * VEC4_THREADS as usize).clamp(1, 65_535) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (VEC4_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Threads for one block reducing a row of `len` values: about four values
/// per thread (one float4), a multiple of 32, at most 1024.
pub(crate) fn row_threads(len: usize) -> u32 {
    (len.div_ceil(4).div_ceil(32) * 32).clamp(32, 1024) as u32
}

/// The launch of a one-block-per-row reduction kernel (rms_norm,
/// layer_norm, l2_norm, softmax): `rows` blocks (at most 65 535; the kernels
/// loop over the rest) of [`row_threads`]`(len)`.
pub(crate) fn row_grid(rows: usize, len: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.clamp(1, 65_535) as u32, 1, 1),
        block_dim: (row_threads(len), 1, 1),
        shared_mem_bytes: 0,
    }
}
