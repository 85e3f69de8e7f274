//! Hyper-parameters read from GGUF metadata (`{arch}.*` keys, as llama.cpp
//! names them), with llama.cpp's defaults where a key is optional.
//!
//! [`ModelConfig::parse`] reads every architecture in [`PARSED_ARCHS`];
//! [`ModelConfig::from_gguf`] also requires one kiln can run
//! ([`SUPPORTED_ARCHS`]). Gemma 3's extra keys land in [`Gemma3Params`]
//! (its forward: `crate::gemma3`; on CUDA see `model::CUDA_ARCHS_ENV`).

use crate::{ModelError, Result};
use kiln_core::gguf::GgufFile;

/// The architectures kiln runs.
pub const SUPPORTED_ARCHS: &[&str] = &["llama", "gemma3", "qwen2", "qwen2moe", "qwen3", "qwen3moe"];

/// The architectures whose hyper-parameters kiln reads.
pub const PARSED_ARCHS: &[&str] = &["llama", "gemma3", "qwen2", "qwen2moe", "qwen3", "qwen3moe"];

/// Architecture-specific hyper-parameters beyond the llama-family shape.
#[derive(Debug, Clone, PartialEq)]
pub enum ArchParams {
    /// Llama family: nothing beyond [`ModelConfig`]'s fields.
    Llama,
    /// Gemma 3 (`gemma3.*`).
    Gemma3(Gemma3Params),
    /// Qwen3 (dense): per-head q/k norms, NeoX RoPE (`crate::qwen3`); also
    /// Qwen2 (q/k/v biases instead of the norms; `ModelConfig::arch` tells).
    Qwen3,
    /// Routed expert FFNs (`crate::qwen3moe`): Qwen3-MoE (Qwen3 attention);
    /// Qwen2-MoE (Qwen2 attention, a gated shared expert, no
    /// renormalisation); Mixtral-style `llama` files with `llama.expert_count`
    /// (llama attention, normal RoPE). `ModelConfig::arch` tells which.
    Moe(MoeParams),
}

/// A mixture-of-experts FFN's shape (`{arch}.expert_*` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoeParams {
    /// `expert_count`.
    pub n_expert: usize,
    /// `expert_used_count`: experts per token.
    pub n_expert_used: usize,
    /// `expert_feed_forward_length`: each expert's hidden width.
    pub n_ff_exp: usize,
    /// Renormalise the chosen experts' softmax weights (Qwen3-MoE: yes;
    /// Qwen2-MoE: no).
    pub norm_topk: bool,
    /// `expert_shared_feed_forward_length`: Qwen2-MoE's always-on shared
    /// expert (gated by a sigmoid of `ffn_gate_inp_shexp · h`), if any.
    pub n_ff_shexp: Option<usize>,
}

impl ArchParams {
    /// The MoE shape, for architectures whose FFNs are experts.
    pub fn moe(&self) -> Option<&MoeParams> {
        match self {
            ArchParams::Moe(m) => Some(m),
            _ => None,
        }
    }
}

/// YaRN's parameters (`{arch}.rope.scaling.*`), with llama.cpp's defaults
/// for the betas; the variants kiln does not implement are refused.
fn yarn_params(
    f: &GgufFile,
    arch: &str,
    factor: f32,
    n_rot: usize,
    base: f32,
) -> Result<kiln_core::ops::rope::Yarn> {
    let k = |s: &str| format!("{arch}.rope.scaling.{s}");
    for (key, default) in [("yarn_ext_factor", None), ("yarn_attn_factor", Some(1.0))] {
        if let Some(v) = opt_f32(f, &k(key))? {
            // ext_factor < 0 means "derive it" (1 for yarn) in llama.cpp.
            let fine = match default {
                Some(d) => v == d,
                None => v < 0.0 || v == 1.0,
            };
            if !fine {
                return Err(ModelError::Unsupported(format!(
                    "yarn with rope.scaling.{key} = {v}"
                )));
            }
        }
    }
    if f.get(&k("yarn_log_multiplier")).is_some() {
        return Err(ModelError::Unsupported(
            "yarn with rope.scaling.yarn_log_multiplier (DeepSeek-style mscale)".into(),
        ));
    }
    let y = kiln_core::ops::rope::Yarn {
        factor,
        orig_ctx: req_u32(f, &k("original_context_length"))?,
        beta_fast: opt_f32(f, &k("yarn_beta_fast"))?.unwrap_or(32.0),
        beta_slow: opt_f32(f, &k("yarn_beta_slow"))?.unwrap_or(1.0),
    };
    // Checks the values (and that the factors exist for this rotation).
    y.factors(n_rot, base)
        .map_err(|e| ModelError::Config(format!("{arch}: {e}")))?;
    Ok(y)
}

