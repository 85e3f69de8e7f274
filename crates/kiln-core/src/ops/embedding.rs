//! embedding: token-embedding lookup with dequantization.
//! `table: [n_vocab, dim]` rows in `dtype` (raw GGML bytes), `ids: [n]`,
//! `out: [n, dim]` f32 with `out[t] = dequantize(table[ids[t]])`.

use crate::error::check_len;
use crate::quant::dequantize_row;
use crate::{DType, Error, Result};

/// Params of [`embedding_ref`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddingParams {
    pub n_vocab: usize,
    pub dim: usize,
    /// Row format of the table; `dim` must be a multiple of its block size.
    pub dtype: DType,
}

impl EmbeddingParams {
    /// Bytes per table row.
    pub fn row_bytes(&self) -> Result<usize> {
        self.dtype.row_bytes("embedding", self.dim)
    }

    /// Table and output lengths; every id `< n_vocab` (an error names the id).
    pub fn validate(&self, table_len: usize, ids: &[u32], out_len: usize) -> Result<()> {
        let op = "embedding";
        if self.dim == 0 {
            return Err(Error::invalid(op, "dim is 0"));
        }
        let rb = self.row_bytes()?;
        let table = self.n_vocab.checked_mul(rb).ok_or_else(|| {
            Error::invalid(
                op,
                format!("table of {} rows of {rb} bytes overflows", self.n_vocab),
            )
        })?;
        check_len(op, "table bytes", table_len, table)?;
        if let Some((t, &id)) = ids
            .iter()
            .enumerate()
            .find(|(_, &id)| id as usize >= self.n_vocab)
        {
            return Err(Error::invalid(
                op,
                format!(
                    "token id {id} (at index {t}) is out of range for a vocabulary of {}",
                    self.n_vocab
                ),
            ));
        }
        let n = ids
            .len()
            .checked_mul(self.dim)
            .ok_or_else(|| Error::invalid(op, "ids.len() * dim overflows"))?;
        check_len(op, "out", out_len, n)
    }
}

/// Reference: dequantize each selected row with the scalar reference dequantizer.
pub fn embedding_ref(
    p: &EmbeddingParams,
    table: &[u8],
    ids: &[u32],
    out: &mut [f32],
) -> Result<()> {
    p.validate(table.len(), ids, out.len())?;
    let rb = p.row_bytes()?;
    for (&id, o) in ids.iter().zip(out.chunks_exact_mut(p.dim)) {
        let start = id as usize * rb;
        dequantize_row(p.dtype, &table[start..start + rb], o)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn f32_rows_are_picked() {
        let rows: Vec<f32> = (0..6).map(|i| i as f32).collect(); // 3 rows of 2
        let table: Vec<u8> = rows.iter().flat_map(|v| v.to_le_bytes()).collect();
        let p = EmbeddingParams {
            n_vocab: 3,
            dim: 2,
            dtype: DType::F32,
        };
        let mut out = [f32::NAN; 6];
        embedding_ref(&p, &table, &[2, 0, 2], &mut out).unwrap();
        assert_eq!(out, [4.0, 5.0, 0.0, 1.0, 4.0, 5.0]);
    }

    #[test]
    fn q8_0_row_by_hand() {
        // One Q8_0 block: d = 0.5 (f16 0x3800), qs = 0, 1, ..., 31 minus 16.
        let mut block = vec![0x00u8, 0x38];
        block.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let p = EmbeddingParams {
            n_vocab: 1,
            dim: 32,
            dtype: DType::Q8_0,
        };
        let mut out = [f32::NAN; 32];
        embedding_ref(&p, &block, &[0], &mut out).unwrap();
        for (i, o) in out.iter().enumerate() {
            assert_eq!(*o, (i as f32 - 16.0) * 0.5);
        }
    }

    #[test]
    fn validation() {
        let p = EmbeddingParams {
            n_vocab: 4,
            dim: 64,
            dtype: DType::Q4_1,
        };
        assert!(p.validate(4 * 40, &[0, 3], 128).is_ok());
        let e = p.validate(4 * 40, &[0, 4], 128).unwrap_err();
        assert!(e.to_string().contains("token id 4 (at index 1)"), "{e}");
        assert!(p.validate(4 * 40 - 1, &[0], 64).is_err());
        assert!(p.validate(4 * 40, &[0], 65).is_err());
        let e = EmbeddingParams { dim: 33, ..p }
            .validate(0, &[], 0)
            .unwrap_err();
        assert!(e.to_string().contains("33"), "{e}");
        assert!(EmbeddingParams { dim: 0, ..p }.validate(0, &[], 0).is_err());
    }
}
