//! Tokenizers built from GGUF vocabularies, matching llama.cpp (`src/llama-vocab.cpp`,
//! `src/unicode.cpp`) token for token: byte-level BPE (`gpt2`) with the pre-tokenizer named
//! by `tokenizer.ggml.pre`, and SentencePiece (`llama`) with byte fallback.
//!
//! Layout: `vocab` (metadata → tokens, attributes, special ids, the defaults of
//! `llama_vocab::load`), `pretokenize` (the hand-written splitters llama.cpp has for the
//! GPT-2 / Llama-3 / Qwen2 regexes, small matchers for the simple ones) and `regex_split`
//! (its `std::regex` fallback for the rest), `bpe` and `spm` (the two merge loops),
//! `unicode` + `unicode_data` (codepoint categories, Unicode 15.1 as in llama.cpp) and
//! `hash_order` (libstdc++'s `unordered_map` order, which decides EOT/FIM detection when a
//! vocabulary has several candidates). The tests compare against llama.cpp itself
//! (`tests/tokenizer/README.md`).

mod bpe;
mod gguf;
mod hash_order;
pub mod pretokenize;
mod regex_split;
mod regexes;
mod spm;
mod symbols;
mod unicode;
mod unicode_data;
pub mod vocab;

#[cfg(test)]
mod tests;

pub use pretokenize::PreTokenizer;
pub use vocab::{attr, TokenData, Vocab, VocabSpec, VocabType};

/// Errors building a tokenizer from metadata.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer metadata: key {key} is missing")]
    MissingKey { key: &'static str },
    #[error("tokenizer metadata: key {key} has type {found}, expected {expected}")]
    WrongType {
        key: String,
        found: String,
        expected: &'static str,
    },
    #[error("tokenizer metadata: {key} has {got} entries for {want} tokens")]
    ShortArray {
        key: &'static str,
        got: usize,
        want: usize,
    },
    #[error("unsupported tokenizer.ggml.model '{0}' (kiln supports 'llama' and 'gpt2')")]
    UnsupportedModel(String),
    #[error("unsupported tokenizer.ggml.pre '{0}'; regenerate the GGUF or add its regex set")]
    UnsupportedPre(String),
    #[error("duplicate token in vocabulary: '{text}' has ids {first} and {second}")]
    DuplicateToken {
        text: String,
        first: u32,
        second: u32,
    },
    #[error("{add_key} is true, but {id_key} is not set")]
    AddWithoutId {
        add_key: &'static str,
        id_key: &'static str,
    },
}

/// A piece of the input while special tokens are split out (`fragment_buffer_variant`).
#[derive(Clone, Copy, Debug)]
enum Fragment {
    Token(u32),
    Text { start: usize, len: usize },
}

/// A tokenizer: the vocabulary plus llama.cpp's `tokenize` / `detokenize`.
#[derive(Debug)]
pub struct Tokenizer {
    vocab: Vocab,
}

impl Tokenizer {
    /// Wraps a vocabulary built with [`Vocab::from_spec`].
    pub fn new(vocab: Vocab) -> Tokenizer {
        Tokenizer { vocab }
    }

    /// Builds the tokenizer from a GGUF file's `tokenizer.ggml.*` metadata
    /// (`llama_vocab::load`).
    pub fn from_gguf(file: &ggml_compat::gguf::GgufFile) -> Result<Tokenizer, TokenizerError> {
        Ok(Tokenizer::new(Vocab::from_spec(gguf::spec_from_gguf(
            file,
        )?)?))
    }

    /// The vocabulary: token texts, attributes, special ids and flags (`llama_vocab`).
    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    /// `llama_vocab_n_tokens`
    pub fn n_vocab(&self) -> usize {
        self.vocab.n_tokens()
    }

    /// `llama_vocab_bos`
    pub fn bos(&self) -> Option<u32> {
        self.vocab.bos
    }

    /// `llama_vocab_eos`
    pub fn eos(&self) -> Option<u32> {
        self.vocab.eos
    }

    /// `llama_vocab_eot`
    pub fn eot(&self) -> Option<u32> {
        self.vocab.eot
    }

    /// `llama_vocab_get_add_bos`
    pub fn add_bos(&self) -> bool {
        self.vocab.add_bos
    }

    /// `llama_vocab_get_add_eos`
    pub fn add_eos(&self) -> bool {
        self.vocab.add_eos
    }

