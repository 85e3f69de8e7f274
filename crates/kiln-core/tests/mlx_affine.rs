//! MLX affine quantization (`kiln_core::quant::mlx`) against fixtures made by
//! mlx itself (`scripts/fixtures/make_mlx_fixtures.py`, `mlx.core.quantize`
//! / `mlx.core.dequantize`), plus layout, round-trip and bad-input tests.
//!
//! What is exact and what is not:
//! - quantize: kiln's packed words, scales and biases == mlx's, bit for bit
//!   (both evaluate the same f32 expressions in the same order; zero
//!   mismatches allowed).
//! - dequantize, f32 scales: kiln == mlx bit for bit (both do `q*s` then
//!   `+ b` in f32).
//! - dequantize, f16/bf16 scales: mlx computes in the scale dtype, rounding
//!   `q*s` and then the sum to f16/bf16; kiln computes in f32 (where `q*s` is
//!   exact). Checked two ways: (1) emulating mlx's two roundings on kiln's
//!   unpacked codes reproduces mlx's output exactly; (2) kiln's f32 value is
//!   within [`deq_bound`] of mlx's: half an ulp (of the scale dtype) of `q*s`
//!   plus half an ulp of mlx's result.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use half::{bf16, f16};
use kiln_core::quant::{
    dequantize_row_mlx_affine_ref, pack_codes_row, quantize_row_mlx_affine_ref, unpack_codes_row,
    MlxAffine, MlxRow, MlxRowMut, MLX_AFFINE_BITS, MLX_AFFINE_GROUP_SIZES,
};
use kiln_core::{DType, Error};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;

// ---------------------------------------------------------------- fixtures

struct Case {
    name: String,
    p: MlxAffine,
    rows: usize,
    row_len: usize,
    input: Vec<f32>,
    packed: Vec<u32>,
    scales: Vec<u8>,
    biases: Vec<u8>,
    dequant: Vec<f32>,
}

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/mlx/mlx_affine.bin")
}

fn dtype_of(name: &str) -> DType {
    match name {
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        "f32" => DType::F32,
        other => panic!("unknown scale dtype {other} in fixture"),
    }
}

/// Raw little-endian elements of `dtype` -> f32 (exact).
fn to_f32(dtype: DType, b: &[u8]) -> Vec<f32> {
    match dtype {
        DType::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        DType::F16 => b
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::BF16 => b
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => panic!("not a scale dtype: {other}"),
    }
}

/// Fixture file: b"KMLXAF01", u32 header_len, JSON header, data blob
/// (format documented in the script).
fn load_cases() -> Option<Vec<Case>> {
    let path = fixture_path();
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("SKIPPED: cannot read {}: {e}", path.display());
            return None;
        }
    };
    assert_eq!(&bytes[..8], b"KMLXAF01", "bad magic");
    let hlen = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[12..12 + hlen]).unwrap();
    let blob = &bytes[12 + hlen..];
    eprintln!(
        "fixture: mlx {} seed {}",
        header["mlx_version"], header["seed"]
    );
    let span = |c: &serde_json::Value, k: &str| -> &[u8] {
        let off = c[k][0].as_u64().unwrap() as usize;
        let n = c[k][1].as_u64().unwrap() as usize;
        &blob[off..off + n]
    };
    let cases = header["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let dt = dtype_of(c["scale_dtype"].as_str().unwrap());
            let p = MlxAffine::new(
                c["bits"].as_u64().unwrap() as u32,
                c["group_size"].as_u64().unwrap() as usize,
                dt,
            )
            .unwrap();
            Case {
                name: c["name"].as_str().unwrap().to_string(),
                p,
                rows: c["rows"].as_u64().unwrap() as usize,
                row_len: c["row_len"].as_u64().unwrap() as usize,
                input: to_f32(dt, span(c, "input")),
                packed: span(c, "packed")
                    .chunks_exact(4)
                    .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
                    .collect(),
                scales: span(c, "scales").to_vec(),
                biases: span(c, "biases").to_vec(),
                dequant: to_f32(dt, span(c, "dequant")),
            }
        })
        .collect();
    Some(cases)
}

/// Per-row slices of a case.
struct RowView<'a> {
    x: &'a [f32],
    packed: &'a [u32],
    scales: &'a [u8],
    biases: &'a [u8],
    deq: &'a [f32],
}

