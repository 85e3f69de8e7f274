//! The KV cache: per layer, K and V rows `[n_ctx, n_head_kv, head_dim]` in f32.
//! Position `p`'s keys live in row `p`; appending writes rows `pos..pos+n`.

use crate::config::ModelConfig;
use crate::Result;
use kiln::{Stream, Tensor};

/// Keys and values of every layer for up to `n_ctx` positions.
pub struct KvCache {
    pub k: Vec<Tensor>,
    pub v: Vec<Tensor>,
    pub n_ctx: usize,
}

impl KvCache {
    pub fn new(s: &Stream, cfg: &ModelConfig, n_ctx: usize) -> Result<KvCache> {
        let shape = [n_ctx, cfg.n_head_kv, cfg.head_dim];
        let mut k = Vec::with_capacity(cfg.n_layer);
        let mut v = Vec::with_capacity(cfg.n_layer);
        for _ in 0..cfg.n_layer {
            k.push(Tensor::zeros(s, &shape)?);
            v.push(Tensor::zeros(s, &shape)?);
        }
        Ok(KvCache { k, v, n_ctx })
    }

    /// Bytes held by the cache.
    pub fn bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(|t| t.byte_len()).sum()
    }
}
