//! The sample reference against hand-worked cases of each stage, and its
//! building blocks (key order, the shared exponential) against f64.
#![allow(clippy::unwrap_used, clippy::panic)]
use super::*;

/// Every stage off, temperature 1.
fn plain(n_vocab: usize) -> SampleParams {
    SampleParams {
        n_vocab,
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        repeat_penalty: 1.0,
        n_penalty_ids: 0,
    }
}

fn run(p: &SampleParams, x: &[f32], u: f64) -> u32 {
    sample_ref(p, x, &[], u).unwrap()
}

/// Logits whose softmax is `probs`.
fn logits_of(probs: &[f64]) -> Vec<f32> {
    probs.iter().map(|p| p.ln() as f32).collect()
}

/// The ids drawn over a fine grid of u, with multiplicity.
fn counts(p: &SampleParams, x: &[f32], ids: &[u32]) -> Vec<usize> {
    let mut c = vec![0usize; x.len()];
    for j in 0..1000 {
        c[sample_ref(p, x, ids, (j as f64 + 0.5) / 1000.0).unwrap() as usize] += 1;
    }
    c
}

#[test]
fn weight_is_exp_within_two_ulp() {
    assert_eq!(weight(0.0), WEIGHT_ONE);
    assert_eq!(weight(-0.0), WEIGHT_ONE);
    assert_eq!(weight(-22.0), 0);
    assert_eq!(weight(f32::NEG_INFINITY), 0);
    assert_eq!(weight(f32::NAN), 0);
    let mut worst = 0.0f64;
    let mut prev = WEIGHT_ONE;
    for i in 0..=220_000 {
        let x = -(i as f32) * 1e-4;
        let w = weight(x);
        let want = 2f64.powi(31) * f64::from(x).exp();
        // Truncation loses < 1; the f32 exponential ~2 ulp (2^-23 relative).
        let err = (f64::from(w) - want).abs() - 1.0;
        worst = worst.max(err / want);
        assert!(err <= want * 2.5e-7, "x={x}: {w} vs {want}");
        assert!(w <= prev, "not monotone at x={x}");
        prev = w;
    }
    eprintln!("weight: worst relative error {worst:e}");
}

#[test]
fn keys_order_like_values() {
    let vals = [
        -f32::MAX,
        -1e30,
        -2.5,
        -f32::MIN_POSITIVE,
        -1e-45,
        0.0,
        1e-45,
        1.0,
        3e38,
        f32::MAX,
        f32::INFINITY,
    ];
    for w in vals.windows(2) {
        assert!(key(w[0]) < key(w[1]), "{} {}", w[0], w[1]);
    }
    assert_eq!(key(-0.0), key(0.0));
    assert_eq!(key(f32::INFINITY), KEY_INF);
    assert_eq!(key(f32::NAN), 0);
    assert_eq!(key(-f32::NAN), 0);
    assert_eq!(key(f32::NEG_INFINITY), 0);
    assert!(key(-f32::MAX) >= 0x0080_0000);
    for v in vals {
        assert_eq!(key_value(key(v)).to_bits(), (v + 0.0).to_bits(), "{v}");
    }
}

#[test]
fn temperature_zero_is_the_first_maximum() {
    let p = SampleParams {
        temperature: 0.0,
        ..plain(5)
    };
    assert_eq!(run(&p, &[1.0, 3.0, -2.0, 3.0, 0.0], 0.99), 1);
    assert_eq!(
        run(&p, &[f32::NAN, 1.0, f32::INFINITY, 5.0, f32::INFINITY], 0.9),
        2
    );
    assert_eq!(run(&p, &[-0.0, 0.0, -1.0, f32::NAN, -5.0], 0.5), 0);
}

#[test]
fn draw_walks_ids_in_order() {
    // Equal weights 2^31 each: total 2^33, u picks the quarter.
    let x = [2.0f32; 4];
    for (u, id) in [(0.0, 0), (0.2499, 0), (0.25, 1), (0.5, 2), (0.999_999, 3)] {
        assert_eq!(run(&plain(4), &x, u), id, "u={u}");
    }
    // NaN and -inf are skipped by the walk.
    let x = [f32::NAN, 1.0, f32::NEG_INFINITY, 1.0];
    assert_eq!(counts(&plain(4), &x, &[]), vec![0, 500, 0, 500]);
}

