//! Q5_0, Q5_1, Q2_K..Q6_K, Q8_K, IQ4_NL, IQ4_XS and the IQ2_XXS, IQ2_XS,
//! IQ3_XXS, IQ3_S i-quants against
//! tests/fixtures/quant/ggml_quant_fixtures.bin, made by
//! scripts/fixtures/make_ggml_quant_fixtures.py with the `gguf` Python
//! package's `gguf.quants`. Each stored format has a source tag:
//!
//! - GGUF: bytes from gguf.quants.quantize (Q5_0, Q5_1) -> kiln's quantize
//!   must match bit for bit (independent check of the quantizer).
//! - KILN: bytes from kiln's own quantizer (gguf.quants cannot quantize the
//!   K-quants or IQ4): the check is kiln's dequantize against gguf's on
//!   them. The bytes also pin kiln's quantizer output (regenerate the
//!   fixture when it changes on purpose): a regression guard, not an
//!   independent check.
//! - DERIVED: Q8_K, absent from gguf.quants, computed in numpy from ggml's
//!   definition -> both quantize and dequantize must match bit for bit.
//! - RANDOM: random blocks with sane f16 scales -> dequantize only. The
//!   only source for the IQ2/IQ3 i-quants (no quantizer in gguf.quants or
//!   kiln); their blocks sweep every grid row.
//!
//! In all cases `dequantize_row` must equal the stored floats bit for bit
//! (no tolerance).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_core::quant::{dequantize_row, quantize_row};
use kiln_core::DType;
use std::collections::BTreeMap;
use std::path::PathBuf;

const GGUF: u32 = 0;
const KILN: u32 = 1;
const DERIVED: u32 = 2;
const RANDOM: u32 = 3;

/// The formats this fixture covers.
const FORMATS: [DType; 14] = [
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
    DType::IQ2_XXS,
    DType::IQ2_XS,
    DType::IQ3_XXS,
    DType::IQ3_S,
];

/// Formats with random blocks only (no quantizer anywhere).
const RANDOM_ONLY: [DType; 4] = [DType::IQ2_XXS, DType::IQ2_XS, DType::IQ3_XXS, DType::IQ3_S];

struct Format {
    dtype: DType,
    source: u32,
    bytes: Vec<u8>,
    deq: Vec<f32>,
}

struct Entry {
    name: String,
    n: usize,
    input: Option<Vec<f32>>,
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

fn load() -> Vec<Entry> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/quant/ggml_quant_fixtures.bin");
    let blob = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (committed fixture; regenerate with python3.11 scripts/fixtures/make_ggml_quant_fixtures.py)",
            path.display()
        )
    });
    let mut r = Reader { b: &blob, at: 0 };
    assert_eq!(r.take(4), b"KQF2", "bad fixture magic");
    let n_entries = r.u32();
    let mut entries = Vec::new();
    for _ in 0..n_entries {
        let name_len = r.u32() as usize;
        let name = String::from_utf8(r.take(name_len).to_vec()).unwrap();
        let n = r.u32() as usize;
        let has_input = r.u32() == 1;
        let input = has_input.then(|| r.f32s(n));
        let n_formats = r.u32();
        let mut formats = Vec::new();
        for _ in 0..n_formats {
            let dtype = DType::from_ggml_id(r.u32()).unwrap();
            let source = r.u32();
            let nb = r.u32() as usize;
            let bytes = r.take(nb).to_vec();
            let deq = r.f32s(n);
            formats.push(Format {
                dtype,
                source,
                bytes,
                deq,
            });
        }
        entries.push(Entry {
            name,
            n,
            input,
            formats,
        });
    }
    assert_eq!(r.at, blob.len(), "trailing bytes in fixture");
    entries
}

fn first_f32_mismatch(got: &[f32], want: &[f32]) -> Option<String> {
    got.iter()
        .zip(want)
        .enumerate()
        .find(|(_, (g, w))| g.to_bits() != w.to_bits())
        .map(|(i, (g, w))| {
            format!(
                "[{i}] got {g:e} ({:#010x}) want {w:e} ({:#010x})",
                g.to_bits(),
                w.to_bits()
            )
        })
}

/// Every covered format has quantized rows and random blocks; Q5_0/Q5_1 are
/// checked against gguf's quantizer, Q8_K against the derived one.
#[test]
fn fixtures_cover_every_new_format() {
    let entries = load();
    let mut count: BTreeMap<(String, u32), usize> = BTreeMap::new();
    for e in &entries {
        for f in &e.formats {
            *count.entry((f.dtype.to_string(), f.source)).or_default() += 1;
        }
    }
    eprintln!("fixture (format, source) counts: {count:?}");
    for dtype in FORMATS {
        let quant_source = match dtype {
            DType::Q5_0 | DType::Q5_1 => GGUF,
            DType::Q8_K => DERIVED,
            _ => KILN,
        };
        let k = |s| count.get(&(dtype.to_string(), s)).copied().unwrap_or(0);
        if RANDOM_ONLY.contains(&dtype) {
            assert_eq!(k(quant_source), 0, "{dtype}: has no quantizer");
        } else {
            assert!(k(quant_source) >= 4, "{dtype}: too few quantized rows");
        }
        assert!(k(RANDOM) >= 1, "{dtype}: no random blocks");
    }
}

#[test]
fn quantize_row_matches_fixture_bytes() {
    let mut failures = Vec::new();
    let mut checked = [0usize; 4];
    for e in load() {
        let Some(x) = &e.input else { continue };
        for f in &e.formats {
            assert_ne!(f.source, RANDOM);
            let mut out = vec![0xa5u8; f.bytes.len()];
            quantize_row(f.dtype, x, &mut out).unwrap();
            checked[f.source as usize] += 1;
            if let Some(i) = (0..out.len()).find(|&i| out[i] != f.bytes[i]) {
                let bs = f.dtype.type_size();
                failures.push(format!(
                    "{} {} (source {}): byte {i} (block {}, offset {}) got {:#04x} want {:#04x}",
                    e.name,
                    f.dtype,
                    f.source,
                    i / bs,
                    i % bs,
                    out[i],
                    f.bytes[i]
                ));
            }
        }
    }
    eprintln!(
        "quantize_row: {} vs gguf.quants, {} vs derived Q8_K, {} vs pinned kiln bytes",
        checked[GGUF as usize], checked[DERIVED as usize], checked[KILN as usize]
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
            if let Some(m) = first_f32_mismatch(&out, &f.deq) {
                failures.push(format!("{} {} (source {}): {m}", e.name, f.dtype, f.source));
            }
        }
    }
    eprintln!("dequantize_row: {checked} (row, dtype) pairs checked bit-exactly");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
