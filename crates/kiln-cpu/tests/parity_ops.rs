//! Parity: every kiln-testkit driver against the kiln-cpu implementation,
//! with SIMD (when the CPU has AVX2+FMA) and forced scalar, on 1 and 2 threads.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_core::ops::rope::{RopeMode, RopeParams};
use kiln_core::KvSlice;
use kiln_cpu::{
    add, add_rows, argmax, attention, cast, copy_rows, embedding, gelu_mul, l2_norm, layer_norm,
    mul, norm_rope, rms_norm, rope, sample, scale, sigmoid_mul, silu_mul, softcap, softmax,
};
use kiln_cpu::{CpuContext, CpuFeatures};
use kiln_testkit::cases as tk;
use kiln_testkit::{Guarded, Options, Report, Tol};

/// The four contexts every op runs under: (label, context). The SIMD ones
/// are skipped, with a message, on a CPU without AVX2+FMA.
fn contexts() -> Vec<(String, CpuContext)> {
    let mut v = Vec::new();
    let detected = CpuFeatures::detect();
    for threads in [1, 2] {
        if detected.has_avx2_fma() {
            v.push((
                format!("simd t={threads}"),
                CpuContext::with_features(threads, detected).unwrap(),
            ));
        } else {
            eprintln!("simd t={threads}: skipped, this CPU has no AVX2+FMA (or KILN_NO_SIMD=1)");
        }
        v.push((
            format!("scalar t={threads}"),
            CpuContext::with_features(threads, CpuFeatures::default()).unwrap(),
        ));
    }
    v
}

