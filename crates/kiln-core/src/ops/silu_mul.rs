//! silu_mul: the SwiGLU gate of a llama FFN, `out = silu(gate) * up` with
//! `silu(x) = x / (1 + exp(-x))`, elementwise over `n` f32 values.

use crate::error::check_len;
use crate::Result;

/// Params of [`silu_mul_ref`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiluMulParams {
    /// Number of elements in `gate`, `up` and `out`.
    pub n: usize,
}

impl SiluMulParams {
    /// All three buffers hold exactly `n` values.
    pub fn validate(&self, gate_len: usize, up_len: usize, out_len: usize) -> Result<()> {
        check_len("silu_mul", "gate", gate_len, self.n)?;
        check_len("silu_mul", "up", up_len, self.n)?;
        check_len("silu_mul", "out", out_len, self.n)
    }
}

/// Reference in f64: `out[i] = gate[i] / (1 + exp(-gate[i])) * up[i]`.
pub fn silu_mul_ref(p: &SiluMulParams, gate: &[f32], up: &[f32], out: &mut [f32]) -> Result<()> {
    p.validate(gate.len(), up.len(), out.len())?;
    for i in 0..p.n {
        let g = f64::from(gate[i]);
        out[i] = (g / (1.0 + (-g).exp()) * f64::from(up[i])) as f32;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hand_values() {
        // silu(0) = 0; silu(1) = 1 / (1 + e^-1) = 0.7310585786; silu(-1) = -0.2689414214.
        let mut out = [f32::NAN; 3];
        silu_mul_ref(
            &SiluMulParams { n: 3 },
            &[0.0, 1.0, -1.0],
            &[5.0, 2.0, 1.0],
            &mut out,
        )
        .unwrap();
        assert_eq!(out[0], 0.0);
        assert!((out[1] - 1.462_117_2).abs() < 1e-6);
        assert!((out[2] + 0.268_941_42).abs() < 1e-6);
    }

    #[test]
    fn extreme_gates_do_not_make_nan() {
        let mut out = [f32::NAN; 2];
        silu_mul_ref(
            &SiluMulParams { n: 2 },
            &[-1000.0, 1000.0],
            &[1.0, 1.0],
            &mut out,
        )
        .unwrap();
        assert_eq!(out, [0.0, 1000.0]);
    }

    #[test]
    fn rejects_bad_lengths() {
        assert!(SiluMulParams { n: 4 }.validate(4, 3, 4).is_err());
        assert!(SiluMulParams { n: 4 }.validate(4, 4, 5).is_err());
    }
}
