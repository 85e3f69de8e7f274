//! Perplexity as llama.cpp's `perplexity` tool computes it: split the tokens
//! into non-overlapping chunks of `n_ctx`, run each chunk from an empty cache,
//! and score only the second half: for i in n_ctx/2 .. n_ctx-1 the model's
//! prediction at position i of token i+1. PPL = exp(mean NLL).

use crate::model::Model;
use crate::{ModelError, Result};
use kiln::Stream;

/// Result of a perplexity run.
#[derive(Debug, Clone)]
pub struct PplResult {
    pub n_ctx: usize,
    pub chunks: usize,
    /// Mean NLL of each chunk's scored tokens.
    pub chunk_nll: Vec<f64>,
    pub scored_tokens: usize,
    pub ppl: f64,
}

/// log-softmax of `logits` at `target`, in f64.
pub fn log_prob(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let sum: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
    logits[target] as f64 - max - sum.ln()
}

/// Perplexity over `tokens` with chunks of `n_ctx`; `max_chunks` limits the
/// work (0 = all). `on_chunk(i, running_ppl)` reports progress.
pub fn perplexity(
    model: &Model,
    stream: &Stream,
    tokens: &[u32],
    n_ctx: usize,
    max_chunks: usize,
    on_chunk: &mut dyn FnMut(usize, f64),
) -> Result<PplResult> {
    if n_ctx < 4 {
        return Err(ModelError::Input(format!(
            "perplexity: context {n_ctx} is too small (need >= 4)"
        )));
    }
    let mut chunks = tokens.len() / n_ctx;
    if max_chunks > 0 {
        chunks = chunks.min(max_chunks);
    }
    if chunks == 0 {
        return Err(ModelError::Input(format!(
            "perplexity: the text has {} tokens, fewer than one chunk of {n_ctx} (lower -c)",
            tokens.len()
        )));
    }
    let v = model.config.n_vocab;
    let first = n_ctx / 2;
    let mut st = model.new_state(stream, n_ctx, n_ctx, true)?;
    let mut chunk_nll = Vec::with_capacity(chunks);
    let mut chunk = Vec::with_capacity(n_ctx);
    let (mut total, mut count) = (0f64, 0usize);
    for c in 0..chunks {
        chunk.clear();
        chunk.extend_from_slice(&tokens[c * n_ctx..(c + 1) * n_ctx]);
        // As llama.cpp does: a model that wants BOS sees it at each chunk start.
        if let (true, Some(bos)) = (model.tokenizer.add_bos(), model.tokenizer.bos()) {
            chunk[0] = bos;
        }
        st.truncate(0);
        let logits = model.feed_all(stream, &mut st, &chunk)?;
        let mut nll = 0f64;
        for i in first..n_ctx - 1 {
            nll -= log_prob(&logits[i * v..(i + 1) * v], chunk[i + 1] as usize);
        }
        let n = n_ctx - 1 - first;
        total += nll;
        count += n;
        chunk_nll.push(nll / n as f64);
        on_chunk(c, (total / count as f64).exp());
    }
    Ok(PplResult {
        n_ctx,
        chunks,
        chunk_nll,
        scored_tokens: count,
        ppl: (total / count as f64).exp(),
    })
}
