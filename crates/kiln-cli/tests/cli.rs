//! The `kiln` binary on bad input: one `error:` line, non-zero exit, no panic.
//! And on good input with the default model (skipped when it is absent).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_core::gguf::{GgufWriter, Value};
use kiln_core::DType;
use std::path::PathBuf;
use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env_remove("KILN_MODEL")
        .env("KILN_CACHE", "/nonexistent-kiln-cache")
        .output()
        .expect("spawn kiln")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// Assert a clean failure: non-zero exit, stderr has exactly one `error:` line
/// containing `needle`, and no panic or backtrace.
fn assert_clean_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "want one error line, got: {err}");
    assert!(
        lines[0].contains(needle),
        "error line {:?} lacks {needle:?}",
        lines[0]
    );
}

fn default_model() -> Option<PathBuf> {
    kiln_testkit::default_model()
}

#[test]
fn missing_model_file() {
    let out = kiln(&["run", "-m", "/no/such/model.gguf", "-p", "hi"]);
    assert_clean_error(&out, "/no/such/model.gguf");
}

#[test]
fn no_model_and_no_default() {
    let out = kiln(&["run", "-p", "hi"]);
    assert_clean_error(&out, "default model");
}

#[test]
fn corrupt_and_truncated_gguf() {
    let p = tmp("garbage.gguf");
    std::fs::write(&p, b"this is not a gguf file at all, just text").unwrap();
    assert_clean_error(
        &kiln(&["run", "-m", p.to_str().unwrap(), "-p", "hi"]),
        "magic",
    );
    assert_clean_error(&kiln(&["info", p.to_str().unwrap()]), "magic");

    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", Value::String("llama".into()));
    w.add_tensor("t", vec![64], DType::F32, vec![0u8; 256])
        .unwrap();
    let bytes = w.to_bytes().unwrap();
    let p = tmp("truncated.gguf");
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    assert_clean_error(
        &kiln(&["run", "-m", p.to_str().unwrap(), "-p", "hi"]),
        "GGUF",
    );
}

#[test]
fn unsupported_architecture() {
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", Value::String("mamba".into()));
    let p = tmp("mamba.gguf");
    w.write_file(&p).unwrap();
    assert_clean_error(
        &kiln(&["run", "-m", p.to_str().unwrap(), "-p", "hi"]),
        "architecture 'mamba'",
    );
}

/// A Gemma 3 file without its hyper-parameters names the missing key.
#[test]
fn gemma3_without_keys_names_the_key() {
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", Value::String("gemma3".into()));
    let p = tmp("gemma3.gguf");
    w.write_file(&p).unwrap();
    assert_clean_error(
        &kiln(&["run", "-m", p.to_str().unwrap(), "-p", "hi"]),
        "missing metadata key gemma3.block_count",
    );
}

#[test]
fn bad_flag_values() {
    // clap rejects non-numbers itself (exit 2, usage on stderr, no panic)
    let out = kiln(&["run", "-p", "hi", "--temp", "abc"]);
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    // ranges are checked by the sampler before anything loads
    assert_clean_error(
        &kiln(&["run", "-m", "/x.gguf", "-p", "hi", "--top-p", "1.5"]),
        "top",
    );
    assert_clean_error(
        &kiln(&["run", "-m", "/x.gguf", "-p", "hi", "--temp", "-1"]),
        "temp",
    );
    assert_clean_error(&kiln(&["run", "-m", "/x.gguf", "-p", ""]), "empty prompt");
}

#[test]
fn prompt_longer_than_context() {
    let Some(m) = default_model() else { return };
    let long = "word ".repeat(100);
    let out = kiln(&[
        "run",
        "-m",
        m.to_str().unwrap(),
        "-p",
        &long,
        "-c",
        "16",
        "-n",
        "4",
    ]);
    assert_clean_error(&out, "context holds 16");
}

