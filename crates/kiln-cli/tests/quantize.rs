//! `kiln quantize` end to end: a synthetic llama-like GGUF (F32, F16 and
//! Q8_0 inputs; 1-D norms; rows that fit no K-quant block) quantized to
//! every supported type, re-opened and checked (types, shapes, metadata,
//! dequantized error against the input); bad input giving one clean error
//! line and no output file; an independent read of the output with the
//! `gguf` Python package; and the default model to Q8_0 when present.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_core::gguf::{GgufFile, GgufWriter, Value};
use kiln_core::quant::{dequantize_row, quantize_row};
use kiln_core::DType;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env_remove("KILN_MODEL")
        .output()
        .expect("spawn kiln")
}

fn tmp_dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-quantize-cli-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "kiln failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Non-zero exit, exactly one `error:` line containing `needle`, no panic.
fn assert_clean_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "want one error line, got: {err}");
    assert!(lines[0].contains(needle), "{:?} lacks {needle:?}", lines[0]);
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

const N_EMBD: u64 = 256;
const N_FF: u64 = 512;
const N_VOCAB: u64 = 64;
const N_LAYER: usize = 4;

/// Roughly Gaussian values (sum of three uniforms), seeded.
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut r = kiln_testkit::rng(seed);
    let a = kiln_testkit::rand_f32(&mut r, n, -1.0, 1.0);
    let b = kiln_testkit::rand_f32(&mut r, n, -1.0, 1.0);
    let c = kiln_testkit::rand_f32(&mut r, n, -1.0, 1.0);
    (0..n).map(|i| a[i] + b[i] + c[i]).collect()
}

fn encode(dtype: DType, x: &[f32], ne0: usize) -> Vec<u8> {
    let row = dtype.row_bytes("test", ne0).unwrap();
    let mut out = vec![0u8; x.len() / ne0 * row];
    for (xs, o) in x.chunks(ne0).zip(out.chunks_mut(row)) {
        quantize_row(dtype, xs, o).unwrap();
    }
    out
}

fn decode(dtype: DType, data: &[u8], ne0: usize) -> Vec<f32> {
    let row = dtype.row_bytes("test", ne0).unwrap();
    let mut out = vec![f32::NAN; data.len() / row * ne0];
    for (d, o) in data.chunks(row).zip(out.chunks_mut(ne0)) {
        dequantize_row(dtype, d, o).unwrap();
    }
    out
}

/// The synthetic model: 4 llama layers, GQA 4, separate output, one F16 and
/// one Q8_0 input weight, and two extra weights whose rows (96, 40) fit no
/// 256-block (and, for 40, no 32-block).
fn synthetic_model(seed: u64) -> Vec<u8> {
    let mut w = GgufWriter::new();
    let kv = [
        ("general.architecture", Value::String("llama".into())),
        ("general.name", Value::String("synthetic".into())),
        ("general.file_type", Value::U32(0)),
        ("llama.block_count", Value::U32(N_LAYER as u32)),
        ("llama.embedding_length", Value::U32(N_EMBD as u32)),
        ("llama.attention.head_count", Value::U32(8)),
        ("llama.attention.head_count_kv", Value::U32(2)),
        ("test.f32", Value::F32(0.25)),
    ];
    for (k, v) in kv {
        w.add_kv(k, v);
    }
    let mut k = 0u64;
    let mut add = |w: &mut GgufWriter, name: &str, dims: Vec<u64>, dtype: DType| {
        let n: u64 = dims.iter().product();
        k += 1;
        let x = values(seed ^ k.wrapping_mul(0x9e37_79b9), n as usize);
        let data = encode(dtype, &x, dims[0] as usize);
        w.add_tensor(name, dims, dtype, data).unwrap();
    };
    add(
        &mut w,
        "token_embd.weight",
        vec![N_EMBD, N_VOCAB],
        DType::F32,
    );
    for l in 0..N_LAYER {
        let b = format!("blk.{l}");
        add(
            &mut w,
            &format!("{b}.attn_norm.weight"),
            vec![N_EMBD],
            DType::F32,
        );
        let q_type = match l {
            0 => DType::F16,
            1 => DType::Q8_0,
            _ => DType::F32,
        };
        add(
            &mut w,
            &format!("{b}.attn_q.weight"),
            vec![N_EMBD, N_EMBD],
            q_type,
        );
        add(
            &mut w,
            &format!("{b}.attn_k.weight"),
            vec![N_EMBD, 64],
            DType::F32,
        );
        add(
            &mut w,
            &format!("{b}.attn_v.weight"),
            vec![N_EMBD, 64],
            DType::F32,
        );
        add(
            &mut w,
            &format!("{b}.attn_output.weight"),
            vec![N_EMBD, N_EMBD],
            DType::F32,
        );
        add(
            &mut w,
            &format!("{b}.ffn_norm.weight"),
            vec![N_EMBD],
            DType::F32,
        );
        add(
            &mut w,
            &format!("{b}.ffn_gate.weight"),
            vec![N_EMBD, N_FF],
            DType::F32,
        );
        add(
            &mut w,
            &format!("{b}.ffn_up.weight"),
            vec![N_EMBD, N_FF],
            DType::F32,
        );
        add(
            &mut w,
            &format!("{b}.ffn_down.weight"),
            vec![N_FF, N_EMBD],
            DType::F32,
        );
    }
    add(&mut w, "output_norm.weight", vec![N_EMBD], DType::F32);
    add(&mut w, "output.weight", vec![N_EMBD, N_VOCAB], DType::F32);
    add(&mut w, "extra.narrow.weight", vec![96, 8], DType::F32);
    add(&mut w, "extra.odd.weight", vec![40, 4], DType::F32);
    w.to_bytes().unwrap()
}

