//! The shared case shape and driver of the gated elementwise families
//! (`out = act(gate) * up`: silu_mul, sigmoid_mul, gelu_mul): each family
//! supplies its case table, its params and its kiln-core oracle.
//! Tolerance [`Tol::ELEMENTWISE`]: one transcendental and a few f32
//! roundings per output, outputs bounded by ~16.

use super::{check_output, expect_reject, impl_failed, ref_failed, Runner};
use crate::{rand_f32, Guarded, Tol};

/// One case: length, gate range, up range, large?
#[derive(Debug, Clone, Copy)]
pub struct GatedCase {
    pub n: usize,
    pub gate: (f32, f32),
    pub up: (f32, f32),
    pub big: bool,
}

pub(crate) const fn c(n: usize, gate: (f32, f32), up: (f32, f32), big: bool) -> GatedCase {
    GatedCase { n, gate, up, big }
}

/// A gated family's implementation or reference: `(params, gate, up, out)`.
pub(crate) type GatedFn<'a, P> =
    dyn Fn(&P, &[f32], &[f32], &mut [f32]) -> kiln_core::Result<()> + 'a;

/// Add every case of `cases` (names prefixed by `prefix`) and the two
/// length rejections to `run`: `params(n)` builds the family's params.
pub(crate) fn gated_cases<P>(
    run: &mut Runner<'_>,
    prefix: &str,
    cases: &[GatedCase],
    params: &dyn Fn(usize) -> P,
    reference: &GatedFn<'_, P>,
    imp: &GatedFn<'_, P>,
) {
    let tol = run.tol(Tol::ELEMENTWISE);
    for cs in cases {
        let name = format!("{prefix}n={} gate=[{}, {}]", cs.n, cs.gate.0, cs.gate.1);
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
    run.case(&format!("{prefix}rejects up shorter than n"), false, |_| {
        let mut out = Guarded::new(16);
        let r = imp(&params(16), &[1.0; 16], &[1.0; 15], out.as_mut_slice());
        expect_reject(r, &out)
    });
    run.case(
        &format!("{prefix}rejects out shorter than n"),
        false,
        |_| {
            let mut out = Guarded::new(15);
            let r = imp(&params(16), &[1.0; 16], &[1.0; 16], out.as_mut_slice());
            expect_reject(r, &out)
        },
    );
}