#[test]
fn infinities_are_certain_and_equally_likely() {
    let x = [f32::INFINITY, 50.0, f32::NAN, f32::INFINITY, f32::INFINITY];
    assert_eq!(counts(&plain(5), &x, &[]), vec![333, 0, 0, 334, 333]);
    // Even with top-k 1 (ties kept) and top-p.
    let p = SampleParams {
        top_k: 1,
        top_p: 0.1,
        ..plain(5)
    };
    assert_eq!(counts(&p, &x, &[]), vec![333, 0, 0, 334, 333]);
}

#[test]
fn nothing_usable_is_the_sentinel() {
    let x = [f32::NAN, f32::NEG_INFINITY, f32::NAN];
    assert_eq!(run(&plain(3), &x, 0.3), NO_TOKEN);
    let p = SampleParams {
        temperature: 0.0,
        ..plain(3)
    };
    assert_eq!(run(&p, &x, 0.3), NO_TOKEN);
    assert!(no_usable(3).to_string().contains("sample: none of the 3"));
}

#[test]
fn top_k_keeps_ties_at_the_threshold() {
    let x = [1.0, 5.0, 3.0, 3.0, 0.0, 3.0];
    let p = SampleParams {
        top_k: 2,
        ..plain(6)
    };
    let c = counts(&p, &x, &[]);
    // 5 and the three 3s stay (the 2nd largest is 3).
    assert!(c[1] > 0 && c[2] > 0 && c[3] > 0 && c[5] > 0, "{c:?}");
    assert_eq!(c[0] + c[4], 0, "{c:?}");
    let p = SampleParams {
        top_k: 1,
        ..plain(6)
    };
    assert_eq!(counts(&p, &x, &[])[1], 1000);
    // top_k >= usable count is off: all 6 drawn.
    let p = SampleParams {
        top_k: 6,
        ..plain(6)
    };
    assert!(counts(&p, &x, &[]).iter().all(|&c| c > 0));
}

#[test]
fn top_p_is_a_probability_threshold() {
    let probs = [0.15, 0.5, 0.05, 0.3];
    let x = logits_of(&probs);
    for (top_p, kept) in [
        (0.75, vec![1, 3]),
        (0.45, vec![1]),
        (0.5, vec![1]),
        (0.9, vec![0, 1, 3]),
        (0.99, vec![0, 1, 2, 3]),
    ] {
        let p = SampleParams { top_p, ..plain(4) };
        let c = counts(&p, &x, &[]);
        for (i, &n) in c.iter().enumerate() {
            assert_eq!(n > 0, kept.contains(&i), "top_p {top_p}: {c:?}");
        }
    }
    // Ties at the threshold are all kept: 0.4, 0.2, 0.2, 0.2 with top_p 0.5.
    let x = logits_of(&[0.2, 0.4, 0.2, 0.2]);
    let p = SampleParams {
        top_p: 0.5,
        ..plain(4)
    };
    assert!(counts(&p, &x, &[]).iter().all(|&c| c > 0));
    // Over the top-k survivors: with top_k 2, {0.5, 0.3} renormalised.
    let x = logits_of(&probs);
    let p = SampleParams {
        top_k: 2,
        top_p: 0.6,
        ..plain(4)
    };
    assert_eq!(counts(&p, &x, &[])[1], 1000);
}

#[test]
fn min_p_and_temperature() {
    let x = logits_of(&[0.15, 0.5, 0.05, 0.3]);
    let p = SampleParams {
        min_p: 0.2,
        ..plain(4)
    };
    let c = counts(&p, &x, &[]);
    assert_eq!(c[2], 0, "{c:?}");
    assert!(c[0] > 0 && c[3] > 0);
    let p = SampleParams {
        min_p: 1.0,
        ..plain(4)
    };
    assert_eq!(counts(&p, &x, &[])[1], 1000);
    // min-p on temperature-1 probabilities: at temperature 4 the others
    // would pass 0.5 of the max, but they are cut before.
    let p = SampleParams {
        min_p: 0.7,
        temperature: 4.0,
        ..plain(4)
    };
    assert_eq!(counts(&p, &x, &[])[1], 1000);
    // Temperature 0.5 squares the probabilities: 0.5² : 0.3² = 25 : 9.
    let x = logits_of(&[0.5, 0.3]);
    let p = SampleParams {
        temperature: 0.5,
        ..plain(2)
    };
    let c = counts(&p, &x, &[]);
    assert!((c[0] as f64 / 1000.0 - 25.0 / 34.0).abs() < 2e-3, "{c:?}");
}

