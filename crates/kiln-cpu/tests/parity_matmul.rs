//! Parity of the CPU matmul and its quantized dot kernels.
//!
//! 1. Kernels (`quant_dot::vec_dot_*`, SIMD and scalar) against the
//!    quantized-activation reference dots of kiln-core, to f32 rounding.
//! 2. The activation quantizer against GGML's `quantize_row_q8_1_ref` codes.
//! 3. `matmul_quantized` on GGML Q8 activations (every tile shape) against
//!    the reference dots per output, to f32 rounding; 1 vs 2 threads bit-identical.
//! 4. `matmul` against `matmul_ref` through the testkit case table (odd
//!    shapes, every weight format, poisoned outputs, guards, validation
//!    errors), SIMD and forced scalar, 1 and 2 threads.
//!
//! 1 and 3 also run for the super-block formats (Q2_K..Q6_K, IQ4_XS, the
//! IQ2/IQ3 i-quants) against Q8_K activations (`k_*` tests); 3 covers Q5_0,
//! Q5_1 and IQ4_NL. 5. The i-quant tiles: SIMD and scalar bit-identical.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use half::f16;
use kiln_core::ops::matmul::MatmulParams;
use kiln_core::quant::{
    quantize_row, vec_dot_iq4_nl_q8_0_ref, vec_dot_q4_0_q8_0_ref, vec_dot_q4_1_q8_1_ref,
    vec_dot_q5_0_q8_0_ref, vec_dot_q5_1_q8_1_ref, vec_dot_q8_0_q8_0_ref, vec_dot_q8_K_ref,
    BlockFormat, BlockIQ2XS, BlockIQ2XXS, BlockIQ3S, BlockIQ3XXS, BlockIQ4NL, BlockIQ4XS, BlockQ2K,
    BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K,
    BlockQ8_0, BlockQ8_1,
};
use kiln_core::DType;
use kiln_cpu::matmul::{matmul, matmul_quantized, matmul_quantized_k};
use kiln_cpu::quant_dot::{self, Q8Acts, Q8KActs, QFormat};
use kiln_cpu::{CpuContext, CpuFeatures};
use kiln_testkit::cases::matmul::{block_term_bound, check_matmul};
use kiln_testkit::{case_rng, rand_f32, rand_rows, test_seed};
use rand::Rng;

/// Extra roundings beyond one per accumulated block term (scale products,
/// the 8-lane reduction, the m-term FMA, the reference's final rounding).
/// The kernels and the references compute the same block terms and differ
/// only in summation order and f32 rounding, so
/// `|fast - ref| <= (nb + KERNEL_SLACK) * 2^-24 * sum_b |term_b|`, with
/// `|term_b| <= block_term_bound(w_b) * sum_j |d_x q_x[j]|`.
const KERNEL_SLACK: f64 = 16.0;
const U32: f64 = 1.0 / (1u64 << 24) as f64;

/// Copy raw bytes into blocks (no alignment needed).
fn blocks_of<B: bytemuck::Pod>(bytes: &[u8]) -> Vec<B> {
    bytes
        .chunks_exact(std::mem::size_of::<B>())
        .map(bytemuck::pod_read_unaligned)
        .collect()
}

/// The feature sets to test: detected SIMD (when the CPU has it) and scalar.
fn feature_sets() -> Vec<(&'static str, CpuFeatures)> {
    let mut v = vec![("scalar", CpuFeatures::default())];
    let f = CpuFeatures::detect();
    if f.has_avx2_fma() {
        v.push(("simd", f));
    } else {
        eprintln!(
            "SKIPPED: SIMD kernels not tested: this CPU (or KILN_NO_SIMD) lacks AVX2/FMA/F16C"
        );
    }
    v
}

fn f32_bound(wtype: DType, w: &[u8], x_d: &[f32], x_q: &[[i8; 32]]) -> f64 {
    let nb = x_d.len();
    let ts = wtype.type_size();
    let mut s = 0.0;
    for b in 0..nb {
        let ax: f64 =
            x_q[b].iter().map(|&q| f64::from(q).abs()).sum::<f64>() * f64::from(x_d[b]).abs();
        s += block_term_bound(wtype, &w[b * ts..(b + 1) * ts]) * ax;
    }
    (nb as f64 + KERNEL_SLACK) * U32 * s
}

