//! Case table and driver for `moe_route` (spec: kiln_core::ops::moe_route).
//!
//! Logits are a random permutation of a grid of distinct values in
//! [-4, 4) (so scores never tie and neighbours differ by far more than f32
//! rounding), biases are whole numbers (selection order = bias, then score:
//! no near-ties either); ids must then match the reference exactly, and
//! weights within [`WEIGHT_TOL`] times max(1, routed_scaling).

use super::{impl_failed, ref_failed, Options, Runner};
use crate::Report;
use kiln_core::ops::moe_route::{moe_route_ref, MoeRouteParams, MoeScoring};
use rand::seq::SliceRandom;
use rand::Rng;

/// f32 softmax / sigmoid against f64: a few ulps of values <= 1 after a
/// normalisation, far below 1e-5.
pub const WEIGHT_TOL: f32 = 1e-5;

/// Implementation under test: `(params, logits, bias, ids, weights)`.
pub type MoeRouteFn<'a> = dyn Fn(&MoeRouteParams, &[f32], Option<&[f32]>, &mut [u32], &mut [f32]) -> kiln_core::Result<()>
    + 'a;

/// (name, params with n_tokens, with bias).
fn cases() -> Vec<(&'static str, MoeRouteParams, bool)> {
    let sm = MoeRouteParams::softmax_topk;
    let ds = |n_tokens, n_experts, top_k, n_group, topk_group| MoeRouteParams {
        n_tokens,
        n_experts,
        top_k,
        scoring: MoeScoring::Sigmoid,
        norm_topk: true,
        n_group,
        topk_group,
        routed_scaling: 2.5,
    };
    vec![
        ("mixtral 8 top-2", sm(5, 8, 2, true), false),
        ("qwen3moe 128 top-8", sm(3, 128, 8, true), false),
        ("qwen2moe 60 top-4 unnormalized", sm(4, 60, 4, false), false),
        ("top-1 of 1", sm(2, 1, 1, true), false),
        ("top-16 of 512", sm(2, 512, 16, true), false),
        ("prefill 100 tokens (threads)", sm(100, 64, 6, true), false),
        (
            "deepseek-v3 256 top-8, 8 groups keep 4",
            ds(3, 256, 8, 8, 4),
            true,
        ),
        ("sigmoid ungrouped with bias", ds(4, 32, 3, 1, 1), true),
        ("groups of one expert", ds(2, 16, 4, 16, 5), true),
        ("odd: 9 experts, 3 groups keep 1", ds(7, 9, 2, 3, 1), false),
    ]
}

pub fn check_moe_route(imp: &MoeRouteFn<'_>) -> Report {
    check_moe_route_with(imp, &Options::default())
}

pub fn check_moe_route_with(imp: &MoeRouteFn<'_>, opts: &Options) -> Report {
    let mut run = Runner::new("moe_route", opts);
    for (name, p, with_bias) in cases() {
        run.case(name, false, |rng| {
            let ne = p.n_experts;
            let mut logits = Vec::with_capacity(p.n_tokens * ne);
            for _ in 0..p.n_tokens {
                let mut grid: Vec<f32> =
                    (0..ne).map(|i| -4.0 + 8.0 * i as f32 / ne as f32).collect();
                grid.shuffle(rng);
                logits.extend(grid);
            }
            let bias: Option<Vec<f32>> =
                with_bias.then(|| (0..ne).map(|_| rng.gen_range(0..3) as f32).collect());
            let n = p.n_tokens * p.top_k;
            let (mut want_i, mut want_w) = (vec![0u32; n], vec![0.0f32; n]);
            moe_route_ref(&p, &logits, bias.as_deref(), &mut want_i, &mut want_w)
                .map_err(ref_failed)?;
            let (mut ids, mut w) = (vec![u32::MAX; n], vec![f32::NAN; n]);
            imp(&p, &logits, bias.as_deref(), &mut ids, &mut w).map_err(impl_failed)?;
            if ids != want_i {
                return Err(format!("ids {ids:?} want {want_i:?}"));
            }
            let tol = WEIGHT_TOL * p.routed_scaling.max(1.0);
            match w
                .iter()
                .zip(&want_w)
                .position(|(g, r)| (g - r).abs() > tol || g.is_nan())
            {
                Some(i) => Err(format!("weights[{i}] {} want {}", w[i], want_w[i])),
                None => Ok(()),
            }
        });
    }
    run.case("non-finite logit", false, |_| {
        let p = MoeRouteParams::softmax_topk(2, 4, 2, true);
        let mut logits = vec![0.5f32; 8];
        logits[6] = f32::INFINITY;
        let (mut ids, mut w) = (vec![u32::MAX; 4], vec![f32::NAN; 4]);
        match imp(&p, &logits, None, &mut ids, &mut w) {
            Ok(()) => Err("accepted an infinite logit".into()),
            Err(e) if e.to_string().contains("token 1 expert 2") => Ok(()),
            Err(e) => Err(format!("error does not name token 1 expert 2: {e}")),
        }
    });
    run.finish()
}
