//! Tensors: dtype + shape + backend storage.
//!
//! Shapes are row-major, outermost first (`[rows, cols]`); a GGUF tensor with
//! `ne = [k, n]` becomes shape `[n, k]`. Quantized tensors store whole GGML
//! blocks along the last dimension.

use crate::device::Backend;
use crate::{Device, Error, Result, Stream};
use kiln_core::DType;
use std::fmt;
use std::sync::Arc;

/// Bytes owned elsewhere (a memory-mapped GGUF file) that tensors can borrow
/// zero-copy.
pub trait HostBytes: Send + Sync {
    fn host_bytes(&self) -> &[u8];
}

impl HostBytes for kiln_core::gguf::GgufFile {
    fn host_bytes(&self) -> &[u8] {
        self.data()
    }
}

/// The whole file: tensor offsets are [`kiln_core::safetensors::StTensorInfo::range`].
impl HostBytes for kiln_core::safetensors::SafetensorsFile {
    fn host_bytes(&self) -> &[u8] {
        self.bytes()
    }
}

/// A row-major shape, outermost dimension first.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Shape(pub Vec<usize>);

impl Shape {
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    /// Total elements; `None` on overflow.
    pub fn numel(&self) -> Option<usize> {
        self.0.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
    }
    /// Innermost dimension (1 for a scalar).
    pub fn last(&self) -> usize {
        self.0.last().copied().unwrap_or(1)
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Self {
        Shape(d.to_vec())
    }
}

mod kv;

enum CpuStorage {
    F32(Vec<f32>),
    /// 16-bit elements (f16 / bf16 KV caches), 2-byte aligned.
    U16(Vec<u16>),
    Bytes(Vec<u8>),
    Shared {
        src: Arc<dyn HostBytes>,
        offset: usize,
        len: usize,
        /// The matrix repacked for the CPU mat-vec
        /// (`kiln_cpu::quant_dot::PackedWeights`), built on first use;
        /// `None` inside when this CPU or format has no packed kernel.
        /// Shared bytes are immutable, so it never goes stale.
        packed: std::sync::OnceLock<Option<kiln_cpu::quant_dot::PackedWeights>>,
    },
}

#[cfg(feature = "cuda")]
enum CudaStorage {
    F32(kiln_cuda::CudaSlice<f32>),
    /// Raw bytes `range` of a shared buffer (several weight tensors may be
    /// row ranges of one upload, see [`Tensor::row_view`]).
    Bytes(Arc<kiln_cuda::CudaSlice<u8>>, std::ops::Range<usize>),
}

#[cfg(feature = "cuda")]
fn cuda_bytes_storage(b: kiln_cuda::CudaSlice<u8>) -> CudaStorage {
    let n = b.len();
    CudaStorage::Bytes(Arc::new(b), 0..n)
}

enum Storage {
    Cpu(CpuStorage),
    #[cfg(feature = "cuda")]
    Cuda(usize, CudaStorage),
}

/// A tensor on a device.
pub struct Tensor {
    dtype: DType,
    shape: Shape,
    storage: Storage,
}

fn byte_len(op: &'static str, dtype: DType, shape: &Shape) -> Result<usize> {
    let last = shape.last();
    let rows = shape
        .numel()
        .ok_or_else(|| kiln_core::Error::invalid(op, format!("shape {shape:?} overflows")))?
        / last.max(1);
    let rb = dtype.row_bytes(op, last)?;
    Ok(rows * rb)
}

fn numel(shape: &Shape) -> Result<usize> {
    shape.numel().ok_or_else(|| {
        kiln_core::Error::invalid("tensor", format!("shape {shape:?} overflows")).into()
    })
}

/// The error of a CUDA view asked of the wrong storage: a host tensor, or
/// a device tensor of the other element kind (`expected` names the wanted one).
#[cfg(feature = "cuda")]
fn view_err(
    s: &Storage,
    op: &'static str,
    what: &'static str,
    got: DType,
    expected: &'static str,
) -> Error {
    match s {
        Storage::Cpu(_) => Error::DeviceMismatch {
            op,
            a: format!("{what} on cpu"),
            b: "a cuda stream".into(),
        },
        Storage::Cuda(..) => Error::DType {
            op,
            what,
            got,
            expected,
        },
    }
}

/// `n` elements asked of a view holding `got`.
#[cfg(feature = "cuda")]
fn check_room(op: &'static str, what: &'static str, got: usize, n: usize) -> Result<()> {
    if n > got {
        return Err(Error::TooSmall {
            op,
            what,
            got,
            needed: n,
        });
    }
    Ok(())
}

#[cfg(feature = "cuda")]
fn cuda_err(e: kiln_cuda::CudaError) -> Error {
    Error::Device(e.to_string())
}

impl Tensor {
    /// A zero-filled f32 tensor on the stream's device.
    pub fn zeros(s: &Stream, shape: &[usize]) -> Result<Tensor> {
        let shape = Shape(shape.to_vec());
        let n = numel(&shape)?;
        let storage = match s.backend() {
            Backend::Cpu(_) => Storage::Cpu(CpuStorage::F32(vec![0.0; n])),
            #[cfg(feature = "cuda")]
            Backend::Cuda(be) => Storage::Cuda(
                be.info().ordinal,
                CudaStorage::F32(be.alloc_zeros::<f32>(n.max(1)).map_err(cuda_err)?),
            ),
        };
        Ok(Tensor {
            dtype: DType::F32,
            shape,
            storage,
        })
    }

