//! The llama-family forward pass (SmolLM2, Llama 2/3, Mistral-style files):
//! pre-norm blocks of GQA attention with normal-mode RoPE and a SiLU-gated
//! FFN, RMSNorm, optional tied output. Written as a fixed sequence of
//! destination-passing ops on preallocated buffers.

use crate::config::ModelConfig;
use crate::kv_cache::KvCache;
use crate::weights::{LayerWeights, LlamaWeights};
use crate::{ModelError, Result};
use kiln::ops::{
    self, AddParams, AttentionParams, CopyRowsParams, FusedEpilogue, FusedInputs, FusedOutputs,
    MatvecFusedParams, NormRopeParams, QkNormRopeKvInputs, QkNormRopeKvOutputs, QkNormRopeKvParams,
    QkvRope, RmsNormParams, RopeMode, RopeParams, SiluMulParams,
};
use kiln::{Stream, Tensor};
use kiln_core::ops::matvec_fused::FUSED_MAX_ROWS;

/// Preallocated activations for up to `n_batch` tokens per forward call.
pub struct Scratch {
    pub n_batch: usize,
    pub(crate) x: Tensor,    // [n_batch, d] residual stream
    pub(crate) x2: Tensor,   // [n_batch, d] next residual
    pub(crate) h: Tensor,    // [n_batch, d] normed
    pub(crate) q: Tensor,    // [n_batch, q_dim]
    pub(crate) k: Tensor,    // [n_batch, kv_dim]
    pub(crate) v: Tensor,    // [n_batch, kv_dim]
    pub(crate) att: Tensor,  // [n_batch, q_dim]
    pub(crate) o: Tensor,    // [n_batch, d]
    pub(crate) gate: Tensor, // [n_batch, ff]
    pub(crate) up: Tensor,   // [n_batch, ff]
    pub(crate) act: Tensor,  // [n_batch, ff]
    pub(crate) last: Tensor, // [1, d]
    /// `[1, q_dim + 2 kv_dim]`: one token's stacked q | k | v (the fused
    /// decode QKV of architectures that norm q and k per head, qwen3.rs).
    pub(crate) qkv: Tensor,
    /// Logits: `[n_batch, n_vocab]` when all rows are wanted, else row 0.
    pub logits: Tensor,
    pub(crate) positions: Vec<i32>,
    /// Mixture-of-experts architectures' FFN intermediates.
    pub(crate) moe: Option<crate::qwen3moe::MoeBuffers>,
}

impl Scratch {
    pub fn new(
        device: &Stream,
        cfg: &ModelConfig,
        n_batch: usize,
        all_logits: bool,
    ) -> Result<Scratch> {
        let z = |cols: usize| Tensor::zeros(device, &[n_batch, cols]);
        // Mixture-of-experts layers have no dense FFN (their intermediates
        // are `moe`'s): one column keeps the fields without the n_ff width.
        let ff = if cfg.arch_params.moe().is_some() {
            1
        } else {
            cfg.n_ff
        };
        Ok(Scratch {
            n_batch,
            x: z(cfg.n_embd)?,
            x2: z(cfg.n_embd)?,
            h: z(cfg.n_embd)?,
            q: z(cfg.q_dim())?,
            k: z(cfg.kv_dim())?,
            v: z(cfg.kv_dim())?,
            att: z(cfg.q_dim())?,
            o: z(cfg.n_embd)?,
            gate: z(ff)?,
            up: z(ff)?,
            act: z(ff)?,
            last: Tensor::zeros(device, &[1, cfg.n_embd])?,
            qkv: Tensor::zeros(device, &[1, cfg.q_dim() + 2 * cfg.kv_dim()])?,
            logits: Tensor::zeros(device, &[if all_logits { n_batch } else { 1 }, cfg.n_vocab])?,
            positions: Vec::with_capacity(n_batch),
            moe: match cfg.arch_params.moe() {
                Some(mp) => Some(crate::qwen3moe::MoeBuffers::new(device, cfg, mp, n_batch)?),
                None => None,
            },
        })
    }
}

