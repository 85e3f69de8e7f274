//! KV-cache views of a tensor (F32, F16 or BF16 elements, `kiln_core::KvType`)
//! for the attention and KV-append ops: host slices by element type, and on
//! a GPU views that own what `kiln_cuda::KvView` borrows.

use super::Tensor;
use crate::{Error, Result};
use kiln_core::DType;

impl Tensor {
    /// The first `n` 16-bit elements (f16 / bf16 bits) of a host tensor of
    /// dtype F16 or BF16.
    pub(crate) fn u16_prefix(
        &self,
        op: &'static str,
        what: &'static str,
        n: usize,
    ) -> Result<&[u16]> {
        self.check_16bit(op, what, "F16 or BF16")?;
        self.host_prefix(op, what, n)
    }

    /// [`Tensor::u16_prefix`], writable (an owned host F16 / BF16 tensor).
    pub(crate) fn u16_prefix_mut(
        &mut self,
        op: &'static str,
        what: &'static str,
        n: usize,
    ) -> Result<&mut [u16]> {
        self.check_16bit(op, what, "an owned F16 or BF16 tensor")?;
        self.host_prefix_mut(op, what, n)
    }

    fn check_16bit(
        &self,
        op: &'static str,
        what: &'static str,
        expected: &'static str,
    ) -> Result<()> {
        if matches!(self.dtype, DType::F16 | DType::BF16) {
            Ok(())
        } else {
            Err(Error::DType {
                op,
                what,
                got: self.dtype,
                expected,
            })
        }
    }

    /// A KV cache of this tensor's dtype as read by the CPU ops (the first
    /// `n` elements).
    pub(crate) fn kv_slice(
        &self,
        op: &'static str,
        what: &'static str,
        n: usize,
    ) -> Result<kiln_core::KvSlice<'_>> {
        use kiln_core::{KvSlice, KvType};
        Ok(match KvType::from_dtype(op, self.dtype)? {
            KvType::F32 => KvSlice::F32(self.f32_prefix(op, what, n)?),
            KvType::F16 => KvSlice::F16(self.u16_prefix(op, what, n)?),
            KvType::BF16 => KvSlice::BF16(self.u16_prefix(op, what, n)?),
        })
    }

    /// A KV cache of this tensor's dtype as written by the CPU ops.
    pub(crate) fn kv_slice_mut(
        &mut self,
        op: &'static str,
        what: &'static str,
        n: usize,
    ) -> Result<kiln_core::KvSliceMut<'_>> {
        use kiln_core::{KvSliceMut, KvType};
        Ok(match KvType::from_dtype(op, self.dtype)? {
            KvType::F32 => KvSliceMut::F32(self.f32_prefix_mut(op, what, n)?),
            KvType::F16 => KvSliceMut::F16(self.u16_prefix_mut(op, what, n)?),
            KvType::BF16 => KvSliceMut::BF16(self.u16_prefix_mut(op, what, n)?),
        })
    }

    /// A KV cache of this tensor's dtype on a GPU (the first `n` elements).
    #[cfg(feature = "cuda")]
    pub(crate) fn cuda_kv(
        &self,
        op: &'static str,
        what: &'static str,
        n: usize,
    ) -> Result<CudaKv<'_>> {
        use kiln_core::KvType;
        Ok(match KvType::from_dtype(op, self.dtype)? {
            KvType::F32 => CudaKv::F32(self.cuda_f32(op, what, n)?),
            KvType::F16 => CudaKv::F16(self.cuda_u16(op, what, n)?),
            KvType::BF16 => CudaKv::BF16(self.cuda_u16(op, what, n)?),
        })
    }

    /// [`Tensor::cuda_kv`], writable.
    #[cfg(feature = "cuda")]
    pub(crate) fn cuda_kv_mut(
        &mut self,
        op: &'static str,
        what: &'static str,
        n: usize,
    ) -> Result<CudaKvMut<'_>> {
        use kiln_core::KvType;
        Ok(match KvType::from_dtype(op, self.dtype)? {
            KvType::F32 => CudaKvMut::F32(self.cuda_f32_mut(op, what, n)?),
            KvType::F16 => CudaKvMut::F16(self.cuda_u16_mut(op, what, n)?),
            KvType::BF16 => CudaKvMut::BF16(self.cuda_u16_mut(op, what, n)?),
        })
    }
}

/// A GPU KV cache's view by element type (owns the view that
/// [`kiln_cuda::KvView`] borrows).
#[cfg(feature = "cuda")]
pub(crate) enum CudaKv<'a> {
    F32(kiln_cuda::CudaView<'a, f32>),
    F16(kiln_cuda::CudaView<'a, u16>),
    BF16(kiln_cuda::CudaView<'a, u16>),
}

#[cfg(feature = "cuda")]
impl<'a> CudaKv<'a> {
    pub(crate) fn view(&self) -> kiln_cuda::KvView<'_, 'a> {
        match self {
            CudaKv::F32(v) => kiln_cuda::KvView::F32(v),
            CudaKv::F16(v) => kiln_cuda::KvView::F16(v),
            CudaKv::BF16(v) => kiln_cuda::KvView::BF16(v),
        }
    }
}

/// [`CudaKv`], writable.
#[cfg(feature = "cuda")]
pub(crate) enum CudaKvMut<'a> {
    F32(kiln_cuda::CudaViewMut<'a, f32>),
    F16(kiln_cuda::CudaViewMut<'a, u16>),
    BF16(kiln_cuda::CudaViewMut<'a, u16>),
}

#[cfg(feature = "cuda")]
impl<'a> CudaKvMut<'a> {
    pub(crate) fn view(&mut self) -> kiln_cuda::KvViewMut<'_, 'a> {
        match self {
            CudaKvMut::F32(v) => kiln_cuda::KvViewMut::F32(v),
            CudaKvMut::F16(v) => kiln_cuda::KvViewMut::F16(v),
            CudaKvMut::BF16(v) => kiln_cuda::KvViewMut::BF16(v),
        }
    }
}
