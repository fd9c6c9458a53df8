//! Byte-pair merging of one pre-tokenized word, as llama.cpp's `llm_tokenizer_bpe_session`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::symbols::{split_utf8, Symbol};
use super::vocab::{FastHash, Vocab};

/// Merge ranks keyed by `"left right"` (the merge line as llama.cpp splits it).
#[derive(Debug, Default)]
pub(crate) struct Merges {
    ranks: HashMap<Box<str>, u32, FastHash>,
}

impl Merges {
    /// Parses merge lines like `llama_vocab::impl::load`: split at the first space after the
    /// first byte; a line without one becomes the pair ("", ""); the first rank of a pair wins.
    pub(crate) fn from_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Merges {
        let mut ranks = HashMap::with_hasher(FastHash::default());
        for (i, line) in lines.into_iter().enumerate() {
            let has_space = line.bytes().skip(1).any(|b| b == b' ');
            let key: Box<str> = if has_space { line.into() } else { " ".into() };
            ranks.entry(key).or_insert(i as u32);
        }
        Merges { ranks }
    }

    pub(crate) fn len(&self) -> usize {
        self.ranks.len()
    }

    /// `llama_vocab::find_bpe_rank`
    fn rank(&self, buf: &mut String, left: &str, right: &str) -> Option<u32> {
        buf.clear();
        buf.push_str(left);
        buf.push(' ');
        buf.push_str(right);
        self.ranks.get(buf.as_str()).copied()
    }
}

/// A piece of the word: `[start, start + len)`, `len == 0` once merged into its left neighbour.
/// Tokenizes one word (already byte-encoded when the vocabulary is byte-level) and appends
/// the ids to `out`.
pub(crate) fn tokenize_word(vocab: &Vocab, word: &str, byte_encoded: bool, out: &mut Vec<u32>) {
    if vocab.ignore_merges {
        if let Some(id) = vocab.text_to_token(word) {
            out.push(id);
            return;
        }
    }
    let bytes = word.as_bytes();
    let mut symbols = split_utf8(bytes);

    // min-heap on (rank, left); the payload is the combined length the pair had when pushed
    let mut queue: BinaryHeap<Reverse<(u32, usize, usize, usize)>> = BinaryHeap::new();
    let mut buf = String::new();
    let text = |s: &Symbol| &word[s.start..s.start + s.len];
    let mut add = |symbols: &[Symbol], queue: &mut BinaryHeap<_>, l: usize, r: usize| {
        let (ls, rs) = (&symbols[l], &symbols[r]);
        if let Some(rank) = vocab.merges.rank(&mut buf, text(ls), text(rs)) {
            queue.push(Reverse((rank, l, r, ls.len + rs.len)));
        }
    };
    for i in 1..symbols.len() {
        add(&symbols, &mut queue, i - 1, i);
    }
    while let Some(Reverse((_, l, r, size))) = queue.pop() {
        let (left, right) = (symbols[l], symbols[r]);
        // both ends start at fixed offsets, so equal length means equal text
        if left.len == 0 || right.len == 0 || left.len + right.len != size {
            continue;
        }
        symbols[l].len += right.len;
        symbols[r].len = 0;
        symbols[l].next = right.next;
        if let Some(n) = right.next {
            symbols[n].prev = Some(l);
        }
        if let Some(p) = symbols[l].prev {
            add(&symbols, &mut queue, p, l);
        }
        if let Some(n) = symbols[l].next {
            add(&symbols, &mut queue, l, n);
        }
    }

    for s in symbols.iter().filter(|s| s.len > 0) {
        let piece = text(s);
        if let Some(id) = vocab.text_to_token(piece) {
            out.push(id);
            continue;
        }
        // llama.cpp looks every byte up on its own and silently drops the ones it can't find
        for &b in piece.as_bytes() {
            let id = if byte_encoded {
                // a lone byte >= 0x80 is never a (UTF-8) token
                (b < 0x80).then(|| vocab.text_to_token(std::str::from_utf8(&[b]).unwrap_or("")))
            } else {
                Some(vocab.text_to_token(&format!("<0x{b:02X}>")))
            };
            out.extend(id.flatten());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_lines_split_like_llama_cpp() {
        let m = Merges::from_lines(["a b", "  x", "nospace", "a b"]);
        let mut buf = String::new();
        assert_eq!(m.rank(&mut buf, "a", "b"), Some(0));
        assert_eq!(m.rank(&mut buf, " ", "x"), Some(1));
        assert_eq!(m.len(), 3);
    }
}
