//! Unit tests for Q5_0/Q5_1, the K-quants, Q8_K and IQ4_NL/IQ4_XS: the
//! seed's hand-computed Q4_K cases (shared/seeds/002: 6-bit scale/min
//! packing for all 64x64 pairs, hand-built blocks), layout cases, quantizer
//! properties (each code is the nearest value its sub-block can represent
//! with the stored scales) and round-trip error bounds.
//! Bit-exactness against gguf.quants lives in `tests/quant_fixtures_ggml.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SEED: u64 = 0x6b69_6c6e_6b71_7561; // "kilnkqua"

fn rng(tag: u64) -> ChaCha8Rng {
    let seed = SEED ^ tag;
    eprintln!("seed = {seed:#x}");
    ChaCha8Rng::seed_from_u64(seed)
}

fn gauss(r: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = r.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = r.gen();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// Gaussian rows, one random scale (2^-6 .. 2^6) per 256-element super-block
/// and a random offset on some 32-element groups (exercises the mins).
fn random_row(r: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    let mut x = Vec::with_capacity(n);
    while x.len() < n {
        let scale = 2f32.powi(r.gen_range(-6..=6));
        for _ in 0..8 {
            let off = if r.gen_bool(0.25) {
                gauss(r) * scale
            } else {
                0.0
            };
            for _ in 0..32 {
                x.push(gauss(r) * scale + off);
            }
        }
    }
    x.truncate(n);
    x
}

fn quant(dtype: DType, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0xa5u8; dtype.row_bytes("test", x.len()).unwrap()];
    quantize_row(dtype, x, &mut out).unwrap();
    out
}

fn dequant(dtype: DType, b: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![f32::NAN; n];
    dequantize_row(dtype, b, &mut out).unwrap();
    out
}

const NEW_QUANTIZED: [DType; 10] = [
    DType::Q5_0,
    DType::Q5_1,
    DType::Q2_K,
    DType::Q3_K,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
    DType::Q8_K,
    DType::IQ4_NL,
    DType::IQ4_XS,
];

#[test]
fn block_sizes_match_dtype() {
    fn check<B: BlockFormat>() {
        assert_eq!(
            std::mem::size_of::<B>(),
            B::DTYPE.type_size(),
            "{}",
            B::DTYPE
        );
        assert_eq!(B::QK, B::DTYPE.block_size(), "{}", B::DTYPE);
    }
    check::<BlockQ5_0>();
    check::<BlockQ5_1>();
    check::<BlockQ2K>();
    check::<BlockQ3K>();
    check::<BlockQ4K>();
    check::<BlockQ5K>();
    check::<BlockQ6K>();
    check::<BlockQ8K>();
    check::<BlockIQ4NL>();
    check::<BlockIQ4XS>();
    // ggml type ids and names round-trip
    for dtype in DType::ALL {
        assert_eq!(
            DType::from_ggml_id(dtype.ggml_id().unwrap()).unwrap(),
            dtype
        );
        assert_eq!(DType::from_name(dtype.name()), Some(dtype));
    }
    assert_eq!(DType::Q4_K.ggml_id(), Some(12));
    assert_eq!(DType::IQ4_XS.ggml_id(), Some(23));
    assert_eq!(DType::Q4_K.bits_per_weight(), 4.5);
    assert_eq!(DType::Q6_K.bits_per_weight(), 6.5625);
}

// ---- The seed's hand-computed Q4_K cases, in kiln's API -------------------

/// Seed: encode -> decode of the Q4_K 6-bit (scale, min) packing is exact for
/// all 64 x 64 (sc, m) values (the same value in all 8 slots, as the seed
/// does), plus distinct random values per slot.
#[test]
fn q4k_scale_min_roundtrip_all_6bit_pairs() {
    for sc in 0..64u8 {
        for m in 0..64u8 {
            let packed = pack_scale_min_k4(&[sc; 8], &[m; 8]);
            let (got_sc, got_m) = unpack_scale_min_k4(&packed);
            assert_eq!(got_sc, [sc; 8], "sc {sc} m {m}: {packed:?}");
            assert_eq!(got_m, [m; 8], "sc {sc} m {m}: {packed:?}");
        }
    }
    let mut r = rng(1);
    for _ in 0..1000 {
        let sc: [u8; 8] = std::array::from_fn(|_| r.gen_range(0..64));
        let m: [u8; 8] = std::array::from_fn(|_| r.gen_range(0..64));
        assert_eq!(unpack_scale_min_k4(&pack_scale_min_k4(&sc, &m)), (sc, m));
    }
}

