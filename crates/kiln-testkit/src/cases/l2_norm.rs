//! Case table and driver for `l2_norm`.

use super::{check_output, expect_reject, impl_failed, ref_failed, Options, Runner};
use crate::{rand_f32, Guarded, Report, Tol};
use kiln_core::ops::l2_norm::{l2_norm_ref, L2NormParams};

/// Implementation under test: `(params, x, out)`.
pub type L2NormFn<'a> = dyn Fn(&L2NormParams, &[f32], &mut [f32]) -> kiln_core::Result<()> + 'a;

/// (rows, dim, eps, x amplitude, large?): odd shapes, head-sized rows
/// (128 per head, 7 tokens × 16 heads), rows shorter than eps (scaled by
/// 1/eps instead), large inputs.
pub const CASES: &[(usize, usize, f32, f32, bool)] = &[
    (1, 1, 1e-6, 3.0, false),
    (1, 7, 1e-6, 3.0, false),
    (3, 33, 1e-12, 3.0, false),
    (0, 64, 1e-6, 3.0, false),
    (7 * 16, 128, 1e-6, 3.0, false),
    (3, 64, 1e-2, 1e-5, false),
    (2, 577, 1e-6, 1e3, false),
    (2, 8193, 1e-6, 3.0, false),
    (512 * 16, 128, 1e-6, 3.0, true),
];

/// Run every `l2_norm` case against `imp`.
pub fn check_l2_norm(imp: &L2NormFn<'_>) -> Report {
    check_l2_norm_with(imp, &Options::default())
}

/// [`check_l2_norm`] with explicit options.
pub fn check_l2_norm_with(imp: &L2NormFn<'_>, opts: &Options) -> Report {
    let mut run = Runner::new("l2_norm", opts);
    let tol = run.tol(Tol::REDUCTION);
    for &(rows, dim, eps, amp, big) in CASES {
        run.case(
            &format!("rows={rows} dim={dim} eps={eps:e} |x|<{amp}"),
            big,
            |rng| {
                let p = L2NormParams { rows, dim, eps };
                let n = rows * dim;
                let x = rand_f32(rng, n, -amp, amp);
                let mut want = vec![0.0; n];
                l2_norm_ref(&p, &x, &mut want).map_err(ref_failed)?;
                let mut out = Guarded::new(n);
                imp(&p, &x, out.as_mut_slice()).map_err(impl_failed)?;
                check_output("out", &out, &want, tol)
            },
        );
    }
    run.case("rejects eps 0", false, |_| {
        let mut out = Guarded::new(8);
        let p = L2NormParams {
            rows: 1,
            dim: 8,
            eps: 0.0,
        };
        expect_reject(imp(&p, &[1.0; 8], out.as_mut_slice()), &out)
    });
    run.case("rejects out shorter than rows x dim", false, |_| {
        let mut out = Guarded::new(15);
        let p = L2NormParams {
            rows: 2,
            dim: 8,
            eps: 1e-6,
        };
        expect_reject(imp(&p, &[1.0; 16], out.as_mut_slice()), &out)
    });
    run.finish()
}
