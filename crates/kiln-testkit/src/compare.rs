//! Comparing an implementation's output with the reference: NMSE, max
//! absolute error, and one message that summarises every mismatch at once.

use std::fmt::Write as _;

/// Tolerance of one comparison. A result passes when its NMSE is
/// `<= nmse` **and** every element is within `max_abs` of the reference
/// (and is NaN exactly where the reference is NaN).
///
/// Inputs in the case tables are sized so outputs stay within about ±10,
/// which keeps an absolute bound meaningful.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tol {
    /// Bound on `sum((got - want)^2) / sum(want^2)`.
    pub nmse: f64,
    /// Bound on `|got - want|` per element.
    pub max_abs: f32,
}

impl Tol {
    /// Bit-exact (up to ±0): ops with a single f32 rounding per element,
    /// which every correct backend reproduces (add, argmax-style selection).
    pub const EXACT: Tol = Tol {
        nmse: 0.0,
        max_abs: 0.0,
    };

    /// Elementwise ops with a few roundings and at most one transcendental
    /// (silu_mul, dequantizing lookups). A vectorised exp within a few ulp
    /// (~2e-7 relative) and a fused vs. unfused multiply-add differ by a few
    /// ulp of outputs bounded by ~10: 1e-5 absolute leaves 10x margin.
    pub const ELEMENTWISE: Tol = Tol {
        nmse: 1e-12,
        max_abs: 1e-5,
    };

    /// Row reductions over up to ~50k f32 terms (rms_norm, softmax). f32
    /// accumulation error grows like sqrt(n) * 2^-24 relative (~1e-5 worst
    /// case at 50k), the f64 reference has none; outputs are O(1).
    pub const REDUCTION: Tol = Tol {
        nmse: 1e-10,
        max_abs: 2e-5,
    };

    /// rope. A backend that forms `theta = pos * inv_freq` in f32 is off by
    /// about `pos * 2^-24` rad: ~5e-4 rad at position 9000, on values ~2.
    /// Wrong pairing or frequencies give NMSE ~1e-2..1, far above this.
    pub const ROPE: Tol = Tol {
        nmse: 1e-7,
        max_abs: 2e-3,
    };

    /// norm_rope (per-head RMSNorm, then RoPE). Every backend forms the
    /// angles in f64 (the CPU rounds cos/sin to f32 once), so the rope
    /// stage adds a few f32 roundings of values within ~4 (|x / rms| <=
    /// sqrt(head_dim) at worst, ~1.7 for uniform x, times |w| <= 2): ~1e-6.
    /// The norm stage is [`Tol::REDUCTION`]'s, over rows of at most 512 f32
    /// terms (~1e-6 relative), and a rotation carries it unchanged. So
    /// REDUCTION's bounds hold (measured: the CPU's worst element over the
    /// table is within 1e-6, SIMD and scalar; the CUDA kernel emulated on
    /// the host within 5e-7, its rsqrtf adds <= 2 ulp). The slack of
    /// [`Tol::ROPE`] (f32 angles, off by ~5e-4 rad at position 9000) is
    /// not granted: it would hide a wrong normalization of up to ~1e-3.
    pub const NORM_ROPE: Tol = Tol {
        nmse: 1e-10,
        max_abs: 2e-5,
    };

    /// rope_multi on bf16 tensors: the backend rounds its f32 result once to
    /// bf16, the reference rounds the f64 result (to f32, then bf16): the two
    /// may differ by one bf16 ulp, 2^-7 at values in [1, 2) and 2^-6 in
    /// [2, 4) (inputs are in [-2, 2], outputs within 2·sqrt 2).
    pub const ROPE_BF16: Tol = Tol {
        nmse: 1e-5,
        max_abs: 1.6e-2,
    };

    /// attention: a head_dim dot, an exp and a weighted sum over up to 8k
    /// keys, each accumulated in f32 (blocked or online-softmax orders);
    /// outputs are convex combinations of values in [-1, 1].
    pub const ATTENTION: Tol = Tol {
        nmse: 1e-9,
        max_abs: 1e-4,
    };

    /// attention with bf16 operands and f32 accumulation (CUDA's tensor-core
    /// prefill), on the tables' inputs: |q|, |k|, |v| <= 1, scale
    /// 1/sqrt(head_dim). bf16 keeps 8 significant bits: rounding to nearest
    /// moves a value by at most 2^-9 of its binade's top, 2^-8 relative.
    /// - v rounded: the output is a convex combination of the rounded
    ///   values (the row sum adds the same rounded weights the P V product
    ///   uses), so at most 2^-9 (|v| < 1) off: 2.0e-3.
    /// - P rounded: each weight moves by <= 2^-8 relative, the output by
    ///   <= 2 * 2^-8 * max |v| in the worst case: 7.8e-3.
    /// - q, k rounded: each score moves by sum_c (eps_q + eps_k) q_c k_c
    ///   scale, d independent terms of rms 2^-8/sqrt(3) * 1/3 * scale:
    ///   standard deviation ~1e-3 whatever d (worst case 2^-7 sqrt(d), never
    ///   reached), and the output by about the spread of those moves: 6
    ///   standard deviations, 6e-3.
    ///
    /// Sum 1.6e-2 (= 2^-6) per element. Emulated on the host
    /// (scripts/check-cuda-attn-mma.py) the kernel's worst element was
    /// 3.0e-3 and its NMSE at most 6.3e-6 over the same kind of inputs; a
    /// wrong fragment layout or a lost tile gives errors of 0.1-1 (NMSE
    /// 1e-2 and more). NMSE bound: (2^-8)^2 * 6, relative error 2^-8 on
    /// every element with 2.5x margin, since outputs shrink with the keys
    /// they average and so do their errors.
    pub const ATTENTION_BF16: Tol = Tol {
        nmse: 1e-4,
        max_abs: 1.6e-2,
    };

