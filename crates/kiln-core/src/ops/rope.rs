//! rope: rotary position embedding, in place on `x: [n_tokens, n_heads, head_dim]`.
//!
//! Token `t` at position `p = positions[t]`; for `i in 0..n_rot/2` the angle is
//! `theta_i = p * freq_scale * freq_base^(-2i/n_rot)` and a pair `(a, b)` of
//! each head becomes `(a cos - b sin, a sin + b cos)`. The pairs are
//! `(2i, 2i+1)` in [`RopeMode::Normal`] (llama in GGUF, whose Q/K rows are
//! permuted by the converter) and `(i, i + n_rot/2)` in [`RopeMode::Neox`].
//! Dims `n_rot..head_dim` of each head pass through unchanged.
//!
//! Frequency factors (Llama 3.1 / 3.2's `rope_freqs.weight`, `[n_rot/2]`
//! f32, what llama.cpp's converter derives from the `llama3` rope scaling):
//! pair `i`'s angle is divided by `factors[i]` ([`rope_ref_with_factors`];
//! factors must be finite and positive).
//!
//! YaRN context extension ([`Yarn`]; Peng et al. 2023, as llama.cpp's
//! `rope_yarn` and transformers' `yarn` rope type compute it) is expressed
//! through the same two knobs, so it needs no kernel of its own: pair `i`'s
//! angle is `theta_i · ((1 - r_i) / factor + r_i)` with the ramp `r_i`
//! falling from 1 (high-frequency pairs, extrapolated) to 0 (low-frequency
//! pairs, interpolated by `1/factor`) between the correction dims of
//! `beta_fast` and `beta_slow` — a per-pair frequency factor
//! ([`Yarn::factors`]) — and the rotated values are scaled by
//! `mscale = 1 + 0.1 ln(factor)`, which the attention applies as
//! `mscale²` on its logit scale ([`Yarn::attn_scale`]: q and k both carry it).

use crate::error::check_len;
use crate::{Error, Result};

/// Which dims form a rotated pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RopeMode {
    /// Pairs `(2i, 2i+1)`: llama GGUF.
    Normal,
    /// Pairs `(i, i + n_rot/2)`: GPT-NeoX, Qwen, Phi...
    Neox,
}

/// Params of [`rope_ref`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeParams {
    pub n_tokens: usize,
    pub n_heads: usize,
    pub head_dim: usize,
    /// Rotated dims per head: even, `<= head_dim`.
    pub n_rot: usize,
    /// `rope.freq_base` (10000 for llama 2, 100000 for SmolLM2...).
    pub freq_base: f32,
    /// Linear position scale (1 / `rope.scaling.factor`), usually 1.
    pub freq_scale: f32,
    pub mode: RopeMode,
}

impl RopeParams {
    /// `n_rot` even and `<= head_dim`, base finite and `> 0`, scale finite,
    /// `positions.len() == n_tokens`, `x.len() == n_tokens * n_heads * head_dim`.
    pub fn validate(&self, positions_len: usize, x_len: usize) -> Result<()> {
        if !self.n_rot.is_multiple_of(2) {
            return Err(Error::invalid(
                "rope",
                format!("n_rot {} is odd", self.n_rot),
            ));
        }
        if self.n_rot > self.head_dim {
            return Err(Error::invalid(
                "rope",
                format!("n_rot {} exceeds head_dim {}", self.n_rot, self.head_dim),
            ));
        }
        if !(self.freq_base.is_finite() && self.freq_base > 0.0) {
            return Err(Error::invalid(
                "rope",
                format!("freq_base {} must be finite and > 0", self.freq_base),
            ));
        }
        if !self.freq_scale.is_finite() {
            return Err(Error::invalid(
                "rope",
                format!("freq_scale {} is not finite", self.freq_scale),
            ));
        }
        let n = self
            .n_tokens
            .checked_mul(self.n_heads)
            .and_then(|v| v.checked_mul(self.head_dim))
            .ok_or_else(|| Error::invalid("rope", "n_tokens * n_heads * head_dim overflows"))?;
        check_len("rope", "positions", positions_len, self.n_tokens)?;
        check_len("rope", "x", x_len, n)
    }

    /// `freq_base^(-2i/n_rot)` for pair `i`, in f64 (shared by every backend's tables).
    pub fn inv_freq(&self, i: usize) -> f64 {
        f64::from(self.freq_base).powf(-2.0 * i as f64 / self.n_rot as f64)
    }

