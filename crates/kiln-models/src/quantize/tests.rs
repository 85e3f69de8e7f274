//! Unit tests of the type rules (hand-derived from llama.cpp's documented
//! behaviour) and of the file driver's error paths.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use kiln_core::gguf::{GgufFile, GgufWriter, Value};
use kiln_core::DType;

fn facts(n_layer: usize, n_gqa: usize, has_output: bool) -> ModelFacts {
    ModelFacts {
        arch: "llama".into(),
        n_layer,
        n_gqa,
        n_expert: 0,
        has_output,
        n_attention_wv: n_layer,
        is_llama_70b: false,
    }
}

fn rules(ftype: FileType) -> TypeRules {
    TypeRules {
        ftype,
        pure: false,
        output_tensor_type: None,
        token_embedding_type: None,
    }
}

/// The type of a 2-D F32 tensor `name` with row length `nx`, at layer `i`.
fn pick(r: &TypeRules, f: &ModelFacts, name: &str, nx: u64, i: usize) -> TypeChoice {
    let dims = [nx, 64];
    choose_type(
        r,
        f,
        &TensorDesc {
            name,
            dims: &dims,
            dtype: DType::F32,
            i_attention_wv: i,
            i_ffn_down: i,
        },
    )
}

fn ty(r: &TypeRules, f: &ModelFacts, name: &str, nx: u64, i: usize) -> DType {
    pick(r, f, name, nx, i).dtype
}

/// `kiln info`'s names of `general.file_type`: kiln's own file types and
/// llama.cpp's i-quant mixes (ids as gguf's `LlamaFileType`).
#[test]
fn llama_ftype_names() {
    use super::rules::llama_ftype_name;
    assert_eq!(llama_ftype_name(15), Some("Q4_K_M"));
    assert_eq!(llama_ftype_name(30), Some("IQ4_XS"));
    assert_eq!(llama_ftype_name(19), Some("IQ2_XXS"));
    assert_eq!(llama_ftype_name(20), Some("IQ2_XS"));
    assert_eq!(llama_ftype_name(23), Some("IQ3_XXS"));
    assert_eq!(llama_ftype_name(26), Some("IQ3_S"));
    assert_eq!(llama_ftype_name(4), None);
    assert_eq!(llama_ftype_name(999), None);
}

#[test]
fn file_type_names_ids_and_errors() {
    for f in FileType::ALL {
        assert_eq!(FileType::parse(f.name()).unwrap(), f);
        assert_eq!(FileType::parse(&f.name().to_lowercase()).unwrap(), f);
        assert_eq!(FileType::parse(&f.id().to_string()).unwrap(), f);
        assert_eq!(FileType::from_id(f.id()), Some(f));
    }
    // llama.h ids, spot-checked.
    let ids = [
        (FileType::AllF32, 0),
        (FileType::F16, 1),
        (FileType::Q4_0, 2),
        (FileType::Q8_0, 7),
        (FileType::Q4_K_M, 15),
        (FileType::Q6_K, 18),
        (FileType::IQ4_XS, 30),
        (FileType::BF16, 32),
    ];
    for (f, id) in ids {
        assert_eq!(f.id(), id, "{f}");
    }
    assert_eq!(FileType::parse("Q4_K").unwrap(), FileType::Q4_K_M);
    assert_eq!(FileType::parse("q5_k").unwrap(), FileType::Q5_K_M);
    assert_eq!(FileType::parse("Q3_K").unwrap(), FileType::Q3_K_M);
    assert_eq!(FileType::Q4_K_S.default_type(), DType::Q4_K);
    assert_eq!(FileType::Q3_K_L.default_type(), DType::Q3_K);
    let e = FileType::parse("Q7_X").unwrap_err();
    assert!(e.contains("unknown") && e.contains("Q4_K_M"), "{e}");
    let e = FileType::parse("IQ2_XXS").unwrap_err();
    assert!(e.contains("importance matrix"), "{e}");
    assert!(FileType::parse("4").is_err(), "removed ftype id 4");
}