    /// [`Tol::ATTENTION_BF16`] for q and k uniform in ±`qk_amp` and any
    /// `scale` (v in ±1 as before): the q, k rounding term grows with the
    /// scores' spread. Each score moves by sum_c (eps_q + eps_k) q_c k_c
    /// scale, d independent terms of rms sqrt(2) 2^-8/sqrt(3) qk_amp^2/3
    /// scale: standard deviation sigma = r sigma_1, where
    /// r = qk_amp^2 scale sqrt(d) and sigma_1 = sqrt(2)/3 2^-8/sqrt(3)
    /// = 1.063e-3 is the premise's (qk_amp 1, scale 1/sqrt(d): r = 1).
    /// - max_abs: the output moves by w-covariance of the score moves and
    ///   v, at most std_w(moves) std_w(v) <= the largest move (|v| <= 1):
    ///   6 sigma, ~6e-3 per unit of r as in the premise's sum. So
    ///   1.6e-2 + 6e-3 (r - 1).
    /// - nmse: the expected squared move of an output is at most sigma^2
    ///   times the weighted variance of the v it averages (the moves are
    ///   independent per key), which is about the output's own square for
    ///   flat scores (an average of many keys) and at most it on average
    ///   for two competing keys: relative sigma^2, 6x that as margin.
    ///   So 1e-4 + 6 sigma_1^2 (r^2 - 1).
    ///
    /// A soft cap only shrinks the moves (tanh' <= 1), so the bound holds
    /// for capped scores too. r <= 1 gives [`Tol::ATTENTION_BF16`]. The
    /// testkit's peaked cases (qk_amp 2, scale 1, d 64: r = 32, scores of
    /// std ~11) get 0.202 / 7.0e-3: emulated on the host
    /// (scripts/check-cuda-attn-mma.py, bf16 operands, 20 input draws of
    /// the 9-token one) their worst element was 3.5e-2, and more than half
    /// the draws exceed 1.6e-2; a lost or misplaced key there moves an
    /// output by ~1.
    pub fn attention_bf16(head_dim: usize, qk_amp: f32, scale: f32) -> Tol {
        const SIGMA_1: f64 = 1.0631e-3; // sqrt(2) / 3 * 2^-8 / sqrt(3)
        let amp = f64::from(qk_amp);
        let r = amp * amp * f64::from(scale).abs() * (head_dim as f64).sqrt();
        let base = Tol::ATTENTION_BF16;
        // The premise's r is 1 up to the rounding of 1/sqrt(d) to f32.
        if r.is_nan() || r <= 1.0 + 1e-6 {
            return base;
        }
        Tol {
            nmse: base.nmse + 6.0 * SIGMA_1 * SIGMA_1 * (r * r - 1.0),
            max_abs: base.max_abs + (6e-3 * (r - 1.0)) as f32,
        }
    }
}

/// Normalised mean squared error `sum((g-w)^2) / sum(w^2)` in f64; when the
/// reference is all zeros, the plain sum of squared errors. NaN/inf in
/// `got` where `want` is finite gives `f64::INFINITY`. Lengths must match
/// (extra elements are ignored).
pub fn nmse(got: &[f32], want: &[f32]) -> f64 {
    let (mut err, mut norm) = (0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        if !w.is_finite() {
            continue;
        }
        if !g.is_finite() {
            return f64::INFINITY;
        }
        let d = f64::from(g) - f64::from(w);
        err += d * d;
        norm += f64::from(w) * f64::from(w);
    }
    if norm == 0.0 {
        err
    } else {
        err / norm
    }
}

/// Root mean square of the finite reference values (0 for none).
fn reference_rms(want: &[f32]) -> f64 {
    let (mut sum, mut n) = (0.0f64, 0usize);
    for &w in want.iter().filter(|w| w.is_finite()) {
        sum += f64::from(w) * f64::from(w);
        n += 1;
    }
    if n == 0 {
        0.0
    } else {
        (sum / n as f64).sqrt()
    }
}

/// Largest `|got - want|`; `f32::INFINITY` where exactly one side is NaN or
/// the two differ in an infinity. Equal infinities count as 0.
pub fn max_abs_err(got: &[f32], want: &[f32]) -> f32 {
    got.iter()
        .zip(want)
        .map(|(&g, &w)| elem_err(g, w))
        .fold(0.0, f32::max)
}

