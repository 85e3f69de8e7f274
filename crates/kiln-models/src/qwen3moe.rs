//! The Qwen3-MoE forward pass (`qwen3moe` GGUF files), on the CPU; also
//! Qwen2-MoE (`qwen2moe`: Qwen2 attention with q/k/v biases, softmax top-k
//! without renormalisation, plus a shared expert whose output is scaled
//! per token by `sigmoid(ffn_gate_inp_shexp · h)`); also Mixtral-style
//! `llama` files with experts (llama attention with normal RoPE, softmax
//! top-k renormalised, expert width `feed_forward_length`).
//!
//! Attention is Qwen3's ([`crate::qwen3`]: per-head q/k RMSNorm, NeoX RoPE);
//! every FFN is a routed mixture: with `h = N_ffn(x)`,
//! `logits = W_router h` (`ffn_gate_inp`, `[n_expert, n_embd]`), softmax over
//! the experts, the `n_expert_used` largest kept and renormalised
//! ([`kiln::ops::moe_route`]); each chosen expert `e` computes
//! `W_down_e(silu(W_gate_e h) · W_up_e h)` (`ffn_{gate,up,down}_exps`, one
//! stack of matrices each, [`kiln::ops::matmul_id`]), and
//! `x = x + Σ_slots weight · expert output` ([`kiln::ops::moe_combine`]).
//! Checked against transformers (`Qwen3MoeForCausalLM` loading the GGUF) on
//! a kiln-synth'd model (`tests/fixtures/synth/qwen3moe_tiny.json`).
//!
//! The MoE intermediates are allocated once per state ([`MoeBuffers`] in
//! the scratch; routing ids live on the host, as token ids do); CUDA: not
//! yet (refused at load).

use crate::config::{ModelConfig, MoeParams};
use crate::kv_cache::KvCache;
use crate::llama::{Batch, Scratch};
use crate::qwen3::{self, Qwen3Weights};
use crate::weights::{LlamaWeights, Loader};
use crate::{ModelError, Result};
use kiln::ops::{
    self, MatmulIdParams, MoeCombineParams, MoeRouteParams, MoeScoring, SiluMulParams,
};
use kiln::{Ids, Stream, Tensor};
use kiln_core::gguf::GgufFile;
use std::sync::Arc;

/// Qwen2-MoE's shared expert of one layer: a dense SwiGLU FFN whose output
/// is scaled per token by `sigmoid(gate_inp · h)`.
pub struct SharedExpert {
    /// `ffn_gate_inp_shexp`: `[1, n_embd]`.
    pub gate_inp: Tensor,
    /// `ffn_gate_shexp`, `ffn_up_shexp`: `[n_ff_shexp, n_embd]`.
    pub gate: Tensor,
    pub up: Tensor,
    /// `ffn_down_shexp`: `[n_embd, n_ff_shexp]`.
    pub down: Tensor,
}

/// One layer's experts.
pub struct MoeLayer {
    /// `ffn_gate_inp`: `[n_expert, n_embd]`.
    pub router: Tensor,
    /// `ffn_gate_exps`, `ffn_up_exps`: `[n_expert * n_ff_exp, n_embd]`.
    pub gate: Tensor,
    pub up: Tensor,
    /// `ffn_down_exps`: `[n_expert * n_embd, n_ff_exp]`.
    pub down: Tensor,
    pub shared: Option<SharedExpert>,
}

/// Qwen3-MoE's weights beyond the llama-shaped ones.
pub struct Qwen3MoeWeights {
    pub moe: MoeParams,
    pub qk: Qwen3Weights,
    pub layers: Vec<MoeLayer>,
}

