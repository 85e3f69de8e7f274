//! `kiln chat`: interactive multi-turn chat. Each turn re-renders the whole
//! conversation with the chat template and only feeds the tokens that differ
//! from what the KV cache already holds.

use crate::common::{context_size, render_chat, ModelArgs, SampleArgs};
use anyhow::{bail, Result};
use clap::Args;
use kiln_models::chat::ChatMessage;
use kiln_models::generate::{generate, GenParams};
use kiln_models::model::DEFAULT_BATCH;
use kiln_models::sampler::Sampler;
use std::io::{BufRead, Write};

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sample: SampleArgs,
    /// Most tokens per reply.
    #[arg(short = 'n', long = "n-predict", default_value_t = 512)]
    pub n_predict: usize,
    /// Context size (0 = the model's, capped at 4096).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 0)]
    pub ctx: usize,
    /// System message.
    #[arg(long = "system")]
    pub system: Option<String>,
}

pub fn run(a: ChatArgs) -> Result<()> {
    let mut sampler = Sampler::new(a.sample.params())?;
    let (stream, model) = a.model.load()?;
    let n_ctx = context_size(a.ctx, &model);
    let mut st = model.new_state(&stream, n_ctx, DEFAULT_BATCH, false)?;
    let mut msgs: Vec<ChatMessage> = Vec::new();
    if let Some(s) = &a.system {
        msgs.push(ChatMessage {
            role: "system".into(),
            content: s.clone(),
        });
    }
    eprintln!(
        "kiln chat: {} on {}. Type a message; /exit or end of input quits.",
        model.config.name,
        stream.describe()
    );
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut out = std::io::stdout();
    loop {
        write!(out, "> ")?;
        out.flush()?;
        let Some(line) = lines.next() else { break };
        let line = line?;
        let line = line.trim();
        if line == "/exit" || line == "/quit" {
            break;
        }
        if line.is_empty() {
            continue;
        }
        msgs.push(ChatMessage {
            role: "user".into(),
            content: line.to_string(),
        });
        let text = render_chat(&model, &msgs)?;
        let tokens = model.tokenizer.encode(&text, true, true)?;
        if tokens.len() >= n_ctx {
            bail!(
                "the conversation is {} tokens, the context holds {n_ctx} (raise -c)",
                tokens.len()
            );
        }
        let keep = st.reuse_prefix(&tokens);
        sampler.reset();
        let n_predict = a.n_predict.min(n_ctx - tokens.len());
        let mut reply = String::new();
        let (_, stats) = generate(
            &model,
            &stream,
            &mut st,
            &tokens[keep..],
            GenParams {
                n_predict,
                ignore_eos: false,
            },
            &mut sampler,
            &mut |s| {
                reply.push_str(s);
                print!("{s}");
                let _ = std::io::stdout().flush();
                std::ops::ControlFlow::Continue(())
            },
        )?;
        println!();
        eprintln!(
            "[{} new prompt tokens, {} generated, {:.1} t/s]",
            stats.prompt_tokens,
            stats.generated,
            stats.gen_tps()
        );
        msgs.push(ChatMessage {
            role: "assistant".into(),
            content: reply.trim().to_string(),
        });
    }
    Ok(())
}
