//! Tokenizers built from a GGUF vocabulary, following llama.cpp's
//! `llama-vocab` behaviour, decoupled from GGUF parsing: the loader fills a
//! [`VocabSpec`] from the `tokenizer.ggml.*` keys and calls
//! [`Tokenizer::from_spec`].
//!
//! - `model = "gpt2"`: byte-level BPE with a regex pre-tokenizer chosen by
//!   `tokenizer.ggml.pre` ([`bpe`], [`pretok`]).
//! - `model = "llama"`: SentencePiece BPE with scores and byte fallback
//!   ([`spm`]).
//!
//! Special tokens: control (3), unknown (2) and user-defined (4) token texts
//! are cut out of the input before pre-tokenization, longest text first, as
//! llama.cpp's `tokenizer_st_partition` does. User-defined tokens are always
//! recognised; control and unknown ones only when `parse_special` is set.
//! For SPM vocabs the text is escaped (space → `▁`) first and token texts are
//! matched in escaped form, as SentencePiece matches user-defined pieces after
//! normalization (Gemma's whitespace-run tokens then also match a literal `▁`).
//!
//! Detokenization renders control tokens only when asked, maps byte-level
//! characters (BPE) or `▁` and `<0xAB>` tokens (SPM) back to bytes, and drops
//! the one leading space an SPM vocab's `add_space_prefix` put there.

mod bpe;
mod partition;
mod pretok;
mod spm;

use std::borrow::Cow;
use std::collections::HashMap;

use bpe::{Bpe, BpeParams};
use partition::Fragment;
use pretok::{PreKind, PreTokenizer};
use spm::Spm;

/// Errors from building or running a tokenizer. Messages are one line and
/// name the bad value.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// `tokenizer.ggml.model` is not one kiln implements.
    #[error("tokenizer: unsupported tokenizer model {0:?} (supported: \"gpt2\", \"llama\")")]
    UnknownModel(String),
    /// `tokenizer.ggml.pre` names a pre-tokenizer kiln does not know.
    #[error("tokenizer: unknown pre-tokenizer {name:?} (supported: {supported})")]
    UnknownPre { name: String, supported: String },
    /// A token id is not in the vocab.
    #[error("tokenizer: token id {id} out of range (vocab {n_vocab})")]
    IdOutOfRange { id: u32, n_vocab: usize },
    /// A per-token array does not have one entry per token.
    #[error("tokenizer: {what} has {got} entries, expected {expected} (one per token)")]
    LengthMismatch {
        what: &'static str,
        got: usize,
        expected: usize,
    },
    /// A required vocab part is missing.
    #[error("tokenizer: {model:?} vocab has no {what}")]
    Missing { model: String, what: &'static str },
    /// A special token id in the spec is outside the vocab.
    #[error("tokenizer: {which} token id {id} out of range (vocab {n_vocab})")]
    SpecialOutOfRange {
        which: &'static str,
        id: u32,
        n_vocab: usize,
    },
    /// A pre-tokenizer regex failed to compile or to run.
    #[error("tokenizer: pre-tokenizer {pre:?} regex error: {msg}")]
    Regex { pre: String, msg: String },
    /// A byte cannot be spelled: no byte token and no unknown token.
    #[error("tokenizer: no token for byte 0x{0:02X} (no byte token and no unknown token)")]
    NoByteToken(u8),
    /// Any other invalid input or vocab.
    #[error("tokenizer: {0}")]
    Invalid(String),
}

/// Result alias for the tokenizer.
pub type Result<T> = std::result::Result<T, TokenizerError>;

/// A vocabulary as stored in GGUF metadata (`tokenizer.ggml.*`).
#[derive(Debug, Clone, Default)]
pub struct VocabSpec {
    /// `tokenizer.ggml.model`: "gpt2" (byte-level BPE) or "llama" (SentencePiece).
    pub model: String,
    /// `tokenizer.ggml.pre`: "smollm", "llama3"/"llama-bpe", "gpt2", "default", "qwen2", ...
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.scores` (SPM).
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.token_type` (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.merges` ("a b"), required for "gpt2".
    pub merges: Option<Vec<String>>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unk: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    pub pad: Option<u32>,
    /// `tokenizer.ggml.eot_token_id`.
    pub eot: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix`.
    pub add_space_prefix: Option<bool>,
}

/// A token's type, from `tokenizer.ggml.token_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    /// Ordinary text token (also used for undefined / unrecognised type codes).
    Normal,
    /// The unknown token.
    Unknown,
    /// Control token (BOS, EOS, chat markers): rendered only on request.
    Control,
    /// User-defined token: always matched in text, rendered verbatim.
    UserDefined,
    /// Unused slot: never rendered.
    Unused,
    /// Byte token `<0xAB>` (SPM byte fallback).
    Byte,
}