/// Which logits a forward call computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsMode {
    /// Only the last token's (generation).
    Last,
    /// Every token's (perplexity); needs a scratch made with `all_logits`.
    All,
}

/// One forward call's input: tokens at positions `pos0..`.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub tokens: &'a [u32],
    pub pos0: usize,
    pub mode: LogitsMode,
    /// Read the position from the stream's device copy of the positions when
    /// the kernels run (KV append row, attention length) instead of baking
    /// `pos0` into the launches, and plan attention for the whole context:
    /// the launches are then the same at every position, so a CUDA graph
    /// recorded once replays for every decode step. Same results.
    pub device_pos: bool,
}

/// Run `b.tokens` (at most `scratch.n_batch`) at positions `b.pos0..`,
/// appending their keys and values to the cache. Logits land in
/// `scratch.logits`.
pub fn forward(
    s: &Stream,
    cfg: &ModelConfig,
    w: &LlamaWeights,
    cache: &mut KvCache,
    sc: &mut Scratch,
    b: &Batch<'_>,
) -> Result<()> {
    // One trip into the stream's workers for the whole pass (see Stream::install).
    s.install(|| forward_ops(s, cfg, w, cache, sc, b))
}

fn forward_ops(
    s: &Stream,
    cfg: &ModelConfig,
    w: &LlamaWeights,
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
    let n = start_batch(cache, sc, b)?;
    let d = cfg.n_embd;

    ops::embedding(s, &w.token_embd, tokens, &mut sc.x)?;

    let norm = RmsNormParams {
        rows: n,
        dim: d,
        eps: cfg.rms_eps,
    };
    let rope = |heads| RopeParams {
        n_tokens: n,
        n_heads: heads,
        head_dim: cfg.head_dim,
        n_rot: cfg.n_rot,
        freq_base: cfg.rope_base,
        freq_scale: cfg.rope_freq_scale,
        mode: RopeMode::Normal,
    };
    let kv = KvStep::new(cfg, cache, n, pos0, device_pos);
    let add = AddParams { n: n * d };

    let fused = FusedPlan {
        n,
        eps: cfg.rms_eps,
        qkv: QkvRope {
            q_dim: cfg.q_dim(),
            kv_dim: cfg.kv_dim(),
            head_dim: cfg.head_dim,
            n_rot: cfg.n_rot,
            freq_base: cfg.rope_base,
            freq_scale: cfg.rope_freq_scale,
            n_ctx: cache.n_ctx,
            ring: false,
        },
        plain_rope: w.rope_freqs.is_none(),
    };
    for (l, lw) in w.layers.iter().enumerate() {
        let kv = kv.layer(cache, l, cfg.attn_scale());
        // Each of the four fused pieces runs where its weights allow
        // (FusedPlan): e.g. a Q4_K_M file whose attn_v is Q6_K has no
        // stacked QKV, but its other three pieces still fuse.
        let fp = fused.layer(s, lw, cache, l)?;
        let pos = &sc.positions;
        // attention block
        if let Some((wqkv, qkv)) = &fp.qkv {
            // norm + [wq; wk; wv] + RoPE + KV append in one launch.
            let (kc, vc) = (&mut cache.k[l], &mut cache.v[l]);
            let outs = FusedOutputs {
                out: &mut sc.q,
                kv: Some((&mut *kc, &mut *vc)),
            };
            ops::matvec_fused(
                s,
                qkv,
                fin(wqkv, &sc.x, Some(&lw.attn_norm), None, pos),
                outs,
            )?;
            kv.attend(s, pos, &sc.q, kc, vc, &mut sc.att)?;
        } else {
            ops::rms_norm(s, &norm, &sc.x, &lw.attn_norm, &mut sc.h)?;
            ops::matmul(s, &lw.wq, &sc.h, n, &mut sc.q)?;
            ops::matmul(s, &lw.wk, &sc.h, n, &mut sc.k)?;
            ops::matmul(s, &lw.wv, &sc.h, n, &mut sc.v)?;
            let ff = w.rope_freqs.as_ref();
            ops::rope_with_factors(s, &rope(cfg.n_head), ff, pos, &mut sc.q)?;
            ops::rope_with_factors(s, &rope(cfg.n_head_kv), ff, pos, &mut sc.k)?;
            let (kc, vc) = (&mut cache.k[l], &mut cache.v[l]);
            kv.append_attend(s, pos, &sc.q, (&sc.k, &sc.v), (kc, vc), &mut sc.att)?;
        }
        if let Some(o) = &fp.o {
            let i_o = fin(&lw.wo, &sc.att, None, Some(&sc.x), pos);
            ops::matvec_fused(s, o, i_o, fout(&mut sc.x2))?;
        } else {
            ops::matmul(s, &lw.wo, &sc.att, n, &mut sc.o)?;
            ops::add(s, &add, &sc.x, &sc.o, &mut sc.x2)?;
        }
        // feed-forward block
        if let Some((w_gate_up, gate_up)) = &fp.gate_up {
            let i_gu = fin(w_gate_up, &sc.x2, Some(&lw.ffn_norm), None, pos);
            ops::matvec_fused(s, gate_up, i_gu, fout(&mut sc.act))?;
        } else {
            ops::rms_norm(s, &norm, &sc.x2, &lw.ffn_norm, &mut sc.h)?;
            ops::matmul(s, &lw.w_gate, &sc.h, n, &mut sc.gate)?;
            ops::matmul(s, &lw.w_up, &sc.h, n, &mut sc.up)?;
            let sm = SiluMulParams { n: n * cfg.n_ff };
            ops::silu_mul(s, &sm, &sc.gate, &sc.up, &mut sc.act)?;
        }
        if let Some(down) = &fp.down {
            let i_d = fin(&lw.w_down, &sc.act, None, Some(&sc.x2), pos);
            ops::matvec_fused(s, down, i_d, fout(&mut sc.x))?;
        } else {
            ops::matmul(s, &lw.w_down, &sc.act, n, &mut sc.o)?;
            ops::add(s, &add, &sc.x2, &sc.o, &mut sc.x)?;
        }
    }

    match mode {
        LogitsMode::All => {
            ops::rms_norm(s, &norm, &sc.x, &w.output_norm, &mut sc.h)?;
            ops::matmul(s, w.output(), &sc.h, n, &mut sc.logits)?;
        }
        LogitsMode::Last => {
            let head = fused.head(s, w)?;
            let x_last = if n == 1 {
                &sc.x
            } else {
                let pick = CopyRowsParams {
                    row_len: d,
                    n_rows: 1,
                    src_row: n - 1,
                    dst_row: 0,
                    dst_ring: None,
                };
                ops::copy_rows(s, &pick, &sc.x, &mut sc.last)?;
                &sc.last
            };
            if let Some(hp) = head {
                let i = FusedInputs {
                    w: w.output(),
                    x: x_last,
                    norm_w: Some(&w.output_norm),
                    residual: None,
                    positions: &[],
                };
                let o = FusedOutputs {
                    out: &mut sc.logits,
                    kv: None,
                };
                ops::matvec_fused(s, &hp, i, o)?;
            } else {
                let one = RmsNormParams {
                    rows: 1,
                    dim: d,
                    eps: cfg.rms_eps,
                };
                ops::rms_norm(s, &one, x_last, &w.output_norm, &mut sc.h)?;
                ops::matmul(s, w.output(), &sc.h, 1, &mut sc.logits)?;
            }
        }
    }
    Ok(())
}

