//! Opening a CUDA device: probe the libraries first (cudarc panics when a
//! library or symbol is missing), then context, stream and kernel registry.

use crate::registry::Registry;
use crate::{CudaError, Result};
use cudarc::driver::sys::CUdevice_attribute as Attr;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, CudaView, CudaViewMut, DeviceRepr,
    ValidAsZeroBits,
};
use std::sync::{Arc, Mutex};

/// What kiln reports about a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    /// Compute capability (major, minor), e.g. (9, 0) on Hopper.
    pub cc: (i32, i32),
    pub total_mem: usize,
    pub sm_count: i32,
    pub l2_bytes: i32,
    /// Most shared memory one block may opt in to (bytes).
    pub smem_optin: i32,
}

impl DeviceInfo {
    /// NVRTC architecture flag for this device, e.g. `sm_90`.
    pub fn arch(&self) -> String {
        format!("sm_{}{}", self.cc.0, self.cc.1)
    }
}

/// Whether libcuda and libnvrtc can be loaded (no symbol is called).
pub fn libraries_present() -> Result<()> {
    // SAFETY: only tries to dlopen the library by its usual names.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(CudaError::NoDriver);
    }
    // SAFETY: as above.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(CudaError::NoNvrtc);
    }
    Ok(())
}

/// One CUDA device with its context, its stream and the kernel registry.
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    info: DeviceInfo,
    registry: Registry,
    /// matmul's cuBLAS handle and grow-only prefill scratch (see matmul.rs).
    pub(crate) matmul: crate::matmul::MatmulState,
    /// The MLX formats' kernels (matmul, matmul_id, embedding), per format
    /// (see mlx.rs).
    pub(crate) mlx: crate::mlx::MlxKernels,
    /// matvec_fused's kernels per weight format (one compiled variant
    /// each), looked up once (see matvec_fused.rs).
    pub(crate) fused_fns:
        [std::sync::OnceLock<Vec<cudarc::driver::CudaFunction>>; crate::matvec_fused::N_WTYPES],
    /// attention's kernels per cache type (f32, f16, bf16), looked up once
    /// (see attention.rs).
    pub(crate) attn_fns: [std::sync::OnceLock<Vec<cudarc::driver::CudaFunction>>; 3],
    /// Launcher scratch (f32), see [`CudaBackend::with_scratch_f32`].
    scratch: Mutex<Option<CudaSlice<f32>>>,
    /// Launcher tickets (u32, zero between launches), see [`CudaBackend::with_tickets`].
    tickets: Mutex<Option<CudaSlice<u32>>>,
    /// One word for results read back by the host (argmax).
    result_u32: Mutex<Option<CudaSlice<u32>>>,
    /// Bumped whenever a backend-owned buffer is reallocated (see
    /// [`CudaBackend::buffers_epoch`]).
    epoch: std::sync::atomic::AtomicU64,
    /// Launch the decode kernels with programmatic dependent launch.
    pdl: bool,
    /// PDL also for the kernels that wait at entry (see [`Self::pdl_entry`]).
    pdl_entry: bool,
    /// See [`Self::attn_prefetch`].
    attn_prefetch: bool,
    /// One device word holding 0: the expert id of a dense mat-vec run
    /// through matmul_id's tile kernels (`matvec_tile::dense_tile_matvec`).
    /// Allocated with the backend, never written, so a captured graph can
    /// point at it.
    zero_u32: CudaSlice<u32>,
}

