//! copy_rows on the CPU: one memcpy per contiguous range, or one rounding
//! pass into an f16 / bf16 cache (spec: [`kiln_core::ops::copy_rows`]).

use crate::CpuContext;
use kiln_core::ops::copy_rows::CopyRowsParams;
use kiln_core::quant::float::f32_to_bf16_bits;
use kiln_core::{KvSliceMut, Result};

/// Copy rows (see [`kiln_core::ops::copy_rows`]). Rows are contiguous in both
/// buffers, so the whole range is a single slice copy (two when a ring
/// destination wraps).
pub fn copy_rows(ctx: &CpuContext, p: &CopyRowsParams, src: &[f32], dst: &mut [f32]) -> Result<()> {
    copy_rows_kv(ctx, p, src, KvSliceMut::F32(dst))
}

/// [`copy_rows`] into a destination of any KV element type: f16 and bf16
/// round to nearest even as `kiln_core::KvSliceMut::store` (the reference).
pub fn copy_rows_kv(
    _ctx: &CpuContext,
    p: &CopyRowsParams,
    src: &[f32],
    dst: KvSliceMut<'_>,
) -> Result<()> {
    p.validate(src.len(), dst.len())?;
    let mut dst = dst;
    // Contiguous runs: all rows, or with a ring the rows up to its end and
    // the rest from row 0.
    let mut i = 0;
    while i < p.n_rows {
        let first = p.dst_index(i);
        let run = match p.dst_ring {
            Some(r) => (r - first).min(p.n_rows - i),
            None => p.n_rows,
        };
        let n = run * p.row_len;
        let s = &src[(p.src_row + i) * p.row_len..][..n];
        store(&mut dst, first * p.row_len, s);
        i += run;
    }
    Ok(())
}

/// `s` into `dst` from element `d`, rounded to the destination's type.
fn store(dst: &mut KvSliceMut<'_>, d: usize, s: &[f32]) {
    let n = s.len();
    match dst {
        KvSliceMut::F32(o) => o[d..d + n].copy_from_slice(s),
        KvSliceMut::F16(o) => {
            use half::slice::HalfFloatSliceExt;
            // F16C where the CPU has it: the same round-to-nearest-even bits.
            bytemuck::cast_slice_mut::<u16, half::f16>(&mut o[d..d + n]).convert_from_f32_slice(s);
        }
        KvSliceMut::BF16(o) => {
            for (b, &x) in o[d..d + n].iter_mut().zip(s) {
                *b = f32_to_bf16_bits(x);
            }
        }
    }
}
