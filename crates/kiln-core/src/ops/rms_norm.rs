//! rms_norm: llama's RMSNorm over the last axis.
//! `x, out: [rows, dim]`, `w: [dim]`;
//! `out[r, i] = x[r, i] / sqrt(mean_i(x[r, :]^2) + eps) * w[i]`.

use crate::error::check_len;
use crate::{Error, Result};

/// Params of [`rms_norm_ref`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RmsNormParams {
    pub rows: usize,
    pub dim: usize,
    /// Added to the mean square before the square root; finite and >= 0.
    pub eps: f32,
}

impl RmsNormParams {
    /// `dim > 0`, `eps` finite and non-negative, and buffer lengths.
    pub fn validate(&self, x_len: usize, w_len: usize, out_len: usize) -> Result<()> {
        if self.dim == 0 {
            return Err(Error::invalid("rms_norm", "dim is 0"));
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err(Error::invalid(
                "rms_norm",
                format!("eps {} must be finite and >= 0", self.eps),
            ));
        }
        let n = self.rows.checked_mul(self.dim).ok_or_else(|| {
            Error::invalid(
                "rms_norm",
                format!("{} x {} overflows", self.rows, self.dim),
            )
        })?;
        check_len("rms_norm", "x", x_len, n)?;
        check_len("rms_norm", "w", w_len, self.dim)?;
        check_len("rms_norm", "out", out_len, n)
    }
}

/// Reference in f64.
pub fn rms_norm_ref(p: &RmsNormParams, x: &[f32], w: &[f32], out: &mut [f32]) -> Result<()> {
    p.validate(x.len(), w.len(), out.len())?;
    for (xr, or) in x.chunks_exact(p.dim).zip(out.chunks_exact_mut(p.dim)) {
        let ss: f64 = xr.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let inv = 1.0 / (ss / p.dim as f64 + f64::from(p.eps)).sqrt();
        for ((o, &v), &wi) in or.iter_mut().zip(xr).zip(w) {
            *o = (f64::from(v) * inv * f64::from(wi)) as f32;
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
        // Row [3, 4]: mean square = 12.5, rms = 3.5355339; eps 0.
        let p = RmsNormParams {
            rows: 2,
            dim: 2,
            eps: 0.0,
        };
        let mut out = [f32::NAN; 4];
        rms_norm_ref(&p, &[3.0, 4.0, 1.0, 1.0], &[1.0, 2.0], &mut out).unwrap();
        let r = 12.5f32.sqrt();
        assert!((out[0] - 3.0 / r).abs() < 1e-6);
        assert!((out[1] - 2.0 * 4.0 / r).abs() < 1e-6);
        assert_eq!(&out[2..], &[1.0, 2.0]);
    }

    #[test]
    fn eps_keeps_zero_rows_finite() {
        let p = RmsNormParams {
            rows: 1,
            dim: 3,
            eps: 1e-5,
        };
        let mut out = [f32::NAN; 3];
        rms_norm_ref(&p, &[0.0; 3], &[1.0; 3], &mut out).unwrap();
        assert_eq!(out, [0.0; 3]);
    }

    #[test]
    fn validation() {
        let p = RmsNormParams {
            rows: 2,
            dim: 4,
            eps: 1e-6,
        };
        assert!(p.validate(8, 4, 8).is_ok());
        assert!(p.validate(8, 3, 8).is_err());
        assert!(p.validate(7, 4, 8).is_err());
        assert!(RmsNormParams { dim: 0, ..p }.validate(0, 0, 0).is_err());
        let e = RmsNormParams { eps: -1.0, ..p }
            .validate(8, 4, 8)
            .unwrap_err();
        assert!(e.to_string().contains("eps -1"), "{e}");
    }
}
