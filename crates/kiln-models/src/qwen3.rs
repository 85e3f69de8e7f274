//! The Qwen3 forward pass (dense `qwen3` GGUF files as llama.cpp's
//! converter writes them), on the CPU; Qwen2 / Qwen2.5 (`qwen2`) use it too,
//! with q/k/v projection biases (`attn_{q,k,v}.bias`, [`ops::add_rows`])
//! instead of the q/k norms; and the attention of Mixtral-style `llama`
//! files with experts (neither norms nor biases, normal RoPE: llama.cpp's
//! converter permutes llama's q/k rows into adjacent pairs).
//!
//! Spec: the published Qwen3 architecture, checked against transformers
//! (`Qwen3ForCausalLM` loading the GGUF) on kiln-synth'd models
//! (`tests/fixtures/synth/qwen3_tiny.json`, made by
//! scripts/fixtures/make_synth_arch_fixtures.py):
//!
//! - `x = embed(tokens)`; per layer `h = N_attn(x)`; `q, k, v = Wq h, Wk h,
//!   Wv h` (head dim from `attention.key_length`, so `q_dim` may differ from
//!   `n_embd`); q and k each get a per-head RMSNorm (`attn_q_norm` /
//!   `attn_k_norm`, one `[head_dim]` weight shared by the heads), then
//!   NeoX-style RoPE (pairs `(i, i + n_rot/2)`; converters keep Qwen's q/k
//!   rows in their original order), both in one [`ops::norm_rope`] per q
//!   and k; causal GQA attention scaled by
//!   `1/√head_dim`; `x = x + Wo att`; `h = N_ffn(x)`;
//!   `x = x + W_down(silu(W_gate h) · W_up h)`;
//! - logits = `W_out N_out(x)` (`output.weight`, or the tied `token_embd`).
//!
//! CUDA: not yet ([`Qwen3Weights::load`] refuses a non-CPU stream: every op
//! here exists on CUDA, but this composition has not run on a GPU).

use crate::config::ModelConfig;
use crate::kv_cache::KvCache;
use crate::llama::{fin, fout, fused_piece, Batch, Scratch};
use crate::weights::{LlamaWeights, Loader};
use crate::{ModelError, Result};
use kiln::ops::{
    self, AddParams, AddRowsParams, CopyRowsParams, NormRopeParams, QkNormRopeKvInputs,
    QkNormRopeKvOutputs, RmsNormParams, RopeMode, RopeParams, SiluMulParams,
};
use kiln::{Stream, Tensor};
use kiln_core::gguf::GgufFile;
use kiln_core::ops::matvec_fused::FusedEpilogue;
use std::sync::Arc;

/// Qwen3's weights beyond the llama-shaped ones: one layer's q/k norms (f32,
/// `[head_dim]`) for Qwen3, or one layer's q/k/v projection biases for
/// Qwen2 (the other list empty), or neither for llama.
pub struct Qwen3Weights {
    pub q_norm: Vec<Tensor>,
    pub k_norm: Vec<Tensor>,
    /// Qwen2: `attn_q.bias` `[q_dim]`, `attn_k.bias`, `attn_v.bias` `[kv_dim]`.
    pub qkv_bias: Vec<[Tensor; 3]>,
    /// NeoX for the Qwen files, normal (adjacent pairs) for llama.
    pub rope_mode: RopeMode,
}

impl Qwen3Weights {
    /// Load the per-head norms; refuse what this forward does not implement.
    pub fn load(file: &Arc<GgufFile>, cfg: &ModelConfig, device: &Stream) -> Result<Qwen3Weights> {
        crate::model::check_unverified_on_gpu(&cfg.arch, device)?;
        // The normed k is staged in a [n, n_embd] buffer (see `forward`).
        if cfg.kv_dim() > cfg.n_embd {
            return Err(ModelError::Unsupported(format!(
                "{} with kv width {} > n_embd {}",
                cfg.arch,
                cfg.kv_dim(),
                cfg.n_embd
            )));
        }
        let l = Loader::new(file, device);
        let hd = cfg.head_dim;
        let (mut q_norm, mut k_norm, mut qkv_bias) = (Vec::new(), Vec::new(), Vec::new());
        let llama = cfg.arch == "llama";
        if llama && file.tensor("rope_freqs.weight").is_some() {
            return Err(ModelError::Unsupported(
                "rope frequency factors (rope_freqs.weight) in a llama file with experts".into(),
            ));
        }
        for i in 0..cfg.n_layer {
            if llama {
                continue;
            }
            if cfg.arch.starts_with("qwen2") {
                let b = |s: &str, n| l.vector(&format!("blk.{i}.{s}.bias"), n);
                qkv_bias.push([
                    b("attn_q", cfg.q_dim())?,
                    b("attn_k", cfg.kv_dim())?,
                    b("attn_v", cfg.kv_dim())?,
                ]);
            } else {
                q_norm.push(l.vector(&format!("blk.{i}.attn_q_norm.weight"), hd)?);
                k_norm.push(l.vector(&format!("blk.{i}.attn_k_norm.weight"), hd)?);
            }
        }
        Ok(Qwen3Weights {
            q_norm,
            k_norm,
            qkv_bias,
            rope_mode: if llama {
                RopeMode::Normal
            } else {
                RopeMode::Neox
            },
        })
    }
}

