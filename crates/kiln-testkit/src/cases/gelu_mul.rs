//! Case table and driver for `gelu_mul` (`out = gelu(gate) * up`), every
//! case in both GELU modes. A backend that applied the other mode fails:
//! the tanh and erf forms differ by up to 4.7e-4 (at gate ≈ ±2.7; times
//! |up| <= 2), far above the tolerance.
//!
//! Tolerance: [`Tol::ELEMENTWISE`] in both modes. Each output has one
//! transcendental (exp, or erfc: CUDA's `erfcf` is within 4 ulp, the CPU's
//! within 1 ulp) and a few f32 roundings of a value bounded by 16; rounding
//! the erfc argument `-g/√2` to f32 moves outputs by < 1e-6 at these gates.

use super::{check_output, expect_reject, impl_failed, ref_failed, Options, Runner};
use crate::{rand_f32, Guarded, Report, Tol};
use kiln_core::ops::gelu_mul::{gelu_mul_ref, GeluMode, GeluMulParams};

/// Implementation under test: `(params, gate, up, out)`.
pub type GeluMulFn<'a> =
    dyn Fn(&GeluMulParams, &[f32], &[f32], &mut [f32]) -> kiln_core::Result<()> + 'a;

/// One case: length, gate range, up range, large?
#[derive(Debug, Clone, Copy)]
pub struct GeluMulCase {
    pub n: usize,
    pub gate: (f32, f32),
    pub up: (f32, f32),
    pub big: bool,
}

const fn c(n: usize, gate: (f32, f32), up: (f32, f32), big: bool) -> GeluMulCase {
    GeluMulCase { n, gate, up, big }
}

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

/// [`check_gelu_mul`] with explicit options.
pub fn check_gelu_mul_with(imp: &GeluMulFn<'_>, opts: &Options) -> Report {
    let mut run = Runner::new("gelu_mul", opts);
    let tol = run.tol(Tol::ELEMENTWISE);
    for (mode, cs) in [GeluMode::Tanh, GeluMode::Erf]
        .into_iter()
        .flat_map(|m| CASES.iter().map(move |cs| (m, cs)))
    {
        let name = format!("{mode:?} n={} gate=[{}, {}]", cs.n, cs.gate.0, cs.gate.1);
        run.case(&name, cs.big, |rng| {
            let p = GeluMulParams { n: cs.n, mode };
            let gate = rand_f32(rng, cs.n, cs.gate.0, cs.gate.1);
            let up = rand_f32(rng, cs.n, cs.up.0, cs.up.1);
            let mut want = vec![0.0; cs.n];
            gelu_mul_ref(&p, &gate, &up, &mut want).map_err(ref_failed)?;
            let mut out = Guarded::new(cs.n);
            imp(&p, &gate, &up, out.as_mut_slice()).map_err(impl_failed)?;
            check_output("out", &out, &want, tol)
        });
    }
    run.case("rejects up shorter than n", false, |_| {
        let mut out = Guarded::new(16);
        expect_reject(
            imp(
                &GeluMulParams {
                    n: 16,
                    mode: GeluMode::Tanh,
                },
                &[1.0; 16],
                &[1.0; 15],
                out.as_mut_slice(),
            ),
            &out,
        )
    });
    run.case("rejects out shorter than n", false, |_| {
        let mut out = Guarded::new(15);
        expect_reject(
            imp(
                &GeluMulParams {
                    n: 16,
                    mode: GeluMode::Erf,
                },
                &[1.0; 16],
                &[1.0; 16],
                out.as_mut_slice(),
            ),
            &out,
        )
    });
    run.finish()
}
