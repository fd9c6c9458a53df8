//! BPE pre-tokenizers: llama.cpp's `unicode_regex_split` for the regex lists of
//! `llm_tokenizer_bpe` (src/llama-vocab.cpp).
//!
//! llama.cpp runs each regex of a list over every segment left by the previous one; a match
//! and the text between matches both become segments. Two regexes have hand-written
//! implementations there (GPT-2's and Llama-3's); the others go through `std::regex` on a
//! "collapsed" text where each non-ASCII codepoint is replaced by one byte naming its
//! category. The regexes used here are small enough to write as matchers with the same
//! leftmost-first, backtracking semantics; the comments give the regex each one stands for.

use super::regex_split;
use super::regexes as re;
use super::unicode::{self, Flags};

/// A character class as the collapsed `std::regex` sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// `\p{N}`
    Number,
    /// `\p{L}`
    Letter,
    /// `\p{P}`
    Punct,
    /// `[\p{P}\$\+<=>\^~\|]`
    PunctDefault,
    /// ``[\p{P}\$\+<=>\^~\|`]``
    PunctFalcon,
    /// `[\r\n]`
    CrLf,
    /// `[一-龥ࠀ-一가-퟿]` (matched by `std::wregex`, which sees non-ASCII spaces as `\v`)
    DeepseekCjk,
}

impl Class {
    fn contains(self, cpt: u32, f: Flags) -> bool {
        match self {
            Class::Number => f.is_number(),
            Class::Letter => f.is_letter(),
            Class::Punct => f.is_punctuation(),
            Class::PunctDefault => f.is_punctuation() || b"$+<=>^~|".contains(&ascii(cpt)),
            Class::PunctFalcon => f.is_punctuation() || b"$+<=>^~|`".contains(&ascii(cpt)),
            Class::CrLf => cpt == '\r' as u32 || cpt == '\n' as u32,
            Class::DeepseekCjk => {
                !f.whitespace
                    && ((0x4E00..=0x9FA5).contains(&cpt)
                        || (0x0800..=0x4E00).contains(&cpt)
                        || (0xAC00..=0xD7FF).contains(&cpt))
            }
        }
    }
}

/// The byte for an ASCII codepoint, 0 (in no class list above) otherwise.
fn ascii(cpt: u32) -> u8 {
    if (1..128).contains(&cpt) {
        cpt as u8
    } else {
        0
    }
}

/// One regex of a pre-tokenizer list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)` — llama.cpp's
    /// `unicode_regex_split_custom_gpt2` (which also takes a trailing `\s+`).
    Gpt2,
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,digits}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    /// — `unicode_regex_split_custom_llama3` for `digits == 3`; with `digits == 1` it is the
    /// Qwen2 regex (`unicode_regex_split_custom_qwen2`). With `marks`, letter runs also take
    /// `\p{M}` (`[\p{L}\p{M}]+`, `[^\s\p{L}\p{M}\p{N}]`): Qwen3.5's regex.
    Llama3 { digits: usize, marks: bool },
    /// `class+`
    Run(Class),
    /// `class`
    One(Class),
    /// `[0-9][0-9][0-9]`
    AsciiDigits3,
    /// `\s?class+`
    SpaceRun(Class),
    /// Any other regex of llama.cpp's lists, run like its `std::regex` fallback.
    Regex(&'static str),
}

/// The regex lists of `llm_tokenizer_bpe`, by `tokenizer.ggml.pre` family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreTokenizer {
    /// `LLAMA_VOCAB_PRE_TYPE_DEFAULT`
    Default,
    /// llama3 / llama-bpe / dbrx / smaug / chatglm4 (the Llama-3 regex)
    Llama3,
    DeepseekCoder,
    Falcon,
    /// starcoder / refact / smollm / command-r / codeshell / exaone / minerva
    Starcoder,
    /// gpt-2 / mpt / olmo / jais / phi-2 and friends
    Gpt2,
    /// qwen2 / stablelm2 / hunyuan / megrez
    Qwen2,
    /// qwen35
    Qwen35,
    /// deepseek-llm
    DeepseekLlm,
    /// deepseek-v3 / hunyuan-dense / joyai-llm / hy_v4
    Deepseek3,
    /// spark2_5
    Spark25,
    /// youtu
    Youtu,
    /// tekken
    Tekken,
    /// gpt-4o / llama4 / kanana2 / talkie / minimax-m2
    Gpt4o,
    /// jais-2
    Jais2,
    /// poro-chat / bloom / gpt3-finnish
    Poro,
    /// viking
    Viking,
    /// chameleon
    Chameleon,
    /// bailingmoe / bailingmoe2 / llada-moe
    Bailingmoe,
    /// seed-coder
    SeedCoder,
    /// ufakzeka
    Ufakzeka,
    /// grok-2
    Grok2,
    /// exaone-moe
    ExaoneMoe,
    /// minicpm5
    Minicpm5,
    /// laguna
    Laguna,
}

