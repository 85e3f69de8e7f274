//! cast on CUDA: validate → select → launch (`kernels/cast.cu`). Implements
//! `kiln_core::ops::cast` (f32 / f16 / bf16, all nine directions) bit for
//! bit: the kernels convert with integer code on the bit patterns.

use crate::kernels::CAST;
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{CudaView, CudaViewMut, DeviceRepr, PushKernelArg};
use kiln_core::ops::cast::CastParams;
use kiln_core::DType;

/// Mirrors `struct CastParams` in cast.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct CastK {
    n: u64,
}
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for CastK {}

/// The source of a cast on the device: f32 values or f16 / bf16 bits.
pub enum CastSrc<'r, 'a> {
    F32(&'r CudaView<'a, f32>),
    Bits(&'r CudaView<'a, u16>),
}

/// The destination of a cast on the device: f32 values or f16 / bf16 bits.
pub enum CastDst<'r, 'a> {
    F32(&'r mut CudaViewMut<'a, f32>),
    Bits(&'r mut CudaViewMut<'a, u16>),
}

/// One kernel per direction; same-type casts are bit copies of 32 or 16 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CastKernel {
    F32F16,
    F32Bf16,
    F16F32,
    Bf16F32,
    F16Bf16,
    Bf16F16,
    Copy32,
    Copy16,
}

impl CastKernel {
    /// The entry point in cast.cu.
    pub fn name(self) -> &'static str {
        match self {
            CastKernel::F32F16 => "cast_f32_f16",
            CastKernel::F32Bf16 => "cast_f32_bf16",
            CastKernel::F16F32 => "cast_f16_f32",
            CastKernel::Bf16F32 => "cast_bf16_f32",
            CastKernel::F16Bf16 => "cast_f16_bf16",
            CastKernel::Bf16F16 => "cast_bf16_f16",
            CastKernel::Copy32 => "cast_copy_b32",
            CastKernel::Copy16 => "cast_copy_b16",
        }
    }
}

/// The kernel for `p`'s direction; `None` when a dtype is not F32, F16 or BF16.
pub fn select_cast(p: &CastParams) -> Option<CastKernel> {
    use DType::{BF16, F16, F32};
    Some(match (p.src, p.dst) {
        (F32, F32) => CastKernel::Copy32,
        (F16, F16) | (BF16, BF16) => CastKernel::Copy16,
        (F32, F16) => CastKernel::F32F16,
        (F32, BF16) => CastKernel::F32Bf16,
        (F16, F32) => CastKernel::F16F32,
        (BF16, F32) => CastKernel::Bf16F32,
        (F16, BF16) => CastKernel::F16Bf16,
        (BF16, F16) => CastKernel::Bf16F16,
        _ => return None,
    })
}

/// `dst[i] = cast(src[i])` for `i < n` on the backend's stream.
pub fn cast(
    be: &CudaBackend,
    p: &CastParams,
    src: CastSrc<'_, '_>,
    dst: CastDst<'_, '_>,
) -> Result<()> {
    let (src_len, src_f32) = match &src {
        CastSrc::F32(v) => (v.len(), true),
        CastSrc::Bits(v) => (v.len(), false),
    };
    let (dst_len, dst_f32) = match &dst {
        CastDst::F32(v) => (v.len(), true),
        CastDst::Bits(v) => (v.len(), false),
    };
    p.validate_storage(src_len, src_f32, dst_len, dst_f32)?;
    let kernel = select_cast(p).ok_or(kiln_core::Error::UnsupportedDType {
        op: "cast",
        dtype: p.src,
    })?;
    if p.n == 0 {
        return Ok(());
    }
    let f = be.function("cast", CAST, kernel.name())?;
    let cfg = crate::launch::vec4_grid(p.n);
    let k = CastK { n: p.n as u64 };
    let mut l = be.stream().launch_builder(&f);
    l.arg(&k);
    match src {
        CastSrc::F32(v) => l.arg(v),
        CastSrc::Bits(v) => l.arg(v),
    };
    match dst {
        CastDst::F32(v) => l.arg(v),
        CastDst::Bits(v) => l.arg(v),
    };
    // SAFETY: the entry point `kernel` takes (CastParams, const Src*, Dst*)
    // with Src / Dst 4 bytes for F32 and 2 for F16 / BF16, which is what the
    // buffers hold (validate_storage); both hold n elements (validated).
    unsafe { l.launch(cfg) }.map_err(|e| CudaError::driver("launch cast", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_one_kernel_per_direction() {
        use kiln_core::ops::cast::CAST_DTYPES;
        let mut names = Vec::new();
        for src in CAST_DTYPES {
            for dst in CAST_DTYPES {
                let p = CastParams { n: 1, src, dst };
                names.extend(select_cast(&p).map(CastKernel::name));
            }
        }
        assert_eq!(names.len(), 9);
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 8, "{names:?}");
        let q = CastParams {
            n: 1,
            src: DType::Q4_0,
            dst: DType::F32,
        };
        assert_eq!(select_cast(&q), None);
    }
}
