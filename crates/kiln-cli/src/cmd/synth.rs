//! `kiln synth OUT.gguf`: write a llama-family GGUF (llama, mixtral,
//! qwen2, qwen2moe, qwen3, qwen3moe; shapes by flag or `--preset`) of a given shape and
//! weight type with random weights and a real tokenizer (copied from an
//! existing GGUF), so a benchmark can make its own model. The generator
//! lives in `kiln_models::synth`; this file parses flags and reports.

use crate::common::{cache_dir, DEFAULT_MODEL_FILE};
use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_core::DType;
use kiln_models::synth::{write_synthetic, write_vocab, SynthArch, SynthParams, SynthVocab};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct SynthArgs {
    /// Output GGUF file (written via a temporary file, renamed at the end).
    pub output: PathBuf,
    /// Architecture: llama, mixtral (a `llama` file with routed experts of
    /// width --ff, as llama.cpp writes Mixtral), qwen2 (q/k/v biases), qwen2moe (qwen2 attention,
    /// routed experts plus a gated shared expert), qwen3 (q/k norms, explicit
    /// head dim), qwen3moe (qwen3 attention, routed expert FFNs) or gemma3
    /// (q/k norms, post-attention/FFN norms, GELU, local layers with
    /// --sliding-window, which it requires).
    #[arg(long, default_value = "llama")]
    pub arch: String,
    /// A named shape that replaces every shape flag (layers, embd, heads,
    /// kv-heads, head-dim, ff, experts, ctx, rope base, rms eps):
    /// qwen3moe-30b-a3b, qwen3-0.6b, llama-1b, qwen3moe-tiny.
    #[arg(long)]
    pub preset: Option<String>,
    /// Head dim for qwen3 / qwen3moe / gemma3 (default: embd / heads; llama always
    /// uses embd / heads).
    #[arg(long = "head-dim")]
    pub head_dim: Option<usize>,
    /// mixtral / qwen2moe / qwen3moe: experts per layer.
    #[arg(long, default_value_t = 8)]
    pub experts: usize,
    /// mixtral / qwen2moe / qwen3moe: experts each token uses.
    #[arg(long = "experts-used", default_value_t = 2)]
    pub experts_used: usize,
    /// qwen3moe / qwen2moe: each expert's feed-forward width.
    #[arg(long = "expert-ff", default_value_t = 768)]
    pub expert_ff: usize,
    /// qwen2moe: the shared expert's feed-forward width.
    #[arg(long = "shared-ff", default_value_t = 1024)]
    pub shared_ff: usize,
    /// Transformer blocks.
    #[arg(long, default_value_t = 30)]
    pub layers: usize,
    /// Embedding width (n_embd).
    #[arg(long, default_value_t = 576)]
    pub embd: usize,
    /// Query heads (head dim = embd / heads).
    #[arg(long, default_value_t = 9)]
    pub heads: usize,
    /// Key/value heads (heads must be a multiple).
    #[arg(long = "kv-heads", default_value_t = 3)]
    pub kv_heads: usize,
    /// Feed-forward width (n_ff).
    #[arg(long, default_value_t = 1536)]
    pub ff: usize,
    /// Training context length written to the metadata.
    #[arg(long, default_value_t = 8192)]
    pub ctx: usize,
    /// Rotated dims per head (default: the whole head).
    #[arg(long = "rope-dims")]
    pub rope_dims: Option<usize>,
    /// RoPE frequency base.
    #[arg(long = "rope-base", default_value_t = 100000.0)]
    pub rope_base: f32,
    /// RMSNorm epsilon.
    #[arg(long = "rms-eps", default_value_t = 1e-5)]
    pub rms_eps: f32,
    /// Type of every layer matrix: a GGML type name (F32, F16, BF16, Q4_0,
    /// Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, IQ4_NL, IQ4_XS, ...; IQ2_XXS,
    /// IQ2_XS, IQ3_XXS, IQ3_S as random valid blocks, kiln has no quantizer
    /// for them).
    #[arg(long = "type", short = 'T', default_value = "Q4_1")]
    pub wtype: String,
    /// Type of token_embd (and output when untied); default: --type.
    #[arg(long = "embd-type")]
    pub embd_type: Option<String>,
    /// Write a separate output.weight instead of tying it to token_embd.
    #[arg(long)]
    pub untied: bool,
    /// Copy the tokenizer (tokenizer.* keys) and vocabulary size from this
    /// GGUF. Default: $KILN_MODEL, else the cached default model.
    #[arg(long = "vocab-from")]
    pub vocab_from: Option<PathBuf>,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Draw N random rows per tensor and fill the others with copies of
    /// them (same bytes and formats, rows no longer independent): writes a
    /// benchmark model of a large shape in seconds instead of minutes.
    #[arg(long = "pool-rows")]
    pub pool_rows: Option<usize>,
    /// general.name of the model (default: a name made from the shape).
    #[arg(long)]
    pub name: Option<String>,
    /// YaRN rope scaling with this factor (metadata `rope.scaling.*`;
    /// betas 32 and 1).
    #[arg(long = "yarn-factor")]
    pub yarn_factor: Option<f32>,
    /// YaRN's original context length (default: --ctx).
    #[arg(long = "yarn-orig-ctx")]
    pub yarn_orig_ctx: Option<usize>,
    /// llama / mixtral: every layer attends to the last N keys
    /// (`llama.attention.sliding_window`, as Mistral 7B v0.1); gemma3: the
    /// local layers' window (`gemma3.attention.sliding_window`).
    #[arg(long = "sliding-window")]
    pub sliding_window: Option<usize>,
    /// Write only the donor's tokenizer (no tensors, ~2 MB for the default
    /// model): a small --vocab-from file to carry where the donor is too big.
    #[arg(long = "vocab-only")]
    pub vocab_only: bool,
}