impl TokenType {
    fn from_code(code: i32) -> TokenType {
        match code {
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Normal,
        }
    }
}

/// Token texts llama.cpp treats as end of generation, wherever they appear.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];

/// Token texts llama.cpp takes as the end-of-turn token when the GGUF names none.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];

/// SentencePiece's whitespace marker U+2581.
const SPM_SPACE: &str = "\u{2581}";

#[derive(Debug)]
enum Model {
    Bpe { bpe: Bpe, pre: PreTokenizer },
    Spm(Spm),
}

/// A tokenizer for one vocabulary: encode text to ids, decode ids to text.
#[derive(Debug)]
pub struct Tokenizer {
    model: Model,
    model_name: String,
    pre_name: Option<String>,
    tokens: Vec<String>,
    types: Vec<TokenType>,
    token_to_id: HashMap<String, u32>,
    /// Control / unknown / user-defined ids, longest text first.
    specials: Vec<u32>,
    /// End-of-generation ids, sorted.
    eog: Vec<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    eot: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
    warnings: Vec<String>,
}

impl Tokenizer {
    /// Build a tokenizer. Unknown `model` or `pre` names are errors; a
    /// missing `pre` falls back to llama.cpp's "default" regexes with a
    /// warning (see [`Tokenizer::warnings`]).
    pub fn from_spec(spec: VocabSpec) -> Result<Tokenizer> {
        let VocabSpec {
            model,
            pre,
            mut tokens,
            scores,
            token_types,
            merges,
            bos,
            eos,
            unk,
            pad,
            eot,
            add_bos,
            add_eos,
            add_space_prefix,
        } = spec;
        let n = tokens.len();
        if n == 0 {
            return Err(TokenizerError::Missing {
                model,
                what: "tokens",
            });
        }
        if n > u32::MAX as usize / 2 {
            return Err(TokenizerError::Invalid(format!(
                "vocab of {n} tokens is too large"
            )));
        }
        let mut warnings = Vec::new();
        for (i, t) in tokens.iter_mut().enumerate() {
            if t.is_empty() {
                warnings.push(format!("empty token at index {i}"));
                *t = format!("[EMPTY_{i}]");
            }
        }
        let mut types: Vec<TokenType> = match &token_types {
            Some(tt) if tt.len() != n => {
                return Err(TokenizerError::LengthMismatch {
                    what: "token_types",
                    got: tt.len(),
                    expected: n,
                })
            }
            Some(tt) => tt.iter().map(|&c| TokenType::from_code(c)).collect(),
            None => vec![TokenType::Normal; n],
        };
        if let Some(s) = &scores {
            if s.len() != n {
                return Err(TokenizerError::LengthMismatch {
                    what: "scores",
                    got: s.len(),
                    expected: n,
                });
            }
        }
        let mut token_to_id = HashMap::with_capacity(n);
        for (i, t) in tokens.iter().enumerate() {
            // Later duplicates win, as in llama.cpp.
            token_to_id.insert(t.clone(), i as u32);
        }

        let is_spm = match model.as_str() {
            "llama" => true,
            "gpt2" => false,
            _ => return Err(TokenizerError::UnknownModel(model)),
        };
        // SPM defaults from llama.cpp: BOS 1, EOS 2, UNK 0, add BOS, space prefix.
        let in_range = |id: u32| (id as usize) < n;
        let (bos, eos, unk) = if is_spm {
            (
                bos.or(Some(1).filter(|&i| in_range(i))),
                eos.or(Some(2).filter(|&i| in_range(i))),
                unk.or(Some(0).filter(|&i| in_range(i))),
            )
        } else {
            (bos, eos, unk)
        };
        for (which, id) in [
            ("bos", bos),
            ("eos", eos),
            ("unk", unk),
            ("pad", pad),
            ("eot", eot),
        ] {
            if let Some(id) = id {
                if !in_range(id) {
                    return Err(TokenizerError::SpecialOutOfRange {
                        which,
                        id,
                        n_vocab: n,
                    });
                }
            }
        }

        let (model_impl, pre_name, flags) = if is_spm {
            let spm = Spm::new(scores.unwrap_or_else(|| vec![0.0; n]), &token_to_id, unk);
            (Model::Spm(spm), pre, None)
        } else {
            let pre_name = match pre.as_deref() {
                None | Some("") => {
                    warnings.push(
                        "missing pre-tokenizer type, using 'default' (generation quality may degrade)"
                            .to_string(),
                    );
                    "default".to_string()
                }
                Some(p) => p.to_string(),
            };
            let kind = PreKind::from_name(&pre_name).ok_or_else(|| TokenizerError::UnknownPre {
                name: pre_name.clone(),
                supported: PreKind::supported_names(),
            })?;
            let flags = PreKind::flags(&pre_name, kind);
            let merges = merges.ok_or_else(|| TokenizerError::Missing {
                model: model.clone(),
                what: "merges",
            })?;
            let (bpe, report) = Bpe::new(BpeParams {
                token_to_id: &token_to_id,
                merges: &merges,
                ignore_merges: flags.ignore_merges,
            });
            if report.malformed > 0 {
                warnings.push(format!(
                    "{} merges without a space were skipped",
                    report.malformed
                ));
            }
            if report.unusable > 0 {
                warnings.push(format!(
                    "{} merges whose parts or result are not tokens were skipped",
                    report.unusable
                ));
            }
            if report.missing_bytes > 32 {
                warnings.push(format!(
                    "{} of 256 byte characters are not vocab tokens; text with those bytes loses them",
                    report.missing_bytes
                ));
            }
            let pre_tok = PreTokenizer::new(&pre_name, kind)?;
            (
                Model::Bpe { bpe, pre: pre_tok },
                Some(pre_name),
                Some(flags),
            )
        };

        // End of turn / end of generation, as llama.cpp auto-detects them
        // (llama.cpp takes whichever EOT text its hash map yields first; kiln
        // takes the first in EOT_TEXTS order, so "<|im_end|>" beats "<|endoftext|>").
        let eot = eot.or_else(|| EOT_TEXTS.iter().find_map(|t| token_to_id.get(*t).copied()));
        let mut eog: Vec<u32> = [eos, eot].into_iter().flatten().collect();
        for t in EOG_TEXTS {
            if let Some(&id) = token_to_id.get(*t) {
                eog.push(id);
            }
        }
        eog.sort_unstable();
        eog.dedup();
        for &id in &eog {
            let ty = &mut types[id as usize];
            if !matches!(ty, TokenType::Control)
                && EOG_TEXTS.contains(&tokens[id as usize].as_str())
            {
                warnings.push(format!(
                    "end-of-generation token {id} {:?} was not control-type; treating it as control",
                    tokens[id as usize]
                ));
                *ty = TokenType::Control;
            }
        }

        let mut specials: Vec<u32> = (0..n as u32)
            .filter(|&i| {
                matches!(
                    types[i as usize],
                    TokenType::Control | TokenType::Unknown | TokenType::UserDefined
                )
            })
            .collect();
        specials.sort_by(|&a, &b| {
            tokens[b as usize]
                .len()
                .cmp(&tokens[a as usize].len())
                .then(a.cmp(&b))
        });

        let add_bos = add_bos.unwrap_or(is_spm || flags.is_some_and(|f| f.add_bos));
        let add_eos = add_eos.unwrap_or(false);
        if add_bos && bos.is_none() {
            return Err(TokenizerError::Invalid(
                "add_bos is set but the vocab has no BOS token id".to_string(),
            ));
        }
        if add_eos && eos.is_none() {
            return Err(TokenizerError::Invalid(
                "add_eos is set but the vocab has no EOS token id".to_string(),
            ));
        }
        Ok(Tokenizer {
            model: model_impl,
            model_name: model,
            pre_name,
            tokens,
            types,
            token_to_id,
            specials,
            eog,
            bos,
            eos,
            unk,
            pad,
            eot,
            add_bos,
            add_eos,
            add_space_prefix: add_space_prefix.unwrap_or(is_spm),
            clean_spaces: flags.is_some_and(|f| f.clean_spaces),
            warnings,
        })
    }

