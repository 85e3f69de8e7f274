//! Synthetic llama-family models (`llama`, `qwen3`, `qwen3moe`, see
//! [`SynthArch`]): a GGUF of a chosen shape and weight type
//! with random weights and a real tokenizer, for benchmarks (`kiln synth`)
//! and tests (`tests/synthetic.rs`), so neither has to ship a model.
//!
//! The file follows the llama GGUF layout llama.cpp writes and
//! [`crate::config`] / [`crate::weights`] read: `general.architecture =
//! llama`, the `llama.*` hyper-parameter keys, the `tokenizer.*` keys copied
//! from a donor vocabulary ([`SynthVocab`]), and the tensors
//! `token_embd.weight`, `blk.{i}.{attn_norm,attn_q,attn_k,attn_v,
//! attn_output,ffn_norm,ffn_gate,ffn_up,ffn_down}.weight`,
//! `output_norm.weight` and (untied) `output.weight`, matrices stored
//! `[rows = outputs, cols = inputs]` (GGUF dims `[cols, rows]`).
//!
//! Weights are drawn uniformly with a chosen standard deviation (uniform in
//! `[-a, a]`, `a = std·√3`), in file order from one generator, then
//! quantized with [`kiln_core::quant::quantize_row`] (the IQ2/IQ3 i-quants,
//! which kiln cannot quantize to: random valid blocks of that standard
//! deviation, see `random_blocks`): linear layers with
//! `std = 1/√fan_in` (like an initialized model: ≈ 0.022 at 2048 inputs),
//! so activations stay O(1) through every layer; embeddings with std
//! `4/√n_embd` ([`EMBD_LOGIT_STD`]); norm weights `1 ± U(0.2·√3)`, around 1 but not all ones, so
//! a skipped multiply shows. [`write_synthetic`] streams the file tensor by
//! tensor (at most one tensor in memory), quantizing rows in parallel.

use crate::{ModelError, Result};
use kiln_core::gguf::{GgufFile, GgufWriter, Value};
use kiln_core::quant::quantize_row;
use kiln_core::DType;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use std::borrow::Cow;
use std::path::Path;

/// Tied logits' standard deviation: embedding entries get std
/// `EMBD_LOGIT_STD / √n_embd` (0.5 at n_embd 64, 0.088 at 2048), so the
/// logits (embedding · normed state, entries ~1) come out O(4) at any width
/// instead of growing with √n_embd into a softmax of one-hot spikes.
pub const EMBD_LOGIT_STD: f32 = 4.0;

/// Standard deviation of Qwen2's q/k/v projection biases (real ones are of
/// the order of the projected values, so a skipped add shows).
const BIAS_STD: f32 = 0.3;

/// Standard deviation of the norm weights' spread around 1.
const NORM_STD: f32 = 0.2;

/// Values generated and quantized per chunk of a streamed tensor (bounds the
/// f32 staging buffer at 16 MiB).
const CHUNK_VALUES: usize = 4 << 20;

/// The architecture a synthetic model is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynthArch {
    /// `llama`: head dim `n_embd / n_head`, dense SwiGLU FFN.
    Llama,
    /// `llama` with experts, as llama.cpp's converter writes Mixtral:
    /// llama attention; every FFN a routed mixture of `n_expert` SwiGLU
    /// experts of width `n_ff` (`feed_forward_length`: no
    /// `expert_feed_forward_length` key), `n_expert_used` per token.
    LlamaMoe {
        n_expert: usize,
        n_expert_used: usize,
    },
    /// `qwen2`: llama's shape plus q/k/v projection biases
    /// (`attn_{q,k,v}.bias`).
    Qwen2,
    /// `qwen2moe`: qwen2 attention; routed experts as in `qwen3moe` plus a
    /// shared expert of width `n_ff_shexp` (`ffn_{gate,up,down}_shexp`)
    /// gated by `ffn_gate_inp_shexp`.
    Qwen2Moe {
        n_expert: usize,
        n_expert_used: usize,
        n_ff_exp: usize,
        n_ff_shexp: usize,
    },
    /// `qwen3`: per-head q/k RMSNorm weights (`attn_q_norm`, `attn_k_norm`),
    /// an explicit head dim (`attention.key_length`), dense FFN.
    Qwen3 { head_dim: usize },
    /// `qwen3moe`: Qwen3 attention; every FFN a routed mixture of
    /// `n_expert` SwiGLU experts of width `n_ff_exp`, `n_expert_used` per
    /// token (`ffn_gate_inp` router, stacked `ffn_{gate,up,down}_exps`).
    Qwen3Moe {
        head_dim: usize,
        n_expert: usize,
        n_expert_used: usize,
        n_ff_exp: usize,
    },
    /// `gemma3`: Qwen3's per-head q/k norms and explicit head dim, plus the
    /// post-attention and post-FFN norms (`post_attention_norm`,
    /// `post_ffw_norm`); a sliding window (`attention.sliding_window`,
    /// required) on five of every six layers; GELU FFN.
    Gemma3 { head_dim: usize },
}

