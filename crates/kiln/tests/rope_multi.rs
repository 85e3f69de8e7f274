//! kiln::ops::rope_multi on the CPU stream (and a CUDA stream, where there
//! is one): the testkit's case table
//! (f32 and bf16, i32 and u32 positions, both pairings, guarded and poisoned
//! outputs, fresh random inputs) through the uncached and cached entry
//! points, and every case of mlx-native's rope_multi tests
//! (shared/seeds/000) re-expressed against kiln's reference.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln::ops::{
    rope, rope_multi, rope_multi_cached, RopeMode, RopeMultiMode, RopeMultiParams, RopePairing,
    RopeParams, RopePositions,
};
use kiln::{Stream, Tensor};
use kiln_core::ops::rope_multi::rope_multi_ref;
use kiln_core::quant::float::{bf16_bits_to_f32, f32_to_bf16_bits};
use kiln_core::DType;
use kiln_testkit::cases::rope_multi::check_rope_multi;

fn cpu() -> Stream {
    Stream::cpu(2).unwrap()
}

/// `rope_multi` (or the cached form) on f32 host data.
fn run_f32(
    s: &Stream,
    p: &RopeMultiParams,
    pos: &RopePositions<'_>,
    x: &[f32],
    cached: bool,
) -> kiln::Result<Vec<f32>> {
    let xt = Tensor::from_f32(s, &[x.len()], x.to_vec())?;
    let mut out = Tensor::from_f32(s, &[x.len()], vec![f32::NAN; x.len()])?;
    if cached {
        rope_multi_cached(s, p, pos, &xt, &mut out)?;
    } else {
        rope_multi(s, p, pos, &xt, &mut out)?;
    }
    out.to_f32_vec(s)
}

fn run_bf16(
    s: &Stream,
    p: &RopeMultiParams,
    pos: &RopePositions<'_>,
    x: &[u16],
    cached: bool,
) -> kiln::Result<Vec<u16>> {
    let bytes = |v: &[u16]| v.iter().flat_map(|b| b.to_le_bytes()).collect::<Vec<u8>>();
    let xt = Tensor::from_bytes(s, DType::BF16, &[x.len()], bytes(x))?;
    let mut out = Tensor::from_bytes(s, DType::BF16, &[x.len()], bytes(&vec![0xFFFF; x.len()]))?;
    if cached {
        rope_multi_cached(s, p, pos, &xt, &mut out)?;
    } else {
        rope_multi(s, p, pos, &xt, &mut out)?;
    }
    if s.device() != kiln::Device::Cpu {
        // Downloaded and widened exactly; bf16 values narrow back exactly.
        return Ok(out
            .to_f32_vec(s)?
            .into_iter()
            .map(f32_to_bf16_bits)
            .collect());
    }
    Ok(out
        .host_bytes()?
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect())
}

fn to_core(e: kiln::Error) -> kiln_core::Error {
    match e {
        kiln::Error::Core(c) => c,
        other => kiln_core::Error::invalid("rope_multi", other.to_string()),
    }
}

#[test]
fn case_table_uncached_and_cached() {
    let s = cpu();
    for cached in [false, true] {
        let imp = |p: &RopeMultiParams, pos: &RopePositions<'_>, x: &[f32], out: &mut [f32]| {
            out.copy_from_slice(&run_f32(&s, p, pos, x, cached).map_err(to_core)?);
            Ok(())
        };
        let imp16 = |p: &RopeMultiParams, pos: &RopePositions<'_>, x: &[u16], out: &mut [u16]| {
            out.copy_from_slice(&run_bf16(&s, p, pos, x, cached).map_err(to_core)?);
            Ok(())
        };
        let report = check_rope_multi(&imp, &imp16);
        eprintln!("cached {cached}: {}", report.summary());
        report.into_result().unwrap();
    }
}

fn seed_params(mode: RopeMultiMode) -> RopeMultiParams {
    RopeMultiParams {
        head_dim: 16,
        rope_dim: 8,
        n_heads: 1,
        seq_len: 1,
        freq_base: 2.0,
        mode,
        sections: [2, 2, 1, 0],
        pairing: RopePairing::HeadHalf,
    }
}

