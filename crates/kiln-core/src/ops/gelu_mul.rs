//! gelu_mul: the GeGLU gate of a Gemma FFN, `out = gelu(gate) * up`,
//! elementwise over `n` f32 values, with GELU in one of two forms
//! ([`GeluMode`]):
//!
//! - `Tanh`: the tanh approximation (Hendrycks & Gimpel 2016, "GELU(x) ≈
//!   0.5x(1 + tanh(√(2/π)(x + 0.044715x³)))"; the `gelu_pytorch_tanh`
//!   activation of Gemma's configs). Since `0.5 (1 + tanh(u)) = 1 / (1 +
//!   exp(-2u))`, this equals `x / (1 + exp(-2u))` with `u = √(2/π) (x +
//!   0.044715 x³)`: the same shape as SiLU with a different argument, which
//!   is how fast paths compute it.
//! - `Erf`: the exact GELU `x Φ(x) = 0.5 x (1 + erf(x/√2))` (`gelu` /
//!   `hidden_act = "gelu"` in transformers), computed as
//!   `0.5 x erfc(-x/√2)` so the negative tail keeps its relative accuracy
//!   instead of cancelling in `1 + erf`. Rust's std has no erf: [`erf_f64`]
//!   and [`erfc_f64`] are implemented here.

use crate::error::check_len;
use crate::Result;

/// √(2/π).
pub const GELU_SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
/// The cubic coefficient of the tanh approximation.
pub const GELU_COEF_A: f64 = 0.044_715;

/// √½ (`x/√2 = x · FRAC_1_SQRT_2`).
pub const GELU_FRAC_1_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;

/// Which GELU [`gelu_mul_ref`] applies to the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GeluMode {
    /// The tanh approximation (Gemma's `gelu_pytorch_tanh`).
    #[default]
    Tanh,
    /// The exact GELU `x Φ(x)`, with the error function.
    Erf,
}

/// Params of [`gelu_mul_ref`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeluMulParams {
    /// Number of elements in `gate`, `up` and `out`.
    pub n: usize,
    /// The GELU form.
    pub mode: GeluMode,
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

/// Exact GELU of one value in f64: `x Φ(x) = 0.5 x erfc(-x/√2)`.
pub fn gelu_erf_f64(x: f64) -> f64 {
    0.5 * x * erfc_f64(-x * GELU_FRAC_1_SQRT_2)
}

/// Below this |x|, erf by its series; at and above, erfc by its continued fraction.
const ERF_SERIES_MAX: f64 = 2.5;

/// `erf(x)` for `0 <= x < 2.5` by the all-positive series
/// `erf(x) = 2/√π e^(-x²) Σ_n 2^n x^(2n+1) / (1·3·…·(2n+1))`: every term is
/// positive, so summing loses nothing to cancellation (at most ~45 terms
/// until a term is below 1e-17 of the sum).
fn erf_series(x: f64) -> f64 {
    let two_x2 = 2.0 * x * x;
    let (mut term, mut sum) = (x, x);
    let mut k = 1.0;
    while term > 1e-17 * sum {
        term *= two_x2 / (2.0 * k + 1.0);
        sum += term;
        k += 1.0;
    }
    std::f64::consts::FRAC_2_SQRT_PI * (-x * x).exp() * sum
}

/// `erfc(x)` for `x >= 2.5` by the continued fraction `erfc(x) =
/// e^(-x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …))))`, evaluated
/// backward from 40 levels (converged to f64 precision for x >= 2.5).
fn erfc_cf(x: f64) -> f64 {
    let mut t = x;
    for k in (1..=40).rev() {
        t = x + 0.5 * f64::from(k) / t;
    }
    std::f64::consts::FRAC_2_SQRT_PI * 0.5 * (-x * x).exp() / t
}

/// The error function in f64. Accuracy (checked against 30-digit values):
/// relative error < 2e-15 everywhere; `erf(x) = 1` to f64 precision for
/// `|x| >= 6`; odd (`erf(-x) = -erf(x)`) exactly. NaN propagates.
pub fn erf_f64(x: f64) -> f64 {
    let a = x.abs();
    let r = if a < ERF_SERIES_MAX {
        erf_series(a)
    } else if a.is_nan() {
        return x;
    } else {
        1.0 - erfc_cf(a)
    };
    r.copysign(x)
}

/// The complementary error function `1 - erf(x)` in f64, without the
/// cancellation of `1 - erf` for large x. Relative error < 1e-10 (from
/// `1 - erf_series` just below 2.5, where erfc ≈ 4e-4), < 2e-15 for
/// `x >= 2.5` (until e^(-x²) underflows past x ≈ 27); `erfc(-x) = 2 - erfc(x)`.
pub fn erfc_f64(x: f64) -> f64 {
    if x.is_nan() {
        x
    } else if x < 0.0 {
        1.0 + erf_f64(-x)
    } else if x < ERF_SERIES_MAX {
        1.0 - erf_series(x)
    } else {
        erfc_cf(x)
    }
}