/// `Stage::Regex` for each pattern of a list.
macro_rules! regex_stages {
    ($list:expr, $n:literal) => {{
        const L: [&str; $n] = $list;
        const fn build() -> [Stage; $n] {
            let mut out = [Stage::Regex(""); $n];
            let mut i = 0;
            while i < $n {
                out[i] = Stage::Regex(L[i]);
                i += 1;
            }
            out
        }
        const S: [Stage; $n] = build();
        &S
    }};
}

impl PreTokenizer {
    pub(crate) fn stages(self) -> &'static [Stage] {
        use Class::*;
        match self {
            PreTokenizer::Default => &[
                Stage::Run(PunctDefault),
                Stage::Gpt2,
                Stage::Run(Number),
                Stage::AsciiDigits3,
            ],
            PreTokenizer::Llama3 => &[Stage::Llama3 {
                digits: 3,
                marks: false,
            }],
            PreTokenizer::DeepseekCoder => &[
                Stage::One(CrLf),
                Stage::SpaceRun(Letter),
                Stage::SpaceRun(Punct),
                Stage::Run(DeepseekCjk),
                Stage::One(Number),
            ],
            PreTokenizer::Falcon => &[Stage::Run(PunctFalcon), Stage::Gpt2, Stage::AsciiDigits3],
            PreTokenizer::Starcoder => &[Stage::One(Number), Stage::Gpt2],
            PreTokenizer::Gpt2 => &[Stage::Gpt2],
            PreTokenizer::Qwen2 => &[Stage::Llama3 {
                digits: 1,
                marks: false,
            }],
            PreTokenizer::Qwen35 => &[Stage::Llama3 {
                digits: 1,
                marks: true,
            }],
            PreTokenizer::DeepseekLlm => regex_stages!(re::DEEPSEEK_LLM, 6),
            PreTokenizer::Deepseek3 => regex_stages!(re::DEEPSEEK3_LLM, 3),
            PreTokenizer::Spark25 => regex_stages!(re::SPARK2_5, 4),
            PreTokenizer::Youtu => regex_stages!(re::YOUTU, 2),
            PreTokenizer::Tekken => regex_stages!(re::TEKKEN, 1),
            PreTokenizer::Gpt4o => regex_stages!(re::GPT4O, 1),
            PreTokenizer::Jais2 => regex_stages!(re::JAIS2, 1),
            PreTokenizer::Poro => regex_stages!(re::PORO, 1),
            PreTokenizer::Viking => regex_stages!(re::VIKING, 2),
            PreTokenizer::Chameleon => {
                // the last regex is GPT-2's, which has the hand-written splitter
                const C: [Stage; 6] = [
                    Stage::Regex(re::CHAMELEON[0]),
                    Stage::Regex(re::CHAMELEON[1]),
                    Stage::Regex(re::CHAMELEON[2]),
                    Stage::Regex(re::CHAMELEON[3]),
                    Stage::Regex(re::CHAMELEON[4]),
                    Stage::Gpt2,
                ];
                &C
            }
            PreTokenizer::Bailingmoe => regex_stages!(re::BAILINGMOE, 1),
            PreTokenizer::SeedCoder => regex_stages!(re::SEED_CODER, 1),
            PreTokenizer::Ufakzeka => regex_stages!(re::UFAKZEKA, 1),
            PreTokenizer::Grok2 => &[Stage::Llama3 {
                digits: 1,
                marks: false,
            }],
            PreTokenizer::ExaoneMoe => regex_stages!(re::EXAONE_MOE, 1),
            PreTokenizer::Minicpm5 => regex_stages!(re::MINICPM5, 2),
            PreTokenizer::Laguna => &[
                Stage::Regex("[^\\n]+|[\\n]+"),
                Stage::Llama3 {
                    digits: 1,
                    marks: false,
                },
            ],
        }
    }
}