/// The seed's spec-driven case: n_rot 8, sections [2, 2, 1, 0], IMROPE,
/// positions (t, h, w, e) = (5, 7, 9, 0): within 1e-5 of the reference,
/// pair 0 by hand (theta 5 on (x0, x8)), pass-through bit-exact.
#[test]
fn seed_imrope_spec_driven_n8() {
    let s = cpu();
    let p = seed_params(RopeMultiMode::Imrope);
    let x: Vec<f32> = (0..16).map(|i| (i as f32 + 1.0) * 0.1).collect();
    let pos = RopePositions::I32(&[5, 7, 9, 0]);
    let got = run_f32(&s, &p, &pos, &x, false).unwrap();
    let mut want = vec![0.0; 16];
    rope_multi_ref(&p, &pos, &x, &mut want).unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() < 1e-5, "[{i}] {g} vs {w}");
    }
    let (x0, x1) = (0.1f32, 0.9f32);
    assert!((got[0] - (x0 * 5f32.cos() - x1 * 5f32.sin())).abs() < 1e-5);
    assert!((got[8] - (x0 * 5f32.sin() + x1 * 5f32.cos())).abs() < 1e-5);
    assert_eq!(got[4].to_bits(), x[4].to_bits());
    assert_eq!(got[12].to_bits(), x[12].to_bits());
}

/// MROPE and IMROPE map pair 1 to different axes (t vs h): outputs differ.
#[test]
fn seed_mrope_vs_imrope_differ() {
    let s = cpu();
    let x: Vec<f32> = (0..16).map(|i| (i as f32 + 1.0) * 0.1).collect();
    let pos = RopePositions::I32(&[5, 7, 9, 0]);
    let im = run_f32(&s, &seed_params(RopeMultiMode::Imrope), &pos, &x, false).unwrap();
    let mr = run_f32(&s, &seed_params(RopeMultiMode::Mrope), &pos, &x, false).unwrap();
    assert!((im[1] - mr[1]).abs() > 1e-3 || (im[9] - mr[9]).abs() > 1e-3);
}

fn lcg(seed: u32, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (s as i32 as f32) / (i32::MAX as f32) * scale
        })
        .collect()
}

/// Text positions: every axis holds the token index.
fn text_positions(seq_len: usize) -> Vec<i32> {
    (0..4).flat_map(|_| 0..seq_len as i32).collect()
}

/// The seed's random parity case (head_dim 32, rope_dim 16, 4 heads, 6
/// tokens, base 1e4, sections [3, 3, 2, 0]): within 1e-5 of the reference.
#[test]
fn seed_random_cpu_parity() {
    let s = cpu();
    let p = RopeMultiParams {
        head_dim: 32,
        rope_dim: 16,
        n_heads: 4,
        seq_len: 6,
        freq_base: 1e4,
        mode: RopeMultiMode::Imrope,
        sections: [3, 3, 2, 0],
        pairing: RopePairing::HeadHalf,
    };
    let x = lcg(0xdead_beef, 6 * 4 * 32, 1.5);
    let pos = text_positions(6);
    let rp = RopePositions::I32(&pos);
    let got = run_f32(&s, &p, &rp, &x, false).unwrap();
    let mut want = vec![0.0; x.len()];
    rope_multi_ref(&p, &rp, &x, &mut want).unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() < 1e-5, "[{i}] {g} vs {w}");
    }
}

fn qwen35(n_heads: usize, seq_len: usize) -> RopeMultiParams {
    RopeMultiParams {
        head_dim: 256,
        rope_dim: 64,
        n_heads,
        seq_len,
        freq_base: 1e7,
        mode: RopeMultiMode::Imrope,
        sections: [11, 11, 10, 0],
        pairing: RopePairing::HeadHalf,
    }
}

