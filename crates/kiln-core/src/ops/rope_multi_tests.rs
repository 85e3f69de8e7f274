//! The reference against hand-computed values and the spec's corner rules
//! (the seed's spec-driven cases, shared/seeds/000); the fast backends are
//! held to this reference by kiln's tests/rope_multi.rs.
#![allow(clippy::unwrap_used, clippy::panic)]
use super::*;

fn p(mode: RopeMultiMode, head_dim: usize, rope_dim: usize, sections: [u32; 4]) -> RopeMultiParams {
    RopeMultiParams {
        head_dim,
        rope_dim,
        n_heads: 1,
        seq_len: 1,
        freq_base: 2.0,
        mode,
        sections,
        pairing: RopePairing::HeadHalf,
    }
}

fn run(p: &RopeMultiParams, pos: &[i32], x: &[f32]) -> Vec<f32> {
    let mut out = vec![f32::NAN; x.len()];
    rope_multi_ref(p, &RopePositions::I32(pos), x, &mut out).unwrap();
    out
}

/// head_dim 16, rope_dim 8, sections [2, 2, 1, 0], IMROPE, base 2, positions
/// (t, h, w, e) = (5, 7, 9, 0): sector_dims 5; pair 0 → t (theta 5), pair 1
/// → h (7 · 2^-0.25), pair 2 → w (9 · 2^-0.5), pair 3 → t (5 · 2^-0.75);
/// pairs 4..8 pass through. Each pair (x[p], x[p + 8]).
#[test]
fn imrope_spec_by_hand() {
    let pp = p(RopeMultiMode::Imrope, 16, 8, [2, 2, 1, 0]);
    let x: Vec<f32> = (0..16).map(|i| (i as f32 + 1.0) * 0.1).collect();
    let got = run(&pp, &[5, 7, 9, 0], &x);
    let thetas = [
        5.0f64,
        7.0 * 2f64.powf(-0.25),
        9.0 * 2f64.powf(-0.5),
        5.0 * 2f64.powf(-0.75),
    ];
    for (pair, th) in thetas.iter().enumerate() {
        let (a, b) = (f64::from(x[pair]), f64::from(x[pair + 8]));
        let (s, c) = th.sin_cos();
        assert!(
            (f64::from(got[pair]) - (a * c - b * s)).abs() < 1e-6,
            "pair {pair}"
        );
        assert!(
            (f64::from(got[pair + 8]) - (a * s + b * c)).abs() < 1e-6,
            "pair {pair}"
        );
    }
    // Pair 0 as the seed writes it: cos 5 ≈ 0.28366, sin 5 ≈ -0.95892.
    assert!((got[0] - (0.1 * 5f32.cos() - 0.9 * 5f32.sin())).abs() < 1e-5);
    assert!((got[8] - (0.1 * 5f32.sin() + 0.9 * 5f32.cos())).abs() < 1e-5);
    for i in [4, 5, 6, 7, 12, 13, 14, 15] {
        assert_eq!(got[i].to_bits(), x[i].to_bits(), "pass-through {i}");
    }
    assert_eq!(pp.pack().axis, vec![0, 1, 2, 0, 255, 255, 255, 255]);
}

/// Pair 1 is sector 1: IMROPE axis 1 (h = 7), MROPE axis 0 (s0 = 2: t = 5).
#[test]
fn mrope_and_imrope_differ() {
    let im = p(RopeMultiMode::Imrope, 16, 8, [2, 2, 1, 0]);
    let mr = RopeMultiParams {
        mode: RopeMultiMode::Mrope,
        ..im
    };
    assert_eq!(im.axis_of(1), Some(1));
    assert_eq!(mr.axis_of(1), Some(0));
    assert_eq!(mr.pack().axis[..4], [0, 0, 1, 1]);
    let x: Vec<f32> = (0..16).map(|i| (i as f32 + 1.0) * 0.1).collect();
    let (a, b) = (run(&im, &[5, 7, 9, 0], &x), run(&mr, &[5, 7, 9, 0], &x));
    assert!((a[1] - b[1]).abs() > 1e-3 || (a[9] - b[9]).abs() > 1e-3);
    assert_eq!(a[0], b[0], "pair 0 is axis t in both");
}

/// Vision: head_dim 8 (n_dims 4), base 2, sections [3, 1]: pairs 0..3 on
/// axis 0 with exponents 0, 2/4, 4/4 (inverse frequencies 1, 2^-0.5, 0.5);
/// pair 3 on axis 1, its exponent restarting at 0.
#[test]
fn vision_sections_restart() {
    let v = p(RopeMultiMode::Vision, 8, 8, [3, 1, 9, 9]);
    assert_eq!(v.pack().axis, vec![0, 0, 0, 1]);
    let f = v.pack().inv_freq;
    for (got, want) in f.iter().zip([1.0, 0.5f64.sqrt(), 0.5, 1.0]) {
        assert!((got - want).abs() < 1e-15, "{f:?}");
    }
    let x: Vec<f32> = (0..8).map(|i| i as f32 - 3.5).collect();
    let got = run(&v, &[2, 3, 0, 0], &x);
    // Pair 3: axis 1 (pos 3), theta 3.
    let (s, c) = 3f64.sin_cos();
    let (a, b) = (f64::from(x[3]), f64::from(x[7]));
    assert!((f64::from(got[3]) - (a * c - b * s)).abs() < 1e-6);
    assert!((f64::from(got[7]) - (a * s + b * c)).abs() < 1e-6);
}