/// Random f32 activations quantized by the reference quantizer.
fn q8_blocks<B: BlockFormat>(rng: &mut impl Rng, nb: usize) -> Vec<B> {
    let x = rand_f32(rng, nb * 32, -3.0, 3.0);
    x.chunks(32).map(B::quantize).collect()
}

#[test]
fn kernels_match_reference_dots() {
    let seed = test_seed();
    eprintln!("seed {seed} (KILN_TEST_SEED)");
    let mut checked = 0;
    for (fname, feat) in feature_sets() {
        for nb in [1usize, 2, 3, 5, 18, 48] {
            for rep in 0..50 {
                let mut rng = case_rng(seed, "vec_dot", nb * 1000 + rep);
                // Q4_0 x Q8_0
                let wb = rand_rows(&mut rng, DType::Q4_0, 1, nb * 32);
                let w: Vec<BlockQ4_0> = blocks_of(&wb);
                let x: Vec<BlockQ8_0> = q8_blocks(&mut rng, nb);
                let want = vec_dot_q4_0_q8_0_ref(&w, &x).unwrap();
                let got = quant_dot::vec_dot_q4_0_q8_0(feat, &w, &x).unwrap();
                let (xd, xq): (Vec<f32>, Vec<[i8; 32]>) =
                    x.iter().map(|b| (b.d.to_f32(), b.qs)).unzip();
                let tol = f32_bound(DType::Q4_0, &wb, &xd, &xq);
                assert!(
                    (f64::from(got) - f64::from(want)).abs() <= tol,
                    "{fname} q4_0 nb={nb}: {got} vs {want} (tol {tol:e}), seed {seed}"
                );
                // Q4_1 x Q8_1
                let wb = rand_rows(&mut rng, DType::Q4_1, 1, nb * 32);
                let w: Vec<BlockQ4_1> = blocks_of(&wb);
                let x: Vec<BlockQ8_1> = q8_blocks(&mut rng, nb);
                let want = vec_dot_q4_1_q8_1_ref(&w, &x).unwrap();
                let got = quant_dot::vec_dot_q4_1_q8_1(feat, &w, &x).unwrap();
                let (xd, xq): (Vec<f32>, Vec<[i8; 32]>) =
                    x.iter().map(|b| (b.d.to_f32(), b.qs)).unzip();
                let tol = f32_bound(DType::Q4_1, &wb, &xd, &xq);
                assert!(
                    (f64::from(got) - f64::from(want)).abs() <= tol,
                    "{fname} q4_1 nb={nb}: {got} vs {want} (tol {tol:e}), seed {seed}"
                );
                // Q8_0 x Q8_0 (weights use the full code range, -128 included)
                let wb = rand_rows(&mut rng, DType::Q8_0, 1, nb * 32);
                let w: Vec<BlockQ8_0> = blocks_of(&wb);
                let x: Vec<BlockQ8_0> = q8_blocks(&mut rng, nb);
                let want = vec_dot_q8_0_q8_0_ref(&w, &x).unwrap();
                let got = quant_dot::vec_dot_q8_0_q8_0(feat, &w, &x).unwrap();
                let (xd, xq): (Vec<f32>, Vec<[i8; 32]>) =
                    x.iter().map(|b| (b.d.to_f32(), b.qs)).unzip();
                let tol = f32_bound(DType::Q8_0, &wb, &xd, &xq);
                assert!(
                    (f64::from(got) - f64::from(want)).abs() <= tol,
                    "{fname} q8_0 nb={nb}: {got} vs {want} (tol {tol:e}), seed {seed}"
                );
                checked += 3;
            }
        }
    }
    eprintln!("{checked} kernel dots checked");
}

#[test]
fn kernels_reject_mismatched_blocks() {
    let w = [BlockQ4_1 {
        d: f16::ONE,
        m: f16::ZERO,
        qs: [0; 16],
    }; 2];
    let x = [BlockQ8_1 {
        d: f16::ONE,
        s: f16::ZERO,
        qs: [0; 32],
    }; 3];
    assert!(quant_dot::vec_dot_q4_1_q8_1(CpuFeatures::detect(), &w, &x).is_err());
}