/// Qwen3.5's full-attention shape: three runs bit-identical, within 1e-4 of
/// the reference, the partial-rotary tail (pairs 32..128) untouched.
#[test]
fn seed_qwen35_shape_determinism() {
    let s = cpu();
    let p = qwen35(4, 3);
    let x = lcg(0xfeed_1234, 3 * 4 * 256, 1.0);
    let pos = text_positions(3);
    let rp = RopePositions::I32(&pos);
    let runs: Vec<Vec<f32>> = (0..3)
        .map(|_| run_f32(&s, &p, &rp, &x, false).unwrap())
        .collect();
    for r in &runs[1..] {
        assert!(
            runs[0]
                .iter()
                .zip(r)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "non-deterministic"
        );
    }
    let mut want = vec![0.0; x.len()];
    rope_multi_ref(&p, &rp, &x, &mut want).unwrap();
    for (i, (g, w)) in runs[0].iter().zip(&want).enumerate() {
        assert!((g - w).abs() < 1e-4, "[{i}] {g} vs {w}");
    }
    for row in 0..12 {
        for pair in 32..128 {
            for i in [row * 256 + pair, row * 256 + pair + 128] {
                assert_eq!(
                    runs[0][i].to_bits(),
                    x[i].to_bits(),
                    "tail row {row} pair {pair}"
                );
            }
        }
    }
}

/// Text IMROPE (all axes equal) is plain NeoX RoPE: with the seed's pairing
/// against the seed's own NeoX formula (partner p + head_dim / 2), and with
/// ggml's pairing against kiln's `rope` op in NeoX mode (n_rot = rope_dim).
#[test]
fn seed_imrope_text_equals_neox() {
    let s = cpu();
    let p = RopeMultiParams {
        head_dim: 32,
        rope_dim: 16,
        n_heads: 2,
        seq_len: 4,
        freq_base: 1e4,
        mode: RopeMultiMode::Imrope,
        sections: [3, 3, 2, 0],
        pairing: RopePairing::HeadHalf,
    };
    let x: Vec<f32> = (0..256).map(|i| i as f32 * 0.01).collect();
    let pos = text_positions(4);
    let rp = RopePositions::I32(&pos);
    let got = run_f32(&s, &p, &rp, &x, false).unwrap();
    let mut want = x.clone();
    for row in 0..8 {
        let (base, t) = (row * 32, (row / 2) as f32);
        for pair in 0..8 {
            let theta = t / 1e4f32.powf(2.0 * pair as f32 / 16.0);
            let (a, b) = (x[base + pair], x[base + pair + 16]);
            want[base + pair] = a * theta.cos() - b * theta.sin();
            want[base + pair + 16] = a * theta.sin() + b * theta.cos();
        }
    }
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() < 1e-5, "HeadHalf [{i}] {g} vs {w}");
    }
    let q = RopeMultiParams {
        pairing: RopePairing::RopeHalf,
        ..p
    };
    let got = run_f32(&s, &q, &rp, &x, false).unwrap();
    let mut neox = Tensor::from_f32(&s, &[256], x.clone()).unwrap();
    let rp1 = RopeParams {
        n_tokens: 4,
        n_heads: 2,
        head_dim: 32,
        n_rot: 16,
        freq_base: 1e4,
        freq_scale: 1.0,
        mode: RopeMode::Neox,
    };
    rope(&s, &rp1, &[0, 1, 2, 3], &mut neox).unwrap();
    let want = neox.to_f32_vec(&s).unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() < 1e-5,
            "RopeHalf vs rope(NeoX) [{i}] {g} vs {w}"
        );
    }
}

/// bf16 in and out within 5e-2 of the f32 path on the same (bf16-exact) input.
#[test]
fn seed_bf16_matches_f32() {
    let s = cpu();
    let p = seed_params(RopeMultiMode::Imrope);
    let xb: Vec<u16> = (0..16)
        .map(|i| f32_to_bf16_bits((i as f32 + 1.0) * 0.1))
        .collect();
    let xf: Vec<f32> = xb.iter().map(|&b| bf16_bits_to_f32(b)).collect();
    let pos = RopePositions::I32(&[5, 7, 9, 0]);
    let f = run_f32(&s, &p, &pos, &xf, false).unwrap();
    let b = run_bf16(&s, &p, &pos, &xb, false).unwrap();
    for (i, (g, w)) in b.iter().zip(&f).enumerate() {
        assert!((bf16_bits_to_f32(*g) - w).abs() < 5e-2, "[{i}]");
    }
}

