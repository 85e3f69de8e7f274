//! sample: one token id from a row of logits — repetition penalty, top-k,
//! top-p, min-p, temperature, softmax and one draw — defined so that every
//! backend returns the same id, bit for bit, without sorting the row.
//!
//! The caller supplies the uniform draw `u` in `[0, 1)` (kiln-models keeps
//! the seeded ChaCha20 stream on the host), so the CPU and the GPU consume
//! the same number. Exactness comes from three choices: every selection is
//! a threshold on the value, found by counting (a GPU finds it by radix
//! select on the float bits); probabilities are integer weights from one
//! shared exponential, [`weight`], evaluated with correctly rounded f32
//! operations only (no fused multiply-add, no library `exp`); every sum is
//! a `u64` sum, which no summation order changes.
//!
//! Spec, in llama.cpp's order:
//! 1. **Penalty.** Each *distinct* id of `penalty_ids` below `n_vocab` has
//!    its logit `v` replaced by `v / penalty` when `v > 0`, else
//!    `v * penalty` (f32). Ids `>= n_vocab` are ignored (a caller mixing
//!    vocabularies); duplicates count once. The result is the *value* `v`
//!    of every later stage.
//! 2. **Usable** values are those that are not NaN and not `-inf`. None
//!    usable: the result is [`NO_TOKEN`] (`u32::MAX`), not an error; the
//!    kiln op and the host sampler turn it into a typed error.
//! 3. **Certain tokens.** If a usable value is `+inf`, the `+inf` tokens
//!    are equally likely and nothing else counts (stages 4-5 are skipped).
//!    **Temperature 0** is the argmax: the lowest id holding the largest
//!    value (`+inf` largest); `u` is not used.
//! 4. **Truncation**, `m` = the largest value (finite here):
//!    - top-k (`0 < top_k < #usable`): `t_k` = the `top_k`-th largest usable
//!      value counted with multiplicity; keep `v >= t_k`. Ties at the
//!      threshold are all kept, so more than `top_k` tokens may stay.
//!    - top-p (`top_p < 1`): over the top-k survivors, `w_i =
//!      weight(v_i - m)` (temperature 1), `Z = Σ w_i`, target `T =
//!      ceil(top_p · Z)` in f64, clamped to `[1, Z]`; `t_p` = the largest
//!      survivor value `t` with `Σ_{v_i >= t} w_i >= T`; keep `v >= t_p`.
//!      That is the smallest set of highest-probability values whose mass
//!      reaches `top_p`, as a probability threshold: ties are kept.
//!    - min-p (`min_p > 0`): keep `v >= m + ln(min_p)` (f32 add of the f32
//!      `min_p.ln()`): probability at least `min_p` times the largest.
//!
//!    The kept set is the usable tokens with `v >= max(t_k, t_p, t_min)`
//!    (a stage that is off contributes no threshold); the maximum is
//!    always kept. `-0` and `+0` are equal throughout.
//! 5. **Temperature and draw.** Kept token i weighs `W_i = weight((v_i -
//!    m) / temperature)` (f32 subtract and divide); `total = Σ W_i >= 2^31`
//!    (the maximum weighs exactly 2^31). `target = min(floor(u · total),
//!    total - 1)` in f64; walking the kept tokens in ascending id order
//!    and accumulating `W_i`, the result is the first id whose cumulative
//!    sum exceeds `target`. In the certain-token case every `+inf` token
//!    weighs 1.
//!
//! [`weight`]`(x)` for `x <= 0` is `floor(2^31 · e^x)`, 0 for `x <= -22`
//! and NaN; its `e^x` is within ~2 ulp of the true value, so tokens below
//! ~2^-31 of the largest probability get weight 0 and are never drawn.
//!
//! Backends also report the kept set's threshold key ([`Sampled`]), which
//! the parity tests compare besides the id.

use crate::error::check_len;
use crate::{Error, Result};

const OP: &str = "sample";

/// What [`sample_ref`] (and every backend) returns when no logit is usable.
pub const NO_TOKEN: u32 = u32::MAX;