/// Rows that hit the rounding ties (`x * (1/d)` exactly k + 1/2), zeros,
/// a single nonzero element and random data.
fn quantizer_inputs(rng: &mut impl Rng) -> Vec<f32> {
    let mut x = Vec::new();
    // amax 127 -> d = 1, id = 1: halves are exact ties.
    let mut ties: Vec<f32> = (0..31).map(|j| (j as f32 - 15.0) + 0.5).collect();
    ties.push(127.0);
    x.extend(&ties);
    x.extend(ties.iter().map(|v| -v));
    x.extend([0.0f32; 32]);
    let mut one = [0.0f32; 32];
    one[7] = -1e-3;
    x.extend(one);
    x.extend(rand_f32(rng, 32 * 40, -5.0, 5.0));
    x.extend(rand_f32(rng, 32 * 4, -1e-6, 1e-6));
    x
}

/// The Q8_K activation quantizer (SIMD and scalar) bit-identical to the
/// reference `BlockQ8K::quantize`: ties at the rounding, equal |max| of
/// both signs (the first wins), zero blocks, tiny and large values.
#[test]
fn quantizer_matches_reference_q8_k() {
    let seed = test_seed();
    let mut rng = case_rng(seed, "quantize_q8k", 0);
    let mut x = quantizer_inputs(&mut rng);
    // A block whose largest |x| appears as -4 first, then +4.
    let mut both = rand_f32(&mut rng, 256, -3.0, 3.0);
    both[17] = -4.0;
    both[200] = 4.0;
    x.extend(&both);
    x.extend(rand_f32(&mut rng, 256 * 6, -1e4, 1e4));
    let m = x.len() / 256;
    let x = &x[..m * 256];
    let want: Vec<BlockQ8K> = x.chunks(256).map(BlockQ8K::quantize).collect();
    for (fname, feat) in feature_sets() {
        let mut acts = Q8KActs::new();
        acts.quantize(feat, x, m, 256).unwrap();
        for (i, w) in want.iter().enumerate() {
            let got = &acts.row(i)[0];
            assert_eq!(got.qs, w.qs, "{fname}: codes of block {i}");
            assert_eq!(got.bsums, w.bsums, "{fname}: bsums of block {i}");
            assert_eq!(got.d.to_bits(), w.d.to_bits(), "{fname}: d of block {i}");
        }
    }
}

#[test]
fn quantizer_matches_ggml_q8_1_codes() {
    let seed = test_seed();
    eprintln!("seed {seed} (KILN_TEST_SEED)");
    let mut rng = case_rng(seed, "quantize_q8", 0);
    let x = quantizer_inputs(&mut rng);
    let k = 32 * 3;
    let m = x.len() / k;
    let x = &x[..m * k];
    let mut want = vec![0u8; m * DType::Q8_1.row_bytes("t", k).unwrap()];
    quantize_row(DType::Q8_1, x, &mut want).unwrap();
    let want: Vec<BlockQ8_1> = blocks_of(&want);
    for (fname, feat) in feature_sets() {
        let mut acts = Q8Acts::new();
        acts.quantize(feat, x, m, k).unwrap();
        for i in 0..m {
            for (b, ((q, ds), wb)) in acts
                .row_codes(i)
                .iter()
                .zip(acts.row_scales(i))
                .zip(&want[i * 3..])
                .enumerate()
            {
                assert_eq!(q, &wb.qs, "{fname}: codes of row {i} block {b}");
                assert_eq!(
                    f16::from_f32(ds[0]).to_bits(),
                    wb.d.to_bits(),
                    "{fname}: d of row {i} block {b}"
                );
                assert_eq!(
                    f16::from_f32(ds[1]).to_bits(),
                    wb.s.to_bits(),
                    "{fname}: s of row {i} block {b}"
                );
            }
        }
    }
}

