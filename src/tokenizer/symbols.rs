//! The doubly linked list of symbols that BPE and SPM merge in place (llama.cpp's
//! `llm_symbol`): each symbol is a byte range of the text being tokenized.

use super::unicode;

#[derive(Clone, Copy, Debug)]
pub(super) struct Symbol {
    pub start: usize,
    pub len: usize,
    pub prev: Option<usize>,
    pub next: Option<usize>,
}

/// One symbol per UTF-8 character of `bytes` (a truncated sequence at the end is one symbol),
/// linked in order.
pub(super) fn split_utf8(bytes: &[u8]) -> Vec<Symbol> {
    let mut symbols = Vec::with_capacity(bytes.len());
    let mut offset = 0;
    while offset < bytes.len() {
        let len = unicode::utf8_len(bytes[offset]).min(bytes.len() - offset);
        let i = symbols.len();
        symbols.push(Symbol {
            start: offset,
            len,
            prev: i.checked_sub(1),
            next: (offset + len < bytes.len()).then_some(i + 1),
        });
        offset += len;
    }
    symbols
}
