//! sigmoid_mul: a sigmoid gate, `out = sigmoid(gate) * up` with
//! `sigmoid(x) = 1 / (1 + exp(-x))`, elementwise over `n` f32 values — the
//! output gate of gated attention (Qwen3-Next style: the attention output
//! times the sigmoid of a per-head gate projection). Same layout as
//! [`silu_mul`](super::silu_mul) without the factor `gate`.

use crate::error::check_len;
use crate::Result;

/// Params of [`sigmoid_mul_ref`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigmoidMulParams {
    /// Number of elements in `gate`, `up` and `out`.
    pub n: usize,
}

impl SigmoidMulParams {
    /// All three buffers hold exactly `n` values.
    pub fn validate(&self, gate_len: usize, up_len: usize, out_len: usize) -> Result<()> {
        check_len("sigmoid_mul", "gate", gate_len, self.n)?;
        check_len("sigmoid_mul", "up", up_len, self.n)?;
        check_len("sigmoid_mul", "out", out_len, self.n)
    }
}

/// Reference in f64: `out[i] = up[i] / (1 + exp(-gate[i]))`.
pub fn sigmoid_mul_ref(
    p: &SigmoidMulParams,
    gate: &[f32],
    up: &[f32],
    out: &mut [f32],
) -> Result<()> {
    p.validate(gate.len(), up.len(), out.len())?;
    for i in 0..p.n {
        let g = f64::from(gate[i]);
        out[i] = (f64::from(up[i]) / (1.0 + (-g).exp())) as f32;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hand_values() {
        // sigmoid(0) = 0.5; sigmoid(1) = 0.7310585786; sigmoid(-1) = 0.2689414214.
        let mut out = [f32::NAN; 3];
        sigmoid_mul_ref(
            &SigmoidMulParams { n: 3 },
            &[0.0, 1.0, -1.0],
            &[5.0, 2.0, 1.0],
            &mut out,
        )
        .unwrap();
        assert_eq!(out[0], 2.5);
        assert!((out[1] - 1.462_117_2).abs() < 1e-6);
        assert!((out[2] - 0.268_941_42).abs() < 1e-6);
    }

    #[test]
    fn extreme_gates_do_not_make_nan() {
        let mut out = [f32::NAN; 2];
        sigmoid_mul_ref(
            &SigmoidMulParams { n: 2 },
            &[-1000.0, 1000.0],
            &[3.0, 3.0],
            &mut out,
        )
        .unwrap();
        assert_eq!(out, [0.0, 3.0]);
    }

    #[test]
    fn rejects_bad_lengths() {
        assert!(SigmoidMulParams { n: 4 }.validate(4, 3, 4).is_err());
        let e = SigmoidMulParams { n: 4 }.validate(4, 4, 5).unwrap_err();
        assert!(e.to_string().contains("sigmoid_mul"), "{e}");
    }
}