fn elem_err(g: f32, w: f32) -> f32 {
    if g.is_nan() || w.is_nan() {
        return if g.is_nan() && w.is_nan() {
            0.0
        } else {
            f32::INFINITY
        };
    }
    if g == w {
        return 0.0; // also equal infinities
    }
    let d = (g - w).abs();
    if d.is_nan() {
        f32::INFINITY
    } else {
        d
    }
}

/// Compare `got` against `want`; `Err` carries one summary of every
/// problem: length, mismatch count and the first few indices with both
/// values, NaN count, NMSE and max abs error against the bounds.
pub fn compare(name: &str, got: &[f32], want: &[f32], tol: Tol) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{name}: output has {} elements, reference {}",
            got.len(),
            want.len()
        ));
    }
    const SHOW: usize = 6;
    let mut bad = 0usize;
    let mut first = String::new();
    let mut nan_got = 0usize;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if g.is_nan() && !w.is_nan() {
            nan_got += 1;
        }
        if elem_err(g, w) > tol.max_abs {
            if bad < SHOW {
                let _ = write!(first, " [{i}] got {g:e} want {w:e};");
            }
            bad += 1;
        }
    }
    let e_nmse = nmse(got, want);
    let e_max = max_abs_err(got, want);
    // NMSE only means something for a reference with energy: when the
    // reference's RMS is below max_abs (e.g. one GELU output of a gate near
    // -8, ~1e-14), relative error is rounding noise over a near-zero norm
    // and the per-element bound alone judges (seen: gelu_mul n=1 failing
    // NMSE 2.4e-12 with an absolute error of 8e-16).
    let tiny = reference_rms(want) < f64::from(tol.max_abs);
    if bad == 0 && (e_nmse <= tol.nmse || tiny) {
        return Ok(());
    }
    let mut msg = format!(
        "{name}: {bad}/{} elements over max_abs {:e}; nmse {e_nmse:.3e} (bound {:.1e}); max abs err {e_max:e}",
        got.len(),
        tol.max_abs,
        tol.nmse
    );
    if nan_got > 0 {
        let _ = write!(
            msg,
            "; {nan_got} NaN where the reference is not (unwritten or bad math)"
        );
    }
    if bad > 0 {
        let _ = write!(msg, "; first:{}", first.trim_end_matches(';'));
    }
    Err(msg)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn metrics() {
        assert_eq!(nmse(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        assert!((nmse(&[1.0, 1.0], &[1.0, 2.0]) - 0.2).abs() < 1e-12);
        assert_eq!(nmse(&[0.5], &[0.0]), 0.25);
        assert_eq!(nmse(&[f32::NAN], &[1.0]), f64::INFINITY);
        assert_eq!(max_abs_err(&[1.0, 5.0], &[1.5, 4.0]), 1.0);
        assert_eq!(max_abs_err(&[f32::NAN], &[1.0]), f32::INFINITY);
        assert_eq!(max_abs_err(&[f32::INFINITY], &[f32::INFINITY]), 0.0);
        assert_eq!(
            max_abs_err(&[f32::INFINITY], &[f32::NEG_INFINITY]),
            f32::INFINITY
        );
    }

    #[test]
    fn attention_bf16_scales_with_the_scores() {
        // The premise (|q|, |k| <= 1, scale 1/sqrt(d)) and anything flatter.
        for (d, amp, scale) in [
            (64, 1.0, 0.125),
            (128, 1.0, 128f32.sqrt().recip()),
            (64, 0.25, 1.0),
        ] {
            assert_eq!(Tol::attention_bf16(d, amp, scale), Tol::ATTENTION_BF16);
        }
        // The peaked cases: r = 4 * 1 * 8 = 32.
        let t = Tol::attention_bf16(64, 2.0, 1.0);
        assert!((t.max_abs - 0.202).abs() < 1e-6, "{t:?}");
        assert!((t.nmse - 7.04e-3).abs() < 1e-5, "{t:?}");
    }

    #[test]
    fn compare_reports_everything() {
        assert!(compare("x", &[1.0, 2.0], &[1.0, 2.0], Tol::EXACT).is_ok());
        assert!(compare("x", &[0.0, -0.0], &[-0.0, 0.0], Tol::EXACT).is_ok());
        assert!(compare("x", &[1.0], &[1.0, 2.0], Tol::EXACT)
            .unwrap_err()
            .contains("1 elements"));
        let got = [1.0, f32::NAN, 3.5, 4.0];
        let want = [1.0, 2.0, 3.0, 4.0];
        let e = compare("op case", &got, &want, Tol::ELEMENTWISE).unwrap_err();
        assert!(e.starts_with("op case: 2/4 elements"), "{e}");
        assert!(
            e.contains("1 NaN") && e.contains("[1] got NaN") && e.contains("[2] got 3.5e0"),
            "{e}"
        );
        assert!(e.contains("nmse inf"), "{e}");
        // NMSE alone can fail a comparison whose elements are each within max_abs.
        let tol = Tol {
            nmse: 1e-6,
            max_abs: 1.0,
        };
        assert!(compare("n", &[1.1], &[1.0], tol)
            .unwrap_err()
            .contains("0/1 elements"));
    }
}