    /// A zero-filled tensor of a float dtype (F32, F16 or BF16: e.g. a KV
    /// cache of [`kiln_core::KvType`]) on the stream's device.
    pub fn zeros_of(s: &Stream, dtype: DType, shape: &[usize]) -> Result<Tensor> {
        let n = numel(&Shape(shape.to_vec()))?;
        match dtype {
            DType::F32 => Tensor::zeros(s, shape),
            DType::F16 | DType::BF16 => {
                let storage = match s.backend() {
                    Backend::Cpu(_) => Storage::Cpu(CpuStorage::U16(vec![0; n])),
                    #[cfg(feature = "cuda")]
                    Backend::Cuda(be) => Storage::Cuda(
                        be.info().ordinal,
                        cuda_bytes_storage(be.alloc_zeros::<u8>(2 * n.max(1)).map_err(cuda_err)?),
                    ),
                };
                Ok(Tensor {
                    dtype,
                    shape: Shape(shape.to_vec()),
                    storage,
                })
            }
            other => Err(kiln_core::Error::invalid(
                "tensor",
                format!("zeros_of: {other} is not a float element type"),
            )
            .into()),
        }
    }

    /// Upload f32 data.
    pub fn from_f32(s: &Stream, shape: &[usize], data: Vec<f32>) -> Result<Tensor> {
        let shape = Shape(shape.to_vec());
        kiln_core::error::check_len("tensor", "data", data.len(), numel(&shape)?)?;
        let storage = match s.backend() {
            Backend::Cpu(_) => Storage::Cpu(CpuStorage::F32(data)),
            #[cfg(feature = "cuda")]
            Backend::Cuda(be) => Storage::Cuda(
                be.info().ordinal,
                CudaStorage::F32(be.upload(&data).map_err(cuda_err)?),
            ),
        };
        Ok(Tensor {
            dtype: DType::F32,
            shape,
            storage,
        })
    }

    /// Upload raw bytes of any dtype (quantized blocks along the last dim).
    pub fn from_bytes(s: &Stream, dtype: DType, shape: &[usize], data: Vec<u8>) -> Result<Tensor> {
        let shape = Shape(shape.to_vec());
        kiln_core::error::check_len(
            "tensor",
            "bytes",
            data.len(),
            byte_len("tensor", dtype, &shape)?,
        )?;
        let storage = match s.backend() {
            Backend::Cpu(_) => Storage::Cpu(CpuStorage::Bytes(data)),
            #[cfg(feature = "cuda")]
            Backend::Cuda(be) => Storage::Cuda(
                be.info().ordinal,
                cuda_bytes_storage(be.upload(&data).map_err(cuda_err)?),
            ),
        };
        Ok(Tensor {
            dtype,
            shape,
            storage,
        })
    }

