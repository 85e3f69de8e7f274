//! The step between a Qwen3-style stacked QKV projection and attention:
//! per-head RMSNorm + RoPE of the q and k spans of `[q | k | v]` rows, q
//! into `q_out`, k and v appended to the KV caches (f32, f16 or bf16; plain
//! or ring), spec `kiln_core::ops::qk_norm_rope_kv`. One CUDA launch where
//! `copy_rows` + 2 `norm_rope` + 2 `copy_rows` take five.
use crate::device::Backend;
use crate::{Result, Stream, Tensor};
use kiln_core::ops::qk_norm_rope_kv::{QkNormRopeKvLens, QkNormRopeKvParams};

/// The inputs: `qkv` (f32, `[n_tokens, q_dim + 2 kv_dim]`), the norm
/// weights (f32, `[head_dim]`), optional frequency factors (f32, `[n_rot /
/// 2]`; on the CPU every call checks their values, a CUDA stream their
/// length only: check them once where they are loaded) and the host
/// positions (reaching a CUDA stream through its device copy).
pub struct QkNormRopeKvInputs<'a> {
    pub qkv: &'a Tensor,
    pub q_norm: &'a Tensor,
    pub k_norm: &'a Tensor,
    pub factors: Option<&'a Tensor>,
    pub positions: &'a [i32],
}

/// The outputs: `q_out` (f32, `[n_tokens, q_dim]`) and the layer's caches
/// (the whole tensors; both of one dtype on CUDA).
pub struct QkNormRopeKvOutputs<'a> {
    pub q_out: &'a mut Tensor,
    pub k_cache: &'a mut Tensor,
    pub v_cache: &'a mut Tensor,
}

/// Cache rows from `p.dst_row` (see the module docs).
pub fn qk_norm_rope_kv(
    s: &Stream,
    p: &QkNormRopeKvParams,
    i: QkNormRopeKvInputs<'_>,
    o: QkNormRopeKvOutputs<'_>,
) -> Result<()> {
    run(s, p, false, i, o)
}

/// [`qk_norm_rope_kv`] with the cache rows from `positions[0]` (the step a
/// CUDA graph records once, as [`super::copy_rows_at`]): on CUDA the row is
/// read from the stream's device copy of the positions when the kernel
/// runs. `p.dst_row` is the largest row allowed (the bounds are checked
/// for it); `positions[0]` must be in `0..=p.dst_row`.
pub fn qk_norm_rope_kv_at(
    s: &Stream,
    p: &QkNormRopeKvParams,
    i: QkNormRopeKvInputs<'_>,
    o: QkNormRopeKvOutputs<'_>,
) -> Result<()> {
    run(s, p, true, i, o)
}

fn run(
    s: &Stream,
    p: &QkNormRopeKvParams,
    at: bool,
    i: QkNormRopeKvInputs<'_>,
    o: QkNormRopeKvOutputs<'_>,
) -> Result<()> {
    const OP: &str = "qk_norm_rope_kv";
    let _timer = s.scope(OP);
    let r = &p.q.rope;
    // Checked before the prefixes are taken, so an overflowing shape is a
    // typed error, not a wrapped length.
    let n_qkv = r.n_tokens.saturating_mul(p.row_len());
    let n_q = r.n_tokens.saturating_mul(p.q_dim());
    let (nk, nv) = (o.k_cache.numel(), o.v_cache.numel());
    p.validate(&QkNormRopeKvLens {
        qkv: n_qkv,
        q_norm: r.head_dim,
        k_norm: r.head_dim,
        positions: i.positions.len(),
        q_out: n_q,
        k_cache: nk,
        v_cache: nv,
    })?;
    if at {
        p.at(i.positions)?;
    }
    let n_factors = r.n_rot / 2;
    match s.backend() {
        Backend::Cpu(ctx) => {
            use kiln_core::ops::qk_norm_rope_kv::QkNormRopeKvIo;
            let io = QkNormRopeKvIo {
                qkv: i.qkv.f32_prefix(OP, "qkv", n_qkv)?,
                q_norm: i.q_norm.f32_prefix(OP, "q_norm", r.head_dim)?,
                k_norm: i.k_norm.f32_prefix(OP, "k_norm", r.head_dim)?,
                factors: i
                    .factors
                    .map(|f| f.f32_prefix(OP, "frequency factors", n_factors))
                    .transpose()?,
                positions: i.positions,
                q_out: o.q_out.f32_prefix_mut(OP, "q_out", n_q)?,
                k_cache: o.k_cache.kv_slice_mut(OP, "k_cache", nk)?,
                v_cache: o.v_cache.kv_slice_mut(OP, "v_cache", nv)?,
            };
            use kiln_cpu::qk_norm_rope_kv as k;
            let r = if at {
                k::qk_norm_rope_kv_at(ctx, p, io)
            } else {
                k::qk_norm_rope_kv(ctx, p, io)
            };
            Ok(r?)
        }
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            use kiln_cuda::qk_norm_rope_kv as k;
            let qkv = i.qkv.cuda_f32(OP, "qkv", n_qkv)?;
            let q_norm = i.q_norm.cuda_f32(OP, "q_norm", r.head_dim)?;
            let k_norm = i.k_norm.cuda_f32(OP, "k_norm", r.head_dim)?;
            let f = i
                .factors
                .map(|f| f.cuda_f32(OP, "frequency factors", n_factors))
                .transpose()?;
            let q_out_t = o.q_out;
            let mut kc = o.k_cache.cuda_kv_mut(OP, "k_cache", nk)?;
            let mut vc = o.v_cache.cuda_kv_mut(OP, "v_cache", nv)?;
            s.with_device_positions(be, i.positions, |pos| {
                // Made here: its view's lifetime is then no longer than the
                // positions' (a mutable view's is fixed).
                let mut q_out = q_out_t.cuda_f32_mut(OP, "q_out", n_q)?;
                let a = k::QkNormRopeKvArgs {
                    qkv: &qkv,
                    q_norm: &q_norm,
                    k_norm: &k_norm,
                    factors: f.as_ref(),
                    positions: pos,
                    q_out: &mut q_out,
                    k_cache: kc.view(),
                    v_cache: vc.view(),
                };
                if at {
                    k::qk_norm_rope_kv_at(be, p, a)
                } else {
                    k::qk_norm_rope_kv(be, p, a)
                }
                .map_err(super::cuda_err)
            })
        }
    }
}
