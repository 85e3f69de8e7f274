//! A loaded model: config, weights, tokenizer and chat template, plus the
//! per-conversation [`State`] (KV cache, scratch, tokens in the cache).

use crate::chat::ChatTemplate;
use crate::config::{ArchParams, ModelConfig};
use crate::gemma3::{self, Gemma3Weights};
use crate::kv_cache::{KvCache, KvLayout};
use crate::llama::{self, Batch, LogitsMode, Scratch};
use crate::sampler::{Sampler, SamplerError};
use crate::tokenizer::{Tokenizer, VocabSpec};
use crate::weights::LlamaWeights;
use crate::{ModelError, Result};
use kiln::Stream;
use kiln_core::gguf::GgufFile;
use std::path::Path;
use std::sync::Arc;

/// Default tokens per forward call during prompt processing.
pub const DEFAULT_BATCH: usize = 512;

/// A model ready to run on one stream's device.
pub struct Model {
    pub config: ModelConfig,
    pub weights: LlamaWeights,
    /// What the architecture needs beyond the llama-shaped weights.
    pub arch_weights: ArchWeights,
    pub tokenizer: Tokenizer,
    /// The file's chat template, if it has one.
    pub chat_template: Option<ChatTemplate>,
    /// The GGUF file (`None` for an MLX / Hugging Face directory).
    pub file: Option<Arc<GgufFile>>,
    /// Elements and bytes of every stored tensor (for reports).
    pub totals: (u64, u64),
    /// Element type of the KV caches [`Model::new_state`] makes (f32 unless
    /// set: `--kv-type`).
    pub kv_type: kiln_core::KvType,
    /// Give sliding-window layers `n_ctx` rows instead of a ring
    /// (`crate::kv_cache`; `--swa-full`, as llama.cpp names it).
    pub swa_full: bool,
}

/// Per-architecture weights beyond [`LlamaWeights`], and so which forward
/// pass runs.
pub enum ArchWeights {
    /// `llama::forward`.
    Llama,
    /// `gemma3::forward` with Gemma 3's extra norms.
    Gemma3(Gemma3Weights),
    /// `qwen3::forward` with the per-head q/k norms.
    Qwen3(crate::qwen3::Qwen3Weights),
    /// `qwen3moe::forward`: q/k norms and the experts.
    Qwen3Moe(crate::qwen3moe::Qwen3MoeWeights),
}

/// Set to `1` to load the architectures whose CUDA composition has not been
/// checked on a GPU yet (gemma3, qwen2moe, mixtral) on a CUDA stream.
pub const CUDA_ARCHS_ENV: &str = "KILN_CUDA_ARCHS";

/// Architectures of the qwen3 / gemma3 forwards checked end to end on a
/// GPU: a kiln-synth'd model's 24 greedy tokens from CUDA graphs equal the
/// CPU's on an H100 (qwen2 F32 and Q5_K, qwen3 Q4_K with the fused QKV
/// decode, qwen3moe F32 and Q4_K; 2026-12-07, docs/perf.md §16, §18, §21).
const VERIFIED_ON_GPU: &[&str] = &["qwen2", "qwen3", "qwen3moe"];

/// Refuse `arch` on a non-CPU stream unless [`CUDA_ARCHS_ENV`] is `1`:
/// every op these forwards use has a CUDA kernel with parity tests, but the
/// forwards themselves have not been checked end to end on a GPU.
pub(crate) fn check_unverified_on_gpu(arch: &str, device: &Stream) -> Result<()> {
    if device.device() == kiln::Device::Cpu
        || VERIFIED_ON_GPU.contains(&arch)
        || std::env::var_os(CUDA_ARCHS_ENV).is_some_and(|v| v == "1")
    {
        return Ok(());
    }
    Err(ModelError::Unsupported(format!(
        "{arch} on {} has not been verified on a GPU yet: use --device cpu \
         (or set {CUDA_ARCHS_ENV}=1 to try it)",
        device.device()
    )))
}

