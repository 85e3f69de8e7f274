//! The Gemma 3 forward pass (text decoder; Gemma 3 270M, 1B, 4B, 12B, 27B
//! GGUF files as llama.cpp's converter writes them), on the CPU.
//!
//! Spec: the Gemma 3 technical report and the published model configs, with
//! the GGUF conventions checked against an independent implementation
//! (transformers on the dequantized file; `tests/fixtures/gemma/model.json`,
//! `scripts/fixtures/make_gemma_model_fixtures.py`):
//!
//! - `x = embed(tokens) * √n_embd` (the tied `token_embd` is also the output);
//! - per layer, with `N_*` RMSNorms (eps from the file) whose weights the
//!   converter stored as `1 + w` already (measured: the perplexity of the
//!   file's weights as they are is the fluent one; adding 1 again breaks the
//!   model), so they are used as read:
//!   `h = N_attn(x)`; `q, k, v = Wq h, Wk h, Wv h`; q and k each get a
//!   per-head RMSNorm (`attn_q_norm` / `attn_k_norm`, one `[head_dim]`
//!   weight shared by the heads) and then NeoX-style RoPE (pairs `(i, i +
//!   d/2)`), both in one [`ops::norm_rope`] per q and k; attention with
//!   GQA, queries scaled by `1/√query_pre_attn_scalar`;
//!   `x = x + N_post_attn(Wo att)`;
//!   `h = N_ffn(x)`; `x = x + N_post_ffw(W_down(gelu_tanh(W_gate h) · W_up h))`;
//! - local layers (all but every `swa_period`-th, 1-based) attend through a
//!   sliding window of `sliding_window` keys (itself included) with RoPE
//!   base 10 000 and no RoPE scaling; global layers attend causally with the
//!   file's `rope.freq_base` (1e6) and scaling;
//! - logits = `token_embd · N_out(x)`; no final soft-capping in Gemma 3
//!   (a file with `final_logit_softcapping` or `attn_logit_softcapping`, i.e.
//!   Gemma 2 style, is refused at load).
//!
//! The local layers' caches are rings of `sliding_window + n_batch - 1`
//! rows (`crate::kv_cache`; `Model::swa_full` keeps every position), which
//! at long contexts saves most of the cache (5 of 6 layers are local).
//!
//! CUDA: the forward runs on CUDA streams through `llama::KvStep` (a decode
//! step is a CUDA graph), but is refused there at load until it has run on
//! a GPU (`model::check_unverified_on_gpu`, `KILN_CUDA_ARCHS=1` to try).

use crate::config::{ArchParams, Gemma3Params, ModelConfig};
use crate::kv_cache::KvCache;
use crate::llama::{Batch, Scratch};
use crate::weights::{LlamaWeights, Loader};
use crate::{ModelError, Result};
use kiln::ops::{
    self, AddParams, GeluMode, GeluMulParams, NormRopeParams, RmsNormParams, RopeMode, RopeParams,
    ScaleParams,
};
use kiln::{Stream, Tensor};
use kiln_core::gguf::GgufFile;
use std::sync::Arc;

/// Gemma 3's weights beyond the llama-shaped ones ([`LlamaWeights`] holds
/// the embeddings, projections, `attn_norm`, `ffn_norm` and `output_norm`
/// under the same tensor names).
pub struct Gemma3Weights {
    pub params: Gemma3Params,
    pub layers: Vec<Gemma3LayerNorms>,
}

/// One layer's extra norms (f32).
pub struct Gemma3LayerNorms {
    /// `post_attention_norm`, `[n_embd]`.
    pub post_attn_norm: Tensor,
    /// `post_ffw_norm`, `[n_embd]`.
    pub post_ffw_norm: Tensor,
    /// `attn_q_norm`, `[head_dim]`.
    pub q_norm: Tensor,
    /// `attn_k_norm`, `[head_dim]`.
    pub k_norm: Tensor,
}

impl Gemma3Weights {
    /// Load the extra norms; refuse what this forward does not implement.
    pub fn load(file: &Arc<GgufFile>, cfg: &ModelConfig, device: &Stream) -> Result<Gemma3Weights> {
        let ArchParams::Gemma3(params) = &cfg.arch_params else {
            return Err(ModelError::Config(format!(
                "gemma3 weights for a '{}' config",
                cfg.arch
            )));
        };
        crate::model::check_unverified_on_gpu("gemma3", device)?;
        if cfg.rope_yarn.is_some() {
            return Err(ModelError::Unsupported(
                "gemma3 with yarn rope scaling".into(),
            ));
        }
        if let Some(c) = params.final_logit_softcap.or(params.attn_logit_softcap) {
            return Err(ModelError::Unsupported(format!(
                "gemma3 file with logit soft-capping {c} (Gemma 2 style)"
            )));
        }
        // The normed k is staged in a [n, n_embd] buffer (see `forward`).
        if cfg.kv_dim() > cfg.n_embd || params.head_dim_v != cfg.head_dim {
            return Err(ModelError::Unsupported(format!(
                "gemma3 with kv width {} > n_embd {} or value head dim {} != key head dim {}",
                cfg.kv_dim(),
                cfg.n_embd,
                params.head_dim_v,
                cfg.head_dim
            )));
        }
        let l = Loader::new(file, device);
        let (d, hd) = (cfg.n_embd, cfg.head_dim);
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            layers.push(Gemma3LayerNorms {
                post_attn_norm: l.vector(&n("post_attention_norm"), d)?,
                post_ffw_norm: l.vector(&n("post_ffw_norm"), d)?,
                q_norm: l.vector(&n("attn_q_norm"), hd)?,
                k_norm: l.vector(&n("attn_k_norm"), hd)?,
            });
        }
        Ok(Gemma3Weights {
            params: params.clone(),
            layers,
        })
    }
}

