//! norm_rope: the per-head RMSNorm of Qwen3 and Gemma 3 (`attn_q_norm` /
//! `attn_k_norm`: one `[head_dim]` weight shared by every head) followed by
//! RoPE, as one op, so a backend can do both in one pass over q or k.
//!
//! `x, out: [n_tokens, n_heads, head_dim]`, `w: [head_dim]`,
//! `positions: [n_tokens]`, optional frequency `factors: [n_rot / 2]`:
//!
//! 1. `out = rms_norm(x, w, eps)` over the `n_tokens * n_heads` head rows
//!    ([`crate::ops::rms_norm`]);
//! 2. `rope_with_factors(out)` in place ([`crate::ops::rope`]: normal or NeoX
//!    pairs, partial rotation, frequency factors).
//!
//! The reference is exactly that composition of the two references (f64
//! inside each, the normalized values rounded to f32 between them), so a
//! fused kernel is held to the same answers as the unfused pair of ops.

use super::rms_norm::{rms_norm_ref, RmsNormParams};
use super::rope::{check_factors, rope_ref_with_factors, RopeParams};
use crate::{Error, Result};

const OP: &str = "norm_rope";

/// Params of [`norm_rope_ref`]: the RoPE shape (rows are the
/// `n_tokens * n_heads` heads of `head_dim`) and the norm's epsilon.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormRopeParams {
    pub rope: RopeParams,
    /// Added to each head row's mean square before the square root; finite
    /// and > 0 (unlike `rms_norm`, 0 is refused: an all-zero head would
    /// give 0 · ∞ = NaN).
    pub eps: f32,
}

impl NormRopeParams {
    /// The norm stage as [`RmsNormParams`]: `n_tokens * n_heads` rows of
    /// `head_dim` (saturating; [`NormRopeParams::validate`] refuses an
    /// overflowing shape first).
    pub fn norm(&self) -> RmsNormParams {
        RmsNormParams {
            rows: self.rope.n_tokens.saturating_mul(self.rope.n_heads),
            dim: self.rope.head_dim,
            eps: self.eps,
        }
    }

    /// The RoPE checks (`n_rot` even and `<= head_dim`, base finite and
    /// positive, scale finite, `positions_len == n_tokens`, the shape does
    /// not overflow, `x_len` = the shape), `eps` finite and `> 0`,
    /// `head_dim > 0`, `w_len == head_dim`, `out_len == x_len`. Errors name
    /// `norm_rope`.
    pub fn validate(
        &self,
        x_len: usize,
        w_len: usize,
        positions_len: usize,
        out_len: usize,
    ) -> Result<()> {
        self.rope.validate(positions_len, x_len).map_err(retag)?;
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(Error::invalid(
                OP,
                format!("eps {} must be finite and > 0", self.eps),
            ));
        }
        self.norm().validate(x_len, w_len, out_len).map_err(retag)
    }
}

/// A stage's validation error, renamed to this op.
fn retag(e: Error) -> Error {
    e.for_op(OP)
}

/// `factors` (when given) hold one finite positive value per rotated pair;
/// errors name `norm_rope`.
pub fn check_norm_rope_factors(p: &NormRopeParams, factors: Option<&[f32]>) -> Result<()> {
    check_factors(&p.rope, factors).map_err(retag)
}