/// Relative RMS error `||got - want|| / ||want||` allowed per output type,
/// for roughly Gaussian data. Each is ~1.5-2x what the format's step size
/// gives (measured: F16 2.2e-4, BF16 1.7e-3, Q8_0 5e-3, Q6_K 0.017, Q5_*
/// 0.034-0.040, Q4_K 0.068, Q4_0/Q4_1/IQ4_* 0.074-0.082, Q3_K 0.145, Q2_K
/// 0.29), so a wrong scale or code mapping fails while format noise passes.
fn rel_rms_bound(t: DType) -> f64 {
    match t {
        DType::F32 => 0.0,
        DType::F16 => 5e-4,
        DType::BF16 => 4e-3,
        DType::Q8_0 => 0.01,
        DType::Q6_K => 0.03,
        DType::Q5_0 | DType::Q5_1 | DType::Q5_K => 0.06,
        DType::Q4_K => 0.1,
        DType::Q4_0 | DType::Q4_1 | DType::IQ4_NL | DType::IQ4_XS => 0.12,
        DType::Q3_K => 0.25,
        DType::Q2_K => 0.5,
        other => panic!("no bound for {other}"),
    }
}

fn rel_rms(got: &[f32], want: &[f32]) -> f64 {
    let (mut e, mut n) = (0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        e += (f64::from(g) - f64::from(w)).powi(2);
        n += f64::from(w).powi(2);
    }
    (e / n.max(1e-30)).sqrt()
}

/// Checks every output tensor against the input; returns the output types.
fn check_output(inp: &GgufFile, out: &GgufFile, ftype_id: u32, label: &str) -> Vec<DType> {
    // Metadata: every input key copied, two set.
    for (k, v) in inp.metadata() {
        let got = out
            .get(k)
            .unwrap_or_else(|| panic!("{label}: key {k} not copied"));
        if k != "general.file_type" {
            assert_eq!(got, v, "{label}: key {k}");
        }
    }
    assert_eq!(
        out.get_u32("general.file_type").unwrap(),
        ftype_id,
        "{label}"
    );
    assert_eq!(
        out.get_u32("general.quantization_version").unwrap(),
        2,
        "{label}"
    );
    assert_eq!(out.alignment(), inp.alignment());
    assert_eq!(out.tensors().len(), inp.tensors().len());
    let mut types = Vec::new();
    let mut worst: std::collections::BTreeMap<&str, f64> = Default::default();
    for (ti, to) in inp.tensors().iter().zip(out.tensors()) {
        assert_eq!((&ti.name, &ti.dims), (&to.name, &to.dims), "{label}");
        assert_eq!(
            to.offset % out.alignment(),
            0,
            "{label}: {} misaligned",
            to.name
        );
        let ne0 = ti.dims[0] as usize;
        let a = inp.tensor_data(ti).unwrap();
        let b = out.tensor_data(to).unwrap();
        if ti.dims.len() == 1 {
            assert_eq!(
                (to.dtype, a),
                (ti.dtype, b),
                "{label}: 1-D {} changed",
                ti.name
            );
        }
        if to.dtype == ti.dtype {
            assert_eq!(a, b, "{label}: {} kept its type but not its bytes", ti.name);
        }
        let want = decode(ti.dtype, a, ne0);
        let got = decode(to.dtype, b, ne0);
        let err = rel_rms(&got, &want);
        let bound = rel_rms_bound(to.dtype);
        assert!(
            err <= bound,
            "{label}: {} {} -> {}: rel RMS error {err:.4} > {bound}",
            ti.name,
            ti.dtype,
            to.dtype
        );
        let e = worst.entry(to.dtype.name()).or_default();
        *e = e.max(err);
        types.push(to.dtype);
    }
    eprintln!("{label}: worst rel RMS error per output type {worst:?}");
    types
}