fn vocab_spec(f: &GgufFile) -> Result<VocabSpec> {
    let tk = |e: kiln_core::Error| ModelError::Config(format!("tokenizer: {e}"));
    let opt_u32 = |key: &str| f.get(key).and_then(|v| v.as_u32());
    let opt_bool = |key: &str| f.get(key).and_then(|v| v.as_bool());
    Ok(VocabSpec {
        model: f.get_str("tokenizer.ggml.model").map_err(tk)?.to_string(),
        pre: f
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.as_str())
            .map(str::to_string),
        tokens: f
            .get_str_array("tokenizer.ggml.tokens")
            .map_err(tk)?
            .into_iter()
            .map(str::to_string)
            .collect(),
        scores: f
            .get("tokenizer.ggml.scores")
            .map(|_| f.get_f32_array("tokenizer.ggml.scores"))
            .transpose()
            .map_err(tk)?,
        token_types: f
            .get("tokenizer.ggml.token_type")
            .map(|_| f.get_i32_array("tokenizer.ggml.token_type"))
            .transpose()
            .map_err(tk)?,
        merges: f
            .get("tokenizer.ggml.merges")
            .map(|_| {
                f.get_str_array("tokenizer.ggml.merges")
                    .map(|v| v.into_iter().map(str::to_string).collect())
            })
            .transpose()
            .map_err(tk)?,
        bos: opt_u32("tokenizer.ggml.bos_token_id"),
        eos: opt_u32("tokenizer.ggml.eos_token_id"),
        unk: opt_u32("tokenizer.ggml.unknown_token_id"),
        pad: opt_u32("tokenizer.ggml.padding_token_id"),
        eot: opt_u32("tokenizer.ggml.eot_token_id"),
        add_bos: opt_bool("tokenizer.ggml.add_bos_token"),
        add_eos: opt_bool("tokenizer.ggml.add_eos_token"),
        add_space_prefix: opt_bool("tokenizer.ggml.add_space_prefix"),
    })
}