    /// Encode `text`. `add_special`: prepend BOS / append EOS as the vocab's
    /// add_bos / add_eos say. `parse_special`: recognise control token texts
    /// (e.g. "<|im_start|>") as single tokens; user-defined tokens are always
    /// recognised.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        match &self.model {
            Model::Bpe { bpe, pre } => {
                for frag in self.partition(text, parse_special, false) {
                    match frag {
                        Fragment::Token(id) => out.push(id),
                        Fragment::Text(a, b) => {
                            let piece = &text[a..b];
                            for (s, e) in pre.split(piece)? {
                                bpe.encode_word(
                                    &piece.as_bytes()[s..e],
                                    &self.token_to_id,
                                    &mut out,
                                );
                            }
                        }
                    }
                }
            }
            Model::Spm(spm) => {
                // Escape first, then cut specials out of the escaped text
                // (SentencePiece matches user-defined pieces after
                // normalization: a literal "▁" in the text is a space).
                let escaped = text.replace(' ', SPM_SPACE);
                let mut prev_special = true;
                let mut buf = String::new();
                for frag in self.partition(&escaped, parse_special, true) {
                    match frag {
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                        Fragment::Text(a, b) => {
                            let piece = &escaped[a..b];
                            if self.add_space_prefix && prev_special {
                                buf.clear();
                                buf.push_str(SPM_SPACE);
                                buf.push_str(piece);
                                spm.encode(&buf, &self.token_to_id, &mut out)?;
                            } else {
                                spm.encode(piece, &self.token_to_id, &mut out)?;
                            }
                            prev_special = false;
                        }
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        Ok(out)
    }

    /// Cut special-token texts out of `text`, longest token first.
    /// `escaped`: `text` has its spaces as U+2581 (SPM), so token texts are
    /// matched in that form too.
    fn partition(&self, text: &str, parse_special: bool, escaped: bool) -> Vec<Fragment> {
        let specials = self
            .specials
            .iter()
            .filter(|&&id| parse_special || self.types[id as usize] == TokenType::UserDefined)
            .map(|&id| {
                let raw = self.tokens[id as usize].as_str();
                let pat = if escaped && raw.contains(' ') {
                    Cow::Owned(raw.replace(' ', SPM_SPACE))
                } else {
                    Cow::Borrowed(raw)
                };
                (id, pat)
            });
        partition::partition(text, specials)
    }

    /// Decode ids to text, not rendering control tokens. Bytes that do not
    /// form valid UTF-8 become U+FFFD; use [`Tokenizer::decode_bytes`] for raw bytes.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.decode_with(ids, false)
    }

    /// Decode ids to text; `render_special` renders control tokens' texts.
    pub fn decode_with(&self, ids: &[u32], render_special: bool) -> Result<String> {
        let bytes = self.decode_bytes(ids, render_special)?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// Decode ids to raw bytes (llama.cpp's detokenize): pieces concatenated,
    /// the first text piece's leading space dropped when the vocab adds a
    /// space prefix, and spaces before punctuation cleaned where the vocab's
    /// pre-tokenizer asks for it.
    pub fn decode_bytes(&self, ids: &[u32], render_special: bool) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        let mut strip_space = self.add_space_prefix;
        for &id in ids {
            let before = out.len();
            self.append_piece(id, render_special, &mut out)?;
            if strip_space && out.len() > before {
                if out[before] == b' ' {
                    out.remove(before);
                }
                strip_space = false;
            }
        }
        if self.clean_spaces {
            out = clean_up_spaces(&out);
        }
        Ok(out)
    }

    /// The bytes of one token (a UTF-8 character may span tokens; streaming
    /// callers buffer). Control tokens render only with `render_special`.
    pub fn token_to_piece(&self, id: u32, render_special: bool) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.append_piece(id, render_special, &mut out)?;
        Ok(out)
    }