fn ggml_type(flag: &str, s: &str) -> Result<DType> {
    match DType::from_name(s) {
        Some(t) => Ok(t),
        None => bail!("{flag} {s:?}: unknown GGML type"),
    }
}

/// `--vocab-from`, else `$KILN_MODEL`, else the default model in the cache.
fn vocab_path(a: &Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = a {
        return Ok(p.clone());
    }
    if let Some(p) = std::env::var_os("KILN_MODEL") {
        return Ok(PathBuf::from(p));
    }
    let p = cache_dir().join("models").join(DEFAULT_MODEL_FILE);
    if !p.is_file() {
        bail!(
            "no --vocab-from given and the default model is not at {} (fetch it with scripts/fetch-model.sh, or pass --vocab-from FILE)",
            p.display()
        );
    }
    Ok(p)
}

/// Apply `--preset` to the shape flags (real models' shapes; the
/// vocabulary still comes from the donor file).
fn apply_preset(a: &mut SynthArgs) -> Result<()> {
    let Some(name) = a.preset.clone() else {
        return Ok(());
    };
    // (arch, layers, embd, heads, kv, head_dim, ff, experts, used, expert_ff, ctx, base, eps)
    let (arch, l, e, h, kv, hd, ff, ex, used, eff, ctx, base, eps) = match name.as_str() {
        "qwen3moe-30b-a3b" => (
            "qwen3moe", 48, 2048, 32, 4, 128, 6144, 128, 8, 768, 40960, 1e6, 1e-6,
        ),
        "qwen3-0.6b" => (
            "qwen3", 28, 1024, 16, 8, 128, 3072, 0, 0, 0, 40960, 1e6, 1e-6,
        ),
        "llama-1b" => (
            "llama", 16, 2048, 32, 8, 64, 8192, 0, 0, 0, 4096, 500000.0, 1e-5,
        ),
        "qwen3moe-tiny" => ("qwen3moe", 2, 64, 4, 2, 32, 128, 8, 2, 64, 256, 1e6, 1e-6),
        other => bail!(
            "--preset {other:?}: unknown (qwen3moe-30b-a3b, qwen3-0.6b, llama-1b, qwen3moe-tiny)"
        ),
    };
    a.arch = arch.into();
    (a.layers, a.embd, a.heads, a.kv_heads, a.head_dim, a.ff) = (l, e, h, kv, Some(hd), ff);
    (a.experts, a.experts_used, a.expert_ff) = (ex, used, eff);
    (a.ctx, a.rope_base, a.rms_eps, a.rope_dims) = (ctx, base, eps, None);
    Ok(())
}