    /// The angle of pair `i` at `pos`, in f64.
    pub fn theta(&self, pos: i32, i: usize) -> f64 {
        f64::from(pos) * f64::from(self.freq_scale) * self.inv_freq(i)
    }

    /// The dim indices of pair `i` within a head.
    pub fn pair(&self, i: usize) -> (usize, usize) {
        match self.mode {
            RopeMode::Normal => (2 * i, 2 * i + 1),
            RopeMode::Neox => (i, i + self.n_rot / 2),
        }
    }
}

/// YaRN parameters (`{arch}.rope.scaling.*` with type `yarn`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Yarn {
    /// Context extension factor (`rope.scaling.factor`), finite and >= 1.
    pub factor: f32,
    /// The training context (`rope.scaling.original_context_length`).
    pub orig_ctx: usize,
    /// Rotations per original context above which a pair is extrapolated
    /// (32 by default) and below which it is interpolated (1).
    pub beta_fast: f32,
    pub beta_slow: f32,
}

impl Yarn {
    /// `factor` finite and >= 1, `orig_ctx > 0`, betas finite with
    /// `beta_fast > beta_slow > 0`.
    pub fn validate(&self) -> Result<()> {
        let ok = self.factor.is_finite()
            && self.factor >= 1.0
            && self.orig_ctx > 0
            && self.beta_slow.is_finite()
            && self.beta_fast.is_finite()
            && self.beta_slow > 0.0
            && self.beta_fast > self.beta_slow;
        if ok {
            return Ok(());
        }
        Err(Error::invalid(
            "rope",
            format!(
                "yarn factor {} (>= 1), original context {} (> 0), beta_fast {} > beta_slow {} > 0",
                self.factor, self.orig_ctx, self.beta_fast, self.beta_slow
            ),
        ))
    }

    /// The (fractional) pair dim whose wavelength fits `rotations` times in
    /// the original context: `n_rot · ln(orig_ctx / (2π rotations)) / (2 ln base)`.
    fn corr_dim(&self, n_rot: usize, base: f64, rotations: f32) -> f64 {
        let ctx = self.orig_ctx as f64;
        n_rot as f64 * (ctx / (2.0 * std::f64::consts::PI * f64::from(rotations))).ln()
            / (2.0 * base.ln())
    }

    /// Per-pair frequency factors (divide pair `i`'s angle), `n_rot / 2` of
    /// them, for a rotation of `n_rot` dims with base `base`.
    pub fn factors(&self, n_rot: usize, base: f32) -> Result<Vec<f32>> {
        self.validate()?;
        if !(base.is_finite() && base > 1.0) || n_rot < 2 {
            return Err(Error::invalid(
                "rope",
                format!("yarn needs a base > 1 (got {base}) and n_rot >= 2 (got {n_rot})"),
            ));
        }
        let base = f64::from(base);
        let top = (n_rot - 1) as f64;
        let low = self
            .corr_dim(n_rot, base, self.beta_fast)
            .floor()
            .clamp(0.0, top);
        let high = self
            .corr_dim(n_rot, base, self.beta_slow)
            .ceil()
            .clamp(0.0, top);
        let span = (high - low).max(0.001);
        let inv_factor = 1.0 / f64::from(self.factor);
        Ok((0..n_rot / 2)
            .map(|i| {
                // r = 1 extrapolates (keeps the trained frequency), r = 0
                // interpolates (divides it by the factor).
                let r = 1.0 - ((i as f64 - low) / span).clamp(0.0, 1.0);
                (1.0 / ((1.0 - r) * inv_factor + r)) as f32
            })
            .collect())
    }

    /// The magnitude scale of the rotated values: `1 + 0.1 ln(factor)`.
    pub fn mscale(&self) -> f64 {
        1.0 + 0.1 * f64::from(self.factor).ln()
    }

    /// The attention logit scale `base_scale · mscale²` (q and k both carry
    /// `mscale`).
    pub fn attn_scale(&self, base_scale: f32) -> f32 {
        (f64::from(base_scale) * self.mscale() * self.mscale()) as f32
    }
}

/// `factors` (when given) hold one finite positive value per rotated pair.
pub fn check_factors(p: &RopeParams, factors: Option<&[f32]>) -> Result<()> {
    let Some(f) = factors else { return Ok(()) };
    check_len("rope", "frequency factors", f.len(), p.n_rot / 2)?;
    match f.iter().position(|v| !(v.is_finite() && *v > 0.0)) {
        Some(i) => Err(Error::invalid(
            "rope",
            format!("frequency factor {i} is {} (must be finite and > 0)", f[i]),
        )),
        None => Ok(()),
    }
}