fn type_of(f: &GgufFile, name: &str) -> DType {
    f.tensor(name).unwrap().dtype
}

#[test]
fn quantize_synthetic_model_to_every_type() {
    let seed = kiln_testkit::test_seed();
    eprintln!("quantize_synthetic_model_to_every_type: seed {seed}");
    let dir = tmp_dir("every");
    let inp = dir.join("in.gguf");
    std::fs::write(&inp, synthetic_model(seed)).unwrap();
    let fin = GgufFile::open(&inp).unwrap();
    let k_types = [
        "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S",
    ];
    let all = [
        ("Q8_0", 7),
        ("Q4_0", 2),
        ("Q4_1", 3),
        ("Q5_0", 8),
        ("Q5_1", 9),
        ("Q2_K", 10),
        ("Q3_K_S", 11),
        ("Q3_K_M", 12),
        ("Q3_K_L", 13),
        ("Q4_K_S", 14),
        ("Q4_K_M", 15),
        ("Q5_K_S", 16),
        ("q5_k", 17),
        ("Q6_K", 18),
        ("IQ4_NL", 25),
        ("IQ4_XS", 30),
        ("F16", 1),
        ("BF16", 32),
        ("F32", 0),
    ];
    for (name, id) in all {
        let out = dir.join(format!("out-{name}.gguf"));
        let r = kiln(&["quantize", s(&inp), s(&out), "--type", name, "-t", "2"]);
        assert_ok(&r);
        let stdout = String::from_utf8_lossy(&r.stdout);
        assert!(stdout.contains("quant size"), "{stdout}");
        let f = GgufFile::open(&out).unwrap();
        let types = check_output(&fin, &f, id, name);
        eprintln!("{name}: {types:?}");
        let stderr = String::from_utf8_lossy(&r.stderr);
        let float = matches!(name, "F16" | "BF16" | "F32");
        // Output keeps more bits, except for Q8_0 and float targets.
        let out_t = type_of(&f, "output.weight");
        match name {
            "Q8_0" => assert_eq!(out_t, DType::Q8_0),
            "F16" => assert_eq!(out_t, DType::F16),
            "BF16" => assert_eq!(out_t, DType::BF16),
            "F32" => assert_eq!(out_t, DType::F32),
            _ => assert_eq!(out_t, DType::Q6_K, "{name}"),
        }
        // Row 40 fits no quantized block: F16, and the tool says so.
        let odd = type_of(&f, "extra.odd.weight");
        if float {
            assert_eq!(odd, f.tensor("output.weight").unwrap().dtype);
        } else {
            assert_eq!(odd, DType::F16, "{name}");
            assert!(stderr.contains("extra.odd.weight"), "{name}: {stderr}");
            assert!(stderr.contains("required fallback"), "{name}: {stderr}");
        }
        // Row 96 fits 32-blocks only: the K-quant fallbacks.
        let narrow = type_of(&f, "extra.narrow.weight");
        let want_narrow = match name {
            "Q2_K" | "Q3_K_S" | "Q3_K_M" | "Q3_K_L" => DType::Q4_0,
            "Q4_K_S" | "Q4_K_M" => DType::Q5_0,
            "Q5_K_S" | "q5_k" => DType::Q5_1,
            "Q6_K" => DType::Q8_0,
            "IQ4_XS" => DType::IQ4_NL,
            _ => f.tensor("blk.2.attn_q.weight").unwrap().dtype,
        };
        assert_eq!(narrow, want_narrow, "{name}");
        if k_types.contains(&name) {
            assert_eq!(type_of(&f, "blk.2.attn_q.weight").block_size(), 256);
        }
    }
    // Q4_K_M's documented mixture on 4 layers: use_more_bits(i, 4) holds for
    // i >= 7*4/8 = 3 and for (i - 0) % 3 == 2, i.e. layers 2 and 3.
    let f = GgufFile::open(dir.join("out-Q4_K_M.gguf")).unwrap();
    for l in 0..N_LAYER {
        let more = if l >= 2 { DType::Q6_K } else { DType::Q4_K };
        assert_eq!(
            type_of(&f, &format!("blk.{l}.attn_v.weight")),
            more,
            "layer {l}"
        );
        assert_eq!(
            type_of(&f, &format!("blk.{l}.ffn_down.weight")),
            more,
            "layer {l}"
        );
        assert_eq!(type_of(&f, &format!("blk.{l}.ffn_up.weight")), DType::Q4_K);
        assert_eq!(
            type_of(&f, &format!("blk.{l}.attn_norm.weight")),
            DType::F32
        );
    }
    assert_eq!(type_of(&f, "token_embd.weight"), DType::Q4_K);
    // Q2_K with GQA 4: attn_v Q4_K, ffn_down and attn_output Q3_K.
    let f = GgufFile::open(dir.join("out-Q2_K.gguf")).unwrap();
    assert_eq!(type_of(&f, "blk.1.attn_v.weight"), DType::Q4_K);
    assert_eq!(type_of(&f, "blk.1.ffn_down.weight"), DType::Q3_K);
    assert_eq!(type_of(&f, "blk.1.attn_output.weight"), DType::Q3_K);
    assert_eq!(type_of(&f, "blk.1.ffn_up.weight"), DType::Q2_K);

    // `kiln info` names the file type and summarises the types.
    let r = kiln(&["info", s(&dir.join("out-Q4_K_M.gguf"))]);
    assert_ok(&r);
    let info = String::from_utf8_lossy(&r.stdout);
    assert!(info.contains("file type: Q4_K_M (15)"), "{info}");
    for t in ["Q4_K", "Q6_K", "Q5_0", "F16", "F32", "total", "bits/weight"] {
        assert!(info.contains(t), "info lacks {t}: {info}");
    }

    // --dry-run writes nothing; --pure gives the base type everywhere.
    let out = dir.join("dry.gguf");
    assert_ok(&kiln(&[
        "quantize",
        s(&inp),
        s(&out),
        "--type",
        "Q4_K_M",
        "--dry-run",
    ]));
    assert!(!out.exists());
    let out = dir.join("pure.gguf");
    let r = kiln(&[
        "quantize",
        s(&inp),
        s(&out),
        "--type",
        "Q4_K_M",
        "--pure",
        "--output-tensor-type",
        "q8_0",
    ]);
    assert_ok(&r);
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(type_of(&f, "output.weight"), DType::Q8_0);
    assert_eq!(type_of(&f, "blk.3.attn_v.weight"), DType::Q4_K);
    assert_eq!(type_of(&f, "blk.3.ffn_down.weight"), DType::Q4_K);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn quantize_bad_input() {
    let dir = tmp_dir("bad");
    let inp = dir.join("in.gguf");
    std::fs::write(&inp, synthetic_model(1)).unwrap();
    let out = dir.join("out.gguf");
    let q = |args: &[&str]| {
        let mut v = vec!["quantize"];
        v.extend_from_slice(args);
        kiln(&v)
    };
    assert_clean_error(
        &q(&[s(&inp), s(&out), "--type", "Q7_X"]),
        "unknown quantization type",
    );
    assert_clean_error(
        &q(&[s(&inp), s(&out), "--type", "IQ2_XXS"]),
        "importance matrix",
    );
    for (t, why) in [
        ("IQ2_XS", "importance matrix"),
        ("IQ3_XXS", "no IQ3 quantizer"),
        ("IQ3_S", "no IQ3 quantizer"),
    ] {
        assert_clean_error(&q(&[s(&inp), s(&out), "--type", t]), why);
        assert_clean_error(
            &q(&[
                s(&inp),
                s(&out),
                "--type",
                "Q4_0",
                "--output-tensor-type",
                t,
            ]),
            why,
        );
    }
    assert_clean_error(
        &q(&[s(&inp), s(&inp), "--type", "Q4_0"]),
        "is the input file",
    );
    let again = format!("{}/./in.gguf", dir.display());
    assert_clean_error(
        &q(&[s(&inp), &again, "--type", "Q4_0"]),
        "is the input file",
    );
    assert_clean_error(
        &q(&[
            s(&inp),
            s(&out),
            "--type",
            "Q4_0",
            "--output-tensor-type",
            "Q9",
        ]),
        "unknown GGML type",
    );
    assert_clean_error(
        &q(&[
            s(&inp),
            s(&out),
            "--type",
            "Q4_0",
            "--token-embedding-type",
            "Q8_K",
        ]),
        "activation format",
    );
    let missing = dir.join("missing.gguf");
    assert_clean_error(
        &q(&[s(&missing), s(&out), "--type", "Q4_0"]),
        "missing.gguf",
    );
    let garbage = dir.join("garbage.gguf");
    std::fs::write(&garbage, b"definitely not a GGUF file").unwrap();
    assert_clean_error(&q(&[s(&garbage), s(&out), "--type", "Q4_0"]), "magic");
    let bytes = std::fs::read(&inp).unwrap();
    let cut = dir.join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert_clean_error(&q(&[s(&cut), s(&out), "--type", "Q4_0"]), "GGUF");
    let nodir = dir.join("no/such/dir/out.gguf");
    assert_clean_error(&q(&[s(&inp), s(&nodir), "--type", "Q4_0"]), "no/such/dir");

    // A NaN weight: the error names the tensor; no output, no temporary.
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", Value::String("llama".into()));
    let mut x = values(2, 256 * 4);
    x[256 * 2 + 5] = f32::INFINITY;
    w.add_tensor(
        "blk.0.attn_q.weight",
        vec![256, 4],
        DType::F32,
        encode(DType::F32, &x, 256),
    )
    .unwrap();
    let nan = dir.join("nan.gguf");
    w.write_file(&nan).unwrap();
    assert_clean_error(
        &q(&[s(&nan), s(&out), "--type", "Q4_K_M"]),
        "blk.0.attn_q.weight' row 2",
    );
    assert_eq!(
        files_in(&dir),
        ["cut.gguf", "garbage.gguf", "in.gguf", "nan.gguf"]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn python_gguf_available() -> bool {
    Command::new("python3")
        .args(["-c", "import gguf, numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// gguf-py reads kiln's output and dequantizes it; kiln's own dequantization
/// (the output converted back to F32 by `kiln quantize`) must agree.
#[test]
fn python_gguf_reads_and_dequantizes_kiln_output() {
    if !python_gguf_available() {
        eprintln!("SKIPPED: python3 with the gguf and numpy packages is not available");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts/fixtures/check_quantized_gguf.py");
    let dir = tmp_dir("python");
    let inp = dir.join("in.gguf");
    std::fs::write(&inp, synthetic_model(kiln_testkit::test_seed())).unwrap();
    for name in [
        "Q4_K_M", "Q3_K_M", "Q2_K", "Q5_K_S", "Q6_K", "Q4_1", "Q5_0", "IQ4_XS", "BF16",
    ] {
        let q = dir.join(format!("{name}.gguf"));
        let d = dir.join(format!("{name}-f32.gguf"));
        assert_ok(&kiln(&["quantize", s(&inp), s(&q), "--type", name]));
        assert_ok(&kiln(&["quantize", s(&q), s(&d), "--type", "F32"]));
        let r = Command::new("python3")
            .args([s(&script), s(&q), s(&d), s(&inp)])
            .output()
            .unwrap();
        let o = String::from_utf8_lossy(&r.stdout);
        eprintln!("{name}:\n{o}{}", String::from_utf8_lossy(&r.stderr));
        assert!(r.status.success(), "{name}: gguf-py check failed:\n{o}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The default model (Q4_1 weights, Q8_0 tied embeddings) to Q8_0: the
/// embeddings are copied, every Q4_1 weight requantized within Q8_0's bound.
#[test]
fn default_model_to_q8_0() {
    let Some(m) = kiln_testkit::default_model() else {
        return;
    };
    let dir = tmp_dir("model");
    let out = dir.join("smollm2-q8_0.gguf");
    let r = kiln(&["quantize", s(&m), s(&out), "--type", "Q8_0"]);
    assert_ok(&r);
    let fin = GgufFile::open(&m).unwrap();
    let f = GgufFile::open(&out).unwrap();
    let types = check_output(&fin, &f, 7, "SmolLM2 Q8_0");
    assert!(types.iter().all(|t| matches!(t, DType::Q8_0 | DType::F32)));
    assert_eq!(
        fin.tensor_data(fin.tensor("token_embd.weight").unwrap())
            .unwrap(),
        f.tensor_data(f.tensor("token_embd.weight").unwrap())
            .unwrap()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
