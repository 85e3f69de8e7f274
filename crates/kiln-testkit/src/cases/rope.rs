//! Case table and driver for `rope` (in place on `[n_tokens, n_heads, head_dim]`).

use super::{check_output, impl_failed, ref_failed, Options, Runner};
use crate::{rand_f32, Guarded, Report, Tol};
use kiln_core::ops::rope::{rope_ref, rope_ref_with_factors, RopeMode, RopeParams};
use rand::Rng;

/// Implementation under test: `(params, positions, x)`, rotating `x` in place.
pub type RopeFn<'a> = dyn Fn(&RopeParams, &[i32], &mut [f32]) -> kiln_core::Result<()> + 'a;

/// Implementation under test with frequency factors: `(params, factors
/// [n_rot / 2], positions, x)`, rotating `x` in place.
pub type RopeFactorsFn<'a> =
    dyn Fn(&RopeParams, &[f32], &[i32], &mut [f32]) -> kiln_core::Result<()> + 'a;

/// Positions of a case's tokens.
#[derive(Debug, Clone, Copy)]
pub enum Positions {
    /// `p0, p0 + 1, ...` (a batch appended to a cache).
    From(i32),
    /// Independent uniform positions in `[lo, hi)` (may be negative).
    Random(i32, i32),
}

/// One case (run in both modes).
#[derive(Debug, Clone, Copy)]
pub struct RopeCase {
    pub n_tokens: usize,
    pub n_heads: usize,
    pub head_dim: usize,
    pub n_rot: usize,
    pub freq_base: f32,
    pub freq_scale: f32,
    pub positions: Positions,
    pub big: bool,
}

#[allow(clippy::too_many_arguments)]
const fn c(
    n_tokens: usize,
    n_heads: usize,
    head_dim: usize,
    n_rot: usize,
    freq_base: f32,
    freq_scale: f32,
    positions: Positions,
    big: bool,
) -> RopeCase {
    RopeCase {
        n_tokens,
        n_heads,
        head_dim,
        n_rot,
        freq_base,
        freq_scale,
        positions,
        big,
    }
}

use Positions::{From, Random};

/// Tiny heads, odd pair counts (n_rot 34), partial rotation (n_rot < head_dim),
/// n_rot 0, head_dim 128, scaled positions, random/negative positions, and
/// SmolLM2 (head_dim 64, 9 q heads / 3 kv heads, base 100000): decode near
/// the end of an 8k context and a 512-token prefill.
pub const CASES: &[RopeCase] = &[
    c(1, 1, 2, 2, 10000.0, 1.0, From(1), false),
    c(3, 2, 8, 8, 10000.0, 1.0, From(0), false),
    c(7, 3, 64, 64, 100000.0, 1.0, From(5), false),
    c(5, 1, 66, 34, 10000.0, 1.0, Random(-50, 9000), false),
    c(4, 5, 80, 48, 500000.0, 1.0, Random(0, 9000), false),
    c(2, 2, 16, 0, 10000.0, 1.0, From(3), false),
    c(33, 3, 128, 128, 10000.0, 0.25, From(100), false),
    c(1, 9, 64, 64, 100000.0, 1.0, From(8000), false),
    c(1, 3, 64, 64, 100000.0, 1.0, From(8191), false),
    c(17, 3, 64, 64, 100000.0, 1.0, From(4000), false),
    c(512, 9, 64, 64, 100000.0, 1.0, From(0), true),
];

pub(crate) fn positions(rng: &mut impl Rng, n: usize, pos: Positions) -> Vec<i32> {
    match pos {
        From(p0) => (0..n as i32).map(|t| p0 + t).collect(),
        Random(lo, hi) => (0..n).map(|_| rng.gen_range(lo..hi)).collect(),
    }
}

/// Run every `rope` case, in both modes, against `imp`.
pub fn check_rope(imp: &RopeFn<'_>) -> Report {
    check_rope_with(imp, &Options::default())
}

