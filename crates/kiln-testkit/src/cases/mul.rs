//! Case table and driver for `mul` (`out = a * b`).

use super::{check_output, expect_reject, impl_failed, ref_failed, Options, Runner};
use crate::{rand_f32, Guarded, Report, Tol};
use kiln_core::ops::mul::{mul_ref, MulParams};

/// Implementation under test: `(params, a, b, out)`.
pub type MulFn<'a> = dyn Fn(&MulParams, &[f32], &[f32], &mut [f32]) -> kiln_core::Result<()> + 'a;

/// Operands of the "specials" case (every ordered pair is multiplied).
pub const SPECIALS: &[f32] = &[
    0.0,
    -0.0,
    1.0,
    -3.5,
    1e-20,
    -3e-19,
    1e-30,
    f32::MIN_POSITIVE,
    1e-40,  // subnormal
    -1e-45, // smallest subnormal
    0.75,
    1e20,
    f32::MAX,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
];

/// Run every `mul` case against `imp`: the lengths of `add`'s table
/// ([`super::add::SIZES`]: SIMD edges, SmolLM2 rows, a prefill, past the
/// threading cutoff), then the same rejections.
pub fn check_mul(imp: &MulFn<'_>) -> Report {
    check_mul_with(imp, &Options::default())
}

/// [`check_mul`] with explicit options.
pub fn check_mul_with(imp: &MulFn<'_>, opts: &Options) -> Report {
    let mut run = Runner::new("mul", opts);
    // One f32 rounding per element: every backend must be bit-exact.
    let tol = run.tol(Tol::EXACT);
    for &(n, big) in super::add::SIZES {
        run.case(&format!("n={n}"), big, |rng| {
            let p = MulParams { n };
            let a = rand_f32(rng, n, -4.0, 4.0);
            let b = rand_f32(rng, n, -2.5, 2.5);
            let mut want = vec![0.0; n];
            mul_ref(&p, &a, &b, &mut want).map_err(ref_failed)?;
            let mut out = Guarded::new(n);
            imp(&p, &a, &b, out.as_mut_slice()).map_err(impl_failed)?;
            check_output("out", &out, &want, tol)
        });
    }
    // Every pair of special operands: signed zeros, subnormals (and
    // products that are subnormal or underflow), overflow to inf, inf * 0
    // (NaN), NaN. Catches a backend that flushes subnormals to zero.
    run.case("specials", false, |_| {
        let (a, b): (Vec<f32>, Vec<f32>) = SPECIALS
            .iter()
            .flat_map(|&x| SPECIALS.iter().map(move |&y| (x, y)))
            .unzip();
        let p = MulParams { n: a.len() };
        let mut want = vec![0.0; p.n];
        mul_ref(&p, &a, &b, &mut want).map_err(ref_failed)?;
        let mut out = Guarded::new(p.n);
        imp(&p, &a, &b, out.as_mut_slice()).map_err(impl_failed)?;
        check_output("out", &out, &want, tol)
    });
    run.case("rejects a shorter than n", false, |_| {
        let mut out = Guarded::new(8);
        expect_reject(
            imp(
                &MulParams { n: 8 },
                &[1.0; 7],
                &[1.0; 8],
                out.as_mut_slice(),
            ),
            &out,
        )
    });
    run.case("rejects out longer than n", false, |_| {
        let mut out = Guarded::new(9);
        expect_reject(
            imp(
                &MulParams { n: 8 },
                &[1.0; 8],
                &[1.0; 8],
                out.as_mut_slice(),
            ),
            &out,
        )
    });
    run.finish()
}
