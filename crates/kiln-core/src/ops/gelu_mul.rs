//! gelu_mul: the GeGLU gate of a Gemma FFN, `out = gelu(gate) * up`,
//! elementwise over `n` f32 values, with GELU in its tanh approximation
//! (Hendrycks & Gimpel 2016, eq. for "GELU(x) ≈ 0.5x(1 + tanh(√(2/π)(x +
//! 0.044715x³)))"; the `gelu_pytorch_tanh` activation of Gemma's configs).
//!
//! Since `0.5 (1 + tanh(u)) = 1 / (1 + exp(-2u))`, this equals
//! `x / (1 + exp(-2u))` with `u = √(2/π) (x + 0.044715 x³)`: the same shape
//! as SiLU with a different argument, which is how fast paths compute it.
//! The exact (erf) GELU is not offered: no Gemma 3 file uses it.

use crate::error::check_len;
use crate::Result;

/// √(2/π).
pub const GELU_SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
/// The cubic coefficient of the tanh approximation.
pub const GELU_COEF_A: f64 = 0.044_715;

/// Params of [`gelu_mul_ref`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeluMulParams {
    /// Number of elements in `gate`, `up` and `out`.
    pub n: usize,
}

impl GeluMulParams {
    /// All three buffers hold exactly `n` values.
    pub fn validate(&self, gate_len: usize, up_len: usize, out_len: usize) -> Result<()> {
        check_len("gelu_mul", "gate", gate_len, self.n)?;
        check_len("gelu_mul", "up", up_len, self.n)?;
        check_len("gelu_mul", "out", out_len, self.n)
    }
}

/// GELU (tanh approximation) of one value in f64, written with `tanh` as
/// the published formula has it.
pub fn gelu_tanh_f64(x: f64) -> f64 {
    0.5 * x * (1.0 + (GELU_SQRT_2_OVER_PI * (x + GELU_COEF_A * x * x * x)).tanh())
}

/// Reference in f64: `out[i] = gelu_tanh(gate[i]) * up[i]`.
pub fn gelu_mul_ref(p: &GeluMulParams, gate: &[f32], up: &[f32], out: &mut [f32]) -> Result<()> {
    p.validate(gate.len(), up.len(), out.len())?;
    for i in 0..p.n {
        out[i] = (gelu_tanh_f64(f64::from(gate[i])) * f64::from(up[i])) as f32;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hand_values() {
        // gelu_tanh(0) = 0; gelu_tanh(1) = 0.8411919906 (the tanh form);
        // gelu_tanh(-1) = -0.1588080094; gelu_tanh(3) = 2.9963625.
        let mut out = [f32::NAN; 4];
        gelu_mul_ref(
            &GeluMulParams { n: 4 },
            &[0.0, 1.0, -1.0, 3.0],
            &[5.0, 2.0, 1.0, 1.0],
            &mut out,
        )
        .unwrap();
        assert_eq!(out[0], 0.0);
        assert!((out[1] - 1.682_384).abs() < 1e-6, "{out:?}");
        assert!((out[2] + 0.158_808_01).abs() < 1e-6, "{out:?}");
        assert!((out[3] - 2.996_362_5).abs() < 1e-6, "{out:?}");
    }

    #[test]
    fn sigmoid_form_is_the_same_function() {
        for i in -400..400 {
            let x = f64::from(i) * 0.05;
            let u = GELU_SQRT_2_OVER_PI * (x + GELU_COEF_A * x * x * x);
            let s = x / (1.0 + (-2.0 * u).exp());
            assert!((s - gelu_tanh_f64(x)).abs() < 1e-12, "x={x}");
        }
    }

    #[test]
    fn extreme_gates_do_not_make_nan() {
        let mut out = [f32::NAN; 2];
        gelu_mul_ref(
            &GeluMulParams { n: 2 },
            &[-1000.0, 1000.0],
            &[1.0, 1.0],
            &mut out,
        )
        .unwrap();
        assert_eq!(out, [0.0, 1000.0]);
    }

    #[test]
    fn rejects_bad_lengths() {
        assert!(GeluMulParams { n: 4 }.validate(4, 3, 4).is_err());
        let e = GeluMulParams { n: 4 }.validate(4, 4, 5).unwrap_err();
        assert!(e.to_string().contains("gelu_mul"), "{e}");
    }
}
