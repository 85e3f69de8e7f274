//! Case table and driver for `sigmoid_mul` (`out = sigmoid(gate) * up`),
//! on the case table of [`silu_mul`](super::silu_mul) (the same gate
//! shapes: odd lengths, exp under/overflow, gates near 0) and its driver
//! (tolerance `Tol::ELEMENTWISE`: one exp and a division per output).

use super::gated::gated_cases;
use super::silu_mul::CASES;
use super::{Options, Runner};
use crate::Report;
use kiln_core::ops::sigmoid_mul::{sigmoid_mul_ref, SigmoidMulParams};

/// Implementation under test: `(params, gate, up, out)`.
pub type SigmoidMulFn<'a> =
    dyn Fn(&SigmoidMulParams, &[f32], &[f32], &mut [f32]) -> kiln_core::Result<()> + 'a;

/// Run every `sigmoid_mul` case against `imp`.
pub fn check_sigmoid_mul(imp: &SigmoidMulFn<'_>) -> Report {
    check_sigmoid_mul_with(imp, &Options::default())
}

/// [`check_sigmoid_mul`] with explicit options.
pub fn check_sigmoid_mul_with(imp: &SigmoidMulFn<'_>, opts: &Options) -> Report {
    let mut run = Runner::new("sigmoid_mul", opts);
    let params = |n| SigmoidMulParams { n };
    gated_cases(&mut run, "", CASES, &params, &sigmoid_mul_ref, imp);
    run.finish()
}
