//! Bit-exactness of kiln's reference quant formats against fixtures made by
//! an independent implementation, the `gguf` Python package's `gguf.quants`
//! (scripts/fixtures/make_quant_fixtures.py; Q8_1 is derived there from the
//! gguf Q8_0 output per ggml's definition, since gguf.quants lacks Q8_1).
//!
//! Checked exactly, no tolerance:
//! - `quantize_row(dtype, x)` == the bytes gguf.quants.quantize produced;
//! - `dequantize_row(dtype, bytes)` == the f32 gguf.quants.dequantize
//!   returned, bit for bit, NaN payloads included.
//!
//! One named exception, [`f16_snan_quieted`]: numpy's float16 casts keep a
//! *signalling* NaN signalling (f32 0x7f800001 -> f16 0x7c01 -> f32
//! 0x7f802000), while ggml (F16C `vcvtps2ph`/`vcvtph2ps`, or its portable
//! fallback) and kiln (the `half` crate) quiet it (-> f16 0x7e00, f32
//! 0x7fc02000). kiln follows ggml; only signalling-NaN elements of F16 rows
//! may differ, and only in that way. Quiet NaNs (what real data holds)
//! match bit for bit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_core::quant::{dequantize_row, quantize_row};
use kiln_core::DType;
use std::path::PathBuf;

struct Format {
    dtype: DType,
    bytes: Vec<u8>,
    deq: Vec<f32>,
}

struct Entry {
    name: String,
    input: Option<Vec<f32>>,
    n: usize,
    formats: Vec<Format>,
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        s
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn f32s(&mut self, n: usize) -> Vec<f32> {
        self.take(4 * n)
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
}

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/quant/quant_fixtures.bin")
}

fn load() -> Vec<Entry> {
    let path = fixture_path();
    let blob = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (committed fixture; regenerate with python3.11 scripts/fixtures/make_quant_fixtures.py)",
            path.display()
        )
    });
    let mut r = Reader { b: &blob, at: 0 };
    assert_eq!(r.take(4), b"KQF1", "bad fixture magic");
    let n_entries = r.u32();
    let mut entries = Vec::new();
    for _ in 0..n_entries {
        let name_len = r.u32() as usize;
        let name = String::from_utf8(r.take(name_len).to_vec()).unwrap();
        let kind = r.u32();
        let n = r.u32() as usize;
        let input = (kind == 0).then(|| r.f32s(n));
        let n_formats = r.u32();
        let mut formats = Vec::new();
        for _ in 0..n_formats {
            let dtype = DType::from_ggml_id(r.u32()).unwrap();
            let nb = r.u32() as usize;
            let bytes = r.take(nb).to_vec();
            let deq = r.f32s(n);
            formats.push(Format { dtype, bytes, deq });
        }
        entries.push(Entry {
            name,
            input,
            n,
            formats,
        });
    }
    assert_eq!(r.at, blob.len(), "trailing bytes in fixture");
    entries
}

/// The one tolerated difference (F16 only): gguf/numpy produced a signalling
/// NaN where kiln, like ggml, produces a quiet one with the same sign.
fn f16_snan_quieted(dtype: DType, got: u32, want: u32, is_f16_bits: bool) -> bool {
    if dtype != DType::F16 {
        return false;
    }
    if is_f16_bits {
        let nan = |b: u32| b & 0x7c00 == 0x7c00 && b & 0x03ff != 0;
        nan(got)
            && nan(want)
            && got & 0x0200 != 0
            && want & 0x0200 == 0
            && (got ^ want) & 0x8000 == 0
    } else {
        let nan = |b: u32| b & 0x7f80_0000 == 0x7f80_0000 && b & 0x007f_ffff != 0;
        nan(want) && want & 0x0040_0000 == 0 && got == want | 0x0040_0000
    }
}

/// First mismatching element, reported with bits.
fn first_f32_mismatch(dtype: DType, got: &[f32], want: &[f32]) -> Option<String> {
    got.iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (g, w))| g.to_bits() != w.to_bits())
        .filter(|(_, (g, w))| !f16_snan_quieted(dtype, g.to_bits(), w.to_bits(), false))
        .map(|(i, (g, w))| {
            format!(
                "[{i}] got {g:e} ({:#010x}) want {w:e} ({:#010x})",
                g.to_bits(),
                w.to_bits()
            )
        })
        .next()
}

#[test]
fn fixtures_cover_every_dtype() {
    let entries = load();
    // The formats of this fixture file; the newer ones (Q5_*, K-quants,
    // Q8_K, IQ4_*) are covered by tests/quant_fixtures_ggml.rs.
    for dtype in [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q8_0,
        DType::Q8_1,
    ] {
        let quantized = entries
            .iter()
            .filter(|e| e.input.is_some())
            .filter(|e| e.formats.iter().any(|f| f.dtype == dtype))
            .count();
        assert!(quantized >= 1, "{dtype}: no quantize fixture");
    }
    for len in [32usize, 256] {
        assert!(entries.iter().any(|e| e.n == len), "no row of length {len}");
    }
}

#[test]
fn quantize_row_matches_gguf_bytes() {
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut tolerated = 0;
    for e in load() {
        let Some(x) = &e.input else { continue };
        for f in &e.formats {
            let mut out = vec![0xa5u8; f.bytes.len()];
            quantize_row(f.dtype, x, &mut out).unwrap();
            checked += 1;
            let mut mismatch = |i: usize| {
                if out[i] == f.bytes[i] {
                    return false;
                }
                if f.dtype == DType::F16 {
                    let h = i & !1;
                    let g = u32::from(u16::from_le_bytes([out[h], out[h + 1]]));
                    let w = u32::from(u16::from_le_bytes([f.bytes[h], f.bytes[h + 1]]));
                    if f16_snan_quieted(f.dtype, g, w, true) {
                        tolerated += 1;
                        return false;
                    }
                }
                true
            };
            if let Some(i) = (0..out.len()).find(|&i| mismatch(i)) {
                let bs = f.dtype.type_size();
                failures.push(format!(
                    "{} {}: byte {i} (block {}, offset {}) got {:#04x} want {:#04x}",
                    e.name,
                    f.dtype,
                    i / bs,
                    i % bs,
                    out[i],
                    f.bytes[i]
                ));
            }
        }
    }
    eprintln!(
        "quantize_row: {checked} (row, dtype) pairs checked, {tolerated} f16 sNaN bytes tolerated"
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn dequantize_row_matches_gguf_floats() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for e in load() {
        for f in &e.formats {
            let mut out = vec![f32::NAN; e.n];
            dequantize_row(f.dtype, &f.bytes, &mut out).unwrap();
            checked += 1;
            if let Some(m) = first_f32_mismatch(f.dtype, &out, &f.deq) {
                failures.push(format!("{} {}: {m}", e.name, f.dtype));
            }
        }
    }
    eprintln!("dequantize_row: {checked} (row, dtype) pairs checked");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
