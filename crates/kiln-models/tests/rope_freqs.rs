//! A llama GGUF with `rope_freqs.weight` (Llama 3.1 / 3.2 style) loads and
//! runs on the CPU with the factors applied: a kiln-synth'd tiny model is
//! rewritten with the tensor added; factors of 1 give the original logits
//! bit for bit, factors of 2 (half the angle of every pair) change them;
//! the rope op itself is held to transformers' llama3 rope in
//! crates/kiln/tests/rope_multi.rs. On a CUDA stream such a file is refused
//! at load (where there is a GPU).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln::Stream;
use kiln_core::gguf::{GgufFile, GgufWriter};
use kiln_core::DType;
use kiln_models::synth::{write_synthetic, SynthParams, SynthVocab};
use kiln_models::Model;
use std::path::{Path, PathBuf};

/// `src` rewritten with a `rope_freqs.weight` of `factor` everywhere.
fn with_factors(src: &Path, dst: &Path, n: usize, factor: f32) {
    let f = GgufFile::open(src).unwrap();
    let mut w = GgufWriter::new();
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
    let data: Vec<u8> = (0..n).flat_map(|_| factor.to_le_bytes()).collect();
    w.add_tensor("rope_freqs.weight", vec![n as u64], DType::F32, data)
        .unwrap();
    w.write_file(dst).unwrap();
}

fn last_logits(path: &Path, s: &Stream) -> Vec<f32> {
    let m = Model::load(path, s, &mut |_, _| {}).unwrap();
    let mut st = m.new_state(s, 64, 16, false).unwrap();
    m.feed(s, &mut st, &[1, 17, 305, 9, 42, 7])
        .unwrap()
        .to_vec()
}

#[test]
fn rope_freqs_load_and_apply_on_cpu() {
    let Some(donor) = kiln_testkit::default_model() else {
        return;
    };
    let vocab = SynthVocab::from_gguf(&donor).unwrap();
    let dir: PathBuf = std::env::temp_dir().join(format!("kiln-rope-freqs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = SynthParams::tiny(DType::F32);
    let base = dir.join("base.gguf");
    write_synthetic(&p, &vocab, &base).unwrap();
    let (one, two) = (dir.join("one.gguf"), dir.join("two.gguf"));
    with_factors(&base, &one, p.n_rot / 2, 1.0);
    with_factors(&base, &two, p.n_rot / 2, 2.0);
    let s = Stream::cpu(2).unwrap();
    let (l0, l1, l2) = (
        last_logits(&base, &s),
        last_logits(&one, &s),
        last_logits(&two, &s),
    );
    assert!(
        l0.iter().zip(&l1).all(|(a, b)| a.to_bits() == b.to_bits()),
        "factors of 1 changed logits"
    );
    let moved = l0
        .iter()
        .zip(&l2)
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    assert!(moved > 1e-3, "factors of 2 changed nothing ({moved})");
    // A wrong-length factor tensor is refused with the tensor's name.
    let bad = dir.join("bad.gguf");
    with_factors(&base, &bad, p.n_rot / 2 + 1, 1.0);
    let e = match Model::load(&bad, &s, &mut |_, _| {}) {
        Ok(_) => panic!("accepted a rope_freqs of the wrong length"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("rope_freqs"), "{e}");
    if let Ok(gpu) = Stream::cuda(0) {
        let e = match Model::load(&one, &gpu, &mut |_, _| {}) {
            Ok(_) => panic!("rope_freqs accepted on CUDA"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("CPU only"), "{e}");
    } else {
        eprintln!("SKIPPED (CUDA part): no CUDA stream here");
    }
    std::fs::remove_dir_all(&dir).ok();
}