/// Run `b.tokens` at positions `b.pos0..`, appending their keys and values
/// to the cache; logits land in `sc.logits` (as [`crate::llama::forward`]).
pub fn forward(
    s: &Stream,
    cfg: &ModelConfig,
    w: &LlamaWeights,
    q: &Qwen3Weights,
    cache: &mut KvCache,
    sc: &mut Scratch,
    b: &Batch<'_>,
) -> Result<()> {
    let n = b.tokens.len();
    let dense = |s: &Stream, l: usize, sc: &mut Scratch| -> kiln::Result<()> {
        let lw = &w.layers[l];
        let swiglu = SiluMulParams { n: n * cfg.n_ff };
        let add = AddParams { n: n * cfg.n_embd };
        let eps = Some(cfg.rms_eps);
        // CUDA decode: norm + [w_gate; w_up] + SiLU·up, then w_down +
        // residual, as two fused mat-vecs where the weights allow.
        let fuse = |w: Option<&Tensor>, eps, epi| match w {
            Some(w) => fused_piece(s, w, n, eps, epi),
            None => Ok(None),
        };
        let gu = fuse(lw.w_gate_up.as_ref(), eps, FusedEpilogue::SwiGlu)?;
        let down = fuse(Some(&lw.w_down), None, FusedEpilogue::Residual)?;
        if let (Some(gu), Some(down), Some(w_gu)) = (gu, down, &lw.w_gate_up) {
            let pos = &sc.positions;
            let i_gu = fin(w_gu, &sc.x2, Some(&lw.ffn_norm), None, pos);
            ops::matvec_fused(s, &gu, i_gu, fout(&mut sc.act))?;
            let i_d = fin(&lw.w_down, &sc.act, None, Some(&sc.x2), pos);
            return ops::matvec_fused(s, &down, i_d, fout(&mut sc.x));
        }
        ffn_norm(s, cfg, &lw.ffn_norm, n, sc)?;
        ops::matmul(s, &lw.w_gate, &sc.h, n, &mut sc.gate)?;
        ops::matmul(s, &lw.w_up, &sc.h, n, &mut sc.up)?;
        ops::silu_mul(s, &swiglu, &sc.gate, &sc.up, &mut sc.act)?;
        ops::matmul(s, &lw.w_down, &sc.act, n, &mut sc.o)?;
        ops::add(s, &add, &sc.x2, &sc.o, &mut sc.x)
    };
    forward_with(s, cfg, w, q, cache, sc, b, dense)
}

/// `sc.h = RMSNorm(sc.x2) * ffn_norm`: the feed-forward block's input (an
/// `ffn` of [`forward_with`] that does not fuse the norm calls this first).
pub(crate) fn ffn_norm(
    s: &Stream,
    cfg: &ModelConfig,
    ffn_norm: &Tensor,
    n: usize,
    sc: &mut Scratch,
) -> kiln::Result<()> {
    let norm = RmsNormParams {
        rows: n,
        dim: cfg.n_embd,
        eps: cfg.rms_eps,
    };
    ops::rms_norm(s, &norm, &sc.x2, ffn_norm, &mut sc.h)
}