/// `n_ff`: `feed_forward_length`, the expert width of Mixtral-style llama
/// files (llama.cpp's converter writes no `expert_feed_forward_length` for
/// them).
fn moe_params(f: &GgufFile, arch: &str, n_ff: usize) -> Result<MoeParams> {
    let k = |s: &str| format!("{arch}.{s}");
    let n_ff_exp = if arch == "llama" {
        opt_u32(f, &k("expert_feed_forward_length"))?.unwrap_or(n_ff)
    } else {
        req_u32(f, &k("expert_feed_forward_length"))?
    };
    let m = MoeParams {
        n_expert: req_u32(f, &k("expert_count"))?,
        n_expert_used: req_u32(f, &k("expert_used_count"))?,
        n_ff_exp,
        // Qwen3-MoE and Mixtral renormalise the chosen experts' weights;
        // Qwen2-MoE does not.
        norm_topk: arch == "qwen3moe" || arch == "llama",
        n_ff_shexp: opt_u32(f, &k("expert_shared_feed_forward_length"))?,
    };
    if m.n_expert == 0
        || m.n_expert > kiln_core::ops::moe_route::MAX_EXPERTS
        || m.n_expert_used == 0
        || m.n_expert_used > m.n_expert.min(kiln_core::ops::moe_route::MAX_TOP_K)
        || m.n_ff_exp == 0
        || m.n_ff_shexp == Some(0)
    {
        return Err(ModelError::Config(format!(
            "{arch}: expert_count {} (1..=512), expert_used_count {} (1..=min(experts, 16)) and \
             expert_feed_forward_length {} must fit",
            m.n_expert, m.n_expert_used, m.n_ff_exp
        )));
    }
    Ok(m)
}

/// Gemma 3's hyper-parameters beyond the llama-family shape, with
/// llama.cpp's values where the GGUF has no key.
///
/// Facts of the architecture that are not parameters (for the forward pass):
/// token embeddings are scaled by sqrt(n_embd); q and k get their own RMSNorm
/// (`attn_q_norm` / `attn_k_norm`, over head_dim) before RoPE; attention and
/// FFN outputs pass a norm (`post_attention_norm` / `post_ffw_norm`) before
/// the residual add; the FFN is GELU(tanh)(gate) * up; the output matrix is
/// tied to `token_embd` (the 270M file has no `output.weight`); llama.cpp's
/// converter stores the RMSNorm weights with Gemma's `1 + w` applied
/// (confirmed against transformers: `crate::gemma3` uses them as read).
#[derive(Debug, Clone, PartialEq)]
pub struct Gemma3Params {
    /// `gemma3.attention.value_length` (v head dim; 256 for every Gemma 3).
    pub head_dim_v: usize,
    /// `gemma3.attention.sliding_window`: tokens a local layer attends to.
    pub sliding_window: usize,
    /// Every `swa_period`-th layer (1-based) attends globally, the others
    /// through the sliding window (Gemma 3: 5 local : 1 global, so 6; the
    /// GGUF has no key for it).
    pub swa_period: usize,
    /// RoPE base of the local (sliding-window) layers: 10 000 (no GGUF key;
    /// the global layers use [`ModelConfig::rope_base`]).
    pub rope_base_local: f32,
    /// Query scale before q·k: 1/sqrt(query_pre_attn_scalar), which is the
    /// head dim except for the 27B model (62 layers: n_embd / n_head).
    pub attn_scale: f32,
    /// `gemma3.final_logit_softcapping` (Gemma 2 style), absent in Gemma 3 files.
    pub final_logit_softcap: Option<f32>,
    /// `gemma3.attn_logit_softcapping` (Gemma 2 style), absent in Gemma 3 files.
    pub attn_logit_softcap: Option<f32>,
}

impl Gemma3Params {
    /// Whether layer `il` (0-based) attends through the sliding window.
    pub fn is_local(&self, il: usize) -> bool {
        !(il + 1).is_multiple_of(self.swa_period)
    }
}

/// A model's shape: the llama-family fields plus [`ArchParams`].
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
    /// YaRN context extension (`rope.scaling.type = yarn`): per-pair
    /// frequency factors plus an attention-scale correction (see
    /// `kiln_core::ops::rope::Yarn`); `rope_freq_scale` is then 1.
    pub rope_yarn: Option<kiln_core::ops::rope::Yarn>,
    pub rms_eps: f32,
    /// Every layer's attention sees only the last `w` keys (itself
    /// included): `llama.attention.sliding_window` (Mistral 7B v0.1's
    /// 4096). None when absent or 0. Gemma 3's per-layer windows are in
    /// its [`ArchParams`] instead.
    pub sliding_window: Option<usize>,
    /// Architecture-specific hyper-parameters.
    pub arch_params: ArchParams,
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

fn arch_of(f: &GgufFile) -> Result<&str> {
    f.get_str("general.architecture")
        .map_err(|e| ModelError::Config(e.to_string()))
}

