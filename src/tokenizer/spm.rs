//! SentencePiece-style bigram merging by score, as llama.cpp's `llm_tokenizer_spm_session`.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::symbols::{split_utf8, Symbol};
use super::vocab::Vocab;

/// A candidate merge; the queue pops the highest score first, then the leftmost.
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
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
    /// `llm_bigram_spm::comparator` (`l < r` ⇔ lower score, or equal score and larger left).
    fn cmp(&self, other: &Self) -> Ordering {
        if self.score < other.score {
            Ordering::Less
        } else if self.score > other.score {
            Ordering::Greater
        } else {
            other.left.cmp(&self.left)
        }
    }
}

/// Tokenizes already-escaped text (spaces as U+2581) and appends the ids to `out`.
pub(crate) fn tokenize(vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
    let bytes = text.as_bytes();
    let mut symbols = split_utf8(bytes);

    let mut queue = BinaryHeap::new();
    let try_add = |symbols: &[Symbol], queue: &mut BinaryHeap<Bigram>, l: usize, r: usize| {
        let start = symbols[l].start;
        let size = symbols[l].len + symbols[r].len;
        let Some(piece) = text.get(start..start + size) else {
            return;
        };
        if let Some(id) = vocab.text_to_token(piece) {
            queue.push(Bigram {
                score: vocab.score(id),
                left: l,
                right: r,
                size,
            });
        }
    };
    for i in 1..symbols.len() {
        try_add(&symbols, &mut queue, i - 1, i);
    }
    while let Some(b) = queue.pop() {
        let (left, right) = (symbols[b.left], symbols[b.right]);
        if left.len == 0 || right.len == 0 || left.len + right.len != b.size {
            continue;
        }
        symbols[b.left].len += right.len;
        symbols[b.right].len = 0;
        symbols[b.left].next = right.next;
        if let Some(n) = right.next {
            symbols[n].prev = Some(b.left);
        }
        if let Some(p) = symbols[b.left].prev {
            try_add(&symbols, &mut queue, p, b.left);
        }
        if let Some(n) = symbols[b.left].next {
            try_add(&symbols, &mut queue, b.left, n);
        }
    }

    // `resegment`: every merged symbol is a token by construction, so llama.cpp's rev_merge
    // lookup only ever sees single characters, which it never holds: unknown pieces go to bytes.
    let mut i = if symbols.is_empty() { None } else { Some(0) };
    while let Some(k) = i {
        let s = symbols[k];
        let piece = &bytes[s.start..s.start + s.len];
        match std::str::from_utf8(piece)
            .ok()
            .and_then(|p| vocab.text_to_token(p))
        {
            Some(id) => out.push(id),
            None => out.extend(piece.iter().filter_map(|&b| vocab.byte_to_token(b))),
        }
        i = s.next;
    }
}