/// ggml / HF pairing: (p, p + rope_dim / 2) and dims rope_dim.. untouched.
#[test]
fn rope_half_pairing() {
    let pp = RopeMultiParams {
        pairing: RopePairing::RopeHalf,
        ..p(RopeMultiMode::Imrope, 16, 8, [2, 2, 1, 0])
    };
    let x: Vec<f32> = (0..16).map(|i| (i as f32 + 1.0) * 0.1).collect();
    let got = run(&pp, &[5, 7, 9, 0], &x);
    let (s, c) = 5f64.sin_cos();
    let (a, b) = (f64::from(x[0]), f64::from(x[4]));
    assert!((f64::from(got[0]) - (a * c - b * s)).abs() < 1e-6);
    assert!((f64::from(got[4]) - (a * s + b * c)).abs() < 1e-6);
    for i in 8..16 {
        assert_eq!(got[i].to_bits(), x[i].to_bits());
    }
}

/// Every rule of the validation, as a typed error naming the op.
#[test]
fn rejections() {
    let ok = p(RopeMultiMode::Imrope, 16, 8, [2, 2, 1, 0]);
    let pos = [0i32; 4];
    let x = [0.0f32; 16];
    let bad = |q: RopeMultiParams, pos: &RopePositions<'_>, xl: usize, ol: usize, needle: &str| {
        let e = q.validate(pos, xl, ol).unwrap_err().to_string();
        assert!(e.contains("rope_multi") && e.contains(needle), "{e}");
    };
    let i32p = RopePositions::I32(&pos);
    ok.validate(&i32p, 16, 16).unwrap();
    bad(
        RopeMultiParams {
            head_dim: 15,
            rope_dim: 8,
            ..ok
        },
        &i32p,
        15,
        15,
        "even",
    );
    bad(RopeMultiParams { rope_dim: 7, ..ok }, &i32p, 16, 16, "even");
    bad(
        RopeMultiParams { rope_dim: 18, ..ok },
        &i32p,
        16,
        16,
        "exceeds",
    );
    bad(RopeMultiParams { n_heads: 0, ..ok }, &i32p, 0, 0, "> 0");
    for base in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        bad(
            RopeMultiParams {
                freq_base: base,
                ..ok
            },
            &i32p,
            16,
            16,
            "freq_base",
        );
    }
    let vis = p(RopeMultiMode::Vision, 16, 16, [4, 4, 0, 0]);
    vis.validate(&i32p, 16, 16).unwrap();
    bad(
        RopeMultiParams { rope_dim: 8, ..vis },
        &i32p,
        16,
        16,
        "rope_dim",
    );
    bad(
        RopeMultiParams {
            sections: [4, 3, 1, 0],
            ..vis
        },
        &i32p,
        16,
        16,
        "sections",
    );
    bad(ok, &RopePositions::I32(&pos[..3]), 16, 16, "positions");
    bad(
        ok,
        &RopePositions::U32(&[0, 1, u32::MAX, 0]),
        16,
        16,
        "position",
    );
    ok.validate(&RopePositions::U32(&[0, 1, 2, 3]), 16, 16)
        .unwrap();
    bad(ok, &i32p, 15, 16, "input");
    bad(ok, &i32p, 16, 17, "output");
    assert!(RopeMultiMode::from_code(9).is_err());
    assert_eq!(RopeMultiMode::from_code(40).unwrap(), RopeMultiMode::Imrope);
    let mut out = [0.0f32; 16];
    assert!(rope_multi_ref(&ok, &RopePositions::I32(&pos[..2]), &x, &mut out).is_err());
}

/// bf16 reference = the f32 reference rounded once.
#[test]
fn bf16_reference_rounds_the_f32_result() {
    let pp = p(RopeMultiMode::Imrope, 16, 16, [3, 3, 2, 0]);
    let xb: Vec<u16> = (0..16)
        .map(|i| f32_to_bf16_bits(i as f32 * 0.3 - 2.0))
        .collect();
    let xf: Vec<f32> = xb.iter().map(|&b| bf16_bits_to_f32(b)).collect();
    let want = run(&pp, &[3, 4, 5, 6], &xf);
    let mut got = vec![0u16; 16];
    rope_multi_ref_bf16(&pp, &RopePositions::I32(&[3, 4, 5, 6]), &xb, &mut got).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(*g, f32_to_bf16_bits(*w));
    }
}