/// Largest vocabulary: ids stay below [`NO_TOKEN`] and `n_vocab · 2^31`
/// fits the `u64` weight sums.
pub const MAX_VOCAB: usize = i32::MAX as usize;

/// Weight of the largest value: `weight(0)`.
pub const WEIGHT_ONE: u32 = 1 << 31;

/// Order key of a usable value ([`key`]) that is `+inf`.
pub const KEY_INF: u32 = 0xff80_0000;

/// Params of [`sample_ref`]. A stage is off at its neutral value:
/// `top_k` 0 (or `>= n_vocab`), `top_p` 1, `min_p` 0, `repeat_penalty` 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleParams {
    /// Logits in the row (1..=[`MAX_VOCAB`]).
    pub n_vocab: usize,
    /// Softmax temperature, finite and `>= 0`; 0 = argmax.
    pub temperature: f32,
    /// Keep the `top_k` largest values (ties kept); 0 = off.
    pub top_k: usize,
    /// Nucleus mass in `(0, 1]`; 1 = off.
    pub top_p: f32,
    /// Minimum probability relative to the largest, in `[0, 1]`; 0 = off.
    pub min_p: f32,
    /// Repetition penalty, finite and `> 0`; 1 = off.
    pub repeat_penalty: f32,
    /// Length of `penalty_ids`.
    pub n_penalty_ids: usize,
}

impl SampleParams {
    /// Every field in range; the error names the op, the field and the value.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, v: f32, want: &str| {
            Err(Error::invalid(OP, format!("{what} {v} must be {want}")))
        };
        if self.n_vocab == 0 || self.n_vocab > MAX_VOCAB {
            return Err(Error::invalid(
                OP,
                format!("n_vocab {} must be in 1..={MAX_VOCAB}", self.n_vocab),
            ));
        }
        let t = self.temperature;
        if !(t.is_finite() && t >= 0.0) {
            return bad("temperature", t, "finite and >= 0");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", self.top_p, "in (0, 1]");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p", self.min_p, "in [0, 1]");
        }
        let r = self.repeat_penalty;
        if !(r.is_finite() && r > 0.0) {
            return bad("repeat_penalty", r, "finite and > 0");
        }
        Ok(())
    }

    /// [`SampleParams::validate`] plus the input lengths and the draw.
    pub fn validate_call(&self, logits_len: usize, ids_len: usize, u: f64) -> Result<()> {
        self.validate()?;
        check_len(OP, "logits", logits_len, self.n_vocab)?;
        check_len(OP, "penalty_ids", ids_len, self.n_penalty_ids)?;
        check_draw(u)
    }

    /// Whether stage 1 changes anything.
    pub fn penalizes(&self) -> bool {
        self.repeat_penalty != 1.0 && self.n_penalty_ids > 0
    }

    /// The top-k count that truncates among `usable` values, if any.
    pub fn top_k_of(&self, usable: usize) -> Option<usize> {
        (self.top_k > 0 && self.top_k < usable).then_some(self.top_k)
    }

    /// `ln(min_p)` as every backend adds it to the maximum; `None` when off.
    pub fn ln_min_p(&self) -> Option<f32> {
        (self.min_p > 0.0).then(|| self.min_p.ln())
    }
}

/// `u` must be finite and in `[0, 1)`.
pub fn check_draw(u: f64) -> Result<()> {
    if (0.0..1.0).contains(&u) {
        Ok(())
    } else {
        Err(Error::invalid(OP, format!("draw u {u} must be in [0, 1)")))
    }
}

/// The error the kiln op and the host sampler report for [`NO_TOKEN`].
pub fn no_usable(n_vocab: usize) -> Error {
    Error::invalid(
        OP,
        format!("none of the {n_vocab} logits is usable (all NaN or -inf)"),
    )
}

/// Stage 1 for one value.
#[inline]
pub fn penalize(v: f32, penalty: f32) -> f32 {
    if v > 0.0 {
        v / penalty
    } else {
        v * penalty
    }
}

