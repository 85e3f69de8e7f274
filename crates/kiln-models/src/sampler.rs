//! Token sampling: the llama.cpp-style default chain.
//!
//! Order, as llama.cpp's default sampler chain (common/sampling):
//! repetition penalty → top-k → top-p → min-p → temperature → softmax →
//! one draw from a seeded ChaCha RNG. With `temperature == 0` the chain is
//! greedy: argmax after the repetition penalty.
//!
//! Semantics of each stage:
//! - repetition penalty: every *distinct* token among the last
//!   `repeat_last_n` accepted tokens has its logit divided by the penalty when
//!   positive, multiplied by it otherwise (CTRL paper, as in llama.cpp).
//! - top-k: keep the `top_k` largest logits (streamed partial selection with
//!   `select_nth_unstable_by`, then a sort of the k survivors). With top-k off
//!   and top-p on, the nucleus is found by partial selection of a doubling
//!   window rather than a sort of the whole vocabulary.
//! - top-p: on the softmax of the surviving logits (temperature 1), keep the
//!   smallest prefix, by descending probability, whose mass reaches `top_p`.
//! - min-p: keep tokens whose probability is at least `min_p` times the
//!   largest one, i.e. `logit >= max_logit + ln(min_p)`.
//! - temperature: divide logits by `temperature`, then softmax and draw.
//!
//! Logit hygiene: NaN and `-inf` logits are never chosen; `+inf` logits are
//! treated as certain (the draw is uniform among them); logits with no finite
//! or `+inf` value are an error. Every stage keeps at least one token.
//!
//! The sampler owns scratch buffers sized to the vocabulary on the first call;
//! later calls with the same vocabulary do not allocate.

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

/// One candidate token: id and (working) logit or weight.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    id: u32,
    logit: f32,
}

/// Descending by logit; values are never NaN here.
fn by_logit_desc(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    b.logit.total_cmp(&a.logit)
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
    /// Sorted, deduplicated copy of `history` (scratch).
    penalized: Vec<u32>,
    /// Logits after the repetition penalty (scratch, vocab-sized).
    work: Vec<f32>,
    /// Surviving candidates (scratch, vocab-sized).
    cands: Vec<Candidate>,
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
            penalized: Vec::with_capacity(params.repeat_last_n),
            work: Vec::new(),
            cands: Vec::new(),
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

    /// Pick the next token id from `logits` (one value per vocabulary entry).
    ///
    /// Does not record the token: call [`Sampler::accept`] with the token the
    /// caller actually keeps.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, SamplerError> {
        if logits.is_empty() {
            return Err(SamplerError::EmptyLogits);
        }
        let no_finite = SamplerError::NoFiniteLogits {
            n_vocab: logits.len(),
        };
        // Copy only when the penalty changes something.
        let penalize = self.params.repeat_penalty != 1.0 && !self.history.is_empty();
        let src: &[f32] = if penalize {
            self.work.clear();
            self.work.extend_from_slice(logits);
            self.apply_repetition_penalty();
            &self.work
        } else {
            logits
        };
        if self.params.temperature <= 0.0 {
            return greedy_argmax(src).ok_or(no_finite);
        }
        let sorted = collect_top_k(src, self.params.top_k, &mut self.cands);
        if self.cands.is_empty() {
            return Err(no_finite);
        }
        self.keep_only_infinite();
        let sorted = if self.params.top_p < 1.0 {
            self.apply_top_p(sorted);
            true
        } else {
            sorted
        };
        self.apply_min_p(sorted);
        Ok(self.draw())
    }

    /// Divide positive / multiply non-positive logits of recent tokens.
    fn apply_repetition_penalty(&mut self) {
        let penalty = self.params.repeat_penalty;
        if penalty == 1.0 || self.history.is_empty() {
            return;
        }
        self.penalized.clear();
        self.penalized.extend_from_slice(&self.history);
        self.penalized.sort_unstable();
        self.penalized.dedup();
        for &tok in &self.penalized {
            // Ids outside this vocabulary (a caller mixing vocabularies) are ignored.
            if let Some(l) = self.work.get_mut(tok as usize) {
                if *l > 0.0 {
                    *l /= penalty;
                } else {
                    *l *= penalty;
                }
            }
        }
    }

    /// `+inf` logits carry all the mass: keep only them, equally likely.
    fn keep_only_infinite(&mut self) {
        if self.cands.iter().any(|c| c.logit == f32::INFINITY) {
            self.cands.retain(|c| c.logit == f32::INFINITY);
            for c in &mut self.cands {
                c.logit = 0.0;
            }
        }
    }

    /// Nucleus: keep the smallest prefix, by descending probability, whose
    /// mass reaches `top_p`. Leaves `cands` sorted descending.
    ///
    /// When `cands` is not sorted yet (top-k off) the prefix is found by
    /// partial selection of a doubling window (256, 512, ...) instead of
    /// sorting the whole vocabulary: the nucleus is usually small.
    fn apply_top_p(&mut self, sorted: bool) {
        let len = self.cands.len();
        let max = self
            .cands
            .iter()
            .map(|c| c.logit)
            .fold(f32::NEG_INFINITY, f32::max) as f64;
        let weight = |c: &Candidate| (c.logit as f64 - max).exp();
        let total: f64 = self.cands.iter().map(weight).sum();
        let target = self.params.top_p as f64 * total;
        let mut cum = 0.0f64;
        let mut done = 0usize;
        let mut window = if sorted { len } else { 256.min(len) };
        while done < len {
            if !sorted {
                let rest = &mut self.cands[done..];
                if window < len {
                    rest.select_nth_unstable_by(window - done - 1, by_logit_desc);
                }
                self.cands[done..window].sort_unstable_by(by_logit_desc);
            }
            for i in done..window {
                cum += weight(&self.cands[i]);
                if cum >= target {
                    self.cands.truncate(i + 1);
                    return;
                }
            }
            done = window;
            window = (window * 2).min(len);
        }
    }

    /// Drop tokens whose probability is below `min_p` × the largest.
    fn apply_min_p(&mut self, sorted: bool) {
        let m = self.params.min_p;
        if m <= 0.0 || self.cands.len() <= 1 {
            return;
        }
        let max = if sorted {
            self.cands.first().map_or(f32::NEG_INFINITY, |c| c.logit)
        } else {
            self.cands
                .iter()
                .map(|c| c.logit)
                .fold(f32::NEG_INFINITY, f32::max)
        };
        // p_i >= m * p_max  <=>  l_i >= l_max + ln(m); the max itself always stays.
        let threshold = max + m.ln();
        if sorted {
            let keep = self.cands.partition_point(|c| c.logit >= threshold);
            self.cands.truncate(keep.max(1));
        } else {
            self.cands.retain(|c| c.logit >= threshold);
        }
    }

    /// Temperature, softmax and one draw. `cands` is non-empty.
    fn draw(&mut self) -> u32 {
        let t = self.params.temperature as f64;
        let max = self
            .cands
            .iter()
            .map(|c| c.logit)
            .fold(f32::NEG_INFINITY, f32::max) as f64;
        let mut total = 0.0f64;
        for c in &mut self.cands {
            // (l - max) / t <= 0, so exp never overflows, even for tiny t.
            let w = ((c.logit as f64 - max) / t).exp() as f32;
            c.logit = w;
            total += w as f64;
        }
        // One draw per call in every case, so the RNG stream depends only on
        // the number of calls.
        let u: f64 = self.rng.gen::<f64>() * total;
        let mut cum = 0.0f64;
        let mut last_nonzero = 0;
        for c in &self.cands {
            if c.logit > 0.0 {
                last_nonzero = c.id;
                cum += c.logit as f64;
                if u < cum {
                    return c.id;
                }
            }
        }
        // Rounding left u just past the sum: the last token with weight wins.
        last_nonzero
    }
}

