//! Tests of the llama.cpp-style sampling chain in `kiln_models::sampler`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_models::sampler::{Sampler, SamplerError, SamplerParams};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Allowed deviation of an empirical count from its expectation, in standard
/// deviations of the binomial(n, p) count. 5 sigma: a correct sampler fails a
/// single check with probability ~6e-7, a wrong distribution is caught.
const BINOMIAL_SIGMAS: f64 = 5.0;

/// Fresh random logits in [-scale, scale); the seed is printed for replay.
fn random_logits(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    eprintln!("random_logits seed={seed} n={n}");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Plain sampling: temperature `t`, no truncation, no penalty.
fn plain(t: f32, seed: u64) -> SamplerParams {
    SamplerParams {
        temperature: t,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        repeat_penalty: 1.0,
        repeat_last_n: 64,
        seed,
    }
}

/// Softmax in f64.
fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = logits.iter().map(|&l| (l as f64 - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

/// Draw `n` tokens and return per-token counts.
fn histogram(s: &mut Sampler, logits: &[f32], n: usize) -> Vec<usize> {
    let mut counts = vec![0usize; logits.len()];
    for _ in 0..n {
        counts[s.sample(logits).unwrap() as usize] += 1;
    }
    counts
}

/// Assert every count matches n·p within the binomial bound (p = 0 ⇒ count 0).
fn assert_matches(counts: &[usize], probs: &[f64], what: &str) {
    let n: usize = counts.iter().sum();
    let mut failures = Vec::new();
    for (i, (&c, &p)) in counts.iter().zip(probs).enumerate() {
        let expect = n as f64 * p;
        let bound = BINOMIAL_SIGMAS * (n as f64 * p * (1.0 - p)).sqrt() + 1.0;
        let ok = if p == 0.0 {
            c == 0
        } else {
            (c as f64 - expect).abs() <= bound
        };
        if !ok {
            failures.push(format!(
                "token {i}: count {c}, expected {expect:.1} ± {bound:.1}"
            ));
        }
    }
    assert!(failures.is_empty(), "{what}: {}", failures.join("; "));
}

#[test]
fn defaults_are_llama_cpp() {
    let p = SamplerParams::default();
    assert_eq!(p.temperature, 0.8);
    assert_eq!(p.top_k, 40);
    assert_eq!(p.top_p, 0.95);
    assert_eq!(p.min_p, 0.05);
    assert_eq!(p.repeat_penalty, 1.0);
    assert_eq!(p.repeat_last_n, 64);
    p.validate().unwrap();
}

#[test]
fn greedy_picks_argmax() {
    for (k, &n) in [1usize, 2, 7, 33, 257, 49152].iter().enumerate() {
        let logits = random_logits(100 + k as u64, n, 10.0);
        for temp in [0.0, 1e-30] {
            let mut s = Sampler::new(SamplerParams {
                temperature: temp,
                ..SamplerParams::default()
            })
            .unwrap();
            assert_eq!(s.sample(&logits).unwrap(), argmax(&logits), "n={n}");
        }
    }
}

#[test]
fn greedy_ties_nan_and_inf() {
    let mut s = Sampler::new(SamplerParams::greedy()).unwrap();
    // First of equal maxima.
    assert_eq!(s.sample(&[1.0, 3.0, 3.0, 2.0]).unwrap(), 1);
    // NaN never wins, wherever it sits.
    assert_eq!(s.sample(&[f32::NAN, 0.5, f32::NAN, 0.7]).unwrap(), 3);
    assert_eq!(s.sample(&[-5.0, f32::NAN]).unwrap(), 0);
    // +inf wins; -inf is only a mask.
    assert_eq!(s.sample(&[1e30, f32::INFINITY, 0.0]).unwrap(), 1);
    assert_eq!(s.sample(&[f32::NEG_INFINITY, -1e30]).unwrap(), 1);
    // Nothing usable: error naming the vocabulary size.
    let err = s
        .sample(&[f32::NAN, f32::NEG_INFINITY, f32::NAN])
        .unwrap_err();
    assert_eq!(err, SamplerError::NoFiniteLogits { n_vocab: 3 });
    assert!(err.to_string().contains('3'), "{err}");
    assert_eq!(s.sample(&[]).unwrap_err(), SamplerError::EmptyLogits);
}

#[test]
fn stochastic_nan_inf_handling() {
    let mut s = Sampler::new(plain(1.0, 7)).unwrap();
    let logits = [f32::NAN, 0.0, f32::NEG_INFINITY, 0.0, f32::NAN];
    let counts = histogram(&mut s, &logits, 2000);
    assert_eq!(counts[0] + counts[2] + counts[4], 0, "{counts:?}");
    assert_matches(&counts, &[0.0, 0.5, 0.0, 0.5, 0.0], "NaN/-inf masked");
    // +inf tokens take all the mass, shared equally.
    let logits = [f32::INFINITY, 50.0, f32::INFINITY, f32::NAN];
    let counts = histogram(&mut s, &logits, 2000);
    assert_matches(&counts, &[0.5, 0.0, 0.5, 0.0], "+inf certain");
    let err = s.sample(&[f32::NAN; 4]).unwrap_err();
    assert_eq!(err, SamplerError::NoFiniteLogits { n_vocab: 4 });
}

#[test]
fn same_seed_same_sequence_different_seed_differs() {
    let logits = random_logits(7, 1000, 2.0);
    let run = |seed: u64| -> Vec<u32> {
        let mut s = Sampler::new(SamplerParams {
            seed,
            ..SamplerParams::default()
        })
        .unwrap();
        (0..64).map(|_| s.sample(&logits).unwrap()).collect()
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
}

#[test]
fn reset_replays_the_sequence() {
    let logits = random_logits(8, 300, 2.0);
    let mut s = Sampler::new(SamplerParams {
        seed: 5,
        repeat_penalty: 1.3,
        ..SamplerParams::default()
    })
    .unwrap();
    let mut first = Vec::new();
    for _ in 0..32 {
        let t = s.sample(&logits).unwrap();
        s.accept(t);
        first.push(t);
    }
    s.reset();
    let mut second = Vec::new();
    for _ in 0..32 {
        let t = s.sample(&logits).unwrap();
        s.accept(t);
        second.push(t);
    }
    assert_eq!(first, second);
}

#[test]
fn top_k_one_equals_greedy() {
    for (k, &n) in [1usize, 5, 64, 4099, 49152].iter().enumerate() {
        let logits = random_logits(200 + k as u64, n, 4.0);
        for seed in 0..4 {
            let mut s = Sampler::new(SamplerParams {
                top_k: 1,
                temperature: 1.5,
                seed,
                ..SamplerParams::default()
            })
            .unwrap();
            assert_eq!(s.sample(&logits).unwrap(), argmax(&logits), "n={n}");
        }
    }
}

#[test]
fn empirical_frequencies_match_softmax() {
    const DRAWS: usize = 20_000;
    let seed = 0x5eed;
    let logits = random_logits(seed, 9, 2.0);
    let probs = softmax(&logits);
    let mut s = Sampler::new(plain(1.0, seed)).unwrap();
    let counts = histogram(&mut s, &logits, DRAWS);
    eprintln!("counts {counts:?} probs {probs:?}");
    assert_matches(&counts, &probs, "temp 1");

    // Temperature 0.5 is softmax of 2·logits.
    let scaled: Vec<f32> = logits.iter().map(|l| l * 2.0).collect();
    let mut s = Sampler::new(plain(0.5, seed + 1)).unwrap();
    let counts = histogram(&mut s, &logits, DRAWS);
    assert_matches(&counts, &softmax(&scaled), "temp 0.5");
}

/// Logits whose softmax is exactly `probs`.
fn logits_of(probs: &[f64]) -> Vec<f32> {
    probs.iter().map(|p| p.ln() as f32).collect()
}

#[test]
fn top_p_keeps_the_smallest_prefix() {
    // Shuffled so that nothing depends on input order.
    let probs = [0.15, 0.5, 0.05, 0.3];
    let logits = logits_of(&probs);
    let cases: [(f32, &[f64]); 4] = [
        // 0.5 < 0.75 <= 0.5 + 0.3: keep {0.5, 0.3}.
        (0.75, &[0.0, 0.5 / 0.8, 0.0, 0.3 / 0.8]),
        // First token alone reaches 0.45.
        (0.45, &[0.0, 1.0, 0.0, 0.0]),
        // Needs three tokens.
        (0.9, &[0.15 / 0.95, 0.5 / 0.95, 0.0, 0.3 / 0.95]),
        (1.0, &probs),
    ];
    for (top_p, expect) in cases {
        for top_k in [0, 3, 4] {
            let mut s = Sampler::new(SamplerParams {
                top_p,
                top_k,
                ..plain(1.0, 11)
            })
            .unwrap();
            let counts = histogram(&mut s, &logits, 4000);
            let expect: Vec<f64> = if top_k == 3 && top_p == 1.0 {
                vec![0.15 / 0.95, 0.5 / 0.95, 0.0, 0.3 / 0.95]
            } else {
                expect.to_vec()
            };
            assert_matches(&counts, &expect, &format!("top_p={top_p} top_k={top_k}"));
        }
    }
}

#[test]
fn min_p_drops_unlikely_tokens() {
    let probs = [0.15, 0.5, 0.05, 0.3];
    let logits = logits_of(&probs);
    let cases: [(f32, &[f64]); 3] = [
        // Threshold 0.2 · 0.5 = 0.1: drops 0.05.
        (0.2, &[0.15 / 0.95, 0.5 / 0.95, 0.0, 0.3 / 0.95]),
        // Threshold 0.25: keeps 0.5 and 0.3.
        (0.5, &[0.0, 0.5 / 0.8, 0.0, 0.3 / 0.8]),
        // Threshold 0.5: only the maximum.
        (1.0, &[0.0, 1.0, 0.0, 0.0]),
    ];
    for (min_p, expect) in cases {
        // top_k 0 exercises the unsorted path, top_k 4 the sorted one.
        for top_k in [0, 4] {
            let mut s = Sampler::new(SamplerParams {
                min_p,
                top_k,
                ..plain(1.0, 12)
            })
            .unwrap();
            let counts = histogram(&mut s, &logits, 4000);
            assert_matches(&counts, expect, &format!("min_p={min_p} top_k={top_k}"));
        }
    }
}

#[test]
fn min_p_uses_temperature_one_probabilities() {
    // At temperature 2 a token with p/p_max = 0.3 at temp 1 survives min_p 0.5
    // only if min-p ran after temperature; llama.cpp runs it before.
    let logits = logits_of(&[0.7, 0.21, 0.09]);
    let mut s = Sampler::new(SamplerParams {
        min_p: 0.5,
        ..plain(2.0, 13)
    })
    .unwrap();
    let counts = histogram(&mut s, &logits, 500);
    assert_eq!(counts, vec![500, 0, 0]);
}

#[test]
fn repetition_penalty_by_hand() {
    let greedy = |penalty: f32, last_n: usize, history: &[u32], logits: &[f32]| -> u32 {
        let mut s = Sampler::new(SamplerParams {
            repeat_penalty: penalty,
            repeat_last_n: last_n,
            ..SamplerParams::greedy()
        })
        .unwrap();
        for &t in history {
            s.accept(t);
        }
        s.sample(logits).unwrap()
    };
    // [2.0, -1.0, 0.5, 1.9] with penalty 2 on {0, 1} → [1.0, -2.0, 0.5, 1.9].
    let logits = [2.0, -1.0, 0.5, 1.9];
    assert_eq!(greedy(2.0, 64, &[], &logits), 0);
    assert_eq!(greedy(2.0, 64, &[0, 1, 0], &logits), 3);
    // Negative logits are multiplied: -1.0 · 2 = -2.0 < -1.5.
    assert_eq!(greedy(2.0, 64, &[0], &[-1.0, -1.5]), 1);
    // Once per distinct token: 4.0 / 2 = 2.0 > 1.5 (twice would give 1.0).
    assert_eq!(greedy(2.0, 64, &[0, 0, 0], &[4.0, 1.5]), 0);
    // Penalty < 1 boosts: 1.0 / 0.5 = 2.0 > 1.5.
    assert_eq!(greedy(0.5, 64, &[0], &[1.0, 1.5]), 0);
    // Window: with last_n 2, token 0 has left the window after 5, 6.
    assert_eq!(greedy(2.0, 2, &[0, 5, 6], &[2.0, 1.9]), 0);
    assert_eq!(greedy(2.0, 3, &[0, 5, 6], &[2.0, 1.9]), 1);
    // last_n 0 switches the penalty off; ids beyond the vocabulary are ignored.
    assert_eq!(greedy(2.0, 0, &[0], &[2.0, 1.9]), 0);
    assert_eq!(greedy(2.0, 64, &[99, 1_000_000], &[2.0, 1.9]), 0);

    // The penalty shapes the distribution: [1, 1] with token 0 penalised by 2
    // is softmax([0.5, 1.0]).
    let mut s = Sampler::new(SamplerParams {
        repeat_penalty: 2.0,
        ..plain(1.0, 14)
    })
    .unwrap();
    s.accept(0);
    let counts = histogram(&mut s, &[1.0, 1.0], 20_000);
    assert_matches(&counts, &softmax(&[0.5, 1.0]), "penalised pair");
}

#[test]
fn validation_names_flag_and_value() {
    let cases: [(SamplerParams, &str, &str); 9] = [
        (
            SamplerParams {
                temperature: f32::NAN,
                ..Default::default()
            },
            "--temp",
            "NaN",
        ),
        (
            SamplerParams {
                temperature: -0.5,
                ..Default::default()
            },
            "--temp",
            "-0.5",
        ),
        (
            SamplerParams {
                temperature: f32::INFINITY,
                ..Default::default()
            },
            "--temp",
            "inf",
        ),
        (
            SamplerParams {
                top_p: 0.0,
                ..Default::default()
            },
            "--top-p",
            "0",
        ),
        (
            SamplerParams {
                top_p: 1.5,
                ..Default::default()
            },
            "--top-p",
            "1.5",
        ),
        (
            SamplerParams {
                min_p: -0.1,
                ..Default::default()
            },
            "--min-p",
            "-0.1",
        ),
        (
            SamplerParams {
                min_p: 2.0,
                ..Default::default()
            },
            "--min-p",
            "2",
        ),
        (
            SamplerParams {
                repeat_penalty: 0.0,
                ..Default::default()
            },
            "--repeat-penalty",
            "0",
        ),
        (
            SamplerParams {
                repeat_penalty: f32::NAN,
                ..Default::default()
            },
            "--repeat-penalty",
            "NaN",
        ),
    ];
    for (p, flag, value) in cases {
        let err = Sampler::new(p).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, SamplerError::InvalidParam { flag: f, .. } if f == flag),
            "{msg}"
        );
        assert!(msg.contains(flag) && msg.contains(value), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
    // Edges that are valid.
    for p in [
        SamplerParams {
            temperature: 0.0,
            top_p: 1.0,
            min_p: 0.0,
            ..Default::default()
        },
        SamplerParams {
            min_p: 1.0,
            repeat_penalty: 1e-3,
            top_k: 0,
            repeat_last_n: 0,
            ..Default::default()
        },
    ] {
        p.validate().unwrap();
    }
}

#[test]
fn tiny_temperature_is_greedy() {
    let logits = random_logits(300, 1000, 3.0);
    let mut s = Sampler::new(plain(1e-20, 3)).unwrap();
    for _ in 0..20 {
        assert_eq!(s.sample(&logits).unwrap(), argmax(&logits));
    }
}

#[test]
fn large_vocab_paths_pick_plausible_tokens() {
    // 262k vocabulary (Gemma 3 size) through the top-k path and the full-sort
    // top-p path; every pick must be within the kept set.
    let n = 262_144;
    let logits = random_logits(400, n, 8.0);
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    let rank = |t: u32| order.iter().position(|&x| x == t).unwrap();

    let mut s = Sampler::new(SamplerParams {
        seed: 1,
        ..SamplerParams::default()
    })
    .unwrap();
    let start = std::time::Instant::now();
    for _ in 0..20 {
        let t = s.sample(&logits).unwrap();
        assert!(rank(t) < 40, "top-k 40 returned rank {}", rank(t));
    }
    eprintln!("top-k path: {:?}/token", start.elapsed() / 20);

    let mut s = Sampler::new(SamplerParams {
        top_k: 0,
        top_p: 0.5,
        min_p: 0.0,
        seed: 2,
        ..SamplerParams::default()
    })
    .unwrap();
    // Size of the top-p 0.5 nucleus, computed independently.
    let probs = softmax(&logits);
    let mut cum = 0.0;
    let mut nucleus = 0;
    while cum < 0.5 {
        cum += probs[order[nucleus] as usize];
        nucleus += 1;
    }
    let start = std::time::Instant::now();
    for _ in 0..5 {
        let t = s.sample(&logits).unwrap();
        assert!(rank(t) < nucleus + 1, "rank {} nucleus {nucleus}", rank(t));
    }
    eprintln!(
        "full-sort top-p path: {:?}/token (nucleus {nucleus})",
        start.elapsed() / 5
    );
}

#[test]
fn host_sampler_timing() {
    // Not a pass/fail check: per-token cost of the host sampler on
    // SmolLM2's and Gemma 3's vocabulary sizes (printed; see the commit).
    let configs: [(&str, SamplerParams); 5] = [
        (
            "defaults (k40 p0.95 min0.05 t0.8)",
            SamplerParams::default(),
        ),
        (
            "defaults + penalty 1.1 (64 ids)",
            SamplerParams {
                repeat_penalty: 1.1,
                ..SamplerParams::default()
            },
        ),
        (
            "no top-k: top_p 0.9",
            SamplerParams {
                top_k: 0,
                top_p: 0.9,
                min_p: 0.0,
                ..SamplerParams::default()
            },
        ),
        ("temperature only", plain(1.0, 0)),
        (
            "greedy + penalty",
            SamplerParams {
                repeat_penalty: 1.1,
                ..SamplerParams::greedy()
            },
        ),
    ];
    for n in [49152usize, 262_144] {
        // LM-like logits: a normal-ish spread with sd ~3.
        let base = random_logits(500, n, 3.0);
        let extra = random_logits(501, n, 3.0);
        let logits: Vec<f32> = base.iter().zip(&extra).map(|(a, b)| a + b).collect();
        for (name, p) in &configs {
            let mut s = Sampler::new(*p).unwrap();
            for t in 0..64 {
                s.accept((t * 7919) as u32 % n as u32);
            }
            s.sample(&logits).unwrap();
            let reps = 20;
            let start = std::time::Instant::now();
            for _ in 0..reps {
                std::hint::black_box(s.sample(&logits).unwrap());
            }
            eprintln!("n={n} {name}: {:?}/token", start.elapsed() / reps);
        }
    }
}
