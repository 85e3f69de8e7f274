//! moe_route: pick each token's experts and their weights from the router
//! logits `[n_tokens, n_experts]`, as mixture-of-experts models do
//! (Mixtral, Qwen2-MoE / Qwen3-MoE: softmax then top-k; DeepSeek-V3's
//! `noaux_tc`: sigmoid scores, a selection bias, grouped top-k and a routed
//! scaling factor). Outputs `ids` and `weights`, both `[n_tokens, top_k]`,
//! slots ordered by descending selection score (ties: lower expert first).
//!
//! Per token:
//! 1. `score[e] = softmax(logits)[e]` ([`MoeScoring::Softmax`]) or
//!    `sigmoid(logits[e])` ([`MoeScoring::Sigmoid`]).
//! 2. Selection score `sel[e] = score[e] + bias[e]` (bias optional, e.g.
//!    DeepSeek-V3's `e_score_correction_bias`; it steers the choice only).
//! 3. With `n_group > 1` experts form `n_group` equal groups of consecutive
//!    indices; a group's score is the sum of its two largest `sel` (its one
//!    `sel` for groups of one expert); only the `topk_group` best groups stay
//!    eligible.
//! 4. The `top_k` eligible experts with the largest `sel` are chosen; their
//!    weights are `score[e]` (without the bias), divided by their sum when
//!    `norm_topk` (the sum of positive scores is never 0 for softmax and
//!    sigmoid; a zero sum is an error), then multiplied by `routed_scaling`.
//!
//! Validation: `1 <= top_k <= n_experts <= MAX_EXPERTS`, `top_k <=
//! MAX_TOP_K`, `n_group` divides `n_experts`, `1 <= topk_group <= n_group`,
//! `top_k <= topk_group * n_experts / n_group`, finite `routed_scaling`,
//! finite logits and bias (a non-finite value is an error naming the
//! token and expert), lengths.

use crate::error::check_len;
use crate::{Error, Result};

const OP: &str = "moe_route";

/// Largest expert count supported.
pub const MAX_EXPERTS: usize = 512;
/// Largest number of experts per token.
pub const MAX_TOP_K: usize = 16;

/// How router logits become scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MoeScoring {
    Softmax,
    Sigmoid,
}

/// Params of [`moe_route_ref`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MoeRouteParams {
    pub n_tokens: usize,
    pub n_experts: usize,
    pub top_k: usize,
    pub scoring: MoeScoring,
    /// Renormalize the chosen weights to sum to 1.
    pub norm_topk: bool,
    /// Expert groups (1: no grouping).
    pub n_group: usize,
    /// Groups that stay eligible (`n_group` when not grouping).
    pub topk_group: usize,
    /// Factor applied to the final weights (1 for most models).
    pub routed_scaling: f32,
}

impl MoeRouteParams {
    /// Plain softmax → top-k routing (Mixtral, Qwen-MoE).
    pub fn softmax_topk(n_tokens: usize, n_experts: usize, top_k: usize, norm_topk: bool) -> Self {
        MoeRouteParams {
            n_tokens,
            n_experts,
            top_k,
            scoring: MoeScoring::Softmax,
            norm_topk,
            n_group: 1,
            topk_group: 1,
            routed_scaling: 1.0,
        }
    }

    /// See the module docs. `bias_len`: 0 when there is no bias.
    pub fn validate(
        &self,
        logits_len: usize,
        bias_len: usize,
        ids_len: usize,
        w_len: usize,
    ) -> Result<()> {
        let bad = |m: String| Err(Error::invalid(OP, m));
        if self.n_experts == 0 || self.n_experts > MAX_EXPERTS {
            return bad(format!(
                "n_experts {} must be in 1..={MAX_EXPERTS}",
                self.n_experts
            ));
        }
        if self.top_k == 0 || self.top_k > self.n_experts.min(MAX_TOP_K) {
            return bad(format!(
                "top_k {} must be in 1..={} (n_experts {}, at most {MAX_TOP_K})",
                self.top_k,
                self.n_experts.min(MAX_TOP_K),
                self.n_experts
            ));
        }
        if self.n_group == 0 || !self.n_experts.is_multiple_of(self.n_group) {
            return bad(format!(
                "n_group {} must divide n_experts {}",
                self.n_group, self.n_experts
            ));
        }
        if self.n_group > 1 {
            if self.topk_group == 0 || self.topk_group > self.n_group {
                return bad(format!(
                    "topk_group {} must be in 1..={} (n_group)",
                    self.topk_group, self.n_group
                ));
            }
            let eligible = self.topk_group * (self.n_experts / self.n_group);
            if self.top_k > eligible {
                return bad(format!(
                    "top_k {} exceeds the {eligible} experts of {} groups",
                    self.top_k, self.topk_group
                ));
            }
        }
        if !self.routed_scaling.is_finite() {
            return bad(format!(
                "routed_scaling {} is not finite",
                self.routed_scaling
            ));
        }
        let cells = |a: usize, b: usize| {
            a.checked_mul(b)
                .ok_or_else(|| Error::invalid(OP, "n_tokens * width overflows"))
        };
        check_len(
            OP,
            "logits",
            logits_len,
            cells(self.n_tokens, self.n_experts)?,
        )?;
        if bias_len != 0 {
            check_len(OP, "bias", bias_len, self.n_experts)?;
        }
        check_len(OP, "ids", ids_len, cells(self.n_tokens, self.top_k)?)?;
        check_len(OP, "weights", w_len, cells(self.n_tokens, self.top_k)?)
    }