#[test]
fn info_lists_tensors_and_types() {
    let Some(m) = default_model() else { return };
    let out = kiln(&["info", m.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("272 tensors"), "{s}");
    assert!(s.contains("token_embd.weight"));
    assert!(s.contains("Q4_1") && s.contains("Q8_0") && s.contains("bits/weight"));
}

/// Gemma 3 270M: `kiln info` shows its gemma3.* metadata and K-quant /
/// legacy-quant mix; `kiln run` generates with it on the CPU.
#[test]
fn gemma_info_and_run() {
    let Some(m) = kiln_testkit::gemma_model() else {
        return;
    };
    let m = m.to_str().unwrap();
    let out = kiln(&["info", m]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        s.contains("236 tensors") && s.contains("file type: Q4_K_M (15)"),
        "{s}"
    );
    for want in [
        "gemma3.attention.sliding_window",
        "gemma3.attention.key_length",
        "(262144 x String)",
        "blk.0.attn_q_norm.weight",
    ] {
        assert!(s.contains(want), "info lacks {want}: {s}");
    }
    for t in ["Q4_K", "Q5_0", "Q6_K", "Q8_0"] {
        assert!(
            s.lines().any(|l| l.trim_start().starts_with(t)),
            "types lack {t}: {s}"
        );
    }
    let out = kiln(&[
        "run",
        "-m",
        m,
        "-p",
        "Once upon a time, in a small village by the sea,",
        "-n",
        "8",
        "--temp",
        "0",
        "-t",
        "2",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let s = String::from_utf8_lossy(&out.stdout);
    // The reference (tests/fixtures/gemma/model.json) continues with
    // " there lived a man named John."
    assert!(
        s.starts_with("Once upon a time, in a small village by the sea, there lived"),
        "{s}"
    );
}

#[test]
fn greedy_run_says_paris() {
    let Some(m) = default_model() else { return };
    let out = kiln(&[
        "run",
        "-m",
        m.to_str().unwrap(),
        "-p",
        "The capital of France is",
        "-n",
        "12",
        "--temp",
        "0",
        "-t",
        "2",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.starts_with("The capital of France is"), "{s}");
    assert!(s.contains("Paris"), "{s}");
    assert!(err.contains("t/s"), "no speed report: {err}");
}

#[test]
fn chat_two_turns_from_stdin() {
    use std::io::Write;
    use std::process::Stdio;
    let Some(m) = default_model() else { return };
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "chat",
            "-m",
            m.to_str().unwrap(),
            "--temp",
            "0",
            "-n",
            "24",
            "-t",
            "2",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"What is 2+2?\nAnd 3+3?\n/exit\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let s = String::from_utf8_lossy(&out.stdout);
    // Greedy first reply, as transformers gives it (tests/fixtures/model/greedy.json).
    assert!(
        s.contains("The answer to this classic math problem is 4."),
        "first answer: {s}"
    );
    // The second turn reuses the cached conversation: it feeds only the new
    // tokens (end of reply + the new user turn), fewer than the first turn's 37.
    let fed: Vec<usize> = err
        .lines()
        .filter_map(|l| l.strip_prefix('[')?.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(fed.len(), 2, "{err}");
    assert_eq!(fed[0], 37, "{err}");
    assert!(
        fed[1] < 37,
        "second turn re-fed the whole conversation: {err}"
    );
}

/// `kiln selftest --device cpu --quick` runs every case table, SIMD and
/// scalar, and passes.
#[test]
fn selftest_cpu_passes_every_table() {
    let out = kiln(&["selftest", "--device", "cpu", "--quick"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(" 0 failed"), "{text}");
    let v = kiln(&["selftest", "--device", "cpu", "--quick", "-v"]);
    let verbose = String::from_utf8_lossy(&v.stdout);
    for op in [
        "rope_multi",
        "matmul_id",
        "moe_route",
        "moe_combine",
        "gelu_mul",
        "sigmoid_mul",
        "scale",
        "add_rows",
        "rope_factors",
        "attention_window",
        "layer_norm",
        "l2_norm",
        "softcap",
    ] {
        assert!(verbose.contains(op), "{op} not run");
    }
}
