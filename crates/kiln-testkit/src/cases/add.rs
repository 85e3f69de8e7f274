//! Case table and driver for `add` (`out = a + b`).

use super::{check_output, expect_reject, impl_failed, ref_failed, Options, Runner};
use crate::{rand_f32, Guarded, Report, Tol};
use kiln_core::ops::add::{add_ref, AddParams};

/// Implementation under test: `(params, a, b, out)`.
pub type AddFn<'a> = dyn Fn(&AddParams, &[f32], &[f32], &mut [f32]) -> kiln_core::Result<()> + 'a;

/// Lengths: edge sizes around SIMD widths, SmolLM2 residual rows (dim 576)
/// for decode and a 512-token prefill, and an odd size past any threading cutoff.
pub const SIZES: &[(usize, bool)] = &[
    (0, false),
    (1, false),
    (7, false),
    (8, false),
    (9, false),
    (33, false),
    (257, false),
    (576, false),
    (4097, false),
    (100_003, false),
    (512 * 576, true),
];

/// Run every `add` case against `imp`.
pub fn check_add(imp: &AddFn<'_>) -> Report {
    check_add_with(imp, &Options::default())
}

/// [`check_add`] with explicit options.
pub fn check_add_with(imp: &AddFn<'_>, opts: &Options) -> Report {
    let mut run = Runner::new("add", opts);
    // One f32 rounding per element: every backend must be bit-exact.
    let tol = run.tol(Tol::EXACT);
    for &(n, big) in SIZES {
        run.case(&format!("n={n}"), big, |rng| {
            let p = AddParams { n };
            let a = rand_f32(rng, n, -4.0, 4.0);
            let b = rand_f32(rng, n, -4.0, 4.0);
            let mut want = vec![0.0; n];
            add_ref(&p, &a, &b, &mut want).map_err(ref_failed)?;
            let mut out = Guarded::new(n);
            imp(&p, &a, &b, out.as_mut_slice()).map_err(impl_failed)?;
            check_output("out", &out, &want, tol)
        });
    }
    run.case("rejects b shorter than n", false, |_| {
        let mut out = Guarded::new(8);
        expect_reject(
            imp(
                &AddParams { n: 8 },
                &[1.0; 8],
                &[1.0; 7],
                out.as_mut_slice(),
            ),
            &out,
        )
    });
    run.case("rejects out longer than n", false, |_| {
        let mut out = Guarded::new(9);
        expect_reject(
            imp(
                &AddParams { n: 8 },
                &[1.0; 8],
                &[1.0; 8],
                out.as_mut_slice(),
            ),
            &out,
        )
    });
    run.finish()
}