impl SynthArch {
    /// (experts, experts used, expert width, shared-expert width) of the
    /// MoE architectures; `n_ff` is the expert width of [`SynthArch::LlamaMoe`].
    pub fn moe(&self, n_ff: usize) -> Option<(usize, usize, usize, Option<usize>)> {
        match *self {
            SynthArch::LlamaMoe {
                n_expert,
                n_expert_used,
            } => Some((n_expert, n_expert_used, n_ff, None)),
            SynthArch::Qwen3Moe {
                n_expert,
                n_expert_used,
                n_ff_exp,
                ..
            } => Some((n_expert, n_expert_used, n_ff_exp, None)),
            SynthArch::Qwen2Moe {
                n_expert,
                n_expert_used,
                n_ff_exp,
                n_ff_shexp,
            } => Some((n_expert, n_expert_used, n_ff_exp, Some(n_ff_shexp))),
            _ => None,
        }
    }

    /// `general.architecture` and the metadata key prefix.
    pub fn name(&self) -> &'static str {
        match self {
            SynthArch::Llama | SynthArch::LlamaMoe { .. } => "llama",
            SynthArch::Qwen2 => "qwen2",
            SynthArch::Qwen2Moe { .. } => "qwen2moe",
            SynthArch::Qwen3 { .. } => "qwen3",
            SynthArch::Qwen3Moe { .. } => "qwen3moe",
            SynthArch::Gemma3 { .. } => "gemma3",
        }
    }

    /// Per-head q/k norms and an explicit head dim (`attention.key_length`).
    fn qk_norms(&self) -> bool {
        matches!(
            self,
            SynthArch::Qwen3 { .. } | SynthArch::Qwen3Moe { .. } | SynthArch::Gemma3 { .. }
        )
    }
}

/// Shape, formats and seed of a synthetic llama-family model.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthParams {
    pub arch: SynthArch,
    /// `general.name`.
    pub name: String,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Rotated dims per head (`llama.rope.dimension_count`); even, at most
    /// the head dim.
    pub n_rot: usize,
    /// `llama.context_length`.
    pub n_ctx: usize,
    /// Format of every layer matrix (attention and FFN).
    pub dtype: DType,
    /// Format of `token_embd.weight` (and `output.weight` when untied).
    pub embd_dtype: DType,
    /// A separate `output.weight` (else tied to `token_embd`).
    pub untied: bool,
    pub rope_base: f32,
    pub rms_eps: f32,
    /// Seed of the weights' generator ([`write_synthetic`]).
    pub seed: u64,
    /// Draw this many random rows per tensor and fill the rest with copies
    /// of them picked at random (None: every row drawn). For benchmark
    /// models of large shapes (a 30B model's rows take minutes to quantize;
    /// copies take seconds): the bytes and formats are the same, the rows
    /// are no longer independent.
    pub pool_rows: Option<usize>,
    /// YaRN rope scaling written to the metadata (`rope.scaling.*`).
    pub yarn: Option<kiln_core::ops::rope::Yarn>,
    /// `llama.attention.sliding_window` (llama / Mixtral-style files only):
    /// every layer attends to the last `w` keys, as Mistral 7B v0.1.
    pub sliding_window: Option<usize>,
}

