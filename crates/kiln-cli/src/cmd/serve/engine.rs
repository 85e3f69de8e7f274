//! The model side of `kiln serve`: one model and one conversation state
//! (KV cache), owned by the thread that loaded them. Connection threads
//! send it [`Job`]s over a channel; it runs them one at a time, so a
//! request's prompt reuses the cache entries of the longest prefix it
//! shares with what the last request left there (`State::reuse_prefix`).
//!
//! Generation is `kiln_models::generate::generate` (the device-side greedy
//! / sample choice, UTF-8-safe streaming) with what a server adds in its
//! text callback: stop strings, and ending when the client goes away (a
//! send on its channel fails); the whole prompt enters the sampler's
//! repetition history even where the cache held part of it.

use super::api::{ApiError, GenRequest, Prompt, Usage};
use kiln::Stream;
use kiln_models::generate::{generate, GenParams, StopReason};
use kiln_models::model::State;
use kiln_models::sampler::Sampler;
use kiln_models::Model;
use serde_json::{json, Value};
use std::ops::ControlFlow;
use std::sync::mpsc::Sender;
use std::time::Instant;

/// Work for the engine thread.
pub type Job = Box<dyn FnOnce(&mut Engine) + Send>;

/// What a generation sends back, in order: text pieces, then `Done` or `Error`.
#[derive(Debug)]
pub enum Event {
    Text(String),
    Done { finish: &'static str, usage: Usage },
    Error(ApiError),
}

type Res<T> = Result<T, ApiError>;

/// The loaded model and its one conversation.
pub struct Engine {
    pub model: Model,
    pub stream: Stream,
    pub st: State,
}

impl Engine {
    /// The prompt as token ids (text with special tokens recognized; a
    /// conversation through the chat template, as `kiln chat` renders it).
    pub fn prompt_tokens(&self, p: &Prompt) -> Res<Vec<u32>> {
        let tk = &self.model.tokenizer;
        let encode = |text: &str| {
            tk.encode(text, true, true)
                .map_err(|e| ApiError::bad(format!("tokenizing the prompt: {e}")))
        };
        match p {
            Prompt::Text(s) => encode(s),
            Prompt::Chat(msgs) => {
                let text = crate::common::render_chat(&self.model, msgs)
                    .map_err(|e| ApiError::bad(e.to_string()))?;
                encode(&text)
            }
            Prompt::Tokens(ids) => {
                let n_vocab = tk.n_vocab();
                match ids.iter().find(|&&id| id as usize >= n_vocab) {
                    Some(id) => Err(ApiError::bad(format!(
                        "prompt token {id} is outside the vocabulary of {n_vocab}"
                    ))),
                    None => Ok(ids.clone()),
                }
            }
        }
    }

    /// Run one completion, sending its events to `tx`.
    pub fn generate(&mut self, req: GenRequest, tx: &Sender<Event>) {
        if let Err(e) = self.generate_inner(req, tx) {
            let _ = tx.send(Event::Error(e));
        }
    }

    /// A failure inside the model: forget the cache (it may be partly
    /// written) and answer 500.
    fn fail(&mut self, e: impl std::fmt::Display) -> ApiError {
        self.st.truncate(0);
        ApiError::new(500, format!("generation failed: {e}"))
    }

