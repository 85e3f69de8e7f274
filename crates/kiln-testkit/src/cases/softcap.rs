//! Case table and driver for `softcap` (`out = cap * tanh(x / cap)`).

use super::{check_output, expect_reject, impl_failed, ref_failed, Options, Runner};
use crate::{rand_f32, Guarded, Report, Tol};
use kiln_core::ops::softcap::{softcap_ref, SoftcapParams};

/// Implementation under test: `(params, x, out)`.
pub type SoftcapFn<'a> = dyn Fn(&SoftcapParams, &[f32], &mut [f32]) -> kiln_core::Result<()> + 'a;

/// (n, cap, x amplitude, large?): lengths around SIMD widths; Gemma 2's caps
/// (50 for attention scores, 30 for final logits) on inputs inside and far
/// beyond the cap; a vocabulary-sized logit row; a small cap.
pub const CASES: &[(usize, f32, f32, bool)] = &[
    (0, 30.0, 10.0, false),
    (1, 30.0, 10.0, false),
    (7, 50.0, 10.0, false),
    (33, 30.0, 200.0, false),
    (1000, 0.5, 4.0, false),
    (256_000, 30.0, 60.0, false),
    (4 * 256_000, 30.0, 60.0, true),
];

/// Run every `softcap` case against `imp`.
pub fn check_softcap(imp: &SoftcapFn<'_>) -> Report {
    check_softcap_with(imp, &Options::default())
}

/// [`check_softcap`] with explicit options.
pub fn check_softcap_with(imp: &SoftcapFn<'_>, opts: &Options) -> Report {
    let mut run = Runner::new("softcap", opts);
    // One transcendental per element; outputs bounded by the cap (<= 50):
    // an f32 tanh within a few ulp is ~1e-5 absolute there.
    let tol = run.tol(Tol {
        max_abs: 4e-5,
        ..Tol::ELEMENTWISE
    });
    for &(n, cap, amp, big) in CASES {
        run.case(&format!("n={n} cap={cap} |x|<{amp}"), big, |rng| {
            let p = SoftcapParams { n, cap };
            let x = rand_f32(rng, n, -amp, amp);
            let mut want = vec![0.0; n];
            softcap_ref(&p, &x, &mut want).map_err(ref_failed)?;
            let mut out = Guarded::new(n);
            imp(&p, &x, out.as_mut_slice()).map_err(impl_failed)?;
            check_output("out", &out, &want, tol)
        });
    }
    run.case("rejects cap 0", false, |_| {
        let mut out = Guarded::new(4);
        let p = SoftcapParams { n: 4, cap: 0.0 };
        expect_reject(imp(&p, &[1.0; 4], out.as_mut_slice()), &out)
    });
    run.case("rejects out shorter than n", false, |_| {
        let mut out = Guarded::new(3);
        let p = SoftcapParams { n: 4, cap: 1.0 };
        expect_reject(imp(&p, &[1.0; 4], out.as_mut_slice()), &out)
    });
    run.finish()
}
