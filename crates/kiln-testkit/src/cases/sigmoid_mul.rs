//! Case table and driver for `sigmoid_mul` (`out = sigmoid(gate) * up`),
//! on the case table of [`silu_mul`](super::silu_mul) (the same gate
//! shapes: odd lengths, exp under/overflow, gates near 0). Tolerance
//! [`Tol::ELEMENTWISE`]: one exp and a division per output, |out| <= 2.

use super::silu_mul::CASES;
use super::{check_output, expect_reject, impl_failed, ref_failed, Options, Runner};
use crate::{rand_f32, Guarded, Report, Tol};
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
    let tol = run.tol(Tol::ELEMENTWISE);
    for cs in CASES {
        let name = format!("n={} gate=[{}, {}]", cs.n, cs.gate.0, cs.gate.1);
        run.case(&name, cs.big, |rng| {
            let p = SigmoidMulParams { n: cs.n };
            let gate = rand_f32(rng, cs.n, cs.gate.0, cs.gate.1);
            let up = rand_f32(rng, cs.n, cs.up.0, cs.up.1);
            let mut want = vec![0.0; cs.n];
            sigmoid_mul_ref(&p, &gate, &up, &mut want).map_err(ref_failed)?;
            let mut out = Guarded::new(cs.n);
            imp(&p, &gate, &up, out.as_mut_slice()).map_err(impl_failed)?;
            check_output("out", &out, &want, tol)
        });
    }
    run.case("rejects up shorter than n", false, |_| {
        let mut out = Guarded::new(16);
        expect_reject(
            imp(
                &SigmoidMulParams { n: 16 },
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
                &SigmoidMulParams { n: 16 },
                &[1.0; 16],
                &[1.0; 16],
                out.as_mut_slice(),
            ),
            &out,
        )
    });
    run.finish()
}