    /// Finite logits and bias (errors name the token and expert).
    pub fn check_finite(&self, logits: &[f32], bias: Option<&[f32]>) -> Result<()> {
        if let Some(i) = logits.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(
                OP,
                format!(
                    "logit of token {} expert {} is {}",
                    i / self.n_experts,
                    i % self.n_experts,
                    logits[i]
                ),
            ));
        }
        if let Some(b) = bias {
            if let Some(e) = b.iter().position(|v| !v.is_finite()) {
                return Err(Error::invalid(
                    OP,
                    format!("bias of expert {e} is {}", b[e]),
                ));
            }
        }
        Ok(())
    }
}

/// Indices of the `k` largest `v` among `eligible`, descending, ties to the
/// lower index (O(n k), for the reference).
fn top_indices(v: &[f64], eligible: &[bool], k: usize) -> Vec<usize> {
    let mut taken = vec![false; v.len()];
    let mut out = Vec::with_capacity(k);
    for _ in 0..k {
        let mut best: Option<usize> = None;
        for (e, &x) in v.iter().enumerate() {
            if taken[e] || !eligible[e] {
                continue;
            }
            if best.is_none_or(|b| x > v[b]) {
                best = Some(e);
            }
        }
        if let Some(b) = best {
            taken[b] = true;
            out.push(b);
        }
    }
    out
}