    fn append_piece(&self, id: u32, render_special: bool, out: &mut Vec<u8>) -> Result<()> {
        let i = id as usize;
        let (Some(text), Some(ty)) = (self.tokens.get(i), self.types.get(i)) else {
            return Err(TokenizerError::IdOutOfRange {
                id,
                n_vocab: self.tokens.len(),
            });
        };
        match ty {
            TokenType::Control | TokenType::Unknown => {
                if render_special {
                    out.extend_from_slice(text.as_bytes());
                }
            }
            TokenType::UserDefined => out.extend_from_slice(text.as_bytes()),
            TokenType::Unused => {}
            TokenType::Byte => match parse_byte_token(text) {
                Some(b) => out.push(b),
                None => out.extend_from_slice(text.as_bytes()),
            },
            TokenType::Normal => match self.model {
                Model::Bpe { .. } => bpe::decode_byte_level(text, out),
                Model::Spm(_) => {
                    for (k, part) in text.split(SPM_SPACE).enumerate() {
                        if k > 0 {
                            out.push(b' ');
                        }
                        out.extend_from_slice(part.as_bytes());
                    }
                }
            },
        }
        Ok(())
    }

    /// Number of tokens in the vocab.
    pub fn n_vocab(&self) -> usize {
        self.tokens.len()
    }
    /// Beginning-of-sequence token.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }
    /// End-of-sequence token.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }
    /// End-of-turn token (from the GGUF, or detected by text as llama.cpp does).
    pub fn eot(&self) -> Option<u32> {
        self.eot
    }
    /// Unknown token.
    pub fn unk(&self) -> Option<u32> {
        self.unk
    }
    /// Padding token.
    pub fn pad(&self) -> Option<u32> {
        self.pad
    }
    /// Whether `encode(.., add_special = true, ..)` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }
    /// Whether `encode(.., add_special = true, ..)` appends EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }
    /// Whether an SPM vocab prefixes text with a space.
    pub fn add_space_prefix(&self) -> bool {
        self.add_space_prefix
    }
    /// `tokenizer.ggml.model` of this vocab.
    pub fn model(&self) -> &str {
        &self.model_name
    }
    /// The pre-tokenizer in use (BPE), after defaulting.
    pub fn pre(&self) -> Option<&str> {
        self.pre_name.as_deref()
    }
    /// True for tokens that end generation: EOS, EOT and the texts llama.cpp
    /// treats as such (`<|im_end|>`, `<|endoftext|>`, `<end_of_turn>`, ...).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }
    /// All end-of-generation ids, sorted.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }
    /// The stored text of a token (byte-level / `▁`-escaped form).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }
    /// The type of a token.
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.types.get(id as usize).copied()
    }
    /// The id of a token by its stored text.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }
    /// The token that spells a raw byte (BPE byte character or SPM `<0xAB>`).
    pub fn byte_token(&self, b: u8) -> Option<u32> {
        match &self.model {
            Model::Bpe { bpe, .. } => bpe.byte_token(b),
            Model::Spm(spm) => spm.byte_token(b),
        }
    }
    /// Non-fatal problems found while building (missing pre, odd merges, ...),
    /// for the caller to log.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// `<0xAB>` → 0xAB.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// llama.cpp's `clean_spaces` detokenizer pass: drop a space before
