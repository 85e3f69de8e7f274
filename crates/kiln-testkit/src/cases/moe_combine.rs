//! Case table and driver for `moe_combine` (spec:
//! kiln_core::ops::moe_combine): `out[t] = residual[t] + Σ_s w[t, s] ·
//! y[t·top_k + s]`. Decode and prefill shapes of Qwen-MoE (hidden 2048,
//! top-8), the shared expert's one-slot combine, top-16, odd widths, no
//! tokens, and the rejection of short buffers.

use super::{check_output, expect_reject, impl_failed, ref_failed, Options, Runner};
use crate::{rand_f32, Guarded, Report, Tol};
use kiln_core::ops::moe_combine::{moe_combine_ref, MoeCombineParams};

/// Implementation under test: `(params, y, weights, residual, out)`.
pub type MoeCombineFn<'a> =
    dyn Fn(&MoeCombineParams, &[f32], &[f32], &[f32], &mut [f32]) -> kiln_core::Result<()> + 'a;

/// The inputs keep every partial sum within 8 (|residual| <= 4, |y| <= 2,
/// weights in [0, 2 / top_k]): an f32 sum of up to 17 terms rounds at most
/// 17 times by half an ulp of 8 (4.8e-7 each), ~8e-6 against the f64
/// reference; 2e-5 leaves margin. A wrong slot or weight is off by O(0.1).
pub const TOL: Tol = Tol {
    nmse: 1e-12,
    max_abs: 2e-5,
};

/// (n_tokens, top_k, dim, large?).
pub const CASES: &[(usize, usize, usize, bool)] = &[
    (1, 1, 1, false),
    (1, 8, 2048, false),
    (3, 2, 7, false),
    (5, 4, 33, false),
    (2, 16, 257, false),
    (7, 1, 2048, false),
    (0, 8, 64, false),
    (4, 3, 0, false),
    (512, 8, 2048, true),
];

/// Run every `moe_combine` case against `imp`.
pub fn check_moe_combine(imp: &MoeCombineFn<'_>) -> Report {
    check_moe_combine_with(imp, &Options::default())
}

/// [`check_moe_combine`] with explicit options.
pub fn check_moe_combine_with(imp: &MoeCombineFn<'_>, opts: &Options) -> Report {
    let mut run = Runner::new("moe_combine", opts);
    let tol = run.tol(TOL);
    for &(n_tokens, top_k, dim, big) in CASES {
        let name = format!("tokens={n_tokens} top_k={top_k} dim={dim}");
        run.case(&name, big, |rng| {
            let p = MoeCombineParams {
                n_tokens,
                top_k,
                dim,
            };
            let rows = n_tokens * top_k;
            let y = rand_f32(rng, rows * dim, -2.0, 2.0);
            let w = rand_f32(rng, rows, 0.0, 2.0 / top_k as f32);
            let res = rand_f32(rng, n_tokens * dim, -4.0, 4.0);
            let mut want = vec![0.0; n_tokens * dim];
            moe_combine_ref(&p, &y, &w, &res, &mut want).map_err(ref_failed)?;
            let mut out = Guarded::new(n_tokens * dim);
            imp(&p, &y, &w, &res, out.as_mut_slice()).map_err(impl_failed)?;
            check_output("out", &out, &want, tol)
        });
    }
    let p = MoeCombineParams {
        n_tokens: 2,
        top_k: 2,
        dim: 8,
    };
    let rejects: [(&str, usize, usize, usize, usize); 4] = [
        ("rejects y shorter than rows * dim", 31, 4, 16, 16),
        ("rejects weights shorter than rows", 32, 3, 16, 16),
        ("rejects residual shorter than tokens * dim", 32, 4, 15, 16),
        ("rejects out shorter than tokens * dim", 32, 4, 16, 15),
    ];
    for (name, ny, nw, nr, no) in rejects {
        run.case(name, false, |_| {
            let mut out = Guarded::new(no);
            expect_reject(
                imp(
                    &p,
                    &vec![1.0; ny],
                    &vec![0.5; nw],
                    &vec![1.0; nr],
                    out.as_mut_slice(),
                ),
                &out,
            )
        });
    }
    run.case("rejects top_k = 0", false, |_| {
        let mut out = Guarded::new(16);
        let q = MoeCombineParams { top_k: 0, ..p };
        expect_reject(imp(&q, &[], &[], &[1.0; 16], out.as_mut_slice()), &out)
    });
    run.finish()
}
