//! copy_rows on CUDA: validate → launch (`kernels/copy_rows.cu`). Implements
//! `kiln_core::ops::copy_rows` (KV-cache append, last-token pick): rows are
//! contiguous, so the copy is one range of `n_rows * row_len` floats, or
//! into a ring destination (`dst_ring`, a sliding-window KV cache) two:
//! the rows up to the ring's end and the rest from row 0. The
//! destination may be an f16 or bf16 cache ([`KvViewMut`]): each value is
//! then rounded to nearest even, bit for bit as the reference.

use crate::kernels::COPY_ROWS;
use crate::kv::KvViewMut;
use crate::launch::{arg, launch_ex};
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{CudaView, CudaViewMut, DevicePtr, DeviceRepr};
use kiln_core::ops::copy_rows::CopyRowsParams;
use kiln_core::KvType;

/// Mirrors `struct CopyRowsParams` in copy_rows.cu (element counts).
#[repr(C)]
#[derive(Clone, Copy)]
struct CopyRowsK {
    n: u64,
    src_off: u64,
    dst_off: u64,
    /// Elements copied to `dst_off`; the other `n - n_first` go to 0.
    n_first: u64,
}
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for CopyRowsK {}

/// `dst[dst_index(r), :] = src[src_row + r, :]` for `r < n_rows`, rows of
/// `row_len` floats (`dst_index(r)` is `dst_row + r`, or with a ring `(dst_row
/// + r) % ring`); the rest of `dst` is untouched.
pub fn copy_rows(
    be: &CudaBackend,
    p: &CopyRowsParams,
    src: &CudaView<'_, f32>,
    dst: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    copy_rows_kv(be, p, src, KvViewMut::F32(dst))
}

/// [`copy_rows`] into a destination of any KV element type.
pub fn copy_rows_kv(
    be: &CudaBackend,
    p: &CopyRowsParams,
    src: &CudaView<'_, f32>,
    mut dst: KvViewMut<'_, '_>,
) -> Result<()> {
    // validate() bounds (first + n_rows) * row_len by the buffer lengths
    // (with a ring: (src_row + n_rows) * row_len and ring * row_len, n_rows
    // <= ring), so none of the products below overflows.
    p.validate(src.len(), dst.len())?;
    let n = p.n_rows * p.row_len;
    if n == 0 {
        return Ok(());
    }
    // The first destination row and the elements before a ring's end.
    let (first, n_first) = match p.dst_ring {
        Some(r) => {
            let first = p.dst_row % r;
            (first, n.min((r - first) * p.row_len))
        }
        None => (p.dst_row, n),
    };
    let name = match dst.kv_type() {
        KvType::F32 => "copy_rows_f32",
        KvType::F16 => "copy_rows_f16",
        KvType::BF16 => "copy_rows_bf16",
    };
    let f = be.function("copy_rows", COPY_ROWS, name)?;
    let cfg = crate::launch::vec4_grid(n);
    let mut k = CopyRowsK {
        n: n as u64,
        src_off: (p.src_row * p.row_len) as u64,
        dst_off: (first * p.row_len) as u64,
        n_first: n_first as u64,
    };
    let st = be.stream();
    let (mut ps, _gs) = src.device_ptr(st);
    let (mut pd, _gd) = dst.device_ptr_mut(st);
    let mut args = [arg(&mut k), arg(&mut ps), arg(&mut pd)];
    // SAFETY: arguments match copy_rows_<t>(CopyRowsParams, const float*,
    // t*) with t the destination's element type (the name was chosen by
    // it); src_off + n <= src.len() (validated). Without a ring n_first = n
    // and dst_off + n <= dst.len() (validated). With a ring of r rows
    // (validated: n_rows <= r, r * row_len <= dst.len()): first < r, so
    // dst_off + n_first <= r * row_len, and the rest, n - n_first <= n <=
    // r * row_len elements from 0, ends at or before dst_off (the ranges
    // do not overlap). PDL: the kernel waits (kiln_pdl_enter) before
    // touching anything.
    unsafe { launch_ex(be, &f, cfg, be.pdl_entry(), &mut args) }
        .map_err(|e| CudaError::driver("launch copy_rows", e))?;
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
    /// `dst_ring`'s rows; 0 = none.
    ring: u64,
}
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for CopyRowsAtK {}

/// [`copy_rows`] with the destination row read from `row[0]` on the device
/// when the kernel runs (the KV-cache append of a CUDA-graph decode step).
/// `p.dst_row` is the largest row allowed: `p` is validated with it and the
/// device value is clamped to `0..=p.dst_row`. With `p.dst_ring` the
/// clamped value is a position: the rows land at `(row + i) % ring`.
pub fn copy_rows_at(
    be: &CudaBackend,
    p: &CopyRowsParams,
    row: &CudaView<'_, i32>,
    src: &CudaView<'_, f32>,
    dst: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    copy_rows_at_kv(be, p, row, src, KvViewMut::F32(dst))
}

/// [`copy_rows_at`] into a destination of any KV element type.
pub fn copy_rows_at_kv(
    be: &CudaBackend,
    p: &CopyRowsParams,
    row: &CudaView<'_, i32>,
    src: &CudaView<'_, f32>,
    mut dst: KvViewMut<'_, '_>,
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
    let name = match dst.kv_type() {
        KvType::F32 => "copy_rows_at_f32",
        KvType::F16 => "copy_rows_at_f16",
        KvType::BF16 => "copy_rows_at_bf16",
    };
    let f = be.function("copy_rows", COPY_ROWS, name)?;
    let cfg = crate::launch::vec4_grid(n);
    let mut k = CopyRowsAtK {
        n: n as u64,
        src_off: (p.src_row * p.row_len) as u64,
        row_len: p.row_len as u64,
        max_row: p.dst_row as u64,
        ring: p.dst_ring.unwrap_or(0) as u64,
    };
    let st = be.stream();
    let (mut pr, _gr) = row.device_ptr(st);
    let (mut ps, _gs) = src.device_ptr(st);
    let (mut pd, _gd) = dst.device_ptr_mut(st);
    let mut args = [arg(&mut k), arg(&mut pr), arg(&mut ps), arg(&mut pd)];
    // SAFETY: arguments match copy_rows_at_<t>(CopyRowsAtParams, const i32*,
    // const float*, t*) with t the destination's element type; `row` holds
    // >= 1 element; the kernel clamps the row to max_row = p.dst_row, and
    // src_off + n <= src.len() was validated. Without a ring (ring = 0)
    // (dst_row + n_rows) * row_len <= dst.len() was validated, so the rows
    // from any clamped row fit. With a ring of r >= 1 rows, n_rows <= r and
    // r * row_len <= dst.len() were validated: the kernel writes n_first =
    // min(n, (r - first) * row_len) elements from first * row_len, first =
    // row % r < r, and the other n - n_first from 0, all below r * row_len
    // (as in copy_rows_kv), whatever the device row. PDL: the kernel waits
    // (kiln_pdl_enter) before touching anything.
    unsafe { launch_ex(be, &f, cfg, be.pdl_entry(), &mut args) }
        .map_err(|e| CudaError::driver("launch copy_rows_at", e))?;
    Ok(())
}
