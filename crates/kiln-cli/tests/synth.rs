//! `kiln synth`: a tiny synthetic model made from the default model's
//! vocabulary runs through `kiln run` and `kiln bench` (skipped when the
//! default model is absent); bad shapes and types fail with one `error:`
//! line before anything is written.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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
    let d = std::env::temp_dir().join(format!("kiln-synth-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Non-zero exit, exactly one `error:` line containing `needle`, no panic.
fn assert_clean_error(out: &Output, needle: &str) {
    let err = text(&out.stderr);
    assert!(!out.status.success(), "expected failure; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "want one error line, got: {err}");
    assert!(
        lines[0].contains(needle),
        "error line {:?} lacks {needle:?}",
        lines[0]
    );
}

/// The tiny shape's flags: 2 layers, embd 64, 4 heads of 16, 2 kv heads.
fn tiny(out: &str, vocab: &str, wtype: &str) -> Vec<String> {
    [
        "synth",
        out,
        "--layers",
        "2",
        "--embd",
        "64",
        "--heads",
        "4",
        "--kv-heads",
        "2",
        "--ff",
        "128",
        "--ctx",
        "256",
        "--type",
        wtype,
        "--vocab-from",
        vocab,
        "--seed",
        "7",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn run_kiln(args: &[String]) -> Output {
    kiln(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn synth_model_runs_and_benches() {
    let Some(model) = kiln_testkit::default_model() else {
        eprintln!("SKIPPED: default model missing (scripts/fetch-model.sh fetches it)");
        return;
    };
    let model = model.to_str().unwrap().to_string();
    let out = tmp("tiny-q4_1.gguf");
    let o = out.to_str().unwrap();
    let r = run_kiln(&tiny(o, &model, "Q4_1"));
    assert!(r.status.success(), "synth failed: {}", text(&r.stderr));
    let said = text(&r.stdout);
    assert!(
        said.contains("synth: wrote") && said.contains("vocab 49152"),
        "{said}"
    );

    let info = kiln(&["info", o]);
    assert!(info.status.success(), "{}", text(&info.stderr));
    let info = text(&info.stdout);
    for key in [
        "llama.block_count",
        "tokenizer.ggml.tokens",
        "blk.1.ffn_down.weight",
    ] {
        assert!(info.contains(key), "info lacks {key}: {info}");
    }

    let run = kiln(&[
        "run", "-m", o, "-p", "Hello", "-n", "4", "--temp", "0", "--device", "cpu",
    ]);
    let err = text(&run.stderr);
    assert!(run.status.success(), "run failed: {err}");
    assert!(
        err.contains("generation: 4 tokens") || err.contains("t/s"),
        "{err}"
    );
    assert!(err.contains("t/s"), "run printed no speed: {err}");

    let bench = kiln(&[
        "bench", "-m", o, "-p", "16", "-n", "4", "-r", "1", "--device", "cpu",
    ]);
    let table = text(&bench.stdout);
    assert!(
        bench.status.success(),
        "bench failed: {}",
        text(&bench.stderr)
    );
    assert!(table.contains("t/s"), "{table}");
    assert!(table.contains("pp16") && table.contains("tg4"), "{table}");
    eprintln!("{table}");

    // Same seed, same bytes; another seed, other weights.
    let again = tmp("tiny-q4_1-again.gguf");
    let r = run_kiln(&tiny(again.to_str().unwrap(), &model, "Q4_1"));
    assert!(r.status.success(), "{}", text(&r.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
    let mut args = tiny(again.to_str().unwrap(), &model, "Q4_1");
    *args.last_mut().unwrap() = "8".into();
    assert!(run_kiln(&args).status.success());
    assert_ne!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&again);
}

/// The IQ2/IQ3 i-quants, which kiln reads and runs but cannot quantize
/// to: synth writes random valid blocks (every matrix and the embedding in
/// the format, rows of 256), `info` names the type, and a CPU run and
/// bench go through the i-quant matmul and embedding.
#[test]
fn synth_iq_models_run_on_cpu() {
    let Some(model) = kiln_testkit::default_model() else {
        eprintln!("SKIPPED: default model missing (scripts/fetch-model.sh fetches it)");
        return;
    };
    let model = model.to_str().unwrap().to_string();
    for t in ["IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ3_S"] {
        let out = tmp(&format!("tiny-{}.gguf", t.to_lowercase()));
        let o = out.to_str().unwrap();
        let mut args = tiny(o, &model, t);
        let at = |flag: &str| args.iter().position(|a| a == flag).unwrap() + 1;
        let (e, f) = (at("--embd"), at("--ff"));
        args[e] = "256".into();
        args[f] = "512".into();
        let r = run_kiln(&args);
        assert!(r.status.success(), "{t}: synth failed: {}", text(&r.stderr));
        let info = kiln(&["info", o]);
        assert!(info.status.success(), "{t}: {}", text(&info.stderr));
        assert!(text(&info.stdout).contains(t), "{t}: info lacks the type");
        let run = kiln(&[
            "run", "-m", o, "-p", "Hello", "-n", "4", "--temp", "0", "--device", "cpu",
        ]);
        assert!(
            run.status.success(),
            "{t}: run failed: {}",
            text(&run.stderr)
        );
        let _ = std::fs::remove_file(&out);
    }
}

#[test]
fn bad_shapes_and_types_are_one_line_errors() {
    // A vocabulary file that exists is not needed: the shape is checked first.
    let out = tmp("bad.gguf");
    let o = out.to_str().unwrap();
    let v = "/no/such/vocab.gguf";
    let with = |flag: &str, value: &str| {
        let mut a = tiny(o, v, "Q4_1");
        let i = a.iter().position(|s| s == flag).unwrap();
        a[i + 1] = value.into();
        run_kiln(&a)
    };
    assert_clean_error(
        &with("--kv-heads", "3"),
        "heads 4 is not a multiple of kv-heads 3",
    );
    assert_clean_error(
        &with("--embd", "66"),
        "embd 66 is not a multiple of heads 4",
    );
    assert_clean_error(&with("--type", "Q9_9"), "unknown GGML type");
    // Q4_K packs 256 values per block; embd 64 rows cannot be stored.
    assert_clean_error(&with("--type", "Q4_K"), "blocks of 256");
    assert_clean_error(&with("--ff", "100"), "ff 100");
    assert_clean_error(&with("--layers", "0"), "layers must be positive");
    assert!(!out.exists(), "a failed synth left {o}");
    // A good shape with a missing vocabulary file names it.
    assert_clean_error(&run_kiln(&tiny(o, v, "Q4_1")), v);
    // No --vocab-from and no default model: says where it looked.
    assert_clean_error(&kiln(&["synth", o, "--layers", "2"]), "default model");
    assert!(!out.exists());
}
