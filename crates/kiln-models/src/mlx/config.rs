//! `config.json` of a Hugging Face / mlx-lm llama-family directory →
//! [`ModelConfig`], plus the `quantization` entry mlx-lm writes
//! (`{"group_size": 64, "bits": 4, "<module path>": {...} | false, ...}`).

use crate::config::ModelConfig;
use crate::{ModelError, Result};
use serde_json::Value;

/// `model_type` values that are the llama architecture kiln runs.
const LLAMA_TYPES: &[&str] = &["llama", "mistral"];

/// Per-module quantization from `config.json`.
#[derive(Debug, Clone, Default)]
pub struct QuantConfig {
    /// Default `(bits, group_size)` (None: the checkpoint is not quantized).
    pub default: Option<(u32, usize)>,
    /// Overrides keyed by module path (`model.layers.0.mlp.down_proj`);
    /// `None` = that module is not quantized.
    pub overrides: Vec<(String, Option<(u32, usize)>)>,
}

impl QuantConfig {
    /// What the config says for module `path` (no `.weight` suffix).
    pub fn for_module(&self, path: &str) -> Option<(u32, usize)> {
        match self.overrides.iter().find(|(p, _)| p == path) {
            Some((_, q)) => *q,
            None => self.default,
        }
    }
}

fn cfg_err(msg: impl Into<String>) -> ModelError {
    ModelError::Config(format!("config.json: {}", msg.into()))
}

fn usize_of(v: &Value, key: &str) -> Result<Option<usize>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| cfg_err(format!("{key} is {x}, expected a non-negative integer"))),
    }
}

fn req_usize(v: &Value, key: &str) -> Result<usize> {
    usize_of(v, key)?.ok_or_else(|| cfg_err(format!("missing {key}")))
}

fn f32_of(v: &Value, key: &str) -> Result<Option<f32>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_f64()
            .map(|f| Some(f as f32))
            .ok_or_else(|| cfg_err(format!("{key} is {x}, expected a number"))),
    }
}

fn bits_group(v: &Value, what: &str) -> Result<(u32, usize)> {
    let bits = usize_of(v, "bits")?.ok_or_else(|| cfg_err(format!("{what}: missing bits")))?;
    let g =
        usize_of(v, "group_size")?.ok_or_else(|| cfg_err(format!("{what}: missing group_size")))?;
    if let Some(mode) = v.get("mode").and_then(Value::as_str) {
        if mode != "affine" {
            return Err(ModelError::Unsupported(format!(
                "{what}: MLX quantization mode {mode:?} (kiln supports \"affine\")"
            )));
        }
    }
    Ok((bits as u32, g))
}

/// The `quantization` (or `quantization_config`) entry.
pub fn quant_config(v: &Value) -> Result<QuantConfig> {
    let Some(q) = v
        .get("quantization")
        .or_else(|| v.get("quantization_config"))
    else {
        return Ok(QuantConfig::default());
    };
    let Value::Object(m) = q else {
        return Err(cfg_err("quantization is not an object"));
    };
    let mut out = QuantConfig {
        default: Some(bits_group(q, "quantization")?),
        overrides: Vec::new(),
    };
    for (k, val) in m {
        match val {
            Value::Object(_) => out.overrides.push((k.clone(), Some(bits_group(val, k)?))),
            Value::Bool(false) => out.overrides.push((k.clone(), None)),
            _ => {}
        }
    }
    Ok(out)
}