impl Qwen3MoeWeights {
    pub fn load(
        file: &Arc<GgufFile>,
        cfg: &ModelConfig,
        device: &Stream,
    ) -> Result<Qwen3MoeWeights> {
        let Some(&moe) = cfg.arch_params.moe() else {
            return Err(ModelError::Config(format!(
                "qwen3moe weights for a '{}' config",
                cfg.arch
            )));
        };
        // llama.cpp once wrote Mixtral's experts as one tensor each
        // (`ffn_gate.E`); its converter now stacks them (`ffn_gate_exps`).
        if file.tensor("blk.0.ffn_gate_exps.weight").is_none()
            && file.tensor("blk.0.ffn_gate.0.weight").is_some()
        {
            return Err(ModelError::Unsupported(format!(
                "{}: experts stored one tensor each (blk.0.ffn_gate.0.weight, the old \
                 Mixtral GGUF layout); re-convert with a current llama.cpp (stacked ffn_gate_exps)",
                cfg.arch
            )));
        }
        let qk = Qwen3Weights::load(file, cfg, device)?;
        let l = Loader::new(file, device);
        let (d, e, f) = (cfg.n_embd, moe.n_expert, moe.n_ff_exp);
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            let shared = match moe.n_ff_shexp {
                Some(fs) => Some(SharedExpert {
                    gate_inp: l.row(&n("ffn_gate_inp_shexp"), d)?,
                    gate: l.matrix(&n("ffn_gate_shexp"), fs, d)?,
                    up: l.matrix(&n("ffn_up_shexp"), fs, d)?,
                    down: l.matrix(&n("ffn_down_shexp"), d, fs)?,
                }),
                None => None,
            };
            layers.push(MoeLayer {
                router: l.matrix(&n("ffn_gate_inp"), e, d)?,
                gate: l.experts(&n("ffn_gate_exps"), e, f, d)?,
                up: l.experts(&n("ffn_up_exps"), e, f, d)?,
                down: l.experts(&n("ffn_down_exps"), e, d, f)?,
                shared,
            });
        }
        Ok(Qwen3MoeWeights { moe, qk, layers })
    }
}

/// Run `b.tokens` (see [`crate::llama::forward`]).
pub fn forward(
    s: &Stream,
    cfg: &ModelConfig,
    w: &LlamaWeights,
    m: &Qwen3MoeWeights,
    cache: &mut KvCache,
    sc: &mut Scratch,
    b: &Batch<'_>,
) -> Result<()> {
    if m.layers.len() != w.layers.len() {
        return Err(ModelError::Weights(format!(
            "qwen3moe: {} expert layers for {} layers",
            m.layers.len(),
            w.layers.len()
        )));
    }
    let n = b.tokens.len();
    let mp = m.moe;
    // The intermediates live in the state's scratch (allocated once, sized
    // for its batch; each op takes the prefix it needs): moved out for the
    // pass so the FFN closure can borrow them beside the scratch.
    let mut bufs = sc.moe.take().ok_or_else(|| {
        ModelError::Config("qwen3moe: the state's scratch has no MoE buffers".into())
    })?;
    if n * mp.n_expert_used > bufs.ids.len() {
        sc.moe = Some(bufs);
        return Err(ModelError::Input(format!(
            "qwen3moe: {n} tokens exceed the state's batch of {}",
            sc.n_batch
        )));
    }
    let ffn = |s: &Stream, l: usize, sc: &mut Scratch| {
        qwen3::ffn_norm(s, cfg, &w.layers[l].ffn_norm, n, sc)?;
        moe_ffn(s, cfg, &mp, &m.layers[l], n, sc, &mut bufs)
    };
    let r = qwen3::forward_with(s, cfg, w, &m.qk, cache, sc, b, ffn);
    sc.moe = Some(bufs);
    r
}

/// A state's MoE intermediates, for up to `n_batch` tokens.
pub(crate) struct MoeBuffers {
    logits: Tensor,
    weights: Tensor,
    ids: Ids,
    gate: Tensor,
    up: Tensor,
    act: Tensor,
    y: Tensor,
    shared: Option<SharedBuffers>,
}

impl MoeBuffers {
    pub(crate) fn new(
        s: &Stream,
        cfg: &ModelConfig,
        mp: &MoeParams,
        n_batch: usize,
    ) -> Result<Self> {
        let (n, d) = (n_batch, cfg.n_embd);
        let rows = n * mp.n_expert_used;
        Ok(MoeBuffers {
            logits: Tensor::zeros(s, &[n, mp.n_expert])?,
            weights: Tensor::zeros(s, &[rows])?,
            ids: Ids::zeros(s, rows)?,
            gate: Tensor::zeros(s, &[rows, mp.n_ff_exp])?,
            up: Tensor::zeros(s, &[rows, mp.n_ff_exp])?,
            act: Tensor::zeros(s, &[rows, mp.n_ff_exp])?,
            y: Tensor::zeros(s, &[rows, d])?,
            shared: match mp.n_ff_shexp {
                Some(fs) => Some(SharedBuffers {
                    logit: Tensor::zeros(s, &[n])?,
                    weight: Tensor::zeros(s, &[n])?,
                    ids: Ids::zeros(s, n)?,
                    gate: Tensor::zeros(s, &[n, fs])?,
                    up: Tensor::zeros(s, &[n, fs])?,
                    act: Tensor::zeros(s, &[n, fs])?,
                    out: Tensor::zeros(s, &[n, d])?,
                    routed: Tensor::zeros(s, &[n, d])?,
                }),
                None => None,
            },
        })
    }
}

