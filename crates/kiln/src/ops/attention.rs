//! Causal GQA attention of `p.n_tokens` queries over a KV cache.
use crate::device::Backend;
use crate::{ops::AttentionParams, Result, Stream, Tensor};

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
    let q_len = p.n_tokens * p.n_heads * p.head_dim;
    let kv_len = p.kv_stride * p.n_kv_heads * p.head_dim;
    match s.backend() {
        Backend::Cpu(ctx) => {
            let q = q.f32_prefix(OP, "q", q_len)?;
            let k = k_cache.f32_prefix(OP, "k_cache", kv_len)?;
            let v = v_cache.f32_prefix(OP, "v_cache", kv_len)?;
            let out = out.f32_prefix_mut(OP, "out", q_len)?;
            Ok(kiln_cpu::attention::attention(ctx, p, q, k, v, out)?)
        }
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            let q = q.cuda_f32(OP, "q", q_len)?;
            let k = k_cache.cuda_f32(OP, "k_cache", kv_len)?;
            let v = v_cache.cuda_f32(OP, "v_cache", kv_len)?;
            let mut out = out.cuda_f32_mut(OP, "out", q_len)?;
            kiln_cuda::attention::attention(be, p, &q, &k, &v, &mut out).map_err(super::cuda_err)
        }
    }
}