/// [`check_rope`] with explicit options.
pub fn check_rope_with(imp: &RopeFn<'_>, opts: &Options) -> Report {
    let mut run = Runner::new("rope", opts);
    let tol = run.tol(Tol::ROPE);
    for cs in CASES {
        for mode in [RopeMode::Normal, RopeMode::Neox] {
            let name = format!(
                "{mode:?} tokens={} heads={} head_dim={} n_rot={} base={} scale={} pos={:?}",
                cs.n_tokens,
                cs.n_heads,
                cs.head_dim,
                cs.n_rot,
                cs.freq_base,
                cs.freq_scale,
                cs.positions
            );
            run.case(&name, cs.big, |rng| {
                let p = RopeParams {
                    n_tokens: cs.n_tokens,
                    n_heads: cs.n_heads,
                    head_dim: cs.head_dim,
                    n_rot: cs.n_rot,
                    freq_base: cs.freq_base,
                    freq_scale: cs.freq_scale,
                    mode,
                };
                let pos = positions(rng, cs.n_tokens, cs.positions);
                let x = rand_f32(rng, cs.n_tokens * cs.n_heads * cs.head_dim, -2.0, 2.0);
                let mut want = x.clone();
                rope_ref(&p, &pos, &mut want).map_err(ref_failed)?;
                let mut out = Guarded::from_slice(&x);
                imp(&p, &pos, out.as_mut_slice()).map_err(impl_failed)?;
                check_output("x", &out, &want, tol)
            });
        }
    }
    let p = RopeParams {
        n_tokens: 2,
        n_heads: 1,
        head_dim: 8,
        n_rot: 8,
        freq_base: 10000.0,
        freq_scale: 1.0,
        mode: RopeMode::Normal,
    };
    let rejects = [
        (
            "rejects odd n_rot",
            RopeParams { n_rot: 7, ..p },
            vec![0, 1],
        ),
        (
            "rejects n_rot > head_dim",
            RopeParams { n_rot: 10, ..p },
            vec![0, 1],
        ),
        (
            "rejects freq_base 0",
            RopeParams {
                freq_base: 0.0,
                ..p
            },
            vec![0, 1],
        ),
        ("rejects positions of the wrong length", p, vec![0]),
    ];
    for (name, bad, pos) in rejects {
        run.case(name, false, |rng| {
            let x = rand_f32(rng, 16, -1.0, 1.0);
            let mut g = Guarded::from_slice(&x);
            match imp(&bad, &pos, g.as_mut_slice()) {
                Ok(()) => Err("accepted an invalid call".to_string()),
                Err(_) if g.as_slice() != x.as_slice() => {
                    Err("returned an error but modified x (validate first)".to_string())
                }
                Err(_) => g.check_guards(),
            }
        });
    }
    run.finish()
}

/// The frequency factors of a [`FACTOR_CASES`] entry.
#[derive(Debug, Clone, Copy)]
pub enum Factors {
    /// Llama 3.1's `rope_freqs` as llama.cpp's converter derives them from
    /// the `llama3` rope scaling (factor 8, low/high frequency factors 1 and
    /// 4, original context 8192): 1 for short wavelengths, 8 for long ones,
    /// smoothly interpolated between.
    Llama3,
    /// Independent uniform factors in `[lo, hi)`.
    Random(f32, f32),
}

pub(crate) fn factors(rng: &mut impl Rng, p: &RopeParams, f: Factors) -> Vec<f32> {
    let half = p.n_rot / 2;
    match f {
        Factors::Llama3 => (0..half)
            .map(|i| {
                let (factor, low, high, ctx) = (8.0, 1.0, 4.0, 8192.0);
                let wavelen = 2.0 * std::f64::consts::PI / p.inv_freq(i);
                if wavelen < ctx / high {
                    1.0
                } else if wavelen > ctx / low {
                    factor as f32
                } else {
                    let smooth = (ctx / wavelen - low) / (high - low);
                    (1.0 / ((1.0 - smooth) / factor + smooth)) as f32
                }
            })
            .collect(),
        Factors::Random(lo, hi) => (0..half).map(|_| rng.gen_range(lo..hi)).collect(),
    }
}

