//! `kiln perplexity -f TEXT -c 512`: llama.cpp's perplexity method.

use crate::common::ModelArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_models::perplexity::perplexity;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct PplArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text file to score.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Chunk size in tokens.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    pub ctx: usize,
    /// Score at most this many chunks (0 = all).
    #[arg(long = "chunks", default_value_t = 0)]
    pub chunks: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: PplArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    if text.trim().is_empty() {
        bail!("{} is empty", a.file.display());
    }
    if a.ctx < 4 {
        bail!("-c {} is too small for perplexity (need at least 4)", a.ctx);
    }
    let (stream, model) = a.model.load()?;
    let tokens = model.tokenizer.encode(&text, true, false)?;
    eprintln!(
        "perplexity: {} tokens, chunks of {}, device {}",
        tokens.len(),
        a.ctx,
        stream.describe()
    );
    let t0 = Instant::now();
    let r = perplexity(&model, &stream, &tokens, a.ctx, a.chunks, &mut |i, ppl| {
        eprint!("[{}]{ppl:.4} ", i + 1);
    })?;
    let secs = t0.elapsed().as_secs_f64();
    eprintln!();
    if a.json {
        let j = serde_json::json!({
            "n_ctx": r.n_ctx, "chunks": r.chunks, "scored_tokens": r.scored_tokens,
            "ppl": r.ppl, "chunk_nll": r.chunk_nll, "seconds": secs,
        });
        println!("{j}");
    } else {
        println!(
            "Final estimate: PPL = {:.4} over {} chunks of {} ({} scored tokens, {:.1} s, {:.1} t/s)",
            r.ppl, r.chunks, r.n_ctx, r.scored_tokens, secs, (r.chunks * r.n_ctx) as f64 / secs
        );
    }
    Ok(())
}
