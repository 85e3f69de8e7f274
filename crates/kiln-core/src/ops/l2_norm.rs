//! l2_norm: scale each row to unit Euclidean length (the q/k normalisation
//! of linear-attention / gated-delta-net layers, ggml's `l2_norm`).
//! `x, out: [rows, dim]`;
//! `out[r, i] = x[r, i] / max(sqrt(sum_i x[r, i]^2), eps)`: rows shorter
//! than `eps` are scaled by `1/eps` instead of blowing up.

use crate::error::check_len;
use crate::{Error, Result};

/// Params of [`l2_norm_ref`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct L2NormParams {
    pub rows: usize,
    pub dim: usize,
    /// Floor of the norm; finite and > 0 (a zero row would divide by 0).
    pub eps: f32,
}

impl L2NormParams {
    /// `dim > 0`, `eps` finite and positive, and buffer lengths.
    pub fn validate(&self, x_len: usize, out_len: usize) -> Result<()> {
        const OP: &str = "l2_norm";
        if self.dim == 0 {
            return Err(Error::invalid(OP, "dim is 0"));
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(Error::invalid(
                OP,
                format!("eps {} must be finite and > 0", self.eps),
            ));
        }
        let n = self
            .rows
            .checked_mul(self.dim)
            .ok_or_else(|| Error::invalid(OP, format!("{} x {} overflows", self.rows, self.dim)))?;
        check_len(OP, "x", x_len, n)?;
        check_len(OP, "out", out_len, n)
    }
}

/// Reference in f64.
pub fn l2_norm_ref(p: &L2NormParams, x: &[f32], out: &mut [f32]) -> Result<()> {
    p.validate(x.len(), out.len())?;
    for (xr, or) in x.chunks_exact(p.dim).zip(out.chunks_exact_mut(p.dim)) {
        let ss: f64 = xr.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let inv = 1.0 / ss.sqrt().max(f64::from(p.eps));
        for (o, &v) in or.iter_mut().zip(xr) {
            *o = (f64::from(v) * inv) as f32;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hand_values() {
        // [3, 4] has length 5; [0, 1e-9] is shorter than eps 1e-6.
        let p = L2NormParams {
            rows: 2,
            dim: 2,
            eps: 1e-6,
        };
        let mut out = [f32::NAN; 4];
        l2_norm_ref(&p, &[3.0, 4.0, 0.0, 1e-9], &mut out).unwrap();
        assert_eq!(&out[..2], &[0.6, 0.8]);
        assert_eq!(out[2], 0.0);
        assert!((out[3] - 1e-3).abs() < 1e-9, "{out:?}");
    }

    #[test]
    fn rejects_bad_params() {
        let p = L2NormParams {
            rows: 1,
            dim: 4,
            eps: 1e-6,
        };
        let mut out = [0.0; 4];
        assert!(l2_norm_ref(&L2NormParams { eps: 0.0, ..p }, &[1.0; 4], &mut out).is_err());
        assert!(l2_norm_ref(&L2NormParams { dim: 0, ..p }, &[], &mut []).is_err());
        assert!(l2_norm_ref(&p, &[1.0; 3], &mut out).is_err());
    }
}
