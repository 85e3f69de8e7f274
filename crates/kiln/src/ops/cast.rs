//! `dst = cast(src)`: every element of `src` converted to `dst`'s dtype,
//! each of F32, F16 or BF16 (spec: [`kiln_core::ops::cast`]; bit-exact on
//! every backend). The direction comes from the tensors' dtypes; both must
//! hold the same number of elements. A 16-bit destination on CUDA must own
//! its buffer (not a row view).
use crate::device::Backend;
use crate::{Result, Stream, Tensor};
use kiln_core::ops::cast::{CastDst, CastParams, CastSrc};
use kiln_core::DType;

const OP: &str = "cast";

pub fn cast(s: &Stream, src: &Tensor, dst: &mut Tensor) -> Result<()> {
    let _timer = s.scope(OP);
    let n = src.numel();
    let p = CastParams {
        n,
        src: src.dtype(),
        dst: dst.dtype(),
    };
    // Dtypes first (a quantized tensor is refused by name), then lengths.
    p.validate(n, dst.numel())?;
    match s.backend() {
        Backend::Cpu(ctx) => {
            let sv = if p.src == DType::F32 {
                CastSrc::F32(src.f32_prefix(OP, "src", n)?)
            } else {
                CastSrc::Bits(src.u16_prefix(OP, "src", n)?)
            };
            let dv = if p.dst == DType::F32 {
                CastDst::F32(dst.f32_prefix_mut(OP, "dst", n)?)
            } else {
                CastDst::Bits(dst.u16_prefix_mut(OP, "dst", n)?)
            };
            Ok(kiln_cpu::cast::cast(ctx, &p, sv, dv)?)
        }
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            use kiln_cuda::cast::{CastDst, CastSrc};
            let (sf, sb);
            let sv = if p.src == DType::F32 {
                sf = src.cuda_f32(OP, "src", n)?;
                CastSrc::F32(&sf)
            } else {
                sb = src.cuda_u16(OP, "src", n)?;
                CastSrc::Bits(&sb)
            };
            if p.dst == DType::F32 {
                let mut d = dst.cuda_f32_mut(OP, "dst", n)?;
                kiln_cuda::cast::cast(be, &p, sv, CastDst::F32(&mut d))
            } else {
                let mut d = dst.cuda_u16_mut(OP, "dst", n)?;
                kiln_cuda::cast::cast(be, &p, sv, CastDst::Bits(&mut d))
            }
            .map_err(super::cuda_err)
        }
    }
}