#[test]
fn categories_and_quantizable() {
    assert_eq!(Category::of("output.weight"), Category::Output);
    assert_eq!(Category::of("token_embd.weight"), Category::TokenEmbd);
    assert_eq!(Category::of("blk.3.attn_v.weight"), Category::AttnV);
    assert_eq!(Category::of("blk.3.attn_qkv.weight"), Category::AttnQkv);
    assert_eq!(
        Category::of("blk.3.ffn_down_exps.weight"),
        Category::FfnDown
    );
    assert_eq!(Category::of("blk.3.ffn_gate.weight"), Category::FfnGate);
    assert_eq!(
        Category::of("blk.3.attn_output.weight"),
        Category::AttnOutput
    );
    assert_eq!(Category::of("blk.3.attn_norm.weight"), Category::Other);
    assert!(allows_quantization("blk.0.attn_q.weight", 2));
    assert!(allows_quantization("blk.0.ffn_up_exps.weight", 3));
    assert!(!allows_quantization("blk.0.attn_q.weight", 1));
    assert!(!allows_quantization("blk.0.attn_norm.weight", 2));
    assert!(!allows_quantization("blk.0.attn_q.bias", 2));
    assert!(!allows_quantization("blk.0.ffn_gate_inp.weight", 2));
    assert!(!allows_quantization("position_embd.weight", 2));
    assert!(!allows_quantization("blk.0.ssm_conv1d.weight", 2));
}

#[test]
fn not_quantizable_tensors_are_copied() {
    let r = rules(FileType::Q4_K_M);
    let f = facts(8, 1, true);
    let dims = [4096u64];
    for (name, dtype) in [
        ("blk.0.attn_norm.weight", DType::F32),
        ("output_norm.weight", DType::F16),
    ] {
        let c = choose_type(
            &r,
            &f,
            &TensorDesc {
                name,
                dims: &dims,
                dtype,
                i_attention_wv: 0,
                i_ffn_down: 0,
            },
        );
        assert_eq!(
            c,
            TypeChoice {
                dtype,
                fallback_from: None,
                convert: false
            }
        );
    }
    // Already the chosen type: copied, not requantized.
    let dims = [4096u64, 64];
    let c = choose_type(
        &r,
        &f,
        &TensorDesc {
            name: "blk.0.attn_q.weight",
            dims: &dims,
            dtype: DType::Q4_K,
            i_attention_wv: 0,
            i_ffn_down: 0,
        },
    );
    assert_eq!((c.dtype, c.convert), (DType::Q4_K, false));
}

#[test]
fn output_and_tied_embeddings() {
    let with_out = facts(8, 1, true);
    let tied = facts(8, 1, false);
    for ft in [
        FileType::Q4_K_M,
        FileType::Q4_0,
        FileType::Q5_1,
        FileType::Q2_K,
    ] {
        let r = rules(ft);
        assert_eq!(
            ty(&r, &with_out, "output.weight", 4096, 0),
            DType::Q6_K,
            "{ft}"
        );
        assert_eq!(
            ty(&r, &tied, "token_embd.weight", 4096, 0),
            DType::Q6_K,
            "{ft}"
        );
        // With a separate output, token_embd keeps the base type.
        assert_eq!(
            ty(&r, &with_out, "token_embd.weight", 4096, 0),
            ft.default_type(),
            "{ft}"
        );
    }
    let r = rules(FileType::Q8_0);
    assert_eq!(ty(&r, &with_out, "output.weight", 4096, 0), DType::Q8_0);
    // Row not a multiple of the base block (256): Q8_0, no fallback needed.
    let c = pick(&rules(FileType::Q4_K_M), &tied, "token_embd.weight", 576, 0);
    assert_eq!((c.dtype, c.fallback_from), (DType::Q8_0, None));
    // Base Q4_0 (block 32) divides 576, so Q6_K is wanted, then falls back.
    let c = pick(&rules(FileType::Q4_0), &tied, "token_embd.weight", 576, 0);
    assert_eq!((c.dtype, c.fallback_from), (DType::Q8_0, Some(DType::Q6_K)));
    // Float targets: no mixture.
    let r = rules(FileType::F16);
    assert_eq!(ty(&r, &with_out, "output.weight", 4096, 0), DType::F16);
    let mut falcon = with_out.clone();
    falcon.arch = "falcon".into();
    assert_eq!(
        ty(&rules(FileType::Q4_K_M), &falcon, "output.weight", 4096, 0),
        DType::Q8_0
    );
}

