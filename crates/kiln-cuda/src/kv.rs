//! KV caches on the device by element type ([`KvType`]): f32 values, or
//! f16 / bf16 bits (`u16`). The attention, copy_rows and matvec_fused (QKV
//! epilogue) launchers take these and pick their kernels by the type.

use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, SyncOnDrop};
use kiln_core::KvType;

/// A K or V cache, read-only.
pub enum KvView<'a, 'b> {
    F32(&'a CudaView<'b, f32>),
    F16(&'a CudaView<'b, u16>),
    BF16(&'a CudaView<'b, u16>),
}

impl KvView<'_, '_> {
    pub fn kv_type(&self) -> KvType {
        match self {
            KvView::F32(_) => KvType::F32,
            KvView::F16(_) => KvType::F16,
            KvView::BF16(_) => KvType::BF16,
        }
    }

    /// Elements.
    pub fn len(&self) -> usize {
        match self {
            KvView::F32(v) => v.len(),
            KvView::F16(v) | KvView::BF16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The device address, with the guard that orders its use on `st`.
    pub(crate) fn device_ptr<'s>(&'s self, st: &'s CudaStream) -> (CUdeviceptr, SyncOnDrop<'s>) {
        match self {
            KvView::F32(v) => v.device_ptr(st),
            KvView::F16(v) | KvView::BF16(v) => v.device_ptr(st),
        }
    }
}

/// A K or V cache, written (the KV append).
pub enum KvViewMut<'a, 'b> {
    F32(&'a mut CudaViewMut<'b, f32>),
    F16(&'a mut CudaViewMut<'b, u16>),
    BF16(&'a mut CudaViewMut<'b, u16>),
}

impl KvViewMut<'_, '_> {
    pub fn kv_type(&self) -> KvType {
        match self {
            KvViewMut::F32(_) => KvType::F32,
            KvViewMut::F16(_) => KvType::F16,
            KvViewMut::BF16(_) => KvType::BF16,
        }
    }

    /// Elements.
    pub fn len(&self) -> usize {
        match self {
            KvViewMut::F32(v) => v.len(),
            KvViewMut::F16(v) | KvViewMut::BF16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The device address, with the guard that orders its use on `st`.
    pub(crate) fn device_ptr_mut<'s>(
        &'s mut self,
        st: &'s CudaStream,
    ) -> (CUdeviceptr, SyncOnDrop<'s>) {
        match self {
            KvViewMut::F32(v) => v.device_ptr_mut(st),
            KvViewMut::F16(v) | KvViewMut::BF16(v) => v.device_ptr_mut(st),
        }
    }
}
