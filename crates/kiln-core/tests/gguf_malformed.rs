//! Malformed GGUF files: every one must give a one-line `Error::Gguf` that
//! names what is wrong, never a panic or a huge allocation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_core::gguf::{ArrayValue, GgufFile, GgufWriter, Value, ValueType};
use kiln_core::{DType, Error};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Hand-built GGUF bytes, for files the writer refuses to produce.
struct Raw(Vec<u8>);

impl Raw {
    fn new(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw(b"GGUF".to_vec());
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key).u32(ValueType::U32.id()).u32(v)
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ggml_type: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ggml_type).u64(offset)
    }
    fn pad(&mut self, align: usize) -> &mut Self {
        while !self.0.len().is_multiple_of(align) {
            self.0.push(0);
        }
        self
    }
    fn zeros(&mut self, n: usize) -> &mut Self {
        self.0.resize(self.0.len() + n, 0);
        self
    }
    fn bytes(&self) -> Vec<u8> {
        self.0.clone()
    }
}

/// Parse must fail with a one-line GGUF error containing every needle.
fn expect_err(bytes: Vec<u8>, needles: &[&str]) {
    match GgufFile::from_bytes(bytes) {
        Ok(f) => panic!("parsed a malformed file: {f:?}"),
        Err(e) => {
            assert!(matches!(e, Error::Gguf(_)), "not a GGUF error: {e:?}");
            let s = e.to_string();
            assert!(!s.contains('\n'), "multi-line error: {s}");
            for n in needles {
                assert!(s.contains(n), "error {s:?} lacks {n:?}");
            }
        }
    }
}

/// A small valid file with every value type and two tensors whose data
/// ends exactly at the end of the file (so every shorter prefix is invalid).
fn small_valid_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", Value::String("llama".into()));
    let vals = [
        Value::U8(1),
        Value::I8(-2),
        Value::U16(3),
        Value::I16(-4),
        Value::U32(5),
        Value::I32(-6),
        Value::F32(7.5),
        Value::Bool(true),
        Value::String("eight".into()),
        Value::U64(9),
        Value::I64(-10),
        Value::F64(11.25),
    ];
    for (i, v) in vals.iter().enumerate() {
        w.add_kv(format!("k.{i}"), v.clone());
    }
    w.add_kv(
        "k.arr",
        Value::Array(ArrayValue::new(
            ValueType::Array,
            vec![
                Value::Array(ArrayValue::new(
                    ValueType::String,
                    vec![Value::String("x".into()), Value::String("yz".into())],
                )),
                Value::Array(ArrayValue::new(ValueType::U16, vec![])),
            ],
        )),
    );
    w.add_tensor("a", vec![8], DType::F32, vec![1; 32]).unwrap();
    w.add_tensor("b", vec![16, 1], DType::F16, vec![2; 32])
        .unwrap();
    w.to_bytes().unwrap()
}

#[test]
fn every_truncation_is_an_error() {
    let full = small_valid_file();
    let f = GgufFile::from_bytes(full.clone()).unwrap();
    let last = f
        .tensors()
        .iter()
        .map(|t| t.offset + t.n_bytes)
        .max()
        .unwrap();
    assert_eq!(
        f.data_offset() + last,
        full.len() as u64,
        "fixture must end at tensor data"
    );
    for cut in 0..full.len() {
        let r = GgufFile::from_bytes(full[..cut].to_vec());
        match r {
            Ok(_) => panic!("prefix of {cut}/{} bytes parsed", full.len()),
            Err(e) => {
                let s = e.to_string();
                assert!(!s.contains('\n'), "cut {cut}: multi-line error {s}");
            }
        }
    }
}

#[test]
fn random_corruption_never_panics() {
    let seed: u64 = rand::random();
    eprintln!("random_corruption_never_panics: seed {seed}");
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let full = small_valid_file();
    let (mut ok, mut err) = (0, 0);
    for _ in 0..20_000 {
        let mut b = full.clone();
        for _ in 0..r.gen_range(1..4) {
            let i = r.gen_range(0..b.len());
            match r.gen_range(0..3) {
                0 => b[i] = r.gen(),
                1 => b[i] ^= 1 << r.gen_range(0..8),
                _ => {
                    // a length/count-like field set to something large
                    let end = (i + 8).min(b.len());
                    let big = r.gen::<u64>() >> r.gen_range(0..64);
                    b[i..end].copy_from_slice(&big.to_le_bytes()[..end - i]);
                }
            }
        }
        match GgufFile::from_bytes(b) {
            Ok(f) => {
                // Whatever parsed must be usable without panics.
                for t in f.tensors() {
                    assert_eq!(f.tensor_data(t).unwrap().len() as u64, t.n_bytes);
                }
                for (k, v) in f.metadata() {
                    let _ = (f.get_u32(k), f.get_str_array(k), v.to_string());
                }
                ok += 1
            }
            Err(_) => err += 1,
        }
    }
    eprintln!("corrupted files: {ok} parsed, {err} rejected");
    assert!(err > 0);
}