    /// Borrow the bytes at `offset` of a host byte source: zero copy on the
    /// CPU, one upload on a GPU.
    pub fn from_shared(
        s: &Stream,
        dtype: DType,
        shape: &[usize],
        src: Arc<dyn HostBytes>,
        offset: usize,
    ) -> Result<Tensor> {
        let shape = Shape(shape.to_vec());
        let len = byte_len("tensor", dtype, &shape)?;
        let total = src.host_bytes().len();
        if offset.checked_add(len).is_none_or(|end| end > total) {
            return Err(kiln_core::Error::invalid(
                "tensor",
                format!("bytes {offset}..{offset}+{len} lie outside a source of {total} bytes"),
            )
            .into());
        }
        let storage = match s.backend() {
            Backend::Cpu(_) => Storage::Cpu(CpuStorage::Shared {
                src,
                offset,
                len,
                packed: std::sync::OnceLock::new(),
            }),
            #[cfg(feature = "cuda")]
            Backend::Cuda(be) => Storage::Cuda(
                be.info().ordinal,
                cuda_bytes_storage(
                    be.upload(&src.host_bytes()[offset..offset + len])
                        .map_err(cuda_err)?,
                ),
            ),
        };
        Ok(Tensor {
            dtype,
            shape,
            storage,
        })
    }