/// Odd head_dim and rope_dim > head_dim are refused before any work: the
/// output keeps its poison; so are mismatched dtypes and a CUDA-free F16.
#[test]
fn seed_rejections_leave_output_untouched() {
    let s = cpu();
    let pos = RopePositions::I32(&[0, 0, 0, 0]);
    for (head_dim, rope_dim) in [(15, 8), (16, 18)] {
        let p = RopeMultiParams {
            head_dim,
            rope_dim,
            ..seed_params(RopeMultiMode::Imrope)
        };
        let xt = Tensor::from_f32(&s, &[16], vec![1.0; 16]).unwrap();
        let mut out = Tensor::from_f32(&s, &[16], vec![f32::NAN; 16]).unwrap();
        let e = rope_multi(&s, &p, &pos, &xt, &mut out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("rope_multi"), "{e}");
        assert!(out.to_f32_vec(&s).unwrap().iter().all(|v| v.is_nan()));
    }
    let p = seed_params(RopeMultiMode::Imrope);
    let xt = Tensor::from_f32(&s, &[16], vec![1.0; 16]).unwrap();
    let mut out16 = Tensor::from_bytes(&s, DType::BF16, &[16], vec![0; 32]).unwrap();
    let e = rope_multi(&s, &p, &pos, &xt, &mut out16)
        .unwrap_err()
        .to_string();
    assert!(e.contains("rope_multi") && e.contains("output"), "{e}");
    let xh = Tensor::from_bytes(&s, DType::F16, &[16], vec![0; 32]).unwrap();
    let mut oh = Tensor::from_bytes(&s, DType::F16, &[16], vec![0; 32]).unwrap();
    let e = rope_multi(&s, &p, &pos, &xh, &mut oh)
        .unwrap_err()
        .to_string();
    assert!(e.contains("F32 or BF16"), "{e}");
}

/// The cached path is bit-identical to the uncached one on Qwen3.5's decode
/// shape (Q: 16 heads, K: 2 heads); after Q, K, Q, K the stream's cache
/// holds 2 packs, and clearing empties it.
#[test]
fn seed_cached_matches_uncached_decode() {
    let s = cpu();
    s.rope_multi_packs().clear();
    let (pq, pk) = (qwen35(16, 1), qwen35(2, 1));
    let xq = lcg(11, 16 * 256, 1.0);
    let xk = lcg(12, 2 * 256, 1.0);
    let pos = RopePositions::I32(&[42, 42, 42, 42]);
    let wq = run_f32(&s, &pq, &pos, &xq, false).unwrap();
    let wk = run_f32(&s, &pk, &pos, &xk, false).unwrap();
    assert_eq!(
        s.rope_multi_packs().len(),
        0,
        "the uncached path fills no cache"
    );
    for _ in 0..2 {
        let gq = run_f32(&s, &pq, &pos, &xq, true).unwrap();
        let gk = run_f32(&s, &pk, &pos, &xk, true).unwrap();
        assert!(
            gq.iter().zip(&wq).all(|(a, b)| a.to_bits() == b.to_bits()),
            "Q"
        );
        assert!(
            gk.iter().zip(&wk).all(|(a, b)| a.to_bits() == b.to_bits()),
            "K"
        );
    }
    assert_eq!(s.rope_multi_packs().len(), 2);
    s.rope_multi_packs().clear();
    assert!(s.rope_multi_packs().is_empty());
}

