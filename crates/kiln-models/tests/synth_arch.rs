//! `kiln synth` for the qwen3 and qwen3moe architectures: the tiny models of
//! tests/fixtures/synth are rebuilt here with the library and must be the
//! very bytes the fixture script hashed (scripts/fixtures/
//! make_synth_arch_fixtures.py, which made them with the `kiln synth` CLI
//! and had Hugging Face transformers load and run them — the independent
//! check that they are valid GGUFs of those architectures; its logits wait
//! there for kiln's own qwen3 / qwen3moe forward). kiln's loader refuses
//! both architectures for now, with one clear error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_core::gguf::GgufFile;
use kiln_core::DType;
use kiln_models::config::ModelConfig;
use kiln_models::synth::{write_synthetic, SynthArch, SynthParams, SynthVocab};
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
    };
    match name {
        "qwen3_tiny" => base,
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
        other => panic!("{other}"),
    }
}

#[test]
fn tiny_qwen_models_match_their_fixtures() {
    let Some(donor) = kiln_testkit::default_model() else {
        return;
    };
    let vocab = SynthVocab::from_gguf(&donor).unwrap();
    let dir = tempfile_dir();
    for name in ["qwen3_tiny", "qwen3moe_tiny"] {
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
        let arch = name.split('_').next().unwrap();
        assert_eq!(f.get_str("general.architecture").unwrap(), arch);
        let q_norm = f.tensor("blk.1.attn_q_norm.weight").expect("q norm");
        assert_eq!(q_norm.dims, vec![32]);
        if arch == "qwen3moe" {
            let t = f.tensor("blk.0.ffn_gate_exps.weight").expect("experts");
            assert_eq!(t.dims, vec![64, 64, 8]);
            assert_eq!(
                f.tensor("blk.0.ffn_down_exps.weight").unwrap().dims,
                vec![64, 64, 8]
            );
            assert_eq!(
                f.tensor("blk.0.ffn_gate_inp.weight").unwrap().dims,
                vec![64, 8]
            );
            assert!(f.tensor("blk.0.ffn_gate.weight").is_none());
        }
        let e = ModelConfig::from_gguf(&f).unwrap_err().to_string();
        assert!(e.contains(arch) && !e.contains('\n'), "{e}");
        eprintln!(
            "{name}: {} bytes, fnv {}, refused: {e}",
            bytes.len(),
            fx["fnv1a64"]
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-synth-arch-{}", std::process::id()));
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
