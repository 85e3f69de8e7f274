//! Unit tests for the reference quant formats: round-trip error bounds,
//! quantized-activation dot references, error cases, sentinels.
//! Bit-exactness against gguf.quants lives in `tests/quant_fixtures.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SEED: u64 = 0x6b69_6c6e_7175_616e; // "kilnquan"

/// 2^-11: half an f16 ulp relative to the value (11-bit significand) — the
/// largest relative error of one round-to-nearest f32 -> f16 conversion.
const F16_HALF_ULP_REL: f64 = 1.0 / 2048.0;
/// 2^-8: the same for bf16 (8-bit significand).
const BF16_HALF_ULP_REL: f64 = 1.0 / 256.0;
/// 2^-22: two f32 roundings (relative), slack for f32 products/sums inside
/// the reference quantizers and dequantizers.
const F32_SLACK_REL: f64 = 1.0 / 4_194_304.0;

fn rng(tag: u64) -> ChaCha8Rng {
    let seed = SEED ^ tag;
    eprintln!("seed = {seed:#x}");
    ChaCha8Rng::seed_from_u64(seed)
}

/// Standard normal via Box-Muller (rand 0.8 has no Normal without rand_distr).
fn gauss(r: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = r.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = r.gen();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// Random row with per-block scales spanning 2^-8 .. 2^8 and a few offsets,
/// so Q4_1's min and Q4_0's signed max both vary.
fn random_row(r: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    let mut x = Vec::with_capacity(n);
    while x.len() < n {
        let scale = 2f32.powi(r.gen_range(-8..=8));
        let offset = if r.gen_bool(0.3) {
            gauss(r) * scale
        } else {
            0.0
        };
        for _ in 0..QK.min(n - x.len()) {
            x.push(gauss(r) * scale + offset);
        }
    }
    x
}

/// `x` quantized; for the formats without a quantizer (IQ2/IQ3 i-quants)
/// random blocks seeded by `x` (the f16 `d` at offset 0 of each block set
/// to a sane value).
fn quant(dtype: DType, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0xa5u8; dtype.row_bytes("test", x.len()).unwrap()];
    if dtype.has_quantizer() {
        quantize_row(dtype, x, &mut out).unwrap();
        return out;
    }
    let seed = x
        .iter()
        .fold(0u64, |h, v| h.rotate_left(7) ^ u64::from(v.to_bits()));
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    r.fill(&mut out[..]);
    for blk in out.chunks_mut(dtype.type_size()) {
        let d = half::f16::from_f32(r.gen_range(-0.02f32..0.02));
        blk[..2].copy_from_slice(&d.to_le_bytes());
    }
    out
}

fn dequant(dtype: DType, b: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![f32::NAN; n];
    dequantize_row(dtype, b, &mut out).unwrap();
    out
}

/// Sizes the compile-time asserts pin down, mirrored at run time against DType.
#[test]
fn block_sizes_match_dtype() {
    use std::mem::size_of;
    assert_eq!(size_of::<BlockQ4_0>(), DType::Q4_0.type_size());
    assert_eq!(size_of::<BlockQ4_1>(), DType::Q4_1.type_size());
    assert_eq!(size_of::<BlockQ8_0>(), DType::Q8_0.type_size());
    assert_eq!(size_of::<BlockQ8_1>(), DType::Q8_1.type_size());
    assert_eq!(BlockQ4_0::QK, DType::Q4_0.block_size());
    assert_eq!(BlockQ4_1::QK, DType::Q4_1.block_size());
    assert_eq!(BlockQ8_0::QK, DType::Q8_0.block_size());
    assert_eq!(BlockQ8_1::QK, DType::Q8_1.block_size());
    assert_eq!(BlockQ4_0::DTYPE, DType::Q4_0);
    assert_eq!(BlockQ8_1::DTYPE, DType::Q8_1);
}

