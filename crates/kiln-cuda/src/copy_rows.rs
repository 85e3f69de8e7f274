//! copy_rows on CUDA: validate → launch (`kernels/copy_rows.cu`). Implements
//! `kiln_core::ops::copy_rows` (KV-cache append, last-token pick): rows are
//! contiguous, so the copy is one range of `n_rows * row_len` floats.

use crate::kernels::COPY_ROWS;
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{CudaView, CudaViewMut, DeviceRepr, PushKernelArg};
use kiln_core::ops::copy_rows::CopyRowsParams;

/// Mirrors `struct CopyRowsParams` in copy_rows.cu (element counts).
#[repr(C)]
#[derive(Clone, Copy)]
struct CopyRowsK {
    n: u64,
    src_off: u64,
    dst_off: u64,
}
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for CopyRowsK {}

/// `dst[dst_row + r, :] = src[src_row + r, :]` for `r < n_rows`, rows of
/// `row_len` floats; the rest of `dst` is untouched.
pub fn copy_rows(
    be: &CudaBackend,
    p: &CopyRowsParams,
    src: &CudaView<'_, f32>,
    dst: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    // validate() bounds (first + n_rows) * row_len by the buffer lengths, so
    // none of the products below overflows.
    p.validate(src.len(), dst.len())?;
    let n = p.n_rows * p.row_len;
    if n == 0 {
        return Ok(());
    }
    let f = be.function("copy_rows", COPY_ROWS, "copy_rows_f32")?;
    let cfg = crate::launch::vec4_grid(n);
    let k = CopyRowsK {
        n: n as u64,
        src_off: (p.src_row * p.row_len) as u64,
        dst_off: (p.dst_row * p.row_len) as u64,
    };
    let mut l = be.stream().launch_builder(&f);
    l.arg(&k).arg(src).arg(dst);
    // SAFETY: argument list matches copy_rows_f32(CopyRowsParams, const float*,
    // float*); src_off + n <= src.len() and dst_off + n <= dst.len() (validated).
    unsafe { l.launch(cfg) }.map_err(|e| CudaError::driver("launch copy_rows_f32", e))?;
    Ok(())
}

/// Mirrors `struct CopyRowsAtParams` in copy_rows.cu (element counts).
#[repr(C)]
#[derive(Clone, Copy)]
struct CopyRowsAtK {
    n: u64,
    src_off: u64,
    row_len: u64,
    max_row: u64,
}
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for CopyRowsAtK {}

/// [`copy_rows`] with the destination row read from `row[0]` on the device
/// when the kernel runs (the KV-cache append of a CUDA-graph decode step).
/// `p.dst_row` is the largest row allowed: `p` is validated with it and the
/// device value is clamped to `0..=p.dst_row`.
pub fn copy_rows_at(
    be: &CudaBackend,
    p: &CopyRowsParams,
    row: &CudaView<'_, i32>,
    src: &CudaView<'_, f32>,
    dst: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate(src.len(), dst.len())?;
    let n = p.n_rows * p.row_len;
    if n == 0 {
        return Ok(());
    }
    if row.is_empty() {
        return Err(
            kiln_core::Error::invalid("copy_rows_at", "the device row buffer is empty").into(),
        );
    }
    let f = be.function("copy_rows", COPY_ROWS, "copy_rows_at_f32")?;
    let cfg = crate::launch::vec4_grid(n);
    let k = CopyRowsAtK {
        n: n as u64,
        src_off: (p.src_row * p.row_len) as u64,
        row_len: p.row_len as u64,
        max_row: p.dst_row as u64,
    };
    let mut l = be.stream().launch_builder(&f);
    l.arg(&k).arg(row).arg(src).arg(dst);
    // SAFETY: argument list matches copy_rows_at_f32(CopyRowsAtParams, const
    // i32*, const float*, float*); `row` holds >= 1 element; the kernel clamps
    // the row to max_row = p.dst_row, and (dst_row + n_rows) * row_len <=
    // dst.len(), src_off + n <= src.len() were validated.
    unsafe { l.launch(cfg) }.map_err(|e| CudaError::driver("launch copy_rows_at_f32", e))?;
    Ok(())
}
