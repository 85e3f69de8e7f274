//! attention: causal scaled-dot-product attention with grouped-query heads
//! over a KV cache.
//!
//! - `q: [n_tokens, n_heads, head_dim]` — query `t` sits at position `pos0 + t`.
//! - `k, v: [kv_stride, n_kv_heads, head_dim]` — the cache, of capacity
//!   `kv_stride` rows; position `j`'s keys are in row `j % kv_stride`
//!   ([`AttentionParams::kv_row`]), and positions `0..pos0 + n_tokens` have
//!   been appended (the current tokens' keys included).
//! - Usually `pos0 + n_tokens <= kv_stride`, so row `j` holds position `j`.
//!   With a sliding window `w` the cache may be a ring buffer of fewer rows
//!   (llama.cpp's SWA cache): positions past `kv_stride` wrap, overwriting
//!   keys no query will see again. Every key a query of the call sees is
//!   still in place iff `w + n_tokens - 1 <= kv_stride` (the first query's
//!   oldest key must outlive the batch's own appends), which
//!   [`AttentionParams::validate`] requires whenever the positions wrap.
//! - query `t` (position `i = pos0 + t`) attends keys `0..=i`, or with a
//!   sliding window `w` the last `w` of them: key `j` is visible iff
//!   `i - w < j <= i` (Gemma 2/3's local layers, as their reference mask
//!   `q_idx - kv_idx < sliding_window` has it; `w = 1` sees only itself);
//!   query head `h` reads kv head `h / (n_heads / n_kv_heads)`.
//! - `out[t, h] = sum_j softmax_j(s_j) * v[j]` with the score
//!   `s_j = scale * q[t,h] . k[j]`, or with a logit soft cap `c`
//!   (Gemma 2) `s_j = c * tanh(scale * q[t,h] . k[j] / c)`, applied before
//!   the mask and the softmax; `out: [n_tokens, n_heads, head_dim]`.
//! - The caches may hold f16 or bf16 values ([`crate::KvType`]): every
//!   backend widens them to f32 and computes as for f32, so the reference
//!   is this one over the widened values.

use crate::error::check_len;
use crate::{Error, KvSlice, Result};

/// Params of [`attention_ref`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionParams {
    pub n_tokens: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Position of the first query token = cached rows before this batch.
    pub pos0: usize,
    /// Capacity (rows) of the K and V caches; position `j` is row
    /// `j % kv_stride` (a ring when the positions pass it; module docs).
    pub kv_stride: usize,
    /// Score multiplier, usually `1/sqrt(head_dim)`.
    pub scale: f32,
    /// Sliding window: each query sees at most this many keys, itself
    /// included (see the module docs); `None` = full causal attention.
    pub window: Option<usize>,
    /// Logit soft cap `c` (finite, > 0): scores become `c * tanh(s / c)`;
    /// `None` = no cap.
    pub softcap: Option<f32>,
}

impl AttentionParams {
    /// Heads non-zero and `n_heads % n_kv_heads == 0`, `head_dim > 0`,
    /// `pos0 + n_tokens <= kv_stride` or a ring that keeps every visible key
    /// (a window `w` with `w + n_tokens - 1 <= kv_stride`), finite scale, a
    /// soft cap finite and > 0, buffer lengths.
    pub fn validate(&self, q_len: usize, k_len: usize, v_len: usize, out_len: usize) -> Result<()> {
        let op = "attention";
        if self.n_heads == 0 || self.n_kv_heads == 0 {
            return Err(Error::invalid(
                op,
                format!(
                    "n_heads {} and n_kv_heads {} must be > 0",
                    self.n_heads, self.n_kv_heads
                ),
            ));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(Error::invalid(
                op,
                format!(
                    "n_heads {} is not a multiple of n_kv_heads {}",
                    self.n_heads, self.n_kv_heads
                ),
            ));
        }
        if self.head_dim == 0 {
            return Err(Error::invalid(op, "head_dim is 0"));
        }
        if self.window == Some(0) {
            return Err(Error::invalid(op, "window 0 would hide every key"));
        }
        if !self.scale.is_finite() {
            return Err(Error::invalid(
                op,
                format!("scale {} is not finite", self.scale),
            ));
        }
        if let Some(c) = self.softcap {
            if !(c.is_finite() && c > 0.0) {
                return Err(Error::invalid(
                    op,
                    format!("softcap {c} must be finite and > 0"),
                ));
            }
        }
        let end = self.pos0.checked_add(self.n_tokens);
        let ring_fits = |w: usize| {
            w.checked_add(self.n_tokens.saturating_sub(1))
                .is_some_and(|need| need <= self.kv_stride)
        };
        match (end, self.window) {
            (Some(end), _) if end <= self.kv_stride => {}
            (Some(_), Some(w)) if ring_fits(w) => {}
            (_, Some(w)) => {
                return Err(Error::invalid(
                    op,
                    format!(
                        "pos0 {} + n_tokens {} exceeds kv_stride {}, and as a ring the \
                         cache would overwrite visible keys (window {w} + n_tokens - 1 > {})",
                        self.pos0, self.n_tokens, self.kv_stride, self.kv_stride
                    ),
                ))
            }
            _ => {
                return Err(Error::invalid(
                    op,
                    format!(
                        "pos0 {} + n_tokens {} exceeds kv_stride {}",
                        self.pos0, self.n_tokens, self.kv_stride
                    ),
                ))
            }
        }
        let overflow = || Error::invalid(op, "buffer size overflows");
        let nq = self
            .n_tokens
            .checked_mul(self.n_heads)
            .and_then(|v| v.checked_mul(self.head_dim))
            .ok_or_else(overflow)?;
        let nkv = self
            .kv_stride
            .checked_mul(self.n_kv_heads)
            .and_then(|v| v.checked_mul(self.head_dim))
            .ok_or_else(overflow)?;
        check_len(op, "q", q_len, nq)?;
        check_len(op, "k", k_len, nkv)?;
        check_len(op, "v", v_len, nkv)?;
        check_len(op, "out", out_len, nq)
    }