impl SynthParams {
    /// A tiny model: 2 layers, n_embd 64, n_ff 96, 4 heads of 16 (2 kv
    /// heads), full rotation, tied output, every matrix in `dtype`.
    pub fn tiny(dtype: DType) -> SynthParams {
        SynthParams {
            arch: SynthArch::Llama,
            name: "synthetic".into(),
            n_layer: 2,
            n_embd: 64,
            n_ff: 96,
            n_head: 4,
            n_head_kv: 2,
            n_rot: 16,
            n_ctx: 256,
            dtype,
            embd_dtype: dtype,
            untied: false,
            rope_base: 10000.0,
            rms_eps: 1e-5,
            seed: 0,
            pool_rows: None,
            yarn: None,
            sliding_window: None,
        }
    }
    /// `n_embd / n_head` for llama (checked by [`SynthParams::validate`]),
    /// the explicit head dim for the Qwen architectures.
    pub fn head_dim(&self) -> usize {
        match self.arch {
            SynthArch::Llama
            | SynthArch::LlamaMoe { .. }
            | SynthArch::Qwen2
            | SynthArch::Qwen2Moe { .. } => self.n_embd.checked_div(self.n_head).unwrap_or(0),
            SynthArch::Qwen3 { head_dim }
            | SynthArch::Qwen3Moe { head_dim, .. }
            | SynthArch::Gemma3 { head_dim } => head_dim,
        }
    }
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim()
    }
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim()
    }

    /// Check the shape describes a llama model the loader accepts and every
    /// matrix row fits its type's block size.
    pub fn validate(&self, n_vocab: usize) -> Result<()> {
        let bad = |m: String| Err(ModelError::Input(format!("synth: {m}")));
        for (what, v) in [
            ("layers", self.n_layer),
            ("embd", self.n_embd),
            ("ff", self.n_ff),
            ("heads", self.n_head),
            ("kv-heads", self.n_head_kv),
            ("ctx", self.n_ctx),
            ("vocab size", n_vocab),
        ] {
            if v == 0 {
                return bad(format!("{what} must be positive"));
            }
        }
        let plain = matches!(
            self.arch,
            SynthArch::Llama
                | SynthArch::LlamaMoe { .. }
                | SynthArch::Qwen2
                | SynthArch::Qwen2Moe { .. }
        );
        if plain && !self.n_embd.is_multiple_of(self.n_head) {
            return bad(format!(
                "embd {} is not a multiple of heads {}",
                self.n_embd, self.n_head
            ));
        }
        if self.head_dim() == 0 || !self.head_dim().is_multiple_of(2) {
            return bad(format!(
                "head dim {} must be even and positive",
                self.head_dim()
            ));
        }
        if let Some((n_expert, n_expert_used, n_ff_exp, _)) = self.arch.moe(self.n_ff) {
            if n_expert == 0 || n_expert > 512 || n_expert_used == 0 || n_expert_used > n_expert {
                return bad(format!(
                    "experts {n_expert} (1..=512) and experts used {n_expert_used} (1..=experts)"
                ));
            }
            if n_ff_exp == 0 || !n_ff_exp.is_multiple_of(self.dtype.block_size()) {
                return bad(format!(
                    "expert ff {n_ff_exp} must be a positive multiple of {}'s block of {}",
                    self.dtype,
                    self.dtype.block_size()
                ));
            }
        }
        if !self.n_head.is_multiple_of(self.n_head_kv) {
            return bad(format!(
                "heads {} is not a multiple of kv-heads {}",
                self.n_head, self.n_head_kv
            ));
        }
        match self.sliding_window {
            Some(0) => return bad("sliding window must be positive".into()),
            Some(_)
                if !matches!(
                    self.arch,
                    SynthArch::Llama | SynthArch::LlamaMoe { .. } | SynthArch::Gemma3 { .. }
                ) =>
            {
                return bad("a sliding window is written for llama and gemma3 files only".into())
            }
            None if matches!(self.arch, SynthArch::Gemma3 { .. }) => {
                return bad("gemma3 needs a sliding window (--sliding-window)".into())
            }
            _ => {}
        }
        if let Some(y) = &self.yarn {
            y.factors(self.n_rot, self.rope_base)
                .map_err(|e| ModelError::Input(format!("synth: {e}")))?;
        }
        let hd = self.head_dim();
        if self.n_rot > hd || !self.n_rot.is_multiple_of(2) {
            return bad(format!(
                "rope dims {} must be even and at most the head dim {hd}",
                self.n_rot
            ));
        }
        if !(self.rope_base > 0.0 && self.rope_base.is_finite()) {
            return bad(format!("rope base {} must be positive", self.rope_base));
        }
        if !(self.rms_eps > 0.0 && self.rms_eps.is_finite()) {
            return bad(format!("rms eps {} must be positive", self.rms_eps));
        }
        // Row lengths: n_embd (q/k/v/gate/up, embeddings), q_dim (wo), n_ff (down).
        for (dtype, what, k) in [
            (self.dtype, "embd", self.n_embd),
            (self.dtype, "ff", self.n_ff),
            (self.dtype, "heads x head dim", self.q_dim()),
            (self.embd_dtype, "embd", self.n_embd),
        ] {
            if !k.is_multiple_of(dtype.block_size()) {
                return bad(format!(
                    "type {dtype} packs rows in blocks of {} values; {what} {k} is not a multiple",
                    dtype.block_size()
                ));
            }
        }
        Ok(())
    }
}