#[test]
fn tiles_match_reference_dots() {
    let seed = test_seed();
    eprintln!("seed {seed} (KILN_TEST_SEED)");
    let mut n_cases = 0;
    for (fname, feat) in feature_sets() {
        let ctxs = [
            CpuContext::with_features(1, feat).unwrap(),
            CpuContext::with_features(2, feat).unwrap(),
        ];
        for wtype in [
            DType::Q4_0,
            DType::Q4_1,
            DType::Q8_0,
            DType::Q5_0,
            DType::Q5_1,
            DType::IQ4_NL,
        ] {
            for (ci, (m, n, k)) in [1usize, 2, 3, 4, 5, 8, 17]
                .iter()
                .flat_map(|&m| [1usize, 2, 7, 33].map(|n| (m, n)))
                .flat_map(|(m, n)| [32usize, 96, 576].map(|k| (m, n, k)))
                .enumerate()
            {
                let mut rng = case_rng(seed, "tiles", ci);
                let nb = k / 32;
                let w = rand_rows(&mut rng, wtype, n, k);
                let row = wtype.row_bytes("t", k).unwrap();
                let p = MatmulParams { m, n, k, wtype };
                // Per activation row: GGML blocks and the reference dots.
                let (acts, want, bound) = if matches!(wtype, DType::Q4_1 | DType::Q5_1) {
                    let x: Vec<BlockQ8_1> = q8_blocks(&mut rng, m * nb);
                    let mut want = vec![0.0f32; m * n];
                    let mut bound = vec![0.0f64; m * n];
                    for i in 0..m {
                        let xi = &x[i * nb..(i + 1) * nb];
                        let (xd, xq): (Vec<f32>, Vec<[i8; 32]>) =
                            xi.iter().map(|b| (b.d.to_f32(), b.qs)).unzip();
                        for j in 0..n {
                            let wr = &w[j * row..(j + 1) * row];
                            want[i * n + j] = if wtype == DType::Q4_1 {
                                vec_dot_q4_1_q8_1_ref(&blocks_of::<BlockQ4_1>(wr), xi).unwrap()
                            } else {
                                vec_dot_q5_1_q8_1_ref(&blocks_of::<BlockQ5_1>(wr), xi).unwrap()
                            };
                            bound[i * n + j] =
                                f32_bound(wtype, &w[j * row..(j + 1) * row], &xd, &xq);
                        }
                    }
                    (Q8Acts::from_q8_1(&x, m, nb).unwrap(), want, bound)
                } else {
                    let x: Vec<BlockQ8_0> = q8_blocks(&mut rng, m * nb);
                    let mut want = vec![0.0f32; m * n];
                    let mut bound = vec![0.0f64; m * n];
                    for i in 0..m {
                        let xi = &x[i * nb..(i + 1) * nb];
                        let (xd, xq): (Vec<f32>, Vec<[i8; 32]>) =
                            xi.iter().map(|b| (b.d.to_f32(), b.qs)).unzip();
                        for j in 0..n {
                            let wr = &w[j * row..(j + 1) * row];
                            want[i * n + j] = match wtype {
                                DType::Q4_0 => {
                                    vec_dot_q4_0_q8_0_ref(&blocks_of::<BlockQ4_0>(wr), xi)
                                }
                                DType::Q5_0 => {
                                    vec_dot_q5_0_q8_0_ref(&blocks_of::<BlockQ5_0>(wr), xi)
                                }
                                DType::IQ4_NL => {
                                    vec_dot_iq4_nl_q8_0_ref(&blocks_of::<BlockIQ4NL>(wr), xi)
                                }
                                _ => vec_dot_q8_0_q8_0_ref(&blocks_of::<BlockQ8_0>(wr), xi),
                            }
                            .unwrap();
                            bound[i * n + j] = f32_bound(wtype, wr, &xd, &xq);
                        }
                    }
                    (Q8Acts::from_q8_0(&x, m, nb).unwrap(), want, bound)
                };
                let mut outs = Vec::new();
                for ctx in &ctxs {
                    let mut out = vec![f32::NAN; m * n];
                    matmul_quantized(ctx, &p, &w, &acts, &mut out).unwrap();
                    for (idx, ((&g, &r), &b)) in out.iter().zip(&want).zip(&bound).enumerate() {
                        assert!(
                            (f64::from(g) - f64::from(r)).abs() <= b,
                            "{fname} {wtype} m={m} n={n} k={k} threads={}: out[{idx}] = {g} vs {r} (bound {b:e}), seed {seed}",
                            ctx.threads()
                        );
                    }
                    outs.push(out);
                }
                let bits = |v: &Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&outs[0]),
                    bits(&outs[1]),
                    "{fname} {wtype} m={m} n={n} k={k}: 1 vs 2 threads differ"
                );
                n_cases += 1;
            }
        }
    }
    eprintln!("{n_cases} tile cases checked");
}