/// The cache key includes seq_len (and the other parameters): prefill and
/// decode shapes get their own packs, each bit-identical to the uncached path.
#[test]
fn seed_cached_seq_len_variation() {
    let s = cpu();
    let base = RopeMultiParams {
        head_dim: 64,
        rope_dim: 32,
        n_heads: 2,
        seq_len: 1,
        freq_base: 1e6,
        mode: RopeMultiMode::Imrope,
        sections: [5, 5, 6, 0],
        pairing: RopePairing::HeadHalf,
    };
    for (i, seq_len) in [1usize, 7, 1, 7, 3].into_iter().enumerate() {
        let p = RopeMultiParams { seq_len, ..base };
        let x = lcg(100 + i as u32, seq_len * 2 * 64, 1.0);
        let pos: Vec<i32> = (0..4 * seq_len as i32).collect();
        let rp = RopePositions::I32(&pos);
        let want = run_f32(&s, &p, &rp, &x, false).unwrap();
        let got = run_f32(&s, &p, &rp, &x, true).unwrap();
        assert!(got
            .iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }
    assert_eq!(s.rope_multi_packs().len(), 3, "seq_len 1, 7, 3");
    let other = RopeMultiParams {
        freq_base: 1e4,
        ..base
    };
    let x = lcg(7, 2 * 64, 1.0);
    run_f32(&s, &other, &RopePositions::I32(&[1, 2, 3, 4]), &x, true).unwrap();
    assert_eq!(
        s.rope_multi_packs().len(),
        4,
        "freq_base is part of the key"
    );
}

/// On a CUDA stream (where there is one) the case table through both entry
/// points: the device pack uploaded per call, then from the stream's cache.
#[test]
fn cuda_case_table_uncached_and_cached() {
    let s = match Stream::cuda(0) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("SKIPPED: no CUDA stream ({e})");
            return;
        }
    };
    for cached in [false, true] {
        let imp = |p: &RopeMultiParams, pos: &RopePositions<'_>, x: &[f32], out: &mut [f32]| {
            out.copy_from_slice(&run_f32(&s, p, pos, x, cached).map_err(to_core)?);
            Ok(())
        };
        let imp16 = |p: &RopeMultiParams, pos: &RopePositions<'_>, x: &[u16], out: &mut [u16]| {
            out.copy_from_slice(&run_bf16(&s, p, pos, x, cached).map_err(to_core)?);
            Ok(())
        };
        let report = check_rope_multi(&imp, &imp16);
        eprintln!("cuda cached {cached}: {}", report.summary());
        report.into_result().unwrap();
    }
    assert!(!s.rope_multi_packs().is_empty());
}

/// Llama 3.1-style frequency factors (`rope_freqs`) against Hugging Face
/// transformers' `llama3` rope (tests/fixtures/rope/llama3.json, made by
/// scripts/fixtures/make_rope_llama3_fixture.py): NeoX pairing (HF layout),
/// positions up to 8191, bound Tol::ROPE's 2e-3 (transformers forms angles
/// in f32). Without the factors the same rows are far off (checked too), so
/// the factors are what is being tested; a CUDA stream refuses them.
#[test]
fn rope_frequency_factors_match_transformers_llama3() {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/rope/llama3.json");
    let fx: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let f32s = |k: &str| -> Vec<f32> {
        fx[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    };
    let positions: Vec<i32> = fx["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap() as i32)
        .collect();
    let (head_dim, n_heads) = (
        fx["head_dim"].as_u64().unwrap() as usize,
        fx["n_heads"].as_u64().unwrap() as usize,
    );
    let rp = RopeParams {
        n_tokens: positions.len(),
        n_heads,
        head_dim,
        n_rot: head_dim,
        freq_base: fx["freq_base"].as_f64().unwrap() as f32,
        freq_scale: 1.0,
        mode: RopeMode::Neox,
    };
    let s = cpu();
    let (x, want) = (f32s("x"), f32s("out"));
    let factors = Tensor::from_f32(&s, &[head_dim / 2], f32s("factors")).unwrap();
    let mut t = Tensor::from_f32(&s, &[x.len()], x.clone()).unwrap();
    kiln::ops::rope_with_factors(&s, &rp, Some(&factors), &positions, &mut t).unwrap();
    let got = t.to_f32_vec(&s).unwrap();
    let worst = got
        .iter()
        .zip(&want)
        .fold(0f32, |a, (g, w)| a.max((g - w).abs()));
    assert!(worst <= 2e-3, "max |diff| {worst}");
    let mut plain = Tensor::from_f32(&s, &[x.len()], x).unwrap();
    rope(&s, &rp, &positions, &mut plain).unwrap();
    let off = plain
        .to_f32_vec(&s)
        .unwrap()
        .iter()
        .zip(&want)
        .fold(0f32, |a, (g, w)| a.max((g - w).abs()));
    assert!(off > 0.1, "factors made no difference ({off})");
    eprintln!("llama3 rope: max |diff| {worst:.2e} vs transformers (without factors: {off:.2})");
    let bad = Tensor::from_f32(&s, &[head_dim / 2], vec![0.0; head_dim / 2]).unwrap();
    let mut t2 = Tensor::from_f32(&s, &[got.len()], got).unwrap();
    let e = kiln::ops::rope_with_factors(&s, &rp, Some(&bad), &positions, &mut t2).unwrap_err();
    assert!(e.to_string().contains("frequency factor 0"), "{e}");
}
