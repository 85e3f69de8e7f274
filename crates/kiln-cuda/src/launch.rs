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
use cudarc::driver::{CudaFunction, CudaStream, DevicePtr, DevicePtrMut, LaunchConfig, SyncOnDrop};
use std::any::Any;
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

/// A kernel's argument list for [`launch_ex`], in the kernel's order:
/// values (parameter structs, device pointers) boxed so their addresses stay
/// put, and the buffers' stream-order guards, which record the launch on
/// the buffers when the list drops (after the launch), as cudarc's
/// `launch_builder` does.
pub(crate) struct ExArgs<'a> {
    stream: &'a CudaStream,
    ptrs: Vec<*mut c_void>,
    vals: Vec<Box<dyn Any>>,
    guards: Vec<SyncOnDrop<'a>>,
}

impl<'a> ExArgs<'a> {
    pub(crate) fn new(be: &'a CudaBackend) -> Self {
        ExArgs {
            stream: be.stream(),
            ptrs: Vec::with_capacity(8),
            vals: Vec::with_capacity(8),
            guards: Vec::with_capacity(8),
        }
    }

    /// A by-value argument (a parameter struct or a scalar).
    pub(crate) fn val<T: 'static>(&mut self, v: T) -> &mut Self {
        let mut b = Box::new(v);
        self.ptrs.push((&mut *b as *mut T).cast());
        self.vals.push(b);
        self
    }

    /// A buffer the kernel reads.
    pub(crate) fn buf<T>(&mut self, b: &'a impl DevicePtr<T>) -> &mut Self {
        let (p, g) = b.device_ptr(self.stream);
        self.guards.push(g);
        self.val(p)
    }

    /// A buffer the kernel writes.
    pub(crate) fn buf_mut<T>(&mut self, b: &'a mut impl DevicePtrMut<T>) -> &mut Self {
        let (p, g) = b.device_ptr_mut(self.stream);
        self.guards.push(g);
        self.val(p)
    }

    /// Launch `f` with these arguments (see [`launch_ex`]).
    ///
    /// # Safety
    /// As [`launch_ex`]: the arguments match the kernel's parameter list,
    /// the buffers cover what it accesses, and with `pdl` it waits before
    /// touching what earlier kernels produce or consume.
    pub(crate) unsafe fn launch(
        mut self,
        be: &CudaBackend,
        f: &CudaFunction,
        cfg: LaunchConfig,
        pdl: bool,
    ) -> Result<()> {
        // SAFETY: forwarded from the caller; the boxed values outlive the call.
        unsafe { launch_ex(be, f, cfg, pdl, &mut self.ptrs) }
    }
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
