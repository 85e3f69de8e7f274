//! qk_norm_rope_kv: the step between a Qwen3-style stacked QKV projection
//! and attention, as one op: per-head RMSNorm + RoPE of q and of k
//! ([`crate::ops::norm_rope`]), then the KV-cache append of k and v
//! ([`crate::ops::copy_rows`]).
//!
//! `qkv: [n_tokens, q_dim + 2 kv_dim]` (each token's row is `[q | k | v]`,
//! as the fused decode QKV mat-vec writes it), `q_norm, k_norm: [head_dim]`,
//! optional frequency `factors: [n_rot / 2]`, `positions: [n_tokens]`
//! (`q_dim = n_heads · head_dim`, `kv_dim = n_heads_kv · head_dim`):
//!
//! 1. `q_out = norm_rope(q, q_norm)`, `[n_tokens, q_dim]`;
//! 2. `k' = norm_rope(k, k_norm)` with the same head_dim, n_rot, frequencies,
//!    mode and eps;
//! 3. `copy_rows(k' → k_cache)` and `copy_rows(v → v_cache)`: token `t`'s
//!    row lands in cache row `dst_row + t`, or `(dst_row + t) % r` in a ring
//!    of `r` rows (a sliding-window cache), rounded to the cache's element
//!    type (f32, f16 or bf16) as [`crate::KvSliceMut::store`] rounds.
//!
//! The reference is exactly that composition of [`norm_rope_ref`] and
//! [`copy_rows_ref_kv`], so a fused kernel is held to the answers of the
//! unfused ops (four launches on CUDA: a row copy of k, two norm_ropes and
//! the two cache appends; the model's attention follows).
//!
//! The cache rows come from `dst_row`, not from `positions` (as in
//! `copy_rows`): the positions only rotate. For a step recorded once and
//! replayed at every position (a CUDA graph), [`QkNormRopeKvParams::at`]
//! gives the params of the device-position variant: `dst_row` is then the
//! largest row allowed, and the row used is `positions[0]`.

use super::copy_rows::{copy_rows_ref_kv, CopyRowsParams};
use super::norm_rope::{check_norm_rope_factors, norm_rope_ref, NormRopeParams};
use crate::error::check_len;
use crate::{Error, KvSliceMut, Result};

const OP: &str = "qk_norm_rope_kv";

/// Params of [`qk_norm_rope_kv_ref`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QkNormRopeKvParams {
    /// q's per-head norm and RoPE: `rope.n_tokens` tokens of `rope.n_heads`
    /// q heads; k's is the same with [`QkNormRopeKvParams::n_heads_kv`]
    /// heads ([`QkNormRopeKvParams::k`]).
    pub q: NormRopeParams,
    /// Key (and value) heads.
    pub n_heads_kv: usize,
    /// Cache row of the first token (the others follow it).
    pub dst_row: usize,
    /// The caches are rings of this many rows (see
    /// [`CopyRowsParams::dst_ring`]); `None`: rows are stored where they are
    /// numbered.
    pub dst_ring: Option<usize>,
}

/// Buffer lengths for [`QkNormRopeKvParams::validate`] (elements).
#[derive(Debug, Clone, Copy, Default)]
pub struct QkNormRopeKvLens {
    pub qkv: usize,
    pub q_norm: usize,
    pub k_norm: usize,
    pub positions: usize,
    pub q_out: usize,
    pub k_cache: usize,
    pub v_cache: usize,
}

impl QkNormRopeKvParams {
    /// k's norm + RoPE: q's with `n_heads_kv` heads.
    pub fn k(&self) -> NormRopeParams {
        let mut k = self.q;
        k.rope.n_heads = self.n_heads_kv;
        k
    }

    /// `n_heads · head_dim` (saturating; validation refuses an overflow).
    pub fn q_dim(&self) -> usize {
        self.q.rope.n_heads.saturating_mul(self.q.rope.head_dim)
    }

    /// `n_heads_kv · head_dim` (saturating).
    pub fn kv_dim(&self) -> usize {
        self.n_heads_kv.saturating_mul(self.q.rope.head_dim)
    }

    /// One token's `[q | k | v]` row: `q_dim + 2 kv_dim` (saturating).
    pub fn row_len(&self) -> usize {
        self.q_dim()
            .saturating_add(self.kv_dim())
            .saturating_add(self.kv_dim())
    }

    /// The KV append of `n_tokens` rows of `kv_dim` (from row 0 of a
    /// contiguous `[n_tokens, kv_dim]` source) as [`CopyRowsParams`].
    pub fn append(&self) -> CopyRowsParams {
        CopyRowsParams {
            row_len: self.kv_dim(),
            n_rows: self.q.rope.n_tokens,
            src_row: 0,
            dst_row: self.dst_row,
            dst_ring: self.dst_ring,
        }
    }

    /// The params of the device-position variant at the host's position:
    /// `self.dst_row` is the largest row allowed, the row used is
    /// `positions[0]`, which must be in `0..=self.dst_row`.
    pub fn at(&self, positions: &[i32]) -> Result<QkNormRopeKvParams> {
        match positions.first() {
            Some(&r) if r >= 0 && (r as usize) <= self.dst_row => Ok(QkNormRopeKvParams {
                dst_row: r as usize,
                ..*self
            }),
            other => Err(Error::invalid(
                OP,
                format!(
                    "device-position cache row {other:?} is not in 0..={}",
                    self.dst_row
                ),
            )),
        }
    }

