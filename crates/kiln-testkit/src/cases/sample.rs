//! Case table and driver for `sample` (spec: kiln_core::ops::sample).
//!
//! Exact: the spec makes every backend's id the reference's id for the same
//! draw `u` (thresholds found by counting, integer weights from one shared
//! exponential, integer sums), so there is no tolerance — a difference is a
//! bug, reported with the values and weights around it. Each case runs
//! three draws: `u = 0`, a random one and the largest `u < 1`, and also
//! compares the kept set's threshold key ([`Sampled::threshold`]): a
//! threshold one small-probability token off moves the id only for the
//! rare draws that land on that token.
//!
//! Table: vocabularies 1, 7, 1000 and 49152 + 17; every stage alone and
//! combined (llama.cpp's defaults with a penalty; no top-k with top-p and
//! min-p; temperature 0); logits random, LM-like (one peak over a normal
//! spread), quantized to 0.25 (many exact ties at every threshold), all
//! equal, with NaN / -inf sprinkled in, with a few +inf (certain tokens),
//! with no usable value (the sentinel [`NO_TOKEN`]) and subnormals / ±0
//! under a tiny temperature (so flush-to-zero arithmetic would show).
//! Penalty ids repeat and include ids past the vocabulary (ignored).

use super::{impl_failed, ref_failed, Options, Runner};
use crate::{rand_f32, Report};
use kiln_core::ops::sample::{
    key, key_value, penalized, sample_ref_full, weight, SampleParams, Sampled, NO_TOKEN,
};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Implementation under test: `(params, logits, penalty_ids, u) -> (id,
/// threshold)` (the raw result: [`NO_TOKEN`] when nothing is usable).
pub type SampleFn<'a> =
    dyn Fn(&SampleParams, &[f32], &[u32], f64) -> kiln_core::Result<Sampled> + 'a;

/// Vocabulary sizes: tiny, odd, medium, SmolLM2's 49152 plus an odd tail.
pub const SIZES: &[usize] = &[1, 7, 1000, 49152 + 17];

/// How a case's logits are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Uniform in [-8, 8).
    Random,
    /// A normal-ish spread (sd ~3) with one logit 12 above the rest.
    Peaked,
    /// Uniform in [-4, 4) rounded to 0.25: many exact ties.
    Ties,
    /// Every logit 0.5.
    Flat,
    /// Random with ~15% NaN and ~15% -inf.
    NonFinite,
    /// Random with a few +inf (they take all the mass).
    PosInf,
    /// Only NaN and -inf: the sentinel.
    NoneUsable,
    /// ±0 and subnormals (run under temperature 1e-37 by the table).
    Subnormal,
}

const PATTERNS: &[Pattern] = &[
    Pattern::Random,
    Pattern::Peaked,
    Pattern::Ties,
    Pattern::Flat,
    Pattern::NonFinite,
    Pattern::PosInf,
    Pattern::NoneUsable,
    Pattern::Subnormal,
];

/// Stage settings: (name, temperature, top_k, top_p, min_p, penalty).
const STAGES: &[(&str, f32, usize, f32, f32, f32)] = &[
    ("plain", 1.0, 0, 1.0, 0.0, 1.0),
    ("temp 0", 0.0, 0, 1.0, 0.0, 1.0),
    ("temp 0.7", 0.7, 0, 1.0, 0.0, 1.0),
    ("temp 3", 3.0, 0, 1.0, 0.0, 1.0),
    ("top_k 1", 1.0, 1, 1.0, 0.0, 1.0),
    ("top_k 5", 1.0, 5, 1.0, 0.0, 1.0),
    ("top_k 40", 1.0, 40, 1.0, 0.0, 1.0),
    ("top_p 0.9", 1.0, 0, 0.9, 0.0, 1.0),
    ("top_p 0.3", 1.0, 0, 0.3, 0.0, 1.0),
    ("min_p 0.05", 1.0, 0, 1.0, 0.05, 1.0),
    ("min_p 0.6", 1.0, 0, 1.0, 0.6, 1.0),
    ("penalty 1.3", 1.0, 0, 1.0, 0.0, 1.3),
    ("penalty 0.8 temp 0", 0.0, 0, 1.0, 0.0, 0.8),
    ("llama.cpp defaults + penalty 1.1", 0.8, 40, 0.95, 0.05, 1.1),
    (
        "no top-k: top_p 0.8 min_p 0.02 temp 1.3",
        1.3,
        0,
        0.8,
        0.02,
        1.0,
    ),
    ("top_k 3 top_p 0.5 temp 0.5", 0.5, 3, 0.5, 0.0, 1.0),
];