/// Order-preserving key of a value: 0 for unusable ones (NaN, `-inf`),
/// else a `u32` that compares as the value does (`-0` and `+0` equal;
/// every finite value's key is at least `0x0080_0000`, `+inf`'s is
/// [`KEY_INF`]).
#[inline]
pub fn key(v: f32) -> u32 {
    let mut b = v.to_bits();
    if v.is_nan() || v == f32::NEG_INFINITY {
        return 0;
    }
    if b & 0x7fff_ffff == 0 {
        b = 0;
    }
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// The value of a usable key (inverse of [`key`]; `+0` for zero).
#[inline]
pub fn key_value(k: u32) -> f32 {
    f32::from_bits(if k & 0x8000_0000 != 0 {
        k & 0x7fff_ffff
    } else {
        !k
    })
}

const LOG2E: u32 = 0x3fb8_aa3b;
const LN2_HI: u32 = 0x3f31_7200;
const LN2_LO: u32 = 0x35bf_be8e;
/// 1/7!, 1/6!, ..., 1/2!: Taylor coefficients of e^r (|r| <= ln2/2),
/// highest first; the last two (1, 1) are exact and written inline.
const POLY: [u32; 6] = [
    0x3950_0d01,
    0x3ab6_0b61,
    0x3c08_8889,
    0x3d2a_aaab,
    0x3e2a_aaab,
    0x3f00_0000,
];

/// `floor(2^31 · e^x)` for `x <= 0`: the integer weight of a value `x`
/// below the maximum (after the temperature). 0 for `x <= -22` (below
/// 2^-31) and NaN. `e^x` is computed as `2^n · p(r)` with `n =
/// floor(x·log2(e) + 1/2)`, `r = x - n·ln2` (two-constant Cody–Waite) and
/// `p` the degree-7 Taylor polynomial in Horner form; every step is one
/// correctly rounded f32 operation, so the CUDA kernel (the same steps in
/// inline PTX, no `.ftz`, no contraction) gets the same bits.
#[inline]
pub fn weight(x: f32) -> u32 {
    // Branch-free (the result selected at the end), so loops vectorize.
    let ok = x > -22.0;
    let x = if ok { x } else { 0.0 };
    let f = f32::from_bits;
    let t = x * f(LOG2E);
    // floor(t + 0.5) for t + 0.5 in (-32, 1): truncation, one down when
    // that rounded up (exact; no libm call).
    let y = t + 0.5;
    let n = (y as i32) as f32;
    let n = if n > y { n - 1.0 } else { n };
    let r = (x - n * f(LN2_HI)) - n * f(LN2_LO);
    let mut p = f(POLY[0]);
    for &c in &POLY[1..] {
        p = p * r + f(c);
    }
    p = p * r + 1.0;
    p = p * r + 1.0;
    // n in [-32, 0]: 2^n is a normal float, the product exact.
    let scale = f((((n as i32) + 127) as u32) << 23);
    // `as` truncates (floor for positive values) and saturates.
    let w = (p * scale * 2_147_483_648.0) as u32;
    if ok {
        w
    } else {
        0
    }
}

/// Top-p's target mass: `ceil(top_p · z)` in f64, clamped to `[1, z]`.
#[inline]
pub fn top_p_target(top_p: f32, z: u64) -> u64 {
    let t = (f64::from(top_p) * z as f64).ceil() as u64;
    t.clamp(1, z.max(1))
}

/// The draw's target: `floor(u · total)` in f64, at most `total - 1`.
#[inline]
pub fn draw_target(u: f64, total: u64) -> u64 {
    ((u * total as f64).floor() as u64).min(total.saturating_sub(1))
}

/// Logits after stage 1 (a copy).
pub fn penalized(p: &SampleParams, logits: &[f32], penalty_ids: &[u32]) -> Vec<f32> {
    let mut v = logits.to_vec();
    if p.penalizes() {
        for &id in penalty_ids {
            if let (Some(o), Some(&x)) = (v.get_mut(id as usize), logits.get(id as usize)) {
                // From the original logit: a duplicate id writes the same value.
                *o = penalize(x, p.repeat_penalty);
            }
        }
    }
    v
}

/// What a backend returns: the id and, for tests, the threshold key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampled {
    /// The token id, or [`NO_TOKEN`].
    pub id: u32,
    /// The kept set is the usable tokens whose [`key`] is at least this:
    /// `max(t_k, t_p, t_min)`'s key, the largest key where stage 3
    /// applies (the maxima), 0 with [`NO_TOKEN`]. It does not depend on
    /// `u`, so the parity tests compare it too: a threshold one token off
    /// changes the id only for draws that land on that token.
    pub threshold: u32,
}

