//! [`Ids`]: a buffer of `u32` expert ids on a device, what `moe_route`
//! writes and `matmul_id` reads.
//!
//! On a CUDA stream the ids never visit the host: routing, the expert
//! matmuls and the combine run back to back with no synchronization, so a
//! mixture-of-experts decode step can be recorded as one CUDA graph. The
//! price is where a bad id shows: the CPU refuses it with a typed error at
//! once; on CUDA the routing kernel marks a token whose router logits are
//! not finite with [`kiln_cuda::moe_route::BAD_ID`], and `matmul_id` turns any
//! id past the experts into NaN output rows (it reads no weights for them),
//! which the sampler's non-finite check then reports. [`Ids::read`]
//! downloads them for a caller that wants to look (one synchronization).

use crate::device::Backend;
use crate::{Device, Error, Result, Stream};

enum IdStorage {
    Cpu(Vec<u32>),
    #[cfg(feature = "cuda")]
    Cuda(usize, kiln_cuda::CudaSlice<u32>),
}

/// `len` expert ids on one device.
pub struct Ids {
    len: usize,
    storage: IdStorage,
}

impl Ids {
    /// `n` zero ids on the stream's device (allocated once; reused by every
    /// forward pass, so a recorded graph keeps its address).
    pub fn zeros(s: &Stream, n: usize) -> Result<Ids> {
        let storage = match s.backend() {
            Backend::Cpu(_) => IdStorage::Cpu(vec![0; n]),
            #[cfg(feature = "cuda")]
            Backend::Cuda(be) => IdStorage::Cuda(
                be.info().ordinal,
                be.alloc_zeros::<u32>(n.max(1))
                    .map_err(crate::ops::cuda_err)?,
            ),
        };
        Ok(Ids { len: n, storage })
    }

    /// A device copy of host ids (tests, callers that route on the host).
    pub fn from_host(s: &Stream, ids: &[u32]) -> Result<Ids> {
        let mut out = Ids::zeros(s, ids.len())?;
        match &mut out.storage {
            IdStorage::Cpu(v) => v.copy_from_slice(ids),
            #[cfg(feature = "cuda")]
            IdStorage::Cuda(_, d) => {
                if let (false, Some(be)) = (ids.is_empty(), s.cuda_backend()) {
                    be.stream()
                        .memcpy_htod(ids, &mut d.slice_mut(0..ids.len()))
                        .map_err(|e| Error::Device(format!("ids upload: {e:?}")))?;
                }
            }
        }
        Ok(out)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn device(&self) -> Device {
        match &self.storage {
            IdStorage::Cpu(_) => Device::Cpu,
            #[cfg(feature = "cuda")]
            IdStorage::Cuda(o, _) => Device::Cuda(*o),
        }
    }

    /// Copy the first `n` ids into `out` (on CUDA: waits for the stream).
    pub fn read(&self, s: &Stream, n: usize, out: &mut Vec<u32>) -> Result<()> {
        out.clear();
        match &self.storage {
            IdStorage::Cpu(_) => out.extend_from_slice(self.host("read", n)?),
            #[cfg(feature = "cuda")]
            IdStorage::Cuda(..) => {
                let be = s.cuda_backend().ok_or_else(|| self.elsewhere("read", s))?;
                let v = self.cuda("read", n)?;
                out.resize(n, 0);
                be.stream()
                    .memcpy_dtoh(&v, out.as_mut_slice())
                    .map_err(|e| Error::Device(format!("ids download: {e:?}")))?;
                be.synchronize().map_err(crate::ops::cuda_err)?;
            }
        }
        let _ = s; // only the CUDA arm reads the stream
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn elsewhere(&self, op: &'static str, s: &Stream) -> Error {
        Error::DeviceMismatch {
            op,
            a: format!("ids on {}", self.device()),
            b: format!("stream on {}", s.device()),
        }
    }

    fn room(&self, op: &'static str, n: usize) -> Result<()> {
        if n > self.len {
            return Err(Error::TooSmall {
                op,
                what: "ids",
                got: self.len,
                needed: n,
            });
        }
        Ok(())
    }

    /// The first `n` ids of a host buffer.
    pub(crate) fn host(&self, op: &'static str, n: usize) -> Result<&[u32]> {
        self.room(op, n)?;
        match &self.storage {
            IdStorage::Cpu(v) => Ok(&v[..n]),
            #[cfg(feature = "cuda")]
            IdStorage::Cuda(..) => Err(self.wrong_side(op)),
        }
    }

    pub(crate) fn host_mut(&mut self, op: &'static str, n: usize) -> Result<&mut [u32]> {
        self.room(op, n)?;
        #[cfg(feature = "cuda")]
        if let IdStorage::Cuda(..) = self.storage {
            return Err(self.wrong_side(op));
        }
        match &mut self.storage {
            IdStorage::Cpu(v) => Ok(&mut v[..n]),
            #[cfg(feature = "cuda")]
            IdStorage::Cuda(..) => Err(Self::on_cpu(op)),
        }
    }

    #[cfg(feature = "cuda")]
    fn wrong_side(&self, op: &'static str) -> Error {
        Error::DeviceMismatch {
            op,
            a: format!("ids on {}", self.device()),
            b: "a cpu stream".into(),
        }
    }

    #[cfg(feature = "cuda")]
    fn on_cpu(op: &'static str) -> Error {
        Error::DeviceMismatch {
            op,
            a: "ids on cpu".into(),
            b: "a cuda stream".into(),
        }
    }

    #[cfg(feature = "cuda")]
    pub(crate) fn cuda(&self, op: &'static str, n: usize) -> Result<kiln_cuda::CudaView<'_, u32>> {
        self.room(op, n)?;
        match &self.storage {
            IdStorage::Cuda(_, d) => Ok(d.slice(0..n)),
            IdStorage::Cpu(_) => Err(Self::on_cpu(op)),
        }
    }

    #[cfg(feature = "cuda")]
    pub(crate) fn cuda_mut(
        &mut self,
        op: &'static str,
        n: usize,
    ) -> Result<kiln_cuda::CudaViewMut<'_, u32>> {
        self.room(op, n)?;
        match &mut self.storage {
            IdStorage::Cuda(_, d) => Ok(d.slice_mut(0..n)),
            IdStorage::Cpu(_) => Err(Self::on_cpu(op)),
        }
    }
}