/// Index of the largest logit (first on ties), skipping NaN; `None` when no
/// logit is above `-inf`.
fn greedy_argmax(logits: &[f32]) -> Option<u32> {
    let mut best_i = 0usize;
    let mut best = f32::NEG_INFINITY;
    for (i, &l) in logits.iter().enumerate() {
        // NaN and -inf never compare greater.
        if l > best {
            best = l;
            best_i = i;
        }
    }
    (best > f32::NEG_INFINITY).then_some(best_i as u32)
}

/// Fill `cands` with the usable logits (not NaN, not `-inf`), keeping
/// only the `top_k` largest when `top_k` is on. Returns whether `cands` is
/// sorted descending (true exactly when top-k truncated).
///
/// Top-k streams: candidates above the running k-th largest go into a
/// buffer of a few k; when it fills, a partial selection
/// (`select_nth_unstable_by`) cuts it back to k. Memory traffic stays
/// O(k) instead of O(vocab).
fn collect_top_k(src: &[f32], k: usize, cands: &mut Vec<Candidate>) -> bool {
    cands.clear();
    let usable = |l: f32| !l.is_nan() && l != f32::NEG_INFINITY;
    if k == 0 || k >= src.len() {
        for (i, &l) in src.iter().enumerate() {
            if usable(l) {
                cands.push(Candidate {
                    id: i as u32,
                    logit: l,
                });
            }
        }
        return false;
    }
    let buffer = (2 * k).max(k + 1024);
    cands.reserve(buffer);
    let mut threshold = f32::NEG_INFINITY;
    for (i, &l) in src.iter().enumerate() {
        // NaN fails the comparison; -inf never beats the threshold.
        if l > threshold {
            cands.push(Candidate {
                id: i as u32,
                logit: l,
            });
            if cands.len() == buffer {
                cands.select_nth_unstable_by(k - 1, by_logit_desc);
                cands.truncate(k);
                threshold = cands.get(k - 1).map_or(threshold, |c| c.logit);
            }
        }
    }
    if cands.len() > k {
        cands.select_nth_unstable_by(k - 1, by_logit_desc);
        cands.truncate(k);
    }
    cands.sort_unstable_by(by_logit_desc);
    true
}
