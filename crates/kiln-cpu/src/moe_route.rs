//! moe_route on the CPU (spec: [`kiln_core::ops::moe_route`]): the same
//! steps in f32, with a running top-k list instead of repeated scans;
//! tokens spread over the pool for prefill-sized batches.

use crate::CpuContext;
use kiln_core::ops::moe_route::{MoeRouteParams, MoeScoring};
use kiln_core::{Error, Result};
use rayon::prelude::*;

/// Below this many tokens one thread routes them all.
const PAR_MIN_TOKENS: usize = 64;

/// Insert `(v, e)` into `top` (descending by v, ties to the lower e; at
/// most `k` entries). Entries arrive in ascending e.
fn push_top(top: &mut Vec<(f32, usize)>, k: usize, v: f32, e: usize) {
    if top.len() == k && top.last().is_some_and(|&(lv, _)| v <= lv) {
        return;
    }
    let at = top.iter().position(|&(tv, _)| v > tv).unwrap_or(top.len());
    top.insert(at, (v, e));
    top.truncate(k);
}

struct Scratch {
    score: Vec<f32>,
    sel: Vec<f32>,
    top: Vec<(f32, usize)>,
    groups: Vec<(f32, usize)>,
}

fn token(
    p: &MoeRouteParams,
    logits: &[f32],
    bias: Option<&[f32]>,
    ids: &mut [u32],
    weights: &mut [f32],
    s: &mut Scratch,
) -> Result<()> {
    let ne = p.n_experts;
    s.score.clear();
    match p.scoring {
        MoeScoring::Softmax => {
            let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            s.score.extend(logits.iter().map(|&v| (v - m).exp()));
            let inv = 1.0 / s.score.iter().sum::<f32>();
            s.score.iter_mut().for_each(|v| *v *= inv);
        }
        MoeScoring::Sigmoid => s
            .score
            .extend(logits.iter().map(|&v| 1.0 / (1.0 + (-v).exp()))),
    }
    s.sel.clear();
    match bias {
        Some(b) => s.sel.extend(s.score.iter().zip(b).map(|(a, b)| a + b)),
        None => s.sel.extend_from_slice(&s.score),
    }
    s.top.clear();
    if p.n_group > 1 {
        let gs = ne / p.n_group;
        s.groups.clear();
        for g in 0..p.n_group {
            let mut two = Vec::with_capacity(2);
            for (i, &v) in s.sel[g * gs..][..gs].iter().enumerate() {
                push_top(&mut two, 2, v, i);
            }
            let gscore: f32 = two.iter().map(|&(v, _)| v).sum();
            push_top(&mut s.groups, p.topk_group, gscore, g);
        }
        let mut keep: Vec<usize> = s.groups.iter().map(|&(_, g)| g).collect();
        keep.sort_unstable();
        for g in keep {
            for e in g * gs..(g + 1) * gs {
                push_top(&mut s.top, p.top_k, s.sel[e], e);
            }
        }
    } else {
        for (e, &v) in s.sel.iter().enumerate() {
            push_top(&mut s.top, p.top_k, v, e);
        }
    }
    let mut sum = 0.0f32;
    for (slot, &(_, e)) in s.top.iter().enumerate() {
        ids[slot] = e as u32;
        weights[slot] = s.score[e];
        sum += s.score[e];
    }
    let scale = if p.norm_topk {
        if sum <= 0.0 {
            return Err(Error::invalid(
                "moe_route",
                format!("chosen weights sum to {sum}"),
            ));
        }
        p.routed_scaling / sum
    } else {
        p.routed_scaling
    };
    weights.iter_mut().for_each(|w| *w *= scale);
    Ok(())
}

/// Route `logits: [n_tokens, n_experts]` into `ids`, `weights`: `[n_tokens, top_k]`.
pub fn moe_route(
    ctx: &CpuContext,
    p: &MoeRouteParams,
    logits: &[f32],
    bias: Option<&[f32]>,
    ids: &mut [u32],
    weights: &mut [f32],
) -> Result<()> {
    p.validate(
        logits.len(),
        bias.map_or(0, <[f32]>::len),
        ids.len(),
        weights.len(),
    )?;
    p.check_finite(logits, bias)?;
    let (ne, k) = (p.n_experts, p.top_k);
    if p.n_tokens == 0 {
        return Ok(());
    }
    let new = || Scratch {
        score: Vec::with_capacity(ne),
        sel: Vec::with_capacity(ne),
        top: Vec::with_capacity(k + 1),
        groups: Vec::with_capacity(p.n_group + 1),
    };
    let work = logits
        .chunks_exact(ne)
        .zip(ids.chunks_exact_mut(k).zip(weights.chunks_exact_mut(k)));
    if p.n_tokens < PAR_MIN_TOKENS || ctx.threads() == 1 {
        let mut s = new();
        for (l, (i, w)) in work {
            token(p, l, bias, i, w, &mut s)?;
        }
        Ok(())
    } else {
        ctx.pool().install(|| {
            logits
                .par_chunks_exact(ne)
                .zip(
                    ids.par_chunks_exact_mut(k)
                        .zip(weights.par_chunks_exact_mut(k)),
                )
                .try_for_each_init(new, |s, (l, (i, w))| token(p, l, bias, i, w, s))
        })
    }
}