/// Read a llama-family `config.json` into kiln's config.
pub fn model_config(v: &Value, name: &str) -> Result<ModelConfig> {
    let mt = v.get("model_type").and_then(Value::as_str).unwrap_or("");
    if !LLAMA_TYPES.contains(&mt) {
        return Err(ModelError::Unsupported(format!(
            "model_type {mt:?} (MLX directories: supported {})",
            LLAMA_TYPES.join(", ")
        )));
    }
    let n_embd = req_usize(v, "hidden_size")?;
    let n_head = req_usize(v, "num_attention_heads")?;
    let n_head_kv = usize_of(v, "num_key_value_heads")?.unwrap_or(n_head);
    if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
        return Err(cfg_err(format!(
            "num_attention_heads {n_head} must be a positive multiple of num_key_value_heads {n_head_kv}"
        )));
    }
    let head_dim = match usize_of(v, "head_dim")? {
        Some(d) => d,
        None if n_embd % n_head == 0 => n_embd / n_head,
        None => {
            return Err(cfg_err(format!(
                "hidden_size {n_embd} is not a multiple of num_attention_heads {n_head}"
            )))
        }
    };
    if head_dim % 2 != 0 {
        return Err(cfg_err(format!("head dim {head_dim} is odd")));
    }
    let rope_freq_scale = match v.get("rope_scaling") {
        None | Some(Value::Null) => 1.0,
        Some(s) => {
            let ty = s
                .get("rope_type")
                .or_else(|| s.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("?");
            let factor = f32_of(s, "factor")?.unwrap_or(1.0);
            match ty {
                "linear" if factor > 0.0 && factor.is_finite() => 1.0 / factor,
                "default" => 1.0,
                other => {
                    return Err(ModelError::Unsupported(format!(
                        "rope scaling {other:?} with factor {factor}"
                    )))
                }
            }
        }
    };
    let cfg = ModelConfig {
        arch: "llama".into(),
        name: name.to_string(),
        n_layer: req_usize(v, "num_hidden_layers")?,
        n_embd,
        n_ff: req_usize(v, "intermediate_size")?,
        n_head,
        n_head_kv,
        head_dim,
        n_rot: head_dim,
        n_vocab: req_usize(v, "vocab_size")?,
        n_ctx_train: usize_of(v, "max_position_embeddings")?.unwrap_or(2048),
        rope_base: f32_of(v, "rope_theta")?.unwrap_or(10000.0),
        rope_freq_scale,
        rope_yarn: None,
        rms_eps: f32_of(v, "rms_norm_eps")?.unwrap_or(1e-6),
        // mlx-lm runs `mistral` directories through its llama model, which
        // has no sliding window: kiln matches it.
        sliding_window: None,
        arch_params: crate::config::ArchParams::Llama,
    };
    if cfg.n_layer == 0 || cfg.n_embd == 0 || cfg.n_ff == 0 || cfg.n_vocab == 0 {
        return Err(cfg_err(format!("degenerate model shape {cfg:?}")));
    }
    let positive = |x: f32| x.is_finite() && x > 0.0;
    if !positive(cfg.rope_base) || !positive(cfg.rms_eps) {
        return Err(cfg_err(format!(
            "rope_theta {} and rms_norm_eps {} must be finite and positive",
            cfg.rope_base, cfg.rms_eps
        )));
    }
    Ok(cfg)
}

/// `tie_word_embeddings` (HF's default for llama: false).
pub fn tied_embeddings(v: &Value) -> bool {
    v.get("tie_word_embeddings")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_llama_config_and_quantization() {
        let v: Value = serde_json::from_str(
            r#"{"model_type":"llama","hidden_size":64,"num_hidden_layers":2,
            "num_attention_heads":4,"num_key_value_heads":2,"intermediate_size":128,
            "rms_norm_eps":1e-5,"rope_theta":100000.0,"max_position_embeddings":512,
            "vocab_size":100,"tie_word_embeddings":true,
            "quantization":{"group_size":32,"bits":4,
              "model.layers.0.mlp.down_proj":{"group_size":64,"bits":8},
              "lm_head":false}}"#,
        )
        .unwrap();
        let c = model_config(&v, "t").unwrap();
        assert_eq!(
            (c.n_layer, c.n_head_kv, c.head_dim, c.n_vocab),
            (2, 2, 16, 100)
        );
        assert_eq!(
            (c.rope_base, c.rms_eps, c.n_ctx_train),
            (100000.0, 1e-5, 512)
        );
        assert!(tied_embeddings(&v));
        let q = quant_config(&v).unwrap();
        assert_eq!(q.for_module("model.layers.1.mlp.down_proj"), Some((4, 32)));
        assert_eq!(q.for_module("model.layers.0.mlp.down_proj"), Some((8, 64)));
        assert_eq!(q.for_module("lm_head"), None);
        let bad: Value = serde_json::from_str(r#"{"model_type":"gpt_neox"}"#).unwrap();
        assert!(model_config(&bad, "t")
            .unwrap_err()
            .to_string()
            .contains("gpt_neox"));
        let bad: Value =
            serde_json::from_str(r#"{"model_type":"llama","hidden_size":"x"}"#).unwrap();
        assert!(model_config(&bad, "t")
            .unwrap_err()
            .to_string()
            .contains("hidden_size"));
    }
}