/// Reference in f64: `out[i] = gelu(gate[i]) * up[i]` with the GELU of `p.mode`.
pub fn gelu_mul_ref(p: &GeluMulParams, gate: &[f32], up: &[f32], out: &mut [f32]) -> Result<()> {
    p.validate(gate.len(), up.len(), out.len())?;
    let gelu = match p.mode {
        GeluMode::Tanh => gelu_tanh_f64,
        GeluMode::Erf => gelu_erf_f64,
    };
    for i in 0..p.n {
        out[i] = (gelu(f64::from(gate[i])) * f64::from(up[i])) as f32;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const TANH: GeluMode = GeluMode::Tanh;

    fn params(n: usize) -> GeluMulParams {
        GeluMulParams { n, mode: TANH }
    }

    /// |got - want| <= rel * |want|.
    fn close(got: f64, want: f64, rel: f64) -> bool {
        (got - want).abs() <= rel * want.abs()
    }

    #[test]
    fn erf_known_values() {
        // 30-digit values (mpmath), rounded to f64.
        for (x, want) in [
            (0.001, 0.001_128_378_790_969_236_5),
            (0.1, 0.112_462_916_018_284_9),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.0, 0.999_977_909_503_001_4),
        ] {
            assert!(close(erf_f64(x), want, 2e-15), "erf({x}) = {}", erf_f64(x));
            assert!(close(erf_f64(-x), -want, 2e-15), "erf(-{x})");
        }
        assert_eq!(erf_f64(0.0), 0.0);
        assert_eq!(erf_f64(6.0), 1.0);
        assert_eq!(erf_f64(-6.0), -1.0);
        assert_eq!(erf_f64(f64::INFINITY), 1.0);
        assert_eq!(erf_f64(1e300), 1.0);
        assert!(erf_f64(f64::NAN).is_nan());
        // Odd and monotone across the series / continued-fraction seam.
        let mut last = -1.0;
        for i in -700..=700 {
            let x = f64::from(i) * 0.01;
            assert_eq!(erf_f64(-x), -erf_f64(x), "x={x}");
            assert!(erf_f64(x) >= last, "x={x}");
            last = erf_f64(x);
        }
    }

    #[test]
    fn erfc_known_values() {
        for (x, want, rel) in [
            (3.0, 2.209_049_699_858_544e-5, 2e-15),
            (4.0, 1.541_725_790_028_002e-8, 2e-15),
            (5.0, 1.537_459_794_428_035e-12, 2e-15),
            (10.0, 2.088_487_583_762_545e-45, 2e-15),
            (26.0, 5.663_192_408_856_143e-296, 1e-13),
            (1.0, 1.0 - 0.842_700_792_949_714_9, 1e-15),
            (2.0, 1.0 - 0.995_322_265_018_952_7, 1e-11),
        ] {
            assert!(close(erfc_f64(x), want, rel), "erfc({x}) = {}", erfc_f64(x));
        }
        assert_eq!(erfc_f64(-30.0), 2.0);
        assert_eq!(erfc_f64(30.0), 0.0);
        assert!(close(erfc_f64(-1.0), 1.0 + 0.842_700_792_949_714_9, 1e-15));
    }

    #[test]
    fn gelu_erf_values() {
        // x Φ(x) (mpmath): the negative tail keeps its relative accuracy.
        for (x, want) in [
            (1.0, 0.841_344_746_068_542_9),
            (-1.0, -0.158_655_253_931_457_05),
            (0.5, 0.345_731_230_637_006_56),
            (3.0, 2.995_950_305_905_11),
            (-3.0, -0.004_049_694_094_890_283_5),
            (-5.0, -1.433_257_859_395_969_5e-6),
            (-10.0, -7.619_853_024_160_526e-23),
        ] {
            assert!(
                close(gelu_erf_f64(x), want, 1e-9),
                "gelu({x}) = {}",
                gelu_erf_f64(x)
            );
        }
        let mut out = [f32::NAN; 3];
        gelu_mul_ref(
            &GeluMulParams {
                n: 3,
                mode: GeluMode::Erf,
            },
            &[1.0, -1000.0, 1000.0],
            &[2.0, 1.0, 1.0],
            &mut out,
        )
        .unwrap();
        assert!((out[0] - 1.682_689_5).abs() < 1e-6, "{out:?}");
        assert_eq!(out[1], 0.0);
        assert_eq!(out[2], 1000.0);
    }

    #[test]
    fn hand_values() {
        // gelu_tanh(0) = 0; gelu_tanh(1) = 0.8411919906 (the tanh form);
        // gelu_tanh(-1) = -0.1588080094; gelu_tanh(3) = 2.9963625.
        let mut out = [f32::NAN; 4];
        gelu_mul_ref(
            &params(4),
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
        gelu_mul_ref(&params(2), &[-1000.0, 1000.0], &[1.0, 1.0], &mut out).unwrap();
        assert_eq!(out, [0.0, 1000.0]);
    }

    #[test]
    fn rejects_bad_lengths() {
        assert!(params(4).validate(4, 3, 4).is_err());
        let e = params(4).validate(4, 4, 5).unwrap_err();
        assert!(e.to_string().contains("gelu_mul"), "{e}");
    }
}