/// llama.cpp's `use_more_bits` for 32 layers, listed by hand: the first and
/// last 4, and every third from 6.
#[test]
fn use_more_bits_layers_q4_k_m() {
    let f = facts(32, 1, true);
    let r = rules(FileType::Q4_K_M);
    let more: Vec<usize> = (0..32)
        .filter(|&i| ty(&r, &f, "blk.x.ffn_down.weight", 4096, i) == DType::Q6_K)
        .collect();
    let want = vec![0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31];
    assert_eq!(more, want);
    for i in 0..32 {
        let v = ty(&r, &f, "blk.x.attn_v.weight", 4096, i);
        let want_v = if want.contains(&i) {
            DType::Q6_K
        } else {
            DType::Q4_K
        };
        assert_eq!(v, want_v, "attn_v {i}");
        // Other tensors: the base type.
        assert_eq!(ty(&r, &f, "blk.x.attn_q.weight", 4096, i), DType::Q4_K);
        assert_eq!(ty(&r, &f, "blk.x.ffn_up.weight", 4096, i), DType::Q4_K);
        assert_eq!(ty(&r, &f, "blk.x.attn_output.weight", 4096, i), DType::Q4_K);
    }
    let r = rules(FileType::Q5_K_M);
    assert_eq!(ty(&r, &f, "blk.x.ffn_down.weight", 4096, 6), DType::Q6_K);
    assert_eq!(ty(&r, &f, "blk.x.ffn_down.weight", 4096, 7), DType::Q5_K);
}

#[test]
fn small_and_large_mixes() {
    let f = facts(32, 1, true);
    let gqa = facts(32, 4, true);
    let q2 = rules(FileType::Q2_K);
    assert_eq!(ty(&q2, &f, "blk.0.attn_v.weight", 4096, 0), DType::Q3_K);
    assert_eq!(ty(&q2, &gqa, "blk.0.attn_v.weight", 4096, 0), DType::Q4_K);
    assert_eq!(ty(&q2, &f, "blk.5.ffn_down.weight", 4096, 5), DType::Q3_K);
    assert_eq!(
        ty(&q2, &f, "blk.5.attn_output.weight", 4096, 5),
        DType::Q3_K
    );
    assert_eq!(ty(&q2, &f, "blk.5.ffn_gate.weight", 4096, 5), DType::Q2_K);

    let q3m = rules(FileType::Q3_K_M);
    assert_eq!(ty(&q3m, &f, "blk.1.attn_v.weight", 4096, 1), DType::Q5_K);
    assert_eq!(ty(&q3m, &f, "blk.2.attn_v.weight", 4096, 2), DType::Q4_K);
    assert_eq!(ty(&q3m, &f, "blk.1.ffn_down.weight", 4096, 1), DType::Q5_K);
    assert_eq!(ty(&q3m, &f, "blk.2.ffn_down.weight", 4096, 2), DType::Q4_K);
    assert_eq!(
        ty(&q3m, &f, "blk.2.attn_output.weight", 4096, 2),
        DType::Q4_K
    );
    assert_eq!(ty(&q3m, &f, "blk.2.attn_q.weight", 4096, 2), DType::Q3_K);
    let q3l = rules(FileType::Q3_K_L);
    assert_eq!(ty(&q3l, &f, "blk.9.attn_v.weight", 4096, 9), DType::Q5_K);
    assert_eq!(ty(&q3l, &f, "blk.9.ffn_down.weight", 4096, 9), DType::Q5_K);
    assert_eq!(
        ty(&q3l, &f, "blk.9.attn_output.weight", 4096, 9),
        DType::Q5_K
    );
    let q3s = rules(FileType::Q3_K_S);
    assert_eq!(ty(&q3s, &f, "blk.0.attn_v.weight", 4096, 0), DType::Q3_K);

    let q4s = rules(FileType::Q4_K_S);
    assert_eq!(ty(&q4s, &f, "blk.3.attn_v.weight", 4096, 3), DType::Q5_K);
    assert_eq!(ty(&q4s, &f, "blk.4.attn_v.weight", 4096, 4), DType::Q4_K);
    assert_eq!(ty(&q4s, &f, "blk.3.ffn_down.weight", 4096, 3), DType::Q5_K);
    assert_eq!(ty(&q4s, &f, "blk.4.ffn_down.weight", 4096, 4), DType::Q4_K);
    let q5s = rules(FileType::Q5_K_S);
    assert_eq!(ty(&q5s, &f, "blk.0.ffn_down.weight", 4096, 0), DType::Q5_K);

    let iq4 = rules(FileType::IQ4_XS);
    assert_eq!(ty(&iq4, &gqa, "blk.9.attn_v.weight", 4096, 9), DType::Q5_K);
    assert_eq!(ty(&iq4, &f, "blk.9.attn_v.weight", 4096, 9), DType::IQ4_XS);
    assert_eq!(ty(&iq4, &f, "blk.3.ffn_down.weight", 4096, 3), DType::Q5_K);
    assert_eq!(
        ty(&iq4, &f, "blk.4.ffn_down.weight", 4096, 4),
        DType::IQ4_XS
    );

    // Legacy types: only output / tied embeddings change.
    for ft in [
        FileType::Q4_0,
        FileType::Q4_1,
        FileType::Q5_0,
        FileType::Q8_0,
    ] {
        let r = rules(ft);
        for name in [
            "blk.0.attn_v.weight",
            "blk.0.ffn_down.weight",
            "blk.0.attn_k.weight",
        ] {
            assert_eq!(ty(&r, &f, name, 4096, 0), ft.default_type(), "{ft} {name}");
        }
    }

    let mut moe = facts(32, 1, true);
    moe.n_expert = 8;
    let r = rules(FileType::Q4_K_M);
    assert_eq!(ty(&r, &moe, "blk.9.attn_v.weight", 4096, 9), DType::Q8_0);
    assert_eq!(ty(&r, &moe, "blk.9.attn_k.weight", 4096, 9), DType::Q8_0);
    assert_eq!(
        ty(&r, &moe, "blk.9.attn_output.weight", 4096, 9),
        DType::Q5_K
    );

    let mut big = facts(80, 8, true);
    big.is_llama_70b = true;
    assert_eq!(
        ty(
            &rules(FileType::Q3_K_M),
            &big,
            "blk.9.attn_v.weight",
            8192,
            9
        ),
        DType::Q5_K
    );
}