/// Cases of [`check_rope_factors`]: tiny and odd pair counts, partial
/// rotation, random factors (some below 1: faster than the base frequency),
/// and Llama 3.1 8B's shapes (head_dim 128, base 500000, 32 q / 8 kv heads)
/// with its factors: decode deep into a long context and a prefill.
pub const FACTOR_CASES: &[(RopeCase, Factors)] = &[
    (
        c(1, 1, 2, 2, 10000.0, 1.0, From(3), false),
        Factors::Random(0.5, 4.0),
    ),
    (
        c(3, 2, 8, 8, 10000.0, 1.0, From(0), false),
        Factors::Random(0.5, 4.0),
    ),
    (
        c(5, 1, 66, 34, 10000.0, 1.0, Random(-50, 9000), false),
        Factors::Random(0.25, 40.0),
    ),
    (
        c(4, 5, 80, 48, 500000.0, 0.5, Random(0, 9000), false),
        Factors::Llama3,
    ),
    (
        c(7, 8, 128, 128, 500000.0, 1.0, From(5), false),
        Factors::Llama3,
    ),
    (
        c(1, 32, 128, 128, 500000.0, 1.0, From(100_000), false),
        Factors::Llama3,
    ),
    (
        c(17, 8, 128, 128, 500000.0, 1.0, From(4000), false),
        Factors::Llama3,
    ),
    (
        c(512, 8, 128, 128, 500000.0, 1.0, From(0), true),
        Factors::Llama3,
    ),
];

/// Run every frequency-factor case, in both modes, against `imp`.
pub fn check_rope_factors(imp: &RopeFactorsFn<'_>) -> Report {
    check_rope_factors_with(imp, &Options::default())
}

/// [`check_rope_factors`] with explicit options.
pub fn check_rope_factors_with(imp: &RopeFactorsFn<'_>, opts: &Options) -> Report {
    let mut run = Runner::new("rope_factors", opts);
    let tol = run.tol(Tol::ROPE);
    for (cs, fk) in FACTOR_CASES {
        for mode in [RopeMode::Normal, RopeMode::Neox] {
            let name = format!(
                "{mode:?} tokens={} heads={} head_dim={} n_rot={} base={} scale={} pos={:?} factors={fk:?}",
                cs.n_tokens, cs.n_heads, cs.head_dim, cs.n_rot, cs.freq_base, cs.freq_scale, cs.positions
            );
            run.case(&name, cs.big, |rng| {
                let p = RopeParams {
                    n_tokens: cs.n_tokens,
                    n_heads: cs.n_heads,
                    head_dim: cs.head_dim,
                    n_rot: cs.n_rot,
                    freq_base: cs.freq_base,
                    freq_scale: cs.freq_scale,
                    mode,
                };
                let f = factors(rng, &p, *fk);
                let pos = positions(rng, cs.n_tokens, cs.positions);
                let x = rand_f32(rng, cs.n_tokens * cs.n_heads * cs.head_dim, -2.0, 2.0);
                let mut want = x.clone();
                rope_ref_with_factors(&p, Some(&f), &pos, &mut want).map_err(ref_failed)?;
                let mut out = Guarded::from_slice(&x);
                imp(&p, &f, &pos, out.as_mut_slice()).map_err(impl_failed)?;
                check_output("x", &out, &want, tol)
            });
        }
    }
    let p = RopeParams {
        n_tokens: 2,
        n_heads: 1,
        head_dim: 8,
        n_rot: 8,
        freq_base: 10000.0,
        freq_scale: 1.0,
        mode: RopeMode::Neox,
    };
    let rejects: [(&str, Vec<f32>); 4] = [
        ("rejects too few factors", vec![1.0; 3]),
        ("rejects too many factors", vec![1.0; 5]),
        ("rejects a zero factor", vec![1.0, 0.0, 1.0, 1.0]),
        ("rejects a NaN factor", vec![1.0, 1.0, 1.0, f32::NAN]),
    ];
    for (name, f) in rejects {
        run.case(name, false, |rng| {
            let x = rand_f32(rng, 16, -1.0, 1.0);
            let mut g = Guarded::from_slice(&x);
            match imp(&p, &f, &[0, 1], g.as_mut_slice()) {
                Ok(()) => Err("accepted an invalid call".to_string()),
                Err(_) if g.as_slice() != x.as_slice() => {
                    Err("returned an error but modified x (validate first)".to_string())
                }
                Err(_) => g.check_guards(),
            }
        });
    }
    run.finish()
}
