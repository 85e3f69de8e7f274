//! Case table and driver for `rms_norm`.

use super::{check_output, expect_reject, impl_failed, ref_failed, Options, Runner};
use crate::{rand_f32, Guarded, Report, Tol};
use kiln_core::ops::rms_norm::{rms_norm_ref, RmsNormParams};

/// Implementation under test: `(params, x, w, out)`.
pub type RmsNormFn<'a> =
    dyn Fn(&RmsNormParams, &[f32], &[f32], &mut [f32]) -> kiln_core::Result<()> + 'a;

/// One case: shape, eps, x magnitude (uniform in ±amp), large?
#[derive(Debug, Clone, Copy)]
pub struct RmsNormCase {
    pub rows: usize,
    pub dim: usize,
    pub eps: f32,
    pub amp: f32,
    pub big: bool,
}

const fn c(rows: usize, dim: usize, eps: f32, amp: f32, big: bool) -> RmsNormCase {
    RmsNormCase {
        rows,
        dim,
        eps,
        amp,
        big,
    }
}

/// Odd shapes; SmolLM2 (dim 576, eps 1e-5) for decode, 7 tokens and a
/// 512-token prefill; tiny inputs where eps dominates; large inputs; Gemma 3
/// 270M (eps 1e-6): the model dim 640, and the per-head q/k norms as rows of
/// head_dim 256 (7 tokens x 4 q heads) with one shared weight vector.
pub const CASES: &[RmsNormCase] = &[
    c(1, 1, 1e-5, 3.0, false),
    c(1, 7, 1e-5, 3.0, false),
    c(3, 33, 1e-6, 3.0, false),
    c(2, 257, 1e-5, 3.0, false),
    c(0, 64, 1e-5, 3.0, false),
    c(1, 576, 1e-5, 3.0, false),
    c(7, 576, 1e-5, 3.0, false),
    c(5, 1536, 1e-5, 3.0, false),
    c(3, 576, 1e-5, 1e-3, false),
    c(3, 577, 0.0, 1e3, false),
    c(2, 8193, 1e-5, 3.0, false),
    c(3, 640, 1e-6, 3.0, false),
    c(7 * 4, 256, 1e-6, 3.0, false),
    c(512, 576, 1e-5, 3.0, true),
];

/// Run every `rms_norm` case against `imp`.
pub fn check_rms_norm(imp: &RmsNormFn<'_>) -> Report {
    check_rms_norm_with(imp, &Options::default())
}

/// [`check_rms_norm`] with explicit options.
pub fn check_rms_norm_with(imp: &RmsNormFn<'_>, opts: &Options) -> Report {
    let mut run = Runner::new("rms_norm", opts);
    let tol = run.tol(Tol::REDUCTION);
    for cs in CASES {
        let name = format!(
            "rows={} dim={} eps={:e} |x|<{}",
            cs.rows, cs.dim, cs.eps, cs.amp
        );
        run.case(&name, cs.big, |rng| {
            let p = RmsNormParams {
                rows: cs.rows,
                dim: cs.dim,
                eps: cs.eps,
            };
            let n = cs.rows * cs.dim;
            let x = rand_f32(rng, n, -cs.amp, cs.amp);
            let w = rand_f32(rng, cs.dim, -2.0, 2.0);
            let mut want = vec![0.0; n];
            rms_norm_ref(&p, &x, &w, &mut want).map_err(ref_failed)?;
            let mut out = Guarded::new(n);
            imp(&p, &x, &w, out.as_mut_slice()).map_err(impl_failed)?;
            check_output("out", &out, &want, tol)
        });
    }
    let p = RmsNormParams {
        rows: 2,
        dim: 8,
        eps: 1e-5,
    };
    run.case("rejects w of the wrong length", false, |_| {
        let mut out = Guarded::new(16);
        expect_reject(imp(&p, &[1.0; 16], &[1.0; 7], out.as_mut_slice()), &out)
    });
    run.case("rejects negative eps", false, |_| {
        let mut out = Guarded::new(16);
        let bad = RmsNormParams { eps: -1.0, ..p };
        expect_reject(imp(&bad, &[1.0; 16], &[1.0; 8], out.as_mut_slice()), &out)
    });
    run.case("rejects dim 0", false, |_| {
        let mut out = Guarded::new(0);
        let bad = RmsNormParams { dim: 0, ..p };
        expect_reject(imp(&bad, &[], &[], out.as_mut_slice()), &out)
    });
    run.finish()
}
