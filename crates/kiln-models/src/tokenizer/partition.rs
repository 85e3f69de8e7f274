//! Special-token partitioning (llama.cpp's `tokenizer_st_partition` rule):
//! each special token text, longest first, is cut out of the text fragments
//! that are still plain text, non-overlapping, left to right.
//!
//! One `str::contains` scan per special token made this O(specials × text)
//! — Gemma has 6,414 special tokens. A byte-pair prefilter skips every token
//! whose first or last two bytes never occur next to each other in the text,
//! without changing the result (such a token cannot occur in the text).

/// A piece of input after special-token partitioning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fragment {
    /// Byte range of plain text.
    Text(usize, usize),
    /// A special token found in the text.
    Token(u32),
}

/// The set of adjacent byte pairs of a text (65,536 bits).
struct BytePairs(Vec<u64>);

impl BytePairs {
    fn of(text: &[u8]) -> BytePairs {
        let mut bits = vec![0u64; 1 << 10];
        for w in text.windows(2) {
            let k = (usize::from(w[0]) << 8) | usize::from(w[1]);
            bits[k >> 6] |= 1 << (k & 63);
        }
        BytePairs(bits)
    }

    fn has(&self, a: u8, b: u8) -> bool {
        let k = (usize::from(a) << 8) | usize::from(b);
        self.0[k >> 6] & (1 << (k & 63)) != 0
    }

    /// False when `pat` certainly does not occur in the text.
    fn may_contain(&self, pat: &[u8]) -> bool {
        match pat {
            [a, b, .., y, z] => self.has(*a, *b) && self.has(*y, *z),
            [a, b] => self.has(*a, *b),
            _ => true,
        }
    }
}

/// Cut `specials` (id, text; in priority order) out of `text`.
pub(crate) fn partition<'a, S>(
    text: &str,
    specials: impl Iterator<Item = (u32, S)>,
) -> Vec<Fragment>
where
    S: AsRef<str> + 'a,
{
    if text.is_empty() {
        return Vec::new();
    }
    let pairs = BytePairs::of(text.as_bytes());
    let mut frags = vec![Fragment::Text(0, text.len())];
    for (id, pat) in specials {
        let pat = pat.as_ref();
        if pat.is_empty() || !pairs.may_contain(pat.as_bytes()) || !text.contains(pat) {
            continue;
        }
        let mut next = Vec::with_capacity(frags.len() + 2);
        for frag in frags {
            let Fragment::Text(start, end) = frag else {
                next.push(frag);
                continue;
            };
            let mut pos = start;
            for (off, _) in text[start..end].match_indices(pat) {
                let at = start + off;
                if at > pos {
                    next.push(Fragment::Text(pos, at));
                }
                next.push(Fragment::Token(id));
                pos = at + pat.len();
            }
            if pos < end {
                next.push(Fragment::Text(pos, end));
            }
        }
        frags = next;
    }
    frags
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use Fragment::{Text, Token};

    #[test]
    fn longest_first_non_overlapping() {
        let specials = [(1, "<ab>"), (2, "ab"), (3, "\n")];
        let text = "x<ab>ab\nab<a";
        let f = partition(text, specials.iter().copied());
        assert_eq!(
            f,
            vec![
                Text(0, 1),
                Token(1),
                Token(2),
                Token(3),
                Token(2),
                Text(10, 12)
            ]
        );
        assert!(partition("", specials.iter().copied()).is_empty());
        assert_eq!(partition("zz", specials.iter().copied()), vec![Text(0, 2)]);
    }

    #[test]
    fn byte_pair_prefilter_is_exact() {
        let p = BytePairs::of(b"hello <start>");
        assert!(p.may_contain(b"<start>"));
        assert!(p.may_contain(b"h"));
        assert!(p.may_contain(b"lo"));
        assert!(!p.may_contain(b"<unused0>"));
        assert!(!p.may_contain(b"ol"));
        assert!(!p.may_contain(b"hello!"));
    }
}
