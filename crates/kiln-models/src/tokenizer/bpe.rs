//! Byte-level BPE (GPT-2 style), as llama.cpp runs it for
//! `tokenizer.ggml.model = "gpt2"` vocabularies.
//!
//! - Every byte of the input maps to one printable code point (GPT-2's
//!   byte→unicode table); vocab tokens and merges are written in that alphabet.
//! - A pre-token starts as one symbol per byte; the adjacent pair with the
//!   lowest merge rank is merged repeatedly (ties: leftmost) until no pair
//!   has a rank. Symbols, pairs and merge results are token ids, so the hot
//!   loop does no string work.
//! - With `ignore_merges` (Llama 3), a pre-token that is itself a vocab token
//!   is emitted whole.
//!
//! Results are cached per pre-token (bytes → ids); the cache is cleared when
//! it grows past [`CACHE_MAX_ENTRIES`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;

/// Bound on cached pre-tokens; the cache is dropped whole when full.
const CACHE_MAX_ENTRIES: usize = 1 << 16;
/// Pre-tokens longer than this are not cached (long whitespace runs, base64...).
const CACHE_MAX_WORD_BYTES: usize = 64;
/// Marker for a byte whose mapped character is not in the vocab.
const NO_TOKEN: u32 = u32::MAX;

/// Bytes that GPT-2 maps to themselves (printable Latin-1 minus soft hyphen).
fn byte_is_printable(b: u8) -> bool {
    matches!(b, 33..=126 | 161..=172 | 174..=255)
}

/// GPT-2's byte → code point table: printable bytes map to themselves, the
/// other 68 bytes to U+0100.. in byte order.
pub(crate) fn byte_to_char(b: u8) -> char {
    if byte_is_printable(b) {
        return char::from(b);
    }
    let n = (0..b).filter(|&x| !byte_is_printable(x)).count() as u32;
    char::from_u32(256 + n).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// Inverse of [`byte_to_char`]; `None` for code points outside the table.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    if cp < 256 {
        let b = cp as u8;
        return byte_is_printable(b).then_some(b);
    }
    let n = cp.checked_sub(256)? as usize;
    (0u8..=255).filter(|&x| !byte_is_printable(x)).nth(n)
}

/// Append the bytes a byte-level token text stands for. Characters outside
/// the table (malformed vocab) are kept as their own UTF-8.
pub(crate) fn decode_byte_level(text: &str, out: &mut Vec<u8>) {
    for c in text.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

/// Merge table and per-byte tokens of a byte-level BPE vocab.
#[derive(Debug)]
pub(crate) struct Bpe {
    /// (left id << 32 | right id) → (rank, merged id).
    merges: HashMap<u64, (u32, u32)>,
    /// Token id of each byte's mapped character, or [`NO_TOKEN`].
    byte_ids: [u32; 256],
    /// The mapped-alphabet string of each byte, for whole-word lookups.
    byte_chars: [char; 256],
    ignore_merges: bool,
    cache: WordCache,
}

/// Pre-token bytes → ids.
type WordCache = Mutex<HashMap<Box<[u8]>, Box<[u32]>>>;
/// Candidate merge: (rank, left index, left id, right id, merged id).
type Candidate = (u32, u32, u32, u32, u32);
/// Min-heap of candidates: lowest rank first, then leftmost.
type MergeHeap = BinaryHeap<Reverse<Candidate>>;

/// What building the merge table skipped, for warnings.
#[derive(Debug, Default)]
pub(crate) struct BpeBuildReport {
    /// Merges without a separating space.
    pub malformed: usize,
    /// Merges whose parts or result are not vocab tokens.
    pub unusable: usize,
    /// Bytes whose mapped character is not a vocab token (common: byte-level
    /// vocabs often lack 0xC0, 0xC1, 0xF5.. and rare control bytes).
    pub missing_bytes: usize,
}

/// Parameters for [`Bpe::new`].
pub(crate) struct BpeParams<'a> {
    pub token_to_id: &'a HashMap<String, u32>,
    pub merges: &'a [String],
    pub ignore_merges: bool,
}

/// One symbol of a word being merged (a doubly linked list in a Vec).
#[derive(Clone, Copy)]
struct Sym {
    id: u32,
    prev: u32,
    next: u32,
}

const NIL: u32 = u32::MAX;

impl Bpe {
    /// Build the merge table. A merge "a b" has rank = its index; later
    /// duplicates of a pair keep the first (lowest) rank.
    pub(crate) fn new(p: BpeParams<'_>) -> (Bpe, BpeBuildReport) {
        let mut report = BpeBuildReport::default();
        let mut merges = HashMap::with_capacity(p.merges.len());
        let mut joined = String::new();
        for (rank, m) in p.merges.iter().enumerate() {
            // Split at the first space after the first character (a part
            // never starts with a raw space in a byte-level vocab).
            let first_len = m.chars().next().map_or(0, char::len_utf8);
            let Some(sp) = m[first_len..].find(' ').map(|i| i + first_len) else {
                report.malformed += 1;
                continue;
            };
            let (a, b) = (&m[..sp], &m[sp + 1..]);
            joined.clear();
            joined.push_str(a);
            joined.push_str(b);
            let ids = (
                p.token_to_id.get(a),
                p.token_to_id.get(b),
                p.token_to_id.get(joined.as_str()),
            );
            let (Some(&ia), Some(&ib), Some(&ij)) = ids else {
                report.unusable += 1;
                continue;
            };
            let key = (u64::from(ia) << 32) | u64::from(ib);
            merges.entry(key).or_insert((rank as u32, ij));
        }
        let mut byte_ids = [NO_TOKEN; 256];
        let mut byte_chars = ['\0'; 256];
        for b in 0..=255u8 {
            let c = byte_to_char(b);
            byte_chars[b as usize] = c;
            let mut buf = [0u8; 4];
            match p.token_to_id.get(&*c.encode_utf8(&mut buf)) {
                Some(&id) => byte_ids[b as usize] = id,
                None => report.missing_bytes += 1,
            }
        }
        let bpe = Bpe {
            merges,
            byte_ids,
            byte_chars,
            ignore_merges: p.ignore_merges,
            cache: Mutex::new(HashMap::new()),
        };
        (bpe, report)
    }

