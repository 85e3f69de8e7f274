//! Generation: prompt processing, then sample → feed one token at a time,
//! streaming text out as complete UTF-8, with timings.

use crate::model::{Model, State};
use crate::sampler::Sampler;
use crate::{ModelError, Result};
use kiln::{Device, Stream};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

/// Timings of one generation.
#[derive(Debug, Clone, Default)]
pub struct GenStats {
    pub prompt_tokens: usize,
    pub prompt_time: Duration,
    pub generated: usize,
    pub gen_time: Duration,
    /// Why generation stopped.
    pub stop: StopReason,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StopReason {
    #[default]
    Length,
    EndOfGeneration,
    ContextFull,
    /// The text callback asked to stop (a stop string, a client gone).
    Stopped,
}

impl GenStats {
    pub fn prompt_tps(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_time.as_secs_f64().max(1e-9)
    }
    /// Tokens/s of the decode loop (first token's sampling included).
    pub fn gen_tps(&self) -> f64 {
        self.generated as f64 / self.gen_time.as_secs_f64().max(1e-9)
    }
}

/// Turns token bytes into text, holding back an incomplete UTF-8 sequence.
#[derive(Default)]
pub struct TextStream {
    pending: Vec<u8>,
}

impl TextStream {
    /// Append bytes; return whatever is now complete text.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            Err(e) if e.error_len().is_some() => {
                // Invalid (not merely incomplete): emit lossily.
                let s = String::from_utf8_lossy(&self.pending).into_owned();
                self.pending.clear();
                return s;
            }
            Err(e) => e.valid_up_to(),
        };
        let rest = self.pending.split_off(valid);
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending = rest;
        s
    }
    /// Whatever is left at the end.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

/// How much to generate.
#[derive(Debug, Clone, Copy)]
pub struct GenParams {
    /// Most tokens to generate.
    pub n_predict: usize,
    /// Keep going past end-of-generation tokens.
    pub ignore_eos: bool,
}

/// Process `prompt` (after what `st` holds) and generate up to
/// `p.n_predict` tokens, calling `on_text` with each complete piece of text.
/// Stops at an end-of-generation token unless `p.ignore_eos`, when the
/// context is full, or when `on_text` returns `Break` (then the text held
/// back as incomplete UTF-8 is dropped). `prompt` tokens enter the
/// sampler's history; a caller that kept a prefix in the cache accepts
/// that prefix into the sampler first.
pub fn generate(
    model: &Model,
    stream: &Stream,
    st: &mut State,
    prompt: &[u32],
    p: GenParams,
    sampler: &mut Sampler,
    on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
) -> Result<(Vec<u32>, GenStats)> {
    let GenParams {
        n_predict,
        ignore_eos,
    } = p;
    if prompt.is_empty() {
        return Err(ModelError::Input(
            "empty prompt: nothing to condition on".into(),
        ));
    }
    let mut stats = GenStats {
        prompt_tokens: prompt.len(),
        ..Default::default()
    };
    for &t in prompt {
        sampler.accept(t);
    }
    // Greedy decoding picks the token with the argmax op (on a GPU one word
    // comes back); other sampling on a GPU runs the sample op on the device
    // logits (one word too, the same token the host sampler would pick);
    // on the CPU the host sampler reads the logits in place.
    let greedy = sampler.is_plain_greedy();
    let on_device = stream.device() != Device::Cpu;
    let next = |st: &mut State, sampler: &mut Sampler, toks: &[u32]| -> Result<u32> {
        if greedy {
            model.feed_greedy(stream, st, toks)
        } else if on_device {
            model.feed_sample(stream, st, toks, sampler)
        } else {
            let logits = model.feed(stream, st, toks)?;
            Ok(sampler.sample(logits)?)
        }
    };
    let t0 = Instant::now();
    let mut tok = next(st, sampler, prompt)?;
    stats.prompt_time = t0.elapsed();

    let mut out = Vec::with_capacity(n_predict.min(st.n_ctx()));
    let mut text = TextStream::default();
    let t1 = Instant::now();
    while out.len() < n_predict {
        sampler.accept(tok);
        out.push(tok);
        stats.generated += 1;
        if !ignore_eos && model.tokenizer.is_eog(tok) {
            stats.stop = StopReason::EndOfGeneration;
            break;
        }
        let piece = text.push(&model.tokenizer.token_to_piece(tok, false)?);
        if !piece.is_empty() && on_text(&piece).is_break() {
            stats.stop = StopReason::Stopped;
            break;
        }
        if out.len() == n_predict {
            break;
        }
        if st.tokens.len() >= st.n_ctx() {
            stats.stop = StopReason::ContextFull;
            break;
        }
        tok = next(st, sampler, &[tok])?;
    }
    stats.gen_time = t1.elapsed();
    let rest = text.finish();
    if !rest.is_empty() && stats.stop != StopReason::Stopped && on_text(&rest).is_break() {
        stats.stop = StopReason::Stopped;
    }
    Ok((out, stats))
}