/// Reference: the spec above, naively (a full sort for top-k and top-p).
/// Returns the token id, or [`NO_TOKEN`] when no logit is usable.
pub fn sample_ref(p: &SampleParams, logits: &[f32], penalty_ids: &[u32], u: f64) -> Result<u32> {
    Ok(sample_ref_full(p, logits, penalty_ids, u)?.id)
}

/// [`sample_ref`] with the kept set's threshold.
pub fn sample_ref_full(
    p: &SampleParams,
    logits: &[f32],
    penalty_ids: &[u32],
    u: f64,
) -> Result<Sampled> {
    p.validate_call(logits.len(), penalty_ids.len(), u)?;
    let v = penalized(p, logits, penalty_ids);
    let keys: Vec<u32> = v.iter().map(|&x| key(x)).collect();
    let max_key = keys.iter().copied().max().unwrap_or(0);
    if max_key == 0 {
        return Ok(Sampled {
            id: NO_TOKEN,
            threshold: 0,
        });
    }
    if max_key == KEY_INF || p.temperature == 0.0 {
        // Stage 3: the maxima, each of weight 1 (temperature 0: the first).
        let top: Vec<usize> = (0..v.len()).filter(|&i| keys[i] == max_key).collect();
        let j = if p.temperature == 0.0 {
            0
        } else {
            draw_target(u, top.len() as u64) as usize
        };
        return Ok(Sampled {
            id: top[j] as u32,
            threshold: max_key,
        });
    }
    let m = key_value(max_key);
    // Usable ids by value, largest first.
    let mut order: Vec<usize> = (0..v.len()).filter(|&i| keys[i] != 0).collect();
    order.sort_by(|&a, &b| keys[b].cmp(&keys[a]).then(a.cmp(&b)));
    let k_top = p.top_k_of(order.len()).map_or(0, |k| keys[order[k - 1]]);
    let k_min = p.ln_min_p().map_or(0, |l| key(m + l));
    let mut k_nucleus = 0;
    if p.top_p < 1.0 {
        let set: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| keys[i] >= k_top)
            .collect();
        let z: u64 = set.iter().map(|&i| u64::from(weight(v[i] - m))).sum();
        let target = top_p_target(p.top_p, z);
        let mut cum = 0u64;
        // Groups of equal values, largest first: the first group whose
        // cumulative mass reaches the target holds the threshold.
        for (j, &i) in set.iter().enumerate() {
            cum += u64::from(weight(v[i] - m));
            let group_ends = set.get(j + 1).is_none_or(|&n| keys[n] != keys[i]);
            if group_ends && cum >= target {
                k_nucleus = keys[i];
                break;
            }
        }
    }
    // The smallest usable key is at least 0x0080_0000: 1 keeps them all.
    let lo = k_top.max(k_min).max(k_nucleus).max(1);
    let kept: Vec<(u32, u64)> = (0..v.len())
        .filter(|&i| keys[i] >= lo)
        .map(|i| (i as u32, u64::from(weight((v[i] - m) / p.temperature))))
        .collect();
    let total: u64 = kept.iter().map(|&(_, w)| w).sum();
    let target = draw_target(u, total);
    let mut cum = 0u64;
    for &(id, w) in &kept {
        cum += w;
        if cum > target {
            return Ok(Sampled { id, threshold: lo });
        }
    }
    // Unreachable: total > target. Kept for safety, as the sentinel.
    Ok(Sampled {
        id: NO_TOKEN,
        threshold: lo,
    })
}

#[cfg(test)]
#[path = "sample_tests.rs"]
mod tests;
