//! The KV cache: per layer, K and V rows `[n_ctx, n_head_kv, head_dim]` of
//! one element type ([`KvType`]: f32, or f16 / bf16, which halve its size;
//! the append rounds to nearest even and attention widens back to f32).
//! Position `p`'s keys live in row `p`; appending writes rows `pos..pos+n`.

use crate::config::ModelConfig;
use crate::Result;
use kiln::{Stream, Tensor};
use kiln_core::KvType;

/// Keys and values of every layer for up to `n_ctx` positions.
pub struct KvCache {
    pub k: Vec<Tensor>,
    pub v: Vec<Tensor>,
    pub n_ctx: usize,
    pub kv_type: KvType,
}

impl KvCache {
    pub fn new(s: &Stream, cfg: &ModelConfig, n_ctx: usize, kv_type: KvType) -> Result<KvCache> {
        let shape = [n_ctx, cfg.n_head_kv, cfg.head_dim];
        let mut k = Vec::with_capacity(cfg.n_layer);
        let mut v = Vec::with_capacity(cfg.n_layer);
        for _ in 0..cfg.n_layer {
            k.push(Tensor::zeros_of(s, kv_type.dtype(), &shape)?);
            v.push(Tensor::zeros_of(s, kv_type.dtype(), &shape)?);
        }
        Ok(KvCache {
            k,
            v,
            n_ctx,
            kv_type,
        })
    }

    /// Bytes held by the cache.
    pub fn bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(|t| t.byte_len()).sum()
    }
}