    /// q's and k's norm_rope checks (n_rot even and `<= head_dim`, base,
    /// scale and eps, `positions` of `n_tokens`, `q_norm` and `k_norm` of
    /// `head_dim`, `q_out` of `n_tokens · q_dim`), `qkv` of `n_tokens ·
    /// (q_dim + 2 kv_dim)`, and both caches against the append
    /// ([`CopyRowsParams::validate`]: the rows, or the ring, fit). Errors
    /// name `qk_norm_rope_kv`.
    pub fn validate(&self, l: &QkNormRopeKvLens) -> Result<()> {
        let r = &self.q.rope;
        let dims = r
            .n_heads
            .checked_add(self.n_heads_kv)
            .and_then(|h| h.checked_add(self.n_heads_kv))
            .and_then(|h| h.checked_mul(r.head_dim))
            .and_then(|row| row.checked_mul(r.n_tokens));
        let Some(qkv_need) = dims else {
            return Err(Error::invalid(
                OP,
                format!(
                    "{} tokens of {} + 2 * {} heads of {} overflow",
                    r.n_tokens, r.n_heads, self.n_heads_kv, r.head_dim
                ),
            ));
        };
        let (q_len, kv_len) = (r.n_tokens * self.q_dim(), r.n_tokens * self.kv_dim());
        self.q
            .validate(q_len, l.q_norm, l.positions, l.q_out)
            .map_err(retag)?;
        self.k()
            .validate(kv_len, l.k_norm, l.positions, kv_len)
            .map_err(retag)?;
        check_len(OP, "qkv", l.qkv, qkv_need)?;
        let a = self.append();
        a.validate(kv_len, l.k_cache)
            .map_err(|e| cache(e, "k_cache"))?;
        a.validate(kv_len, l.v_cache)
            .map_err(|e| cache(e, "v_cache"))
    }
}

/// A stage's validation error, renamed to this op.
fn retag(e: Error) -> Error {
    e.for_op(OP)
}

/// A copy_rows validation error of one cache, renamed to this op.
fn cache(e: Error, what: &str) -> Error {
    match e {
        Error::InvalidArgument { msg, .. } => Error::invalid(OP, format!("{what}: {msg}")),
        other => retag(other),
    }
}

/// `factors` (when given) hold one finite positive value per rotated pair;
/// errors name `qk_norm_rope_kv`.
pub fn check_qk_factors(p: &QkNormRopeKvParams, factors: Option<&[f32]>) -> Result<()> {
    check_norm_rope_factors(&p.q, factors).map_err(retag)
}

/// Inputs and outputs of [`qk_norm_rope_kv_ref`].
pub struct QkNormRopeKvIo<'a> {
    /// `[n_tokens, q_dim + 2 kv_dim]`, rows `[q | k | v]`.
    pub qkv: &'a [f32],
    pub q_norm: &'a [f32],
    pub k_norm: &'a [f32],
    /// `[n_rot / 2]` frequency factors, or `None`.
    pub factors: Option<&'a [f32]>,
    pub positions: &'a [i32],
    /// `[n_tokens, q_dim]`.
    pub q_out: &'a mut [f32],
    pub k_cache: KvSliceMut<'a>,
    pub v_cache: KvSliceMut<'a>,
}

impl QkNormRopeKvIo<'_> {
    pub fn lens(&self) -> QkNormRopeKvLens {
        QkNormRopeKvLens {
            qkv: self.qkv.len(),
            q_norm: self.q_norm.len(),
            k_norm: self.k_norm.len(),
            positions: self.positions.len(),
            q_out: self.q_out.len(),
            k_cache: self.k_cache.len(),
            v_cache: self.v_cache.len(),
        }
    }
}

/// The q, k and v parts of the `qkv` rows, each gathered into a contiguous
/// `[n_tokens, width]` vector (`p` validated).
pub fn split_qkv(p: &QkNormRopeKvParams, qkv: &[f32]) -> [Vec<f32>; 3] {
    let (qd, kvd, row) = (p.q_dim(), p.kv_dim(), p.row_len());
    let n = p.q.rope.n_tokens;
    let part = |from: usize, width: usize| -> Vec<f32> {
        (0..n)
            .flat_map(|t| qkv[t * row + from..t * row + from + width].iter().copied())
            .collect()
    };
    [part(0, qd), part(qd, kvd), part(qd + kvd, kvd)]
}

/// Reference: [`norm_rope_ref`] on q into `q_out` and on k, then
/// [`copy_rows_ref_kv`] of the normed k and of v into the caches. Every
/// check runs before anything is written.
pub fn qk_norm_rope_kv_ref(p: &QkNormRopeKvParams, io: QkNormRopeKvIo<'_>) -> Result<()> {
    p.validate(&io.lens())?;
    check_qk_factors(p, io.factors)?;
    let [q, k, v] = split_qkv(p, io.qkv);
    norm_rope_ref(&p.q, &q, io.q_norm, io.factors, io.positions, io.q_out)?;
    let mut kr = vec![0.0f32; k.len()];
    norm_rope_ref(&p.k(), &k, io.k_norm, io.factors, io.positions, &mut kr)?;
    copy_rows_ref_kv(&p.append(), &kr, io.k_cache)?;
    copy_rows_ref_kv(&p.append(), &v, io.v_cache)
}

#[cfg(test)]
#[path = "qk_norm_rope_kv_tests.rs"]
mod tests;
