//! Hyper-parameters read from GGUF metadata (`{arch}.*` keys, as llama.cpp
//! names them), with llama.cpp's defaults where a key is optional.

use crate::{ModelError, Result};
use kiln_core::gguf::GgufFile;

/// The architectures kiln runs.
pub const SUPPORTED_ARCHS: &[&str] = &["llama"];

/// A llama-family model's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub arch: String,
    pub name: String,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_rot: usize,
    pub n_vocab: usize,
    pub n_ctx_train: usize,
    pub rope_base: f32,
    /// 1 / linear scaling factor (`{arch}.rope.scaling.factor`), 1.0 when absent.
    pub rope_freq_scale: f32,
    pub rms_eps: f32,
}

fn opt_u32(f: &GgufFile, key: &str) -> Result<Option<usize>> {
    match f.get(key) {
        None => Ok(None),
        Some(v) => v.as_u32().map(|x| Some(x as usize)).ok_or_else(|| {
            ModelError::Config(format!(
                "{key} has type {}, expected an integer",
                v.type_name()
            ))
        }),
    }
}

fn opt_f32(f: &GgufFile, key: &str) -> Result<Option<f32>> {
    match f.get(key) {
        None => Ok(None),
        Some(v) => v.as_f32().map(Some).ok_or_else(|| {
            ModelError::Config(format!(
                "{key} has type {}, expected a float",
                v.type_name()
            ))
        }),
    }
}

fn req_u32(f: &GgufFile, key: &str) -> Result<usize> {
    opt_u32(f, key)?.ok_or_else(|| ModelError::Config(format!("missing metadata key {key}")))
}

impl ModelConfig {
    /// Read and check the config of a GGUF file.
    pub fn from_gguf(f: &GgufFile) -> Result<ModelConfig> {
        let arch = f
            .get_str("general.architecture")
            .map_err(|e| ModelError::Config(e.to_string()))?
            .to_string();
        if !SUPPORTED_ARCHS.contains(&arch.as_str()) {
            return Err(ModelError::Unsupported(format!(
                "architecture '{arch}' (supported: {})",
                SUPPORTED_ARCHS.join(", ")
            )));
        }
        let k = |s: &str| format!("{arch}.{s}");
        let n_layer = req_u32(f, &k("block_count"))?;
        let n_embd = req_u32(f, &k("embedding_length"))?;
        let n_ff = req_u32(f, &k("feed_forward_length"))?;
        let n_head = req_u32(f, &k("attention.head_count"))?;
        let n_head_kv = opt_u32(f, &k("attention.head_count_kv"))?.unwrap_or(n_head);
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(ModelError::Config(format!(
                "head_count {n_head} must be a positive multiple of head_count_kv {n_head_kv}"
            )));
        }
        let head_dim = match opt_u32(f, &k("attention.key_length"))? {
            Some(d) => d,
            None if n_embd % n_head == 0 => n_embd / n_head,
            None => {
                return Err(ModelError::Config(format!(
                    "embedding_length {n_embd} is not a multiple of head_count {n_head}"
                )))
            }
        };
        let n_rot = opt_u32(f, &k("rope.dimension_count"))?.unwrap_or(head_dim);
        if n_rot > head_dim || n_rot % 2 != 0 {
            return Err(ModelError::Config(format!(
                "rope.dimension_count {n_rot} must be even and at most the head dim {head_dim}"
            )));
        }
        let n_vocab = match f.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()) {
            Some(a) => a.len(),
            None => req_u32(f, &k("vocab_size"))?,
        };
        let rope_base = opt_f32(f, &k("rope.freq_base"))?.unwrap_or(10000.0);
        let scaling = f
            .get(&k("rope.scaling.type"))
            .and_then(|v| v.as_str())
            .unwrap_or("none");
        let factor = opt_f32(f, &k("rope.scaling.factor"))?.unwrap_or(1.0);
        let rope_freq_scale = match scaling {
            "none" => 1.0,
            "linear" if factor > 0.0 && factor.is_finite() => 1.0 / factor,
            other => {
                return Err(ModelError::Unsupported(format!(
                    "rope scaling '{other}' with factor {factor}"
                )))
            }
        };
        if f.tensor("rope_freqs.weight").is_some() {
            return Err(ModelError::Unsupported(
                "rope frequency factors (rope_freqs.weight, Llama 3.1 style) are not implemented yet".into(),
            ));
        }
        let cfg = ModelConfig {
            name: f
                .get("general.name")
                .and_then(|v| v.as_str())
                .unwrap_or("unnamed")
                .to_string(),
            n_layer,
            n_embd,
            n_ff,
            n_head,
            n_head_kv,
            head_dim,
            n_rot,
            n_vocab,
            n_ctx_train: opt_u32(f, &k("context_length"))?.unwrap_or(2048),
            rope_base,
            rope_freq_scale,
            rms_eps: opt_f32(f, &k("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5),
            arch,
        };
        if cfg.n_layer == 0 || cfg.n_embd == 0 || cfg.n_ff == 0 || cfg.n_vocab == 0 {
            return Err(ModelError::Config(format!(
                "degenerate model shape {cfg:?}"
            )));
        }
        let positive = |x: f32| x.is_finite() && x > 0.0;
        if !positive(cfg.rope_base) || !positive(cfg.rms_eps) {
            return Err(ModelError::Config(format!(
                "rope.freq_base {} and rms epsilon {} must be finite and positive",
                cfg.rope_base, cfg.rms_eps
            )));
        }
        Ok(cfg)
    }

    /// Width of the q projection output.
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }
    /// Width of the k / v projection outputs.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}