/// Qwen3's forward with the feed-forward block supplied: `ffn(s, layer,
/// sc)` must set `sc.x = sc.x2 + FFN(RMSNorm(sc.x2) * ffn_norm)` (see
/// [`ffn_norm`]). Dense Qwen3 passes SwiGLU; Qwen3-MoE its expert mixture.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_with(
    s: &Stream,
    cfg: &ModelConfig,
    w: &LlamaWeights,
    q: &Qwen3Weights,
    cache: &mut KvCache,
    sc: &mut Scratch,
    b: &Batch<'_>,
    ffn: impl FnMut(&Stream, usize, &mut Scratch) -> kiln::Result<()> + Send,
) -> Result<()> {
    s.install(|| forward_ops(s, cfg, w, q, cache, sc, b, ffn))
}

#[allow(clippy::too_many_arguments)]
fn forward_ops(
    s: &Stream,
    cfg: &ModelConfig,
    w: &LlamaWeights,
    qw: &Qwen3Weights,
    cache: &mut KvCache,
    sc: &mut Scratch,
    b: &Batch<'_>,
    mut ffn: impl FnMut(&Stream, usize, &mut Scratch) -> kiln::Result<()>,
) -> Result<()> {
    let Batch {
        tokens,
        pos0,
        mode,
        device_pos,
    } = *b;
    let n = crate::llama::start_batch(cache, sc, b)?;
    let norms = !qw.q_norm.is_empty();
    let biases = !qw.qkv_bias.is_empty();
    let per_layer = if norms {
        qw.q_norm.len().min(qw.k_norm.len())
    } else if biases {
        qw.qkv_bias.len()
    } else {
        w.layers.len()
    };
    if per_layer != w.layers.len() {
        return Err(ModelError::Weights(format!(
            "qwen3: {per_layer} layers of q/k norms or biases for {} layers",
            w.layers.len()
        )));
    }
    let (d, hd) = (cfg.n_embd, cfg.head_dim);
    // The one-launch q/k norm + RoPE + KV append of the fused decode path.
    let qknr = std::env::var_os("KILN_QKNR").is_some_and(|v| v == "1");
    ops::embedding(s, &w.token_embd, tokens, &mut sc.x)?;

    let norm = RmsNormParams {
        rows: n,
        dim: d,
        eps: cfg.rms_eps,
    };
    let rope = |heads: usize| RopeParams {
        n_tokens: n,
        n_heads: heads,
        head_dim: hd,
        n_rot: cfg.n_rot,
        freq_base: cfg.rope_base,
        freq_scale: cfg.rope_freq_scale,
        mode: qw.rope_mode,
    };
    // Per-head norms over the [n, heads * head_dim] rows as [n * heads,
    // head_dim], then RoPE: one op (one CUDA launch) per q and k.
    let norm_rope = |heads: usize| NormRopeParams {
        rope: rope(heads),
        eps: cfg.rms_eps,
    };
    let kv = crate::llama::KvStep::new(cfg, cache, n, pos0, device_pos);
    let add = AddParams { n: n * d };
    let rows = |dim: usize| AddRowsParams { rows: n, dim };
    let take = |row_len: usize| CopyRowsParams {
        row_len,
        n_rows: n,
        src_row: 0,
        dst_row: 0,
        dst_ring: None,
    };

    for (l, lw) in w.layers.iter().enumerate() {
        // attention block; buffers: q -> att (normed, roped), k -> o (normed,
        // roped; kv_dim <= n_embd was checked at load), attention -> q.
        // One token on CUDA with q/k norms: norm + [wq; wk; wv] as one fused
        // mat-vec into sc.qkv (one row [q | k | v]), then k copied out, q/k
        // norm + RoPE, and the KV append: 7 launches with the attention
        // instead of 9. With KILN_QKNR=1 (opt-in until run on a GPU) the
        // q/k norm + RoPE + KV append is one qk_norm_rope_kv: 3 launches.
        // YaRN's factors when the file scales RoPE that way (None: plain).
        let ff = w.rope_freqs.as_ref();
        let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
        let fused_qkv = match &lw.wqkv {
            Some(wqkv) if n == 1 && norms && !biases && (qknr || qd % kvd == 0) => {
                let eps = Some(cfg.rms_eps);
                fused_piece(s, wqkv, 1, eps, FusedEpilogue::Store)?.map(|p| (wqkv, p))
            }
            _ => None,
        };
        let kvl = kv.layer(cache, l, cfg.attn_scale());
        let (kc, vc) = (&mut cache.k[l], &mut cache.v[l]);
        if let Some((wqkv, p)) = fused_qkv {
            let i = fin(wqkv, &sc.x, Some(&lw.attn_norm), None, &sc.positions);
            ops::matvec_fused(s, &p, i, fout(&mut sc.qkv))?;
            if !qknr {
                // k's part of the row out to sc.k; q normed from the row,
                // v appended from it.
                let k_row = CopyRowsParams {
                    row_len: kvd,
                    n_rows: 1,
                    src_row: qd / kvd,
                    dst_row: 0,
                    dst_ring: None,
                };
                ops::copy_rows(s, &k_row, &sc.qkv, &mut sc.k)?;
                let (pos, qn, kn) = (&sc.positions, &qw.q_norm[l], &qw.k_norm[l]);
                ops::norm_rope(s, &norm_rope(cfg.n_head), &sc.qkv, qn, ff, pos, &mut sc.att)?;
                ops::norm_rope(s, &norm_rope(cfg.n_head_kv), &sc.k, kn, ff, pos, &mut sc.o)?;
                let kv_rows = ((&sc.o, 0), (&sc.qkv, (qd + kvd) / kvd));
                kvl.append_attend_rows(s, pos, &sc.att, kv_rows, (kc, vc), &mut sc.q)?;
            } else {
                let inputs = QkNormRopeKvInputs {
                    qkv: &sc.qkv,
                    q_norm: &qw.q_norm[l],
                    k_norm: &qw.k_norm[l],
                    factors: ff,
                    positions: &sc.positions,
                };
                let outputs = QkNormRopeKvOutputs {
                    q_out: &mut sc.att,
                    k_cache: &mut *kc,
                    v_cache: &mut *vc,
                };
                kvl.qk_norm_rope_append(s, norm_rope(cfg.n_head), cfg.n_head_kv, inputs, outputs)?;
                kvl.attend(s, &sc.positions, &sc.att, kc, vc, &mut sc.q)?;
            }
        } else {
            ops::rms_norm(s, &norm, &sc.x, &lw.attn_norm, &mut sc.h)?;
            ops::matmul(s, &lw.wq, &sc.h, n, &mut sc.q)?;
            ops::matmul(s, &lw.wk, &sc.h, n, &mut sc.k)?;
            ops::matmul(s, &lw.wv, &sc.h, n, &mut sc.v)?;
            if let Some([bq, bk, bv]) = qw.qkv_bias.get(l) {
                // Qwen2: projection biases.
                ops::add_rows(s, &rows(qd), &mut sc.q, bq)?;
                ops::add_rows(s, &rows(kvd), &mut sc.k, bk)?;
                ops::add_rows(s, &rows(kvd), &mut sc.v, bv)?;
            }
            let pos = &sc.positions;
            if norms {
                let (qn, kn) = (&qw.q_norm[l], &qw.k_norm[l]);
                ops::norm_rope(s, &norm_rope(cfg.n_head), &sc.q, qn, ff, pos, &mut sc.att)?;
                ops::norm_rope(s, &norm_rope(cfg.n_head_kv), &sc.k, kn, ff, pos, &mut sc.o)?;
            } else {
                ops::copy_rows(s, &take(qd), &sc.q, &mut sc.att)?;
                ops::copy_rows(s, &take(kvd), &sc.k, &mut sc.o)?;
                ops::rope_with_factors(s, &rope(cfg.n_head), ff, pos, &mut sc.att)?;
                ops::rope_with_factors(s, &rope(cfg.n_head_kv), ff, pos, &mut sc.o)?;
            }
            kvl.append_attend(s, pos, &sc.att, (&sc.o, &sc.v), (kc, vc), &mut sc.q)?;
        }
        // wo + residual: one fused mat-vec on CUDA decode.
        if let Some(o) = fused_piece(s, &lw.wo, n, None, FusedEpilogue::Residual)? {
            let i_o = fin(&lw.wo, &sc.q, None, Some(&sc.x), &sc.positions);
            ops::matvec_fused(s, &o, i_o, fout(&mut sc.x2))?;
        } else {
            ops::matmul(s, &lw.wo, &sc.q, n, &mut sc.o)?;
            ops::add(s, &add, &sc.x, &sc.o, &mut sc.x2)?;
        }
        // feed-forward block: sc.x = sc.x2 + FFN(N_ffn(sc.x2))
        ffn(s, l, sc)?;
    }

    crate::llama::unfused_head(s, cfg, w, sc, n, mode)
}
