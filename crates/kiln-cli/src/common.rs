//! What the subcommands share: model path resolution, loading with a progress
//! bar, thread and sampling flags.

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use kiln::Stream;
use kiln_core::KvType;
use kiln_models::chat::{chatml, ChatError, ChatMessage};
use kiln_models::sampler::SamplerParams;
use kiln_models::Model;
use std::path::PathBuf;

/// File name of the default model.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// kiln's cache directory: `$KILN_CACHE`, else `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KILN_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("kiln");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("kiln")
}

/// The model to use: `-m`, else `$KILN_MODEL`, else the default model in the cache.
pub fn model_path(m: &Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = m {
        return Ok(p.clone());
    }
    if let Some(p) = std::env::var_os("KILN_MODEL") {
        return Ok(PathBuf::from(p));
    }
    let p = cache_dir().join("models").join(DEFAULT_MODEL_FILE);
    if !p.exists() {
        bail!(
            "no model given and the default model is not at {} (fetch it with scripts/fetch-model.sh, or pass -m FILE)",
            p.display()
        );
    }
    Ok(p)
}

/// Flags every model-running command has.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// Model file (GGUF). Default: the cached SmolLM2-135M-Instruct Q4_1.
    #[arg(short = 'm', long = "model")]
    pub model: Option<PathBuf>,
    /// Threads (default: all cores).
    #[arg(short = 't', long = "threads", default_value_t = 0)]
    pub threads: usize,
    /// Device: auto (the GPU when there is one, else the CPU), cpu, cuda or cuda:N.
    #[arg(long = "device", default_value = "auto")]
    pub device: String,
    /// KV cache element type: f32, f16 or bf16 (llama.cpp's -ctk/-ctv, one
    /// flag for both). 16-bit caches halve the cache's memory and bandwidth.
    #[arg(long = "kv-type", default_value = "f32", value_parser = parse_kv_type)]
    pub kv_type: KvType,
    /// Keep every position of sliding-window layers (Gemma 3's local
    /// layers, Mistral's window) instead of a ring of window + batch - 1
    /// rows (llama.cpp's flag of the same name).
    #[arg(long = "swa-full")]
    pub swa_full: bool,
}

/// `--kv-type`'s value.
pub fn parse_kv_type(s: &str) -> std::result::Result<KvType, String> {
    s.parse::<KvType>().map_err(|e| e.to_string())
}

/// Open the stream `--device` asks for. `auto` falls back to the CPU and says why.
pub fn open_stream(device: &str, threads: usize) -> Result<Stream> {
    match device {
        "auto" => {
            let (s, why) = Stream::best(threads)?;
            if let Some(why) = why {
                eprintln!("kiln: no usable GPU ({why}); running on the CPU");
            }
            Ok(s)
        }
        "cpu" => Ok(Stream::cpu(threads)?),
        "cuda" => Ok(Stream::cuda(0)?),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => Ok(Stream::cuda(i)?),
            _ => bail!("--device {other:?}: expected auto, cpu, cuda or cuda:N"),
        },
    }
}

impl ModelArgs {
    /// Open the stream and load the model, with a progress bar on a terminal.
    pub fn load(&self) -> Result<(Stream, Model)> {
        let path = model_path(&self.model)?;
        if !path.is_file() && !kiln_models::mlx::is_model_dir(&path) {
            bail!(
                "model {} is neither a GGUF file nor a model directory with config.json",
                path.display()
            );
        }
        let stream = open_stream(&self.device, self.threads)?;
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("loading {msg} [{bar:30}] {pos}/{len} layers")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(
            path.file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        let model = Model::load(&path, &stream, &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        })
        .with_context(|| format!("loading {}", path.display()))?;
        bar.finish_and_clear();
        let mut model = model;
        model.kv_type = self.kv_type;
        model.swa_full = self.swa_full;
        Ok((stream, model))
    }
}

/// Sampling flags, named as llama.cpp names them.
#[derive(Args, Clone)]
pub struct SampleArgs {
    /// Temperature; 0 = greedy.
    #[arg(long = "temp", default_value_t = 0.8, allow_negative_numbers = true)]
    pub temp: f32,
    /// Top-k (0 = off).
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: usize,
    /// Top-p (1.0 = off).
    #[arg(long = "top-p", default_value_t = 0.95)]
    pub top_p: f32,
    /// Min-p (0 = off).
    #[arg(long = "min-p", default_value_t = 0.05)]
    pub min_p: f32,
    /// Repetition penalty (1.0 = off).
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Tokens the repetition penalty looks back over.
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    pub repeat_last_n: usize,
    /// RNG seed (default: random).
    #[arg(short = 's', long = "seed")]
    pub seed: Option<u64>,
}

impl SampleArgs {
    pub fn params(&self) -> SamplerParams {
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
        SamplerParams {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed,
        }
    }
}

/// The context size to use: `-c`, or the training context capped at 4096.
pub fn context_size(c: usize, model: &Model) -> usize {
    if c > 0 {
        c
    } else {
        model.config.n_ctx_train.min(4096)
    }
}

/// A conversation rendered with the model's chat template (ChatML when the
/// file has none), ending with the assistant's generation prompt.
pub fn render_chat(model: &Model, msgs: &[ChatMessage]) -> std::result::Result<String, ChatError> {
    match &model.chat_template {
        Some(t) => t.render(msgs, true),
        None => chatml().render(msgs, true),
    }
}