    /// `llama_vocab_is_eog`: EOS, EOT, EOM, FIM pad/rep/sep and the end-of-turn texts.
    pub fn is_eog(&self, id: u32) -> bool {
        self.vocab.is_eog(id)
    }

    /// `llama_tokenize`: with `add_special`, BOS/EOS as the metadata asks; with
    /// `parse_special`, control tokens written in the text become their ids (user-defined
    /// tokens are always matched).
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let v = &self.vocab;
        let fragments = if text.is_empty() {
            Vec::new()
        } else {
            self.partition(text, parse_special)
        };
        let mut out = Vec::new();
        match v.kind {
            VocabType::Spm => {
                let mut prev_special = true;
                if add_special && v.add_bos {
                    out.extend(v.bos);
                }
                for f in fragments {
                    match f {
                        Fragment::Text { start, len } => {
                            let mut s = String::with_capacity(len + 4);
                            if v.add_space_prefix && prev_special {
                                s.push(' ');
                            }
                            s.push_str(&text[start..start + len]);
                            let s = s.replace(' ', "\u{2581}");
                            spm::tokenize(v, &s, &mut out);
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
                if add_special && v.add_eos {
                    out.extend(v.eos);
                }
            }
            VocabType::Bpe => {
                if add_special && v.add_bos {
                    out.extend(v.bos);
                }
                let stages = v.pre.unwrap_or(PreTokenizer::Default).stages();
                for f in fragments {
                    match f {
                        Fragment::Text { start, len } => {
                            let frag = &text[start..start + len];
                            let escaped;
                            let frag = if v.escape_whitespaces {
                                escaped = frag.replace(' ', "\u{2581}");
                                escaped.as_str()
                            } else {
                                frag
                            };
                            for word in pretokenize::split(frag, stages) {
                                let word = pretokenize::byte_encode(word);
                                bpe::tokenize_word(v, &word, true, &mut out);
                            }
                        }
                        Fragment::Token(id) => out.push(id),
                    }
                }
                if add_special && v.add_eos {
                    out.extend(v.eos);
                }
            }
        }
        out
    }

    /// `tokenizer_st_partition`: splits the text on special tokens, longest first, applying
    /// their lstrip/rstrip attributes to the neighbouring text.
    fn partition(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        let v = &self.vocab;
        let bytes = text.as_bytes();
        let mut frags = vec![Fragment::Text {
            start: 0,
            len: text.len(),
        }];
        for &id in &v.special_tokens {
            let t = &v.tokens[id as usize];
            if !parse_special && t.attr & (attr::CONTROL | attr::UNKNOWN) != 0 {
                continue;
            }
            let needle_len = t.text.len();
            if !frags.iter().any(|f| matches!(f, Fragment::Text { .. })) {
                break;
            }
            let mut out = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                let Fragment::Text { start, len } = f else {
                    out.push(f);
                    continue;
                };
                let (mut base, mut blen) = (start, len);
                loop {
                    // fragment ends sit on char boundaries: the needles are whole UTF-8 strings
                    let hay = text.get(base..base + blen).unwrap_or("");
                    let Some(m) = hay.find(t.text.as_str()).map(|m| m + base) else {
                        if blen > 0 {
                            out.push(Fragment::Text {
                                start: base,
                                len: blen,
                            });
                        }
                        break;
                    };
                    if m > base {
                        let mut left = m - base;
                        if t.attr & attr::LSTRIP != 0 {
                            while left > 0 && is_c_space(bytes[base + left - 1]) {
                                left -= 1;
                            }
                        }
                        if left > 0 {
                            out.push(Fragment::Text {
                                start: base,
                                len: left,
                            });
                        }
                    }
                    out.push(Fragment::Token(id));
                    let end = m + needle_len;
                    if end >= base + blen {
                        break;
                    }
                    let (mut r_off, mut r_len) = (end, base + blen - end);
                    if t.attr & attr::RSTRIP != 0 {
                        while r_len > 0 && is_c_space(bytes[r_off]) {
                            r_off += 1;
                            r_len -= 1;
                        }
                    }
                    (base, blen) = (r_off, r_len);
                }
            }
            frags = out;
        }
        frags
    }

    /// `llama_token_to_piece(id, lstrip = 0, special = true)`: the token's bytes, with
    /// control tokens rendered as their text (llama.cpp's `common_token_to_piece` default).
    pub fn token_to_piece(&self, id: u32) -> &[u8] {
        self.vocab.piece(id, true)
    }

    /// `llama_token_to_piece` with an explicit `special` (false hides control/unknown tokens).
    pub fn token_to_piece_special(&self, id: u32, special: bool) -> &[u8] {
        self.vocab.piece(id, special)
    }

    /// `common_detokenize(tokens, special = true)`: `llama_detokenize` without removing
    /// BOS/EOS and with control tokens rendered; invalid UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.detokenize(ids, false, true)).into_owned()
    }