#[test]
fn bad_magic_names_what_was_found() {
    let mut b = small_valid_file();
    b[..4].copy_from_slice(b"GGML");
    expect_err(b, &["bad magic", "GGML", "47 47 4d 4c"]);
    expect_err(vec![], &["0 bytes"]);
    expect_err(b"GG".to_vec(), &["2 bytes"]);
}

#[test]
fn unsupported_versions() {
    expect_err(Raw::new(1, 0, 0).bytes(), &["version 1"]);
    expect_err(Raw::new(99, 0, 0).bytes(), &["version 99"]);
    expect_err(Raw::new(0, 0, 0).bytes(), &["version 0"]);
    expect_err(Raw::new(3u32.swap_bytes(), 0, 0).bytes(), &["big-endian"]);
    // v2 and v3 with nothing in them are fine.
    for v in [2, 3] {
        let f = GgufFile::from_bytes(Raw::new(v, 0, 0).bytes()).unwrap();
        assert_eq!(f.version(), v);
        assert!(f.metadata().is_empty() && f.tensors().is_empty());
    }
}

#[test]
fn unknown_value_types() {
    let mut r = Raw::new(3, 0, 1);
    r.str("k.bad").u32(13).u32(0);
    expect_err(
        r.bytes(),
        &["key 'k.bad'", "unknown value type 13", "byte 37"],
    );
    let mut r = Raw::new(3, 0, 1);
    r.str("k.arr").u32(9).u32(77).u64(0);
    expect_err(r.bytes(), &["key 'k.arr'", "unknown array element type 77"]);
}

#[test]
fn bad_bool_and_utf8() {
    let mut r = Raw::new(3, 0, 1);
    r.str("k.b").u32(7).0.push(2);
    expect_err(r.bytes(), &["key 'k.b'", "bool", "value 2"]);
    let mut r = Raw::new(3, 0, 1);
    r.str("k.s")
        .u32(8)
        .u64(3)
        .0
        .extend_from_slice(&[b'a', 0xff, b'b']);
    expect_err(r.bytes(), &["key 'k.s'", "not valid UTF-8"]);
    let mut r = Raw::new(3, 0, 1);
    r.u64(2).0.extend_from_slice(&[0xc3, 0x28]);
    r.u32(4).u32(1);
    expect_err(r.bytes(), &["metadata entry 0", "key", "not valid UTF-8"]);
    let mut r = Raw::new(3, 1, 0);
    r.u64(1).0.push(0x80);
    r.u32(1).u64(4).u32(0).u64(0).pad(32).zeros(16);
    expect_err(r.bytes(), &["tensor info 0", "not valid UTF-8"]);
}

#[test]
fn huge_lengths_and_counts() {
    // string length far beyond the file
    let mut r = Raw::new(3, 0, 1);
    r.str("k").u32(8).u64(u64::MAX).zeros(16);
    expect_err(
        r.bytes(),
        &[
            "key 'k'",
            "length 18446744073709551615",
            "16 bytes are left",
        ],
    );
    // key length beyond the file
    let mut r = Raw::new(3, 0, 1);
    r.u64(1 << 40).zeros(16);
    expect_err(r.bytes(), &["metadata entry 0", "truncated"]);
    // array counts whose minimum size is beyond the file
    for (elem, count) in [
        (8u32, 1u64 << 60),
        (0, 17),
        (12, u64::MAX),
        (9, u64::MAX / 12 + 1),
    ] {
        let mut r = Raw::new(3, 0, 1);
        r.str("k.arr").u32(9).u32(elem).u64(count).zeros(16);
        expect_err(r.bytes(), &["key 'k.arr'", &format!("claims {count}")]);
    }
    // kv and tensor counts
    expect_err(
        Raw::new(3, 0, u64::MAX).bytes(),
        &["kv count 18446744073709551615"],
    );
    expect_err(Raw::new(3, 1 << 50, 0).bytes(), &["tensor count"]);
}

#[test]
fn nesting_depth_is_limited() {
    let nested = |levels: usize| {
        let mut r = Raw::new(3, 0, 1);
        r.str("k.deep").u32(9);
        for _ in 0..levels - 1 {
            r.u32(9).u64(1);
        }
        r.u32(0).u64(1).0.push(42);
        r.bytes()
    };
    let f = GgufFile::from_bytes(nested(8)).unwrap();
    let mut v = f.get("k.deep").unwrap();
    for _ in 0..8 {
        v = &v.as_array().unwrap()[0];
    }
    assert_eq!(v, &Value::U8(42));
    expect_err(nested(9), &["key 'k.deep'", "nested deeper than 8"]);
    expect_err(nested(10_000), &["nested deeper than 8"]);
}

