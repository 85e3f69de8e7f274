//! Devices and streams.

use crate::{Error, Result};
use kiln_cpu::CpuContext;
use std::fmt;
use std::sync::Arc;

/// Where tensors live and ops run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    /// Host memory, ops run on the kiln-cpu backend.
    Cpu,
    /// CUDA device by ordinal, ops run on the kiln-cuda backend.
    Cuda(usize),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// The backend a stream runs ops on.
pub(crate) enum Backend<'a> {
    Cpu(&'a CpuContext),
    #[cfg(feature = "cuda")]
    Cuda(&'a kiln_cuda::CudaBackend),
}

/// An ordered queue of work on one device.
///
/// On the CPU, work runs when enqueued on the stream's thread pool, so
/// [`Stream::synchronize`] is a no-op; on CUDA, ops are enqueued on one CUDA
/// stream and only downloads and `synchronize` wait.
#[derive(Clone)]
pub struct Stream {
    device: Device,
    cpu: Arc<CpuContext>,
    profile: Arc<Profile>,
    #[cfg(feature = "cuda")]
    cuda: Option<Arc<kiln_cuda::CudaBackend>>,
    #[cfg(feature = "cuda")]
    ints: Arc<DeviceInts>,
    /// CUDA decode steps may run as one recorded graph (off with KILN_NO_GRAPH=1).
    graphs: bool,
    /// rope_multi parameter packs of this stream's device (`ops::rope_multi_cached`).
    rope_packs: Arc<crate::ops::rope_multi::RopeMultiPacks>,
    /// `ops::sample`'s CPU buffers, kept so decoding does not allocate per token.
    sample_scratch: Arc<std::sync::Mutex<kiln_cpu::sample::SampleScratch>>,
}

/// Device copies of the small host integer arrays ops take (token ids,
/// positions): uploaded when they change, reused while they don't, so a
/// forward pass uploads its positions once, not once per RoPE call.
#[cfg(feature = "cuda")]
#[derive(Default)]
struct DeviceInts {
    ids: std::sync::Mutex<(Vec<u32>, Option<kiln_cuda::CudaSlice<u32>>)>,
    positions: std::sync::Mutex<(Vec<i32>, Option<kiln_cuda::CudaSlice<i32>>)>,
    /// Bumped when either buffer is reallocated (a recorded graph holds its address).
    epoch: std::sync::atomic::AtomicU64,
    /// `ops::sample`'s penalty ids. No recorded graph reads them, so their
    /// reallocation bumps `penalty_epoch`, which nothing compares.
    penalty_ids: std::sync::Mutex<(Vec<u32>, Option<kiln_cuda::CudaSlice<u32>>)>,
    penalty_epoch: std::sync::atomic::AtomicU64,
}

#[cfg(feature = "cuda")]
fn cached_upload<T, R>(
    be: &kiln_cuda::CudaBackend,
    slot: &std::sync::Mutex<(Vec<T>, Option<kiln_cuda::CudaSlice<T>>)>,
    epoch: &std::sync::atomic::AtomicU64,
    host: &[T],
    f: impl FnOnce(&kiln_cuda::CudaView<'_, T>) -> Result<R>,
) -> Result<R>
where
    T: cudarc_repr::Repr + PartialEq + Copy + Default,
{
    let mut g = slot
        .lock()
        .map_err(|_| Error::Device("upload cache lock poisoned".into()))?;
    let (cached, buf) = &mut *g;
    let n = host.len();
    let stale = cached.as_slice() != host;
    if buf.as_ref().is_none_or(|b| b.len() < n.max(1)) {
        *buf = Some(
            be.alloc_zeros::<T>(n.max(64).next_power_of_two())
                .map_err(|e| Error::Device(e.to_string()))?,
        );
        cached.clear();
        epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
    let Some(b) = buf.as_mut() else {
        return Err(Error::Device("upload cache is empty".into()));
    };
    if stale || cached.len() != n {
        if n > 0 {
            be.stream()
                .memcpy_htod(host, &mut b.slice_mut(0..n))
                .map_err(|e| Error::Device(format!("upload: {e:?}")))?;
        }
        cached.clear();
        cached.extend_from_slice(host);
    }
    f(&b.slice(0..n))
}

#[cfg(feature = "cuda")]
mod cudarc_repr {
    /// The element types `cached_upload` handles.
    pub trait Repr: kiln_cuda::DeviceRepr + kiln_cuda::ValidAsZeroBits {}
    impl Repr for u32 {}
    impl Repr for i32 {}
}

impl Stream {
    /// The cache of rope_multi parameter packs this stream's ops use
    /// ([`crate::ops::rope_multi_cached`]).
    pub fn rope_multi_packs(&self) -> &crate::ops::rope_multi::RopeMultiPacks {
        &self.rope_packs
    }

    /// A CPU stream with `threads` worker threads (0 = all cores).
    pub fn cpu(threads: usize) -> Result<Stream> {
        let ctx = CpuContext::new(threads).map_err(|e| Error::Device(e.to_string()))?;
        Ok(Self::from_cpu_context(ctx))
    }

    /// A CPU stream over an existing context (tests force the scalar path this way).
    pub fn from_cpu_context(ctx: CpuContext) -> Stream {
        Stream {
            device: Device::Cpu,
            cpu: Arc::new(ctx),
            profile: Arc::new(Profile::default()),
            #[cfg(feature = "cuda")]
            cuda: None,
            #[cfg(feature = "cuda")]
            ints: Arc::new(DeviceInts::default()),
            graphs: false,
            rope_packs: Arc::default(),
            sample_scratch: Arc::default(),
        }
    }

    /// A stream on CUDA device `ordinal`; a typed error says why not (no
    /// driver, no device, no NVRTC, or a build without the `cuda` feature).
    pub fn cuda(ordinal: usize) -> Result<Stream> {
        #[cfg(feature = "cuda")]
        {
            let be =
                kiln_cuda::CudaBackend::new(ordinal).map_err(|e| Error::Device(e.to_string()))?;
            let cpu = CpuContext::new(1).map_err(|e| Error::Device(e.to_string()))?;
            Ok(Stream {
                device: Device::Cuda(ordinal),
                cpu: Arc::new(cpu),
                profile: Arc::new(Profile::default()),
                cuda: Some(Arc::new(be)),
                ints: Arc::new(DeviceInts::default()),
                graphs: std::env::var("KILN_NO_GRAPH").map_or(true, |v| v.is_empty() || v == "0"),
                rope_packs: Arc::default(),
                sample_scratch: Arc::default(),
            })
        }
        #[cfg(not(feature = "cuda"))]
        {
            Err(Error::Device(format!(
                "cuda:{ordinal} requested but kiln was built without the `cuda` feature"
            )))
        }
    }

    /// The GPU when there is one, else the CPU with `threads` threads. The
    /// second value says why the CPU was chosen (for the user), if it was.
    pub fn best(threads: usize) -> Result<(Stream, Option<String>)> {
        match Stream::cuda(0) {
            Ok(s) => Ok((s, None)),
            Err(e) => Ok((Stream::cpu(threads)?, Some(e.to_string()))),
        }
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Threads used by the CPU backend.
    pub fn threads(&self) -> usize {
        self.cpu.threads()
    }

    /// A one-line description, e.g. `cpu (2 threads, avx2+fma)` or
    /// `cuda:0 (NVIDIA H100 80GB HBM3, sm_90, 79 GiB)`.
    pub fn describe(&self) -> String {
        #[cfg(feature = "cuda")]
        if let Some(be) = &self.cuda {
            let i = be.info();
            return format!(
                "{} ({}, {}, {} GiB)",
                self.device,
                i.name,
                i.arch(),
                i.total_mem >> 30
            );
        }
        let f = self.cpu.features();
        let simd = if f.has_avx2_fma() {
            "avx2+fma"
        } else {
            "scalar"
        };
        format!("{} ({} threads, {simd})", self.device, self.cpu.threads())
    }

    /// Run `f` with this stream's workers at hand: on the CPU, inside the
    /// rayon pool, so the ops `f` enqueues fork from a worker instead of
    /// waking the pool from outside on every op (about 10 µs each, as long as
    /// a whole 576×576 mat-vec). Wrap a whole forward pass in it.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match self.device {
            Device::Cpu => self.cpu.pool().install(f),
            Device::Cuda(_) => f(),
        }
    }

    /// Turn per-op-family timing on or off (see [`Stream::profile`]).
    pub fn set_profiling(&self, on: bool) {
        self.profile
            .on
            .store(on, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut t) = self.profile.totals.lock() {
            t.clear();
        }
    }

    /// Per op family: calls and total seconds since profiling was turned on.
    /// While profiling, every op synchronizes the stream when it ends, so the
    /// figures are each family's own time plus its launch cost, and the total
    /// is slower than an unprofiled run.
    pub fn profile(&self) -> Vec<(&'static str, u64, f64)> {
        let mut v: Vec<_> = self
            .profile
            .totals
            .lock()
            .map(|t| t.iter().map(|(k, (n, s))| (*k, *n, *s)).collect())
            .unwrap_or_default();
        v.sort_by(|a, b| b.2.total_cmp(&a.2));
        v
    }

    /// A guard that times one op when profiling is on.
    pub(crate) fn scope(&self, op: &'static str) -> Option<ProfileScope<'_>> {
        if self.profile.on.load(std::sync::atomic::Ordering::Relaxed) {
            Some(ProfileScope {
                s: self,
                op,
                t0: std::time::Instant::now(),
            })
        } else {
            None
        }
    }

    /// Wait for all enqueued work (a no-op on the CPU).
    pub fn synchronize(&self) -> Result<()> {
        #[cfg(feature = "cuda")]
        if let Some(be) = &self.cuda {
            be.synchronize().map_err(|e| Error::Device(e.to_string()))?;
        }
        Ok(())
    }

    pub(crate) fn backend(&self) -> Backend<'_> {
        #[cfg(feature = "cuda")]
        if let Some(be) = &self.cuda {
            return Backend::Cuda(be);
        }
        Backend::Cpu(&self.cpu)
    }

    /// Run `f` with a device copy of token ids (re-uploaded only on change).
    #[cfg(feature = "cuda")]
    pub(crate) fn with_device_ids<R>(
        &self,
        be: &kiln_cuda::CudaBackend,
        ids: &[u32],
        f: impl FnOnce(&kiln_cuda::CudaView<'_, u32>) -> Result<R>,
    ) -> Result<R> {
        cached_upload(be, &self.ints.ids, &self.ints.epoch, ids, f)
    }

    /// Run `f` with a device copy of positions (re-uploaded only on change).
    #[cfg(feature = "cuda")]
    pub(crate) fn with_device_positions<R>(
        &self,
        be: &kiln_cuda::CudaBackend,
        positions: &[i32],
        f: impl FnOnce(&kiln_cuda::CudaView<'_, i32>) -> Result<R>,
    ) -> Result<R> {
        cached_upload(be, &self.ints.positions, &self.ints.epoch, positions, f)
    }

    /// Run `f` with a device copy of `ops::sample`'s penalty ids (re-uploaded,
    /// stream-ordered, only on change).
    #[cfg(feature = "cuda")]
    pub(crate) fn with_device_penalty_ids<R>(
        &self,
        be: &kiln_cuda::CudaBackend,
        ids: &[u32],
        f: impl FnOnce(&kiln_cuda::CudaView<'_, u32>) -> Result<R>,
    ) -> Result<R> {
        cached_upload(be, &self.ints.penalty_ids, &self.ints.penalty_epoch, ids, f)
    }

    /// Run `f` with the stream's `ops::sample` CPU buffers.
    pub(crate) fn with_sample_scratch<R>(
        &self,
        f: impl FnOnce(&mut kiln_cpu::sample::SampleScratch) -> Result<R>,
    ) -> Result<R> {
        let mut g = self
            .sample_scratch
            .lock()
            .map_err(|_| Error::Device("sample scratch lock poisoned".into()))?;
        f(&mut g)
    }

    /// Whether a decode step may run as a recorded CUDA graph: a CUDA
    /// stream, profiling off (it synchronizes after every op), and
    /// KILN_NO_GRAPH unset or 0 when the stream was opened.
    pub fn graphs_enabled(&self) -> bool {
        self.graphs
            && self.device != Device::Cpu
            && !self.profile.on.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Allow or forbid CUDA-graph decode on this handle (e.g. to compare
    /// with eager decode; clones made afterwards inherit the setting).
    pub fn set_graphs(&mut self, on: bool) {
        self.graphs = on;
    }

    /// Changes whenever a device buffer that a recorded graph may point
    /// into is reallocated (launcher scratch, the token id and position
    /// copies): a graph recorded under another value must be recorded again.
    pub fn graph_epoch(&self) -> u64 {
        #[cfg(feature = "cuda")]
        if let Some(be) = &self.cuda {
            return be
                .buffers_epoch()
                .wrapping_add(self.ints.epoch.load(std::sync::atomic::Ordering::Acquire));
        }
        0
    }

    /// Put `ids` and `positions` in the stream's device copies (a copy on
    /// the stream when they changed), where ops and recorded graphs read
    /// them. Call before launching a graph, never while recording one.
    pub fn stage_inputs(&self, ids: &[u32], positions: &[i32]) -> Result<()> {
        #[cfg(feature = "cuda")]
        if let Some(be) = &self.cuda {
            self.with_device_ids(be, ids, |_| Ok(()))?;
            self.with_device_positions(be, positions, |_| Ok(()))?;
        }
        let _ = (ids, positions);
        Ok(())
    }

    /// Record the launches `f` enqueues on this CUDA stream as a graph,
    /// without running them. `f` must not allocate, synchronize or upload
    /// (warm up with one identical eager call first; stage inputs with
    /// [`Stream::stage_inputs`] before it). Errors on the CPU.
    pub fn capture<E: From<Error>>(
        &self,
        f: impl FnOnce() -> std::result::Result<(), E>,
    ) -> std::result::Result<Graph, E> {
        #[cfg(feature = "cuda")]
        if let Some(be) = &self.cuda {
            let epoch = self.graph_epoch();
            be.begin_capture()
                .map_err(|e| E::from(Error::Device(e.to_string())))?;
            let r = f();
            // Always end the capture, so the stream is usable after an error.
            let g = be
                .end_capture()
                .map_err(|e| E::from(Error::Device(e.to_string())));
            r?;
            let Some(inner) = g? else {
                return Err(Error::Device("graph capture recorded nothing".into()).into());
            };
            if self.graph_epoch() != epoch {
                return Err(Error::Device(
                    "a device buffer was reallocated while recording a graph".into(),
                )
                .into());
            }
            return Ok(Graph { inner, epoch });
        }
        let _ = f;
        Err(Error::Device(format!(
            "CUDA graphs need a CUDA stream, not {}",
            self.device
        ))
        .into())
    }

    #[cfg(feature = "cuda")]
    pub(crate) fn cuda_backend(&self) -> Option<&kiln_cuda::CudaBackend> {
        self.cuda.as_deref()
    }
}

/// A recorded sequence of launches on one CUDA stream (see
/// [`Stream::capture`]), replayed with [`Graph::launch`]. It holds the device
/// addresses of every buffer its launches touched: those must outlive it and
/// stay where they are (check [`Graph::epoch`] against
/// [`Stream::graph_epoch`] before launching).
pub struct Graph {
    #[cfg(feature = "cuda")]
    inner: kiln_cuda::CudaGraph,
    epoch: u64,
}

// SAFETY: a CUDA graph exec may be used from any thread as long as uses are
// serialized; `Graph` is not `Sync` and `launch` takes `&self` on the thread
// that owns it, so moving it between threads is sound.
unsafe impl Send for Graph {}

impl Graph {
    /// [`Stream::graph_epoch`] when the graph was recorded.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Enqueue the recorded launches on the stream they were recorded on.
    pub fn launch(&self) -> Result<()> {
        #[cfg(feature = "cuda")]
        {
            self.inner
                .launch()
                .map_err(|e| Error::Device(format!("graph launch: {e:?}")))
        }
        #[cfg(not(feature = "cuda"))]
        {
            Err(Error::Device("kiln was built without CUDA".into()))
        }
    }
}

/// Per-op-family timing totals.
#[derive(Default)]
struct Profile {
    on: std::sync::atomic::AtomicBool,
    totals: std::sync::Mutex<std::collections::HashMap<&'static str, (u64, f64)>>,
}

/// Times one op: on drop, waits for the stream and adds the elapsed time.
pub(crate) struct ProfileScope<'a> {
    s: &'a Stream,
    op: &'static str,
    t0: std::time::Instant,
}

impl Drop for ProfileScope<'_> {
    fn drop(&mut self) {
        let _ = self.s.synchronize();
        let dt = self.t0.elapsed().as_secs_f64();
        if let Ok(mut t) = self.s.profile.totals.lock() {
            let e = t.entry(self.op).or_insert((0, 0.0));
            e.0 += 1;
            e.1 += dt;
        }
    }
}
