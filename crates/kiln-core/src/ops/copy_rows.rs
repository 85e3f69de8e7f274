//! copy_rows: copy `n_rows` rows of `row_len` f32 from `src` (starting at row
//! `src_row`) into `dst` (starting at row `dst_row`). Used for KV-cache append
//! and for picking the last token's hidden state.
//!
//! The destination may be a cache of another element type
//! ([`crate::KvType`]): each value is then rounded to f16 or bf16, to
//! nearest even, exactly as [`KvSliceMut::store`] does
//! ([`copy_rows_ref_kv`]); backends must write the same bits.

use crate::{Error, KvSliceMut, Result};

/// Params of [`copy_rows_ref`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyRowsParams {
    pub row_len: usize,
    pub n_rows: usize,
    pub src_row: usize,
    pub dst_row: usize,
}

impl CopyRowsParams {
    /// Both ranges must lie inside their buffers.
    pub fn validate(&self, src_len: usize, dst_len: usize) -> Result<()> {
        let need = |first: usize| {
            first
                .checked_add(self.n_rows)
                .and_then(|r| r.checked_mul(self.row_len))
        };
        match need(self.src_row) {
            Some(n) if n <= src_len => {}
            _ => {
                return Err(Error::invalid(
                    "copy_rows",
                    format!(
                        "source rows {}..{} of length {} exceed a buffer of {src_len}",
                        self.src_row,
                        self.src_row.saturating_add(self.n_rows),
                        self.row_len
                    ),
                ))
            }
        }
        match need(self.dst_row) {
            Some(n) if n <= dst_len => Ok(()),
            _ => Err(Error::invalid(
                "copy_rows",
                format!(
                    "destination rows {}..{} of length {} exceed a buffer of {dst_len}",
                    self.dst_row,
                    self.dst_row.saturating_add(self.n_rows),
                    self.row_len
                ),
            )),
        }
    }
}

/// Reference: element-by-element copy.
pub fn copy_rows_ref(p: &CopyRowsParams, src: &[f32], dst: &mut [f32]) -> Result<()> {
    p.validate(src.len(), dst.len())?;
    for r in 0..p.n_rows {
        for c in 0..p.row_len {
            dst[(p.dst_row + r) * p.row_len + c] = src[(p.src_row + r) * p.row_len + c];
        }
    }
    Ok(())
}

/// Reference into a destination of any KV element type: row by row, each
/// value rounded to the destination's type.
pub fn copy_rows_ref_kv(p: &CopyRowsParams, src: &[f32], mut dst: KvSliceMut<'_>) -> Result<()> {
    p.validate(src.len(), dst.len())?;
    for r in 0..p.n_rows {
        let s = (p.src_row + r) * p.row_len;
        dst.store((p.dst_row + r) * p.row_len, &src[s..s + p.row_len]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn copies_the_right_rows_and_nothing_else() {
        let src: Vec<f32> = (0..12).map(|i| i as f32).collect(); // 4 rows of 3
        let mut dst = vec![-1.0f32; 15]; // 5 rows of 3
        let p = CopyRowsParams {
            row_len: 3,
            n_rows: 2,
            src_row: 1,
            dst_row: 3,
        };
        copy_rows_ref(&p, &src, &mut dst).unwrap();
        assert_eq!(&dst[..9], &[-1.0; 9]);
        assert_eq!(&dst[9..], &[3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    }

    #[test]
    fn rounds_into_half_caches() {
        let src = [1.0f32, 1.0 + f32::powi(2.0, -11), -3.3, 70000.0];
        let p = CopyRowsParams {
            row_len: 2,
            n_rows: 2,
            src_row: 0,
            dst_row: 1,
        };
        let mut d16 = [0xAAAAu16; 6];
        copy_rows_ref_kv(&p, &src, KvSliceMut::F16(&mut d16)).unwrap();
        let want: Vec<u16> = src
            .iter()
            .map(|&x| half::f16::from_f32(x).to_bits())
            .collect();
        assert_eq!(&d16[..2], &[0xAAAA; 2]);
        assert_eq!(&d16[2..], &want[..]);
        assert_eq!(half::f16::from_bits(d16[3]).to_f32(), 1.0); // tie to even
        assert!(half::f16::from_bits(d16[5]).to_f32().is_infinite());
        let mut db = [0u16; 6];
        copy_rows_ref_kv(&p, &src, KvSliceMut::BF16(&mut db)).unwrap();
        assert_eq!(db[2], 0x3f80);
        let mut f = [0.0f32; 6];
        copy_rows_ref_kv(&p, &src, KvSliceMut::F32(&mut f)).unwrap();
        assert_eq!(&f[2..], &src);
        assert!(copy_rows_ref_kv(&p, &src, KvSliceMut::F16(&mut d16[..5])).is_err());
    }

    #[test]
    fn rejects_out_of_range() {
        let p = CopyRowsParams {
            row_len: 3,
            n_rows: 2,
            src_row: 3,
            dst_row: 0,
        };
        assert!(p.validate(12, 12).is_err());
        let p = CopyRowsParams {
            row_len: 3,
            n_rows: 2,
            src_row: 0,
            dst_row: usize::MAX,
        };
        assert!(p.validate(12, 12).is_err());
    }
}
