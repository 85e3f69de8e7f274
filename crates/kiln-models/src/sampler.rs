//! Token sampling: the llama.cpp-style default chain, as the `sample` op.
//!
//! Order, as llama.cpp's default sampler chain (common/sampling):
//! repetition penalty → top-k → top-p → min-p → temperature → softmax →
//! one draw. The chain itself is `kiln_core::ops::sample` (spec and
//! reference there); the sampler holds what persists between tokens: the
//! settings, the repetition history and a seeded ChaCha20 stream that
//! supplies each call's uniform draw `u`. Because the op's result is a
//! pure function of (logits, history, u), the CPU (here, on host logits)
//! and the GPU (`kiln::ops::sample` on device logits, [`crate::Model`]'s
//! `feed_sample`) pick the same token for the same seed.
//!
//! Semantics of each stage (see the op for the exact rules):
//! - repetition penalty: every *distinct* token among the last
//!   `repeat_last_n` accepted tokens has its logit divided by the penalty when
//!   positive, multiplied by it otherwise (CTRL paper, as in llama.cpp).
//! - top-k: keep the logits at least the k-th largest (ties at the
//!   threshold kept, so sometimes more than k).
//! - top-p: on the softmax of the top-k survivors (temperature 1), keep the
//!   tokens at least as likely as the least likely member of the smallest
//!   high-probability set whose mass reaches `top_p` (ties kept).
//! - min-p: keep tokens whose probability is at least `min_p` times the
//!   largest one, i.e. `logit >= max_logit + ln(min_p)`.
//! - temperature: divide logits by `temperature`, then softmax as integer
//!   weights, and one draw walking the kept tokens in id order.
//!
//! Logit hygiene: NaN and `-inf` logits are never chosen; `+inf` logits are
//! treated as certain (the draw is uniform among them); logits with no finite
//! or `+inf` value are an error. Every stage keeps at least one token.
//! Temperature 0 is the argmax after the penalty (first of equal maxima).
//!
//! Each [`Sampler::sample`] call consumes exactly one draw of the stream
//! (temperature 0 included), so the sequence depends only on the number
//! of calls. The sampler's buffers are sized to the vocabulary on the
//! first call; later calls with the same vocabulary do not allocate.

use kiln::ops::sample::{sample_host, SampleScratch, NO_TOKEN};
use kiln::ops::SampleParams;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Errors from sampler configuration and sampling.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplerError {
    /// A sampling parameter is out of its valid range.
    #[error("invalid sampler setting {flag} {value}: expected {expected}")]
    InvalidParam {
        /// The llama.cpp-style flag name, e.g. `--top-p`.
        flag: &'static str,
        /// The rejected value.
        value: f32,
        /// The valid range, in words.
        expected: &'static str,
    },
    /// `sample` was called with an empty logit slice.
    #[error("sampler: logits are empty")]
    EmptyLogits,
    /// No logit is finite (or `+inf`): nothing can be sampled.
    #[error("sampler: none of the {n_vocab} logits is finite (all NaN or -inf)")]
    NoFiniteLogits {
        /// Length of the logit slice.
        n_vocab: usize,
    },
    /// The sample op refused the call (e.g. a vocabulary past 2^31 - 1).
    #[error("sampler: {0}")]
    Op(String),
}

/// Sampling parameters; defaults are llama.cpp's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerParams {
    /// Softmax temperature; 0 means greedy (argmax). Negative is rejected.
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 = off.
    pub top_k: usize,
    /// Nucleus sampling mass in (0, 1]; 1.0 = off.
    pub top_p: f32,
    /// Minimum probability relative to the most likely token, in [0, 1]; 0 = off.
    pub min_p: f32,
    /// Repetition penalty > 0; 1.0 = off.
    pub repeat_penalty: f32,
    /// How many of the last accepted tokens the penalty looks at; 0 = off.
    pub repeat_last_n: usize,
    /// Seed of the ChaCha RNG used for the draw.
    pub seed: u64,
}

