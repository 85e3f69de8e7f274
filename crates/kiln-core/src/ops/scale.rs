//! scale: elementwise `out = alpha * x` over `n` f32 values (Gemma scales
//! its token embeddings by √n_embd).

use crate::error::check_len;
use crate::{Error, Result};

/// Params of [`scale_ref`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleParams {
    /// Number of elements in `x` and `out`.
    pub n: usize,
    /// The factor; finite.
    pub alpha: f32,
}

impl ScaleParams {
    /// `alpha` finite; both buffers hold exactly `n` values.
    pub fn validate(&self, x_len: usize, out_len: usize) -> Result<()> {
        if !self.alpha.is_finite() {
            return Err(Error::invalid(
                "scale",
                format!("alpha {} is not finite", self.alpha),
            ));
        }
        check_len("scale", "x", x_len, self.n)?;
        check_len("scale", "out", out_len, self.n)
    }
}

/// Reference: `out[i] = alpha * x[i]` (one f32 rounding, so exact for every backend).
pub fn scale_ref(p: &ScaleParams, x: &[f32], out: &mut [f32]) -> Result<()> {
    p.validate(x.len(), out.len())?;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = p.alpha * v;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn scales() {
        let mut out = [f32::NAN; 3];
        let p = ScaleParams { n: 3, alpha: -2.5 };
        scale_ref(&p, &[1.0, 0.0, -4.0], &mut out).unwrap();
        assert_eq!(out, [-2.5, 0.0, 10.0]);
    }

    #[test]
    fn validation() {
        let p = ScaleParams { n: 3, alpha: 2.0 };
        assert!(p.validate(3, 3).is_ok());
        assert!(p.validate(2, 3).is_err());
        assert!(p.validate(3, 4).is_err());
        let e = ScaleParams {
            alpha: f32::NAN,
            ..p
        }
        .validate(3, 3)
        .unwrap_err();
        assert!(e.to_string().contains("scale: alpha NaN"), "{e}");
    }
}
