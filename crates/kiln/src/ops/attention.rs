//! Causal GQA attention of `p.n_tokens` queries over a KV cache. The cache
//! tensors' dtype picks the kernels: F32, F16 or BF16 (`kiln_core::KvType`),
//! K and V alike.
use crate::device::Backend;
use crate::{ops::AttentionParams, Result, Stream, Tensor};

/// K and V caches of one type, or a typed error naming both.
fn check_caches(op: &'static str, k: &Tensor, v: &Tensor) -> Result<()> {
    if k.dtype() != v.dtype() {
        return Err(kiln_core::Error::invalid(
            op,
            format!("k cache is {} but v cache is {}", k.dtype(), v.dtype()),
        )
        .into());
    }
    kiln_core::KvType::from_dtype(op, k.dtype())?;
    Ok(())
}

pub fn attention(
    s: &Stream,
    p: &AttentionParams,
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    out: &mut Tensor,
) -> Result<()> {
    const OP: &str = "attention";
    let _timer = s.scope(OP);
    check_caches(OP, k_cache, v_cache)?;
    let q_len = p.n_tokens * p.n_heads * p.head_dim;
    let kv_len = p.kv_stride * p.n_kv_heads * p.head_dim;
    match s.backend() {
        Backend::Cpu(ctx) => {
            let q = q.f32_prefix(OP, "q", q_len)?;
            let k = k_cache.kv_slice(OP, "k_cache", kv_len)?;
            let v = v_cache.kv_slice(OP, "v_cache", kv_len)?;
            let out = out.f32_prefix_mut(OP, "out", q_len)?;
            Ok(kiln_cpu::attention::attention(ctx, p, q, k, v, out)?)
        }
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            let q = q.cuda_f32(OP, "q", q_len)?;
            let k = k_cache.cuda_kv(OP, "k_cache", kv_len)?;
            let v = v_cache.cuda_kv(OP, "v_cache", kv_len)?;
            let mut out = out.cuda_f32_mut(OP, "out", q_len)?;
            kiln_cuda::attention::attention(be, p, &q, k.view(), v.view(), &mut out)
                .map_err(super::cuda_err)
        }
    }
}

/// [`attention`] with query 0 at position `positions[0]` (a decode step that
/// a CUDA graph records once): on CUDA the position is read from the
/// stream's device copy of `positions` when the kernel runs, and the
/// split-KV plan is made for `p.pos0`, the largest position allowed (e.g.
/// `kv_stride - n_tokens`). `positions[0]` must be in `0..=p.pos0`.
pub fn attention_at(
    s: &Stream,
    p: &AttentionParams,
    positions: &[i32],
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    out: &mut Tensor,
) -> Result<()> {
    const OP: &str = "attention_at";
    let pos0 = match positions.first() {
        Some(&r) if r >= 0 && (r as usize) <= p.pos0 => r as usize,
        other => {
            return Err(kiln_core::Error::invalid(
                OP,
                format!("position {other:?} is not in 0..={}", p.pos0),
            )
            .into())
        }
    };
    check_caches(OP, k_cache, v_cache)?;
    match s.backend() {
        Backend::Cpu(_) => attention(s, &AttentionParams { pos0, ..*p }, q, k_cache, v_cache, out),
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            let _timer = s.scope("attention");
            let q_len = p.n_tokens * p.n_heads * p.head_dim;
            let kv_len = p.kv_stride * p.n_kv_heads * p.head_dim;
            let q = q.cuda_f32(OP, "q", q_len)?;
            let k = k_cache.cuda_kv(OP, "k_cache", kv_len)?;
            let v = v_cache.cuda_kv(OP, "v_cache", kv_len)?;
            let mut out = out.cuda_f32_mut(OP, "out", q_len)?;
            s.with_device_positions(be, positions, |pos| {
                kiln_cuda::attention::attention_at(be, p, pos, &q, (k.view(), v.view()), &mut out)
                    .map_err(super::cuda_err)
            })
        }
    }
}
