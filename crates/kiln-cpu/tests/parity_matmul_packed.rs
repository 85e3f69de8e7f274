//! Parity of the packed mat-vec (`quant_dot::packed`, AVX-512 VNNI; Q4_0,
//! Q4_1, Q8_0, IQ4_NL, Q4_K, Q5_K, Q6_K) and its layout.
//!
//! 1. `PackedWeights::unpack` gives back the original bytes of the packed
//!    rows (the layout round trip), odd `n` and `k`.
//! 2. `matmul_packed` against `matmul_ref` through the testkit case table
//!    (odd shapes: `n` = 33 and 257 have whole groups and a tail; `m` > 4
//!    takes the tile path; poisoned outputs, guards, validation errors),
//!    1 and 2 threads.
//! 3. A decode-sized case (many groups, a 9-row tail, 2 threads) against
//!    `matmul_ref` with the testkit's per-output bound, and bit-identical
//!    results for 1 and 2 threads.
//! 4. Against the plain tile kernels on the same quantized activations,
//!    to f32 rounding (`PLAIN_REL`): a tight check of the integer terms.
//! 5. Bad input: a short `w`, packed weights of another shape, a group out
//!    of range: typed errors.
//!
//! On a CPU without AVX-512 VNNI (or with `KILN_CPU_PACK=0`) nothing is
//! packed; the tests say they were skipped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_core::ops::matmul::{matmul_ref, MatmulParams};
use kiln_core::DType;
use kiln_cpu::matmul::{matmul_packed, quantize_activations};
use kiln_cpu::quant_dot::{pack_supported, PackedWeights, Q8Acts, PACK_ROWS};
use kiln_cpu::{CpuContext, CpuFeatures};
use kiln_testkit::cases::matmul::{check_matmul_with, error_bounds};
use kiln_testkit::cases::Options;
use kiln_testkit::{case_rng, rand_f32, rand_rows, test_seed};

const PACKED: [DType; 12] = [
    DType::Q4_0,
    DType::Q3_K,
    DType::Q2_K,
    DType::IQ4_XS,
    DType::IQ4_NL,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q4_1,
    DType::Q8_0,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
];

/// The detected features when they include the packed kernel.
fn packed_features() -> Option<CpuFeatures> {
    let f = CpuFeatures::detect();
    if pack_supported(f) {
        Some(f)
    } else {
        eprintln!("SKIPPED: this CPU (or KILN_CPU_PACK=0) has no AVX-512 VNNI: nothing is packed");
        None
    }
}

fn pack(f: CpuFeatures, p: &MatmulParams, w: &[u8]) -> PackedWeights {
    PackedWeights::pack(f, p.wtype, p.n, p.k, w)
        .unwrap()
        .expect("packable")
}

#[test]
fn layout_round_trips() {
    let Some(f) = packed_features() else { return };
    let seed = test_seed();
    for wtype in PACKED {
        let blk = if matches!(
            wtype,
            DType::Q2_K | DType::Q3_K | DType::Q4_K | DType::Q5_K | DType::Q6_K | DType::IQ4_XS
        ) {
            256
        } else {
            32
        };
        for (n, k) in [(16, 1), (17, 3), (33, 2), (50, 18), (257, 1)] {
            let k = k * blk;
            let mut rng = case_rng(seed, "pack layout", n * 1000 + k);
            let w = rand_rows(&mut rng, wtype, n, k);
            let pk = PackedWeights::pack(f, wtype, n, k, &w).unwrap().unwrap();
            assert_eq!(pk.packed_rows(), n / PACK_ROWS * PACK_ROWS);
            let back = pk.unpack();
            assert_eq!(
                back.len(),
                pk.packed_rows() * wtype.row_bytes("t", k).unwrap()
            );
            assert!(
                back == w[..back.len()],
                "{wtype} n={n} k={k}: unpack differs"
            );
        }
        // Nothing to pack: fewer than 16 rows, or a format without a kernel.
        let w = rand_rows(&mut case_rng(seed, "pack small", 0), wtype, 15, blk);
        assert!(PackedWeights::pack(f, wtype, 15, blk, &w)
            .unwrap()
            .is_none());
    }
    let w = rand_rows(&mut case_rng(seed, "pack iq2", 0), DType::IQ2_XXS, 16, 256);
    assert!(PackedWeights::pack(f, DType::IQ2_XXS, 16, 256, &w)
        .unwrap()
        .is_none());
}

