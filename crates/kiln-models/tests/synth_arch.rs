//! `kiln synth` for the qwen2, qwen2moe, qwen3, qwen3moe, mixtral (llama with experts)
//! and gemma3 architectures: the tiny models of
//! tests/fixtures/synth are rebuilt here with the library and must be the
//! very bytes the fixture script hashed (scripts/fixtures/
//! make_synth_arch_fixtures.py, which made them with the `kiln synth` CLI
//! and had Hugging Face transformers load and run them — the independent
//! check that they are valid GGUFs of those architectures). kiln's qwen2,
//! qwen2moe, qwen3, qwen3moe, Mixtral-style llama and gemma3 forwards (CPU) are held to
//! transformers' logits and greedy tokens there (Mixtral: `MixtralForCausalLM`
//! holding the file's tensors, as transformers has no GGUF mapping for it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_core::gguf::GgufFile;
use kiln_core::DType;
use kiln_models::synth::{write_synthetic, SynthArch, SynthParams, SynthVocab};
use kiln_models::Model;

/// f32 weights and f32 activations on both sides (kiln's CPU matmul keeps
/// float weights' activations in f32): the logits differ by summation
/// order only. Measured (2026-12-06): max |diff| over the top-20 of three
/// prompts 7.5e-6 (qwen2, qwen2moe), 7.1e-6 (qwen3), 6.1e-6 (qwen3moe) and 6.1e-6
/// (mixtral) on logits of O(5); 1e-4 leaves room for other
/// summation orders (threads, SIMD width) and would still catch a wrong
/// norm, pairing or scale (those move logits by O(0.1..1)).
const QWEN3_LOGIT_TOL: f64 = 1e-4;
use std::path::Path;

fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xCBF2_9CE4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    })
}

fn fixture(name: &str) -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../tests/fixtures/synth/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// The params the fixture's CLI flags describe.
fn params(name: &str) -> SynthParams {
    let base = SynthParams {
        arch: SynthArch::Qwen3 { head_dim: 32 },
        name: "synthetic-qwen3-2L-64d-4h2kv-128ff-F32".into(),
        n_layer: 2,
        n_embd: 64,
        n_ff: 128,
        n_head: 4,
        n_head_kv: 2,
        n_rot: 32,
        n_ctx: 256,
        dtype: DType::F32,
        embd_dtype: DType::F32,
        untied: false,
        rope_base: 1e6,
        rms_eps: 1e-6,
        seed: 7,
        pool_rows: None,
        yarn: None,
        sliding_window: None,
    };
    match name {
        "qwen3_tiny" => base,
        "qwen2moe_tiny" => SynthParams {
            arch: SynthArch::Qwen2Moe {
                n_expert: 8,
                n_expert_used: 2,
                n_ff_exp: 64,
                n_ff_shexp: 96,
            },
            name: "synthetic-qwen2moe-2L-64d-4h2kv-128ff-F32".into(),
            n_rot: 16,
            ..base.clone()
        },
        "qwen2yarn_tiny" => SynthParams {
            arch: SynthArch::Qwen2,
            name: "synthetic-qwen2-2L-64d-4h2kv-128ff-F32".into(),
            n_rot: 16,
            rope_base: 10000.0,
            yarn: Some(kiln_core::ops::rope::Yarn {
                factor: 4.0,
                orig_ctx: 64,
                beta_fast: 32.0,
                beta_slow: 1.0,
            }),
            ..base.clone()
        },
        "qwen2_tiny" => SynthParams {
            arch: SynthArch::Qwen2,
            name: "synthetic-qwen2-2L-64d-4h2kv-128ff-F32".into(),
            n_rot: 16,
            ..base
        },
        "qwen3moe_tiny" => SynthParams {
            arch: SynthArch::Qwen3Moe {
                head_dim: 32,
                n_expert: 8,
                n_expert_used: 2,
                n_ff_exp: 64,
            },
            name: "synthetic-qwen3moe-tiny-F32".into(),
            ..base
        },
        "mistral_tiny" => SynthParams {
            arch: SynthArch::Llama,
            name: "synthetic-llama-swa4".into(),
            n_rot: 16,
            rope_base: 10000.0,
            rms_eps: 1e-5,
            sliding_window: Some(4),
            ..base
        },
        "mixtral_tiny" => SynthParams {
            arch: SynthArch::LlamaMoe {
                n_expert: 8,
                n_expert_used: 2,
            },
            name: "synthetic-mixtral-2L-64d-4h2kv-96ff-F32".into(),
            n_ff: 96,
            n_rot: 16,
            rms_eps: 1e-5,
            ..base
        },
        "gemma3_tiny" => SynthParams {
            arch: SynthArch::Gemma3 { head_dim: 32 },
            name: "synthetic-gemma3-7L-64d-4h2kv-128ff-F32".into(),
            n_layer: 7,
            sliding_window: Some(4),
            ..base
        },
        other => panic!("{other}"),
    }
}

