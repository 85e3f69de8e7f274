//! GGUF writer → reader round trips: every value type (nested and empty
//! arrays included), tensors of every dtype at several alignments, v2 and
//! v3, typed getters and their errors, and the writer's own checks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_core::gguf::{ArrayValue, GgufFile, GgufWriter, TensorInfo, Value, ValueType};
use kiln_core::{DType, Error};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rng(test: &str) -> ChaCha8Rng {
    let seed: u64 = rand::random();
    eprintln!("{test}: seed {seed}");
    ChaCha8Rng::seed_from_u64(seed)
}

/// Structural equality with floats compared bit for bit (NaN, -0.0).
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

fn arr(elem_type: ValueType, items: Vec<Value>) -> Value {
    Value::Array(ArrayValue::new(elem_type, items))
}

fn random_string(r: &mut ChaCha8Rng) -> String {
    const PIECES: [&str; 8] = ["a", "Ġ", "é", "✓", "🦀", "\0", "<|im_end|>", " "];
    (0..r.gen_range(0..6))
        .map(|_| PIECES[r.gen_range(0..PIECES.len())])
        .collect()
}

/// One key per value type plus arrays: nested, empty, large.
fn all_values(r: &mut ChaCha8Rng) -> Vec<(String, Value)> {
    let strings: Vec<Value> = (0..1000).map(|_| Value::String(random_string(r))).collect();
    let v = vec![
        ("t.u8", Value::U8(r.gen())),
        ("t.u8_max", Value::U8(u8::MAX)),
        ("t.i8", Value::I8(i8::MIN)),
        ("t.u16", Value::U16(r.gen())),
        ("t.i16", Value::I16(-12345)),
        ("t.u32", Value::U32(u32::MAX)),
        ("t.i32", Value::I32(i32::MIN)),
        ("t.f32", Value::F32(r.gen())),
        ("t.f32_nan", Value::F32(f32::from_bits(0x7fc0_1234))),
        ("t.f32_neg_zero", Value::F32(-0.0)),
        ("t.f32_inf", Value::F32(f32::NEG_INFINITY)),
        ("t.f32_subnormal", Value::F32(f32::from_bits(1))),
        ("t.bool_t", Value::Bool(true)),
        ("t.bool_f", Value::Bool(false)),
        ("t.str", Value::String("héllo ✓ 🦀".into())),
        ("t.str_empty", Value::String(String::new())),
        ("t.str_nul", Value::String("a\0b".into())),
        ("t.u64", Value::U64(u64::MAX)),
        ("t.i64", Value::I64(i64::MIN)),
        ("t.f64", Value::F64(r.gen::<f64>() * 1e300)),
        ("t.arr_str", arr(ValueType::String, strings)),
        (
            "t.arr_i32",
            arr(
                ValueType::I32,
                (0..37).map(|_| Value::I32(r.gen())).collect(),
            ),
        ),
        (
            "t.arr_f32",
            arr(
                ValueType::F32,
                (0..33).map(|_| Value::F32(r.gen())).collect(),
            ),
        ),
        (
            "t.arr_bool",
            arr(ValueType::Bool, vec![Value::Bool(true), Value::Bool(false)]),
        ),
        (
            "t.arr_u8",
            arr(ValueType::U8, vec![Value::U8(0), Value::U8(255)]),
        ),
        ("t.arr_i8", arr(ValueType::I8, vec![Value::I8(-1)])),
        ("t.arr_u16", arr(ValueType::U16, vec![Value::U16(7)])),
        ("t.arr_i16", arr(ValueType::I16, vec![Value::I16(-7)])),
        ("t.arr_u32", arr(ValueType::U32, vec![Value::U32(u32::MAX)])),
        ("t.arr_u64", arr(ValueType::U64, vec![Value::U64(1 << 40)])),
        (
            "t.arr_i64",
            arr(ValueType::I64, vec![Value::I64(-(1 << 40))]),
        ),
        ("t.arr_f64", arr(ValueType::F64, vec![Value::F64(0.1)])),
        ("t.empty_str_arr", arr(ValueType::String, vec![])),
        ("t.empty_f64_arr", arr(ValueType::F64, vec![])),
        ("t.empty_arr_arr", arr(ValueType::Array, vec![])),
        (
            "t.nested",
            arr(
                ValueType::Array,
                vec![
                    arr(ValueType::I32, vec![Value::I32(1), Value::I32(2)]),
                    arr(ValueType::String, vec![]),
                    arr(
                        ValueType::Array,
                        vec![arr(ValueType::String, vec![Value::String("deep".into())])],
                    ),
                ],
            ),
        ),
    ];
    v.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Random GGUF-order dims (1..=4 of them) valid for `dtype`.
fn random_dims(r: &mut ChaCha8Rng, dtype: DType) -> Vec<u64> {
    let n = r.gen_range(1..=4);
    let mut dims: Vec<u64> = (0..n).map(|_| r.gen_range(1..=5)).collect();
    dims[0] =
        (dtype.block_size() * r.gen_range(1..=3)) as u64 + if dtype.is_quantized() { 0 } else { 2 };
    dims
}

fn n_bytes(dims: &[u64], dtype: DType) -> usize {
    dtype.row_bytes("test", dims[0] as usize).unwrap() * dims[1..].iter().product::<u64>() as usize
}

#[test]
fn round_trip_all_values_and_tensors() {
    let mut r = rng("round_trip_all_values_and_tensors");
    for version in [2u32, 3] {
        for alignment in [
            None,
            Some(1u64),
            Some(8),
            Some(32),
            Some(64),
            Some(4096),
            Some(1 << 16),
        ] {
            let kvs = all_values(&mut r);
            let mut w = GgufWriter::new().version(version);
            if let Some(a) = alignment {
                w.alignment(a);
            }
            for (k, v) in &kvs {
                w.add_kv(k.clone(), v.clone());
            }
            let mut expected: Vec<(String, Vec<u64>, DType, Vec<u8>)> = Vec::new();
            for (i, &dtype) in DType::ALL.iter().chain(DType::ALL.iter()).enumerate() {
                let dims = random_dims(&mut r, dtype);
                let data: Vec<u8> = (0..n_bytes(&dims, dtype)).map(|_| r.gen()).collect();
                let name = format!("blk.{i}.{}", dtype.name().to_lowercase());
                w.add_tensor(name.clone(), dims.clone(), dtype, data.clone())
                    .unwrap();
                expected.push((name, dims, dtype, data));
            }
            let bytes = w.to_bytes().unwrap();
            let f = GgufFile::from_bytes(bytes).unwrap();
            let align = alignment.unwrap_or(32);
            assert_eq!(f.version(), version);
            assert_eq!(f.alignment(), align);
            assert_eq!(f.data_offset() % align, 0);

            // Metadata: in insertion order, plus general.alignment appended
            // when a non-default alignment was set.
            let md = f.metadata();
            let extra = usize::from(align != 32);
            assert_eq!(md.len(), kvs.len() + extra);
            for ((k, v), (gk, gv)) in kvs.iter().zip(md) {
                assert_eq!(k, gk);
                assert!(same(v, gv), "{k}: wrote {v:?}, read {gv:?}");
                assert!(same(v, f.get(k).unwrap()));
            }
            if extra == 1 {
                assert_eq!(md[kvs.len()].0, "general.alignment");
                assert_eq!(md[kvs.len()].1, Value::U32(align as u32));
            }

            assert_eq!(f.tensors().len(), expected.len());
            for ((name, dims, dtype, data), info) in expected.iter().zip(f.tensors()) {
                assert_eq!(&info.name, name);
                assert_eq!(&info.dims, dims);
                assert_eq!(info.dtype, *dtype);
                assert_eq!(info.n_bytes as usize, data.len());
                assert_eq!(info.offset % align, 0, "{name} offset {}", info.offset);
                assert_eq!(f.tensor(name), Some(info));
                assert_eq!(f.tensor_data(info).unwrap(), &data[..]);
                let start = (f.data_offset() + info.offset) as usize;
                assert_eq!(&f.data()[start..start + data.len()], &data[..]);
            }
            assert!(f.tensor("nope").is_none());
        }
    }
}

#[test]
fn round_trip_through_file() {
    let mut r = rng("round_trip_through_file");
    let dir = std::env::temp_dir().join(format!("kiln-gguf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rt.gguf");
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", Value::String("llama".into()));
    let data: Vec<u8> = (0..34 * 3).map(|_| r.gen()).collect();
    w.add_tensor("w", vec![32, 3], DType::Q8_0, data.clone())
        .unwrap();
    w.write_file(&path).unwrap();
    // No temporary left behind.
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(left.len(), 1);
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    let t = f.tensor("w").unwrap();
    assert_eq!(t.shape(), vec![3, 32]);
    assert_eq!(t.n_elements(), 96);
    assert_eq!(f.tensor_data(t).unwrap(), &data[..]);
    assert_eq!(std::fs::read(&path).unwrap(), w.to_bytes().unwrap());
    std::fs::remove_dir_all(&dir).unwrap();

    let missing = dir.join("missing.gguf");
    let err = GgufFile::open(&missing).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("missing.gguf"), "{err}");
}

#[test]
fn typed_getters() {
    let mut w = GgufWriter::new();
    w.add_kv("u8", Value::U8(7));
    w.add_kv("i64_big", Value::I64(1 << 40));
    w.add_kv("i32_neg", Value::I32(-1));
    w.add_kv("f32", Value::F32(1.5));
    w.add_kv("f64", Value::F64(0.25));
    w.add_kv("s", Value::String("x".into()));
    w.add_kv("b", Value::Bool(true));
    w.add_kv(
        "strs",
        arr(
            ValueType::String,
            vec![Value::String("a".into()), Value::String("b".into())],
        ),
    );
    w.add_kv(
        "f32s",
        arr(ValueType::F32, vec![Value::F32(1.0), Value::F32(-2.0)]),
    );
    w.add_kv(
        "i32s",
        arr(ValueType::I32, vec![Value::I32(3), Value::I32(-4)]),
    );
    w.add_kv("u8s", arr(ValueType::U8, vec![Value::U8(200)]));
    w.add_kv("u64s_big", arr(ValueType::U64, vec![Value::U64(1 << 33)]));
    let f = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();

    assert_eq!(f.get_u32("u8").unwrap(), 7);
    assert_eq!(f.get_u64("i64_big").unwrap(), 1 << 40);
    assert_eq!(f.get_f32("f32").unwrap(), 1.5);
    assert_eq!(f.get_f32("f64").unwrap(), 0.25);
    assert_eq!(f.get_str("s").unwrap(), "x");
    assert!(f.get_bool("b").unwrap());
    assert_eq!(f.get_str_array("strs").unwrap(), vec!["a", "b"]);
    assert_eq!(f.get_f32_array("f32s").unwrap(), vec![1.0, -2.0]);
    assert_eq!(f.get_i32_array("i32s").unwrap(), vec![3, -4]);
    assert_eq!(f.get_i32_array("u8s").unwrap(), vec![200]);

    let v = f.get("i64_big").unwrap();
    assert_eq!(v.as_u32(), None);
    assert_eq!(v.as_i64(), Some(1 << 40));
    assert_eq!(f.get("i32_neg").unwrap().as_u64(), None);
    assert_eq!(f.get("i32_neg").unwrap().as_i64(), Some(-1));
    assert_eq!(f.get("strs").unwrap().as_array().unwrap().len(), 2);
    assert_eq!(f.get("strs").unwrap().type_name(), "array[string]");
    assert_eq!(f.get("s").unwrap().type_name(), "string");

    let msg = |e: Error| {
        let s = e.to_string();
        assert!(!s.contains('\n'), "multi-line error: {s}");
        s
    };
    assert_eq!(
        msg(f.get_u32("nope").unwrap_err()),
        "GGUF: missing key nope"
    );
    assert_eq!(
        msg(f.get_u32("s").unwrap_err()),
        "GGUF: key s has type string, expected u32"
    );
    assert!(msg(f.get_u32("i64_big").unwrap_err()).contains("does not fit in u32"));
    assert!(msg(f.get_u32("i32_neg").unwrap_err()).contains("does not fit in u32"));
    assert_eq!(
        msg(f.get_str("u8").unwrap_err()),
        "GGUF: key u8 has type u8, expected string"
    );
    assert!(msg(f.get_f32("s").unwrap_err()).contains("expected f32"));
    assert!(msg(f.get_bool("u8").unwrap_err()).contains("expected bool"));
    assert_eq!(
        msg(f.get_str_array("f32s").unwrap_err()),
        "GGUF: key f32s has type array[f32], expected array[string]"
    );
    assert!(msg(f.get_f32_array("strs").unwrap_err()).contains("expected array[f32]"));
    assert!(msg(f.get_i32_array("f32s").unwrap_err()).contains("expected array[i32]"));
    assert!(msg(f.get_i32_array("u64s_big").unwrap_err()).contains("item 0"));
}

#[test]
fn writer_rejects_what_the_reader_would() {
    let expect_err = |w: &GgufWriter, needle: &str| {
        let e = w.to_bytes().unwrap_err().to_string();
        assert!(e.contains(needle), "error {e:?} lacks {needle:?}");
    };
    let mut w = GgufWriter::new();
    w.add_kv("a", Value::U8(1));
    w.add_kv("a", Value::U8(2));
    expect_err(&w, "duplicate key 'a'");

    let mut w = GgufWriter::new();
    w.add_kv("m", arr(ValueType::U8, vec![Value::U8(1), Value::I8(1)]));
    expect_err(&w, "item 1 of type i8");

    let mut deep = arr(ValueType::U8, vec![]);
    for _ in 0..8 {
        deep = arr(ValueType::Array, vec![deep]);
    }
    let mut w = GgufWriter::new();
    w.add_kv("deep", deep);
    expect_err(&w, "nested deeper");

    for bad in [0u64, 3, 48, 1 << 33] {
        let mut w = GgufWriter::new();
        w.alignment(bad);
        expect_err(&w, "alignment");
    }
    let mut w = GgufWriter::new();
    w.alignment(64);
    w.add_kv("general.alignment", Value::U32(128));
    expect_err(&w, "differs");

    expect_err(&GgufWriter::new().version(1), "version 1");

    let mut w = GgufWriter::new();
    let e = w
        .add_tensor("t", vec![33], DType::Q8_0, vec![0; 34])
        .unwrap_err();
    assert!(e.to_string().contains("block size"), "{e}");
    let e = w
        .add_tensor("t", vec![4], DType::F32, vec![0; 15])
        .unwrap_err();
    assert!(
        e.to_string().contains("has 15 data bytes, expected 16"),
        "{e}"
    );
    let e = w.add_tensor("t", vec![], DType::F32, vec![]).unwrap_err();
    assert!(e.to_string().contains("n_dims"), "{e}");
    let e = w
        .add_tensor("t", vec![1, 1, 1, 1, 1], DType::F32, vec![0; 4])
        .unwrap_err();
    assert!(e.to_string().contains("n_dims"), "{e}");
    let e = w
        .add_tensor("t", vec![4, 0], DType::F32, vec![])
        .unwrap_err();
    assert!(e.to_string().contains("ne[1] is 0"), "{e}");
    w.add_tensor("t", vec![4], DType::F32, vec![0; 16]).unwrap();
    let e = w
        .add_tensor("t", vec![4], DType::F32, vec![0; 16])
        .unwrap_err();
    assert!(e.to_string().contains("duplicate tensor name 't'"), "{e}");
}

#[test]
fn explicit_alignment_key_is_honoured() {
    let mut w = GgufWriter::new();
    w.add_kv("general.alignment", Value::U32(256));
    w.add_tensor("a", vec![3], DType::F32, vec![1; 12]).unwrap();
    w.add_tensor("b", vec![5], DType::F16, vec![2; 10]).unwrap();
    let f = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    assert_eq!(f.alignment(), 256);
    assert_eq!(f.metadata().len(), 1);
    assert_eq!(f.data_offset() % 256, 0);
    assert_eq!(f.tensor("b").unwrap().offset, 256);
    assert_eq!(f.tensor_data(f.tensor("b").unwrap()).unwrap(), &[2; 10]);
}

#[test]
fn tensor_info_shape_and_foreign_info() {
    let info = TensorInfo {
        name: "x".into(),
        dims: vec![64, 3, 2],
        dtype: DType::Q4_1,
        offset: 1 << 40,
        n_bytes: 240,
    };
    assert_eq!(info.shape(), vec![2, 3, 64]);
    assert_eq!(info.n_elements(), 384);
    let mut w = GgufWriter::new();
    w.add_tensor("y", vec![2], DType::F32, vec![0; 8]).unwrap();
    let f = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    // An info that does not belong to this file is an error, not a panic.
    let e = f.tensor_data(&info).unwrap_err().to_string();
    assert!(e.contains("'x'") && e.contains("outside the file"), "{e}");
    let info = TensorInfo {
        offset: u64::MAX,
        ..info
    };
    assert!(f.tensor_data(&info).is_err());
}

#[test]
fn value_display_and_types() {
    for t in ValueType::ALL {
        assert_eq!(ValueType::from_id(t.id()), Some(t));
    }
    assert_eq!(ValueType::from_id(13), None);
    let a = arr(ValueType::U8, (0..20).map(Value::U8).collect());
    let s = a.to_string();
    assert!(
        s.starts_with("[0, 1, 2") && s.ends_with("(20 items)]"),
        "{s}"
    );
    assert_eq!(Value::String("q".into()).to_string(), "\"q\"");
}

/// Streamed tensors (`add_tensor_info` + `write_to_with` / `write_file_with`)
/// give the same bytes as held ones; a wrong length or a callback error is an
/// error, and `write_file_with` then leaves neither the file nor a temporary.
#[test]
fn streamed_tensor_data() {
    let mut r = rng("streamed_tensor_data");
    let dtypes = [DType::F32, DType::Q4_0, DType::Q6_K, DType::BF16];
    let mut held = GgufWriter::new();
    let mut streamed = GgufWriter::new();
    held.alignment(64);
    streamed.alignment(64);
    held.add_kv("k", Value::U32(7));
    streamed.add_kv("k", Value::U32(7));
    let mut datas = Vec::new();
    for (i, &dt) in dtypes.iter().enumerate() {
        let dims = random_dims(&mut r, dt);
        let data: Vec<u8> = (0..n_bytes(&dims, dt)).map(|_| r.gen()).collect();
        held.add_tensor(format!("t{i}"), dims.clone(), dt, data.clone())
            .unwrap();
        // Mix held and streamed tensors in one writer.
        if i % 2 == 0 {
            let n = streamed.add_tensor_info(format!("t{i}"), dims, dt).unwrap();
            assert_eq!(n as usize, data.len());
        } else {
            streamed
                .add_tensor(format!("t{i}"), dims, dt, data.clone())
                .unwrap();
        }
        datas.push(data);
    }
    let want = held.to_bytes().unwrap();
    let mut got = Vec::new();
    let mut asked = Vec::new();
    streamed
        .write_to_with(&mut got, &mut |i, name| {
            asked.push((i, name.to_string()));
            Ok(std::borrow::Cow::Borrowed(datas[i].as_slice()))
        })
        .unwrap();
    assert_eq!(got, want);
    assert_eq!(asked, vec![(0, "t0".to_string()), (2, "t2".to_string())]);

    // Without a callback, a declared-only tensor is an error, not a panic.
    let e = streamed.to_bytes().unwrap_err().to_string();
    assert!(e.contains("t0"), "{e}");

    let dir = std::env::temp_dir().join(format!("kiln-gguf-stream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("out.gguf");
    // Wrong length from the callback.
    let e = streamed
        .write_file_with(&path, &mut |_, _| Ok(std::borrow::Cow::Owned(vec![0u8; 3])))
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected"), "{e}");
    // The callback's own error.
    let e = streamed
        .write_file_with(&path, &mut |_, name| {
            Err(Error::invalid("test", format!("no data for {name}")))
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("no data for t0"), "{e}");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
    // And a good streamed file reads back.
    streamed
        .write_file_with(&path, &mut |i, _| {
            Ok(std::borrow::Cow::Borrowed(datas[i].as_slice()))
        })
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), want);
    let f = GgufFile::open(&path).unwrap();
    for (i, t) in f.tensors().iter().enumerate() {
        assert_eq!(f.tensor_data(t).unwrap(), datas[i].as_slice());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
