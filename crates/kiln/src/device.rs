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
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
        }
    }
}

/// An ordered queue of work on one device.
///
/// On the CPU, work runs when enqueued on the stream's thread pool, so
/// [`Stream::synchronize`] is a no-op; callers still call it where a CUDA
/// stream would need it, so code is backend-agnostic.
#[derive(Clone)]
pub struct Stream {
    device: Device,
    cpu: Arc<CpuContext>,
}

impl Stream {
    /// A CPU stream with `threads` worker threads (0 = all cores).
    pub fn cpu(threads: usize) -> Result<Stream> {
        let ctx = CpuContext::new(threads).map_err(|e| Error::Device(e.to_string()))?;
        Ok(Stream {
            device: Device::Cpu,
            cpu: Arc::new(ctx),
        })
    }

    /// A CPU stream over an existing context (tests force the scalar path this way).
    pub fn from_cpu_context(ctx: CpuContext) -> Stream {
        Stream {
            device: Device::Cpu,
            cpu: Arc::new(ctx),
        }
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Threads used by the CPU backend.
    pub fn threads(&self) -> usize {
        self.cpu.threads()
    }

    /// A one-line description, e.g. `cpu (2 threads, avx2+fma)`.
    pub fn describe(&self) -> String {
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
        self.cpu.pool().install(f)
    }

    /// Wait for all enqueued work (a no-op on the CPU).
    pub fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    pub(crate) fn cpu_ctx(&self) -> &CpuContext {
        &self.cpu
    }
}
