//! add_rows: `x[r, c] += bias[c]` over `rows` rows of `dim` values, in
//! place (the biases of Qwen2's q/k/v projections).

use crate::error::check_len;
use crate::{Error, Result};

/// Params of [`add_rows_ref`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddRowsParams {
    pub rows: usize,
    pub dim: usize,
}

impl AddRowsParams {
    pub fn validate(&self, x_len: usize, bias_len: usize) -> Result<()> {
        let n = self
            .rows
            .checked_mul(self.dim)
            .ok_or_else(|| Error::invalid("add_rows", "rows * dim overflows"))?;
        check_len("add_rows", "x", x_len, n)?;
        check_len("add_rows", "bias", bias_len, self.dim)
    }
}

/// Reference: one f32 addition per element (exact for every backend).
pub fn add_rows_ref(p: &AddRowsParams, x: &mut [f32], bias: &[f32]) -> Result<()> {
    p.validate(x.len(), bias.len())?;
    if p.dim == 0 {
        return Ok(());
    }
    for row in x.chunks_exact_mut(p.dim) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn adds_per_row_and_rejects() {
        let mut x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        add_rows_ref(
            &AddRowsParams { rows: 2, dim: 3 },
            &mut x,
            &[0.5, -1.0, 0.0],
        )
        .unwrap();
        assert_eq!(x, [1.5, 1.0, 3.0, 4.5, 4.0, 6.0]);
        let e = add_rows_ref(&AddRowsParams { rows: 2, dim: 3 }, &mut x, &[0.5]).unwrap_err();
        assert!(e.to_string().contains("bias"), "{e}");
    }
}