    /// Query heads per kv head.
    pub fn group(&self) -> usize {
        self.n_heads / self.n_kv_heads.max(1)
    }

    /// The kv head read by query head `h`.
    pub fn kv_head(&self, h: usize) -> usize {
        h / self.group().max(1)
    }

    /// The cache row holding position `j`'s keys and values.
    pub fn kv_row(&self, j: usize) -> usize {
        j % self.kv_stride.max(1)
    }

    /// The positions whose keys query `t` attends: `first..end` (see the
    /// module docs); [`AttentionParams::kv_row`] maps them to rows.
    pub fn key_range(&self, t: usize) -> (usize, usize) {
        let end = self.pos0 + t + 1;
        let first = match self.window {
            Some(w) => end.saturating_sub(w),
            None => 0,
        };
        (first, end)
    }
}

/// Reference: per query and head, scores (and the soft cap) in f64,
/// max-subtracted softmax, weighted sum of values in f64.
pub fn attention_ref(
    p: &AttentionParams,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
) -> Result<()> {
    p.validate(q.len(), k.len(), v.len(), out.len())?;
    let d = p.head_dim;
    let kv_row = |j: usize, kvh: usize| (p.kv_row(j) * p.n_kv_heads + kvh) * d;
    let mut scores = Vec::new();
    let mut acc = vec![0.0f64; d];
    for t in 0..p.n_tokens {
        let (first, end) = p.key_range(t);
        for h in 0..p.n_heads {
            let kvh = p.kv_head(h);
            let qo = (t * p.n_heads + h) * d;
            let qh = &q[qo..qo + d];
            scores.clear();
            for j in first..end {
                let kj = &k[kv_row(j, kvh)..kv_row(j, kvh) + d];
                let dot: f64 = qh
                    .iter()
                    .zip(kj)
                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                    .sum();
                let sc = dot * f64::from(p.scale);
                scores.push(match p.softcap {
                    Some(c) => f64::from(c) * (sc / f64::from(c)).tanh(),
                    None => sc,
                });
            }
            let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            acc.fill(0.0);
            let mut sum = 0.0;
            for (j, s) in (first..end).zip(&scores) {
                let w = (s - m).exp();
                sum += w;
                let vj = &v[kv_row(j, kvh)..kv_row(j, kvh) + d];
                for (a, &x) in acc.iter_mut().zip(vj) {
                    *a += w * f64::from(x);
                }
            }
            for (o, a) in out[qo..qo + d].iter_mut().zip(&acc) {
                *o = (a / sum) as f32;
            }
        }
    }
    Ok(())
}

