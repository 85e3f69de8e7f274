//! softmax: each row of `x: [rows, cols]` is scaled by `scale`, then
//! softmaxed with the row maximum subtracted:
//! `out[r, c] = exp(scale*x[r,c] - m) / sum_c' exp(scale*x[r,c'] - m)`,
//! `m = max_c scale*x[r,c]`. Entries equal to `-inf` (masked) get 0; a row
//! whose every entry is `-inf` yields all zeros.

use crate::error::check_len;
use crate::{Error, Result};

/// Params of [`softmax_ref`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SoftmaxParams {
    pub rows: usize,
    pub cols: usize,
    /// Multiplier applied before the max subtraction (e.g. `1/sqrt(head_dim)`).
    pub scale: f32,
}

impl SoftmaxParams {
    /// `cols > 0`, finite `scale`, and `rows * cols` values in `x` and `out`.
    pub fn validate(&self, x_len: usize, out_len: usize) -> Result<()> {
        if self.cols == 0 {
            return Err(Error::invalid("softmax", "cols is 0"));
        }
        if !self.scale.is_finite() {
            return Err(Error::invalid(
                "softmax",
                format!("scale {} is not finite", self.scale),
            ));
        }
        let n = self.rows.checked_mul(self.cols).ok_or_else(|| {
            Error::invalid(
                "softmax",
                format!("{} x {} overflows", self.rows, self.cols),
            )
        })?;
        check_len("softmax", "x", x_len, n)?;
        check_len("softmax", "out", out_len, n)
    }
}

/// Reference in f64.
pub fn softmax_ref(p: &SoftmaxParams, x: &[f32], out: &mut [f32]) -> Result<()> {
    p.validate(x.len(), out.len())?;
    let scale = f64::from(p.scale);
    for (xr, or) in x.chunks_exact(p.cols).zip(out.chunks_exact_mut(p.cols)) {
        let m = xr
            .iter()
            .map(|&v| f64::from(v) * scale)
            .fold(f64::NEG_INFINITY, f64::max);
        if m == f64::NEG_INFINITY {
            or.fill(0.0);
            continue;
        }
        let sum: f64 = xr.iter().map(|&v| (f64::from(v) * scale - m).exp()).sum();
        for (o, &v) in or.iter_mut().zip(xr) {
            *o = ((f64::from(v) * scale - m).exp() / sum) as f32;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rows_sum_to_one_and_match_hand_values() {
        let p = SoftmaxParams {
            rows: 2,
            cols: 3,
            scale: 1.0,
        };
        let x = [0.0, 0.0, 0.0, 1.0, 2.0, 3.0];
        let mut out = [f32::NAN; 6];
        softmax_ref(&p, &x, &mut out).unwrap();
        for v in &out[..3] {
            assert!((v - 1.0 / 3.0).abs() < 1e-7);
        }
        // e^0, e^1, e^2 over their sum 11.1073...
        let s = 1.0 + std::f64::consts::E + std::f64::consts::E.powi(2);
        assert!((f64::from(out[3]) - 1.0 / s).abs() < 1e-7);
        assert!((f64::from(out[5]) - std::f64::consts::E.powi(2) / s).abs() < 1e-7);
        for r in out.chunks(3) {
            assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn scale_and_large_values() {
        // Without max subtraction exp(1000) overflows.
        let p = SoftmaxParams {
            rows: 1,
            cols: 2,
            scale: 0.5,
        };
        let mut out = [f32::NAN; 2];
        softmax_ref(&p, &[2000.0, 1998.0], &mut out).unwrap();
        // Scaled: [1000, 999] -> weights 1 / (1 + e^-1), e^-1 / (1 + e^-1).
        assert!((out[0] - 0.731_058_6).abs() < 1e-6 && (out[1] - 0.268_941_4).abs() < 1e-6);
    }

    #[test]
    fn masked_entries() {
        let p = SoftmaxParams {
            rows: 2,
            cols: 2,
            scale: 1.0,
        };
        let ninf = f32::NEG_INFINITY;
        let mut out = [f32::NAN; 4];
        softmax_ref(&p, &[1.0, ninf, ninf, ninf], &mut out).unwrap();
        assert_eq!(out, [1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn validation() {
        let p = SoftmaxParams {
            rows: 2,
            cols: 3,
            scale: 1.0,
        };
        assert!(p.validate(6, 5).is_err());
        assert!(SoftmaxParams { cols: 0, ..p }.validate(0, 0).is_err());
        let e = SoftmaxParams {
            scale: f32::NAN,
            ..p
        }
        .validate(6, 6)
        .unwrap_err();
        assert!(e.to_string().contains("scale NaN"), "{e}");
        assert!(SoftmaxParams {
            rows: usize::MAX,
            ..p
        }
        .validate(6, 6)
        .is_err());
    }
}