/// `f32_bound` for Q8_K activations (256-element blocks).
fn f32_bound_k(wtype: DType, w: &[u8], x: &[BlockQ8K]) -> f64 {
    let ts = wtype.type_size();
    let mut s = 0.0;
    for (b, xb) in x.iter().enumerate() {
        let ax: f64 =
            xb.qs.iter().map(|&q| f64::from(q).abs()).sum::<f64>() * f64::from(xb.d).abs();
        s += block_term_bound(wtype, &w[b * ts..(b + 1) * ts]) * ax;
    }
    (x.len() as f64 + KERNEL_SLACK) * U32 * s
}

/// The super-block formats with Q8_K activations.
const K_TYPES: [DType; 10] = [
    DType::Q2_K,
    DType::Q3_K,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
    DType::IQ4_XS,
    DType::IQ2_XXS,
    DType::IQ2_XS,
    DType::IQ3_XXS,
    DType::IQ3_S,
];

/// kiln-core's reference `W × Q8_K` dot of one weight row.
fn ref_dot_k(wtype: DType, w: &[u8], x: &[BlockQ8K]) -> f32 {
    match wtype {
        DType::Q2_K => vec_dot_q8_K_ref(&blocks_of::<BlockQ2K>(w), x),
        DType::Q3_K => vec_dot_q8_K_ref(&blocks_of::<BlockQ3K>(w), x),
        DType::Q4_K => vec_dot_q8_K_ref(&blocks_of::<BlockQ4K>(w), x),
        DType::Q5_K => vec_dot_q8_K_ref(&blocks_of::<BlockQ5K>(w), x),
        DType::Q6_K => vec_dot_q8_K_ref(&blocks_of::<BlockQ6K>(w), x),
        DType::IQ2_XXS => vec_dot_q8_K_ref(&blocks_of::<BlockIQ2XXS>(w), x),
        DType::IQ2_XS => vec_dot_q8_K_ref(&blocks_of::<BlockIQ2XS>(w), x),
        DType::IQ3_XXS => vec_dot_q8_K_ref(&blocks_of::<BlockIQ3XXS>(w), x),
        DType::IQ3_S => vec_dot_q8_K_ref(&blocks_of::<BlockIQ3S>(w), x),
        _ => vec_dot_q8_K_ref(&blocks_of::<BlockIQ4XS>(w), x),
    }
    .unwrap()
}

/// Q8_K activation blocks: reference-quantized random rows, with a few
/// hand-set extremes (codes ±127 everywhere, so bsums reach ±2032).
fn q8k_blocks(rng: &mut impl Rng, nb: usize) -> Vec<BlockQ8K> {
    let x = rand_f32(rng, nb * 256, -3.0, 3.0);
    let mut v: Vec<BlockQ8K> = x.chunks(256).map(BlockQ8K::quantize).collect();
    if nb >= 2 {
        let b = &mut v[1];
        let sign = if rng.gen_bool(0.5) { 1i8 } else { -1 };
        b.qs = [127 * sign; 256];
        b.bsums = [2032 * i16::from(sign); 16];
    }
    v
}

#[test]
fn k_kernels_match_reference_dots() {
    let seed = test_seed();
    eprintln!("seed {seed} (KILN_TEST_SEED)");
    let mut checked = 0;
    for (fname, feat) in feature_sets() {
        for &wtype in &K_TYPES {
            let f = QFormat::of(wtype).unwrap();
            for nb in [1usize, 2, 3, 7, 16] {
                for rep in 0..20 {
                    let mut rng = case_rng(seed, "vec_dot_k", nb * 1000 + rep);
                    let w = rand_rows(&mut rng, wtype, 1, nb * 256);
                    let x = q8k_blocks(&mut rng, nb);
                    let want = ref_dot_k(wtype, &w, &x);
                    let got = quant_dot::vec_dot_q8_k(feat, f, &w, &x).unwrap();
                    let tol = f32_bound_k(wtype, &w, &x);
                    assert!(
                        (f64::from(got) - f64::from(want)).abs() <= tol,
                        "{fname} {wtype} nb={nb} rep={rep}: {got} vs {want} (tol {tol:e}), seed {seed}"
                    );
                    checked += 1;
                }
            }
            // Mismatched lengths and a 32-block format are refused.
            let w = rand_rows(&mut case_rng(seed, "k_bad", 0), wtype, 1, 512);
            let x = q8k_blocks(&mut case_rng(seed, "k_bad", 1), 1);
            assert!(quant_dot::vec_dot_q8_k(feat, f, &w, &x).is_err());
        }
        assert!(quant_dot::vec_dot_q8_k(feat, QFormat::Q4_0, &[0; 18], &[]).is_err());
    }
    eprintln!("{checked} Q8_K kernel dots checked");
}

