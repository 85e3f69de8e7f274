//! Case table and driver for `silu_mul` (`out = silu(gate) * up`).

use super::gated::{c, gated_cases, GatedCase};
use super::{Options, Runner};
use crate::Report;
use kiln_core::ops::silu_mul::{silu_mul_ref, SiluMulParams};

/// Implementation under test: `(params, gate, up, out)`.
pub type SiluMulFn<'a> =
    dyn Fn(&SiluMulParams, &[f32], &[f32], &mut [f32]) -> kiln_core::Result<()> + 'a;

/// A `silu_mul` case (the gated families' shape).
pub type SiluMulCase = GatedCase;

/// Odd lengths around SIMD widths, SmolLM2's ffn 1536 (decode) and a
/// 512-token prefill; a wide-gate case drives exp into under/overflow
/// (outputs stay small because `up` is small there).
pub const CASES: &[SiluMulCase] = &[
    c(0, (-8.0, 8.0), (-2.0, 2.0), false),
    c(1, (-8.0, 8.0), (-2.0, 2.0), false),
    c(7, (-8.0, 8.0), (-2.0, 2.0), false),
    c(8, (-8.0, 8.0), (-2.0, 2.0), false),
    c(9, (-8.0, 8.0), (-2.0, 2.0), false),
    c(33, (-8.0, 8.0), (-2.0, 2.0), false),
    c(257, (-8.0, 8.0), (-2.0, 2.0), false),
    c(1536, (-8.0, 8.0), (-2.0, 2.0), false),
    c(100_003, (-8.0, 8.0), (-2.0, 2.0), false),
    c(4099, (-120.0, 120.0), (-0.05, 0.05), false),
    c(4099, (-0.01, 0.01), (-2.0, 2.0), false),
    c(512 * 1536, (-8.0, 8.0), (-2.0, 2.0), true),
];

/// Run every `silu_mul` case against `imp`.
pub fn check_silu_mul(imp: &SiluMulFn<'_>) -> Report {
    check_silu_mul_with(imp, &Options::default())
}

/// [`check_silu_mul`] with explicit options.
pub fn check_silu_mul_with(imp: &SiluMulFn<'_>, opts: &Options) -> Report {
    let mut run = Runner::new("silu_mul", opts);
    gated_cases(
        &mut run,
        "",
        CASES,
        &|n| SiluMulParams { n },
        &silu_mul_ref,
        imp,
    );
    run.finish()
}