/// The codepoints of one text, their flags, and the segments found so far.
struct Splitter {
    cpts: Vec<u32>,
    flags: Vec<Flags>,
}

/// A segment `[ini, end)` being scanned, with llama.cpp's out-of-range conventions.
struct Seg<'a> {
    s: &'a Splitter,
    ini: usize,
    end: usize,
}

impl Seg<'_> {
    fn cpt(&self, p: usize) -> Option<u32> {
        (self.ini <= p && p < self.end).then(|| self.s.cpts[p])
    }
    fn fl(&self, p: usize) -> Flags {
        if self.ini <= p && p < self.end {
            self.s.flags[p]
        } else {
            Flags::OUT
        }
    }
    fn is(&self, p: usize, c: char) -> bool {
        self.cpt(p) == Some(c as u32)
    }
    fn in_class(&self, p: usize, class: Class) -> bool {
        self.cpt(p).is_some_and(|c| class.contains(c, self.fl(p)))
    }
    fn run(&self, mut p: usize, class: Class) -> usize {
        while self.in_class(p, class) {
            p += 1;
        }
        p
    }
    /// Not whitespace, letter or number (but inside the segment).
    fn other(f: Flags) -> bool {
        !(f.whitespace || f.is_letter() || f.is_number()) && f.is_some()
    }

    /// The length of the match of `stage` starting exactly at `p`, if any.
    fn match_at(&self, stage: Stage, p: usize) -> Option<usize> {
        match stage {
            Stage::Gpt2 => Some(self.gpt2(p)),
            Stage::Llama3 { digits, marks } => Some(self.llama3(p, digits, marks)),
            Stage::Run(c) => self.in_class(p, c).then(|| self.run(p, c) - p),
            Stage::One(c) => self.in_class(p, c).then_some(1),
            Stage::AsciiDigits3 => (0..3)
                .all(|i| self.cpt(p + i).is_some_and(|c| (0x30..=0x39).contains(&c)))
                .then_some(3),
            Stage::Regex(_) => None,
            Stage::SpaceRun(c) => {
                if self.fl(p).whitespace && self.in_class(p + 1, c) {
                    Some(self.run(p + 1, c) - p)
                } else if self.in_class(p, c) {
                    Some(self.run(p, c) - p)
                } else {
                    None
                }
            }
        }
    }

    /// English contractions at `p` (`'s|'t|'re|'ve|'m|'ll|'d`), optionally case-insensitive.
    fn contraction(&self, p: usize, fold: bool) -> Option<usize> {
        if !self.is(p, '\'') || p + 1 >= self.end {
            return None;
        }
        let low = |c: u32| if fold { unicode::ascii_lower(c) } else { c };
        let n = low(self.s.cpts[p + 1]);
        if [b's', b't', b'm', b'd'].iter().any(|&c| n == c as u32) {
            return Some(2);
        }
        if p + 2 < self.end {
            let nn = low(self.s.cpts[p + 2]);
            let pair = |a: u8, b: u8| n == a as u32 && nn == b as u32;
            if pair(b'r', b'e') || pair(b'v', b'e') || pair(b'l', b'l') {
                return Some(3);
            }
        }
        None
    }

    /// `\s+(?!\S)` then `\s+`, for a whitespace run starting at `p` of length `n`.
    fn trailing_space(&self, p: usize, n: usize) -> usize {
        if n > 1 && self.cpt(p + n).is_some() {
            n - 1
        } else {
            n.max(1)
        }
    }

    fn gpt2(&self, p: usize) -> usize {
        if let Some(n) = self.contraction(p, false) {
            return n;
        }
        let space = self.is(p, ' ') as usize;
        let f2 = self.fl(p + space);
        let q = p + space;
        if f2.is_letter() {
            return self.run_while(q, Flags::is_letter) - p;
        }
        if f2.is_number() {
            return self.run_while(q, Flags::is_number) - p;
        }
        if Self::other(f2) {
            return self.run_while(q, Self::other) - p;
        }
        let n = self.run_while(p, |f| f.whitespace) - p;
        self.trailing_space(p, n)
    }

    fn llama3(&self, p: usize, digits: usize, marks: bool) -> usize {
        if let Some(n) = self.contraction(p, true) {
            return n;
        }
        let f = self.fl(p);
        let word = |f: Flags| f.is_letter() || (marks && f.is_mark());
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if !(self.is(p, '\r') || self.is(p, '\n') || f.is_number())
            && (word(f) || word(self.fl(p + 1)))
        {
            return self.run_while(p + 1, word) - p;
        }
        // \p{N}{1,digits}
        if f.is_number() {
            return (self.run_while(p, Flags::is_number) - p).min(digits);
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`; llama.cpp tests the current flags for "in range" here
        let other = |f: Flags| Self::other(f) && !(marks && f.is_mark());
        let space = self.is(p, ' ') as usize;
        if other(self.fl(p + space)) || (space == 1 && self.fl(p + 1) == Flags::OUT) {
            let mut q = self.run_while(p + space, other);
            while self.is(q, '\r') || self.is(q, '\n') {
                q += 1;
            }
            return q - p;
        }
        // \s*[\r\n]+ , \s+(?!\S) , \s+
        let n = self.run_while(p, |f| f.whitespace) - p;
        if let Some(last) = (p..p + n)
            .rev()
            .find(|&q| self.is(q, '\r') || self.is(q, '\n'))
        {
            return last + 1 - p;
        }
        self.trailing_space(p, n)
    }

    fn run_while(&self, mut p: usize, pred: impl Fn(Flags) -> bool) -> usize {
        while pred(self.fl(p)) {
            p += 1;
        }
        p
    }
}

/// Splits `text` into pre-tokenizer words (llama.cpp `unicode_regex_split`), without the
/// byte-level encoding.
pub(crate) fn split<'t>(text: &'t str, stages: &[Stage]) -> Vec<&'t str> {
    let cpts: Vec<u32> = text.chars().map(|c| c as u32).collect();
    let flags = cpts.iter().map(|&c| unicode::flags(c)).collect();
    let s = Splitter { cpts, flags };
    let mut segs = vec![(0usize, s.cpts.len())];
    for &stage in stages {
        if let Stage::Regex(pattern) = stage {
            segs = regex_split::split(pattern, &s.cpts, &s.flags, &segs);
            continue;
        }
        let mut out = Vec::with_capacity(segs.len());
        for &(ini, len) in &segs {
            let seg = Seg {
                s: &s,
                ini,
                end: ini + len,
            };
            let (mut pos, mut prev) = (ini, ini);
            while pos < seg.end {
                match seg.match_at(stage, pos) {
                    Some(n) => {
                        if pos > prev {
                            out.push((prev, pos - prev));
                        }
                        out.push((pos, n));
                        pos += n;
                        prev = pos;
                    }
                    None => pos += 1,
                }
            }
            if prev < seg.end {
                out.push((prev, seg.end - prev));
            }
        }
        segs = out;
    }
    // codepoint offsets → byte offsets
    let mut byte_at = Vec::with_capacity(s.cpts.len() + 1);
    byte_at.extend(text.char_indices().map(|(i, _)| i));
    byte_at.push(text.len());
    segs.iter()
        .filter(|&&(_, len)| len > 0)
        .map(|&(ini, len)| &text[byte_at[ini]..byte_at[ini + len]])
        .collect()
}

/// GPT-2 byte-level encoding of one word (`unicode_byte_encoding_process`).
pub(crate) fn byte_encode(word: &str) -> String {
    word.bytes().map(unicode::byte_to_char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str, pre: PreTokenizer) -> Vec<&str> {
        split(text, pre.stages())
    }

    #[test]
    fn gpt2_splits_like_the_regex() {
        assert_eq!(
            words("Hello world  foo's 123!!\n", PreTokenizer::Gpt2),
            ["Hello", " world", " ", " foo", "'s", " 123", "!!", "\n"]
        );
    }

    #[test]
    fn llama3_groups_digits_by_three() {
        assert_eq!(
            words("1234567 I'VE\n\n  x", PreTokenizer::Llama3),
            ["123", "456", "7", " I", "'VE", "\n\n", " ", " x"]
        );
    }

    #[test]
    fn starcoder_splits_every_digit() {
        assert_eq!(words("a 12", PreTokenizer::Starcoder), ["a", " ", "1", "2"]);
    }
}