/// How a tensor's values are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Uniform with this standard deviation around 0.
    Uniform { std: f32 },
    /// Norm weights: `1 + U` with U of standard deviation `NORM_STD`.
    Norm,
}

/// One tensor of the synthetic model, before its data is drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    /// GGUF order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    pub dtype: DType,
    pub init: Init,
}

impl TensorSpec {
    /// Row length and row count (a vector is one row; a stack of expert
    /// matrices is all their rows).
    pub fn rows_cols(&self) -> (usize, usize) {
        let cols = self.dims.first().copied().unwrap_or(0) as usize;
        let rows = self.dims.iter().skip(1).product::<u64>() as usize;
        (rows, cols)
    }
}

/// Every tensor of the model, in file (and generation) order.
pub fn tensor_specs(p: &SynthParams, n_vocab: usize) -> Vec<TensorSpec> {
    let d = p.n_embd;
    let mat = |name: String, dtype, rows: usize, cols: usize, std: f32| TensorSpec {
        name,
        dims: vec![cols as u64, rows as u64],
        dtype,
        init: Init::Uniform { std },
    };
    let linear = |name: String, rows, cols: usize| {
        mat(name, p.dtype, rows, cols, 1.0 / (cols as f32).sqrt())
    };
    let norm = |name: String| TensorSpec {
        name,
        dims: vec![d as u64],
        dtype: DType::F32,
        init: Init::Norm,
    };
    let mut out = vec![mat(
        "token_embd.weight".into(),
        p.embd_dtype,
        n_vocab,
        d,
        EMBD_LOGIT_STD / (d as f32).sqrt(),
    )];
    let head_norm = |name: String| TensorSpec {
        name,
        dims: vec![p.head_dim() as u64],
        dtype: DType::F32,
        init: Init::Norm,
    };
    // A stack of `n_expert` matrices `[rows, cols]`: GGUF dims [cols, rows, n_expert].
    let experts = |name: String, n_expert: usize, rows: usize, cols: usize| TensorSpec {
        name,
        dims: vec![cols as u64, rows as u64, n_expert as u64],
        dtype: p.dtype,
        init: Init::Uniform {
            std: 1.0 / (cols as f32).sqrt(),
        },
    };
    for i in 0..p.n_layer {
        let n = |s: &str| format!("blk.{i}.{s}.weight");
        out.push(norm(n("attn_norm")));
        out.push(linear(n("attn_q"), p.q_dim(), d));
        out.push(linear(n("attn_k"), p.kv_dim(), d));
        out.push(linear(n("attn_v"), p.kv_dim(), d));
        out.push(linear(n("attn_output"), d, p.q_dim()));
        if matches!(p.arch, SynthArch::Qwen2 | SynthArch::Qwen2Moe { .. }) {
            let bias = |name: String, len: usize| TensorSpec {
                name,
                dims: vec![len as u64],
                dtype: DType::F32,
                init: Init::Uniform { std: BIAS_STD },
            };
            out.push(bias(format!("blk.{i}.attn_q.bias"), p.q_dim()));
            out.push(bias(format!("blk.{i}.attn_k.bias"), p.kv_dim()));
            out.push(bias(format!("blk.{i}.attn_v.bias"), p.kv_dim()));
        }
        if p.arch.qk_norms() {
            out.push(head_norm(n("attn_q_norm")));
            out.push(head_norm(n("attn_k_norm")));
        }
        if matches!(p.arch, SynthArch::Gemma3 { .. }) {
            out.push(norm(n("post_attention_norm")));
            out.push(norm(n("post_ffw_norm")));
        }
        out.push(norm(n("ffn_norm")));
        if let Some((n_expert, _, n_ff_exp, shexp)) = p.arch.moe(p.n_ff) {
            // The router stays f32 (llama.cpp keeps ffn_gate_inp unquantized).
            out.push(mat(
                n("ffn_gate_inp"),
                DType::F32,
                n_expert,
                d,
                1.0 / (d as f32).sqrt(),
            ));
            out.push(experts(n("ffn_gate_exps"), n_expert, n_ff_exp, d));
            out.push(experts(n("ffn_up_exps"), n_expert, n_ff_exp, d));
            out.push(experts(n("ffn_down_exps"), n_expert, d, n_ff_exp));
            if let Some(fs) = shexp {
                out.push(TensorSpec {
                    name: n("ffn_gate_inp_shexp"),
                    dims: vec![d as u64],
                    dtype: DType::F32,
                    init: Init::Uniform {
                        std: 1.0 / (d as f32).sqrt(),
                    },
                });
                out.push(linear(n("ffn_gate_shexp"), fs, d));
                out.push(linear(n("ffn_up_shexp"), fs, d));
                out.push(linear(n("ffn_down_shexp"), d, fs));
            }
        } else {
            out.push(linear(n("ffn_gate"), p.n_ff, d));
            out.push(linear(n("ffn_up"), p.n_ff, d));
            out.push(linear(n("ffn_down"), d, p.n_ff));
        }
    }
    out.push(norm("output_norm.weight".into()));
    if p.untied {
        let std = 1.0 / (d as f32).sqrt();
        out.push(mat("output.weight".into(), p.embd_dtype, n_vocab, d, std));
    }
    out
}