/// Gemma 3's keys (see [`Gemma3Params`] for the defaults' sources).
fn gemma3_params(
    f: &GgufFile,
    n_layer: usize,
    n_embd: usize,
    n_head: usize,
    head_dim: usize,
) -> Result<Gemma3Params> {
    const GEMMA3_27B_LAYERS: usize = 62;
    const SWA_PERIOD: usize = 6;
    const ROPE_BASE_LOCAL: f32 = 10_000.0;
    let head_dim_v = opt_u32(f, "gemma3.attention.value_length")?.unwrap_or(head_dim);
    let sliding_window = req_u32(f, "gemma3.attention.sliding_window")?;
    if head_dim_v == 0 || sliding_window == 0 {
        return Err(ModelError::Config(format!(
            "gemma3: attention.value_length {head_dim_v} and attention.sliding_window \
             {sliding_window} must be positive"
        )));
    }
    let query_pre_attn_scalar = if n_layer == GEMMA3_27B_LAYERS {
        n_embd / n_head
    } else {
        head_dim
    };
    let softcap = |key: &str| -> Result<Option<f32>> {
        match opt_f32(f, key)? {
            Some(c) if !(c.is_finite() && c > 0.0) => Err(ModelError::Config(format!(
                "{key} {c} must be finite and positive"
            ))),
            c => Ok(c),
        }
    };
    Ok(Gemma3Params {
        head_dim_v,
        sliding_window,
        swa_period: SWA_PERIOD,
        rope_base_local: ROPE_BASE_LOCAL,
        attn_scale: 1.0 / (query_pre_attn_scalar as f32).sqrt(),
        final_logit_softcap: softcap("gemma3.final_logit_softcapping")?,
        attn_logit_softcap: softcap("gemma3.attn_logit_softcapping")?,
    })
}

impl ModelConfig {
    /// The sliding window of layer `l` (`None`: full attention): Gemma 3's
    /// local layers, or every layer of a llama-family file that sets one.
    pub fn layer_window(&self, l: usize) -> Option<usize> {
        match &self.arch_params {
            ArchParams::Gemma3(gp) => gp.is_local(l).then_some(gp.sliding_window),
            _ => self.sliding_window,
        }
    }

    /// Read and check the config of a GGUF file kiln can run.
    pub fn from_gguf(f: &GgufFile) -> Result<ModelConfig> {
        let arch = arch_of(f)?;
        if !SUPPORTED_ARCHS.contains(&arch) {
            let not_yet = if PARSED_ARCHS.contains(&arch) {
                " is not supported yet"
            } else {
                ""
            };
            return Err(ModelError::Unsupported(format!(
                "architecture '{arch}'{not_yet} (supported: {})",
                SUPPORTED_ARCHS.join(", ")
            )));
        }
        Self::parse(f)
    }

    /// Read and check the config of a GGUF file of any architecture in
    /// [`PARSED_ARCHS`], whether kiln can run it or not.
    pub fn parse(f: &GgufFile) -> Result<ModelConfig> {
        let arch = arch_of(f)?.to_string();
        if !PARSED_ARCHS.contains(&arch.as_str()) {
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
        let mut rope_yarn = None;
        let rope_freq_scale = match scaling {
            "none" => 1.0,
            "linear" if factor > 0.0 && factor.is_finite() => 1.0 / factor,
            "yarn" => {
                rope_yarn = Some(yarn_params(f, &arch, factor, n_rot, rope_base)?);
                1.0
            }
            other => {
                return Err(ModelError::Unsupported(format!(
                    "rope scaling '{other}' with factor {factor}"
                )))
            }
        };
        if f.tensor("rope_freqs.weight").is_some() && arch != "llama" {
            return Err(ModelError::Unsupported(format!(
                "rope frequency factors (rope_freqs.weight) in a '{arch}' file"
            )));
        }
        let arch_params = match arch.as_str() {
            "gemma3" => ArchParams::Gemma3(gemma3_params(f, n_layer, n_embd, n_head, head_dim)?),
            "qwen2" | "qwen3" => ArchParams::Qwen3,
            "qwen2moe" | "qwen3moe" => ArchParams::Moe(moe_params(f, &arch, n_ff)?),
            "llama" if f.get("llama.expert_count").is_some() => {
                ArchParams::Moe(moe_params(f, &arch, n_ff)?)
            }
            _ => ArchParams::Llama,
        };
        let cfg = ModelConfig {
            arch_params,
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
            rope_yarn,
            rms_eps: opt_f32(f, &k("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5),
            sliding_window: match arch.as_str() {
                // Only llama-family files apply a model-wide window (Qwen2's
                // config has one that its GGUFs leave off, as llama.cpp does).
                "llama" => opt_u32(f, "llama.attention.sliding_window")?.filter(|&w| w > 0),
                _ => None,
            },
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
    /// The attention logit scale: `1/√head_dim`, times YaRN's `mscale²`
    /// when the file uses YaRN.
    pub fn attn_scale(&self) -> f32 {
        let s = 1.0 / (self.head_dim as f32).sqrt();
        match &self.rope_yarn {
            Some(y) => y.attn_scale(s),
            None => s,
        }
    }

    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }
    /// Width of the k / v projection outputs.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}
