//! The KV cache: per layer, K and V rows `[rows, n_head_kv, head_dim]` of
//! one element type ([`KvType`]: f32, or f16 / bf16, which halve its size;
//! the append rounds to nearest even and attention widens back to f32).
//!
//! A full-attention layer holds `n_ctx` rows, position `p` in row `p`. A
//! sliding-window layer (window `w`) needs only the last `w` positions:
//! with [`KvLayout::window_rings`] it holds a ring of `w + n_batch - 1`
//! rows (position `p` in row `p % rows`, `kiln_core::ops::attention`), the
//! fewest that keep every key a batch of up to `n_batch` tokens sees, as
//! llama.cpp's SWA cache does. Gemma 3 (5 of 6 layers local, window 512)
//! at 32k context then needs 19% of the full cache; a ring is never made
//! larger than `n_ctx`.
//!
//! A ring forgets: a position's keys are overwritten `rows` positions
//! later, so a conversation can be cut back by at most `rows - w + 1`
//! tokens ([`KvCache::oldest_restorable`]; `State::truncate` starts over
//! below it).

use crate::config::ModelConfig;
use crate::Result;
use kiln::{Stream, Tensor};
use kiln_core::KvType;

/// How a state's cache is laid out.
#[derive(Debug, Clone, PartialEq)]
pub struct KvLayout {
    /// Positions the conversation may hold.
    pub n_ctx: usize,
    /// Most tokens per forward call.
    pub n_batch: usize,
    /// The sliding window of each layer (`None`: full attention).
    pub windows: Vec<Option<usize>>,
    /// Keep sliding-window layers as rings (`false`: every layer holds
    /// `n_ctx` rows, llama.cpp's `--swa-full`).
    pub window_rings: bool,
    pub kv_type: KvType,
}

impl KvLayout {
    /// Rows of layer `l`'s cache (module docs).
    pub fn rows(&self, l: usize) -> usize {
        match self.windows.get(l).copied().flatten() {
            Some(w) if self.window_rings => w
                .saturating_add(self.n_batch.saturating_sub(1))
                .min(self.n_ctx),
            _ => self.n_ctx,
        }
    }
}

/// Keys and values of every layer for up to `n_ctx` positions.
pub struct KvCache {
    pub k: Vec<Tensor>,
    pub v: Vec<Tensor>,
    pub n_ctx: usize,
    /// Rows of each layer's K and V (`n_ctx`, or fewer for a ring).
    pub rows: Vec<usize>,
    /// Each layer's sliding window, as the layout gave it.
    pub windows: Vec<Option<usize>>,
    pub kv_type: KvType,
}

impl KvCache {
    pub fn new(s: &Stream, cfg: &ModelConfig, layout: &KvLayout) -> Result<KvCache> {
        let mut k = Vec::with_capacity(cfg.n_layer);
        let mut v = Vec::with_capacity(cfg.n_layer);
        let rows: Vec<usize> = (0..cfg.n_layer).map(|l| layout.rows(l)).collect();
        for &r in &rows {
            let shape = [r, cfg.n_head_kv, cfg.head_dim];
            k.push(Tensor::zeros_of(s, layout.kv_type.dtype(), &shape)?);
            v.push(Tensor::zeros_of(s, layout.kv_type.dtype(), &shape)?);
        }
        let windows = (0..cfg.n_layer)
            .map(|l| layout.windows.get(l).copied().flatten())
            .collect();
        Ok(KvCache {
            k,
            v,
            n_ctx: layout.n_ctx,
            rows,
            windows,
            kv_type: layout.kv_type,
        })
    }

    /// Whether layer `l` is a ring (holds fewer rows than positions).
    pub fn is_ring(&self, l: usize) -> bool {
        self.rows.get(l).is_some_and(|&r| r < self.n_ctx)
    }

    /// With `held` positions in the cache, the fewest a conversation can be
    /// cut back to and still find every key its next token sees (0 when
    /// nothing has been overwritten; cutting below it means starting over).
    pub fn oldest_restorable(&self, held: usize) -> usize {
        (0..self.rows.len())
            .filter(|&l| self.is_ring(l))
            .filter_map(|l| {
                let w = self.windows[l]?;
                // Keeping n positions, the next token (position n) sees
                // n - w + 1 ..= n, so n - w + 1 .. n must be in place: the
                // oldest survives while no later position of its row was
                // written, n - w + 1 + rows > held - 1.
                Some((held + w).saturating_sub(self.rows[l] + 1))
            })
            .max()
            .unwrap_or(0)
    }

    /// Bytes held by the cache.
    pub fn bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(|t| t.byte_len()).sum()
    }
}