/// Draw `n` values of `init` (uniform draws in order, so a tensor drawn in
/// chunks equals one drawn whole).
fn draw(rng: &mut impl Rng, init: Init, n: usize, out: &mut Vec<f32>) {
    out.clear();
    match init {
        Init::Uniform { std } => {
            let a = std * 3f32.sqrt();
            out.extend((0..n).map(|_| rng.gen_range(-a..=a)));
        }
        Init::Norm => {
            let a = NORM_STD * 3f32.sqrt();
            out.extend((0..n).map(|_| 1.0 + rng.gen_range(-a..=a)));
        }
    }
}

/// Draw and quantize one tensor's data from `rng` (rows quantized in
/// parallel; the draws stay sequential, so the bytes depend only on the
/// generator's state). With `pool_rows = Some(p)` and more than `p` rows,
/// `p` rows are drawn and every row is a copy of one of them, picked by
/// `rng` ([`SynthParams::pool_rows`]).
pub fn generate_tensor(
    t: &TensorSpec,
    rng: &mut impl Rng,
    pool_rows: Option<usize>,
) -> Result<Vec<u8>> {
    const OP: &str = "synth";
    let (rows, cols) = t.rows_cols();
    let rb = t.dtype.row_bytes(OP, cols)?;
    let total = rows
        .checked_mul(rb)
        .ok_or_else(|| ModelError::Input(format!("synth: tensor {} is too large", t.name)))?;
    let pool = match pool_rows {
        Some(p) if p > 0 && p < rows => p,
        _ => return draw_rows(t, rng, rows, cols, rb, total),
    };
    let src = draw_rows(t, rng, pool, cols, rb, pool * rb)?;
    let mut bytes = vec![0u8; total];
    for row in bytes.chunks_mut(rb.max(1)) {
        let i = rng.gen_range(0..pool);
        row.copy_from_slice(&src[i * rb..(i + 1) * rb]);
    }
    Ok(bytes)
}

