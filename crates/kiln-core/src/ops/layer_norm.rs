//! layer_norm: LayerNorm over the last axis (GPT-2 / Phi / BERT style), with
//! an optional per-column weight and bias.
//! `x, out: [rows, dim]`, `w, b: [dim]`;
//! `out[r, i] = (x[r, i] - mean_r) / sqrt(var_r + eps) * w[i] + b[i]`, with
//! `mean_r` and the biased variance `var_r = mean((x[r, :] - mean_r)^2)`
//! over the row (as torch.nn.LayerNorm computes them). A missing weight is
//! 1 and a missing bias 0 (ggml_norm is the weightless form).

use crate::error::check_len;
use crate::{Error, Result};

/// Params of [`layer_norm_ref`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerNormParams {
    pub rows: usize,
    pub dim: usize,
    /// Added to the variance before the square root; finite and >= 0.
    pub eps: f32,
}

impl LayerNormParams {
    /// `dim > 0`, `eps` finite and non-negative, and buffer lengths (`w` and
    /// `b`, when given, hold `dim` values).
    pub fn validate(
        &self,
        x_len: usize,
        w_len: Option<usize>,
        b_len: Option<usize>,
        out_len: usize,
    ) -> Result<()> {
        const OP: &str = "layer_norm";
        if self.dim == 0 {
            return Err(Error::invalid(OP, "dim is 0"));
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err(Error::invalid(
                OP,
                format!("eps {} must be finite and >= 0", self.eps),
            ));
        }
        let n = self
            .rows
            .checked_mul(self.dim)
            .ok_or_else(|| Error::invalid(OP, format!("{} x {} overflows", self.rows, self.dim)))?;
        check_len(OP, "x", x_len, n)?;
        if let Some(l) = w_len {
            check_len(OP, "w", l, self.dim)?;
        }
        if let Some(l) = b_len {
            check_len(OP, "b", l, self.dim)?;
        }
        check_len(OP, "out", out_len, n)
    }
}

/// Reference in f64 (two passes: mean, then the centred sum of squares).
pub fn layer_norm_ref(
    p: &LayerNormParams,
    x: &[f32],
    w: Option<&[f32]>,
    b: Option<&[f32]>,
    out: &mut [f32],
) -> Result<()> {
    p.validate(x.len(), w.map(<[f32]>::len), b.map(<[f32]>::len), out.len())?;
    let dim = p.dim as f64;
    for (xr, or) in x.chunks_exact(p.dim).zip(out.chunks_exact_mut(p.dim)) {
        let mean = xr.iter().map(|&v| f64::from(v)).sum::<f64>() / dim;
        let var = xr
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / dim;
        let inv = 1.0 / (var + f64::from(p.eps)).sqrt();
        for (i, (o, &v)) in or.iter_mut().zip(xr).enumerate() {
            let wi = w.map_or(1.0, |w| f64::from(w[i]));
            let bi = b.map_or(0.0, |b| f64::from(b[i]));
            *o = ((f64::from(v) - mean) * inv * wi + bi) as f32;
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
        // Row [1, 2, 3, 6]: mean 3, var (4 + 1 + 0 + 9) / 4 = 3.5; eps 0.
        let p = LayerNormParams {
            rows: 1,
            dim: 4,
            eps: 0.0,
        };
        let mut out = [f32::NAN; 4];
        let w = [1.0, 2.0, 1.0, 1.0];
        let b = [0.0, 0.0, 0.5, 0.0];
        layer_norm_ref(&p, &[1.0, 2.0, 3.0, 6.0], Some(&w), Some(&b), &mut out).unwrap();
        let s = 3.5f64.sqrt();
        // Centred row [-2, -1, 0, 3]; w[1] = 2 doubles the second, b[2] adds 0.5.
        let want = [-2.0 / s, -2.0 / s, 0.5, 3.0 / s];
        for (o, w) in out.iter().zip(want) {
            assert!((f64::from(*o) - w).abs() < 1e-6, "{out:?}");
        }
        // Without weight and bias the normalised row has mean 0, variance 1.
        layer_norm_ref(&p, &[1.0, 2.0, 3.0, 6.0], None, None, &mut out).unwrap();
        let m: f32 = out.iter().sum::<f32>() / 4.0;
        let v: f32 = out.iter().map(|o| o * o).sum::<f32>() / 4.0;
        assert!(m.abs() < 1e-6 && (v - 1.0).abs() < 1e-5, "{out:?}");
    }

    #[test]
    fn constant_rows_stay_finite() {
        let p = LayerNormParams {
            rows: 1,
            dim: 3,
            eps: 1e-5,
        };
        let mut out = [f32::NAN; 3];
        layer_norm_ref(&p, &[7.0; 3], None, Some(&[1.0, 2.0, 3.0]), &mut out).unwrap();
        assert_eq!(out, [1.0, 2.0, 3.0]);
    }

    #[test]
    fn rejects_bad_params() {
        let p = LayerNormParams {
            rows: 2,
            dim: 4,
            eps: 1e-5,
        };
        let mut out = [0.0; 8];
        assert!(layer_norm_ref(&p, &[0.0; 8], Some(&[1.0; 3]), None, &mut out).is_err());
        assert!(layer_norm_ref(&p, &[0.0; 8], None, Some(&[1.0; 5]), &mut out).is_err());
        assert!(layer_norm_ref(&p, &[0.0; 7], None, None, &mut out).is_err());
        let nan = LayerNormParams { eps: f32::NAN, ..p };
        assert!(layer_norm_ref(&nan, &[0.0; 8], None, None, &mut out).is_err());
        let zero = LayerNormParams { dim: 0, ..p };
        assert!(layer_norm_ref(&zero, &[], None, None, &mut []).is_err());
    }
}