fn build(rng: &mut ChaCha8Rng, n: usize, pat: Pattern) -> Vec<f32> {
    let mut x = rand_f32(rng, n, -8.0, 8.0);
    match pat {
        Pattern::Random => {}
        Pattern::Peaked => {
            for v in x.iter_mut() {
                // Sum of three uniforms: bell-shaped, sd ~ 3.
                *v = rng.gen_range(-3.0f32..3.0) + rng.gen_range(-3.0..3.0) + *v * 0.375;
            }
            let i = rng.gen_range(0..n);
            x[i] = 12.0 + x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        }
        Pattern::Ties => {
            for v in x.iter_mut() {
                *v = (*v * 2.0).round() / 4.0;
            }
        }
        Pattern::Flat => x.fill(0.5),
        Pattern::NonFinite => {
            for v in x.iter_mut() {
                match rng.gen_range(0..20) {
                    0..=2 => *v = f32::NAN,
                    3..=5 => *v = f32::NEG_INFINITY,
                    _ => {}
                }
            }
        }
        Pattern::PosInf => {
            for _ in 0..n.div_ceil(300).min(5) {
                let i = rng.gen_range(0..n);
                x[i] = f32::INFINITY;
            }
        }
        Pattern::NoneUsable => {
            for v in x.iter_mut() {
                *v = if rng.gen_bool(0.5) {
                    f32::NAN
                } else {
                    f32::NEG_INFINITY
                };
            }
        }
        Pattern::Subnormal => {
            for v in x.iter_mut() {
                // Subnormal magnitudes (< 2^-126), ±0 among them.
                let bits = rng.gen_range(0u32..0x0080_0000) >> rng.gen_range(0..24);
                let sign = if rng.gen_bool(0.5) { 0x8000_0000 } else { 0 };
                *v = f32::from_bits(bits | sign);
            }
        }
    }
    x
}

/// Penalty ids: about 2n/3 (at most 64) draws from [0, n + 4), with
/// repeats, plus `u32::MAX` (both out-of-range kinds ignored).
fn penalty_ids(rng: &mut ChaCha8Rng, n: usize) -> Vec<u32> {
    let count = (2 * n / 3).clamp(1, 64);
    let mut ids: Vec<u32> = (0..count).map(|_| rng.gen_range(0..n as u32 + 4)).collect();
    if let Some(&first) = ids.first() {
        ids.push(first);
    }
    ids.push(u32::MAX);
    ids
}

/// One line about token `i`: its logit, value and weights.
fn describe(p: &SampleParams, v: &[f32], i: u32) -> String {
    let Some(&x) = v.get(i as usize) else {
        return format!("{i} (no such token)");
    };
    let max = v.iter().map(|&x| key(x)).max().unwrap_or(0);
    let m = key_value(max);
    format!(
        "{i} (value {x:e}, w1 {}, w {})",
        weight(x - m),
        weight((x - m) / p.temperature)
    )
}

/// Run every `sample` case against `imp`.
pub fn check_sample(imp: &SampleFn<'_>) -> Report {
    check_sample_with(imp, &Options::default())
}