/// `rows` freshly drawn and quantized rows of `t` (`total` bytes).
fn draw_rows(
    t: &TensorSpec,
    rng: &mut impl Rng,
    rows: usize,
    cols: usize,
    rb: usize,
    total: usize,
) -> Result<Vec<u8>> {
    if !t.dtype.has_quantizer() {
        return random_blocks(t, rng, total);
    }
    let mut bytes = vec![0u8; total];
    let rows_per_chunk = (CHUNK_VALUES / cols.max(1)).max(1);
    let mut vals = Vec::new();
    for chunk in bytes.chunks_mut(rows_per_chunk * rb.max(1)) {
        let n_rows = chunk.len() / rb.max(1);
        draw(rng, t.init, n_rows * cols, &mut vals);
        vals.par_chunks(cols.max(1))
            .zip(chunk.par_chunks_mut(rb.max(1)))
            .try_for_each(|(x, b)| quantize_row(t.dtype, x, b))?;
    }
    debug_assert_eq!(bytes.len(), rows * rb);
    Ok(bytes)
}

/// The formats kiln cannot quantize to (the IQ2/IQ3 i-quants): random
/// valid blocks, every grid row, sign pattern and sub-block scale equally
/// likely, each block's f16 scale `d` (at offset 0 in all four formats) set
/// so the block's RMS is the init's standard deviation (decode with `d = 1`,
/// then `d = std / rms`). Matrices only (`Init::Uniform`).
fn random_blocks(t: &TensorSpec, rng: &mut impl Rng, total: usize) -> Result<Vec<u8>> {
    const OP: &str = "synth";
    let Init::Uniform { std } = t.init else {
        return Err(kiln_core::Error::UnsupportedDType {
            op: OP,
            dtype: t.dtype,
        }
        .into());
    };
    let (bs, ts) = (t.dtype.block_size(), t.dtype.type_size());
    let mut bytes = vec![0u8; total];
    rng.fill(&mut bytes[..]);
    let mut buf = vec![0.0f32; bs];
    for blk in bytes.chunks_exact_mut(ts) {
        blk[..2].copy_from_slice(&half::f16::ONE.to_le_bytes());
        kiln_core::quant::dequantize_row(t.dtype, blk, &mut buf)?;
        let rms = (buf.iter().map(|v| v * v).sum::<f32>() / bs as f32).sqrt();
        let d = if rms > 0.0 { std / rms } else { 0.0 };
        blk[..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
    }
    Ok(bytes)
}

/// The tokenizer of a synthetic model: the donor's `tokenizer.*` metadata
/// pairs and its vocabulary size.
#[derive(Debug, Clone)]
pub struct SynthVocab {
    pub n_vocab: usize,
    pub kvs: Vec<(String, Value)>,
}

impl SynthVocab {
    /// From `tokenizer.*` pairs; the vocabulary size is the length of
    /// `tokenizer.ggml.tokens`, which must be there.
    pub fn from_kvs(kvs: Vec<(String, Value)>) -> Result<SynthVocab> {
        let n_vocab = kvs
            .iter()
            .find(|(k, _)| k == "tokenizer.ggml.tokens")
            .and_then(|(_, v)| v.as_array())
            .map(<[Value]>::len)
            .ok_or_else(|| {
                ModelError::Input("synth: vocabulary has no tokenizer.ggml.tokens array".into())
            })?;
        Ok(SynthVocab { n_vocab, kvs })
    }

    /// Every `tokenizer.*` pair of an existing GGUF file.
    pub fn from_gguf(path: &Path) -> Result<SynthVocab> {
        let f = GgufFile::open(path)?;
        let kvs = f
            .metadata()
            .iter()
            .filter(|(k, _)| k.starts_with("tokenizer."))
            .cloned()
            .collect();
        SynthVocab::from_kvs(kvs).map_err(|e| {
            ModelError::Input(format!("{e} (in {}: no tokenizer to copy)", path.display()))
        })
    }
}

/// The file's metadata pairs, in order: general, the architecture's
/// hyper-parameters (`{arch}.*`), then the vocabulary's tokenizer pairs.
pub fn metadata(p: &SynthParams, vocab: &SynthVocab) -> Vec<(String, Value)> {
    let u = |v: usize| Value::U32(v as u32);
    let a = p.arch.name();
    let k = |s: &str| format!("{a}.{s}");
    let mut kvs: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(a.into())),
        ("general.name".into(), Value::String(p.name.clone())),
        (k("block_count"), u(p.n_layer)),
        (k("context_length"), u(p.n_ctx)),
        (k("embedding_length"), u(p.n_embd)),
        (k("feed_forward_length"), u(p.n_ff)),
        (k("attention.head_count"), u(p.n_head)),
        (k("attention.head_count_kv"), u(p.n_head_kv)),
        (k("rope.freq_base"), Value::F32(p.rope_base)),
        (k("rope.dimension_count"), u(p.n_rot)),
        (k("attention.layer_norm_rms_epsilon"), Value::F32(p.rms_eps)),
    ];
    if p.arch.qk_norms() {
        kvs.push((k("attention.key_length"), u(p.head_dim())));
        kvs.push((k("attention.value_length"), u(p.head_dim())));
    }
    if let Some(w) = p.sliding_window {
        kvs.push((k("attention.sliding_window"), u(w)));
    }
    if let Some(y) = &p.yarn {
        kvs.push((k("rope.scaling.type"), Value::String("yarn".into())));
        kvs.push((k("rope.scaling.factor"), Value::F32(y.factor)));
        kvs.push((k("rope.scaling.original_context_length"), u(y.orig_ctx)));
        kvs.push((k("rope.scaling.yarn_beta_fast"), Value::F32(y.beta_fast)));
        kvs.push((k("rope.scaling.yarn_beta_slow"), Value::F32(y.beta_slow)));
    }
    if let Some((n_expert, n_expert_used, n_ff_exp, shexp)) = p.arch.moe(p.n_ff) {
        kvs.push((k("expert_count"), u(n_expert)));
        kvs.push((k("expert_used_count"), u(n_expert_used)));
        if !matches!(p.arch, SynthArch::LlamaMoe { .. }) {
            kvs.push((k("expert_feed_forward_length"), u(n_ff_exp)));
        }
        if let Some(fs) = shexp {
            kvs.push((k("expert_shared_feed_forward_length"), u(fs)));
        }
    }
    kvs.extend(vocab.kvs.iter().cloned());
    kvs
}

