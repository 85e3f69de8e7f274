//! Case table and driver for `gelu_mul` (`out = gelu(gate) * up`), every
//! case in both GELU modes. A backend that applied the other mode fails:
//! the tanh and erf forms differ by up to 4.7e-4 (at gate ≈ ±2.7; times
//! |up| <= 2), far above the tolerance.
//!
//! Tolerance: `Tol::ELEMENTWISE` in both modes (see [`super::gated`]). Each output has one
//! transcendental (exp, or erfc: CUDA's `erfcf` is within 4 ulp, the CPU's
//! within 1 ulp) and a few f32 roundings of a value bounded by 16; rounding
//! the erfc argument `-g/√2` to f32 moves outputs by < 1e-6 at these gates.

use super::gated::{c, gated_cases, GatedCase};
use super::{Options, Runner};
use crate::Report;
use kiln_core::ops::gelu_mul::{gelu_mul_ref, GeluMode, GeluMulParams};

/// Implementation under test: `(params, gate, up, out)`.
pub type GeluMulFn<'a> =
    dyn Fn(&GeluMulParams, &[f32], &[f32], &mut [f32]) -> kiln_core::Result<()> + 'a;

/// A `gelu_mul` case (the gated families' shape).
pub type GeluMulCase = GatedCase;

/// Odd lengths around SIMD widths, Gemma 3 270M's ffn 2048 (decode) and a
/// 7-token prefill; a wide-gate case drives exp into under/overflow and
/// saturates erf to ±1 (outputs stay small because `up` is small there);
/// gates near 0 where the cubic term vanishes and erf is linear.
pub const CASES: &[GeluMulCase] = &[
    c(0, (-8.0, 8.0), (-2.0, 2.0), false),
    c(1, (-8.0, 8.0), (-2.0, 2.0), false),
    c(7, (-8.0, 8.0), (-2.0, 2.0), false),
    c(8, (-8.0, 8.0), (-2.0, 2.0), false),
    c(9, (-8.0, 8.0), (-2.0, 2.0), false),
    c(33, (-8.0, 8.0), (-2.0, 2.0), false),
    c(257, (-8.0, 8.0), (-2.0, 2.0), false),
    c(2048, (-8.0, 8.0), (-2.0, 2.0), false),
    c(7 * 2048, (-8.0, 8.0), (-2.0, 2.0), false),
    c(100_003, (-8.0, 8.0), (-2.0, 2.0), false),
    c(4099, (-120.0, 120.0), (-0.05, 0.05), false),
    c(4099, (-0.01, 0.01), (-2.0, 2.0), false),
    c(512 * 2048, (-8.0, 8.0), (-2.0, 2.0), true),
];

/// Run every `gelu_mul` case against `imp`.
pub fn check_gelu_mul(imp: &GeluMulFn<'_>) -> Report {
    check_gelu_mul_with(imp, &Options::default())
}

/// [`check_gelu_mul`] with explicit options: every case in both modes.
pub fn check_gelu_mul_with(imp: &GeluMulFn<'_>, opts: &Options) -> Report {
    let mut run = Runner::new("gelu_mul", opts);
    for mode in [GeluMode::Tanh, GeluMode::Erf] {
        let params = move |n| GeluMulParams { n, mode };
        let prefix = format!("{mode:?} ");
        gated_cases(&mut run, &prefix, CASES, &params, &gelu_mul_ref, imp);
    }
    run.finish()
}