/// The seed's decoder semantics, spelled out on one packed array.
#[test]
fn q4k_scale_min_bit_positions() {
    let sc = [1, 2, 3, 4, 0b11_0101, 0b10_1010, 0b01_1111, 0b11_0000];
    let m = [5, 6, 7, 8, 0b01_0011, 0b11_1100, 0b10_0001, 0b00_1110];
    let s = pack_scale_min_k4(&sc, &m);
    for j in 0..4 {
        assert_eq!(s[j] & 63, sc[j]);
        assert_eq!(s[j + 4] & 63, m[j]);
    }
    for j in 4..8 {
        assert_eq!((s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4), sc[j]);
        assert_eq!((s[j + 4] >> 4) | ((s[j] >> 6) << 4), m[j]);
    }
}

fn q4k_from_bytes(block: &[u8; 144]) -> [f32; 256] {
    let mut out = [f32::NAN; 256];
    dequantize_row(DType::Q4_K, block, &mut out).unwrap();
    out
}

/// Seed: an all-zero block dequantizes to all zeros.
#[test]
fn q4k_all_zeros_dequants_to_zero() {
    let out = q4k_from_bytes(&[0u8; 144]);
    assert!(out.iter().all(|&v| v == 0.0), "{out:?}");
}

/// Seed: d = 1, dmin = 0, scales[0] = 1 (sub-block 0: sc 1, m 0), qs[0] =
/// 0x0F (low nibble 15 = element 0) -> out[0] = 15; out[32] (high nibble of
/// qs[0], sub-block 1 with sc 0) = 0.
#[test]
fn q4k_first_value_low_nibble() {
    let mut block = [0u8; 144];
    block[0..2].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
    block[4] = 1;
    block[16] = 0x0f;
    let out = q4k_from_bytes(&block);
    assert_eq!(out[0], 15.0);
    assert_eq!(out[32], 0.0);
    assert!(out[1..].iter().all(|&v| v == 0.0));
}

/// Seed: the dmin path. d = 2, dmin = 3, sc[0] = 1 (scales[0]), m[0] = 1
/// (scales[4]), qs[0] low nibble 15 -> out[0] = 2*1*15 - 3*1 = 27; the other
/// elements of sub-block 0 (code 0) are -3.
#[test]
fn q4k_dmin_offset() {
    let mut block = [0u8; 144];
    block[0..2].copy_from_slice(&f16::from_f32(2.0).to_le_bytes());
    block[2..4].copy_from_slice(&f16::from_f32(3.0).to_le_bytes());
    block[4] = 1;
    block[8] = 1;
    block[16] = 0x0f;
    let out = q4k_from_bytes(&block);
    assert_eq!(out[0], 27.0);
    assert!(out[1..32].iter().all(|&v| v == -3.0));
    assert!(out[32..].iter().all(|&v| v == 0.0));
}

/// Seed's synthetic packing (uniform per-sub-block quantizer, hand-packed
/// bytes) decoded by kiln: each element equals the seed's formula
/// `d*sc*q - dmin*m` evaluated with the same f16 scales.
#[test]
fn q4k_hand_packed_block_layout() {
    let mut r = rng(2);
    let sc: [u8; 8] = std::array::from_fn(|_| r.gen_range(0..64));
    let m: [u8; 8] = std::array::from_fn(|_| r.gen_range(0..64));
    let q: [u8; 256] = std::array::from_fn(|_| r.gen_range(0..16));
    let (d, dmin) = (f16::from_f32(0.0123), f16::from_f32(0.0456));
    let mut block = [0u8; 144];
    block[0..2].copy_from_slice(&d.to_le_bytes());
    block[2..4].copy_from_slice(&dmin.to_le_bytes());
    block[4..16].copy_from_slice(&pack_scale_min_k4(&sc, &m));
    // pair p = sub-blocks (2p, 2p+1) shares qs[32p..32p+32]: low / high nibble
    for p in 0..4 {
        for l in 0..32 {
            block[16 + 32 * p + l] = q[64 * p + l] | (q[64 * p + 32 + l] << 4);
        }
    }
    let out = q4k_from_bytes(&block);
    for (i, &v) in out.iter().enumerate() {
        let s = i / 32;
        let want =
            d.to_f32() * f32::from(sc[s]) * f32::from(q[i]) - dmin.to_f32() * f32::from(m[s]);
        assert_eq!(v, want, "element {i}");
    }
}

// ---- Layout cases for the other formats -----------------------------------