#[test]
fn k_tiles_match_reference_dots() {
    let seed = test_seed();
    eprintln!("seed {seed} (KILN_TEST_SEED)");
    let mut n_cases = 0;
    for (fname, feat) in feature_sets() {
        let ctxs = [
            CpuContext::with_features(1, feat).unwrap(),
            CpuContext::with_features(2, feat).unwrap(),
        ];
        for &wtype in &K_TYPES {
            for (ci, (m, n, k)) in [1usize, 2, 3, 4, 5, 8, 17]
                .iter()
                .flat_map(|&m| [1usize, 2, 7, 33].map(|n| (m, n)))
                .flat_map(|(m, n)| [256usize, 768].map(|k| (m, n, k)))
                .enumerate()
            {
                let mut rng = case_rng(seed, "tiles_k", ci);
                let nb = k / 256;
                let w = rand_rows(&mut rng, wtype, n, k);
                let row = wtype.row_bytes("t", k).unwrap();
                let p = MatmulParams { m, n, k, wtype };
                let x = q8k_blocks(&mut rng, m * nb);
                let mut want = vec![0.0f32; m * n];
                let mut bound = vec![0.0f64; m * n];
                for i in 0..m {
                    let xi = &x[i * nb..(i + 1) * nb];
                    for j in 0..n {
                        let wr = &w[j * row..(j + 1) * row];
                        want[i * n + j] = ref_dot_k(wtype, wr, xi);
                        bound[i * n + j] = f32_bound_k(wtype, wr, xi);
                    }
                }
                let acts = Q8KActs::from_blocks(&x, m, nb).unwrap();
                let mut outs = Vec::new();
                for ctx in &ctxs {
                    let mut out = vec![f32::NAN; m * n];
                    matmul_quantized_k(ctx, &p, &w, &acts, &mut out).unwrap();
                    for (idx, ((&g, &r), &b)) in out.iter().zip(&want).zip(&bound).enumerate() {
                        assert!(
                            (f64::from(g) - f64::from(r)).abs() <= b,
                            "{fname} {wtype} m={m} n={n} k={k} threads={}: out[{idx}] = {g} vs {r} (bound {b:e}), seed {seed}",
                            ctx.threads()
                        );
                    }
                    outs.push(out);
                }
                let bits = |v: &Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&outs[0]),
                    bits(&outs[1]),
                    "{fname} {wtype} m={m} n={n} k={k}: 1 vs 2 threads differ"
                );
                n_cases += 1;
            }
        }
        // Wrong activation shape or a 32-block format are refused.
        let ctx = &ctxs[0];
        let acts = Q8KActs::from_blocks(&q8k_blocks(&mut rng_for(seed), 2), 1, 2).unwrap();
        let p = MatmulParams {
            m: 1,
            n: 1,
            k: 256,
            wtype: DType::Q4_K,
        };
        let w = vec![0u8; 144];
        assert!(matmul_quantized_k(ctx, &p, &w, &acts, &mut [0.0]).is_err());
        let p = MatmulParams {
            k: 512,
            wtype: DType::Q4_0,
            ..p
        };
        assert!(matmul_quantized_k(ctx, &p, &[0u8; 288], &acts, &mut [0.0]).is_err());
    }
    eprintln!("{n_cases} Q8_K tile cases checked");
}