#[test]
fn roundtrip_float_formats() {
    let mut r = rng(1);
    let x: Vec<f32> = (0..1000).map(|_| gauss(&mut r) * 10.0).collect();
    assert_eq!(dequant(DType::F32, &quant(DType::F32, &x), x.len()), x);
    for (dtype, rel) in [
        (DType::F16, F16_HALF_ULP_REL),
        (DType::BF16, BF16_HALF_ULP_REL),
    ] {
        let y = dequant(dtype, &quant(dtype, &x), x.len());
        for (a, b) in x.iter().zip(&y) {
            // values are in the normal range of both formats here
            let err = (f64::from(*a) - f64::from(*b)).abs();
            assert!(err <= f64::from(a.abs()) * rel, "{dtype}: {a} -> {b}");
        }
    }
}

/// Q8_0 / Q8_1: |x - q*d16| <= d/2 (rounding of x/d) + 127 * |d - d16|
/// (the f16 rounding of d applied to |q| <= 127) + f32 slack.
#[test]
fn roundtrip_q8_error_bound() {
    let mut r = rng(2);
    for dtype in [DType::Q8_0, DType::Q8_1] {
        let x = random_row(&mut r, 32 * 41);
        let y = dequant(dtype, &quant(dtype, &x), x.len());
        for (xb, yb) in x.chunks(QK).zip(y.chunks(QK)) {
            let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = f64::from(amax / 127.0);
            let bound = d * (0.5 + 127.0 * F16_HALF_ULP_REL) + f64::from(amax) * F32_SLACK_REL;
            for (a, b) in xb.iter().zip(yb) {
                let err = (f64::from(*a) - f64::from(*b)).abs();
                assert!(err <= bound, "{dtype}: {a} -> {b}, bound {bound}");
            }
        }
    }
}

/// Q8_1's `s` is f16(d_f32 * sum(q)): within half an f16 ulp of d_f32*sum(q).
#[test]
fn q8_1_block_sum() {
    let mut r = rng(3);
    let x = random_row(&mut r, 32 * 17);
    let bytes = quant(DType::Q8_1, &x);
    let b: &[BlockQ8_1] = blocks(&bytes).unwrap_or_else(|_| panic!("vec<u8> alignment"));
    let mut q0 = vec![0u8; DType::Q8_0.row_bytes("t", x.len()).unwrap()];
    quantize_row(DType::Q8_0, &x, &mut q0).unwrap();
    for (i, (blk, xb)) in b.iter().zip(x.chunks(QK)).enumerate() {
        // same d / qs as Q8_0
        let b0: BlockQ8_0 = bytemuck::pod_read_unaligned(&q0[i * 34..(i + 1) * 34]);
        assert_eq!(blk.d.to_bits(), b0.d.to_bits());
        assert_eq!(blk.qs, b0.qs);
        let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let isum: i32 = blk.qs.iter().map(|&q| i32::from(q)).sum();
        let exact = f64::from(isum as f32 * d);
        let s = f64::from(blk.s.to_f32());
        assert!(
            (s - exact).abs() <= exact.abs() * F16_HALF_ULP_REL + 1e-30,
            "block {i}: s {s} vs {exact}"
        );
    }
}

