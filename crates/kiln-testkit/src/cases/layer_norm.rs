//! Case table and driver for `layer_norm` (with and without weight / bias).

use super::{check_output, expect_reject, impl_failed, ref_failed, Options, Runner};
use crate::{rand_f32, Guarded, Report, Tol};
use kiln_core::ops::layer_norm::{layer_norm_ref, LayerNormParams};

/// Implementation under test: `(params, x, w, b, out)`.
pub type LayerNormFn<'a> = dyn Fn(
        &LayerNormParams,
        &[f32],
        Option<&[f32]>,
        Option<&[f32]>,
        &mut [f32],
    ) -> kiln_core::Result<()>
    + 'a;

/// One case: shape, eps, x = offset ± amplitude, which of weight / bias
/// are given, large?
#[derive(Debug, Clone, Copy)]
pub struct LayerNormCase {
    pub rows: usize,
    pub dim: usize,
    pub eps: f32,
    pub offset: f32,
    pub amp: f32,
    pub weight: bool,
    pub bias: bool,
    pub big: bool,
}

const fn c(rows: usize, dim: usize, offset: f32, amp: f32, wb: (bool, bool)) -> LayerNormCase {
    LayerNormCase {
        rows,
        dim,
        eps: 1e-5,
        offset,
        amp,
        weight: wb.0,
        bias: wb.1,
        big: false,
    }
}

/// Odd shapes; GPT-2 / Phi widths (768, 2560) for decode and a prefill;
/// rows with a large common offset (the variance must not cancel);
/// near-constant rows where eps dominates; every weight/bias combination.
pub const CASES: &[LayerNormCase] = &[
    c(1, 1, 0.0, 3.0, (true, true)),
    c(1, 7, 0.0, 3.0, (true, false)),
    LayerNormCase {
        eps: 1e-6,
        ..c(3, 33, 0.0, 3.0, (false, true))
    },
    c(2, 257, 0.0, 3.0, (false, false)),
    c(0, 64, 0.0, 3.0, (true, true)),
    c(1, 768, 0.0, 3.0, (true, true)),
    c(7, 2560, 0.0, 3.0, (true, true)),
    c(3, 577, 100.0, 1.0, (true, true)),
    LayerNormCase {
        eps: 1e-2,
        ..c(3, 96, 0.0, 1e-3, (true, true))
    },
    c(2, 8193, 0.0, 3.0, (true, false)),
    LayerNormCase {
        big: true,
        ..c(512, 768, 0.0, 3.0, (true, true))
    },
];

/// Run every `layer_norm` case against `imp`.
pub fn check_layer_norm(imp: &LayerNormFn<'_>) -> Report {
    check_layer_norm_with(imp, &Options::default())
}

/// [`check_layer_norm`] with explicit options.
pub fn check_layer_norm_with(imp: &LayerNormFn<'_>, opts: &Options) -> Report {
    let mut run = Runner::new("layer_norm", opts);
    // A row reduction (mean, variance) then one scaling per element.
    let tol = run.tol(Tol::REDUCTION);
    for cs in CASES {
        let LayerNormCase {
            rows,
            dim,
            eps,
            offset: off,
            amp,
            weight: has_w,
            bias: has_b,
            big,
        } = *cs;
        let name = format!("rows={rows} dim={dim} eps={eps:e} x={off}±{amp} w={has_w} b={has_b}");
        run.case(&name, big, |rng| {
            let p = LayerNormParams { rows, dim, eps };
            let n = rows * dim;
            let x: Vec<f32> = rand_f32(rng, n, -amp, amp)
                .into_iter()
                .map(|v| v + off)
                .collect();
            let w = has_w.then(|| rand_f32(rng, dim, -2.0, 2.0));
            let b = has_b.then(|| rand_f32(rng, dim, -1.0, 1.0));
            let mut want = vec![0.0; n];
            layer_norm_ref(&p, &x, w.as_deref(), b.as_deref(), &mut want).map_err(ref_failed)?;
            let mut out = Guarded::new(n);
            imp(&p, &x, w.as_deref(), b.as_deref(), out.as_mut_slice()).map_err(impl_failed)?;
            check_output("out", &out, &want, tol)
        });
    }
    let p = LayerNormParams {
        rows: 2,
        dim: 8,
        eps: 1e-5,
    };
    run.case("rejects w of the wrong length", false, |_| {
        let mut out = Guarded::new(16);
        let r = imp(&p, &[1.0; 16], Some(&[1.0; 7]), None, out.as_mut_slice());
        expect_reject(r, &out)
    });
    run.case("rejects b of the wrong length", false, |_| {
        let mut out = Guarded::new(16);
        let r = imp(&p, &[1.0; 16], None, Some(&[1.0; 9]), out.as_mut_slice());
        expect_reject(r, &out)
    });
    run.case("rejects a NaN eps", false, |_| {
        let mut out = Guarded::new(16);
        let bad = LayerNormParams { eps: f32::NAN, ..p };
        expect_reject(imp(&bad, &[1.0; 16], None, None, out.as_mut_slice()), &out)
    });
    run.finish()
}
