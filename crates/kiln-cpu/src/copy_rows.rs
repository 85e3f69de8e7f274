//! copy_rows on the CPU: one memcpy per contiguous range.

use crate::CpuContext;
use kiln_core::ops::copy_rows::CopyRowsParams;
use kiln_core::Result;

/// Copy rows (see [`kiln_core::ops::copy_rows`]). Rows are contiguous in both
/// buffers, so the whole range is a single slice copy.
pub fn copy_rows(
    _ctx: &CpuContext,
    p: &CopyRowsParams,
    src: &[f32],
    dst: &mut [f32],
) -> Result<()> {
    p.validate(src.len(), dst.len())?;
    let n = p.n_rows * p.row_len;
    let s = p.src_row * p.row_len;
    let d = p.dst_row * p.row_len;
    dst[d..d + n].copy_from_slice(&src[s..s + n]);
    Ok(())
}
