//! `kiln run`: generate from a prompt (optionally through the chat template).

use crate::common::{context_size, render_chat, ModelArgs, SampleArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_models::chat::ChatMessage;
use kiln_models::generate::{generate, GenParams, StopReason};
use kiln_models::model::DEFAULT_BATCH;
use kiln_models::sampler::Sampler;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sample: SampleArgs,
    /// Prompt text.
    #[arg(short = 'p', long = "prompt")]
    pub prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Tokens to generate.
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    pub n_predict: usize,
    /// Context size (0 = the model's, capped at 4096).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 0)]
    pub ctx: usize,
    /// Tokens per prompt-processing batch.
    #[arg(short = 'b', long = "batch-size", default_value_t = DEFAULT_BATCH)]
    pub batch: usize,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// System message (with --chat).
    #[arg(long = "system")]
    pub system: Option<String>,
    /// Keep generating past end-of-generation tokens.
    #[arg(long = "ignore-eos")]
    pub ignore_eos: bool,
    /// Do not echo the prompt.
    #[arg(long = "no-display-prompt")]
    pub no_display_prompt: bool,
}

pub fn run(a: RunArgs) -> Result<()> {
    let prompt = match (&a.prompt, &a.file) {
        (Some(p), None) => p.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("reading prompt file {}", f.display()))?,
        (Some(_), Some(_)) => bail!("give the prompt with -p or -f, not both"),
        (None, None) => bail!("no prompt: pass -p TEXT or -f FILE"),
    };
    if prompt.is_empty() {
        bail!("empty prompt: pass a non-empty -p TEXT");
    }
    if a.batch == 0 {
        bail!("--batch-size must be at least 1");
    }
    let params = a.sample.params();
    let mut sampler = Sampler::new(params)?;
    let (stream, model) = a.model.load()?;
    let n_ctx = context_size(a.ctx, &model);

    let (text, parse_special) = if a.chat {
        let mut msgs = Vec::new();
        if let Some(s) = &a.system {
            msgs.push(ChatMessage {
                role: "system".into(),
                content: s.clone(),
            });
        }
        msgs.push(ChatMessage {
            role: "user".into(),
            content: prompt.clone(),
        });
        (render_chat(&model, &msgs)?, true)
    } else {
        (prompt.clone(), false)
    };
    let tokens = model.tokenizer.encode(&text, true, parse_special)?;
    if tokens.is_empty() {
        bail!("the prompt tokenized to nothing");
    }
    if tokens.len() >= n_ctx {
        bail!(
            "prompt is {} tokens, the context holds {n_ctx} (raise -c)",
            tokens.len()
        );
    }
    let mut st = model.new_state(&stream, n_ctx, a.batch, false)?;
    eprintln!(
        "kiln: {} ({} layers, {}), device {}, context {n_ctx} ({} KV cache, {:.1} MiB{}), prompt {} tokens",
        model.config.name,
        model.config.n_layer,
        model
            .weights
            .layers
            .first()
            .map(|l| l.wq.dtype().to_string())
            .unwrap_or_else(|| "?".into()),
        stream.describe(),
        model.kv_type,
        st.cache.bytes() as f64 / (1 << 20) as f64,
        match st.cache.rows.iter().filter(|&&r| r < n_ctx).count() {
            0 => String::new(),
            n => format!("; {n} sliding-window layers as rings of {} rows", st.cache.rows.iter().min().unwrap_or(&n_ctx)),
        },
        tokens.len()
    );
    let mut out = std::io::stdout().lock();
    if !a.no_display_prompt && !a.chat {
        write!(out, "{prompt}")?;
        out.flush()?;
    }
    let n_predict = a.n_predict.min(n_ctx - tokens.len());
    let mut write_err = None;
    let (_, stats) = generate(
        &model,
        &stream,
        &mut st,
        &tokens,
        GenParams {
            n_predict,
            ignore_eos: a.ignore_eos,
        },
        &mut sampler,
        &mut |s| match out.write_all(s.as_bytes()).and_then(|_| out.flush()) {
            Ok(()) => ControlFlow::Continue(()),
            // Output closed (`kiln run | head`): stop generating.
            Err(e) => {
                write_err.get_or_insert(e);
                ControlFlow::Break(())
            }
        },
    )?;
    if let Some(e) = write_err {
        return Err(e).context("writing to stdout");
    }
    writeln!(out)?;
    let why = match stats.stop {
        StopReason::Length => "length",
        StopReason::EndOfGeneration => "end of generation",
        StopReason::ContextFull => "context full",
        StopReason::Stopped => "output closed",
    };
    eprintln!(
        "\nprompt: {} tokens in {:.1} ms ({:.1} t/s) | generation: {} tokens in {:.1} ms ({:.1} t/s) | stop: {why}",
        stats.prompt_tokens,
        stats.prompt_time.as_secs_f64() * 1e3,
        stats.prompt_tps(),
        stats.generated,
        stats.gen_time.as_secs_f64() * 1e3,
        stats.gen_tps()
    );
    Ok(())
}