impl CudaBackend {
    /// Open device `ordinal`, or say precisely why not.
    pub fn new(ordinal: usize) -> Result<CudaBackend> {
        libraries_present()?;
        let count =
            CudaContext::device_count().map_err(|e| CudaError::driver("device count", e))?;
        if ordinal >= count.max(0) as usize {
            return Err(CudaError::NoDevice {
                ordinal,
                count: count.max(0) as usize,
            });
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| CudaError::driver("context", e))?;
        // SAFETY: kiln orders work on one stream per backend (and events it
        // records itself), so cudarc's per-launch event tracking is not needed;
        // it must be off for CUDA graph capture.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx
            .new_stream()
            .map_err(|e| CudaError::driver("stream", e))?;
        let attr = |a: Attr| {
            ctx.attribute(a)
                .map_err(|e| CudaError::driver("device attribute", e))
        };
        let info = DeviceInfo {
            ordinal,
            name: ctx
                .name()
                .map_err(|e| CudaError::driver("device name", e))?,
            cc: ctx
                .compute_capability()
                .map_err(|e| CudaError::driver("compute capability", e))?,
            total_mem: ctx
                .total_mem()
                .map_err(|e| CudaError::driver("memory size", e))?,
            sm_count: attr(Attr::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
            l2_bytes: attr(Attr::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)?,
            smem_optin: attr(Attr::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?,
        };
        let registry = Registry::new(info.arch());
        // PDL needs Hopper (sm_90+); KILN_NO_PDL=1 turns it off (comparisons).
        let pdl = info.cc.0 >= 9 && std::env::var_os("KILN_NO_PDL").is_none_or(|v| v != "1");
        // KILN_PDL_ENTRY=1: PDL for the kernels that wait at entry too
        // (opt-in until run on a GPU: docs/perf.md §23).
        let pdl_entry = pdl && std::env::var_os("KILN_PDL_ENTRY").is_some_and(|v| v == "1");
        // KILN_ATTN_PREFETCH=1: the decode attention kernel prefetches its
        // older cache rows into L2 before its PDL wait (opt-in until run on
        // a GPU: docs/perf.md §24).
        let attn_prefetch = std::env::var_os("KILN_ATTN_PREFETCH").is_some_and(|v| v == "1");
        let zero_u32 = stream
            .alloc_zeros::<u32>(1)
            .map_err(|e| CudaError::driver("alloc", e))?;
        Ok(CudaBackend {
            pdl,
            pdl_entry,
            attn_prefetch,
            zero_u32,
            ctx,
            stream,
            info,
            registry,
            matmul: Default::default(),
            mlx: Default::default(),
            fused_fns: Default::default(),
            attn_fns: Default::default(),
            scratch: Mutex::new(None),
            tickets: Mutex::new(None),
            result_u32: Mutex::new(None),
            epoch: Default::default(),
        })
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// Whether kernels that support it are launched with programmatic
    /// dependent launch (see `launch.rs`).
    pub fn pdl(&self) -> bool {
        self.pdl
    }

    /// PDL for the kernels that wait for the previous kernel at entry
    /// (`kiln_pdl_enter`: norms, routing, copies, embedding, argmax, the
    /// expert mat-vecs; the dense mat-vec waits after its first weight
    /// fetch): what they gain is the launch, their CTAs resident when the
    /// previous kernel drains. Opt-in (`KILN_PDL_ENTRY=1`, with PDL on)
    /// until measured on a GPU.
    pub fn pdl_entry(&self) -> bool {
        self.pdl_entry
    }

    /// Whether the lane-group decode attention kernel asks L2 for the
    /// older cache rows of its key range before its PDL wait (opt-in,
    /// `KILN_ATTN_PREFETCH=1`, until measured); results are the same
    /// either way.
    pub fn attn_prefetch(&self) -> bool {
        self.attn_prefetch
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The kernel `name` of family `family` (compiled from `src` at first use).
    pub fn function(
        &self,
        family: &'static str,
        src: &'static str,
        name: &'static str,
    ) -> Result<CudaFunction> {
        self.registry.function(&self.ctx, family, src, name)
    }

    /// Like [`CudaBackend::function`] for a name built at run time: looked up
    /// in the module each call (for set-up code that keeps the handle).
    pub fn function_named(
        &self,
        family: &'static str,
        src: &'static str,
        name: &str,
    ) -> Result<CudaFunction> {
        self.registry
            .function_uncached(&self.ctx, family, src, name)
    }

    /// A zeroed device buffer of `n` elements.
    pub fn alloc_zeros<T: DeviceRepr + ValidAsZeroBits>(&self, n: usize) -> Result<CudaSlice<T>> {
        let bytes = n.saturating_mul(std::mem::size_of::<T>());
        self.check_free(bytes, "buffer")?;
        self.stream
            .alloc_zeros::<T>(n)
            .map_err(|e| CudaError::driver("alloc", e))
    }

    /// Copy host data to a new device buffer.
    pub fn upload<T: DeviceRepr>(&self, data: &[T]) -> Result<CudaSlice<T>> {
        self.check_free(std::mem::size_of_val(data), "upload")?;
        self.stream
            .clone_htod(data)
            .map_err(|e| CudaError::driver("upload", e))
    }

    /// Copy a device buffer to a new host vector (synchronizes the stream).
    pub fn download<T: DeviceRepr + Default + Clone, S: cudarc::driver::DevicePtr<T>>(
        &self,
        src: &S,
    ) -> Result<Vec<T>> {
        self.stream
            .clone_dtoh(src)
            .map_err(|e| CudaError::driver("download", e))
    }

    /// Wait for everything enqueued on the stream.
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| CudaError::driver("synchronize", e))
    }

    // --- launcher scratch (added for split-KV attention) ---

    /// Run `f` with the first `n` floats of the backend's scratch buffer:
    /// temporaries of a launch (e.g. split-KV attention partials) that are
    /// written and consumed by kernels on this backend's stream. The buffer
    /// grows (to the next power of two) when `n` exceeds it and never
    /// shrinks; the old one is freed in stream order, so earlier launches
    /// still using it are safe. Contents are unspecified on entry. Growing
    /// allocates: warm up before capturing a CUDA graph.
    pub fn with_scratch_f32<R>(
        &self,
        n: usize,
        f: impl FnOnce(&mut CudaViewMut<'_, f32>) -> Result<R>,
    ) -> Result<R> {
        let mut guard = self
            .scratch
            .lock()
            .map_err(|_| CudaError::driver("scratch", "lock poisoned"))?;
        if guard.as_ref().map_or(0, |s| s.len()) < n.max(1) {
            *guard = None;
            *guard = Some(self.alloc_zeros::<f32>(n.max(1).next_power_of_two())?);
            self.bump_epoch();
        }
        match guard.as_mut() {
            Some(buf) => f(&mut buf.slice_mut(0..n)),
            None => Err(CudaError::driver("scratch", "not allocated")),
        }
    }

    /// Run `f` with the first `n` words of the backend's ticket counters:
    /// zeros that a kernel may count up in, provided the kernel leaves them
    /// zero again when it finishes (e.g. "last block merges" reductions).
    /// Grows (zero-filled, next power of two) like the scratch buffer;
    /// growing allocates: warm up before capturing a CUDA graph.
    pub fn with_tickets<R>(
        &self,
        n: usize,
        f: impl FnOnce(&mut CudaViewMut<'_, u32>) -> Result<R>,
    ) -> Result<R> {
        let mut guard = self
            .tickets
            .lock()
            .map_err(|_| CudaError::driver("tickets", "lock poisoned"))?;
        if guard.as_ref().map_or(0, |s| s.len()) < n.max(1) {
            *guard = None;
            *guard = Some(self.alloc_zeros::<u32>(n.max(1).next_power_of_two())?);
            self.bump_epoch();
        }
        match guard.as_mut() {
            Some(buf) => f(&mut buf.slice_mut(0..n)),
            None => Err(CudaError::driver("tickets", "not allocated")),
        }
    }

    /// A device word holding 0 (see the field).
    pub(crate) fn zero_u32(&self) -> CudaView<'_, u32> {
        self.zero_u32.slice(0..1)
    }

    /// Run `f` with the backend's one-word result buffer (allocated on
    /// first use), e.g. a device argmax that the host reads back.
    pub fn with_result_u32<R>(
        &self,
        f: impl FnOnce(&mut CudaViewMut<'_, u32>) -> Result<R>,
    ) -> Result<R> {
        let mut guard = self
            .result_u32
            .lock()
            .map_err(|_| CudaError::driver("result buffer", "lock poisoned"))?;
        if guard.is_none() {
            *guard = Some(self.alloc_zeros::<u32>(1)?);
        }
        match guard.as_mut() {
            Some(buf) => f(&mut buf.slice_mut(0..1)),
            None => Err(CudaError::driver("result buffer", "not allocated")),
        }
    }

    // --- CUDA graphs ---

    /// A counter that changes whenever a buffer the backend owns (launcher
    /// scratch, matmul scratch) is reallocated: a CUDA graph recorded under
    /// one value holds stale pointers under another.
    pub fn buffers_epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn bump_epoch(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Start recording the stream's launches into a graph (nothing runs
    /// until the graph is launched). Nothing may allocate, synchronize or
    /// copy from the host until [`CudaBackend::end_capture`].
    pub fn begin_capture(&self) -> Result<()> {
        self.stream
            .begin_capture(
                cudarc::driver::sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
            )
            .map_err(|e| CudaError::driver("begin graph capture", e))
    }

    /// Stop recording and instantiate the graph (None if nothing was recorded).
    pub fn end_capture(&self) -> Result<Option<cudarc::driver::CudaGraph>> {
        self.stream
            .end_capture(cudarc::driver::sys::CUgraphInstantiate_flags(0))
            .map_err(|e| CudaError::driver("end graph capture", e))
    }

    fn check_free(&self, needed: usize, what: &str) -> Result<()> {
        let (free, _) = self
            .ctx
            .mem_get_info()
            .map_err(|e| CudaError::driver("memory info", e))?;
        if needed > free {
            return Err(CudaError::OutOfMemory {
                what: what.to_string(),
                needed,
                free,
            });
        }
        Ok(())
    }
}