    /// Token id of a raw byte (its mapped character), if the vocab has it.
    pub(crate) fn byte_token(&self, b: u8) -> Option<u32> {
        let id = self.byte_ids[b as usize];
        (id != NO_TOKEN).then_some(id)
    }

    /// Encode one pre-token (raw bytes) and append its ids to `out`.
    pub(crate) fn encode_word(
        &self,
        word: &[u8],
        token_to_id: &HashMap<String, u32>,
        out: &mut Vec<u32>,
    ) {
        if word.is_empty() {
            return;
        }
        let cacheable = word.len() <= CACHE_MAX_WORD_BYTES;
        if cacheable {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(ids) = cache.get(word) {
                out.extend_from_slice(ids);
                return;
            }
        }
        let start = out.len();
        self.encode_word_uncached(word, token_to_id, out);
        if cacheable {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= CACHE_MAX_ENTRIES {
                cache.clear();
            }
            cache.insert(word.into(), out[start..].into());
        }
    }

    fn encode_word_uncached(
        &self,
        word: &[u8],
        token_to_id: &HashMap<String, u32>,
        out: &mut Vec<u32>,
    ) {
        if self.ignore_merges {
            let mapped: String = word.iter().map(|&b| self.byte_chars[b as usize]).collect();
            if let Some(&id) = token_to_id.get(&mapped) {
                out.push(id);
                return;
            }
        }
        let n = word.len();
        let mut syms: Vec<Sym> = word
            .iter()
            .enumerate()
            .map(|(i, &b)| Sym {
                id: self.byte_ids[b as usize],
                prev: if i == 0 { NIL } else { (i - 1) as u32 },
                next: if i + 1 == n { NIL } else { (i + 1) as u32 },
            })
            .collect();
        let mut heap = MergeHeap::new();
        for i in 0..n.saturating_sub(1) {
            self.push_pair(&syms, i as u32, &mut heap);
        }
        while let Some(Reverse((_rank, left, left_id, right_id, merged))) = heap.pop() {
            let l = syms[left as usize];
            if l.id != left_id || l.next == NIL {
                continue;
            }
            let right = l.next;
            let r = syms[right as usize];
            if r.id != right_id {
                continue;
            }
            // Merge right into left and unlink right.
            syms[left as usize].id = merged;
            syms[left as usize].next = r.next;
            syms[right as usize].id = NO_TOKEN;
            if r.next != NIL {
                syms[r.next as usize].prev = left;
            }
            if l.prev != NIL {
                self.push_pair(&syms, l.prev, &mut heap);
            }
            self.push_pair(&syms, left, &mut heap);
        }
        let mut i = 0u32;
        while i != NIL {
            let s = syms[i as usize];
            if s.id != NO_TOKEN {
                out.push(s.id);
            }
            // else: a byte the vocab cannot spell (e.g. 0x04 in SmolLM2's
            // vocab) is dropped, as llama.cpp and HF tokenizers do.
            i = s.next;
        }
    }

    fn push_pair(&self, syms: &[Sym], left: u32, heap: &mut MergeHeap) {
        let l = syms[left as usize];
        if l.next == NIL || l.id == NO_TOKEN {
            return;
        }
        let r = syms[l.next as usize];
        if r.id == NO_TOKEN {
            return;
        }
        let key = (u64::from(l.id) << 32) | u64::from(r.id);
        if let Some(&(rank, merged)) = self.merges.get(&key) {
            heap.push(Reverse((rank, left, l.id, r.id, merged)));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn byte_table_is_a_bijection() {
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let c = byte_to_char(b);
            assert!(seen.insert(c), "byte {b} maps to a repeated char");
            assert_eq!(char_to_byte(c), Some(b));
        }
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(b'A'), 'A');
        assert_eq!(char_to_byte('ā'), Some(1));
        assert_eq!(char_to_byte('日'), None);
    }

    #[test]
    fn merges_follow_rank_then_leftmost() {
        // Vocab: bytes a b c plus "ab", "bc", "abc", "aa".
        let mut token_to_id = HashMap::new();
        for (i, t) in ["a", "b", "c", "ab", "bc", "abc", "aa"].iter().enumerate() {
            token_to_id.insert(t.to_string(), i as u32);
        }
        let merges: Vec<String> = ["b c", "a b", "a bc", "a a"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (bpe, report) = Bpe::new(BpeParams {
            token_to_id: &token_to_id,
            merges: &merges,
            ignore_merges: false,
        });
        assert_eq!(report.malformed, 0);
        assert_eq!(report.unusable, 0);
        let enc = |w: &str| {
            let mut out = Vec::new();
            bpe.encode_word(w.as_bytes(), &token_to_id, &mut out);
            out
        };
        // "b c" ranks before "a b": abc → a + bc → abc.
        assert_eq!(enc("abc"), vec![5]);
        // "aaa": leftmost pair merges first → aa, a.
        assert_eq!(enc("aaa"), vec![6, 0]);
        assert_eq!(enc("ab"), vec![3]);
        assert_eq!(enc("ba"), vec![1, 0]);
        // Cached second call gives the same.
        assert_eq!(enc("abc"), vec![5]);
    }
}
