//! Copy whole rows of an f32 tensor into another (KV-cache append, last-row
//! pick). The destination may be an F16 or BF16 KV cache: each value is
//! then rounded to nearest even (`kiln_core::ops::copy_rows`).
use crate::device::Backend;
use crate::{ops::CopyRowsParams, Result, Stream, Tensor};

pub fn copy_rows(s: &Stream, p: &CopyRowsParams, src: &Tensor, dst: &mut Tensor) -> Result<()> {
    const OP: &str = "copy_rows";
    let _timer = s.scope(OP);
    let (ns, nd) = (src.numel(), dst.numel());
    match s.backend() {
        Backend::Cpu(ctx) => {
            let src = src.f32_prefix(OP, "src", ns)?;
            let dst = dst.kv_slice_mut(OP, "dst", nd)?;
            Ok(kiln_cpu::copy_rows::copy_rows_kv(ctx, p, src, dst)?)
        }
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            let src = src.cuda_f32(OP, "src", ns)?;
            let mut dst = dst.cuda_kv_mut(OP, "dst", nd)?;
            kiln_cuda::copy_rows::copy_rows_kv(be, p, &src, dst.view()).map_err(super::cuda_err)
        }
    }
}

/// [`copy_rows`] to row `positions[0]` (the KV-cache append of a decode step
/// that a CUDA graph records once): on CUDA the row is read from the
/// stream's device copy of `positions` when the kernel runs. `p.dst_row` is
/// the largest row allowed (the bounds are checked for it); `positions[0]`
/// must be in `0..=p.dst_row`.
pub fn copy_rows_at(
    s: &Stream,
    p: &CopyRowsParams,
    positions: &[i32],
    src: &Tensor,
    dst: &mut Tensor,
) -> Result<()> {
    const OP: &str = "copy_rows_at";
    let row = match positions.first() {
        Some(&r) if r >= 0 && (r as usize) <= p.dst_row => r as usize,
        other => {
            return Err(kiln_core::Error::invalid(
                OP,
                format!("row {other:?} is not in 0..={}", p.dst_row),
            )
            .into())
        }
    };
    match s.backend() {
        Backend::Cpu(_) => copy_rows(s, &CopyRowsParams { dst_row: row, ..*p }, src, dst),
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            let _timer = s.scope("copy_rows");
            let (ns, nd) = (src.numel(), dst.numel());
            let src = src.cuda_f32(OP, "src", ns)?;
            let mut dst = dst.cuda_kv_mut(OP, "dst", nd)?;
            s.with_device_positions(be, positions, |pos| {
                kiln_cuda::copy_rows::copy_rows_at_kv(be, p, pos, &src, dst.view())
                    .map_err(super::cuda_err)
            })
        }
    }
}