/// Reference: every rotation in f64.
pub fn rope_ref(p: &RopeParams, positions: &[i32], x: &mut [f32]) -> Result<()> {
    rope_ref_with_factors(p, None, positions, x)
}

/// Reference with optional per-pair frequency factors (see the module docs).
pub fn rope_ref_with_factors(
    p: &RopeParams,
    factors: Option<&[f32]>,
    positions: &[i32],
    x: &mut [f32],
) -> Result<()> {
    p.validate(positions.len(), x.len())?;
    check_factors(p, factors)?;
    if p.head_dim == 0 {
        return Ok(());
    }
    for (t, &pos) in positions.iter().enumerate() {
        for h in 0..p.n_heads {
            let base = (t * p.n_heads + h) * p.head_dim;
            let head = &mut x[base..base + p.head_dim];
            for i in 0..p.n_rot / 2 {
                let (ia, ib) = p.pair(i);
                let div = factors.map_or(1.0, |f| f64::from(f[i]));
                let (s, c) = (p.theta(pos, i) / div).sin_cos();
                let (a, b) = (f64::from(head[ia]), f64::from(head[ib]));
                head[ia] = (a * c - b * s) as f32;
                head[ib] = (a * s + b * c) as f32;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn params(mode: RopeMode) -> RopeParams {
        RopeParams {
            n_tokens: 1,
            n_heads: 1,
            head_dim: 4,
            n_rot: 4,
            freq_base: 10000.0,
            freq_scale: 1.0,
            mode,
        }
    }

    fn close(got: &[f32], want: &[f64]) {
        for (g, w) in got.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }

    // Position 1, base 10000, n_rot 4: theta_0 = 1 rad, theta_1 = 10000^(-1/2) = 0.01 rad.
    #[test]
    fn normal_by_hand() {
        let mut x = [1.0, 2.0, 3.0, 4.0];
        rope_ref(&params(RopeMode::Normal), &[1], &mut x).unwrap();
        // (1cos1 - 2sin1, 1sin1 + 2cos1, 3cos.01 - 4sin.01, 3sin.01 + 4cos.01)
        close(
            &x,
            &[
                -1.142_639_663_7,
                1.922_075_596_5,
                2.959_850_667_9,
                4.029_799_501_7,
            ],
        );
    }

    #[test]
    fn neox_by_hand() {
        let mut x = [1.0, 2.0, 3.0, 4.0];
        rope_ref(&params(RopeMode::Neox), &[1], &mut x).unwrap();
        // pairs (0,2) by 1 rad and (1,3) by 0.01 rad.
        close(
            &x,
            &[
                -1.984_110_648_6,
                1.959_900_667_5,
                2.462_377_902_4,
                4.019_799_668_3,
            ],
        );
    }

    #[test]
    fn position_zero_is_identity_and_tail_passes_through() {
        let mut p = params(RopeMode::Normal);
        p.n_tokens = 2;
        p.head_dim = 6;
        let mut x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 1.0, 0.0, 0.0, 0.0, 7.0, 8.0];
        rope_ref(&p, &[0, 2], &mut x).unwrap();
        assert_eq!(&x[..6], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        close(&x[6..8], &[2f64.cos(), 2f64.sin()]);
        assert_eq!(&x[10..], &[7.0, 8.0]);
    }

    #[test]
    fn freq_scale_halves_the_angle() {
        let mut p = params(RopeMode::Normal);
        p.freq_scale = 0.5;
        let mut x = [1.0, 0.0, 0.0, 0.0];
        rope_ref(&p, &[2], &mut x).unwrap();
        close(&x[..2], &[1f64.cos(), 1f64.sin()]);
    }

    #[test]
    fn validation() {
        let p = params(RopeMode::Neox);
        assert!(p.validate(1, 4).is_ok());
        let e = RopeParams { n_rot: 3, ..p }.validate(1, 4).unwrap_err();
        assert!(e.to_string().contains("n_rot 3"), "{e}");
        assert!(RopeParams { n_rot: 6, ..p }.validate(1, 4).is_err());
        assert!(RopeParams {
            freq_base: 0.0,
            ..p
        }
        .validate(1, 4)
        .is_err());
        assert!(RopeParams {
            freq_base: f32::INFINITY,
            ..p
        }
        .validate(1, 4)
        .is_err());
        assert!(RopeParams {
            freq_scale: f32::NAN,
            ..p
        }
        .validate(1, 4)
        .is_err());
        assert!(p.validate(2, 4).is_err());
        assert!(p.validate(1, 5).is_err());
    }
}