/// [`check_sample`] with explicit options (ids are exact; `tol` unused).
pub fn check_sample_with(imp: &SampleFn<'_>, opts: &Options) -> Report {
    let mut run = Runner::new("sample", opts);
    for &n in SIZES {
        for &pat in PATTERNS {
            for &(name, temperature, top_k, top_p, min_p, penalty) in STAGES {
                let temperature = match pat {
                    Pattern::Subnormal if temperature > 0.0 => 1e-37,
                    _ => temperature,
                };
                run.case(&format!("n={n} {pat:?} {name}"), false, |rng| {
                    let x = build(rng, n, pat);
                    let ids = if penalty != 1.0 {
                        penalty_ids(rng, n)
                    } else {
                        Vec::new()
                    };
                    let p = SampleParams {
                        n_vocab: n,
                        temperature,
                        top_k,
                        top_p,
                        min_p,
                        repeat_penalty: penalty,
                        n_penalty_ids: ids.len(),
                    };
                    let draws = [0.0, rng.gen_range(0.0..1.0), 1.0 - f64::EPSILON / 2.0];
                    for u in draws {
                        let want = sample_ref_full(&p, &x, &ids, u).map_err(ref_failed)?;
                        let got = imp(&p, &x, &ids, u).map_err(impl_failed)?;
                        if got.threshold != want.threshold {
                            return Err(format!(
                                "u={u}: kept-set threshold {:#010x} ({:e}), want {:#010x} ({:e})",
                                got.threshold,
                                key_value(got.threshold),
                                want.threshold,
                                key_value(want.threshold)
                            ));
                        }
                        if got.id != want.id {
                            let v = penalized(&p, &x, &ids);
                            let show = |i| match i {
                                NO_TOKEN => "NO_TOKEN".to_string(),
                                i => describe(&p, &v, i),
                            };
                            return Err(format!(
                                "u={u}: got {}, want {}",
                                show(got.id),
                                show(want.id)
                            ));
                        }
                    }
                    Ok(())
                });
            }
        }
    }
    let ok = SampleParams {
        n_vocab: 8,
        temperature: 0.8,
        top_k: 40,
        top_p: 0.95,
        min_p: 0.05,
        repeat_penalty: 1.1,
        n_penalty_ids: 2,
    };
    let rejects: [(&str, SampleParams, usize, f64); 11] = [
        (
            "rejects a negative temperature",
            SampleParams {
                temperature: -1.0,
                ..ok
            },
            8,
            0.5,
        ),
        (
            "rejects a NaN temperature",
            SampleParams {
                temperature: f32::NAN,
                ..ok
            },
            8,
            0.5,
        ),
        ("rejects top_p 0", SampleParams { top_p: 0.0, ..ok }, 8, 0.5),
        (
            "rejects top_p above 1",
            SampleParams { top_p: 1.01, ..ok },
            8,
            0.5,
        ),
        (
            "rejects min_p above 1",
            SampleParams { min_p: 2.0, ..ok },
            8,
            0.5,
        ),
        (
            "rejects penalty 0",
            SampleParams {
                repeat_penalty: 0.0,
                ..ok
            },
            8,
            0.5,
        ),
        (
            "rejects an empty vocabulary",
            SampleParams { n_vocab: 0, ..ok },
            0,
            0.5,
        ),
        ("rejects logits shorter than n_vocab", ok, 7, 0.5),
        (
            "rejects a penalty-id count mismatch",
            SampleParams {
                n_penalty_ids: 3,
                ..ok
            },
            8,
            0.5,
        ),
        ("rejects u = 1", ok, 8, 1.0),
        ("rejects u NaN", ok, 8, f64::NAN),
    ];
    for (name, p, len, u) in rejects {
        run.case(name, false, |_| {
            let x = vec![0.25f32; len];
            match imp(&p, &x, &[1, 2], u) {
                Ok(r) => Err(format!("returned {} instead of an error", r.id)),
                Err(_) => Ok(()),
            }
        });
    }
    run.finish()
}
