//! Tensors: dtype + shape + backend storage.
//!
//! Shapes are row-major, outermost first (`[rows, cols]`); a GGUF tensor with
//! `ne = [k, n]` becomes shape `[n, k]`. Quantized tensors store whole GGML
//! blocks along the last dimension.

use crate::{Device, Error, Result};
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

enum CpuStorage {
    F32(Vec<f32>),
    Bytes(Vec<u8>),
    Shared {
        src: Arc<dyn HostBytes>,
        offset: usize,
        len: usize,
    },
}

/// A tensor on a device.
pub struct Tensor {
    dtype: DType,
    shape: Shape,
    storage: CpuStorage,
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

impl Tensor {
    /// A zero-filled f32 tensor on `device`.
    pub fn zeros(device: Device, shape: &[usize]) -> Result<Tensor> {
        let shape = Shape(shape.to_vec());
        let n = shape.numel().ok_or_else(|| {
            kiln_core::Error::invalid("tensor", format!("shape {shape:?} overflows"))
        })?;
        match device {
            Device::Cpu => Ok(Tensor {
                dtype: DType::F32,
                shape,
                storage: CpuStorage::F32(vec![0.0; n]),
            }),
        }
    }

    /// Upload f32 data.
    pub fn from_f32(device: Device, shape: &[usize], data: Vec<f32>) -> Result<Tensor> {
        let shape = Shape(shape.to_vec());
        let n = shape.numel().unwrap_or(usize::MAX);
        kiln_core::error::check_len("tensor", "data", data.len(), n)?;
        match device {
            Device::Cpu => Ok(Tensor {
                dtype: DType::F32,
                shape,
                storage: CpuStorage::F32(data),
            }),
        }
    }

    /// Upload raw bytes of any dtype (quantized blocks along the last dim).
    pub fn from_bytes(
        device: Device,
        dtype: DType,
        shape: &[usize],
        data: Vec<u8>,
    ) -> Result<Tensor> {
        let shape = Shape(shape.to_vec());
        kiln_core::error::check_len(
            "tensor",
            "bytes",
            data.len(),
            byte_len("tensor", dtype, &shape)?,
        )?;
        match device {
            Device::Cpu => Ok(Tensor {
                dtype,
                shape,
                storage: CpuStorage::Bytes(data),
            }),
        }
    }

    /// Borrow `len` bytes at `offset` of a host byte source (zero copy on the CPU).
    pub fn from_shared(
        device: Device,
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
        match device {
            Device::Cpu => Ok(Tensor {
                dtype,
                shape,
                storage: CpuStorage::Shared { src, offset, len },
            }),
        }
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
        Device::Cpu
    }
    /// Elements (not blocks).
    pub fn numel(&self) -> usize {
        self.shape.numel().unwrap_or(0)
    }

    /// Raw bytes (any dtype).
    pub fn bytes(&self) -> &[u8] {
        match &self.storage {
            CpuStorage::F32(v) => bytemuck::cast_slice(v),
            CpuStorage::Bytes(v) => v,
            CpuStorage::Shared { src, offset, len } => &src.host_bytes()[*offset..*offset + *len],
        }
    }

    /// The whole tensor as f32 (must be an F32 tensor).
    pub fn as_f32(&self) -> Result<&[f32]> {
        self.f32_prefix("tensor", "tensor", self.numel())
    }

    /// Mutable f32 view (must be an owned F32 tensor).
    pub fn as_f32_mut(&mut self) -> Result<&mut [f32]> {
        let n = self.numel();
        self.f32_prefix_mut("tensor", "tensor", n)
    }

    /// Download to a host vector of f32 (dequantizing if needed).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        if self.dtype == DType::F32 {
            return Ok(self.as_f32()?.to_vec());
        }
        let mut out = vec![0f32; self.numel()];
        let last = self.shape.last();
        let rb = self.dtype.row_bytes("download", last)?;
        for (row, dst) in self
            .bytes()
            .chunks_exact(rb.max(1))
            .zip(out.chunks_exact_mut(last.max(1)))
        {
            kiln_core::quant::dequantize_row(self.dtype, row, dst)?;
        }
        Ok(out)
    }

    /// The first `n` f32 elements, for ops whose params use a prefix of a
    /// preallocated buffer.
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
        let all: &[f32] = match &self.storage {
            CpuStorage::F32(v) => v,
            _ => bytemuck::try_cast_slice(self.bytes()).map_err(|e| {
                kiln_core::Error::invalid(op, format!("{what} is not f32-aligned: {e}"))
            })?,
        };
        all.get(..n).ok_or(Error::TooSmall {
            op,
            what,
            got: all.len(),
            needed: n,
        })
    }

    pub(crate) fn f32_prefix_mut(
        &mut self,
        op: &'static str,
        what: &'static str,
        n: usize,
    ) -> Result<&mut [f32]> {
        match &mut self.storage {
            CpuStorage::F32(v) => {
                let got = v.len();
                v.get_mut(..n).ok_or(Error::TooSmall {
                    op,
                    what,
                    got,
                    needed: n,
                })
            }
            _ => Err(Error::DType {
                op,
                what,
                got: self.dtype,
                expected: "an owned F32 tensor",
            }),
        }
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