    fn generate_inner(&mut self, req: GenRequest, tx: &Sender<Event>) -> Res<()> {
        let tokens = self.prompt_tokens(&req.prompt)?;
        let n_ctx = self.st.n_ctx();
        if tokens.is_empty() {
            return Err(ApiError::bad("the prompt tokenized to nothing"));
        }
        if tokens.len() >= n_ctx {
            return Err(ApiError::bad(format!(
                "the prompt is {} tokens and the context holds {n_ctx}: shorten it or start the server with a larger -c",
                tokens.len()
            )));
        }
        let mut sampler = Sampler::new(req.sampler).map_err(|e| ApiError::bad(e.to_string()))?;
        let n_predict = req.max_tokens.unwrap_or(usize::MAX);
        let mut usage = Usage {
            prompt_tokens: tokens.len(),
            ..Usage::default()
        };
        let keep = self.st.reuse_prefix(&tokens);
        usage.cached_tokens = keep;
        if n_predict == 0 {
            // Only process the prompt (llama.cpp's way to fill the cache).
            let t0 = Instant::now();
            let (m, s) = (&self.model, &self.stream);
            let r = m.eval(s, &mut self.st, &tokens[keep..]);
            r.and_then(|()| Ok(s.synchronize()?))
                .map_err(|e| self.fail(e))?;
            usage.prompt_ms = t0.elapsed().as_secs_f64() * 1e3;
            let _ = tx.send(Event::Done {
                finish: "length",
                usage,
            });
            return Ok(());
        }
        // The kept prefix enters the sampler's history; generate adds the rest.
        for &t in &tokens[..keep] {
            sampler.accept(t);
        }
        let mut stops = StopFilter::new(req.stop);
        let (mut hit, mut gone) = (false, false);
        let (m, s) = (&self.model, &self.stream);
        let params = GenParams {
            n_predict,
            ignore_eos: req.ignore_eos,
        };
        let r = generate(
            m,
            s,
            &mut self.st,
            &tokens[keep..],
            params,
            &mut sampler,
            &mut |piece| {
                let (out, h) = stops.push(piece);
                if !out.is_empty() && tx.send(Event::Text(out)).is_err() {
                    // The client went away: stop generating.
                    gone = true;
                    return ControlFlow::Break(());
                }
                hit = h;
                if h {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        );
        let (out, stats) = r.map_err(|e| self.fail(e))?;
        if gone {
            return Ok(());
        }
        usage.completion_tokens = out.len();
        usage.prompt_ms = stats.prompt_time.as_secs_f64() * 1e3;
        usage.gen_ms = stats.gen_time.as_secs_f64() * 1e3;
        // Out of tokens, or the context is full: "length" either way.
        let finish = match stats.stop {
            StopReason::EndOfGeneration | StopReason::Stopped => "stop",
            StopReason::Length | StopReason::ContextFull => "length",
        };
        if !hit {
            let rest = stops.finish();
            if !rest.is_empty() {
                let _ = tx.send(Event::Text(rest));
            }
        }
        let _ = tx.send(Event::Done { finish, usage });
        Ok(())
    }

    /// `/tokenize`: ids, or `{id, piece}` pairs (a piece that is not whole
    /// UTF-8 as its bytes, as llama.cpp's server does).
    pub fn tokenize(
        &self,
        content: &str,
        add_special: bool,
        parse_special: bool,
        with_pieces: bool,
    ) -> Res<Value> {
        let tk = &self.model.tokenizer;
        let ids = tk
            .encode(content, add_special, parse_special)
            .map_err(|e| ApiError::bad(format!("tokenizing `content`: {e}")))?;
        if !with_pieces {
            return Ok(json!({ "tokens": ids }));
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let bytes = tk
                .token_to_piece(id, true)
                .map_err(|e| ApiError::new(500, e.to_string()))?;
            let piece = match String::from_utf8(bytes) {
                Ok(s) => json!(s),
                Err(e) => json!(e.into_bytes()),
            };
            out.push(json!({"id": id, "piece": piece}));
        }
        Ok(json!({ "tokens": out }))
    }

    /// `/detokenize`: the text of `ids`, control tokens rendered (so that
    /// `/tokenize`'s output round-trips).
    pub fn detokenize(&self, ids: &[u32]) -> Res<Value> {
        let content = self
            .model
            .tokenizer
            .decode_with(ids, true)
            .map_err(|e| ApiError::bad(format!("`tokens`: {e}")))?;
        Ok(json!({ "content": content }))
    }
}

/// Holds back text that may be the start of a stop string, and cuts the
/// text at the first stop string.
#[derive(Debug, Default)]
pub struct StopFilter {
    stops: Vec<String>,
    /// Text not sent yet: a suffix that is a proper prefix of a stop string.
    held: String,
}

impl StopFilter {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops,
            held: String::new(),
        }
    }

    /// Add `piece`; returns the text that can be sent and whether a stop
    /// string was found (the text then ends just before it).
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        if self.stops.is_empty() {
            return (piece.to_string(), false);
        }
        self.held.push_str(piece);
        // No stop string can start in text already sent (it was sent
        // because no suffix of it began one), so search only `held`.
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first {
            let out = self.held[..at].to_string();
            self.held.clear();
            return (out, true);
        }
        let keep = self
            .stops
            .iter()
            .map(|s| {
                (1..s.len())
                    .rev()
                    .find(|&k| s.is_char_boundary(k) && self.held.ends_with(&s[..k]))
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        let out = self.held[..self.held.len() - keep].to_string();
        self.held.drain(..self.held.len() - keep);
        (out, false)
    }

    /// What is still held at the end (no stop string completed).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::StopFilter;

    /// Feed `pieces`; the text sent and whether it stopped.
    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut f = StopFilter::new(stops.iter().map(|s| s.to_string()).collect());
        let mut sent = String::new();
        for p in pieces {
            let (out, hit) = f.push(p);
            sent.push_str(&out);
            if hit {
                return (sent, true);
            }
        }
        sent.push_str(&f.finish());
        (sent, false)
    }

    #[test]
    fn stop_strings() {
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
        assert_eq!(run(&["\n"], &["ab", "c\nd"]), ("abc".into(), true));
        // Split across pieces.
        assert_eq!(run(&["END"], &["xxE", "N", "Dyy"]), ("xx".into(), true));
        // A false start is released.
        assert_eq!(run(&["END"], &["xxE", "N", "x"]), ("xxENx".into(), false));
        assert_eq!(run(&["END"], &["xxEN"]), ("xxEN".into(), false));
        // The earliest of several.
        assert_eq!(run(&["cd", "b"], &["abcd"]), ("a".into(), true));
        // Multi-byte characters.
        assert_eq!(run(&["é!"], &["café", "!"]), ("caf".into(), true));
        assert_eq!(run(&["éa"], &["xé", "b"]), ("xéb".into(), false));
    }

    #[test]
    fn held_text_is_sent_as_soon_as_it_cannot_start_a_stop() {
        let mut f = StopFilter::new(vec!["abc".into()]);
        assert_eq!(f.push("xa"), ("x".into(), false));
        assert_eq!(f.push("b"), ("".into(), false));
        assert_eq!(f.push("d"), ("abd".into(), false));
    }
}
