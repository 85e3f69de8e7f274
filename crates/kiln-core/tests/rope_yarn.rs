//! YaRN (`kiln_core::ops::rope::Yarn`) against Hugging Face transformers'
//! `yarn` rope type (tests/fixtures/rope/yarn.json, made by
//! scripts/fixtures/make_yarn_fixture.py): kiln's effective inverse
//! frequency `base^(-2i/n_rot) / factors_i` and its `mscale` must be
//! transformers' `inv_freq` and `attention_factor`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_core::ops::rope::{RopeMode, RopeParams, Yarn};
use std::path::Path;

/// transformers computes `inv_freq` in f32 (torch's default dtype) and
/// kiln keeps the factors in f32: each side rounds once or twice at 2^-24
/// relative, so 1e-6 relative holds with margin. A wrong ramp end, a
/// floor/ceil swap or an unclamped dim moves whole pairs by O(factor).
const REL_TOL: f64 = 1e-6;

#[test]
fn yarn_matches_transformers() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/rope/yarn.json");
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let mut checked = 0;
    for c in cases.as_array().unwrap() {
        let f = |k: &str| c[k].as_f64().unwrap();
        let n_rot = f("n_rot") as usize;
        let y = Yarn {
            factor: f("factor") as f32,
            orig_ctx: f("orig_ctx") as usize,
            beta_fast: f("beta_fast") as f32,
            beta_slow: f("beta_slow") as f32,
        };
        let base = f("base") as f32;
        let factors = y.factors(n_rot, base).unwrap();
        let rp = RopeParams {
            n_tokens: 1,
            n_heads: 1,
            head_dim: n_rot,
            n_rot,
            freq_base: base,
            freq_scale: 1.0,
            mode: RopeMode::Neox,
        };
        let want = c["inv_freq"].as_array().unwrap();
        assert_eq!(want.len(), factors.len(), "{}", c["name"]);
        for (i, (w, fac)) in want.iter().zip(&factors).enumerate() {
            let got = rp.inv_freq(i) / f64::from(*fac);
            let w = w.as_f64().unwrap();
            assert!(
                ((got - w) / w).abs() <= REL_TOL,
                "{} pair {i}: kiln {got} transformers {w}",
                c["name"]
            );
            checked += 1;
        }
        let a = f("attention_factor");
        assert!(
            (y.mscale() - a).abs() <= 1e-12,
            "{}: mscale {} vs {a}",
            c["name"],
            y.mscale()
        );
    }
    assert!(checked > 200, "only {checked} pairs checked");
}

#[test]
fn yarn_rejects_bad_parameters() {
    let ok = Yarn {
        factor: 4.0,
        orig_ctx: 4096,
        beta_fast: 32.0,
        beta_slow: 1.0,
    };
    assert!(ok.factors(128, 10000.0).is_ok());
    for bad in [
        Yarn { factor: 0.5, ..ok },
        Yarn {
            factor: f32::NAN,
            ..ok
        },
        Yarn { orig_ctx: 0, ..ok },
        Yarn {
            beta_fast: 1.0,
            ..ok
        },
        Yarn {
            beta_slow: 0.0,
            ..ok
        },
    ] {
        assert!(bad.factors(128, 10000.0).is_err(), "{bad:?}");
    }
    assert!(ok.factors(128, 1.0).is_err());
    assert!(ok.factors(0, 10000.0).is_err());
}
