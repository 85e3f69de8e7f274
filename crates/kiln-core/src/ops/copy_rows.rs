//! copy_rows: copy `n_rows` rows of `row_len` f32 from `src` (starting at row
//! `src_row`) into `dst` (starting at row `dst_row`). Used for KV-cache append
//! and for picking the last token's hidden state.
//!
//! With `dst_ring: Some(r)` the destination is a ring buffer of `r` rows (a
//! sliding-window KV cache, `kiln_core::ops::attention`): row `dst_row + i`
//! lands in row `(dst_row + i) % r`, so `dst_row` may be any position.
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
    /// The destination is a ring of this many rows (module docs); `None`:
    /// rows are stored where they are numbered.
    pub dst_ring: Option<usize>,
}

impl CopyRowsParams {
    /// The destination row of copied row `i` (`0..n_rows`).
    pub fn dst_index(&self, i: usize) -> usize {
        match self.dst_ring {
            Some(r) => (self.dst_row + i) % r.max(1),
            None => self.dst_row + i,
        }
    }

    /// Both ranges must lie inside their buffers; a ring holds the batch
    /// (`n_rows <= r`) and fits the destination.
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
        if let Some(r) = self.dst_ring {
            let fits = r.checked_mul(self.row_len).is_some_and(|n| n <= dst_len);
            if r == 0 || r < self.n_rows || !fits || self.dst_row.checked_add(self.n_rows).is_none()
            {
                return Err(Error::invalid(
                    "copy_rows",
                    format!(
                        "a ring of {r} rows of length {} must hold the {} rows copied, \
                         fit a buffer of {dst_len}, and start at a row below usize::MAX - {}",
                        self.row_len, self.n_rows, self.n_rows
                    ),
                ));
            }
            return Ok(());
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
            dst[p.dst_index(r) * p.row_len + c] = src[(p.src_row + r) * p.row_len + c];
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
        dst.store(p.dst_index(r) * p.row_len, &src[s..s + p.row_len]);
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
            dst_ring: None,
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
            dst_ring: None,
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
    fn ring_wraps_rows() {
        // 3 rows of 2 at position 4 into a ring of 3 rows: rows 1, 2, 0.
        let src: Vec<f32> = (0..6).map(|i| i as f32).collect();
        let mut dst = vec![-1.0f32; 8]; // 3 ring rows + 2 floats never touched
        let p = CopyRowsParams {
            row_len: 2,
            n_rows: 3,
            src_row: 0,
            dst_row: 4,
            dst_ring: Some(3),
        };
        copy_rows_ref(&p, &src, &mut dst).unwrap();
        assert_eq!(dst, [4.0, 5.0, 0.0, 1.0, 2.0, 3.0, -1.0, -1.0]);
        for (ring, dst_len) in [(2, 8), (0, 8), (5, 8)] {
            let e = CopyRowsParams {
                dst_ring: Some(ring),
                ..p
            }
            .validate(6, dst_len)
            .unwrap_err();
            assert!(e.to_string().contains("ring"), "{e}");
        }
    }

    #[test]
    fn rejects_out_of_range() {
        let p = CopyRowsParams {
            row_len: 3,
            n_rows: 2,
            src_row: 3,
            dst_row: 0,
            dst_ring: None,
        };
        assert!(p.validate(12, 12).is_err());
        let p = CopyRowsParams {
            row_len: 3,
            n_rows: 2,
            src_row: 0,
            dst_row: usize::MAX,
            dst_ring: None,
        };
        assert!(p.validate(12, 12).is_err());
    }
}