/// Reference, in f64.
pub fn moe_route_ref(
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
    for t in 0..p.n_tokens {
        let l: Vec<f64> = logits[t * ne..][..ne]
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        let score: Vec<f64> = match p.scoring {
            MoeScoring::Softmax => {
                let m = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = l.iter().map(|v| (v - m).exp()).collect();
                let s: f64 = e.iter().sum();
                e.iter().map(|v| v / s).collect()
            }
            MoeScoring::Sigmoid => l.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect(),
        };
        let sel: Vec<f64> = match bias {
            Some(b) => score
                .iter()
                .zip(b)
                .map(|(s, &b)| s + f64::from(b))
                .collect(),
            None => score.clone(),
        };
        let mut eligible = vec![true; ne];
        if p.n_group > 1 {
            let gs = ne / p.n_group;
            let gscore: Vec<f64> = (0..p.n_group)
                .map(|g| {
                    let all = vec![true; gs];
                    let top = top_indices(&sel[g * gs..][..gs], &all, 2.min(gs));
                    top.iter().map(|&i| sel[g * gs + i]).sum()
                })
                .collect();
            let keep = top_indices(&gscore, &vec![true; p.n_group], p.topk_group);
            for (e, el) in eligible.iter_mut().enumerate() {
                *el = keep.contains(&(e / gs));
            }
        }
        let chosen = top_indices(&sel, &eligible, k);
        let mut w: Vec<f64> = chosen.iter().map(|&e| score[e]).collect();
        if p.norm_topk {
            let s: f64 = w.iter().sum();
            if s <= 0.0 {
                return Err(Error::invalid(
                    OP,
                    format!("token {t}: chosen weights sum to {s}"),
                ));
            }
            w.iter_mut().for_each(|v| *v /= s);
        }
        for (slot, (&e, &wv)) in chosen.iter().zip(&w).enumerate() {
            ids[t * k + slot] = e as u32;
            weights[t * k + slot] = (wv * f64::from(p.routed_scaling)) as f32;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn softmax_topk_by_hand() {
        let p = MoeRouteParams::softmax_topk(1, 4, 2, true);
        let logits = [0.0f32, 2.0, 1.0, 2.0];
        let (mut ids, mut w) = ([0u32; 2], [0.0f32; 2]);
        moe_route_ref(&p, &logits, None, &mut ids, &mut w).unwrap();
        assert_eq!(ids, [1, 3], "tie goes to the lower expert first");
        assert!((w[0] - 0.5).abs() < 1e-7 && (w[1] - 0.5).abs() < 1e-7);
        let p = MoeRouteParams::softmax_topk(1, 4, 2, false);
        moe_route_ref(&p, &logits, None, &mut ids, &mut w).unwrap();
        let z = 1.0 + 2.0 * 2f64.exp() + 1f64.exp();
        assert!((f64::from(w[0]) - 2f64.exp() / z).abs() < 1e-7);
    }

    /// 8 experts in 4 groups of 2, keep 2 groups, top 3, sigmoid + bias,
    /// scaled by 2.5: the bias moves expert 6 ahead, group scores pick
    /// groups 3 and 0 (group 2 holds the largest logit but loses), and the
    /// weights are the unbiased sigmoids.
    #[test]
    fn grouped_sigmoid_by_hand() {
        let p = MoeRouteParams {
            n_tokens: 1,
            n_experts: 8,
            top_k: 3,
            scoring: MoeScoring::Sigmoid,
            norm_topk: true,
            n_group: 4,
            topk_group: 2,
            routed_scaling: 2.5,
        };
        let logits = [1.0f32, 0.5, 0.0, 0.0, -1.0, 2.0, 0.2, 0.3];
        let bias = [0.0f32, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0];
        let (mut ids, mut w) = ([0u32; 3], [0.0f32; 3]);
        moe_route_ref(&p, &logits, Some(&bias), &mut ids, &mut w).unwrap();
        let sg = |x: f64| 1.0 / (1.0 + (-x).exp());
        // Group sums of sel: g0 sg(1)+sg(.5) = 1.353, g1 1.0, g2 sg(-1)+sg(2) = 1.150,
        // g3 sg(.2)+1+sg(.3) = 2.124: keep g3, g0. Top 3 of {0, 1, 6, 7} by sel:
        // 6 (1.550), 0 (0.731), 1 (0.622); 7 (0.574) misses out.
        assert_eq!(ids, [6, 0, 1]);
        let raw = [sg(0.2), sg(1.0), sg(0.5)];
        let s: f64 = raw.iter().sum();
        for (g, r) in w.iter().zip(raw) {
            assert!((f64::from(*g) - 2.5 * r / s).abs() < 1e-6);
        }
    }

    #[test]
    fn rejections() {
        let p = MoeRouteParams::softmax_topk(1, 4, 2, true);
        let (mut ids, mut w) = ([0u32; 2], [0.0f32; 2]);
        let e = moe_route_ref(&p, &[0.0, f32::NAN, 0.0, 0.0], None, &mut ids, &mut w).unwrap_err();
        assert!(e.to_string().contains("token 0 expert 1"), "{e}");
        let bad = |q: MoeRouteParams, needle: &str| {
            let e = q
                .validate(4 * q.n_tokens, 0, q.top_k, q.top_k)
                .unwrap_err()
                .to_string();
            assert!(e.contains("moe_route") && e.contains(needle), "{e}");
        };
        bad(MoeRouteParams { top_k: 5, ..p }, "top_k");
        bad(MoeRouteParams { top_k: 0, ..p }, "top_k");
        bad(MoeRouteParams { n_group: 3, ..p }, "n_group");
        bad(
            MoeRouteParams {
                n_group: 2,
                topk_group: 3,
                ..p
            },
            "topk_group",
        );
        bad(
            MoeRouteParams {
                n_group: 4,
                topk_group: 1,
                ..p
            },
            "exceeds",
        );
        bad(
            MoeRouteParams {
                routed_scaling: f32::NAN,
                ..p
            },
            "routed_scaling",
        );
        assert!(p.validate(4, 3, 2, 2).is_err(), "bias length");
        let big = MoeRouteParams::softmax_topk(1, 513, 2, true);
        assert!(big.validate(513, 0, 2, 2).is_err());
        let k17 = MoeRouteParams::softmax_topk(1, 64, 17, true);
        assert!(k17.validate(64, 0, 17, 17).is_err());
    }
}