fn row(c: &Case, r: usize) -> RowView<'_> {
    let sz = c.p.row_bytes(c.row_len).unwrap();
    let (w, s) = (sz.packed / 4, sz.scales);
    RowView {
        x: &c.input[r * c.row_len..(r + 1) * c.row_len],
        packed: &c.packed[r * w..(r + 1) * w],
        scales: &c.scales[r * s..(r + 1) * s],
        biases: &c.biases[r * s..(r + 1) * s],
        deq: &c.dequant[r * c.row_len..(r + 1) * c.row_len],
    }
}

/// Round to the scale dtype (nearest even), as f32.
fn round_to(dtype: DType, v: f32) -> f32 {
    match dtype {
        DType::F16 => f16::from_f32(v).to_f32(),
        DType::BF16 => bf16::from_f32(v).to_f32(),
        _ => v,
    }
}

/// One ulp of `dtype` at |v| (the spacing of representable values there;
/// the subnormal spacing below the normal range).
fn ulp(dtype: DType, v: f32) -> f32 {
    let (mant_bits, min_exp) = match dtype {
        DType::F16 => (10, -14),
        DType::BF16 => (7, -126),
        _ => (23, -126),
    };
    let a = v.abs();
    let e = if a == 0.0 {
        min_exp
    } else {
        (a.log2().floor() as i32).max(min_exp)
    };
    2f64.powi(e - mant_bits) as f32
}

/// Largest allowed |kiln f32 dequant - mlx dequant| for f16/bf16 scales:
/// mlx rounds `q*s` (error <= ulp(q*s)/2) and then the sum (<= ulp(result)/2);
/// kiln's f32 value is the exact `q*s + b` rounded once to f32 (tiny next to
/// those). Generous by 2^-20 relative for the f32 rounding.
fn deq_bound(dtype: DType, qs: f32, mlx: f32) -> f32 {
    0.5 * ulp(dtype, qs) + 0.5 * ulp(dtype, mlx) + mlx.abs() * 2f32.powi(-20)
}

#[test]
fn fixture_covers_every_combination() {
    let Some(cases) = load_cases() else { return };
    for dt in [DType::F16, DType::BF16, DType::F32] {
        for bits in MLX_AFFINE_BITS {
            for gs in MLX_AFFINE_GROUP_SIZES {
                assert!(
                    cases
                        .iter()
                        .any(|c| c.p == MlxAffine::new(bits, gs, dt).unwrap()),
                    "fixture lacks {dt} bits {bits} group {gs}"
                );
            }
        }
    }
    eprintln!("{} fixture cases", cases.len());
}