    /// `llama_detokenize`: joins the pieces, drops the SPM prefix space of the first token,
    /// optionally drops leading BOS / trailing EOS, then applies `clean_spaces`.
    pub fn detokenize(&self, ids: &[u32], remove_special: bool, unparse_special: bool) -> Vec<u8> {
        let v = &self.vocab;
        let mut ids = ids;
        let mut remove_space = v.add_space_prefix;
        if remove_special && v.add_bos && !ids.is_empty() && Some(ids[0]) == v.bos {
            remove_space = false;
            ids = &ids[1..];
        }
        if remove_special && v.add_eos && !ids.is_empty() && Some(ids[ids.len() - 1]) == v.eos {
            ids = &ids[..ids.len() - 1];
        }
        let mut text = Vec::new();
        for &id in ids {
            let mut piece = v.piece(id, unparse_special);
            if remove_space && piece.first() == Some(&b' ') {
                piece = &piece[1..];
            }
            remove_space = false;
            text.extend_from_slice(piece);
        }
        if v.clean_spaces {
            clean_spaces(&mut text);
        }
        text
    }

    /// A decoder for generated tokens that only emits complete UTF-8.
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder {
            tok: self,
            pending: Vec::new(),
            special: true,
        }
    }
}

/// The three in-place `clean_spaces` passes of `llama_detokenize` (" ?", " ' ", " 's").
fn clean_spaces(t: &mut Vec<u8>) {
    // first pass: drop the space before ? ! . ,
    let n1 = t.len();
    let mut total = n1.min(1);
    for i in 1..n1 {
        let x = t[i];
        if t[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        t[total] = x;
        total += 1;
    }
    // second pass: " ' " loses both spaces (the one after is overwritten with NUL and skipped)
    let n2 = total;
    total = n2.min(1);
    let mut i = 1;
    while i < n2 {
        let x = t[i];
        if x == b'\'' && i + 1 < n2 && t[i - 1] == b' ' && t[i + 1] == b' ' {
            total -= 1;
            i += 1;
            t[i] = 0;
        }
        t[total] = x;
        total += 1;
        i += 1;
    }
    // third pass: " 's", " 'm", " 're", " 've" lose the space
    let n3 = total;
    total = n3.min(1);
    for i in 1..n3 {
        let x = t[i];
        if t[i - 1] == b' ' && x == b'\'' && i + 1 < n3 {
            let x1 = t[i + 1];
            let re_ve = !matches!(x1, b't' | b'd')
                && i + 2 < n3
                && matches!((x1, t[i + 2]), (b'r', b'e') | (b'v', b'e'));
            if matches!(x1, b's' | b'm') || re_ve {
                total -= 1;
            }
        }
        t[total] = x;
        total += 1;
    }
    t.truncate(total);
}

/// Streaming detokenizer: buffers pieces until they form complete UTF-8 sequences.
pub struct StreamDecoder<'t> {
    tok: &'t Tokenizer,
    pending: Vec<u8>,
    special: bool,
}

impl StreamDecoder<'_> {
    /// Whether control tokens are rendered as their text (default true).
    pub fn set_special(&mut self, special: bool) {
        self.special = special;
    }

    /// Adds a token; returns the text that is now complete (possibly empty). Bytes that can
    /// never become valid UTF-8 are emitted as U+FFFD.
    pub fn push(&mut self, id: u32) -> String {
        let piece = self.tok.vocab.piece(id, self.special);
        self.pending.extend_from_slice(piece);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..good]).unwrap_or_default());
                    match e.error_len() {
                        None => {
                            self.pending.drain(..good);
                            return out;
                        }
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..good + bad);
                        }
                    }
                }
            }
        }
    }

    /// Emits whatever is still buffered (an incomplete sequence becomes U+FFFD).
    pub fn flush(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

/// C `isspace` in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}