#[test]
fn packed_matmul_matches_reference_table() {
    let Some(f) = packed_features() else { return };
    let opts = Options {
        matmul_wtypes: |t| PACKED.contains(&t),
        ..Options::default()
    };
    let mut failures = Vec::new();
    for threads in [1, 2] {
        let ctx = CpuContext::with_features(threads, f).unwrap();
        let report = check_matmul_with(
            &|p, w, x, out| {
                // A short `w` must fail in pack or in the call, never panic.
                match PackedWeights::pack(f, p.wtype, p.n, p.k, w)? {
                    Some(pk) => matmul_packed(&ctx, p, &pk, w, x, out),
                    None => kiln_cpu::matmul::matmul(&ctx, p, w, x, out),
                }
            },
            &opts,
        );
        eprintln!("packed matmul threads={threads}: {}", report.summary());
        if let Err(e) = report.into_result() {
            failures.push(format!("threads={threads}:\n{e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn packed_decode_shape_matches_reference() {
    let Some(f) = packed_features() else { return };
    let seed = test_seed();
    let (one, two) = (
        CpuContext::with_features(1, f).unwrap(),
        CpuContext::with_features(2, f).unwrap(),
    );
    for wtype in PACKED {
        for m in 1..=4 {
            let p = MatmulParams {
                m,
                n: 16 * 37 + 9,
                k: 2048,
                wtype,
            };
            let mut rng = case_rng(seed, "packed decode", m);
            let w = rand_rows(&mut rng, wtype, p.n, p.k);
            let x = rand_f32(&mut rng, m * p.k, -2.0, 2.0);
            let mut want = vec![0.0; m * p.n];
            matmul_ref(&p, &w, &x, &mut want).unwrap();
            let bound = error_bounds(&p, &w, &x).unwrap();
            let pk = pack(f, &p, &w);
            let mut got1 = vec![f32::NAN; m * p.n];
            let mut got2 = vec![f32::NAN; m * p.n];
            matmul_packed(&one, &p, &pk, &w, &x, &mut got1).unwrap();
            matmul_packed(&two, &p, &pk, &w, &x, &mut got2).unwrap();
            assert!(got1 == got2, "{wtype} m={m}: 1 and 2 threads differ");
            for (i, ((g, w_), b)) in got1.iter().zip(&want).zip(&bound).enumerate() {
                let err = f64::from((g - w_).abs());
                assert!(
                    err <= *b,
                    "{wtype} m={m} out[{i}]: {g} vs {w_} (bound {b:e}), seed {seed}"
                );
            }
        }
    }
}

/// Both kernels quantize the activations the same way and compute the same
/// integer block terms; they differ only in f32 rounding and summation
/// order, so `|packed - plain| <= PLAIN_REL * Σ_j |w_j| |x_j|` per output.
/// With at most 24 blocks here, that order costs < 24 * 2^-23 ≈ 3e-6 of
/// the absolute sum; 1e-5 leaves room for the scale products. (The case
/// table's bound allows the int8 activation rounding, ~1%, and misses a
/// code off by one in 128; this one does not.)
const PLAIN_REL: f64 = 1e-5;

#[test]
fn packed_matches_plain_kernels_tightly() {
    let Some(f) = packed_features() else { return };
    let ctx = CpuContext::with_features(2, f).unwrap();
    let seed = test_seed();
    for wtype in PACKED {
        for m in 1..=4 {
            let p = MatmulParams {
                m,
                n: 16 * 5 + 3,
                k: 768,
                wtype,
            };
            let mut rng = case_rng(seed, "packed vs plain", m);
            let w = rand_rows(&mut rng, wtype, p.n, p.k);
            let x = rand_f32(&mut rng, m * p.k, -2.0, 2.0);
            let pk = pack(f, &p, &w);
            let (mut plain, mut got) = (vec![0.0; m * p.n], vec![f32::NAN; m * p.n]);
            kiln_cpu::matmul::matmul(&ctx, &p, &w, &x, &mut plain).unwrap();
            matmul_packed(&ctx, &p, &pk, &w, &x, &mut got).unwrap();
            let rb = wtype.row_bytes("t", p.k).unwrap();
            let mut wf = vec![0.0f32; p.k];
            for j in 0..p.n {
                kiln_core::quant::dequantize_row(wtype, &w[j * rb..(j + 1) * rb], &mut wf).unwrap();
                for c in 0..m {
                    let xr = &x[c * p.k..(c + 1) * p.k];
                    let abs: f64 = wf
                        .iter()
                        .zip(xr)
                        .map(|(a, b)| f64::from((a * b).abs()))
                        .sum();
                    let (g, want) = (got[c * p.n + j], plain[c * p.n + j]);
                    let err = f64::from((g - want).abs());
                    assert!(
                        err <= PLAIN_REL * abs,
                        "{wtype} m={m} row {j} col {c}: packed {g} vs plain {want} \
                         (|err| {err:e} > {:e}), seed {seed}",
                        PLAIN_REL * abs
                    );
                }
            }
        }
    }
}

#[test]
fn packed_rejects_bad_input() {
    let Some(f) = packed_features() else { return };
    let ctx = CpuContext::with_features(2, f).unwrap();
    let mut rng = case_rng(test_seed(), "packed bad", 0);
    let p = MatmulParams {
        m: 1,
        n: 40,
        k: 64,
        wtype: DType::Q4_1,
    };
    let w = rand_rows(&mut rng, p.wtype, p.n, p.k);
    let err = PackedWeights::pack(f, p.wtype, p.n, p.k, &w[..w.len() - 1]).unwrap_err();
    assert!(err.to_string().contains("w"), "{err}");
    let pk = pack(f, &p, &w);
    let x = rand_f32(&mut rng, p.k, -1.0, 1.0);
    let mut out = vec![0.0; p.n];
    // Packed weights of another matrix shape.
    let other = MatmulParams { n: 39, ..p };
    let err = matmul_packed(&ctx, &other, &pk, &w[..39 * 40], &x, &mut out[..39]).unwrap_err();
    assert!(err.to_string().contains("packed weights"), "{err}");
    // A group past the packed rows, and more activation rows than exist.
    let mut acts = Q8Acts::new();
    quantize_activations(&ctx, &x, 1, p.k, &mut acts).unwrap();
    assert!(pk.group_dots(f, 2, &acts, 1).is_err());
    assert!(pk.group_dots(f, 0, &acts, 2).is_err());
    assert!(pk.group_dots(CpuFeatures::default(), 0, &acts, 1).is_err());
    assert!(pk.group_dots(f, 1, &acts, 1).is_ok());
}