#[test]
fn dequantize_matches_mlx() {
    let Some(cases) = load_cases() else { return };
    let mut failures = Vec::new();
    let (mut n_exact, mut n_values, mut max_ratio) = (0usize, 0usize, 0f32);
    for c in &cases {
        let dt = c.p.scale_dtype;
        for r in 0..c.rows {
            let v = row(c, r);
            let mut out = vec![f32::NAN; c.row_len]; // poisoned
            let src = MlxRow {
                packed: v.packed,
                scales: v.scales,
                biases: v.biases,
            };
            dequantize_row_mlx_affine_ref(&c.p, src, &mut out).unwrap();
            let mut codes = vec![0u8; c.row_len];
            unpack_codes_row(c.p.bits, v.packed, &mut codes).unwrap();
            let s = to_f32(dt, v.scales);
            let b = to_f32(dt, v.biases);
            for (i, (&k, &m)) in out.iter().zip(v.deq).enumerate() {
                n_values += 1;
                let g = i / c.p.group_size;
                let qs = f32::from(codes[i]) * s[g];
                // mlx's own arithmetic: round q*s, then the sum, to the dtype.
                let emulated = round_to(dt, round_to(dt, qs) + b[g]);
                if emulated.to_bits() != m.to_bits() {
                    failures.push(format!(
                        "{} row {r} [{i}]: emulated mlx {emulated} != mlx {m}",
                        c.name
                    ));
                }
                if k.to_bits() == m.to_bits() {
                    n_exact += 1;
                }
                if dt == DType::F32 {
                    if k.to_bits() != m.to_bits() {
                        failures.push(format!("{} row {r} [{i}]: kiln {k} != mlx {m}", c.name));
                    }
                } else {
                    let d = (k - m).abs();
                    max_ratio = max_ratio.max(d / deq_bound(dt, qs, m));
                    if d.is_nan() || d > deq_bound(dt, qs, m) {
                        failures.push(format!(
                            "{} row {r} [{i}]: kiln {k} vs mlx {m}: |diff| {d} > bound {}",
                            c.name,
                            deq_bound(dt, qs, m)
                        ));
                    }
                }
            }
        }
    }
    eprintln!(
        "dequantize: {n_values} values, {n_exact} bit-identical to mlx, \
         max |kiln - mlx| / bound = {max_ratio} (f16/bf16 cases)"
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn quantize_matches_mlx_exactly() {
    let Some(cases) = load_cases() else { return };
    let mut failures = Vec::new();
    let mut n_rows = 0;
    for c in &cases {
        let sz = c.p.row_bytes(c.row_len).unwrap();
        for r in 0..c.rows {
            let v = row(c, r);
            n_rows += 1;
            let mut packed = vec![u32::MAX; sz.packed / 4]; // poisoned
            let mut scales = vec![0xAB; sz.scales];
            let mut biases = vec![0xCD; sz.biases];
            let dst = MlxRowMut {
                packed: &mut packed,
                scales: &mut scales,
                biases: &mut biases,
            };
            quantize_row_mlx_affine_ref(&c.p, v.x, dst).unwrap();
            let mut kc = vec![0u8; c.row_len];
            let mut mc = vec![0u8; c.row_len];
            unpack_codes_row(c.p.bits, &packed, &mut kc).unwrap();
            unpack_codes_row(c.p.bits, v.packed, &mut mc).unwrap();
            let code_diffs = kc.iter().zip(&mc).filter(|(a, b)| a != b).count();
            if packed != v.packed {
                failures.push(format!(
                    "{} row {r}: packed words differ ({code_diffs} codes)",
                    c.name
                ));
            }
            if scales != v.scales {
                failures.push(format!(
                    "{} row {r}: scales {:?} != mlx {:?}",
                    c.name,
                    to_f32(c.p.scale_dtype, &scales),
                    to_f32(c.p.scale_dtype, v.scales)
                ));
            }
            if biases != v.biases {
                failures.push(format!(
                    "{} row {r}: biases {:?} != mlx {:?}",
                    c.name,
                    to_f32(c.p.scale_dtype, &biases),
                    to_f32(c.p.scale_dtype, v.biases)
                ));
            }
        }
    }
    eprintln!("quantize: {n_rows} rows compared with mlx");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn fixture_codes_repack_to_the_same_words() {
    let Some(cases) = load_cases() else { return };
    for c in &cases {
        for r in 0..c.rows {
            let v = row(c, r);
            let mut codes = vec![0u8; c.row_len];
            unpack_codes_row(c.p.bits, v.packed, &mut codes).unwrap();
            let mut words = vec![0x5555_5555u32; v.packed.len()];
            pack_codes_row(c.p.bits, &codes, &mut words).unwrap();
            assert_eq!(words, v.packed, "{} row {r}", c.name);
        }
    }
}

// ------------------------------------------------------------------ layout

#[test]
fn three_bit_codes_straddle_words_little_endian() {
    // Codes 0..7 repeated: 8 codes fill 24 bits = 0xFAC688, laid end to end.
    let codes: Vec<u8> = (0..32).map(|i| (i % 8) as u8).collect();
    let mut words = [0u32; 3];
    pack_codes_row(3, &codes, &mut words).unwrap();
    assert_eq!(words, [0x88FA_C688, 0xC688_FAC6, 0xFAC6_88FA]);
    // Code 10 (value 2) is bits 30..33: bits 30,31 of word 0, bit 0 of word 1.
    assert_eq!(words[0] >> 30, 2 & 3);
    assert_eq!(words[1] & 1, 2 >> 2);
    let mut back = [0u8; 32];
    unpack_codes_row(3, &words, &mut back).unwrap();
    assert_eq!(back.to_vec(), codes);
}

#[test]
fn row_sizes() {
    let p = MlxAffine::new(4, 64, DType::F16).unwrap();
    let s = p.row_bytes(4096).unwrap();
    assert_eq!(
        (s.packed, s.scales, s.biases, s.total()),
        (2048, 128, 128, 2304)
    );
    assert_eq!(p.packed_words_per_row(4096).unwrap(), 512);
    assert_eq!(p.groups_per_row(4096).unwrap(), 64);
    assert_eq!(p.bits_per_weight(), 4.5);
    let p = MlxAffine::new(3, 32, DType::BF16).unwrap();
    let s = p.row_bytes(96).unwrap();
    assert_eq!((s.packed, s.scales, s.biases), (36, 6, 6));
    let p = MlxAffine::new(6, 128, DType::F32).unwrap();
    assert_eq!(p.packed_words_per_row(128).unwrap(), 24);
    assert_eq!(p.bits_per_weight(), 6.5);
    assert_eq!(p.row_bytes(0).unwrap().total(), 0);
    for bits in MLX_AFFINE_BITS {
        for gs in MLX_AFFINE_GROUP_SIZES {
            let p = MlxAffine::new(bits, gs, DType::F16).unwrap();
            assert_eq!(p.packed_words_per_row(gs).unwrap() * 32, gs * bits as usize);
        }
    }
}

// --------------------------------------------------------------- round trip

const SEED: u64 = 0x006d_6c78_5f61_6666;

fn rng(tag: u64) -> ChaCha8Rng {
    let seed = SEED ^ tag;
    eprintln!("seed = {seed:#x}");
    ChaCha8Rng::seed_from_u64(seed)
}

/// Quantize + dequantize random rows (odd group counts) and check each
/// value against the bound the algorithm guarantees:
/// - rounding to the nearest code: half a step `|s|`;
/// - the far end of the range may be clamped by up to one more half step,
///   because mlx moves the scale to `edge / rint(edge / s)` (worst at 2 bits:
///   the range can grow to 4 steps of the new scale while only 3 fit);
/// - storage rounding of s and b to the dtype (relative half-ulp `u`) moves
///   a value by at most `(n_bins * |s| + |b|) * u`, plus f32 rounding.
#[test]
fn round_trip_error_is_bounded() {
    let mut r = rng(1);
    for dt in [DType::F16, DType::BF16, DType::F32] {
        let u = match dt {
            DType::F16 => 2f32.powi(-11),
            DType::BF16 => 2f32.powi(-8),
            _ => 2f32.powi(-24),
        };
        for bits in MLX_AFFINE_BITS {
            for gs in MLX_AFFINE_GROUP_SIZES {
                let p = MlxAffine::new(bits, gs, dt).unwrap();
                for n_groups in [1usize, 3, 7] {
                    let n = n_groups * gs;
                    let mag: f32 = r.gen_range(0.01..10.0);
                    let off: f32 = r.gen_range(-2.0..2.0);
                    let x: Vec<f32> = (0..n)
                        .map(|_| round_to(dt, off + mag * r.gen_range(-1.0f32..1.0)))
                        .collect();
                    let sz = p.row_bytes(n).unwrap();
                    let (mut pk, mut sc, mut bi) = (
                        vec![0u32; sz.packed / 4],
                        vec![0u8; sz.scales],
                        vec![0u8; sz.biases],
                    );
                    let dst = MlxRowMut {
                        packed: &mut pk,
                        scales: &mut sc,
                        biases: &mut bi,
                    };
                    quantize_row_mlx_affine_ref(&p, &x, dst).unwrap();
                    let mut y = vec![f32::NAN; n];
                    let src = MlxRow {
                        packed: &pk,
                        scales: &sc,
                        biases: &bi,
                    };
                    dequantize_row_mlx_affine_ref(&p, src, &mut y).unwrap();
                    let s = to_f32(dt, &sc);
                    let b = to_f32(dt, &bi);
                    let n_bins = ((1u32 << bits) - 1) as f32;
                    for i in 0..n {
                        let g = i / gs;
                        let step = s[g].abs() * (1.0 + 2.0 * u);
                        let bound = step
                            + (n_bins * step + b[g].abs()) * 2.0 * u
                            + x[i].abs() * 2f32.powi(-22);
                        let err = (x[i] - y[i]).abs();
                        assert!(
                            err <= bound,
                            "{dt} bits {bits} gs {gs} [{i}]: x {} y {} err {err} > {bound}",
                            x[i],
                            y[i]
                        );
                    }
                }
            }
        }
    }
}

/// Outputs are written exactly in place: guards around each array survive.
#[test]
fn writes_stay_inside_their_slices() {
    let p = MlxAffine::new(5, 32, DType::BF16).unwrap();
    let n = 3 * 32;
    let sz = p.row_bytes(n).unwrap();
    let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
    const G: usize = 4;
    let mut pk = vec![0xDEAD_BEEFu32; sz.packed / 4 + 2 * G];
    let mut sc = vec![0xEEu8; sz.scales + 2 * G];
    let mut bi = vec![0xEEu8; sz.biases + 2 * G];
    let (lp, ls, lb) = (pk.len(), sc.len(), bi.len());
    let dst = MlxRowMut {
        packed: &mut pk[G..lp - G],
        scales: &mut sc[G..ls - G],
        biases: &mut bi[G..lb - G],
    };
    quantize_row_mlx_affine_ref(&p, &x, dst).unwrap();
    assert!(pk[..G]
        .iter()
        .chain(&pk[lp - G..])
        .all(|&w| w == 0xDEAD_BEEF));
    assert!(sc[..G].iter().chain(&sc[ls - G..]).all(|&v| v == 0xEE));
    assert!(bi[..G].iter().chain(&bi[lb - G..]).all(|&v| v == 0xEE));
    let mut out = vec![f32::NAN; n + 2 * G];
    let src = MlxRow {
        packed: &pk[G..lp - G],
        scales: &sc[G..ls - G],
        biases: &bi[G..lb - G],
    };
    dequantize_row_mlx_affine_ref(&p, src, &mut out[G..n + G]).unwrap();
    assert!(out[..G].iter().chain(&out[n + G..]).all(|v| v.is_nan()));
    assert!(out[G..n + G].iter().all(|v| v.is_finite()));
}

// ---------------------------------------------------------------- bad input

fn expect_invalid<T: std::fmt::Debug>(r: Result<T, Error>, op: &str, needle: &str) {
    let e = r.expect_err("expected an error");
    let msg = e.to_string();
    assert!(
        msg.contains(op) && msg.contains(needle),
        "error `{msg}` should name `{op}` and `{needle}`"
    );
}

#[test]
fn bad_params_are_typed_errors() {
    for bits in [0u32, 1, 7, 9, 16, 32, u32::MAX] {
        expect_invalid(
            MlxAffine::new(bits, 64, DType::F16),
            "mlx_affine::validate",
            &format!("bits {bits}"),
        );
    }
    for gs in [0usize, 16, 33, 96, 256, usize::MAX] {
        expect_invalid(
            MlxAffine::new(4, gs, DType::F16),
            "mlx_affine::validate",
            &format!("group size {gs}"),
        );
    }
    expect_invalid(
        MlxAffine::new(4, 64, DType::Q4_0),
        "mlx_affine::validate",
        "Q4_0",
    );
    let p = MlxAffine::new(4, 64, DType::F16).unwrap();
    expect_invalid(p.row_bytes(100), "mlx_affine::row_bytes", "row length 100");
    expect_invalid(p.groups_per_row(65), "mlx_affine::groups_per_row", "65");
    // Invalid params built by hand are caught by every entry point.
    let bad = MlxAffine {
        bits: 7,
        group_size: 64,
        scale_dtype: DType::F16,
    };
    expect_invalid(bad.row_bytes(64), "mlx_affine::row_bytes", "bits 7");
    assert_eq!(bad.max_code(), 127);
    let mut out = [0f32; 64];
    let src = MlxRow {
        packed: &[0; 14],
        scales: &[0; 2],
        biases: &[0; 2],
    };
    expect_invalid(
        dequantize_row_mlx_affine_ref(&bad, src, &mut out),
        "mlx_affine::dequantize_row",
        "bits 7",
    );
}

#[test]
fn wrong_array_lengths_are_typed_errors() {
    let p = MlxAffine::new(3, 32, DType::F16).unwrap();
    let n = 64; // 2 groups: 6 words, 4 bytes of scales, 4 of biases
    let mut out = vec![0f32; n];
    let dq = |pk: &[u32], sc: &[u8], bi: &[u8], out: &mut [f32]| {
        dequantize_row_mlx_affine_ref(
            &p,
            MlxRow {
                packed: pk,
                scales: sc,
                biases: bi,
            },
            out,
        )
    };
    const OP: &str = "mlx_affine::dequantize_row";
    expect_invalid(
        dq(&[0; 5], &[0; 4], &[0; 4], &mut out),
        OP,
        "packed words has length 5, expected 6",
    );
    expect_invalid(
        dq(&[0; 6], &[0; 3], &[0; 4], &mut out),
        OP,
        "scales bytes has length 3, expected 4",
    );
    expect_invalid(
        dq(&[0; 6], &[0; 4], &[0; 8], &mut out),
        OP,
        "biases bytes has length 8, expected 4",
    );
    expect_invalid(
        dq(&[0; 6], &[0; 4], &[0; 4], &mut out[..40]),
        OP,
        "row length 40",
    );
    assert!(dq(&[0; 6], &[0; 4], &[0; 4], &mut out).is_ok());

    let x = vec![0.5f32; n];
    let (mut pk, mut sc, mut bi) = (vec![0u32; 7], vec![0u8; 4], vec![0u8; 4]);
    let r = quantize_row_mlx_affine_ref(
        &p,
        &x,
        MlxRowMut {
            packed: &mut pk,
            scales: &mut sc,
            biases: &mut bi,
        },
    );
    expect_invalid(
        r,
        "mlx_affine::quantize_row",
        "packed words has length 7, expected 6",
    );
    let mut sc2 = vec![0u8; 2];
    let r = quantize_row_mlx_affine_ref(
        &p,
        &x,
        MlxRowMut {
            packed: &mut pk[..6],
            scales: &mut sc2,
            biases: &mut bi,
        },
    );
    expect_invalid(r, "mlx_affine::quantize_row", "scales bytes has length 2");
    let r = quantize_row_mlx_affine_ref(
        &p,
        &x[..33],
        MlxRowMut {
            packed: &mut pk[..6],
            scales: &mut sc,
            biases: &mut bi,
        },
    );
    expect_invalid(r, "mlx_affine::quantize_row", "row length 33");

    // Codes helpers.
    let mut codes = [0u8; 32];
    expect_invalid(
        unpack_codes_row(3, &[0; 2], &mut codes),
        "mlx_affine::unpack_codes_row",
        "packed",
    );
    expect_invalid(
        unpack_codes_row(7, &[0; 7], &mut codes),
        "mlx_affine::unpack_codes_row",
        "bits 7",
    );
    expect_invalid(
        unpack_codes_row(3, &[0; 1], &mut codes[..5]),
        "mlx_affine::unpack_codes_row",
        "whole 32-bit words",
    );
    let mut c = [0u8; 32];
    c[9] = 8;
    expect_invalid(
        pack_codes_row(3, &c, &mut [0; 3]),
        "mlx_affine::pack_codes_row",
        "code 8 at index 9",
    );
}

#[test]
fn unreachable_inputs_are_typed_errors_and_write_nothing() {
    let p = MlxAffine::new(4, 32, DType::F16).unwrap();
    let sz = p.row_bytes(64).unwrap();
    let run = |x: &[f32]| {
        let (mut pk, mut sc, mut bi) = (
            vec![7u32; sz.packed / 4],
            vec![7u8; sz.scales],
            vec![7u8; sz.biases],
        );
        let r = quantize_row_mlx_affine_ref(
            &p,
            x,
            MlxRowMut {
                packed: &mut pk,
                scales: &mut sc,
                biases: &mut bi,
            },
        );
        let untouched = pk.iter().all(|&w| w == 7) && sc.iter().chain(&bi).all(|&b| b == 7);
        (r, untouched)
    };
    let mut x = vec![0.25f32; 64];
    x[40] = f32::NAN;
    let (r, untouched) = run(&x);
    expect_invalid(r, "mlx_affine::quantize_row", "index 40");
    assert!(untouched);
    x[40] = f32::NEG_INFINITY;
    expect_invalid(run(&x).0, "mlx_affine::quantize_row", "-inf at index 40");
    // Finite in f32 but the bias (the edge value) overflows f16.
    x[40] = 1.0e6;
    let (r, untouched) = run(&x);
    expect_invalid(r, "mlx_affine::quantize_row", "group 1");
    assert!(untouched);
    // f32 scales hold it fine.
    let p32 = MlxAffine::new(4, 32, DType::F32).unwrap();
    let (mut pk, mut sc, mut bi) = (vec![0u32; 8], vec![0u8; 8], vec![0u8; 8]);
    quantize_row_mlx_affine_ref(
        &p32,
        &x,
        MlxRowMut {
            packed: &mut pk,
            scales: &mut sc,
            biases: &mut bi,
        },
    )
    .unwrap();
}