#[test]
fn pure_and_overrides() {
    let f = facts(8, 1, false);
    let mut r = rules(FileType::Q4_K_M);
    r.pure = true;
    assert_eq!(ty(&r, &f, "blk.0.attn_v.weight", 4096, 0), DType::Q4_K);
    assert_eq!(ty(&r, &f, "token_embd.weight", 4096, 0), DType::Q4_K);
    // --pure still falls back on incompatible rows.
    assert_eq!(ty(&r, &f, "blk.0.attn_v.weight", 576, 0), DType::Q5_0);
    let mut r = rules(FileType::Q4_0);
    r.output_tensor_type = Some(DType::Q8_0);
    r.token_embedding_type = Some(DType::F16);
    let with_out = facts(8, 1, true);
    assert_eq!(ty(&r, &with_out, "output.weight", 4096, 0), DType::Q8_0);
    assert_eq!(ty(&r, &with_out, "token_embd.weight", 4096, 0), DType::F16);
    // An override still falls back when its block does not fit.
    r.output_tensor_type = Some(DType::Q6_K);
    let c = pick(&r, &with_out, "output.weight", 96, 0);
    assert_eq!((c.dtype, c.fallback_from), (DType::Q8_0, Some(DType::Q6_K)));
}

#[test]
fn fallbacks() {
    let cases = [
        (DType::Q4_K, 576, DType::Q5_0),
        (DType::Q5_K, 576, DType::Q5_1),
        (DType::Q6_K, 576, DType::Q8_0),
        (DType::Q2_K, 576, DType::Q4_0),
        (DType::Q3_K, 576, DType::Q4_0),
        (DType::IQ4_XS, 576, DType::IQ4_NL),
        (DType::Q4_K, 40, DType::F16),
        (DType::Q4_0, 40, DType::F16),
        (DType::IQ4_NL, 7, DType::F16),
    ];
    for (want, nx, got) in cases {
        assert_eq!(fallback(want, nx), (got, Some(want)), "{want} nx {nx}");
    }
    assert_eq!(fallback(DType::Q4_K, 512), (DType::Q4_K, None));
    assert_eq!(fallback(DType::F16, 7), (DType::F16, None));
}