/// Append a batch's keys and values to a layer's cache and attend over it:
/// the position baked into the launches (eager), or read from `positions`
/// on the device (`Batch::device_pos`: a recorded decode step, launched
/// with the bounds, and the split-KV plan, of the last position the cache
/// holds). Shared by the llama, qwen3 and gemma3 forwards.
#[derive(Clone, Copy)]
pub(crate) struct KvStep {
    attn: AttentionParams,
    append: CopyRowsParams,
    device_pos: bool,
}

impl KvStep {
    pub(crate) fn new(
        cfg: &ModelConfig,
        cache: &KvCache,
        n: usize,
        pos0: usize,
        device_pos: bool,
    ) -> KvStep {
        let at = if device_pos { cache.n_ctx - n } else { pos0 };
        KvStep {
            attn: AttentionParams {
                n_tokens: n,
                n_heads: cfg.n_head,
                n_kv_heads: cfg.n_head_kv,
                head_dim: cfg.head_dim,
                pos0: at,
                kv_stride: cache.n_ctx,
                scale: cfg.attn_scale(),
                window: None,
                softcap: None,
            },
            append: CopyRowsParams {
                row_len: cfg.kv_dim(),
                n_rows: n,
                src_row: 0,
                dst_row: at,
                dst_ring: None,
            },
            device_pos,
        }
    }