    /// Rows `r0..r0 + n` of a 2-D raw-byte tensor (weights) as a tensor that
    /// shares the storage: no copy. File-backed CPU tensors and all GPU
    /// byte tensors support it.
    pub fn row_view(&self, r0: usize, n: usize) -> Result<Tensor> {
        const OP: &str = "row_view";
        let [rows, cols] = self.dims() else {
            return Err(kiln_core::Error::invalid(
                OP,
                format!("needs a 2-D tensor, got {:?}", self.shape),
            )
            .into());
        };
        if r0.checked_add(n).is_none_or(|end| end > *rows) {
            return Err(kiln_core::Error::invalid(
                OP,
                format!("rows {r0}..{r0}+{n} of a tensor with {rows} rows"),
            )
            .into());
        }
        let rb = self.dtype.row_bytes(OP, *cols)?;
        let (off, len) = (r0 * rb, n * rb);
        let storage = match &self.storage {
            Storage::Cpu(CpuStorage::Shared { src, offset, .. }) => {
                Storage::Cpu(CpuStorage::Shared {
                    src: src.clone(),
                    offset: offset + off,
                    len,
                    packed: std::sync::OnceLock::new(),
                })
            }
            #[cfg(feature = "cuda")]
            Storage::Cuda(ord, CudaStorage::Bytes(b, r)) => Storage::Cuda(
                *ord,
                CudaStorage::Bytes(b.clone(), r.start + off..r.start + off + len),
            ),
            _ => {
                return Err(kiln_core::Error::invalid(
                    OP,
                    "needs a file-backed or GPU weight tensor".to_string(),
                )
                .into())
            }
        };
        Ok(Tensor {
            dtype: self.dtype,
            shape: Shape(vec![n, *cols]),
            storage,
        })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn shape(&self) -> &Shape {
        &self.shape
    }
    pub fn dims(&self) -> &[usize] {
        &self.shape.0
    }
    pub fn device(&self) -> Device {
        match &self.storage {
            Storage::Cpu(_) => Device::Cpu,
            #[cfg(feature = "cuda")]
            Storage::Cuda(i, _) => Device::Cuda(*i),
        }
    }
    /// Elements (not blocks).
    pub fn numel(&self) -> usize {
        self.shape.numel().unwrap_or(0)
    }

    /// Size of the data in bytes.
    pub fn byte_len(&self) -> usize {
        byte_len("tensor", self.dtype, &self.shape).unwrap_or(0)
    }

    /// Raw bytes of a host tensor.
    pub fn host_bytes(&self) -> Result<&[u8]> {
        match &self.storage {
            Storage::Cpu(c) => Ok(cpu_bytes(c)),
            #[cfg(feature = "cuda")]
            Storage::Cuda(..) => Err(self.not_here("host_bytes", "tensor", Device::Cpu)),
        }
    }

    /// The whole tensor as f32 (a host F32 tensor).
    pub fn as_f32(&self) -> Result<&[f32]> {
        self.f32_prefix("tensor", "tensor", self.numel())
    }

    /// Copy the first `n` f32 elements to `out` (downloading from a GPU).
    pub fn read_f32(&self, s: &Stream, n: usize, out: &mut Vec<f32>) -> Result<()> {
        out.clear();
        match &self.storage {
            Storage::Cpu(_) => out.extend_from_slice(self.f32_prefix("read", "tensor", n)?),
            #[cfg(feature = "cuda")]
            Storage::Cuda(..) => {
                let be = s
                    .cuda_backend()
                    .ok_or_else(|| self.not_here("read", "tensor", s.device()))?;
                let v = self.cuda_f32("read", "tensor", n)?;
                out.resize(n, 0.0);
                be.stream()
                    .memcpy_dtoh(&v, out.as_mut_slice())
                    .map_err(|e| Error::Device(format!("download: {e:?}")))?;
                be.synchronize().map_err(cuda_err)?;
            }
        }
        let _ = s;
        Ok(())
    }

    /// Download to a host vector of f32 (dequantizing if needed).
    pub fn to_f32_vec(&self, s: &Stream) -> Result<Vec<f32>> {
        if self.dtype == DType::F32 {
            let mut v = Vec::new();
            self.read_f32(s, self.numel(), &mut v)?;
            return Ok(v);
        }
        let bytes: Vec<u8> = match &self.storage {
            Storage::Cpu(c) => cpu_bytes(c).to_vec(),
            #[cfg(feature = "cuda")]
            Storage::Cuda(_, CudaStorage::Bytes(b, r)) => {
                let be = s
                    .cuda_backend()
                    .ok_or_else(|| self.not_here("download", "tensor", s.device()))?;
                be.download(&b.slice(r.clone())).map_err(cuda_err)?
            }
            #[cfg(feature = "cuda")]
            Storage::Cuda(_, CudaStorage::F32(_)) => {
                return Err(self.not_here("download", "tensor", s.device()))
            }
        };
        let mut out = vec![0f32; self.numel()];
        let last = self.shape.last();
        let rb = self.dtype.row_bytes("download", last)?;
        for (row, dst) in bytes
            .chunks_exact(rb.max(1))
            .zip(out.chunks_exact_mut(last.max(1)))
        {
            kiln_core::quant::dequantize_row(self.dtype, row, dst)?;
        }
        Ok(out)
    }

    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    fn not_here(&self, op: &'static str, what: &'static str, want: Device) -> Error {
        Error::DeviceMismatch {
            op,
            a: format!("{what} on {}", self.device()),
            b: format!("stream on {want}"),
        }
    }

    /// The first `n` f32 elements of a host tensor, for ops whose params use
    /// a prefix of a preallocated buffer.
    pub(crate) fn f32_prefix(
        &self,
        op: &'static str,
        what: &'static str,
        n: usize,
    ) -> Result<&[f32]> {
        if self.dtype != DType::F32 {
            return Err(Error::DType {
                op,
                what,
                got: self.dtype,
                expected: "F32",
            });
        }
        self.host_prefix(op, what, n)
    }

    /// [`Tensor::f32_prefix`], writable (an owned host F32 tensor).
    pub(crate) fn f32_prefix_mut(
        &mut self,
        op: &'static str,
        what: &'static str,
        n: usize,
    ) -> Result<&mut [f32]> {
        if self.dtype != DType::F32 {
            return Err(Error::DType {
                op,
                what,
                got: self.dtype,
                expected: "an owned F32 tensor",
            });
        }
        self.host_prefix_mut(op, what, n)
    }

    /// The first `n` elements of a host tensor's bytes as `T` (the storage
    /// must be aligned for `T`); the typed prefixes check the dtype first.
    pub(crate) fn host_prefix<T: bytemuck::Pod>(
        &self,
        op: &'static str,
        what: &'static str,
        n: usize,
    ) -> Result<&[T]> {
        let all: &[T] = bytemuck::try_cast_slice(self.cpu_bytes_for(op, what)?)
            .map_err(|e| misaligned::<T>(op, what, e))?;
        all.get(..n).ok_or(Error::TooSmall {
            op,
            what,
            got: all.len(),
            needed: n,
        })
    }

    /// [`Tensor::host_prefix`], writable (an owned host tensor:
    /// [`Tensor::cpu_bytes_mut`]).
    pub(crate) fn host_prefix_mut<T: bytemuck::Pod>(
        &mut self,
        op: &'static str,
        what: &'static str,
        n: usize,
    ) -> Result<&mut [T]> {
        let all: &mut [T] = bytemuck::try_cast_slice_mut(self.cpu_bytes_mut(op, what)?)
            .map_err(|e| misaligned::<T>(op, what, e))?;
        let got = all.len();
        all.get_mut(..n).ok_or(Error::TooSmall {
            op,
            what,
            got,
            needed: n,
        })
    }

    /// Raw bytes of an owned host tensor, for ops that write non-f32 data.
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    pub(crate) fn cpu_bytes_mut(
        &mut self,
        op: &'static str,
        what: &'static str,
    ) -> Result<&mut [u8]> {
        #[cfg(feature = "cuda")]
        let dev = self.device();
        match &mut self.storage {
            Storage::Cpu(CpuStorage::F32(v)) => Ok(bytemuck::cast_slice_mut(v)),
            Storage::Cpu(CpuStorage::U16(v)) => Ok(bytemuck::cast_slice_mut(v)),
            Storage::Cpu(CpuStorage::Bytes(v)) => Ok(v),
            Storage::Cpu(CpuStorage::Shared { .. }) => Err(Error::DType {
                op,
                what,
                got: self.dtype,
                expected: "an owned tensor (not a view of a file)",
            }),
            #[cfg(feature = "cuda")]
            Storage::Cuda(..) => Err(Error::DeviceMismatch {
                op,
                a: format!("{what} on {dev}"),
                b: "a cpu stream".into(),
            }),
        }
    }

    /// The packed form of a file-backed 2-D CPU weight matrix, for the
    /// decode mat-vec (`kiln_cpu::matmul::matmul_packed`): built on the
    /// first call (one copy of the packed rows), `None` when the CPU or the
    /// format has no packed kernel, or the tensor is not file-backed.
    pub(crate) fn cpu_packed(
        &self,
        features: kiln_cpu::CpuFeatures,
    ) -> Option<&kiln_cpu::quant_dot::PackedWeights> {
        let Storage::Cpu(CpuStorage::Shared {
            src,
            offset,
            len,
            packed,
        }) = &self.storage
        else {
            return None;
        };
        let [n, k] = self.dims() else {
            return None;
        };
        packed
            .get_or_init(|| {
                let w = &src.host_bytes()[*offset..*offset + *len];
                // A pack error (a short source) leaves the plain path, whose
                // validation reports it.
                kiln_cpu::quant_dot::PackedWeights::pack(features, self.dtype, *n, *k, w)
                    .ok()
                    .flatten()
            })
            .as_ref()
    }

    /// Raw bytes of a host tensor, for ops.
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    pub(crate) fn cpu_bytes_for(&self, op: &'static str, what: &'static str) -> Result<&[u8]> {
        match &self.storage {
            Storage::Cpu(c) => Ok(cpu_bytes(c)),
            #[cfg(feature = "cuda")]
            Storage::Cuda(..) => Err(self.not_here(op, what, Device::Cpu)),
        }
    }

    /// A device view of the first `n` f32 elements of a GPU tensor.
    #[cfg(feature = "cuda")]
    pub(crate) fn cuda_f32(
        &self,
        op: &'static str,
        what: &'static str,
        n: usize,
    ) -> Result<kiln_cuda::CudaView<'_, f32>> {
        match &self.storage {
            Storage::Cuda(_, CudaStorage::F32(v)) => {
                check_room(op, what, v.len(), n)?;
                Ok(v.slice(0..n))
            }
            other => Err(view_err(other, op, what, self.dtype, "F32")),
        }
    }