pub fn run(mut a: SynthArgs) -> Result<()> {
    apply_preset(&mut a)?;
    let dtype = ggml_type("--type", &a.wtype)?;
    let embd_dtype = match &a.embd_type {
        Some(s) => ggml_type("--embd-type", s)?,
        None => dtype,
    };
    let head_dim = match a.arch.as_str() {
        "llama" | "mixtral" | "qwen2" | "qwen2moe" => a.embd.checked_div(a.heads).unwrap_or(0),
        _ => a
            .head_dim
            .unwrap_or_else(|| a.embd.checked_div(a.heads).unwrap_or(0)),
    };
    let arch = match a.arch.as_str() {
        "llama" => SynthArch::Llama,
        "mixtral" => SynthArch::LlamaMoe {
            n_expert: a.experts,
            n_expert_used: a.experts_used,
        },
        "qwen2" => SynthArch::Qwen2,
        "qwen2moe" => SynthArch::Qwen2Moe {
            n_expert: a.experts,
            n_expert_used: a.experts_used,
            n_ff_exp: a.expert_ff,
            n_ff_shexp: a.shared_ff,
        },
        "qwen3" => SynthArch::Qwen3 { head_dim },
        "gemma3" => SynthArch::Gemma3 { head_dim },
        "qwen3moe" => SynthArch::Qwen3Moe {
            head_dim,
            n_expert: a.experts,
            n_expert_used: a.experts_used,
            n_ff_exp: a.expert_ff,
        },
        other => {
            bail!("--arch {other:?}: unknown (llama, mixtral, qwen2, qwen2moe, qwen3, qwen3moe, gemma3)")
        }
    };
    let name = a.name.clone().unwrap_or_else(|| match &a.preset {
        Some(p) => format!("synthetic-{p}-{dtype}"),
        None => format!(
            "synthetic-{}-{}L-{}d-{}h{}kv-{}ff-{}",
            a.arch, a.layers, a.embd, a.heads, a.kv_heads, a.ff, dtype
        ),
    });
    let params = SynthParams {
        arch,
        name,
        n_layer: a.layers,
        n_embd: a.embd,
        n_ff: a.ff,
        n_head: a.heads,
        n_head_kv: a.kv_heads,
        n_rot: a.rope_dims.unwrap_or(head_dim),
        n_ctx: a.ctx,
        dtype,
        embd_dtype,
        untied: a.untied,
        rope_base: a.rope_base,
        rms_eps: a.rms_eps,
        seed: a.seed,
        pool_rows: a.pool_rows,
        sliding_window: a.sliding_window,
        yarn: match a.yarn_factor {
            Some(factor) => Some(kiln_core::ops::rope::Yarn {
                factor,
                orig_ctx: a.yarn_orig_ctx.unwrap_or(a.ctx),
                beta_fast: 32.0,
                beta_slow: 1.0,
            }),
            None => None,
        },
    };
    // Check the shape before reading the donor file, so bad flags fail fast.
    params.validate(1)?;
    let vocab_file = vocab_path(&a.vocab_from)?;
    if !vocab_file.is_file() {
        bail!(
            "vocabulary file {} does not exist or is not a file",
            vocab_file.display()
        );
    }
    let vocab = SynthVocab::from_gguf(&vocab_file)
        .with_context(|| format!("reading the vocabulary of {}", vocab_file.display()))?;
    if a.vocab_only {
        write_vocab(&vocab, &a.output)
            .with_context(|| format!("writing {}", a.output.display()))?;
        println!(
            "synth: wrote the vocabulary of {} ({} tokens) to {}",
            vocab_file.display(),
            vocab.n_vocab,
            a.output.display()
        );
        return Ok(());
    }
    let t0 = Instant::now();
    let s = write_synthetic(&params, &vocab, &a.output)
        .with_context(|| format!("writing {}", a.output.display()))?;
    println!(
        "synth: wrote {} ({}): {} tensors, {:.1} M params, {:.1} MiB of weights, vocab {} from {}, in {:.1} s",
        a.output.display(),
        params.name,
        s.n_tensors,
        s.n_params as f64 / 1e6,
        s.data_bytes as f64 / (1024.0 * 1024.0),
        vocab.n_vocab,
        vocab_file.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
