//! Case table and driver for `silu_mul` (`out = silu(gate) * up`).

use super::{check_output, expect_reject, impl_failed, ref_failed, Options, Runner};
use crate::{rand_f32, Guarded, Report, Tol};
use kiln_core::ops::silu_mul::{silu_mul_ref, SiluMulParams};

/// Implementation under test: `(params, gate, up, out)`.
pub type SiluMulFn<'a> =
    dyn Fn(&SiluMulParams, &[f32], &[f32], &mut [f32]) -> kiln_core::Result<()> + 'a;

/// One case: length, gate range, up range, large?
#[derive(Debug, Clone, Copy)]
pub struct SiluMulCase {
    pub n: usize,
    pub gate: (f32, f32),
    pub up: (f32, f32),
    pub big: bool,
}

const fn c(n: usize, gate: (f32, f32), up: (f32, f32), big: bool) -> SiluMulCase {
    SiluMulCase { n, gate, up, big }
}

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
    check_gated(
        "silu_mul",
        opts,
        &|n| SiluMulParams { n },
        &silu_mul_ref,
        imp,
    )
}

/// A gated family's implementation or reference: `(params, gate, up, out)`.
pub(crate) type GatedFn<'a, P> =
    dyn Fn(&P, &[f32], &[f32], &mut [f32]) -> kiln_core::Result<()> + 'a;

/// The driver of the gated elementwise families (`out = act(gate) * up`:
/// silu_mul, sigmoid_mul) over [`CASES`]: `params(n)` builds the family's
/// params, `reference` is its kiln-core oracle. Tolerance
/// [`Tol::ELEMENTWISE`]: one exp and a division per output, |out| <= 16.
pub(crate) fn check_gated<P>(
    op: &'static str,
    opts: &Options,
    params: &dyn Fn(usize) -> P,
    reference: &GatedFn<'_, P>,
    imp: &GatedFn<'_, P>,
) -> Report {
    let mut run = Runner::new(op, opts);
    let tol = run.tol(Tol::ELEMENTWISE);
    for cs in CASES {
        let name = format!("n={} gate=[{}, {}]", cs.n, cs.gate.0, cs.gate.1);
        run.case(&name, cs.big, |rng| {
            let p = params(cs.n);
            let gate = rand_f32(rng, cs.n, cs.gate.0, cs.gate.1);
            let up = rand_f32(rng, cs.n, cs.up.0, cs.up.1);
            let mut want = vec![0.0; cs.n];
            reference(&p, &gate, &up, &mut want).map_err(ref_failed)?;
            let mut out = Guarded::new(cs.n);
            imp(&p, &gate, &up, out.as_mut_slice()).map_err(impl_failed)?;
            check_output("out", &out, &want, tol)
        });
    }
    run.case("rejects up shorter than n", false, |_| {
        let mut out = Guarded::new(16);
        let r = imp(&params(16), &[1.0; 16], &[1.0; 15], out.as_mut_slice());
        expect_reject(r, &out)
    });
    run.case("rejects out shorter than n", false, |_| {
        let mut out = Guarded::new(15);
        let r = imp(&params(16), &[1.0; 16], &[1.0; 16], out.as_mut_slice());
        expect_reject(r, &out)
    });
    run.finish()
}