/// The i-quant kernels' integer sums are exact on both paths, so SIMD and
/// scalar tiles agree bit for bit (every tile shape, extreme activations).
#[test]
fn iq23_simd_tiles_match_scalar_bit_for_bit() {
    let seed = test_seed();
    let simd = CpuFeatures::detect();
    if !simd.has_avx2_fma() {
        eprintln!("SKIPPED: no AVX2/FMA/F16C on this CPU (or KILN_NO_SIMD): nothing to compare");
        return;
    }
    let mut n_cases = 0;
    for wtype in [DType::IQ2_XXS, DType::IQ2_XS, DType::IQ3_XXS, DType::IQ3_S] {
        let f = QFormat::of(wtype).unwrap();
        for (ci, (m, n)) in [(1usize, 1usize), (3, 5), (4, 4), (5, 7), (17, 33)]
            .into_iter()
            .enumerate()
        {
            let mut rng = case_rng(seed, "iq23_simd", ci);
            let nb = 3;
            let w = rand_rows(&mut rng, wtype, n, nb * 256);
            let x = q8k_blocks(&mut rng, m * nb);
            let acts = Q8KActs::from_blocks(&x, m, nb).unwrap();
            let p = MatmulParams {
                m,
                n,
                k: nb * 256,
                wtype,
            };
            let mut outs = Vec::new();
            for feat in [CpuFeatures::default(), simd] {
                let ctx = CpuContext::with_features(1, feat).unwrap();
                let mut out = vec![f32::NAN; m * n];
                matmul_quantized_k(&ctx, &p, &w, &acts, &mut out).unwrap();
                outs.push(out.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            }
            assert_eq!(
                outs[0], outs[1],
                "{wtype} m={m} n={n}: SIMD != scalar, seed {seed}"
            );
            let row = wtype.row_bytes("t", nb * 256).unwrap();
            let one = quant_dot::vec_dot_q8_k(simd, f, &w[..row], &x[..nb]).unwrap();
            assert_eq!(one.to_bits(), outs[0][0], "{wtype}: vec_dot vs tile");
            n_cases += 1;
        }
    }
    eprintln!("{n_cases} i-quant SIMD/scalar tile cases bit-identical");
}

fn rng_for(seed: u64) -> impl Rng {
    case_rng(seed, "k_misc", 0)
}

#[test]
fn matmul_quantized_rejects_bad_activations() {
    let ctx = CpuContext::new(1).unwrap();
    let mut acts = Q8Acts::new();
    acts.quantize(ctx.features(), &[0.5; 64], 2, 32).unwrap();
    let w = vec![0u8; 3 * 20];
    let mut out = vec![f32::NAN; 6];
    let p = MatmulParams {
        m: 2,
        n: 3,
        k: 32,
        wtype: DType::Q4_1,
    };
    assert!(matmul_quantized(&ctx, &p, &w, &acts, &mut out).is_ok());
    let p3 = MatmulParams { m: 3, ..p };
    assert!(matmul_quantized(&ctx, &p3, &w, &acts, &mut [0.0; 9]).is_err());
    let pf = MatmulParams {
        wtype: DType::F32,
        ..p
    };
    assert!(matmul_quantized(&ctx, &pf, &vec![0u8; 3 * 128], &acts, &mut out).is_err());
}

/// The whole case table (odd shapes × every weight format, SmolLM2 shapes,
/// validation errors) for SIMD and forced scalar, 1 and 2 threads.
#[test]
fn matmul_matches_reference_case_table() {
    let mut failures = Vec::new();
    for (fname, feat) in feature_sets() {
        for threads in [1, 2] {
            let ctx = CpuContext::with_features(threads, feat).unwrap();
            let report = check_matmul(&|p, w, x, out| matmul(&ctx, p, w, x, out));
            eprintln!("matmul {fname} threads={threads}: {}", report.summary());
            if let Err(e) = report.into_result() {
                failures.push(format!("{fname} threads={threads}:\n{e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Degenerate shapes: `k = 0` gives zeros (empty dots), `m = 0` / `n = 0`
/// write nothing.
#[test]
fn empty_shapes() {
    for (fname, feat) in feature_sets() {
        let ctx = CpuContext::with_features(2, feat).unwrap();
        for wtype in kiln_testkit::cases::matmul::WTYPES {
            let p = MatmulParams {
                m: 2,
                n: 3,
                k: 0,
                wtype,
            };
            let mut out = [f32::NAN; 6];
            matmul(&ctx, &p, &[], &[], &mut out).unwrap();
            assert_eq!(out, [0.0; 6], "{fname} {wtype} k=0");
            let k = wtype.block_size().max(32);
            let p = MatmulParams {
                m: 0,
                n: 3,
                k,
                wtype,
            };
            let w = vec![0u8; 3 * wtype.row_bytes("t", k).unwrap()];
            matmul(&ctx, &p, &w, &[], &mut []).unwrap();
            let p = MatmulParams {
                m: 2,
                n: 0,
                k,
                wtype,
            };
            matmul(&ctx, &p, &[], &vec![0.5; 2 * k], &mut []).unwrap();
        }
    }
}