fn check(op: &str, run: impl Fn(&CpuContext, &Options) -> Report) {
    let opts = Options::default();
    let mut failed = Vec::new();
    for (label, ctx) in contexts() {
        let r = run(&ctx, &opts);
        println!("== {op} [{label}] ==\n{r}");
        if !r.is_ok() {
            failed.push(format!("[{label}]\n{r}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{op} parity failed:\n{}",
        failed.join("\n")
    );
}

#[test]
fn parity_add() {
    check("add", |ctx, o| {
        tk::add::check_add_with(&|p, a, b, out| add::add(ctx, p, a, b, out), o)
    });
}

#[test]
fn parity_mul() {
    check("mul", |ctx, o| {
        tk::mul::check_mul_with(&|p, a, b, out| mul::mul(ctx, p, a, b, out), o)
    });
}

#[test]
fn parity_cast() {
    check("cast", |ctx, o| {
        tk::cast::check_cast_with(&|p, src, dst| cast::cast(ctx, p, src, dst), o)
    });
}

#[test]
fn parity_add_rows() {
    check("add_rows", |ctx, o| {
        tk::add_rows::check_add_rows_with(&|p, x, b| add_rows::add_rows(ctx, p, x, b), o)
    });
}

#[test]
fn parity_silu_mul() {
    check("silu_mul", |ctx, o| {
        tk::silu_mul::check_silu_mul_with(&|p, g, u, out| silu_mul::silu_mul(ctx, p, g, u, out), o)
    });
}

#[test]
fn parity_sigmoid_mul() {
    check("sigmoid_mul", |ctx, o| {
        tk::sigmoid_mul::check_sigmoid_mul_with(
            &|p, g, u, out| sigmoid_mul::sigmoid_mul(ctx, p, g, u, out),
            o,
        )
    });
}

#[test]
fn parity_gelu_mul() {
    check("gelu_mul", |ctx, o| {
        tk::gelu_mul::check_gelu_mul_with(&|p, g, u, out| gelu_mul::gelu_mul(ctx, p, g, u, out), o)
    });
}

#[test]
fn parity_scale() {
    check("scale", |ctx, o| {
        tk::scale::check_scale_with(&|p, x, out| scale::scale(ctx, p, x, out), o)
    });
}

#[test]
fn parity_softcap() {
    check("softcap", |ctx, o| {
        tk::softcap::check_softcap_with(&|p, x, out| softcap::softcap(ctx, p, x, out), o)
    });
}

#[test]
fn parity_layer_norm() {
    check("layer_norm", |ctx, o| {
        tk::layer_norm::check_layer_norm_with(
            &|p, x, w, b, out| layer_norm::layer_norm(ctx, p, x, w, b, out),
            o,
        )
    });
}

#[test]
fn parity_l2_norm() {
    check("l2_norm", |ctx, o| {
        tk::l2_norm::check_l2_norm_with(&|p, x, out| l2_norm::l2_norm(ctx, p, x, out), o)
    });
}

#[test]
fn parity_rms_norm() {
    check("rms_norm", |ctx, o| {
        tk::rms_norm::check_rms_norm_with(&|p, x, w, out| rms_norm::rms_norm(ctx, p, x, w, out), o)
    });
}

#[test]
fn parity_softmax() {
    check("softmax", |ctx, o| {
        tk::softmax::check_softmax_with(&|p, x, out| softmax::softmax(ctx, p, x, out), o)
    });
}

#[test]
fn parity_argmax() {
    check("argmax", |ctx, o| {
        tk::argmax::check_argmax_with(&|x| argmax::argmax(ctx, x), o)
    });
}

#[test]
fn parity_sample() {
    check("sample", |ctx, o| {
        tk::sample::check_sample_with(&|p, x, ids, u| sample::sample_full(ctx, p, x, ids, u), o)
    });
    // One scratch for the whole table: buffers grown by one call and
    // reused (stale contents) by the next must not change an id.
    let scratch = std::cell::RefCell::new(sample::SampleScratch::default());
    let r = tk::sample::check_sample(&|p, x, ids, u| {
        sample::sample_full_with(&mut scratch.borrow_mut(), p, x, ids, u)
    });
    println!("== sample [shared scratch] ==\n{r}");
    r.into_result().unwrap();
}

#[test]
fn parity_rope_factors() {
    check("rope_factors", |ctx, o| {
        tk::rope::check_rope_factors_with(
            &|p, f, pos, x| rope::rope_with_factors(ctx, p, Some(f), pos, x),
            o,
        )
    });
}

#[test]
fn parity_norm_rope() {
    check("norm_rope", |ctx, o| {
        tk::norm_rope::check_norm_rope_with(
            &|p, x, w, f, pos, out| norm_rope::norm_rope(ctx, p, x, w, f, pos, out),
            o,
        )
    });
}

#[test]
fn parity_qk_norm_rope_kv() {
    use kiln_cpu::qk_norm_rope_kv::{qk_norm_rope_kv, qk_norm_rope_kv_at};
    use tk::qk_norm_rope_kv::Rows;
    check("qk_norm_rope_kv", |ctx, o| {
        tk::qk_norm_rope_kv::check_qk_norm_rope_kv_with(
            &|rows, p, io| match rows {
                Rows::Params => qk_norm_rope_kv(ctx, p, io),
                Rows::FirstPosition => qk_norm_rope_kv_at(ctx, p, io),
            },
            o,
        )
    });
}

#[test]
fn parity_embedding() {
    check("embedding", |ctx, o| {
        tk::embedding::check_embedding_with(
            &|p, t, ids, out| embedding::embedding(ctx, p, t, ids, out),
            o,
        )
    });
}

#[test]
fn parity_rope() {
    check("rope", |ctx, o| {
        tk::rope::check_rope_with(&|p, pos, x| rope::rope(ctx, p, pos, x), o)
    });
}

#[test]
fn parity_attention() {
    check("attention", |ctx, o| {
        tk::attention::check_attention_with(
            &|p, q, k, v, out| attention::attention(ctx, p, q, k, v, out),
            o,
        )
    });
}

#[test]
fn parity_copy_rows() {
    check("copy_rows", |ctx, o| {
        tk::copy_rows::check_copy_rows_with(
            &|p, src, dst| copy_rows::copy_rows_kv(ctx, p, src, dst),
            o,
        )
    });
}

#[test]
fn parity_attention_window() {
    check("attention_window", |ctx, o| {
        tk::attention::check_attention_window_with(
            &|p, q, k, v, out| attention::attention(ctx, p, q, k, v, out),
            o,
        )
    });
}

/// The rope table is capped; positions past it (and negative ones) take the
/// on-the-fly path. The CPU forms angles in f64 like the reference, so the
/// result stays tight even at position 100k.
#[test]
fn rope_beyond_the_cached_table() {
    // f64 angles on both sides: only the final f32 rotation differs (~1 ulp of |x| <= 2).
    const TOL: Tol = Tol {
        nmse: 1e-12,
        max_abs: 1e-6,
    };
    let mut rng = kiln_testkit::rng(kiln_testkit::test_seed());
    let positions = [
        -3,
        0,
        rope::MAX_CACHED_POS as i32 - 1,
        rope::MAX_CACHED_POS as i32,
        100_000,
        i32::MAX,
    ];
    for mode in [RopeMode::Normal, RopeMode::Neox] {
        let p = RopeParams {
            n_tokens: positions.len(),
            n_heads: 2,
            head_dim: 64,
            n_rot: 64,
            freq_base: 10000.0,
            freq_scale: 1.0,
            mode,
        };
        let x = kiln_testkit::rand_f32(&mut rng, p.n_tokens * 2 * 64, -2.0, 2.0);
        let mut want = x.clone();
        kiln_core::ops::rope::rope_ref(&p, &positions, &mut want).unwrap();
        for (label, ctx) in contexts() {
            let mut got = Guarded::from_slice(&x);
            rope::rope(&ctx, &p, &positions, got.as_mut_slice()).unwrap();
            got.check_guards().unwrap();
            kiln_testkit::compare(
                &format!("rope {mode:?} [{label}]"),
                got.as_slice(),
                &want,
                TOL,
            )
            .unwrap();
        }
    }
}

/// Decode on a long cache with many threads takes the split-keys path even
/// on this 2-core machine (the pool is oversubscribed on purpose).
#[test]
fn attention_split_keys_matches_reference() {
    let mut rng = kiln_testkit::rng(kiln_testkit::test_seed() ^ 0x5eed);
    let p = kiln_core::ops::attention::AttentionParams {
        n_tokens: 1,
        n_heads: 9,
        n_kv_heads: 3,
        head_dim: 64,
        pos0: 3000,
        kv_stride: 3001,
        scale: 0.125,
        window: None,
        softcap: None,
    };
    let q = kiln_testkit::rand_f32(&mut rng, 9 * 64, -1.0, 1.0);
    let k = kiln_testkit::rand_f32(&mut rng, 3001 * 3 * 64, -1.0, 1.0);
    let v = kiln_testkit::rand_f32(&mut rng, 3001 * 3 * 64, -1.0, 1.0);
    let mut want = vec![0.0; 9 * 64];
    kiln_core::ops::attention::attention_ref(&p, &q, &k, &v, &mut want).unwrap();
    for features in [CpuFeatures::detect(), CpuFeatures::default()] {
        let ctx = CpuContext::with_features(16, features).unwrap();
        let mut out = Guarded::new(9 * 64);
        let (kc, vc) = (KvSlice::F32(&k), KvSlice::F32(&v));
        attention::attention(&ctx, &p, &q, kc, vc, out.as_mut_slice()).unwrap();
        out.check_guards().unwrap();
        kiln_testkit::compare("split attention", out.as_slice(), &want, Tol::ATTENTION).unwrap();
    }
}