fn tmp_dir(test: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-quantize-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A small llama-like file: 2 layers, tied embeddings, split keys absent.
fn small_model(bad_value: Option<f32>) -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", Value::String("llama".into()));
    w.add_kv("general.file_type", Value::U32(0));
    w.add_kv("llama.block_count", Value::U32(2));
    w.add_kv("llama.attention.head_count", Value::U32(4));
    w.add_kv("llama.attention.head_count_kv", Value::U32(1));
    let mut x: Vec<f32> = (0..256 * 8)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
        .collect();
    if let Some(v) = bad_value {
        x[256 * 5 + 3] = v;
    }
    w.add_tensor("token_embd.weight", vec![256, 8], DType::F32, f32_bytes(&x))
        .unwrap();
    for l in 0..2 {
        w.add_tensor(
            format!("blk.{l}.attn_norm.weight"),
            vec![256],
            DType::F32,
            f32_bytes(&[1.0; 256]),
        )
        .unwrap();
        for name in ["attn_v", "ffn_down"] {
            w.add_tensor(
                format!("blk.{l}.{name}.weight"),
                vec![256, 8],
                DType::F32,
                f32_bytes(&x),
            )
            .unwrap();
        }
    }
    w.to_bytes().unwrap()
}

#[test]
fn plan_metadata_and_file() {
    let dir = tmp_dir("plan");
    let inp = dir.join("in.gguf");
    std::fs::write(&inp, small_model(None)).unwrap();
    let f = GgufFile::open(&inp).unwrap();
    let facts = model_facts(&f);
    assert_eq!(
        (facts.n_layer, facts.n_gqa, facts.has_output),
        (2, 4, false)
    );
    assert_eq!(facts.n_attention_wv, 2);
    let p = plan(&f, &QuantizeParams::new(FileType::Q4_K_M)).unwrap();
    let types: Vec<(&str, DType)> = p
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.choice.dtype))
        .collect();
    // 2 layers: use_more_bits(i, 2) holds only for i >= 7*2/8 = 1.
    assert_eq!(
        types,
        vec![
            ("token_embd.weight", DType::Q6_K),
            ("blk.0.attn_norm.weight", DType::F32),
            ("blk.0.attn_v.weight", DType::Q4_K),
            ("blk.0.ffn_down.weight", DType::Q4_K),
            ("blk.1.attn_norm.weight", DType::F32),
            ("blk.1.attn_v.weight", DType::Q6_K),
            ("blk.1.ffn_down.weight", DType::Q6_K),
        ]
    );
    let kv = output_metadata(&f, FileType::Q4_K_M).unwrap();
    let ft = kv
        .iter()
        .position(|(k, _)| k == "general.file_type")
        .unwrap();
    assert_eq!(ft, 1, "replaced in place");
    assert_eq!(kv[ft].1, Value::U32(15));
    assert_eq!(
        kv.last().unwrap(),
        &("general.quantization_version".to_string(), Value::U32(2))
    );

    let out = dir.join("out.gguf");
    let mut seen = Vec::new();
    let done = quantize_file(
        &inp,
        &out,
        &QuantizeParams::new(FileType::Q8_0),
        &mut |i, t| seen.push((i, t.name.clone())),
    )
    .unwrap();
    assert_eq!(seen.len(), 7);
    let g = GgufFile::open(&out).unwrap();
    assert_eq!(g.get_u32("general.file_type").unwrap(), 7);
    for (t, pl) in g.tensors().iter().zip(&done.tensors) {
        assert_eq!((t.dtype, t.n_bytes), (pl.choice.dtype, pl.bytes_out));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn driver_errors_leave_no_output() {
    let dir = tmp_dir("errors");
    let inp = dir.join("in.gguf");
    std::fs::write(&inp, small_model(Some(f32::NAN))).unwrap();
    let out = dir.join("out.gguf");
    let p = QuantizeParams::new(FileType::Q4_0);
    let e = quantize_file(&inp, &out, &p, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("token_embd.weight") && e.contains("row 5"),
        "{e}"
    );
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("in.gguf")]);

    // Output = input, also through another spelling of the path.
    let same = dir.join(".").join("in.gguf");
    let e = quantize_file(&inp, &same, &p, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("is the input file"), "{e}");

    let mut bad = p;
    bad.output_tensor_type = Some(DType::Q8_K);
    let e = quantize_file(&inp, &out, &bad, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("activation format"), "{e}");

    let e = quantize_file(&dir.join("missing.gguf"), &out, &p, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.gguf"), "{e}");
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