impl Model {
    /// Open a GGUF file, or an MLX / Hugging Face model directory (see
    /// [`crate::mlx`]), and load it for `stream`'s device.
    pub fn load(
        path: &Path,
        stream: &Stream,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Model> {
        if path.is_dir() {
            let d = crate::mlx::load_dir(path, stream, progress)?;
            return Self::assemble(
                d.config,
                d.vocab,
                d.chat_template,
                (d.weights, ArchWeights::Llama),
                None,
                d.totals,
            );
        }
        let file = Arc::new(GgufFile::open(path)?);
        let config = ModelConfig::from_gguf(&file)?;
        let vocab = vocab_spec(&file)?;
        let template = file
            .get("tokenizer.chat_template")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let arch_weights = match config.arch_params {
            ArchParams::Llama => ArchWeights::Llama,
            ArchParams::Gemma3(_) => {
                ArchWeights::Gemma3(Gemma3Weights::load(&file, &config, stream)?)
            }
            ArchParams::Qwen3 => {
                ArchWeights::Qwen3(crate::qwen3::Qwen3Weights::load(&file, &config, stream)?)
            }
            ArchParams::Moe(_) => ArchWeights::Qwen3Moe(crate::qwen3moe::Qwen3MoeWeights::load(
                &file, &config, stream,
            )?),
        };
        let weights = LlamaWeights::load(&file, &config, stream, progress)?;
        let totals = file
            .tensors()
            .iter()
            .fold((0, 0), |(p, b), t| (p + t.n_elements(), b + t.n_bytes));
        Self::assemble(
            config,
            vocab,
            template,
            (weights, arch_weights),
            Some(file),
            totals,
        )
    }

    fn assemble(
        config: ModelConfig,
        vocab: VocabSpec,
        template: Option<String>,
        (weights, arch_weights): (LlamaWeights, ArchWeights),
        file: Option<Arc<GgufFile>>,
        totals: (u64, u64),
    ) -> Result<Model> {
        let tokenizer = Tokenizer::from_spec(vocab)?;
        if tokenizer.n_vocab() != config.n_vocab {
            return Err(ModelError::Config(format!(
                "vocabulary has {} tokens, the model {}",
                tokenizer.n_vocab(),
                config.n_vocab
            )));
        }
        let text = |id: Option<u32>| {
            id.and_then(|i| tokenizer.token_text(i))
                .unwrap_or("")
                .to_string()
        };
        let chat_template = match template {
            Some(src) => Some(ChatTemplate::new(
                &src,
                &text(tokenizer.bos()),
                &text(tokenizer.eos()),
            )?),
            // Gemma files may carry no template; Gemma's own turn format then.
            None if matches!(config.arch_params, ArchParams::Gemma3(_)) => {
                Some(crate::chat::gemma_turns()?)
            }
            None => None,
        };
        Ok(Model {
            config,
            weights,
            arch_weights,
            tokenizer,
            chat_template,
            file,
            totals,
            kv_type: kiln_core::KvType::F32,
            swa_full: false,
        })
    }

    /// The cache layout of a state of `n_ctx` positions fed at most
    /// `n_batch` tokens at a time (rings for sliding-window layers unless
    /// [`Model::swa_full`]).
    pub fn kv_layout(&self, n_ctx: usize, n_batch: usize) -> KvLayout {
        KvLayout {
            n_ctx,
            n_batch: n_batch.min(n_ctx),
            windows: (0..self.config.n_layer)
                .map(|l| self.config.layer_window(l))
                .collect(),
            window_rings: !self.swa_full,
            kv_type: self.kv_type,
        }
    }

    /// A fresh conversation state with a context of `n_ctx` tokens (KV
    /// caches of [`Model::kv_type`], laid out by [`Model::kv_layout`]).
    pub fn new_state(
        &self,
        stream: &Stream,
        n_ctx: usize,
        n_batch: usize,
        all_logits: bool,
    ) -> Result<State> {
        if n_ctx == 0 || n_batch == 0 {
            return Err(ModelError::Input(format!(
                "context ({n_ctx}) and batch ({n_batch}) must be positive"
            )));
        }
        let n_batch = n_batch.min(n_ctx);
        Ok(State {
            cache: KvCache::new(stream, &self.config, &self.kv_layout(n_ctx, n_batch))?,
            scratch: Scratch::new(stream, &self.config, n_batch, all_logits)?,
            tokens: Vec::with_capacity(n_ctx),
            logits: Vec::new(),
            graph: None,
        })
    }

    /// Feed `tokens` after what the state already holds, in batches. Returns
    /// the logits of the last token.
    pub fn feed<'s>(
        &self,
        stream: &Stream,
        st: &'s mut State,
        tokens: &[u32],
    ) -> Result<&'s [f32]> {
        self.eval(stream, st, tokens)?;
        stream.synchronize()?;
        let v = self.config.n_vocab;
        st.scratch.logits.read_f32(stream, v, &mut st.logits)?;
        Ok(&st.logits)
    }

    /// [`Model::feed`] that returns only the most likely next token (greedy
    /// decoding), chosen on the device: one word comes back instead of the
    /// logits.
    pub fn feed_greedy(&self, stream: &Stream, st: &mut State, tokens: &[u32]) -> Result<u32> {
        self.eval(stream, st, tokens)?;
        Ok(kiln::ops::argmax(
            stream,
            &st.scratch.logits,
            self.config.n_vocab,
        )?)
    }

    /// [`Model::feed`] followed by [`Model::sample_logits`]: one word comes
    /// back instead of the logits. Does not record the token.
    pub fn feed_sample(
        &self,
        stream: &Stream,
        st: &mut State,
        tokens: &[u32],
        sampler: &mut Sampler,
    ) -> Result<u32> {
        self.eval(stream, st, tokens)?;
        self.sample_logits(stream, st, sampler)
    }

    /// `sampler`'s chain on the last logits the state computed, where they
    /// are (`kiln::ops::sample`; on a GPU only the id comes back): the
    /// token [`Sampler::sample`] would pick from them, consuming the same
    /// draw of the sampler's stream. Does not record the token.
    pub fn sample_logits(&self, stream: &Stream, st: &State, sampler: &mut Sampler) -> Result<u32> {
        let n_vocab = self.config.n_vocab;
        let u = sampler.next_draw();
        let p = sampler.op_params(n_vocab);
        let id =
            kiln::ops::sample::sample_id(stream, &p, &st.scratch.logits, sampler.penalty_ids(), u)?;
        if id == kiln::ops::sample::NO_TOKEN {
            return Err(SamplerError::NoFiniteLogits { n_vocab }.into());
        }
        Ok(id)
    }

    /// Enqueue the forward passes for `tokens` (batches of the state's
    /// size; single tokens as the recorded decode graph where enabled). The
    /// last token's logits are left in `st.scratch.logits`; nothing is
    /// synchronized.
    pub fn eval(&self, stream: &Stream, st: &mut State, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Err(ModelError::Input(
                "nothing to feed: empty token list".into(),
            ));
        }
        let needed = st.tokens.len() + tokens.len();
        if needed > st.cache.n_ctx {
            return Err(ModelError::ContextFull {
                needed,
                n_ctx: st.cache.n_ctx,
            });
        }
        for chunk in tokens.chunks(st.scratch.n_batch) {
            let pos0 = st.tokens.len();
            // Every forward (llama, qwen3 and its MoE kinds, gemma3) reads
            // its position from the device (`Batch::device_pos`) and keeps
            // routing ids there, so single tokens replay a recorded step.
            if chunk.len() == 1 && stream.graphs_enabled() {
                self.decode_graph(stream, st, chunk, pos0)?;
            } else {
                self.forward(
                    stream,
                    &mut st.cache,
                    &mut st.scratch,
                    &Batch {
                        tokens: chunk,
                        pos0,
                        mode: LogitsMode::Last,
                        device_pos: false,
                    },
                )?;
            }
            st.tokens.extend_from_slice(chunk);
        }
        Ok(())
    }

    /// One decode step as a CUDA graph: replay the state's recorded step
    /// after staging the token id and position on the device; or, the first
    /// time (or after a device buffer moved), run the step eagerly with
    /// device-read positions (which also grows every scratch buffer to its
    /// final size) and record the same step for the next tokens.
    fn decode_graph(
        &self,
        stream: &Stream,
        st: &mut State,
        tok: &[u32],
        pos0: usize,
    ) -> Result<()> {
        let positions = [pos0 as i32];
        // A replay skips the ops' host checks: check the token here (the
        // embedding kernel would read past the table otherwise).
        if let Some(&t) = tok.iter().find(|&&t| t as usize >= self.config.n_vocab) {
            return Err(ModelError::Input(format!(
                "token id {t} is out of range (vocabulary of {})",
                self.config.n_vocab
            )));
        }
        if let Some(g) = &st.graph {
            if g.epoch() == stream.graph_epoch() {
                stream.stage_inputs(tok, &positions)?;
                // Staging reallocates nothing once the buffers hold one token,
                // but check: a stale graph must never run.
                if g.epoch() == stream.graph_epoch() {
                    g.launch()?;
                    return Ok(());
                }
            }
        }
        st.graph = None;
        let batch = Batch {
            tokens: tok,
            pos0,
            mode: LogitsMode::Last,
            device_pos: true,
        };
        self.forward(stream, &mut st.cache, &mut st.scratch, &batch)?;
        // The inputs are already on the device (the eager step put them
        // there), so recording copies nothing from the host.
        let (cache, scratch) = (&mut st.cache, &mut st.scratch);
        let g = stream.capture(|| self.forward(stream, cache, scratch, &batch))?;
        st.graph = Some(g);
        Ok(())
    }

    /// The forward pass of the model's architecture (see `llama::forward`).
    fn forward(
        &self,
        stream: &Stream,
        cache: &mut KvCache,
        scratch: &mut Scratch,
        batch: &Batch<'_>,
    ) -> Result<()> {
        let (cfg, w) = (&self.config, &self.weights);
        match &self.arch_weights {
            ArchWeights::Llama => llama::forward(stream, cfg, w, cache, scratch, batch),
            ArchWeights::Gemma3(g) => gemma3::forward(stream, cfg, w, g, cache, scratch, batch),
            ArchWeights::Qwen3(q) => {
                crate::qwen3::forward(stream, cfg, w, q, cache, scratch, batch)
            }
            ArchWeights::Qwen3Moe(m) => {
                crate::qwen3moe::forward(stream, cfg, w, m, cache, scratch, batch)
            }
        }
    }

    /// Run one batch and return every token's logits `[tokens.len(), n_vocab]`
    /// (the state must come from `new_state(.., all_logits = true)`).
    pub fn feed_all<'s>(
        &self,
        stream: &Stream,
        st: &'s mut State,
        tokens: &[u32],
    ) -> Result<&'s [f32]> {
        let pos0 = st.tokens.len();
        self.forward(
            stream,
            &mut st.cache,
            &mut st.scratch,
            &Batch {
                tokens,
                pos0,
                mode: LogitsMode::All,
                device_pos: false,
            },
        )?;
        st.tokens.extend_from_slice(tokens);
        stream.synchronize()?;
        let n = tokens.len() * self.config.n_vocab;
        st.scratch.logits.read_f32(stream, n, &mut st.logits)?;
        Ok(&st.logits)
    }
}

