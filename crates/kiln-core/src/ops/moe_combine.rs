//! moe_combine: the weighted sum of a mixture-of-experts layer's expert
//! outputs, plus the residual: for token `t`,
//! `out[t] = residual[t] + sum_s weights[t * top_k + s] * y[t * top_k + s]`
//! (`y`: `[n_tokens * top_k, dim]` rows of `matmul_id`'s per-slot output,
//! `weights`: `moe_route`'s `[n_tokens, top_k]`, `residual` and `out`:
//! `[n_tokens, dim]`). The reference sums in f64, slots in order.

use crate::error::check_len;
use crate::{Error, Result};

const OP: &str = "moe_combine";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoeCombineParams {
    pub n_tokens: usize,
    pub top_k: usize,
    pub dim: usize,
}

impl MoeCombineParams {
    pub fn validate(
        &self,
        y_len: usize,
        w_len: usize,
        res_len: usize,
        out_len: usize,
    ) -> Result<()> {
        if self.top_k == 0 {
            return Err(Error::invalid(OP, "top_k must be > 0"));
        }
        let mul = |a: usize, b: usize| {
            a.checked_mul(b)
                .ok_or_else(|| Error::invalid(OP, "sizes overflow"))
        };
        let rows = mul(self.n_tokens, self.top_k)?;
        check_len(OP, "y", y_len, mul(rows, self.dim)?)?;
        check_len(OP, "weights", w_len, rows)?;
        check_len(OP, "residual", res_len, mul(self.n_tokens, self.dim)?)?;
        check_len(OP, "out", out_len, mul(self.n_tokens, self.dim)?)
    }
}

/// Reference: f64 sums.
pub fn moe_combine_ref(
    p: &MoeCombineParams,
    y: &[f32],
    weights: &[f32],
    residual: &[f32],
    out: &mut [f32],
) -> Result<()> {
    p.validate(y.len(), weights.len(), residual.len(), out.len())?;
    for t in 0..p.n_tokens {
        for c in 0..p.dim {
            let mut acc = f64::from(residual[t * p.dim + c]);
            for s in 0..p.top_k {
                let r = t * p.top_k + s;
                acc += f64::from(weights[r]) * f64::from(y[r * p.dim + c]);
            }
            out[t * p.dim + c] = acc as f32;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn by_hand_and_rejections() {
        let p = MoeCombineParams {
            n_tokens: 2,
            top_k: 2,
            dim: 2,
        };
        let y = [1.0, 2.0, 10.0, 20.0, 3.0, 4.0, 30.0, 40.0];
        let w = [0.5, 0.25, 1.0, -1.0];
        let res = [100.0, 200.0, 0.0, 0.0];
        let mut out = [0.0f32; 4];
        moe_combine_ref(&p, &y, &w, &res, &mut out).unwrap();
        assert_eq!(out, [103.0, 206.0, -27.0, -36.0]);
        assert!(p.validate(8, 3, 4, 4).is_err());
        assert!(MoeCombineParams { top_k: 0, ..p }
            .validate(0, 0, 4, 4)
            .is_err());
    }
}