#[test]
fn duplicate_keys_and_tensor_names() {
    let mut r = Raw::new(3, 0, 2);
    r.kv_u32("k.dup", 1).kv_u32("k.dup", 2);
    expect_err(r.bytes(), &["duplicate key 'k.dup'"]);
    let mut r = Raw::new(3, 2, 0);
    r.tensor("t", &[4], 0, 0)
        .tensor("t", &[4], 0, 32)
        .pad(32)
        .zeros(48);
    expect_err(r.bytes(), &["duplicate tensor name 't'"]);
}

#[test]
fn bad_alignment_values() {
    for (a, needle) in [(0u32, "is 0"), (48, "is 48")] {
        let mut r = Raw::new(3, 0, 1);
        r.kv_u32("general.alignment", a);
        expect_err(r.bytes(), &["general.alignment", needle, "power of two"]);
    }
    let mut r = Raw::new(3, 0, 1);
    r.str("general.alignment").u32(8).str("32");
    expect_err(r.bytes(), &["general.alignment", "type string"]);
}

#[test]
fn unknown_or_unsupported_tensor_types() {
    for (id, needle) in [
        (19u32, "19 (IQ1_S)"),
        (4, "unknown GGML type id 4"),
        (1000, "id 1000"),
    ] {
        let mut r = Raw::new(3, 1, 0);
        r.tensor("blk.0.attn_q.weight", &[256], id, 0)
            .pad(32)
            .zeros(4096);
        expect_err(r.bytes(), &["tensor 'blk.0.attn_q.weight'", needle]);
    }
}

#[test]
fn bad_tensor_shapes() {
    let cases: [(&[u64], u32, &str); 6] = [
        (&[], 0, "n_dims 0"),
        (&[1, 1, 1, 1, 1], 0, "n_dims 5"),
        (&[4, 0], 0, "ne[1] is 0"),
        (&[33], 8, "not a multiple of the Q8_0 block size 32"),
        (&[u64::MAX, 2], 0, "overflows"),
        (&[1 << 32, 1 << 32], 0, "overflows"),
    ];
    for (dims, ty, needle) in cases {
        let mut r = Raw::new(3, 1, 0);
        r.tensor("t", dims, ty, 0).pad(32).zeros(256);
        expect_err(r.bytes(), &["tensor 't'", needle]);
    }
    // n_dims huge: rejected before reading dims
    let mut r = Raw::new(3, 1, 0);
    r.str("t").u32(u32::MAX).zeros(64);
    expect_err(r.bytes(), &["tensor 't'", "n_dims 4294967295"]);
}

#[test]
fn tensor_ranges() {
    // out of file
    let mut r = Raw::new(3, 1, 0);
    r.tensor("big", &[16], 0, 0).pad(32).zeros(63);
    expect_err(r.bytes(), &["tensor 'big'", "past the end of the file"]);
    let mut r = Raw::new(3, 1, 0);
    r.tensor("far", &[1], 0, u64::MAX - 31).pad(32).zeros(64);
    expect_err(r.bytes(), &["tensor 'far'", "past the end"]);
    // overlapping (listed out of offset order)
    let mut r = Raw::new(3, 2, 0);
    r.tensor("b", &[16], 0, 32)
        .tensor("a", &[16], 0, 0)
        .pad(32)
        .zeros(96);
    expect_err(r.bytes(), &["tensors 'a'", "'b'", "overlap"]);
    // same offset
    let mut r = Raw::new(3, 2, 0);
    r.tensor("a", &[1], 0, 0)
        .tensor("b", &[1], 0, 0)
        .pad(32)
        .zeros(32);
    expect_err(r.bytes(), &["overlap"]);
    // misaligned offset (default alignment 32)
    let mut r = Raw::new(3, 1, 0);
    r.tensor("m", &[4], 0, 16).pad(32).zeros(64);
    expect_err(r.bytes(), &["tensor 'm'", "offset 16", "alignment 32"]);
    // misaligned for a custom alignment
    let mut r = Raw::new(3, 1, 1);
    r.kv_u32("general.alignment", 64)
        .tensor("m", &[4], 0, 32)
        .pad(64)
        .zeros(128);
    expect_err(r.bytes(), &["tensor 'm'", "offset 32", "alignment 64"]);
    // the same layout, correctly aligned, parses
    let mut r = Raw::new(3, 2, 1);
    r.kv_u32("general.alignment", 64)
        .tensor("x", &[4], 0, 64)
        .tensor("y", &[16], 0, 0)
        .pad(64)
        .zeros(80);
    let f = GgufFile::from_bytes(r.bytes()).unwrap();
    assert_eq!(f.data_offset() % 64, 0);
    assert_eq!(f.tensor_data(f.tensor("x").unwrap()).unwrap().len(), 16);
}

#[test]
fn errors_name_the_file_when_opened_from_disk() {
    let dir = std::env::temp_dir().join(format!("kiln-gguf-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.gguf");
    std::fs::write(&path, Raw::new(1, 0, 0).bytes()).unwrap();
    let e = GgufFile::open(&path).unwrap_err().to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(e.contains("bad.gguf") && e.contains("version 1"), "{e}");
}