/// One conversation: the cache and the tokens it holds.
pub struct State {
    pub cache: KvCache,
    pub scratch: Scratch,
    /// Tokens whose keys/values are in the cache, in order.
    pub tokens: Vec<u32>,
    /// Host copy of the last call's logits.
    pub logits: Vec<f32>,
    /// The recorded CUDA decode step (see `Model::feed`), made on first use.
    pub graph: Option<kiln::Graph>,
}

impl State {
    /// Forget everything after the first `n` tokens (the cache rows beyond are
    /// overwritten by the next feed); returns the tokens kept. A ring cache
    /// (`crate::kv_cache`) may already have overwritten keys the token after
    /// the first `n` would see: then everything is forgotten (0 kept) and
    /// the caller feeds the tokens again.
    pub fn truncate(&mut self, n: usize) -> usize {
        let n = n.min(self.tokens.len());
        let keep = if n >= self.cache.oldest_restorable(self.tokens.len()) {
            n
        } else {
            0
        };
        self.tokens.truncate(keep);
        keep
    }

    /// Keep the longest common prefix with `tokens` and return its length, so a
    /// multi-turn chat only processes what is new.
    pub fn reuse_prefix(&mut self, tokens: &[u32]) -> usize {
        let common = self
            .tokens
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count();
        // Always leave at least one token to feed so there are fresh logits.
        let keep = common.min(tokens.len().saturating_sub(1));
        self.truncate(keep)
    }

    pub fn n_ctx(&self) -> usize {
        self.cache.n_ctx
    }
}
