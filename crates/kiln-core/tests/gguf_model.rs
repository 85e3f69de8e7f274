//! Parse the real default model (SmolLM2-135M-Instruct Q4_1) if present:
//! tensor table, vocabulary, and how long parsing takes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_core::gguf::GgufFile;
use kiln_core::DType;
use std::path::PathBuf;
use std::time::Instant;

/// Where scripts/fetch-model.sh puts the default model, under $HOME.
const DEFAULT_MODEL: &str = ".cache/kiln/models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Generous bound on open+parse time: the target is < 50 ms (about 100k
/// vocabulary strings), but test machines are shared and loaded, so only a
/// gross regression (e.g. quadratic parsing) should fail here.
const MAX_PARSE_SECONDS: f64 = 2.0;

fn model_path() -> Option<PathBuf> {
    let p = std::env::var_os("KILN_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(DEFAULT_MODEL)
        });
    p.exists().then_some(p)
}

#[test]
fn parses_default_model() {
    let Some(path) = model_path() else {
        eprintln!("SKIPPED parses_default_model: no model at $KILN_MODEL or ~/{DEFAULT_MODEL}");
        return;
    };
    // Best of 3 so page-cache warmup does not count.
    let mut best = f64::MAX;
    let mut file = None;
    for _ in 0..3 {
        let t = Instant::now();
        let f = GgufFile::open(&path).unwrap();
        best = best.min(t.elapsed().as_secs_f64());
        file = Some(f);
    }
    let f = file.unwrap();
    eprintln!(
        "open+parse {}: {:.1} ms (best of 3)",
        path.display(),
        best * 1e3
    );
    assert!(best < MAX_PARSE_SECONDS, "parsing took {best:.3} s");

    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.tensors().len(), 272);
    let tokens = f.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), 49152);
    assert_eq!(f.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
    assert_eq!(f.get_str("tokenizer.ggml.pre").unwrap(), "smollm");
    let merges = f.get_str_array("tokenizer.ggml.merges").unwrap();
    assert!(merges.len() > 40_000, "{} merges", merges.len());
    assert_eq!(f.get_u32("llama.embedding_length").unwrap(), 576);
    assert!(f.get_f32("llama.attention.layer_norm_rms_epsilon").unwrap() > 0.0);

    let emb = f.tensor("token_embd.weight").unwrap();
    assert_eq!(emb.dtype, DType::Q8_0);
    assert_eq!(emb.shape(), vec![49152, 576]);
    assert_eq!(emb.dims, vec![576, 49152]);
    assert_eq!(emb.n_bytes, 49152 * 576 / 32 * 34);
    assert_eq!(f.tensor_data(emb).unwrap().len() as u64, emb.n_bytes);

    let mut total = 0u64;
    for t in f.tensors() {
        assert!(
            matches!(t.dtype, DType::F32 | DType::Q4_1 | DType::Q8_0),
            "{} {}",
            t.name,
            t.dtype
        );
        assert_eq!(t.offset % f.alignment(), 0);
        total += f.tensor_data(t).unwrap().len() as u64;
    }
    assert!(f.data_offset() + total <= f.data().len() as u64);
    eprintln!(
        "v{} alignment {} data at {} | {} keys, {} tensors, {} tokens, {} merges",
        f.version(),
        f.alignment(),
        f.data_offset(),
        f.metadata().len(),
        f.tensors().len(),
        tokens.len(),
        merges.len()
    );
}

/// Reading the model and writing it back with kiln's writer reproduces the
/// file byte for byte (same key order, padding and offsets as the writer
/// that made it).
#[test]
fn rewrite_of_default_model_is_byte_identical() {
    let Some(path) = model_path() else {
        eprintln!("SKIPPED rewrite_of_default_model_is_byte_identical: no model at $KILN_MODEL or ~/{DEFAULT_MODEL}");
        return;
    };
    let f = GgufFile::open(&path).unwrap();
    let mut w = kiln_core::gguf::GgufWriter::new().version(f.version());
    for (k, v) in f.metadata() {
        w.add_kv(k.clone(), v.clone());
    }
    for t in f.tensors() {
        let data = f.tensor_data(t).unwrap().to_vec();
        w.add_tensor(t.name.clone(), t.dims.clone(), t.dtype, data)
            .unwrap();
    }
    let rewritten = w.to_bytes().unwrap();
    let original = f.data();
    if let Some(i) = rewritten.iter().zip(original).position(|(a, b)| a != b) {
        panic!("first difference at byte {i}");
    }
    assert_eq!(rewritten.len(), original.len());
}