/// Q5_0: element j's fifth bit is bit j of qh; low nibbles as Q4_0.
#[test]
fn q5_layout() {
    let mut x = [0f32; 32];
    x[0] = -16.0; // d = 1, code 0
    x[20] = 1.0; // code 17: qs[4] high nibble 1, qh bit 20
    x[3] = -1.0; // code 15: qs[3] low nibble 15, no high bit
    let b = BlockQ5_0::quantize(&x);
    assert_eq!(b.d.to_f32(), 1.0);
    let qh = u32::from_le_bytes(b.qh);
    assert_eq!(qh & (1 << 20), 1 << 20);
    assert_eq!(qh & (1 << 3), 0);
    assert_eq!(qh & 1, 0);
    assert_eq!(b.qs[4] >> 4, 1);
    assert_eq!(b.qs[3] & 0xf, 15);
    let mut out = [f32::NAN; 32];
    b.dequantize(&mut out);
    assert_eq!(out, x);
    // Q5_1 reproduces 0..=31 exactly (d = 1, m = 0)
    let y: [f32; 32] = std::array::from_fn(|i| ((i * 7) % 32) as f32);
    let b = BlockQ5_1::quantize(&y);
    b.dequantize(&mut out);
    assert_eq!(out, y);
}

/// Q8_K: `d = -max/127` in f32 (no f16), ties to even, bsums.
#[test]
fn q8k_definition() {
    let mut x = [0f32; 256];
    x[0] = 127.0; // iscale = -1, d = -1
    x[1] = 2.5; // -2.5 -> -2 (ties to even; Q8_0 would give -3)
    x[2] = -3.5; // 3.5 -> 4
    x[17] = 100.25;
    let b = BlockQ8K::quantize(&x);
    assert_eq!(b.d, -1.0);
    assert_eq!(&b.qs[..3], &[-127, -2, 4]);
    assert_eq!(b.qs[17], -100);
    assert_eq!(b.bsums[0], -127 - 2 + 4);
    assert_eq!(b.bsums[1], -100);
    assert!(b.bsums[2..].iter().all(|&s| s == 0));
    let mut r = rng(3);
    let x = random_row(&mut r, 256 * 9);
    let bytes = quant(DType::Q8_K, &x);
    let blocks: Vec<BlockQ8K> = bytes
        .chunks(292)
        .map(bytemuck::pod_read_unaligned)
        .collect();
    let y = dequant(DType::Q8_K, &bytes, x.len());
    for (bi, (b, xb)) in blocks.iter().zip(x.chunks(256)).enumerate() {
        for (j, s) in b.bsums.iter().enumerate() {
            let sum: i16 = b.qs[16 * j..16 * j + 16]
                .iter()
                .map(|&q| i16::from(q))
                .sum();
            assert_eq!(*s, sum, "block {bi} bsum {j}");
        }
        assert!(b.qs.iter().all(|&q| q >= -127), "block {bi}");
        // |x - d q| <= |d|/2 (rounding of x/d) + f32 slack
        let ad = f64::from(b.d.abs());
        for (i, (&a, &v)) in xb.iter().zip(&y[bi * 256..]).enumerate() {
            let err = (f64::from(a) - f64::from(v)).abs();
            let bound = ad * 0.5 + f64::from(a.abs()) * F32_SLACK_REL;
            assert!(err <= bound, "block {bi}[{i}]: {a} -> {v}, bound {bound}");
        }
    }
}

/// 2^-21: a few f32 roundings (relative), for quantities computed in f32.
const F32_SLACK_REL: f64 = 1.0 / 2_097_152.0;

/// Zero rows give zero blocks for every format (no NaN from 0/0).
#[test]
fn zero_rows_dequantize_to_zero() {
    for dtype in NEW_QUANTIZED {
        let n = 2 * QK_K;
        let y = dequant(dtype, &quant(dtype, &vec![0.0; n]), n);
        assert!(y.iter().all(|&v| v == 0.0), "{dtype}: {y:?}");
    }
}

// ---- Quantizer properties ---------------------------------------------------

