//! Case table and driver for `add_rows` (`x[r, c] += bias[c]`, in place).

use super::{check_output, impl_failed, ref_failed, Options, Runner};
use crate::{rand_f32, Guarded, Report, Tol};
use kiln_core::ops::add_rows::{add_rows_ref, AddRowsParams};

/// Implementation under test: `(params, x, bias)`, adding to `x` in place.
pub type AddRowsFn<'a> = dyn Fn(&AddRowsParams, &mut [f32], &[f32]) -> kiln_core::Result<()> + 'a;

/// `(rows, dim, large?)`: empty shapes, one element, odd sizes around SIMD
/// widths, Qwen2-0.5B's q (896) and k/v (128) rows for decode and a 7-token
/// prefill, a long row (past any single-block column split), and a
/// 512-token prefill.
pub const CASES: &[(usize, usize, bool)] = &[
    (0, 5, false),
    (3, 0, false),
    (1, 1, false),
    (3, 7, false),
    (17, 33, false),
    (1, 896, false),
    (1, 128, false),
    (7, 896, false),
    (7, 128, false),
    (3, 100_003, false),
    (512, 896, true),
];

/// Run every `add_rows` case against `imp`.
pub fn check_add_rows(imp: &AddRowsFn<'_>) -> Report {
    check_add_rows_with(imp, &Options::default())
}

/// [`check_add_rows`] with explicit options.
pub fn check_add_rows_with(imp: &AddRowsFn<'_>, opts: &Options) -> Report {
    let mut run = Runner::new("add_rows", opts);
    // One f32 addition per element: every backend must be bit-exact.
    let tol = run.tol(Tol::EXACT);
    for &(rows, dim, big) in CASES {
        run.case(&format!("rows={rows} dim={dim}"), big, |rng| {
            let p = AddRowsParams { rows, dim };
            let x = rand_f32(rng, rows * dim, -4.0, 4.0);
            let bias = rand_f32(rng, dim, -1.0, 1.0);
            let mut want = x.clone();
            add_rows_ref(&p, &mut want, &bias).map_err(ref_failed)?;
            let mut out = Guarded::from_slice(&x);
            imp(&p, out.as_mut_slice(), &bias).map_err(impl_failed)?;
            check_output("x", &out, &want, tol)
        });
    }
    let p = AddRowsParams { rows: 2, dim: 8 };
    let rejects = [
        ("rejects bias shorter than dim", 16, 7),
        ("rejects bias longer than dim", 16, 9),
        ("rejects x shorter than rows * dim", 15, 8),
    ];
    for (name, x_len, bias_len) in rejects {
        run.case(name, false, |rng| {
            let x = rand_f32(rng, x_len, -1.0, 1.0);
            let bias = rand_f32(rng, bias_len, -1.0, 1.0);
            let mut g = Guarded::from_slice(&x);
            match imp(&p, g.as_mut_slice(), &bias) {
                Ok(()) => Err("accepted an invalid call".to_string()),
                Err(_) if g.as_slice() != x.as_slice() => {
                    Err("returned an error but modified x (validate first)".to_string())
                }
                Err(_) => g.check_guards(),
            }
        });
    }
    run.finish()
}