#[test]
fn penalty_once_per_distinct_id_and_ignores_foreign_ids() {
    let greedy = |penalty: f32, ids: &[u32], x: &[f32]| {
        let p = SampleParams {
            temperature: 0.0,
            repeat_penalty: penalty,
            n_penalty_ids: ids.len(),
            ..plain(x.len())
        };
        sample_ref(&p, x, ids, 0.5).unwrap()
    };
    let x = [2.0, -1.0, 0.5, 1.9];
    assert_eq!(greedy(2.0, &[], &x), 0);
    assert_eq!(greedy(2.0, &[0, 1, 0], &x), 3);
    assert_eq!(greedy(2.0, &[0], &[-1.0, -1.5]), 1);
    assert_eq!(greedy(2.0, &[0, 0, 0], &[4.0, 1.5]), 0);
    assert_eq!(greedy(0.5, &[0], &[1.0, 1.5]), 0);
    assert_eq!(greedy(2.0, &[99, u32::MAX, 2], &[2.0, 1.9]), 0);
    // A penalty of 1 changes nothing, ids or not.
    assert_eq!(greedy(1.0, &[0], &[2.0, 1.9]), 0);
    let v = penalized(
        &SampleParams {
            repeat_penalty: 2.0,
            n_penalty_ids: 4,
            ..plain(3)
        },
        &[4.0, -4.0, f32::NAN],
        &[1, 0, 1, 2],
    );
    assert_eq!(&v[..2], &[2.0, -8.0]);
    assert!(v[2].is_nan());
}

#[test]
fn rejects_bad_params_and_inputs() {
    let ok = plain(3);
    let x = [0.0f32; 3];
    let cases = [
        (SampleParams { n_vocab: 0, ..ok }, "n_vocab 0"),
        (
            SampleParams {
                temperature: -1.0,
                ..ok
            },
            "temperature -1",
        ),
        (
            SampleParams {
                temperature: f32::NAN,
                ..ok
            },
            "temperature NaN",
        ),
        (SampleParams { top_p: 0.0, ..ok }, "top_p 0"),
        (SampleParams { top_p: 1.5, ..ok }, "top_p 1.5"),
        (SampleParams { min_p: -0.1, ..ok }, "min_p -0.1"),
        (
            SampleParams {
                min_p: f32::NAN,
                ..ok
            },
            "min_p NaN",
        ),
        (
            SampleParams {
                repeat_penalty: 0.0,
                ..ok
            },
            "repeat_penalty 0",
        ),
        (
            SampleParams {
                repeat_penalty: f32::INFINITY,
                ..ok
            },
            "repeat_penalty inf",
        ),
    ];
    for (p, want) in cases {
        let e = sample_ref(&p, &x, &[], 0.5).unwrap_err().to_string();
        assert!(e.starts_with("sample: ") && e.contains(want), "{e}");
    }
    for u in [-0.1, 1.0, f64::NAN, f64::INFINITY] {
        let e = sample_ref(&ok, &x, &[], u).unwrap_err().to_string();
        assert!(e.contains("draw u"), "{e}");
    }
    assert!(sample_ref(&ok, &x[..2], &[], 0.5).is_err());
    assert!(sample_ref(&ok, &x, &[1], 0.5).is_err());
}

#[test]
fn targets_clamp() {
    assert_eq!(draw_target(0.0, 5), 0);
    assert_eq!(draw_target(1.0 - f64::EPSILON / 2.0, 5), 4);
    assert_eq!(
        draw_target(1.0 - f64::EPSILON / 2.0, 1 << 62),
        (1 << 62) - 512
    );
    assert_eq!(top_p_target(1e-30, 1 << 31), 1);
    assert_eq!(top_p_target(0.5, 10), 5);
    assert_eq!(top_p_target(0.55, 10), 6);
}
