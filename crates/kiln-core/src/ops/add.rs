//! add: elementwise `out = a + b` over `n` f32 values (residual connections).

use crate::error::check_len;
use crate::Result;

/// Params of [`add_ref`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddParams {
    /// Number of elements in `a`, `b` and `out`.
    pub n: usize,
}

impl AddParams {
    /// All three buffers hold exactly `n` values.
    pub fn validate(&self, a_len: usize, b_len: usize, out_len: usize) -> Result<()> {
        check_len("add", "a", a_len, self.n)?;
        check_len("add", "b", b_len, self.n)?;
        check_len("add", "out", out_len, self.n)
    }
}

/// Reference: `out[i] = a[i] + b[i]` (one f32 rounding, so exact for every backend).
pub fn add_ref(p: &AddParams, a: &[f32], b: &[f32], out: &mut [f32]) -> Result<()> {
    p.validate(a.len(), b.len(), out.len())?;
    for i in 0..p.n {
        out[i] = a[i] + b[i];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::Error;

    #[test]
    fn adds() {
        let mut out = [f32::NAN; 3];
        add_ref(
            &AddParams { n: 3 },
            &[1.0, -2.0, 0.5],
            &[0.25, 2.0, 1e-8],
            &mut out,
        )
        .unwrap();
        assert_eq!(out, [1.25, 0.0, 0.5 + 1e-8]);
    }

    #[test]
    fn rejects_bad_lengths() {
        let err = add_ref(&AddParams { n: 3 }, &[1.0; 3], &[1.0; 2], &mut [0.0; 3]).unwrap_err();
        assert!(matches!(
            err,
            Error::LengthMismatch {
                op: "add",
                what: "b",
                got: 2,
                expected: 3
            }
        ));
        assert!(AddParams { n: 3 }.validate(3, 3, 4).is_err());
        assert!(AddParams { n: 0 }.validate(0, 0, 0).is_ok());
    }
}