    /// The same step on layer `l` of `cache`: its rows (a ring for a
    /// sliding-window layer, `crate::kv_cache`), its window, and `scale`
    /// (Gemma 3's per-layer query scale; [`ModelConfig::attn_scale`]
    /// elsewhere).
    pub(crate) fn layer(mut self, cache: &KvCache, l: usize, scale: f32) -> KvStep {
        let rows = cache.rows.get(l).copied().unwrap_or(cache.n_ctx);
        self.attn.scale = scale;
        self.attn.window = cache.windows.get(l).copied().flatten();
        self.attn.kv_stride = rows;
        self.append.dst_ring = cache.is_ring(l).then_some(rows);
        self
    }

    /// Attention of `q` over the cache (its rows already appended).
    pub(crate) fn attend(
        &self,
        s: &Stream,
        positions: &[i32],
        q: &Tensor,
        kc: &Tensor,
        vc: &Tensor,
        out: &mut Tensor,
    ) -> kiln::Result<()> {
        if self.device_pos {
            ops::attention_at(s, &self.attn, positions, q, kc, vc, out)
        } else {
            ops::attention(s, &self.attn, q, kc, vc, out)
        }
    }

    /// The q/k norm + RoPE + KV append of a stacked `[q | k | v]` row
    /// ([`ops::qk_norm_rope_kv`]) at this step's cache rows (a ring's, and
    /// the device position when [`Batch::device_pos`]); `q` is q's norm +
    /// RoPE, k's the same with `n_heads_kv` heads. [`KvStep::attend`]
    /// follows.
    pub(crate) fn qk_norm_rope_append(
        &self,
        s: &Stream,
        q: NormRopeParams,
        n_heads_kv: usize,
        inputs: QkNormRopeKvInputs<'_>,
        outputs: QkNormRopeKvOutputs<'_>,
    ) -> kiln::Result<()> {
        let p = QkNormRopeKvParams {
            q,
            n_heads_kv,
            dst_row: self.append.dst_row,
            dst_ring: self.append.dst_ring,
        };
        if self.device_pos {
            ops::qk_norm_rope_kv_at(s, &p, inputs, outputs)
        } else {
            ops::qk_norm_rope_kv(s, &p, inputs, outputs)
        }
    }

    /// Append `(k, v)` to the cache `(kc, vc)`, then [`KvStep::attend`].
    pub(crate) fn append_attend(
        &self,
        s: &Stream,
        positions: &[i32],
        q: &Tensor,
        (k, v): (&Tensor, &Tensor),
        (kc, vc): (&mut Tensor, &mut Tensor),
        out: &mut Tensor,
    ) -> kiln::Result<()> {
        self.append_attend_rows(s, positions, q, ((k, 0), (v, 0)), (kc, vc), out)
    }

