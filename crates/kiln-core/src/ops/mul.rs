//! mul: elementwise `out = a * b` over `n` f32 values (the same shapes as
//! [`crate::ops::add`]: three buffers of exactly `n`, no broadcasting).

use crate::error::check_len;
use crate::Result;

/// Params of [`mul_ref`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MulParams {
    /// Number of elements in `a`, `b` and `out`.
    pub n: usize,
}

impl MulParams {
    /// All three buffers hold exactly `n` values.
    pub fn validate(&self, a_len: usize, b_len: usize, out_len: usize) -> Result<()> {
        check_len("mul", "a", a_len, self.n)?;
        check_len("mul", "b", b_len, self.n)?;
        check_len("mul", "out", out_len, self.n)
    }
}

/// Reference: `out[i] = a[i] * b[i]` (one f32 rounding, so exact for every backend).
pub fn mul_ref(p: &MulParams, a: &[f32], b: &[f32], out: &mut [f32]) -> Result<()> {
    p.validate(a.len(), b.len(), out.len())?;
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = x * y;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::Error;

    #[test]
    fn multiplies() {
        let mut out = [f32::NAN; 4];
        mul_ref(
            &MulParams { n: 4 },
            &[1.5, -2.0, 0.0, f32::INFINITY],
            &[2.0, 3.0, -1.0, 0.0],
            &mut out,
        )
        .unwrap();
        assert_eq!(&out[..3], &[3.0, -6.0, -0.0]);
        assert!(out[2].is_sign_negative());
        assert!(out[3].is_nan(), "inf * 0 is NaN");
    }

    #[test]
    fn rejects_bad_lengths() {
        let err = mul_ref(&MulParams { n: 3 }, &[1.0; 2], &[1.0; 3], &mut [0.0; 3]).unwrap_err();
        assert!(matches!(
            err,
            Error::LengthMismatch {
                op: "mul",
                what: "a",
                got: 2,
                expected: 3
            }
        ));
        assert!(MulParams { n: 3 }.validate(3, 3, 2).is_err());
        assert!(MulParams { n: 0 }.validate(0, 0, 0).is_ok());
    }
}
