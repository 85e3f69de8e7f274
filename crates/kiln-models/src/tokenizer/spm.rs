//! SentencePiece-style BPE, as llama.cpp runs it for
//! `tokenizer.ggml.model = "llama"` vocabularies.
//!
//! Input is already escaped (spaces → U+2581 "▁", optional leading space).
//! Symbols start as UTF-8 characters; the adjacent pair whose concatenation
//! is a vocab token with the highest score is merged repeatedly (ties:
//! leftmost). A final symbol that is not a token is emitted byte by byte as
//! `<0xAB>` tokens (byte fallback), else as the unknown token.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

use super::TokenizerError;

/// Scores and byte tokens of a SentencePiece vocab.
#[derive(Debug)]
pub(crate) struct Spm {
    scores: Vec<f32>,
    /// Token of each byte: `<0xAB>`, else the one-byte string, else none.
    byte_ids: [Option<u32>; 256],
    unk: Option<u32>,
}

/// A candidate merge, ordered so that the heap pops the best one.
#[derive(Debug, Clone, Copy)]
struct Bigram {
    score: f32,
    left: u32,
    right: u32,
    /// Byte span of the merged text, to detect stale entries.
    start: u32,
    end: u32,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        // Higher score first, then the leftmost pair.
        self.score
            .total_cmp(&other.score)
            .then_with(|| Reverse(self.left).cmp(&Reverse(other.left)))
    }
}

#[derive(Debug, Clone, Copy)]
struct Sym {
    start: u32,
    end: u32,
    prev: u32,
    next: u32,
    alive: bool,
}

const NIL: u32 = u32::MAX;

impl Spm {
    /// `scores[i]` is token i's score (0 where the vocab has none).
    pub(crate) fn new(
        scores: Vec<f32>,
        token_to_id: &HashMap<String, u32>,
        unk: Option<u32>,
    ) -> Spm {
        let mut byte_ids = [None; 256];
        for b in 0..=255u8 {
            let hex = format!("<0x{b:02X}>");
            byte_ids[b as usize] = token_to_id.get(&hex).copied().or_else(|| {
                if b.is_ascii() {
                    token_to_id.get(&char::from(b).to_string()).copied()
                } else {
                    None
                }
            });
        }
        Spm {
            scores,
            byte_ids,
            unk,
        }
    }

    /// Token for a raw byte under byte fallback, if the vocab has one.
    pub(crate) fn byte_token(&self, b: u8) -> Option<u32> {
        self.byte_ids[b as usize]
    }

    /// Encode escaped text, appending ids to `out`.
    pub(crate) fn encode(
        &self,
        text: &str,
        token_to_id: &HashMap<String, u32>,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        if text.is_empty() {
            return Ok(());
        }
        if text.len() > u32::MAX as usize / 2 {
            return Err(TokenizerError::Invalid(format!(
                "text of {} bytes is too long to tokenize",
                text.len()
            )));
        }
        let mut syms: Vec<Sym> = Vec::with_capacity(text.len());
        for (i, (pos, c)) in text.char_indices().enumerate() {
            syms.push(Sym {
                start: pos as u32,
                end: (pos + c.len_utf8()) as u32,
                prev: if i == 0 { NIL } else { (i - 1) as u32 },
                next: NIL,
                alive: true,
            });
        }
        let n = syms.len();
        for (i, s) in syms.iter_mut().enumerate() {
            s.next = if i + 1 < n { (i + 1) as u32 } else { NIL };
        }
        let mut heap = BinaryHeap::new();
        for i in 0..n.saturating_sub(1) {
            self.push_pair(text, token_to_id, &syms, i as u32, &mut heap);
        }
        while let Some(bg) = heap.pop() {
            let l = syms[bg.left as usize];
            let r = syms[bg.right as usize];
            if !l.alive || !r.alive || l.next != bg.right || l.start != bg.start || r.end != bg.end
            {
                continue;
            }
            syms[bg.left as usize].end = r.end;
            syms[bg.left as usize].next = r.next;
            syms[bg.right as usize].alive = false;
            if r.next != NIL {
                syms[r.next as usize].prev = bg.left;
            }
            if l.prev != NIL {
                self.push_pair(text, token_to_id, &syms, l.prev, &mut heap);
            }
            self.push_pair(text, token_to_id, &syms, bg.left, &mut heap);
        }
        let mut i = if n == 0 { NIL } else { 0 };
        while i != NIL {
            let s = syms[i as usize];
            let piece = &text[s.start as usize..s.end as usize];
            match token_to_id.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for &b in piece.as_bytes() {
                        match self.byte_ids[b as usize].or(self.unk) {
                            Some(id) => out.push(id),
                            None => return Err(TokenizerError::NoByteToken(b)),
                        }
                    }
                }
            }
            i = s.next;
        }
        Ok(())
    }

    fn push_pair(
        &self,
        text: &str,
        token_to_id: &HashMap<String, u32>,
        syms: &[Sym],
        left: u32,
        heap: &mut BinaryHeap<Bigram>,
    ) {
        let l = syms[left as usize];
        if l.next == NIL {
            return;
        }
        let r = syms[l.next as usize];
        let joined = &text[l.start as usize..r.end as usize];
        if let Some(&id) = token_to_id.get(joined) {
            let score = self.scores.get(id as usize).copied().unwrap_or(0.0);
            heap.push(Bigram {
                score,
                left,
                right: l.next,
                start: l.start,
                end: r.end,
            });
        }
    }
}