    /// [`KvStep::append_attend`] with the keys and values taken from row
    /// `k_row` of `k` and `v_row` of `v` on (rows of `kv_dim`; e.g. one
    /// token's stacked q | k | v).
    pub(crate) fn append_attend_rows(
        &self,
        s: &Stream,
        positions: &[i32],
        q: &Tensor,
        ((k, k_row), (v, v_row)): ((&Tensor, usize), (&Tensor, usize)),
        (kc, vc): (&mut Tensor, &mut Tensor),
        out: &mut Tensor,
    ) -> kiln::Result<()> {
        let ka = CopyRowsParams {
            src_row: k_row,
            ..self.append
        };
        let va = CopyRowsParams {
            src_row: v_row,
            ..self.append
        };
        if self.device_pos {
            ops::copy_rows_at(s, &ka, positions, k, kc)?;
            ops::copy_rows_at(s, &va, positions, v, vc)?;
        } else {
            ops::copy_rows(s, &ka, k, kc)?;
            ops::copy_rows(s, &va, v, vc)?;
        }
        self.attend(s, positions, q, kc, vc, out)
    }
}

/// Check a batch against the scratch and the cache and fill
/// `sc.positions`; the batch's token count. Shared by every architecture's
/// forward.
pub(crate) fn start_batch(cache: &KvCache, sc: &mut Scratch, b: &Batch<'_>) -> Result<usize> {
    let n = b.tokens.len();
    if n == 0 || n > sc.n_batch {
        return Err(ModelError::Input(format!(
            "forward: {n} tokens, batch holds 1..={}",
            sc.n_batch
        )));
    }
    if b.pos0 + n > cache.n_ctx {
        return Err(ModelError::ContextFull {
            needed: b.pos0 + n,
            n_ctx: cache.n_ctx,
        });
    }
    if b.mode == LogitsMode::All && sc.logits.dims()[0] < n {
        return Err(ModelError::Input(
            "forward: scratch was not made for all logits".into(),
        ));
    }
    sc.positions.clear();
    sc.positions.extend((b.pos0..b.pos0 + n).map(|p| p as i32));
    Ok(n)
}

/// The output norm and projection, unfused: every row's logits
/// ([`LogitsMode::All`]) or the last row's (`sc.x` holds the `n` final
/// hidden rows).
pub(crate) fn unfused_head(
    s: &Stream,
    cfg: &ModelConfig,
    w: &LlamaWeights,
    sc: &mut Scratch,
    n: usize,
    mode: LogitsMode,
) -> Result<()> {
    let d = cfg.n_embd;
    let norm = RmsNormParams {
        rows: n,
        dim: d,
        eps: cfg.rms_eps,
    };
    match mode {
        LogitsMode::All => {
            ops::rms_norm(s, &norm, &sc.x, &w.output_norm, &mut sc.h)?;
            ops::matmul(s, w.output(), &sc.h, n, &mut sc.logits)?;
        }
        LogitsMode::Last => {
            let x_last = if n == 1 {
                &sc.x
            } else {
                let pick = CopyRowsParams {
                    row_len: d,
                    n_rows: 1,
                    src_row: n - 1,
                    dst_row: 0,
                    dst_ring: None,
                };
                ops::copy_rows(s, &pick, &sc.x, &mut sc.last)?;
                &sc.last
            };
            let one = RmsNormParams { rows: 1, ..norm };
            ops::rms_norm(s, &one, x_last, &w.output_norm, &mut sc.h)?;
            ops::matmul(s, w.output(), &sc.h, 1, &mut sc.logits)?;
        }
    }
    Ok(())
}

/// When and how a forward call runs its layers as fused mat-vecs (CUDA,
/// at most `FUSED_MAX_ROWS` tokens): per layer, each where its weights allow
/// (a format with a fused kernel; the stacked weights exist when their
/// parts share a type)
/// 1. norm + `[wq; wk; wv]` + RoPE + KV append (then attention),
/// 2. `wo` + residual,
/// 3. norm + `[w_gate; w_up]` + SiLU·up,
/// 4. `w_down` + residual;
///
/// the same math as the unfused ops (each fused op's reference is their
/// composition): a fully fused layer is five launches instead of seventeen.
struct FusedPlan {
    n: usize,
    eps: f32,
    qkv: QkvRope,
    /// The QKV epilogue's RoPE has no frequency factors: false for files
    /// with `rope_freqs.weight` (Llama 3.x) or YaRN, whose QKV runs unfused.
    plain_rope: bool,
}

