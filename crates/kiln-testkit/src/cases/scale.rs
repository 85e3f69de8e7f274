//! Case table and driver for `scale` (`out = alpha * x`).

use super::{check_output, expect_reject, impl_failed, ref_failed, Options, Runner};
use crate::{rand_f32, Guarded, Report, Tol};
use kiln_core::ops::scale::{scale_ref, ScaleParams};

/// Implementation under test: `(params, x, out)`.
pub type ScaleFn<'a> = dyn Fn(&ScaleParams, &[f32], &mut [f32]) -> kiln_core::Result<()> + 'a;

/// Lengths around SIMD widths, Gemma 3 270M's embedding row (640, alpha =
/// √640) for decode and a 7-token prefill, a length past the threading
/// cutoff; alphas of both signs and 0.
pub const CASES: &[(usize, f32, bool)] = &[
    (0, 2.0, false),
    (1, 2.0, false),
    (7, -0.5, false),
    (9, 0.0, false),
    (33, 3.0, false),
    (640, 25.298_221, false),
    (7 * 640, 25.298_221, false),
    (100_003, -1.5, false),
    (512 * 640, 25.298_221, true),
];

/// Run every `scale` case against `imp`.
pub fn check_scale(imp: &ScaleFn<'_>) -> Report {
    check_scale_with(imp, &Options::default())
}

/// [`check_scale`] with explicit options.
pub fn check_scale_with(imp: &ScaleFn<'_>, opts: &Options) -> Report {
    let mut run = Runner::new("scale", opts);
    // One f32 rounding per element: every backend must be bit-exact.
    let tol = run.tol(Tol::EXACT);
    for &(n, alpha, big) in CASES {
        run.case(&format!("n={n} alpha={alpha}"), big, |rng| {
            let p = ScaleParams { n, alpha };
            let x = rand_f32(rng, n, -4.0, 4.0);
            let mut want = vec![0.0; n];
            scale_ref(&p, &x, &mut want).map_err(ref_failed)?;
            let mut out = Guarded::new(n);
            imp(&p, &x, out.as_mut_slice()).map_err(impl_failed)?;
            check_output("out", &out, &want, tol)
        });
    }
    run.case("rejects out shorter than n", false, |_| {
        let mut out = Guarded::new(15);
        let p = ScaleParams { n: 16, alpha: 1.0 };
        expect_reject(imp(&p, &[1.0; 16], out.as_mut_slice()), &out)
    });
    run.case("rejects a non-finite alpha", false, |_| {
        let mut out = Guarded::new(4);
        let p = ScaleParams {
            n: 4,
            alpha: f32::INFINITY,
        };
        expect_reject(imp(&p, &[1.0; 4], out.as_mut_slice()), &out)
    });
    run.finish()
}