/// Reference: [`rms_norm_ref`] over the head rows into `out`, then
/// [`rope_ref_with_factors`] on `out`. Every check runs before `out` is
/// written.
pub fn norm_rope_ref(
    p: &NormRopeParams,
    x: &[f32],
    w: &[f32],
    factors: Option<&[f32]>,
    positions: &[i32],
    out: &mut [f32],
) -> Result<()> {
    p.validate(x.len(), w.len(), positions.len(), out.len())?;
    check_norm_rope_factors(p, factors)?;
    rms_norm_ref(&p.norm(), x, w, out)?;
    rope_ref_with_factors(&p.rope, factors, positions, out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ops::rope::RopeMode;

    fn params() -> NormRopeParams {
        NormRopeParams {
            rope: RopeParams {
                n_tokens: 2,
                n_heads: 3,
                head_dim: 8,
                n_rot: 6,
                freq_base: 10000.0,
                freq_scale: 1.0,
                mode: RopeMode::Neox,
            },
            eps: 1e-6,
        }
    }

    #[test]
    fn is_the_composition_of_the_references() {
        let p = params();
        let x: Vec<f32> = (0..48).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
        let w: Vec<f32> = (0..8).map(|i| 0.5 + i as f32 * 0.25).collect();
        let f = [1.0, 2.0, 8.0];
        let pos = [3, 1000];
        let mut want = vec![0.0; 48];
        rms_norm_ref(&p.norm(), &x, &w, &mut want).unwrap();
        rope_ref_with_factors(&p.rope, Some(&f), &pos, &mut want).unwrap();
        let mut got = vec![f32::NAN; 48];
        norm_rope_ref(&p, &x, &w, Some(&f), &pos, &mut got).unwrap();
        assert_eq!(got, want);
    }

    // One head [3, 4] (rms 3.5355339), w = 1, position 1, n_rot 2:
    // normalized (0.8485281, 1.1313708) rotated by 1 rad.
    #[test]
    fn hand_values() {
        let p = NormRopeParams {
            rope: RopeParams {
                n_tokens: 1,
                n_heads: 1,
                head_dim: 2,
                n_rot: 2,
                freq_base: 10000.0,
                freq_scale: 1.0,
                mode: RopeMode::Normal,
            },
            eps: 1e-30,
        };
        let mut out = [f32::NAN; 2];
        norm_rope_ref(&p, &[3.0, 4.0], &[1.0, 1.0], None, &[1], &mut out).unwrap();
        let (a, b) = (3.0 / 12.5f64.sqrt(), 4.0 / 12.5f64.sqrt());
        let (s, c) = 1f64.sin_cos();
        assert!(
            (f64::from(out[0]) - (a * c - b * s)).abs() < 1e-6,
            "{out:?}"
        );
        assert!(
            (f64::from(out[1]) - (a * s + b * c)).abs() < 1e-6,
            "{out:?}"
        );
    }

    #[test]
    fn validation_names_the_op_and_leaves_out_alone() {
        let p = params();
        assert!(p.validate(48, 8, 2, 48).is_ok());
        let cases: [(NormRopeParams, [usize; 4], &str); 8] = [
            (
                NormRopeParams {
                    rope: RopeParams { n_rot: 5, ..p.rope },
                    ..p
                },
                [48, 8, 2, 48],
                "n_rot 5",
            ),
            (
                NormRopeParams {
                    rope: RopeParams {
                        n_rot: 10,
                        ..p.rope
                    },
                    ..p
                },
                [48, 8, 2, 48],
                "exceeds head_dim",
            ),
            (p, [48, 8, 3, 48], "positions"),
            (p, [48, 7, 2, 48], "w has length 7"),
            (p, [48, 8, 2, 47], "out has length 47"),
            (p, [47, 8, 2, 48], "x has length 47"),
            (NormRopeParams { eps: 0.0, ..p }, [48, 8, 2, 48], "eps 0"),
            (
                NormRopeParams { eps: f32::NAN, ..p },
                [48, 8, 2, 48],
                "eps NaN",
            ),
        ];
        for (bad, [x, w, pos, out], what) in cases {
            let e = bad.validate(x, w, pos, out).unwrap_err().to_string();
            assert!(e.starts_with("norm_rope: ") && e.contains(what), "{e}");
        }
        let e = check_norm_rope_factors(&p, Some(&[1.0, 0.0, 1.0]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("norm_rope: ") && e.contains("factor 1"),
            "{e}"
        );
        let mut out = [7.0f32; 48];
        assert!(norm_rope_ref(&p, &[1.0; 48], &[1.0; 8], Some(&[1.0]), &[0, 1], &mut out).is_err());
        assert_eq!(out, [7.0; 48]);
    }
}