/// A layer's fused pieces (`None`: that piece runs unfused), with their
/// stacked weights.
struct LayerPlan<'w> {
    qkv: Option<(&'w Tensor, MatvecFusedParams)>,
    o: Option<MatvecFusedParams>,
    gate_up: Option<(&'w Tensor, MatvecFusedParams)>,
    down: Option<MatvecFusedParams>,
}

impl FusedPlan {
    /// The fused pieces of layer `l` (its cache rows, a ring or not); all
    /// `None` on the CPU or for batches over `FUSED_MAX_ROWS`.
    fn layer<'w>(
        &self,
        s: &Stream,
        lw: &'w LayerWeights,
        cache: &KvCache,
        l: usize,
    ) -> Result<LayerPlan<'w>> {
        let mut plan = LayerPlan {
            qkv: None,
            o: None,
            gate_up: None,
            down: None,
        };
        let (n, eps) = (self.n, Some(self.eps));
        if let (Some(wqkv), true) = (&lw.wqkv, self.plain_rope) {
            let qkv = QkvRope {
                n_ctx: cache.rows.get(l).copied().unwrap_or(cache.n_ctx),
                ring: cache.is_ring(l),
                ..self.qkv
            };
            plan.qkv = fused_piece(s, wqkv, n, eps, FusedEpilogue::Qkv(qkv))?.map(|p| (wqkv, p));
        }
        plan.o = fused_piece(s, &lw.wo, n, None, FusedEpilogue::Residual)?;
        if let Some(w_gate_up) = &lw.w_gate_up {
            let gu = fused_piece(s, w_gate_up, n, eps, FusedEpilogue::SwiGlu)?;
            plan.gate_up = gu.map(|p| (w_gate_up, p));
        }
        plan.down = fused_piece(s, &lw.w_down, n, None, FusedEpilogue::Residual)?;
        Ok(plan)
    }

    /// Output norm + projection of the last row as one fused mat-vec.
    fn head(&self, s: &Stream, w: &LlamaWeights) -> Result<Option<MatvecFusedParams>> {
        if s.device() == kiln::Device::Cpu {
            return Ok(None);
        }
        let p = ops::fused_params(w.output(), 1, Some(self.eps), FusedEpilogue::Store)?;
        Ok(ops::fused_available(s, &p).is_ok().then_some(p))
    }
}

/// The params of a fused mat-vec of weight `w` over `n` rows where `s` runs
/// one (CUDA, `n <= FUSED_MAX_ROWS`, a weight format with a kernel), else
/// `None` (the caller runs the unfused ops).
pub(crate) fn fused_piece(
    s: &Stream,
    w: &Tensor,
    n: usize,
    norm_eps: Option<f32>,
    epi: FusedEpilogue,
) -> kiln::Result<Option<MatvecFusedParams>> {
    if n > FUSED_MAX_ROWS || s.device() == kiln::Device::Cpu {
        return Ok(None);
    }
    let p = ops::fused_params(w, n, norm_eps, epi)?;
    Ok(ops::fused_available(s, &p).is_ok().then_some(p))
}

pub(crate) fn fin<'a>(
    w: &'a Tensor,
    x: &'a Tensor,
    norm_w: Option<&'a Tensor>,
    residual: Option<&'a Tensor>,
    positions: &'a [i32],
) -> FusedInputs<'a> {
    FusedInputs {
        w,
        x,
        norm_w,
        residual,
        positions,
    }
}

pub(crate) fn fout(out: &mut Tensor) -> FusedOutputs<'_> {
    FusedOutputs { out, kv: None }
}
