//! Case table and driver for `softmax` (scaled, max-subtracted, per row).

use super::{check_output, expect_reject, impl_failed, ref_failed, Options, Runner};
use crate::{rand_f32, Guarded, Report, Tol};
use kiln_core::ops::softmax::{softmax_ref, SoftmaxParams};
use rand::Rng;

/// Implementation under test: `(params, x, out)`.
pub type SoftmaxFn<'a> = dyn Fn(&SoftmaxParams, &[f32], &mut [f32]) -> kiln_core::Result<()> + 'a;

/// One case: shape, scale, x range ±amp, fraction of entries masked to -inf
/// (row 0 fully masked when > 0), large?
#[derive(Debug, Clone, Copy)]
pub struct SoftmaxCase {
    pub rows: usize,
    pub cols: usize,
    pub scale: f32,
    pub amp: f32,
    pub masked: f64,
    pub big: bool,
}

const fn c(rows: usize, cols: usize, scale: f32, amp: f32, masked: f64, big: bool) -> SoftmaxCase {
    SoftmaxCase {
        rows,
        cols,
        scale,
        amp,
        masked,
        big,
    }
}

/// Odd shapes, attention-score rows (scale 1/8 for head_dim 64), a
/// vocabulary-wide row (49152), very peaked rows, negative scale, and masked
/// rows including one fully masked.
pub const CASES: &[SoftmaxCase] = &[
    c(1, 1, 1.0, 4.0, 0.0, false),
    c(1, 7, 1.0, 4.0, 0.0, false),
    c(3, 33, 0.125, 4.0, 0.0, false),
    c(2, 257, 1.0, 4.0, 0.0, false),
    c(0, 5, 1.0, 4.0, 0.0, false),
    c(9, 512, 0.125, 8.0, 0.0, false),
    c(1, 49152, 1.0, 20.0, 0.0, false),
    c(4, 8193, 2.0, 4.0, 0.0, false),
    c(3, 100, 1.0, 1000.0, 0.0, false),
    c(3, 65, -0.5, 4.0, 0.0, false),
    c(5, 47, 1.0, 4.0, 0.3, false),
    c(64, 8192, 0.125, 8.0, 0.0, true),
];

/// Run every `softmax` case against `imp`.
pub fn check_softmax(imp: &SoftmaxFn<'_>) -> Report {
    check_softmax_with(imp, &Options::default())
}

/// [`check_softmax`] with explicit options.
pub fn check_softmax_with(imp: &SoftmaxFn<'_>, opts: &Options) -> Report {
    let mut run = Runner::new("softmax", opts);
    let tol = run.tol(Tol::REDUCTION);
    for cs in CASES {
        let mut name = format!(
            "rows={} cols={} scale={} |x|<{}",
            cs.rows, cs.cols, cs.scale, cs.amp
        );
        if cs.masked > 0.0 {
            name += &format!(" masked={}", cs.masked);
        }
        run.case(&name, cs.big, |rng| {
            let p = SoftmaxParams {
                rows: cs.rows,
                cols: cs.cols,
                scale: cs.scale,
            };
            let n = cs.rows * cs.cols;
            let mut x = rand_f32(rng, n, -cs.amp, cs.amp);
            if cs.masked > 0.0 {
                for (r, row) in x.chunks_mut(cs.cols).enumerate() {
                    let keep = rng.gen_range(0..cs.cols);
                    for (i, v) in row.iter_mut().enumerate() {
                        if r == 0 || (i != keep && rng.gen_bool(cs.masked)) {
                            *v = f32::NEG_INFINITY;
                        }
                    }
                }
            }
            let mut want = vec![0.0; n];
            softmax_ref(&p, &x, &mut want).map_err(ref_failed)?;
            let mut out = Guarded::new(n);
            imp(&p, &x, out.as_mut_slice()).map_err(impl_failed)?;
            check_output("out", &out, &want, tol)
        });
    }
    let p = SoftmaxParams {
        rows: 2,
        cols: 8,
        scale: 1.0,
    };
    run.case("rejects out of the wrong length", false, |_| {
        let mut out = Guarded::new(15);
        expect_reject(imp(&p, &[1.0; 16], out.as_mut_slice()), &out)
    });
    run.case("rejects a NaN scale", false, |_| {
        let mut out = Guarded::new(16);
        let bad = SoftmaxParams {
            scale: f32::NAN,
            ..p
        };
        expect_reject(imp(&bad, &[1.0; 16], out.as_mut_slice()), &out)
    });
    run.finish()
}
