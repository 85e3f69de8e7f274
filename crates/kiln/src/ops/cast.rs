//! `dst = cast(src)`: every element of `src` converted to `dst`'s dtype,
//! each of F32, F16 or BF16 (spec: [`kiln_core::ops::cast`]; bit-exact on
//! every backend). The direction comes from the tensors' dtypes; both must
//! hold the same number of elements. A 16-bit destination on CUDA must own
//! its buffer (not a row view).
use crate::device::Backend;
use crate::{Error, Result, Stream, Tensor};
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
                CastSrc::Bits(u16_prefix(src.cpu_bytes_for(OP, "src")?, "src", n)?)
            };
            let bytes = dst.cpu_bytes_mut(OP, "dst")?;
            let dv = if p.dst == DType::F32 {
                CastDst::F32(prefix_mut::<f32>(bytes, "dst", n)?)
            } else {
                CastDst::Bits(prefix_mut::<u16>(bytes, "dst", n)?)
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

/// The first `n` 16-bit elements of a host tensor's bytes.
fn u16_prefix<'a>(bytes: &'a [u8], what: &'static str, n: usize) -> Result<&'a [u16]> {
    let all: &[u16] = bytemuck::try_cast_slice(bytes)
        .map_err(|e| kiln_core::Error::invalid(OP, format!("{what} is not 2-byte aligned: {e}")))?;
    all.get(..n).ok_or(Error::TooSmall {
        op: OP,
        what,
        got: all.len(),
        needed: n,
    })
}

/// The first `n` elements of type `T` of an owned host tensor's bytes.
fn prefix_mut<'a, T: bytemuck::Pod>(
    bytes: &'a mut [u8],
    what: &'static str,
    n: usize,
) -> Result<&'a mut [T]> {
    let all: &mut [T] = bytemuck::try_cast_slice_mut(bytes).map_err(|e| {
        kiln_core::Error::invalid(
            OP,
            format!("{what} is not {}-byte aligned: {e}", size_of::<T>()),
        )
    })?;
    let got = all.len();
    all.get_mut(..n).ok_or(Error::TooSmall {
        op: OP,
        what,
        got,
        needed: n,
    })
}