/// `? ! . ,`, collapse " ' " to "'", and drop the space before the
/// contractions 's 'm 're 've.
fn clean_up_spaces(text: &[u8]) -> Vec<u8> {
    // Pass 1: " ?", " !", " .", " ," → no space.
    let mut a = Vec::with_capacity(text.len());
    for (i, &c) in text.iter().enumerate() {
        if i > 0 && matches!(c, b'?' | b'!' | b'.' | b',') && a.last() == Some(&b' ') {
            a.pop();
        }
        a.push(c);
    }
    // Pass 2: " ' " → "'".
    let mut b = Vec::with_capacity(a.len());
    let mut i = 0;
    while i < a.len() {
        let c = a[i];
        if c == b'\'' && i > 0 && i + 1 < a.len() && a[i - 1] == b' ' && a[i + 1] == b' ' {
            b.pop();
            b.push(c);
            i += 2;
            continue;
        }
        b.push(c);
        i += 1;
    }
    // Pass 3: " 's", " 'm", " 're", " 've" → no space.
    let mut out = Vec::with_capacity(b.len());
    for (i, &c) in b.iter().enumerate() {
        if c == b'\'' && i > 0 && b[i - 1] == b' ' {
            let rest = &b[i + 1..];
            let contraction = matches!(rest.first(), Some(b's' | b'm'))
                || rest.starts_with(b"re")
                || rest.starts_with(b"ve");
            if contraction && out.last() == Some(&b' ') {
                out.pop();
            }
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn byte_token_parse() {
        assert_eq!(parse_byte_token("<0x0A>"), Some(10));
        assert_eq!(parse_byte_token("<0xff>"), Some(255));
        assert_eq!(parse_byte_token("<0x1>"), None);
        assert_eq!(parse_byte_token("0x10"), None);
    }

    #[test]
    fn clean_spaces_rules() {
        let c = |s: &str| String::from_utf8(clean_up_spaces(s.as_bytes())).unwrap();
        assert_eq!(c("Hello , world !"), "Hello, world!");
        assert_eq!(c("it ' s"), "it's");
        assert_eq!(c("he 's here , they 're"), "he's here, they're");
        assert_eq!(c("don 't"), "don 't");
        assert_eq!(c(" ."), ".");
    }
}
