//! safetensors reader: a good file round-trips; malformed files (every
//! prefix, hand-made bad headers, random corruption) give one-line
//! `Error::Safetensors`, never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_core::safetensors::{write_safetensors, SafetensorsFile, StDType, MAX_HEADER_LEN};
use kiln_core::Error;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn good_file() -> Vec<u8> {
    let a: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let b: Vec<u8> = (0u32..8).flat_map(|v| v.to_le_bytes()).collect();
    let c = vec![0x3c, 0x00, 0x00, 0x40]; // two f16
    write_safetensors(&[
        ("model.a", StDType::F32, &[2, 3], &a),
        ("model.b.weight", StDType::U32, &[2, 4], &b),
        ("c", StDType::F16, &[2], &c),
    ])
    .unwrap()
}

/// A file with a hand-written header and `data` after it.
fn raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

fn expect_err(bytes: Vec<u8>, needles: &[&str]) {
    match SafetensorsFile::from_bytes(bytes) {
        Ok(f) => panic!("parsed a malformed file: {f:?}"),
        Err(e @ Error::Safetensors(_)) => {
            let s = e.to_string();
            assert!(!s.contains('\n'), "multi-line error: {s}");
            for n in needles {
                assert!(s.contains(n), "error {s:?} lacks {n:?}");
            }
        }
        Err(e) => panic!("wrong error kind: {e}"),
    }
}

#[test]
fn good_file_round_trips() {
    let f = SafetensorsFile::from_bytes(good_file()).unwrap();
    let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["c", "model.a", "model.b.weight"]);
    let a = f.tensor("model.a").unwrap();
    assert_eq!(
        (a.dtype, a.shape.as_slice(), a.numel()),
        (StDType::F32, &[2, 3][..], 6)
    );
    let d = f.data(a).unwrap();
    assert_eq!(f32::from_le_bytes(d[20..24].try_into().unwrap()), 6.0);
    let b = f.tensor("model.b.weight").unwrap();
    assert_eq!(
        u32::from_le_bytes(f.data(b).unwrap()[28..32].try_into().unwrap()),
        7
    );
    assert!(f.tensor("missing").is_none());
    assert!(f.metadata().is_empty());
}

#[test]
fn metadata_and_empty_tensors() {
    let h = r#"{"__metadata__":{"format":"mlx"},"e":{"dtype":"F32","shape":[0,4],"data_offsets":[0,0]},"s":{"dtype":"BF16","shape":[],"data_offsets":[0,2]}}"#;
    let f = SafetensorsFile::from_bytes(raw(h, &[0x80, 0x3f])).unwrap();
    assert_eq!(f.metadata().get("format").map(String::as_str), Some("mlx"));
    assert_eq!(f.tensor("e").unwrap().numel(), 0);
    assert_eq!(f.tensor("s").unwrap().numel(), 1);
}

#[test]
fn every_prefix_errors() {
    let bytes = good_file();
    for n in 0..bytes.len() {
        expect_err(bytes[..n].to_vec(), &[]);
    }
}

#[test]
fn bad_headers_name_the_problem() {
    let d = [0u8; 64];
    expect_err(b"\x01\x02".to_vec(), &["too short"]);
    let mut huge = (MAX_HEADER_LEN + 1).to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    expect_err(huge, &["exceeds the limit"]);
    let mut past = 1000u64.to_le_bytes().to_vec();
    past.extend_from_slice(b"{}");
    expect_err(past, &["runs past the end"]);
    expect_err(raw("{\"a\":", &d), &["not valid JSON"]);
    expect_err(raw("[1,2]", &d), &["not a JSON object"]);
    expect_err(raw("\u{ff}", &d), &["not valid JSON"]);
    let t = |body: &str| raw(&format!("{{\"w\":{body}}}"), &d);
    expect_err(t("3"), &["\"w\"", "not a JSON object"]);
    expect_err(
        t(r#"{"dtype":"Q4","shape":[2],"data_offsets":[0,2]}"#),
        &["\"w\"", "unknown dtype \"Q4\""],
    );
    expect_err(t(r#"{"shape":[2],"data_offsets":[0,2]}"#), &["\"dtype\""]);
    expect_err(
        t(r#"{"dtype":"U8","shape":[-2],"data_offsets":[0,2]}"#),
        &["shape entry -2"],
    );
    expect_err(
        t(r#"{"dtype":"U8","shape":[2.5],"data_offsets":[0,2]}"#),
        &["shape entry 2.5"],
    );
    expect_err(
        t(r#"{"dtype":"U8","shape":[2],"data_offsets":[0]}"#),
        &["has 1 entries"],
    );
    expect_err(
        t(r#"{"dtype":"U8","shape":[2],"data_offsets":[4,2]}"#),
        &["4..2", "not inside"],
    );
    expect_err(
        t(r#"{"dtype":"U8","shape":[2],"data_offsets":[0,65]}"#),
        &["0..65", "64 bytes"],
    );
    expect_err(
        t(r#"{"dtype":"F32","shape":[3],"data_offsets":[0,8]}"#),
        &["8 bytes of data", "needs 12"],
    );
    expect_err(
        t(r#"{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}"#),
        &["overflows"],
    );
    expect_err(
        t(r#"{"dtype":"U8","shape":[2],"data_offsets":[18446744073709551615,0]}"#),
        &["not inside"],
    );
    expect_err(
        raw(
            r#"{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[4],"data_offsets":[6,10]}}"#,
            &d,
        ),
        &["overlap", "\"a\"", "\"b\""],
    );
    expect_err(
        raw(r#"{"__metadata__":{"k":1}}"#, &d),
        &["__metadata__", "\"k\""],
    );
    // Deep nesting hits serde_json's recursion limit, not the stack.
    let deep = format!("{{\"m\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    expect_err(raw(&deep, &d), &["not valid JSON"]);
}

#[test]
fn random_corruption_never_panics() {
    let good = good_file();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut parsed = 0;
    for _ in 0..20_000 {
        let mut b = good.clone();
        for _ in 0..rng.gen_range(1..4) {
            let i = rng.gen_range(0..b.len());
            b[i] = rng.gen();
        }
        if rng.gen_bool(0.1) {
            b.truncate(rng.gen_range(0..b.len()));
        }
        if let Ok(f) = SafetensorsFile::from_bytes(b) {
            parsed += 1;
            for t in f.tensors() {
                assert_eq!(f.data(t).unwrap().len(), t.numel() * t.dtype.size());
            }
        }
    }
    // Data-byte flips still parse; header flips mostly do not.
    assert!(parsed > 0);
}

#[test]
fn open_reports_the_path() {
    let dir = std::env::temp_dir().join(format!("kiln-st-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("bad.safetensors");
    std::fs::write(&p, b"\x05\0\0\0\0\0\0\0{}").unwrap();
    let e = SafetensorsFile::open(&p).unwrap_err().to_string();
    assert!(e.contains("bad.safetensors"), "{e}");
    let p2 = dir.join("good.safetensors");
    std::fs::write(&p2, good_file()).unwrap();
    assert_eq!(SafetensorsFile::open(&p2).unwrap().tensors().len(), 3);
    assert!(SafetensorsFile::open(dir.join("none")).is_err());
    std::fs::remove_dir_all(&dir).ok();
}