/// The values one element can take, given its block's stored scales.
fn candidates(dtype: DType, block: &[u8], i: usize) -> Vec<f32> {
    let grid = |dl: f32| KVALUES_IQ4NL.iter().map(|&g| dl * f32::from(g)).collect();
    let affine =
        |dl: f32, ml: f32, lo: i32, hi: i32| (lo..=hi).map(|q| dl * q as f32 - ml).collect();
    match dtype {
        DType::Q2_K => {
            let b: BlockQ2K = bytemuck::pod_read_unaligned(block);
            let s = b.scales[i / 16];
            let dl = b.d.to_f32() * f32::from(s & 0xf);
            affine(dl, b.dmin.to_f32() * f32::from(s >> 4), 0, 3)
        }
        DType::Q3_K => {
            // decode the scale through a one-hot dequantize: code 1 at i
            let b: BlockQ3K = bytemuck::pod_read_unaligned(block);
            let mut one = b;
            one.hmask = [0xff; 32];
            one.qs = [0x55; 64]; // every 2-bit code 1, high bit set: q = 1
            let mut out = [0f32; 256];
            one.dequantize(&mut out);
            affine(out[i], 0.0, -4, 3)
        }
        DType::Q4_K | DType::Q5_K => {
            let (d, dmin, scales) = if dtype == DType::Q4_K {
                let b: BlockQ4K = bytemuck::pod_read_unaligned(block);
                (b.d, b.dmin, b.scales)
            } else {
                let b: BlockQ5K = bytemuck::pod_read_unaligned(block);
                (b.d, b.dmin, b.scales)
            };
            let (sc, m) = unpack_scale_min_k4(&scales);
            let dl = d.to_f32() * f32::from(sc[i / 32]);
            let hi = if dtype == DType::Q4_K { 15 } else { 31 };
            affine(dl, dmin.to_f32() * f32::from(m[i / 32]), 0, hi)
        }
        DType::Q6_K => {
            let b: BlockQ6K = bytemuck::pod_read_unaligned(block);
            affine(b.d.to_f32() * f32::from(b.scales[i / 16]), 0.0, -32, 31)
        }
        DType::IQ4_NL => {
            let b: BlockIQ4NL = bytemuck::pod_read_unaligned(block);
            grid(b.d.to_f32())
        }
        DType::IQ4_XS => {
            let b: BlockIQ4XS = bytemuck::pod_read_unaligned(block);
            let ib = i / 32;
            let lo = (b.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xf;
            let hi = ((b.scales_h >> (2 * ib)) & 3) as u8;
            grid(b.d.to_f32() * f32::from(i16::from(lo | (hi << 4)) - 32))
        }
        _ => unreachable!(),
    }
}

/// Slack for "nearest representable value": the K-quant codes are
/// `round((x + m) / s)` in f32 with the stored scales, so only f32 rounding
/// near a midpoint can pick the other neighbour (F32_SLACK_REL of the
/// magnitudes involved). The IQ4 codes are chosen with the f32 scale
/// before its f16 rounding, which moves midpoints by up to half an f16 ulp
/// of the scale: 2^-11 of |x| (doubled for margin).
const IQ4_MIDPOINT_REL: f64 = 1.0 / 1024.0;

/// Every element's dequantized value is the nearest value its sub-block can
/// represent with the stored scales (the quantizers' final re-mapping step).
#[test]
fn codes_are_nearest_given_stored_scales() {
    let mut r = rng(4);
    for dtype in [
        DType::Q2_K,
        DType::Q3_K,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
        DType::IQ4_NL,
        DType::IQ4_XS,
    ] {
        let n = QK_K * 6;
        let x = random_row(&mut r, n);
        let bytes = quant(dtype, &x);
        let y = dequant(dtype, &bytes, n);
        let bs = dtype.block_size();
        let ts = dtype.type_size();
        let mut checked = 0;
        for (i, (&a, &v)) in x.iter().zip(&y).enumerate() {
            let block = &bytes[(i / bs) * ts..(i / bs + 1) * ts];
            let cands = candidates(dtype, block, i % bs);
            let best = cands
                .iter()
                .map(|&c| (f64::from(a) - f64::from(c)).abs())
                .fold(f64::INFINITY, f64::min);
            let mag = cands
                .iter()
                .fold(f64::from(a.abs()), |m, c| m.max(f64::from(c.abs())));
            let slack = if matches!(dtype, DType::IQ4_NL | DType::IQ4_XS) {
                f64::from(a.abs()) * IQ4_MIDPOINT_REL + mag * F32_SLACK_REL
            } else {
                mag * F32_SLACK_REL
            };
            let err = (f64::from(a) - f64::from(v)).abs();
            assert!(
                err <= best + slack,
                "{dtype} [{i}]: x {a} -> {v} (err {err}), nearest candidate err {best}"
            );
            checked += 1;
        }
        eprintln!("{dtype}: {checked} elements are nearest codes");
    }
}

/// Round-trip error, as RMS(x - deq) / RMS(x) over each super-block of the
/// random rows (Gaussian groups with offsets), must stay below a per-format
/// bound. For reference, a uniform quantizer with 2^b levels over ±3σ has
/// relative RMS error about 6/(2^b * sqrt(12)): 0.43 (2 bit), 0.22 (3),
/// 0.11 (4), 0.054 (5), 0.027 (6), 0.014 (8). The bounds sit about 1.4x
/// above the worst block measured with these seeds (Q2_K 0.31, Q3_K 0.17,
/// Q4_K 0.075, Q5_K 0.038, Q6_K 0.019, Q8_K 0.0096, IQ4_* 0.083, Q5_0 0.050,
/// Q5_1 0.040), so a regression in a
/// scale search or a packing error (which gives errors of order 1) fails.
const RMS_REL_MAX: [(DType, f64); 10] = [
    (DType::Q5_0, 0.07),
    (DType::Q5_1, 0.056),
    (DType::Q2_K, 0.43),
    (DType::Q3_K, 0.23),
    (DType::Q4_K, 0.105),
    (DType::Q5_K, 0.054),
    (DType::Q6_K, 0.027),
    (DType::Q8_K, 0.0135),
    (DType::IQ4_NL, 0.115),
    (DType::IQ4_XS, 0.115),
];

#[test]
fn roundtrip_rms_error_bounds() {
    let mut r = rng(5);
    for (dtype, bound) in RMS_REL_MAX {
        let n = QK_K * 24;
        let x = random_row(&mut r, n);
        let y = dequant(dtype, &quant(dtype, &x), n);
        let mut worst = 0f64;
        for (xb, yb) in x.chunks(QK_K).zip(y.chunks(QK_K)) {
            let e2: f64 = xb
                .iter()
                .zip(yb)
                .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                .sum();
            let x2: f64 = xb.iter().map(|&a| f64::from(a).powi(2)).sum();
            worst = worst.max((e2 / x2).sqrt());
        }
        eprintln!("{dtype}: worst relative RMS error {worst:.4} (bound {bound})");
        assert!(
            worst <= bound,
            "{dtype}: relative RMS error {worst} > {bound}"
        );
    }
}

/// Q5_1 per-element bound on rows of quarter-integers with offsets:
/// |x - deq| <= d/2 (rounding) + the f16 rounding of d over q <= 31 and of
/// m (2^-11 relative each) + f32 slack.
#[test]
fn q5_1_error_bound_on_quarter_grid() {
    let mut r = rng(6);
    for _ in 0..20 {
        let base: f32 = r.gen_range(-4..4) as f32;
        let x: Vec<f32> = (0..32)
            .map(|_| base + r.gen_range(0..32) as f32 / 4.0)
            .collect();
        let y = dequant(DType::Q5_1, &quant(DType::Q5_1, &x), 32);
        let min = x.iter().copied().fold(f32::MAX, f32::min);
        let max = x.iter().copied().fold(-f32::MAX, f32::max);
        let d = f64::from((max - min) / 31.0);
        for (a, b) in x.iter().zip(&y) {
            let err = (f64::from(*a) - f64::from(*b)).abs();
            let bound = d * (0.5 + 31.0 / 2048.0) + f64::from(min.abs()) / 2048.0 + 1e-6;
            assert!(err <= bound, "{a} -> {b}, bound {bound}");
        }
    }
}

/// Bad row lengths for the new formats: typed errors naming op and value.
#[test]
fn bad_row_lengths_are_typed_errors() {
    for dtype in NEW_QUANTIZED {
        let bs = dtype.block_size();
        for len in [1usize, bs - 1, bs + 1, 3 * bs + 7] {
            let x = vec![0.5f32; len];
            let mut out = vec![0u8; 4096];
            let e = quantize_row(dtype, &x, &mut out).unwrap_err();
            assert!(
                matches!(e, Error::BadRowLength { len: l, block, .. } if l == len && block == bs),
                "{dtype}: {e}"
            );
            let msg = e.to_string();
            assert!(
                msg.contains("quantize_row") && msg.contains(&len.to_string()),
                "{msg}"
            );
            let mut f = vec![0f32; len];
            let e = dequantize_row(dtype, &out, &mut f).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains("dequantize_row") && msg.contains(&len.to_string()),
                "{msg}"
            );
        }
        // right length, wrong byte count
        let mut out = vec![0u8; dtype.type_size() + 1];
        let e = quantize_row(dtype, &vec![0.0; bs], &mut out).unwrap_err();
        assert!(matches!(e, Error::LengthMismatch { .. }), "{dtype}: {e}");
    }
}