/// Q4_0: codes are round-half-up of x/d in [-8, 7]. Elements with x/d < 7.5
/// are within d/2; the clamped top (x/d in [7.5, 8], i.e. near -max) within d.
/// Plus the f16 rounding of d over |q - 8| <= 8.
#[test]
fn roundtrip_q4_0_error_bound() {
    let mut r = rng(4);
    let x = random_row(&mut r, 32 * 41);
    let y = dequant(DType::Q4_0, &quant(DType::Q4_0, &x), x.len());
    for (xb, yb) in x.chunks(QK).zip(y.chunks(QK)) {
        let mut amax = 0f32;
        let mut max = 0f32;
        for &v in xb {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let ad = f64::from(d.abs());
        let f16_part = 8.0 * ad * F16_HALF_ULP_REL + f64::from(amax) * F32_SLACK_REL;
        for (a, b) in xb.iter().zip(yb) {
            let err = (f64::from(*a) - f64::from(*b)).abs();
            let t = if d == 0.0 { 0.0 } else { a / d };
            let bound = if t < 7.5 { ad * 0.5 } else { ad } + f16_part;
            assert!(err <= bound, "Q4_0: {a} -> {b}, d {d}, bound {bound}");
        }
    }
}

/// Q4_1: |x - (d16*q + m16)| <= d/2 + f16 rounding of d (over q <= 15) and
/// of m + f32 slack.
#[test]
fn roundtrip_q4_1_error_bound() {
    let mut r = rng(5);
    let x = random_row(&mut r, 32 * 41);
    let y = dequant(DType::Q4_1, &quant(DType::Q4_1, &x), x.len());
    for (xb, yb) in x.chunks(QK).zip(y.chunks(QK)) {
        let min = xb.iter().copied().fold(f32::MAX, f32::min);
        let max = xb.iter().copied().fold(-f32::MAX, f32::max);
        let d = f64::from((max - min) / 15.0);
        let bound = d * (0.5 + 15.0 * F16_HALF_ULP_REL)
            + f64::from(min.abs()) * F16_HALF_ULP_REL
            + f64::from(max.abs().max(min.abs())) * F32_SLACK_REL;
        for (a, b) in xb.iter().zip(yb) {
            let err = (f64::from(*a) - f64::from(*b)).abs();
            assert!(err <= bound, "Q4_1: {a} -> {b}, bound {bound}");
        }
    }
}

/// ggml's Q4_0 starts from max = 0.0, so an all-zero block gets d = 0/-8 =
/// -0.0 (f16 bits 0x8000). gguf.quants takes x[0] instead (differs only when
/// x[0] is -0.0); we follow ggml.
#[test]
fn q4_0_zero_block_scale_is_negative_zero() {
    let b = BlockQ4_0::quantize(&[0.0; 32]);
    assert_eq!(b.d.to_bits(), 0x8000);
    assert_eq!(b.qs, [0x88; 16]);
    let mut out = [f32::NAN; 32];
    b.dequantize(&mut out);
    assert!(out.iter().all(|v| *v == 0.0));
}

#[test]
fn nibble_layout() {
    // element j in the low nibble of byte j, element j+16 in the high nibble
    let mut x = [0f32; 32];
    x[0] = -8.0; // d = 1
    x[16] = 7.0;
    x[3] = 2.0;
    x[19] = -3.0;
    let b = BlockQ4_0::quantize(&x);
    assert_eq!(b.d.to_f32(), 1.0);
    assert_eq!(b.qs[0], (15 << 4));
    assert_eq!(b.qs[3], 10 | (5 << 4));
}

/// Quantized-activation dots against the f64 dot of the dequantized blocks.
/// Q4_0/Q8_0 dequantize exactly in f32 (f16 scale times a small integer), so
/// the only differences are f64 summation order and the final f32 rounding:
/// tolerance = half an f32 ulp of the result + DOT_F64_REL * sum|w*x|.
const DOT_F64_REL: f64 = 1e-12;

fn f64_dot(a: &[f32], b: &[f32]) -> (f64, f64) {
    let dot = a
        .iter()
        .zip(b)
        .map(|(&p, &q)| f64::from(p) * f64::from(q))
        .sum();
    let abs = a
        .iter()
        .zip(b)
        .map(|(&p, &q)| (f64::from(p) * f64::from(q)).abs())
        .sum();
    (dot, abs)
}

fn check_close(what: &str, got: f32, want: f64, tol: f64) {
    let tol = tol + want.abs() * f64::from(f32::EPSILON) * 0.5;
    assert!(
        (f64::from(got) - want).abs() <= tol,
        "{what}: got {got}, want {want}, tol {tol}"
    );
}

#[test]
fn dot_refs_match_dequantized_f64_dot() {
    let mut r = rng(6);
    for nb in [1usize, 7, 33] {
        let n = nb * QK;
        let w = random_row(&mut r, n);
        let x = random_row(&mut r, n);
        let (wq40, wq41, wq80) = (
            quant(DType::Q4_0, &w),
            quant(DType::Q4_1, &w),
            quant(DType::Q8_0, &w),
        );
        let (xq80, xq81) = (quant(DType::Q8_0, &x), quant(DType::Q8_1, &x));
        let xd80 = dequant(DType::Q8_0, &xq80, n);
        let xd81 = dequant(DType::Q8_1, &xq81, n);

        // Q4_0 x Q8_0
        let wd = dequant(DType::Q4_0, &wq40, n);
        let (want, abs) = f64_dot(&wd, &xd80);
        let got = vec_dot_q4_0_q8_0_ref(blocks(&wq40).unwrap(), blocks(&xq80).unwrap()).unwrap();
        check_close(&format!("q4_0_q8_0 nb={nb}"), got, want, abs * DOT_F64_REL);
        // vec_dot_ref with the dequantized activations is the same number
        let got = vec_dot_ref(DType::Q4_0, &wq40, &xd80).unwrap();
        check_close(
            &format!("vec_dot_ref Q4_0 nb={nb}"),
            got,
            want,
            abs * DOT_F64_REL,
        );

        // Q8_0 x Q8_0
        let wd = dequant(DType::Q8_0, &wq80, n);
        let (want, abs) = f64_dot(&wd, &xd80);
        let got = vec_dot_q8_0_q8_0_ref(blocks(&wq80).unwrap(), blocks(&xq80).unwrap()).unwrap();
        check_close(&format!("q8_0_q8_0 nb={nb}"), got, want, abs * DOT_F64_REL);

        // Q4_1 x Q8_1: the ref uses the stored s = f16(d*sum q) instead of
        // d16*sum(q), so add sum_b |m_w| * |s - d16*sum q| (computed exactly);
        // Q4_1 dequantizes with two f32 roundings (d*q, + m): add
        // sum (|d q| + |m|) |x| * 2^-23.
        let wd = dequant(DType::Q4_1, &wq41, n);
        let (want, abs) = f64_dot(&wd, &xd81);
        let wb: &[BlockQ4_1] = blocks(&wq41).unwrap();
        let xb: &[BlockQ8_1] = blocks(&xq81).unwrap();
        let mut tol = abs * DOT_F64_REL;
        for (bw, bx) in wb.iter().zip(xb) {
            let isum: i32 = bx.qs.iter().map(|&q| i32::from(q)).sum();
            let exact_s = f64::from(bx.d.to_f32()) * f64::from(isum);
            tol += f64::from(bw.m.to_f32()).abs() * (f64::from(bx.s.to_f32()) - exact_s).abs();
            let dq = f64::from(bw.d.to_f32()) * 15.0 + f64::from(bw.m.to_f32()).abs();
            let xs: f64 = bx
                .qs
                .iter()
                .map(|&q| (f64::from(q) * f64::from(bx.d.to_f32())).abs())
                .sum();
            tol += dq * xs * f64::from(f32::EPSILON);
        }
        let got = vec_dot_q4_1_q8_1_ref(wb, xb).unwrap();
        check_close(&format!("q4_1_q8_1 nb={nb}"), got, want, tol);
    }
}

/// vec_dot_ref for every dtype against a naive f64 dot of dequantize_row output.
#[test]
fn vec_dot_ref_all_dtypes() {
    let mut r = rng(7);
    for dtype in DType::ALL {
        // whole blocks: 32-element formats and QK_K = 256 K-quants alike
        let unit = dtype.block_size().max(QK);
        for n in [unit, 3 * unit, 10 * unit] {
            let w = random_row(&mut r, n);
            let x = random_row(&mut r, n);
            let wq = quant(dtype, &w);
            let (want, abs) = f64_dot(&dequant(dtype, &wq, n), &x);
            let got = vec_dot_ref(dtype, &wq, &x).unwrap();
            check_close(
                &format!("vec_dot_ref {dtype} n={n}"),
                got,
                want,
                abs * DOT_F64_REL,
            );
        }
    }
    // float rows need not be a multiple of 32
    let x = random_row(&mut r, 7);
    let w = random_row(&mut r, 7);
    let (want, abs) = f64_dot(&w, &x);
    let got = vec_dot_ref(DType::F32, &quant(DType::F32, &w), &x).unwrap();
    check_close("vec_dot_ref F32 n=7", got, want, abs * DOT_F64_REL);
}

/// Writes stay inside the row: sentinels around the output survive, every
/// poisoned (NaN / 0xa5) output element is overwritten. Odd sizes.
#[test]
fn sentinels_and_poisoned_outputs() {
    const GUARD: usize = 19;
    let mut r = rng(8);
    for dtype in DType::ALL {
        for nb in [1usize, 3, 7, 33] {
            let n = nb * dtype.block_size().max(1) * if dtype.is_quantized() { 1 } else { 11 };
            let x = random_row(&mut r, n);
            let rb = dtype.row_bytes("t", n).unwrap();
            let mut q = vec![0x5au8; rb + 2 * GUARD];
            if !dtype.has_quantizer() {
                // A typed error, output untouched; dequantize random blocks.
                assert!(quantize_row(dtype, &x, &mut q[GUARD..GUARD + rb]).is_err());
                assert!(q.iter().all(|&b| b == 0x5a), "{dtype}: touched on error");
                let v = quant(dtype, &x);
                q[GUARD..GUARD + rb].copy_from_slice(&v);
            } else {
                quantize_row(dtype, &x, &mut q[GUARD..GUARD + rb]).unwrap();
            }
            assert!(
                q[..GUARD]
                    .iter()
                    .chain(&q[GUARD + rb..])
                    .all(|&b| b == 0x5a),
                "{dtype}: quantize guard"
            );
            // poisoned output: compare with a fresh differently-poisoned run
            let mut q2 = vec![0xa5u8; rb];
            if dtype.has_quantizer() {
                quantize_row(dtype, &x, &mut q2).unwrap();
            } else {
                q2.copy_from_slice(&q[GUARD..GUARD + rb]);
            }
            assert_eq!(
                &q[GUARD..GUARD + rb],
                &q2[..],
                "{dtype}: output depends on poison"
            );

            let sentinel = f32::from_bits(0x7fa0_1234);
            let mut out = vec![sentinel; n + 2 * GUARD];
            for v in &mut out[GUARD..GUARD + n] {
                *v = f32::NAN;
            }
            // odd start: src needs no alignment
            let mut src = vec![0u8; rb + 1];
            src[1..].copy_from_slice(&q2);
            dequantize_row(dtype, &src[1..], &mut out[GUARD..GUARD + n]).unwrap();
            assert!(
                out[..GUARD]
                    .iter()
                    .chain(&out[GUARD + n..])
                    .all(|v| v.to_bits() == sentinel.to_bits()),
                "{dtype}: dequantize guard"
            );
            assert!(
                out[GUARD..GUARD + n].iter().all(|v| v.is_finite()),
                "{dtype}: poisoned output left"
            );
        }
    }
}

#[test]
fn error_cases_no_panic() {
    let x = vec![1.0f32; 2 * QK_K];
    for dtype in DType::ALL {
        // two blocks (64 elements for the 32-wide formats, 512 for K-quants)
        let n = 2 * dtype.block_size().max(QK);
        let x = x[..n].to_vec();
        let rb = dtype.row_bytes("t", n).unwrap();
        let mut out = vec![0u8; rb + 1];
        assert!(
            quantize_row(dtype, &x, &mut out).is_err(),
            "{dtype}: long out"
        );
        assert!(
            quantize_row(dtype, &x, &mut out[..rb - 1]).is_err(),
            "{dtype}: short out"
        );
        let mut f = vec![0f32; n];
        assert!(
            dequantize_row(dtype, &out[..rb - 1], &mut f).is_err(),
            "{dtype}: short src"
        );
        assert!(
            dequantize_row(dtype, &out, &mut f).is_err(),
            "{dtype}: long src"
        );
        assert!(
            vec_dot_ref(dtype, &out, &x).is_err(),
            "{dtype}: vec_dot_ref long w"
        );
        assert!(
            vec_dot_ref(dtype, &out[..rb - 1], &x).is_err(),
            "{dtype}: vec_dot_ref short w"
        );
        if dtype.is_quantized() {
            // length not a multiple of the block size
            let e = quantize_row(dtype, &x[..33], &mut out).unwrap_err();
            assert!(matches!(e, Error::BadRowLength { .. }), "{e}");
            let msg = e.to_string();
            assert!(
                msg.contains("quant::quantize_row") && msg.contains("33"),
                "{msg}"
            );
            let e = dequantize_row(dtype, &out, &mut f[..40]).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains("quant::dequantize_row") && msg.contains("40"),
                "{msg}"
            );
            assert!(vec_dot_ref(dtype, &out, &x[..33]).is_err());
        }
    }
    // empty rows are fine
    assert!(quantize_row(DType::Q4_0, &[], &mut []).is_ok());
    assert_eq!(vec_dot_ref(DType::Q8_0, &[], &[]).unwrap(), 0.0);

    // mismatched block counts in the quantized-activation dots
    let w40 = [BlockQ4_0::quantize(&x[..32]); 2];
    let w41 = [BlockQ4_1::quantize(&x[..32]); 2];
    let x80 = [BlockQ8_0::quantize(&x[..32]); 3];
    let x81 = [BlockQ8_1::quantize(&x[..32]); 1];
    assert!(vec_dot_q4_0_q8_0_ref(&w40, &x80).is_err());
    assert!(vec_dot_q4_1_q8_1_ref(&w41, &x81).is_err());
    assert!(vec_dot_q8_0_q8_0_ref(&x80[..2], &x80).is_err());

    // blocks(): wrong length and misaligned views are errors that say why
    let buf = vec![0u16; 64]; // 2-byte aligned storage
    let bytes: &[u8] = bytemuck::cast_slice(&buf);
    let e = blocks::<BlockQ8_0>(&bytes[..35]).unwrap_err().to_string();
    assert!(e.contains("whole number"), "{e}");
    let e = blocks::<BlockQ8_0>(&bytes[1..35]).unwrap_err().to_string();
    assert!(e.contains("aligned"), "{e}");
    assert_eq!(blocks::<BlockQ8_0>(&bytes[..68]).unwrap().len(), 2);
    let mut buf2 = vec![0u16; 64];
    let bytes2: &mut [u8] = bytemuck::cast_slice_mut(&mut buf2);
    assert!(blocks_mut::<BlockQ4_1>(&mut bytes2[..41]).is_err());
    assert_eq!(blocks_mut::<BlockQ4_1>(&mut bytes2[..40]).unwrap().len(), 2);

    // trait methods with wrong slice lengths do not panic
    let b = BlockQ4_1::quantize(&x[..5]);
    let mut short = [0f32; 5];
    b.dequantize(&mut short);
    let mut long = [f32::NAN; 40];
    BlockQ8_0::quantize(&[]).dequantize(&mut long);
    assert!(long[32..].iter().all(|v| v.is_nan()));
    // non-finite inputs do not panic either
    let weird = [
        f32::NAN,
        f32::INFINITY,
        -f32::INFINITY,
        1e-42,
        f32::MAX,
        -f32::MAX,
        0.0,
        1.0,
    ];
    let mut row = [0f32; QK_K];
    for (i, v) in row.iter_mut().enumerate() {
        *v = weird[i % weird.len()];
    }
    for dtype in DType::ALL {
        let mut out = vec![0u8; dtype.row_bytes("t", QK_K).unwrap()];
        if !dtype.has_quantizer() {
            assert!(quantize_row(dtype, &row, &mut out).is_err(), "{dtype}");
            continue;
        }
        quantize_row(dtype, &row, &mut out).unwrap();
        let mut back = [0f32; QK_K];
        dequantize_row(dtype, &out, &mut back).unwrap();
    }
}