/// The shared expert's intermediates (`routed`: x2 plus the routed sum).
struct SharedBuffers {
    logit: Tensor,
    weight: Tensor,
    ids: Ids,
    gate: Tensor,
    up: Tensor,
    act: Tensor,
    out: Tensor,
    routed: Tensor,
}

/// `x = x2 + MoE(h)` for `n` tokens.
#[allow(clippy::too_many_arguments)]
fn moe_ffn(
    s: &Stream,
    cfg: &ModelConfig,
    mp: &MoeParams,
    ml: &MoeLayer,
    n: usize,
    sc: &mut Scratch,
    b: &mut MoeBuffers,
) -> kiln::Result<()> {
    let h = &sc.h;
    let (d, k, f) = (cfg.n_embd, mp.n_expert_used, mp.n_ff_exp);
    ops::matmul(s, &ml.router, h, n, &mut b.logits)?;
    let route = MoeRouteParams::softmax_topk(n, mp.n_expert, k, mp.norm_topk);
    ops::moe_route(s, &route, &b.logits, None, &mut b.ids, &mut b.weights)?;
    let ids = &b.ids;
    let id = |rows: usize, cols: usize, per_slot: bool, wt: &Tensor| MatmulIdParams {
        n_tokens: n,
        top_k: k,
        n: rows,
        k: cols,
        n_experts: mp.n_expert,
        expert_stride: wt.byte_len() / mp.n_expert,
        wtype: wt.dtype(),
        x_per_slot: per_slot,
    };
    let gp = id(f, d, false, &ml.gate);
    if n == 1 && s.device() != kiln::Device::Cpu && ml.gate.dtype() == ml.up.dtype() {
        // Decode on a GPU: gate, up and SiLU·mul in one launch.
        ops::matmul_id_swiglu(s, &gp, &ml.gate, &ml.up, h, ids, &mut b.act)?;
    } else {
        ops::matmul_id(s, &gp, &ml.gate, h, ids, &mut b.gate)?;
        ops::matmul_id(s, &id(f, d, false, &ml.up), &ml.up, h, ids, &mut b.up)?;
        ops::silu_mul(
            s,
            &SiluMulParams { n: n * k * f },
            &b.gate,
            &b.up,
            &mut b.act,
        )?;
    }
    ops::matmul_id(
        s,
        &id(d, f, true, &ml.down),
        &ml.down,
        &b.act,
        ids,
        &mut b.y,
    )?;
    let comb = MoeCombineParams {
        n_tokens: n,
        top_k: k,
        dim: d,
    };
    let (Some(sh), Some(sb)) = (&ml.shared, b.shared.as_mut()) else {
        return ops::moe_combine(s, &comb, &b.y, &b.weights, &sc.x2, &mut sc.x);
    };
    // Qwen2-MoE: x = (x2 + routed sum) + sigmoid(gate_inp · h) · shared(h).
    ops::moe_combine(s, &comb, &b.y, &b.weights, &sc.x2, &mut sb.routed)?;
    let fs = mp.n_ff_shexp.unwrap_or(0);
    ops::matmul(s, &sh.gate, h, n, &mut sb.gate)?;
    ops::matmul(s, &sh.up, h, n, &mut sb.up)?;
    ops::silu_mul(
        s,
        &SiluMulParams { n: n * fs },
        &sb.gate,
        &sb.up,
        &mut sb.act,
    )?;
    ops::matmul(s, &sh.down, &sb.act, n, &mut sb.out)?;
    // The per-token gate: a one-expert sigmoid "route" is exactly sigmoid(logit).
    ops::matmul(s, &sh.gate_inp, h, n, &mut sb.logit)?;
    let gate = MoeRouteParams {
        n_tokens: n,
        n_experts: 1,
        top_k: 1,
        scoring: MoeScoring::Sigmoid,
        norm_topk: false,
        n_group: 1,
        topk_group: 1,
        routed_scaling: 1.0,
    };
    ops::moe_route(s, &gate, &sb.logit, None, &mut sb.ids, &mut sb.weight)?;
    let one = MoeCombineParams { top_k: 1, ..comb };
    ops::moe_combine(s, &one, &sb.out, &sb.weight, &sb.routed, &mut sc.x)
}