impl Default for SamplerParams {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

impl SamplerParams {
    /// Greedy decoding (temperature 0), other settings default.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Check every field's range; the error names the flag and its value.
    pub fn validate(&self) -> Result<(), SamplerError> {
        let bad = |flag, value, expected| {
            Err(SamplerError::InvalidParam {
                flag,
                value,
                expected,
            })
        };
        let t = self.temperature;
        if !t.is_finite() || t < 0.0 {
            return bad("--temp", t, "a finite value >= 0");
        }
        let p = self.top_p;
        if !(p > 0.0 && p <= 1.0) {
            return bad("--top-p", p, "a value in (0, 1]");
        }
        let m = self.min_p;
        if !(0.0..=1.0).contains(&m) {
            return bad("--min-p", m, "a value in [0, 1]");
        }
        let r = self.repeat_penalty;
        if !r.is_finite() || r <= 0.0 {
            return bad("--repeat-penalty", r, "a finite value > 0");
        }
        Ok(())
    }
}

/// Stateful sampler: RNG, repetition history and scratch buffers.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplerParams,
    rng: ChaCha20Rng,
    /// Ring of the last `repeat_last_n` accepted tokens.
    history: Vec<u32>,
    /// Next write position in `history` once it is full.
    history_pos: usize,
    /// The sample op's host buffers.
    scratch: SampleScratch,
}

impl Sampler {
    /// Validate `params` and build a sampler seeded with `params.seed`.
    pub fn new(params: SamplerParams) -> Result<Self, SamplerError> {
        params.validate()?;
        Ok(Self {
            params,
            rng: ChaCha20Rng::seed_from_u64(params.seed),
            history: Vec::with_capacity(params.repeat_last_n),
            history_pos: 0,
            scratch: SampleScratch::default(),
        })
    }

    /// The parameters this sampler was built with.
    pub fn params(&self) -> &SamplerParams {
        &self.params
    }

    /// Record a token (prompt or generated) for the repetition penalty.
    pub fn accept(&mut self, token: u32) {
        let n = self.params.repeat_last_n;
        if n == 0 {
            return;
        }
        if self.history.len() < n {
            self.history.push(token);
        } else {
            self.history[self.history_pos] = token;
            self.history_pos = (self.history_pos + 1) % n;
        }
    }

    /// Forget the history and reseed the RNG: the sampler behaves as new.
    pub fn reset(&mut self) {
        self.history.clear();
        self.history_pos = 0;
        self.rng = ChaCha20Rng::seed_from_u64(self.params.seed);
    }

    /// True when [`Sampler::sample`] reduces to the argmax of the raw
    /// logits (temperature 0, no repetition penalty), so the engine may pick
    /// the token on the device ([`crate::Model::feed_greedy`]).
    pub fn is_plain_greedy(&self) -> bool {
        let p = &self.params;
        p.temperature <= 0.0 && (p.repeat_penalty == 1.0 || p.repeat_last_n == 0)
    }

    /// The token ids the repetition penalty applies to (in ring order, with
    /// repeats; empty when the penalty is off).
    pub fn penalty_ids(&self) -> &[u32] {
        if self.params.repeat_penalty == 1.0 {
            &[]
        } else {
            &self.history
        }
    }

    /// The `sample` op's settings for a vocabulary of `n_vocab` with the
    /// current history ([`Sampler::penalty_ids`]).
    pub fn op_params(&self, n_vocab: usize) -> SampleParams {
        let p = &self.params;
        SampleParams {
            n_vocab,
            temperature: p.temperature,
            top_k: p.top_k,
            top_p: p.top_p,
            min_p: p.min_p,
            repeat_penalty: p.repeat_penalty,
            n_penalty_ids: self.penalty_ids().len(),
        }
    }

    /// The next uniform draw in `[0, 1)` of the seeded stream (one per
    /// sampled token; [`Sampler::sample`] and the device path call it).
    pub fn next_draw(&mut self) -> f64 {
        self.rng.gen::<f64>()
    }

    /// Pick the next token id from `logits` (one value per vocabulary entry).
    ///
    /// Does not record the token: call [`Sampler::accept`] with the token the
    /// caller actually keeps.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, SamplerError> {
        if logits.is_empty() {
            return Err(SamplerError::EmptyLogits);
        }
        let u = self.next_draw();
        let p = self.op_params(logits.len());
        let ids = if p.n_penalty_ids > 0 {
            &self.history[..]
        } else {
            &[]
        };
        match sample_host(&mut self.scratch, &p, logits, ids, u) {
            Ok(NO_TOKEN) => Err(SamplerError::NoFiniteLogits {
                n_vocab: logits.len(),
            }),
            Ok(id) => Ok(id),
            Err(e) => Err(SamplerError::Op(e.to_string())),
        }
    }
}
