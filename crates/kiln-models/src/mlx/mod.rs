//! MLX / Hugging Face model directories (what `mlx_lm.convert` writes):
//! `config.json`, `model.safetensors` or shards listed by
//! `model.safetensors.index.json`, `tokenizer.json`, `tokenizer_config.json`
//! (optionally `chat_template.jinja`, `generation_config.json`). Llama-family
//! models only; MLX affine-quantized linears run on the CPU and on CUDA (see
//! [`weights`] for the tensor layout and the RoPE row permutation).

pub mod config;
pub mod hf_tokenizer;
pub mod weights;

use crate::{ModelError, Result};
use kiln_core::safetensors::SafetensorsFile;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

/// Everything read from a directory, before the model is assembled.
pub struct MlxDir {
    pub config: crate::config::ModelConfig,
    pub vocab: crate::tokenizer::VocabSpec,
    pub chat_template: Option<String>,
    pub weights: crate::weights::LlamaWeights,
    /// Parameters (logical weights, not packed words) and stored bytes.
    pub totals: (u64, u64),
}

/// True when `path` looks like a model directory (has `config.json`).
pub fn is_model_dir(path: &Path) -> bool {
    path.is_dir() && path.join("config.json").is_file()
}

fn read_json(path: &Path, required: bool) -> Result<Value> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| ModelError::Config(format!("{}: not valid JSON: {e}", path.display()))),
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(Value::Null),
        Err(e) => Err(ModelError::Core(kiln_core::Error::Io {
            context: format!("reading {}", path.display()),
            source: e,
        })),
    }
}

/// The safetensors files of `dir`: the shards of
/// `model.safetensors.index.json` (its `weight_map` values, each once), else
/// `model.safetensors`.
fn shard_paths(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let v = read_json(&index, true)?;
        let map = v
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| ModelError::Weights(format!("{}: no weight_map", index.display())))?;
        let mut files: Vec<&str> = Vec::new();
        for f in map.values() {
            let f = f.as_str().ok_or_else(|| {
                ModelError::Weights(format!("{}: non-string shard name {f}", index.display()))
            })?;
            if f.contains('/') || f.contains('\\') || f.starts_with('.') {
                return Err(ModelError::Weights(format!(
                    "{}: shard name {f:?} is not a plain file name",
                    index.display()
                )));
            }
            if !files.contains(&f) {
                files.push(f);
            }
        }
        files.sort_unstable();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(ModelError::Weights(format!(
        "{}: neither model.safetensors nor model.safetensors.index.json",
        dir.display()
    )))
}

/// Read a model directory for `stream`'s device.
pub fn load_dir(
    dir: &Path,
    stream: &kiln::Stream,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<MlxDir> {
    let cfg_json = read_json(&dir.join("config.json"), true)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "mlx model".into());
    let config = config::model_config(&cfg_json, &name)?;
    let quant = config::quant_config(&cfg_json)?;
    let tok = read_json(&dir.join("tokenizer.json"), true)?;
    let tc = read_json(&dir.join("tokenizer_config.json"), false)?;
    let gc = read_json(&dir.join("generation_config.json"), false)?;
    let files = hf_tokenizer::HfTokenizerFiles {
        tokenizer: &tok,
        tokenizer_config: &tc,
        config: &cfg_json,
        generation_config: &gc,
    };
    let vocab = hf_tokenizer::vocab_spec(&files, config.n_vocab)?;
    let jinja = std::fs::read_to_string(dir.join("chat_template.jinja")).ok();
    let chat_template = hf_tokenizer::chat_template(&tc, jinja);
    let shards = shard_paths(dir)?
        .into_iter()
        .map(|p| SafetensorsFile::open(p).map(Arc::new))
        .collect::<kiln_core::Result<Vec<_>>>()?;
    let shards = weights::Shards::new(shards)?;
    let tied = config::tied_embeddings(&cfg_json);
    let weights = weights::load_weights(&shards, &quant, &config, tied, stream, progress)?;
    let params = n_params(&weights);
    Ok(MlxDir {
        config,
        vocab,
        chat_template,
        weights,
        totals: (params, shards.totals().1),
    })
}

/// Logical parameter count of the loaded weights (a quantized matrix
/// counts its `rows * cols` values).
fn n_params(w: &crate::weights::LlamaWeights) -> u64 {
    let n = |t: &kiln::Tensor| t.dims().iter().product::<usize>() as u64;
    let layers: u64 = w
        .layers
        .iter()
        .map(|l| {
            [
                &l.attn_norm,
                &l.wq,
                &l.wk,
                &l.wv,
                &l.wo,
                &l.ffn_norm,
                &l.w_gate,
                &l.w_up,
                &l.w_down,
            ]
            .into_iter()
            .map(n)
            .sum::<u64>()
        })
        .sum();
    layers + n(&w.token_embd) + n(&w.output_norm) + w.output.as_ref().map_or(0, n)
}