#[test]
fn tiny_synth_models_match_their_fixtures() {
    let Some(donor) = kiln_testkit::default_model() else {
        return;
    };
    let vocab = SynthVocab::from_gguf(&donor).unwrap();
    let dir = tempfile_dir("fixtures");
    for name in [
        "qwen2_tiny",
        "qwen2yarn_tiny",
        "qwen2moe_tiny",
        "qwen3_tiny",
        "qwen3moe_tiny",
        "mistral_tiny",
        "mixtral_tiny",
        "gemma3_tiny",
    ] {
        let fx = fixture(name);
        let out = dir.join(format!("{name}.gguf"));
        write_synthetic(&params(name), &vocab, &out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(
            format!("{:016x}", fnv1a64(&bytes)),
            fx["fnv1a64"].as_str().unwrap(),
            "{name}: not the bytes transformers read (re-run the fixture script if synth changed on purpose)"
        );
        let f = GgufFile::open(&out).unwrap();
        let arch = match name.split('_').next().unwrap() {
            "mixtral" | "mistral" => "llama",
            "qwen2yarn" => "qwen2",
            a => a,
        };
        assert_eq!(f.get_str("general.architecture").unwrap(), arch);
        if name == "mistral_tiny" {
            assert_eq!(f.get_u32("llama.attention.sliding_window").unwrap(), 4);
            assert!(f.get("llama.expert_count").is_none());
        } else if arch == "llama" {
            assert_eq!(f.get_u32("llama.expert_count").unwrap(), 8);
            assert!(f.get("llama.expert_feed_forward_length").is_none());
            assert_eq!(
                f.tensor("blk.1.ffn_up_exps.weight").expect("experts").dims,
                vec![64, 96, 8]
            );
        } else if arch == "gemma3" {
            assert_eq!(f.get_u32("gemma3.attention.sliding_window").unwrap(), 4);
            let post = f
                .tensor("blk.6.post_ffw_norm.weight")
                .expect("post-FFN norm");
            assert_eq!(post.dims, vec![64]);
        } else if arch.starts_with("qwen2") {
            assert_eq!(
                f.tensor("blk.1.attn_k.bias").expect("k bias").dims,
                vec![32]
            );
            assert!(f.tensor("blk.1.attn_q_norm.weight").is_none());
        } else {
            let q_norm = f.tensor("blk.1.attn_q_norm.weight").expect("q norm");
            assert_eq!(q_norm.dims, vec![32]);
        }
        check_against_transformers(&out, &fx, name);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// kiln's logits at the last prompt position against transformers' top-20,
/// and its greedy continuation against transformers' (every step compared:
/// the reference margins of these random models are far above the
/// tolerance, checked per step).
fn check_against_transformers(path: &Path, fx: &serde_json::Value, name: &str) {
    let s = kiln::Stream::cpu(2).unwrap();
    let model = Model::load(path, &s, &mut |_, _| {}).unwrap();
    let as_ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let argmax =
        |x: &[f32]| -> u32 { (0..x.len()).fold(0, |b, i| if x[i] > x[b] { i } else { b }) as u32 };
    let mut worst = 0f64;
    // Sliding-window models (window 4) also run with batches of 2 and 1
    // token: their local layers' caches are then rings of 5 and 4 rows,
    // which these 12..17-position runs wrap several times (a batch of 16
    // gives rings of 19 rows, never wrapped here).
    let windowed = (0..model.config.n_layer).any(|l| model.config.layer_window(l).is_some());
    let batches: &[usize] = if windowed { &[16, 2, 1] } else { &[16] };
    for (case, &n_batch) in fx["cases"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| batches.iter().map(move |b| (c, b)))
    {
        let prompt = as_ids(&case["prompt"]);
        let mut st = model.new_state(&s, 64, n_batch, false).unwrap();
        if n_batch < 16 {
            let rows = &st.cache.rows;
            assert!(rows.iter().any(|&r| r == 3 + n_batch), "{rows:?}");
        }
        let logits = model.feed(&s, &mut st, &prompt).unwrap().to_vec();
        let (ids, vals) = (
            as_ids(&case["top_ids"]),
            case["top_logits"].as_array().unwrap(),
        );
        for (&id, v) in ids.iter().zip(vals) {
            let d = (f64::from(logits[id as usize]) - v.as_f64().unwrap()).abs();
            worst = worst.max(d);
            assert!(
                d <= QWEN3_LOGIT_TOL,
                "{prompt:?} (batch {n_batch}): token {id}: diff {d}"
            );
        }
        let (mut next, mut got) = (argmax(&logits), Vec::new());
        for _ in 0..as_ids(&case["greedy"]).len() {
            got.push(next);
            next = argmax(model.feed(&s, &mut st, &[next]).unwrap());
        }
        assert_eq!(
            got,
            as_ids(&case["greedy"]),
            "{prompt:?} (batch {n_batch}): greedy continuation"
        );
        check_cut_back(&model, &s, &mut st, n_batch);
    }
    eprintln!("{name}: top-20 logits within {worst:.2e} of transformers; greedy identical");
}

/// Cut the conversation back and feed the rest again: the last logits
/// must be a fresh state's. A ring cache keeps what it can restore
/// (`State::truncate` returns the tokens kept) and starts over otherwise.
fn check_cut_back(model: &Model, s: &kiln::Stream, st: &mut kiln_models::State, n_batch: usize) {
    let all = st.tokens.clone();
    let held = all.len();
    let mut fresh = model.new_state(s, 64, n_batch, false).unwrap();
    let want = model.feed(s, &mut fresh, &all).unwrap().to_vec();
    let restorable = st.cache.oldest_restorable(held);
    for cut in [held - 1, held - 3, 2] {
        let kept = st.truncate(cut);
        let rings = st.cache.rows.iter().any(|&r| r < 64);
        assert!(
            kept == cut || (rings && kept == 0 && cut < restorable),
            "cut to {cut} of {held} kept {kept} (restorable from {restorable})"
        );
        let got = model.feed(s, st, &all[kept..]).unwrap();
        let d = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            f64::from(d) <= QWEN3_LOGIT_TOL,
            "batch {n_batch}: cut to {cut} (kept {kept}): logits differ by {d}"
        );
    }
}

/// A directory of this process and `test` (tests run in parallel).
fn tempfile_dir(test: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-synth-arch-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn bad_moe_shapes_are_refused() {
    let p = params("qwen3moe_tiny");
    for arch in [
        SynthArch::Qwen3Moe {
            head_dim: 32,
            n_expert: 8,
            n_expert_used: 9,
            n_ff_exp: 64,
        },
        SynthArch::Qwen3Moe {
            head_dim: 32,
            n_expert: 0,
            n_expert_used: 1,
            n_ff_exp: 64,
        },
        SynthArch::Qwen3Moe {
            head_dim: 32,
            n_expert: 8,
            n_expert_used: 2,
            n_ff_exp: 0,
        },
        SynthArch::Qwen3 { head_dim: 31 },
    ] {
        let q = SynthParams { arch, ..p.clone() };
        assert!(q.validate(100).is_err(), "{arch:?}");
    }
}

#[test]
fn a_vocab_only_file_is_a_donor_for_the_same_model() {
    let Some(donor) = kiln_testkit::default_model() else {
        return;
    };
    let vocab = SynthVocab::from_gguf(&donor).unwrap();
    let dir = tempfile_dir("vocab");
    let small = dir.join("vocab.gguf");
    kiln_models::synth::write_vocab(&vocab, &small).unwrap();
    let f = GgufFile::open(&small).unwrap();
    assert_eq!(f.tensors().len(), 0);
    let again = SynthVocab::from_gguf(&small).unwrap();
    assert_eq!(again.n_vocab, vocab.n_vocab);
    assert_eq!(again.kvs, vocab.kvs);
    // The same model bytes from either donor.
    let p = params("qwen3_tiny");
    let (a, b) = (dir.join("a.gguf"), dir.join("b.gguf"));
    write_synthetic(&p, &vocab, &a).unwrap();
    write_synthetic(&p, &again, &b).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    std::fs::remove_dir_all(&dir).ok();
}