    /// A mutable device view of the first `n` f32 elements of a GPU tensor.
    #[cfg(feature = "cuda")]
    pub(crate) fn cuda_f32_mut(
        &mut self,
        op: &'static str,
        what: &'static str,
        n: usize,
    ) -> Result<kiln_cuda::CudaViewMut<'_, f32>> {
        let dtype = self.dtype;
        match &mut self.storage {
            Storage::Cuda(_, CudaStorage::F32(v)) => {
                check_room(op, what, v.len(), n)?;
                Ok(v.slice_mut(0..n))
            }
            other => Err(view_err(other, op, what, dtype, "F32")),
        }
    }

    /// The first `n` 2-byte values (bf16 bits) of a GPU byte tensor.
    #[cfg(feature = "cuda")]
    pub(crate) fn cuda_u16(
        &self,
        op: &'static str,
        what: &'static str,
        n: usize,
    ) -> Result<kiln_cuda::CudaView<'_, u16>> {
        let dtype = self.dtype;
        match &self.storage {
            Storage::Cuda(_, CudaStorage::Bytes(b, r)) => {
                let got = r.len() / 2;
                let small = Error::TooSmall {
                    op,
                    what,
                    got,
                    needed: n,
                };
                if n > got {
                    return Err(small);
                }
                if r.start % 2 != 0 {
                    return Err(kiln_core::Error::invalid(
                        op,
                        format!("{what} starts at odd byte {} of its buffer", r.start),
                    )
                    .into());
                }
                // SAFETY: every bit pattern is a valid u16; the view covers
                // 2n <= r.len() bytes of the range, whose start is 2-byte
                // aligned (device allocations are 256-byte aligned, r.start is
                // even).
                unsafe { b.slice(r.clone()).transmute::<u16>(n) }.ok_or(small)
            }
            other => Err(view_err(other, op, what, dtype, "BF16")),
        }
    }

    /// The first `n` 2-byte values (bf16 bits) of a GPU byte tensor that owns
    /// its whole buffer (not a row view sharing it), writable.
    #[cfg(feature = "cuda")]
    pub(crate) fn cuda_u16_mut(
        &mut self,
        op: &'static str,
        what: &'static str,
        n: usize,
    ) -> Result<kiln_cuda::CudaViewMut<'_, u16>> {
        let dtype = self.dtype;
        match &mut self.storage {
            Storage::Cuda(_, CudaStorage::Bytes(b, r)) => {
                let got = r.len() / 2;
                let small = Error::TooSmall {
                    op,
                    what,
                    got,
                    needed: n,
                };
                if n > got {
                    return Err(small);
                }
                let shared = || {
                    kiln_core::Error::invalid(
                        op,
                        format!("{what} shares its device buffer (a row view): not writable"),
                    )
                };
                if r.start != 0 {
                    return Err(shared().into());
                }
                let slice = Arc::get_mut(b).ok_or_else(shared)?;
                // SAFETY: every bit pattern is a valid u16; the view covers
                // 2n <= r.len() bytes from the start of the (256-byte aligned)
                // allocation, which this tensor alone holds.
                unsafe { slice.transmute_mut::<u16>(n) }.ok_or(small)
            }
            other => Err(view_err(other, op, what, dtype, "BF16")),
        }
    }

    /// A device view of a GPU tensor's raw bytes (quantized weights).
    #[cfg(feature = "cuda")]
    pub(crate) fn cuda_bytes(
        &self,
        op: &'static str,
        what: &'static str,
    ) -> Result<kiln_cuda::CudaView<'_, u8>> {
        match &self.storage {
            Storage::Cuda(_, CudaStorage::Bytes(b, r)) => Ok(b.slice(r.clone())),
            Storage::Cuda(_, CudaStorage::F32(_)) => Err(Error::DType {
                op,
                what,
                got: self.dtype,
                expected: "a byte (weight) tensor",
            }),
            Storage::Cpu(_) => Err(Error::DeviceMismatch {
                op,
                a: format!("{what} on cpu"),
                b: "a cuda stream".into(),
            }),
        }
    }
}

/// The error of a host buffer whose bytes cannot be viewed as `T`.
fn misaligned<T>(op: &'static str, what: &'static str, e: bytemuck::PodCastError) -> Error {
    kiln_core::Error::invalid(
        op,
        format!(
            "{what} is not {}-byte aligned: {e}",
            std::mem::size_of::<T>()
        ),
    )
    .into()
}

fn cpu_bytes(c: &CpuStorage) -> &[u8] {
    match c {
        CpuStorage::F32(v) => bytemuck::cast_slice(v),
        CpuStorage::U16(v) => bytemuck::cast_slice(v),
        CpuStorage::Bytes(v) => v,
        CpuStorage::Shared {
            src, offset, len, ..
        } => &src.host_bytes()[*offset..*offset + *len],
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tensor({} {:?} on {})",
            self.dtype,
            self.shape,
            self.device()
        )
    }
}
