//! Devices and streams.

use crate::{Error, Result};
use kiln_cpu::CpuContext;
use std::fmt;
use std::sync::Arc;

/// Where tensors live and ops run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

/// Device copies of the small host integer arrays ops take (token ids,
/// positions): uploaded when they change, reused while they don't, so a
/// forward pass uploads its positions once, not once per RoPE call.
#[cfg(feature = "cuda")]
#[derive(Default)]
struct DeviceInts {
    ids: std::sync::Mutex<(Vec<u32>, Option<kiln_cuda::CudaSlice<u32>>)>,
    positions: std::sync::Mutex<(Vec<i32>, Option<kiln_cuda::CudaSlice<i32>>)>,
}

#[cfg(feature = "cuda")]
fn cached_upload<T, R>(
    be: &kiln_cuda::CudaBackend,
    slot: &std::sync::Mutex<(Vec<T>, Option<kiln_cuda::CudaSlice<T>>)>,
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
        cached_upload(be, &self.ints.ids, ids, f)
    }

    /// Run `f` with a device copy of positions (re-uploaded only on change).
    #[cfg(feature = "cuda")]
    pub(crate) fn with_device_positions<R>(
        &self,
        be: &kiln_cuda::CudaBackend,
        positions: &[i32],
        f: impl FnOnce(&kiln_cuda::CudaView<'_, i32>) -> Result<R>,
    ) -> Result<R> {
        cached_upload(be, &self.ints.positions, positions, f)
    }

    #[cfg(feature = "cuda")]
    pub(crate) fn cuda_backend(&self) -> Option<&kiln_cuda::CudaBackend> {
        self.cuda.as_deref()
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