/// What [`write_synthetic`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynthSummary {
    pub n_tensors: usize,
    /// Weights, embeddings and norms included.
    pub n_params: u64,
    /// Tensor data bytes (the file adds metadata and padding).
    pub data_bytes: u64,
}

/// Write the synthetic model `p` with `vocab`'s tokenizer to `out` (via a
/// temporary file renamed into place), weights drawn from a ChaCha8
/// generator seeded with `p.seed`, one tensor at a time.
/// Write a GGUF holding only `vocab`'s tokenizer pairs (no tensors): a
/// small `--vocab-from` donor (~2 MB for the default model's vocabulary)
/// where the donor model itself is too big to carry (the GPU tier).
pub fn write_vocab(vocab: &SynthVocab, out: &Path) -> Result<()> {
    let mut w = GgufWriter::new();
    w.add_kv("general.type", Value::String("vocab".into()));
    for (k, v) in &vocab.kvs {
        w.add_kv(k.as_str(), v.clone());
    }
    w.write_file_with(out, &mut |i, _name| {
        Err(kiln_core::Error::invalid(
            "synth",
            format!("a vocabulary file has no tensor {i}"),
        ))
    })?;
    Ok(())
}

pub fn write_synthetic(p: &SynthParams, vocab: &SynthVocab, out: &Path) -> Result<SynthSummary> {
    p.validate(vocab.n_vocab)?;
    let specs = tensor_specs(p, vocab.n_vocab);
    let mut w = GgufWriter::new();
    for (k, v) in metadata(p, vocab) {
        w.add_kv(k, v);
    }
    let mut summary = SynthSummary {
        n_tensors: specs.len(),
        n_params: 0,
        data_bytes: 0,
    };
    for t in &specs {
        summary.data_bytes += w.add_tensor_info(t.name.clone(), t.dims.clone(), t.dtype)?;
        summary.n_params += t.dims.iter().product::<u64>();
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(p.seed);
    w.write_file_with(out, &mut |i, _name| {
        let t = specs
            .get(i)
            .ok_or_else(|| kiln_core::Error::invalid("synth", format!("no tensor {i}")))?;
        generate_tensor(t, &mut rng, p.pool_rows)
            .map(Cow::Owned)
            .map_err(|e| match e {
                ModelError::Core(c) => c,
                other => kiln_core::Error::invalid("synth", other.to_string()),
            })
    })?;
    Ok(summary)
}