/// Run `b.tokens` at positions `b.pos0..`, appending their keys and values
/// to the cache; logits land in `sc.logits` (as [`crate::llama::forward`]).
/// With `b.device_pos` the KV append and attention read the position from
/// the stream's device copy (a recorded decode step; see `llama::KvStep`).
pub fn forward(
    s: &Stream,
    cfg: &ModelConfig,
    w: &LlamaWeights,
    g: &Gemma3Weights,
    cache: &mut KvCache,
    sc: &mut Scratch,
    b: &Batch<'_>,
) -> Result<()> {
    s.install(|| forward_ops(s, cfg, w, g, cache, sc, b))
}

fn forward_ops(
    s: &Stream,
    cfg: &ModelConfig,
    w: &LlamaWeights,
    g: &Gemma3Weights,
    cache: &mut KvCache,
    sc: &mut Scratch,
    b: &Batch<'_>,
) -> Result<()> {
    let Batch {
        tokens,
        pos0,
        mode,
        device_pos,
    } = *b;
    let n = crate::llama::start_batch(cache, sc, b)?;
    if g.layers.len() != w.layers.len() {
        return Err(ModelError::Weights(format!(
            "gemma3: {} layers of extra norms for {} layers",
            g.layers.len(),
            w.layers.len()
        )));
    }
    let (d, hd, gp) = (cfg.n_embd, cfg.head_dim, &g.params);

    // x = embed(tokens) * sqrt(n_embd)
    ops::embedding(s, &w.token_embd, tokens, &mut sc.h)?;
    let embed_scale = ScaleParams {
        n: n * d,
        alpha: (d as f32).sqrt(),
    };
    ops::scale(s, &embed_scale, &sc.h, &mut sc.x)?;

    let norm = RmsNormParams {
        rows: n,
        dim: d,
        eps: cfg.rms_eps,
    };
    // Per-head norms over the [n, heads * head_dim] rows as [n * heads,
    // head_dim], then RoPE with the layer's base: one op per q and k.
    let norm_rope = |heads: usize, local: bool| NormRopeParams {
        rope: RopeParams {
            n_tokens: n,
            n_heads: heads,
            head_dim: hd,
            n_rot: cfg.n_rot,
            freq_base: if local {
                gp.rope_base_local
            } else {
                cfg.rope_base
            },
            freq_scale: if local { 1.0 } else { cfg.rope_freq_scale },
            mode: RopeMode::Neox,
        },
        eps: cfg.rms_eps,
    };
    let kv = crate::llama::KvStep::new(cfg, cache, n, pos0, device_pos);
    let add = AddParams { n: n * d };
    let geglu = GeluMulParams {
        n: n * cfg.n_ff,
        mode: GeluMode::Tanh,
    };

    for (l, (lw, ln)) in w.layers.iter().zip(&g.layers).enumerate() {
        let local = gp.is_local(l);
        // attention block; buffers: q -> att (normed, roped), k -> o (normed,
        // roped; kv_dim <= n_embd was checked at load), attention -> q.
        ops::rms_norm(s, &norm, &sc.x, &lw.attn_norm, &mut sc.h)?;
        ops::matmul(s, &lw.wq, &sc.h, n, &mut sc.q)?;
        ops::matmul(s, &lw.wk, &sc.h, n, &mut sc.k)?;
        ops::matmul(s, &lw.wv, &sc.h, n, &mut sc.v)?;
        let (qp, kp) = (
            norm_rope(cfg.n_head, local),
            norm_rope(cfg.n_head_kv, local),
        );
        let pos = &sc.positions;
        ops::norm_rope(s, &qp, &sc.q, &ln.q_norm, None, pos, &mut sc.att)?;
        ops::norm_rope(s, &kp, &sc.k, &ln.k_norm, None, pos, &mut sc.o)?;
        // The cache knows the layer's window (cfg.layer_window) and rows.
        let kvl = kv.layer(cache, l, gp.attn_scale);
        let (kc, vc) = (&mut cache.k[l], &mut cache.v[l]);
        kvl.append_attend(
            s,
            &sc.positions,
            &sc.att,
            (&sc.o, &sc.v),
            (kc, vc),
            &mut sc.q,
        )?;
        ops::matmul(s, &lw.wo, &sc.q, n, &mut sc.o)?;
        ops::rms_norm(s, &norm, &sc.o, &ln.post_attn_norm, &mut sc.h)?;
        ops::add(s, &add, &sc.x, &sc.h, &mut sc.x2)?;
        // feed-forward block
        ops::rms_norm(s, &norm, &sc.x2, &lw.ffn_norm, &mut sc.h)?;
        ops::matmul(s, &lw.w_gate, &sc.h, n, &mut sc.gate)?;
        ops::matmul(s, &lw.w_up, &sc.h, n, &mut sc.up)?;
        ops::gelu_mul(s, &geglu, &sc.gate, &sc.up, &mut sc.act)?;
        ops::matmul(s, &lw.w_down, &sc.act, n, &mut sc.o)?;
        ops::rms_norm(s, &norm, &sc.o, &ln.post_ffw_norm, &mut sc.h)?;
        ops::add(s, &add, &sc.x2, &sc.h, &mut sc.x)?;
    }

    crate::llama::unfused_head(s, cfg, w, sc, n, mode)
}
