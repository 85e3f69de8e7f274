//! softcap: `out = cap * tanh(x / cap)`, elementwise over `n` f32 values —
//! Gemma 2's soft capping of attention scores and final logits, which
//! bounds them to `(-cap, cap)` while leaving small values nearly unchanged.

use crate::error::check_len;
use crate::{Error, Result};

/// Params of [`softcap_ref`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SoftcapParams {
    /// Number of elements in `x` and `out`.
    pub n: usize,
    /// The cap; finite and > 0 (Gemma 2: 50 for attention, 30 for logits).
    pub cap: f32,
}

impl SoftcapParams {
    /// `cap` finite and positive; both buffers hold exactly `n` values.
    pub fn validate(&self, x_len: usize, out_len: usize) -> Result<()> {
        if !(self.cap.is_finite() && self.cap > 0.0) {
            return Err(Error::invalid(
                "softcap",
                format!("cap {} must be finite and > 0", self.cap),
            ));
        }
        check_len("softcap", "x", x_len, self.n)?;
        check_len("softcap", "out", out_len, self.n)
    }
}

/// Reference in f64.
pub fn softcap_ref(p: &SoftcapParams, x: &[f32], out: &mut [f32]) -> Result<()> {
    p.validate(x.len(), out.len())?;
    let cap = f64::from(p.cap);
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (cap * (f64::from(v) / cap).tanh()) as f32;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hand_values() {
        // 30·tanh(30/30) = 22.8478247; 30·tanh(-1/30) = -0.9996298; ±inf -> ±cap.
        let p = SoftcapParams { n: 5, cap: 30.0 };
        let mut out = [f32::NAN; 5];
        let x = [30.0, -1.0, 0.0, f32::INFINITY, f32::NEG_INFINITY];
        softcap_ref(&p, &x, &mut out).unwrap();
        assert!((out[0] - 22.847_825).abs() < 1e-5, "{out:?}");
        assert!((out[1] + 0.999_629_8).abs() < 1e-6, "{out:?}");
        assert_eq!(&out[2..], &[0.0, 30.0, -30.0]);
    }

    #[test]
    fn rejects_bad_params() {
        let mut out = [0.0; 2];
        for cap in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            let p = SoftcapParams { n: 2, cap };
            assert!(softcap_ref(&p, &[1.0; 2], &mut out).is_err(), "{cap}");
        }
        let p = SoftcapParams { n: 3, cap: 1.0 };
        assert!(softcap_ref(&p, &[1.0; 3], &mut out).is_err());
    }
}