/// [`attention_ref`] over caches of any element type (`k` and `v` of the
/// same type): the stored values widened to f32.
pub fn attention_ref_kv(
    p: &AttentionParams,
    q: &[f32],
    k: KvSlice<'_>,
    v: KvSlice<'_>,
    out: &mut [f32],
) -> Result<()> {
    p.validate(q.len(), k.len(), v.len(), out.len())?;
    if k.kv_type() != v.kv_type() {
        return Err(Error::invalid(
            "attention",
            format!("k cache is {} but v cache is {}", k.kv_type(), v.kv_type()),
        ));
    }
    attention_ref(p, q, &k.to_f32(), &v.to_f32(), out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn p(
        n_tokens: usize,
        n_heads: usize,
        n_kv_heads: usize,
        head_dim: usize,
        pos0: usize,
        kv_stride: usize,
    ) -> AttentionParams {
        AttentionParams {
            n_tokens,
            n_heads,
            n_kv_heads,
            head_dim,
            pos0,
            kv_stride,
            scale: 0.5,
            window: None,
            softcap: None,
        }
    }

    #[test]
    fn softcap_bounds_scores() {
        // Two keys, scores 0 and 40 (scale 0.5 * q 1 * k 80): uncapped the
        // second key takes everything; capped at 2 its score is 2 tanh(20)
        // ~ 2, so the weights are [1, e^2] / (1 + e^2).
        let pp = AttentionParams {
            softcap: Some(2.0),
            ..p(1, 1, 1, 1, 1, 2)
        };
        let (k, v) = ([0.0, 80.0], [0.0, 1.0]);
        let mut out = [f32::NAN];
        attention_ref(&pp, &[1.0], &k, &v, &mut out).unwrap();
        let e2 = (2.0 * 20f64.tanh()).exp();
        assert!(
            (f64::from(out[0]) - e2 / (1.0 + e2)).abs() < 1e-6,
            "{out:?}"
        );
        for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            let e = AttentionParams {
                softcap: Some(bad),
                ..pp
            }
            .validate(1, 2, 2, 1)
            .unwrap_err();
            assert!(e.to_string().contains("softcap"), "{e}");
        }
    }

    #[test]
    fn one_key_returns_its_value() {
        let pp = p(1, 1, 1, 3, 0, 4);
        let q = [0.3, -2.0, 7.0];
        let mut k = vec![f32::NAN; 12]; // rows past pos0 + n_tokens are never read
        let mut v = vec![f32::NAN; 12];
        k[..3].copy_from_slice(&[1.0, 2.0, 3.0]);
        v[..3].copy_from_slice(&[4.0, -5.0, 6.0]);
        let mut out = [f32::NAN; 3];
        attention_ref(&pp, &q, &k, &v, &mut out).unwrap();
        assert_eq!(out, [4.0, -5.0, 6.0]);
    }

    #[test]
    fn gqa_maps_heads_to_kv_heads() {
        // 4 query heads over 2 kv heads: heads 0,1 -> kv 0, heads 2,3 -> kv 1.
        let pp = p(1, 4, 2, 2, 0, 1);
        let q = [1.0; 8];
        let k = [0.0; 4];
        let v = [10.0, 11.0, 20.0, 21.0];
        let mut out = [f32::NAN; 8];
        attention_ref(&pp, &q, &k, &v, &mut out).unwrap();
        assert_eq!(out, [10.0, 11.0, 10.0, 11.0, 20.0, 21.0, 20.0, 21.0]);
        assert_eq!(
            (0..4).map(|h| pp.kv_head(h)).collect::<Vec<_>>(),
            [0, 0, 1, 1]
        );
    }

    #[test]
    fn causal_mask_and_by_hand_weights() {
        // Two tokens at positions 1 and 2 after one cached key.
        // q = [1, 0], keys k0 = [0,0], k1 = [2,0], k2 = [0,0]; scale 0.5.
        // query 0 (pos 1): scores [0, 1] -> weights [1, e] / (1 + e).
        // query 1 (pos 2): scores [0, 1, 0] -> weights [1, e, 1] / (2 + e).
        // out = w0 * [1, 0] + w1 * [0, 1] + w2 * [5, 5].
        let pp = p(2, 1, 1, 2, 1, 3);
        let q = [1.0, 0.0, 1.0, 0.0];
        let k = [0.0, 0.0, 2.0, 0.0, 0.0, 0.0];
        let v = [1.0, 0.0, 0.0, 1.0, 5.0, 5.0];
        let mut out = [f32::NAN; 4];
        attention_ref(&pp, &q, &k, &v, &mut out).unwrap();
        let e = std::f64::consts::E;
        let want = [
            1.0 / (1.0 + e),
            e / (1.0 + e),
            6.0 / (2.0 + e),
            (e + 5.0) / (2.0 + e),
        ];
        for (g, w) in out.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-6, "{out:?} vs {want:?}");
        }
    }

    #[test]
    fn window_hides_old_keys() {
        // Keys 0..4 with values 0, 1, 2, 3 (d = 1, q = 0: uniform weights).
        // Query at position 3 with window 2 sees keys 2 and 3 only: mean 2.5;
        // window 1 sees only itself (3); window 4 or more sees all: 1.5.
        let k = [0.0; 4];
        let v = [0.0, 1.0, 2.0, 3.0];
        for (w, want) in [(1, 3.0), (2, 2.5), (3, 2.0), (4, 1.5), (100, 1.5)] {
            let pp = AttentionParams {
                window: Some(w),
                ..p(1, 1, 1, 1, 3, 4)
            };
            assert_eq!(pp.key_range(0), (4usize.saturating_sub(w), 4));
            let mut out = [f32::NAN];
            attention_ref(&pp, &[0.0], &k, &v, &mut out).unwrap();
            assert!((out[0] - want).abs() < 1e-6, "window {w}: {out:?}");
        }
        let e = AttentionParams {
            window: Some(0),
            ..p(1, 1, 1, 1, 3, 4)
        }
        .validate(1, 4, 4, 1)
        .unwrap_err();
        assert!(e.to_string().contains("window 0"), "{e}");
    }

    #[test]
    fn ring_cache_matches_full_cache() {
        // Positions 0..13 of d = 2 keys/values; 3 queries at positions
        // 10..13 with window 4: a ring of 4 + 3 - 1 = 6 rows holding position
        // j in row j % 6 gives what a 13-row cache gives, exactly.
        let (d, n_pos, n, w) = (2usize, 13usize, 3usize, 4usize);
        let val = |j: usize, c: usize| ((j * 7 + c * 3) % 11) as f32 * 0.25 - 1.0;
        let full_k: Vec<f32> = (0..n_pos * d).map(|i| val(i / d, i % d)).collect();
        let full_v: Vec<f32> = (0..n_pos * d).map(|i| val(i / d + 5, i % d)).collect();
        let q: Vec<f32> = (0..n * d).map(|i| 0.5 - i as f32 * 0.2).collect();
        let full = AttentionParams {
            window: Some(w),
            ..p(n, 1, 1, d, n_pos - n, n_pos)
        };
        let mut want = vec![f32::NAN; n * d];
        attention_ref(&full, &q, &full_k, &full_v, &mut want).unwrap();
        let ring = AttentionParams {
            kv_stride: w + n - 1,
            ..full
        };
        let (mut rk, mut rv) = (vec![f32::NAN; 6 * d], vec![f32::NAN; 6 * d]);
        for j in 0..n_pos {
            let r = ring.kv_row(j);
            rk[r * d..][..d].copy_from_slice(&full_k[j * d..][..d]);
            rv[r * d..][..d].copy_from_slice(&full_v[j * d..][..d]);
        }
        let mut got = vec![f32::NAN; n * d];
        attention_ref(&ring, &q, &rk, &rv, &mut got).unwrap();
        assert_eq!(got, want);
        // One row fewer would overwrite query 0's oldest key; no window, no ring.
        let e = AttentionParams {
            kv_stride: w + n - 2,
            ..ring
        }
        .validate(n * d, 5 * d, 5 * d, n * d)
        .unwrap_err();
        assert!(e.to_string().contains("overwrite visible keys"), "{e}");
        let e = AttentionParams {
            window: None,
            ..ring
        }
        .validate(n * d, 6 * d, 6 * d, n * d)
        .unwrap_err();
        assert!(e.to_string().contains("exceeds kv_stride 6"), "{e}");
    }

    #[test]
    fn validation() {
        let pp = p(2, 4, 2, 8, 3, 5);
        assert!(pp.validate(64, 80, 80, 64).is_ok());
        let e = AttentionParams {
            n_kv_heads: 3,
            ..pp
        }
        .validate(64, 120, 120, 64)
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("n_heads 4 is not a multiple of n_kv_heads 3"),
            "{e}"
        );
        let e = AttentionParams { pos0: 4, ..pp }
            .validate(64, 80, 80, 64)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("pos0 4 + n_tokens 2 exceeds kv_stride 5"),
            "{e}"
        );
        assert!(AttentionParams {
            n_kv_heads: 0,
            ..pp
        }
        .validate(64, 0, 0, 64)
        .is_err());
        assert!(AttentionParams { head_dim: 0, ..pp }
            .validate(0, 0, 0, 0)
            .is_err());
        assert!(AttentionParams {
            scale: f32::INFINITY,
            ..pp
        }
        .validate(64, 80, 80, 64)
        .is_err());
        assert!(AttentionParams {
            pos0: usize::MAX,
            ..pp
        }
        .validate(64, 80, 80, 64)
        .is_err());
        assert!(pp.validate(64, 79, 80, 64).is_err());
        assert!(pp.validate(64, 80, 80, 63).is_err());
    }
}
