//! Read a GGUF written by an independent implementation (the `gguf` Python
//! package; scripts/fixtures/make_gguf_fixture.py) and compare every
//! metadata pair and tensor with the JSON the script wrote beside it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_core::gguf::{ArrayValue, GgufFile, Value, ValueType};
use serde_json::Value as Json;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/gguf")
        .join(name)
}

fn value_type(name: &str) -> ValueType {
    ValueType::ALL
        .into_iter()
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("unknown type name {name}"))
}

/// The Value the JSON describes.
fn expected(j: &Json) -> Value {
    let ty = j["type"].as_str().unwrap();
    let v = &j["value"];
    let u = || v.as_u64().unwrap();
    let i = || v.as_i64().unwrap();
    match value_type(ty) {
        ValueType::U8 => Value::U8(u().try_into().unwrap()),
        ValueType::I8 => Value::I8(i().try_into().unwrap()),
        ValueType::U16 => Value::U16(u().try_into().unwrap()),
        ValueType::I16 => Value::I16(i().try_into().unwrap()),
        ValueType::U32 => Value::U32(u().try_into().unwrap()),
        ValueType::I32 => Value::I32(i().try_into().unwrap()),
        ValueType::U64 => Value::U64(u()),
        ValueType::I64 => Value::I64(i()),
        // Floats carry their exact bit pattern beside the decimal value.
        ValueType::F32 => Value::F32(f32::from_bits(
            j["bits"].as_u64().unwrap().try_into().unwrap(),
        )),
        ValueType::F64 => Value::F64(f64::from_bits(j["bits"].as_u64().unwrap())),
        ValueType::Bool => Value::Bool(v.as_bool().unwrap()),
        ValueType::String => Value::String(v.as_str().unwrap().to_string()),
        ValueType::Array => Value::Array(ArrayValue::new(
            value_type(j["elem_type"].as_str().unwrap()),
            j["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(expected)
                .collect(),
        )),
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::F32(x), Value::F32(y)) => x.to_bits() == y.to_bits(),
        (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
        (Value::Array(x), Value::Array(y)) => {
            x.elem_type == y.elem_type
                && x.items.len() == y.items.len()
                && x.items.iter().zip(&y.items).all(|(p, q)| same(p, q))
        }
        _ => a == b,
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn reads_gguf_py_fixture_identically() {
    let json: Json =
        serde_json::from_str(&std::fs::read_to_string(fixture("tiny.json")).unwrap()).unwrap();
    let f = GgufFile::open(fixture("tiny.gguf")).unwrap();

    assert_eq!(f.version() as u64, json["version"].as_u64().unwrap());
    assert_eq!(f.alignment(), json["alignment"].as_u64().unwrap());
    assert_eq!(f.data_offset(), json["data_offset"].as_u64().unwrap());
    assert_eq!(f.data().len() as u64, json["file_size"].as_u64().unwrap());

    let md = json["metadata"].as_array().unwrap();
    assert_eq!(f.metadata().len(), md.len());
    for (j, (key, got)) in md.iter().zip(f.metadata()) {
        assert_eq!(key, j["key"].as_str().unwrap(), "metadata order");
        let want = expected(j);
        assert!(same(&want, got), "{key}: expected {want:?}, read {got:?}");
        assert_eq!(
            got.type_name().split('[').next(),
            Some(j["type"].as_str().unwrap())
        );
    }
    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.get_u32("test.u32").unwrap(), 4_000_000_000);
    assert_eq!(
        f.get_str_array("test.arr_str").unwrap(),
        vec!["a", "", "Ġthe", "<|im_start|>", "ü"]
    );
    assert_eq!(
        f.get_i32_array("test.arr_i32").unwrap(),
        vec![0, -1, 2, i32::MAX, i32::MIN]
    );
    assert_eq!(
        f.get("test.arr_nested").unwrap().type_name(),
        "array[array[i32]]"
    );

    let ts = json["tensors"].as_array().unwrap();
    assert_eq!(f.tensors().len(), ts.len());
    for (j, info) in ts.iter().zip(f.tensors()) {
        let name = j["name"].as_str().unwrap();
        assert_eq!(info.name, name);
        let dims: Vec<u64> = j["dims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(info.dims, dims, "{name}");
        assert_eq!(
            u64::from(info.dtype.ggml_id().unwrap()),
            j["ggml_type"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(info.offset, j["offset"].as_u64().unwrap(), "{name}");
        assert_eq!(info.n_bytes, j["n_bytes"].as_u64().unwrap(), "{name}");
        assert_eq!(
            f.data_offset() + info.offset,
            j["data_offset_abs"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            f.tensor_data(info).unwrap(),
            hex(j["data_hex"].as_str().unwrap()),
            "{name}"
        );
        let rev: Vec<usize> = dims.iter().rev().map(|&d| d as usize).collect();
        assert_eq!(info.shape(), rev);
    }
}

/// Reading gguf-py's file and writing it back with kiln's writer gives the
/// same bytes: both follow the same layout rules (order, padding, offsets).
#[test]
fn rewrite_of_gguf_py_fixture_is_byte_identical() {
    let original = std::fs::read(fixture("tiny.gguf")).unwrap();
    let f = GgufFile::from_bytes(original.clone()).unwrap();
    let mut w = kiln_core::gguf::GgufWriter::new().version(f.version());
    for (k, v) in f.metadata() {
        w.add_kv(k.clone(), v.clone());
    }
    for t in f.tensors() {
        w.add_tensor(
            t.name.clone(),
            t.dims.clone(),
            t.dtype,
            f.tensor_data(t).unwrap().to_vec(),
        )
        .unwrap();
    }
    let rewritten = w.to_bytes().unwrap();
    assert_eq!(rewritten.len(), original.len());
    if let Some(i) = rewritten.iter().zip(&original).position(|(a, b)| a != b) {
        panic!("first difference at byte {i}");
    }
}
