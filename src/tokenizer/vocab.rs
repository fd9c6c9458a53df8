//! The vocabulary: tokens, attributes, special ids and flags, with the defaults
//! `llama_vocab::impl::load` (src/llama-vocab.cpp) applies for each model and pre-tokenizer.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use super::bpe::Merges;
use super::hash_order;
use super::pretokenize::PreTokenizer;
use super::unicode;
use super::TokenizerError;

/// `llama_token_attr` bits.
pub mod attr {
    pub const UNDEFINED: u32 = 0;
    pub const UNKNOWN: u32 = 1 << 0;
    pub const UNUSED: u32 = 1 << 1;
    pub const NORMAL: u32 = 1 << 2;
    pub const CONTROL: u32 = 1 << 3;
    pub const USER_DEFINED: u32 = 1 << 4;
    pub const BYTE: u32 = 1 << 5;
    pub const LSTRIP: u32 = 1 << 7;
    pub const RSTRIP: u32 = 1 << 8;
}

/// The tokenizer algorithm (`llama_vocab_type`); only the two kiln supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VocabType {
    /// `tokenizer.ggml.model = "llama"`: SentencePiece with byte fallback.
    Spm,
    /// `tokenizer.ggml.model = "gpt2"`: byte-level BPE.
    Bpe,
}

/// The raw tokenizer metadata, as stored under `tokenizer.ggml.*` (no defaults applied).
#[derive(Clone, Debug, Default)]
pub struct VocabSpec {
    /// `tokenizer.ggml.model`
    pub model: String,
    /// `tokenizer.ggml.pre`
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.scores`
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.token_type`
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.merges`
    pub merges: Option<Vec<String>>,
    /// Special token ids by key suffix (`"bos_token_id"`, `"eot_token_id"`, ...).
    pub ids: HashMap<String, i64>,
    /// Boolean flags by key suffix (`"add_bos_token"`, `"add_space_prefix"`, ...).
    pub flags: HashMap<String, bool>,
    /// `general.name`, which picks per-model token attributes (phi-3).
    pub name: Option<String>,
}

/// One vocabulary entry (`llama_vocab::token_data`).
#[derive(Clone, Debug)]
pub struct TokenData {
    pub text: String,
    pub score: f32,
    pub attr: u32,
}

/// A loaded vocabulary.
#[derive(Debug)]
pub struct Vocab {
    pub kind: VocabType,
    /// The BPE pre-tokenizer (`None` for SPM).
    pub pre: Option<PreTokenizer>,
    pub(crate) tokens: Vec<TokenData>,
    token_to_id: HashMap<Box<str>, u32, FastHash>,
    pub(crate) merges: Merges,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub sep: Option<u32>,
    pub pad: Option<u32>,
    pub mask: Option<u32>,
    pub fim: [Option<u32>; 6],
    pub add_space_prefix: bool,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_sep: bool,
    pub ignore_merges: bool,
    pub clean_spaces: bool,
    pub escape_whitespaces: bool,
    /// Control, user-defined and unknown tokens, longest text first (`cache_special_tokens`).
    pub(crate) special_tokens: Vec<u32>,
    pub(crate) eog: BTreeSet<u32>,
    /// `token_to_piece(id, special = true)` for every id (`cache_token_to_piece`).
    pieces: Vec<Box<[u8]>>,
}

/// The special-id keys in the order `load` reads them; the last three are deprecated
/// aliases of the FIM ids and override them.
pub(super) const ID_KEYS: [&str; 17] = [
    "bos_token_id",
    "eos_token_id",
    "eot_token_id",
    "eom_token_id",
    "unknown_token_id",
    "seperator_token_id",
    "padding_token_id",
    "mask_token_id",
    "fim_pre_token_id",
    "fim_suf_token_id",
    "fim_mid_token_id",
    "fim_pad_token_id",
    "fim_rep_token_id",
    "fim_sep_token_id",
    "prefix_token_id",
    "suffix_token_id",
    "middle_token_id",
];

/// Texts that mark end-of-generation tokens (the `special_eog_ids` list of `load`).
const EOG_TEXTS: [&str; 22] = [
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

const EOT_TEXTS: [&str; 11] = [
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];

/// FIM token texts, in the order of `Vocab::fim` (pre, suf, mid, pad, rep, sep).
const FIM_TEXTS: [&[&str]; 6] = [
    &[
        "<|fim_prefix|>",
        "<fim-prefix>",
        "<fim_prefix>",
        "<｜fim▁begin｜>",
        "<PRE>",
        "▁<PRE>",
        "<|code_prefix|>",
        "<|prefix|>",
    ],
    &[
        "<|fim_suffix|>",
        "<fim-suffix>",
        "<fim_suffix>",
        "<｜fim▁hole｜>",
        "<SUF>",
        "▁<SUF>",
        "<|code_suffix|>",
        "<|suffix|>",
    ],
    &[
        "<|fim_middle|>",
        "<fim-middle>",
        "<fim_middle>",
        "<｜fim▁end｜>",
        "<MID>",
        "▁<MID>",
        "<|code_middle|>",
        "<|middle|>",
    ],
    &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    &[
        "<|fim_repo|>",
        "<|repo_name|>",
        "<fim-repo>",
        "<REPO>",
        "<reponame>",
    ],
    &["<|file_sep|>"],
];

/// `tokenizer.ggml.pre` → (pre-tokenizer, clean_spaces, ignore_merges, add_bos, no default BOS).
fn pre_type(pre: &str) -> Option<(PreTokenizer, bool, bool, bool, bool)> {
    use PreTokenizer::*;
    Some(match pre {
        "default" => (Default, true, false, false, false),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => (Llama3, true, true, true, false),
        "dbrx" | "smaug-bpe" => (Llama3, true, false, false, false),
        "chatglm-bpe" => (Llama3, true, false, false, true),
        "glm4" | "glm5" => (Llama3, true, true, false, true),
        "deepseek-coder" => (DeepseekCoder, false, false, false, false),
        "falcon" => (Falcon, true, false, false, false),
        "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
            (Starcoder, true, false, false, false)
        }
        "command-r" | "smollm" => (Starcoder, false, false, false, false),
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
        | "a.x-4.0" | "mellum" | "modern-bert" | "exaone4" | "mpt" | "olmo" | "jais" => {
            (Gpt2, true, false, false, false)
        }
        "trillion" | "granite-docling" => (Gpt2, false, false, false, false),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "hunyuan" | "solar-open" => {
            (Qwen2, false, false, false, false)
        }
        "megrez" | "stablelm2" => (Qwen2, true, false, false, false),
        "qwen35" => (Qwen35, false, false, false, false),
        "deepseek-llm" => (DeepseekLlm, false, false, false, false),
        "deepseek-v3" | "hunyuan-dense" | "hy_v4" | "joyai-llm" => {
            (Deepseek3, false, false, false, false)
        }
        "spark2_5" => (Spark25, false, false, false, false),
        "youtu" => (Youtu, false, true, false, false),
        "tekken" => (Tekken, false, true, true, false),
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => {
            (Gpt4o, false, false, false, false)
        }
        "jais-2" => (Jais2, true, false, false, false),
        "poro-chat" => (Poro, false, false, false, false),
        "bloom" | "gpt3-finnish" => (Poro, true, false, false, false),
        "viking" => (Viking, false, false, false, false),
        "chameleon" => (Chameleon, false, false, true, false),
        "bailingmoe" | "bailingmoe2" | "llada-moe" => (Bailingmoe, false, false, false, false),
        "seed-coder" => (SeedCoder, false, false, false, false),
        "ufakzeka" => (Ufakzeka, false, false, false, false),
        "grok-2" => (Grok2, false, false, false, false),
        "exaone-moe" => (ExaoneMoe, true, false, false, false),
        "minicpm5" => (Minicpm5, true, true, false, false),
        "laguna" => (Laguna, false, false, false, false),
        _ => return None,
    })
}

impl Vocab {
    /// Builds the vocabulary like `llama_vocab::impl::load`: model and pre-tokenizer
    /// defaults first, then the metadata overrides, then the text-based detection of
    /// EOT/FIM/EOG tokens and the special-token and piece caches.
    pub fn from_spec(spec: VocabSpec) -> Result<Vocab, TokenizerError> {
        let n = spec.tokens.len();
        let flag = |k: &str| spec.flags.get(k).copied();
        // model defaults: (kind, bos, eos, unk)
        let (kind, mut bos, eos, unk) = match spec.model.as_str() {
            "llama" => (VocabType::Spm, Some(1), Some(2), Some(0)),
            "gpt2" => (VocabType::Bpe, Some(11), Some(11), None),
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        };
        let mut v = Vocab {
            kind,
            pre: None,
            tokens: Vec::with_capacity(n),
            token_to_id: HashMap::with_capacity_and_hasher(n, FastHash::default()),
            merges: Merges::default(),
            bos: None,
            eos: None,
            eot: None,
            eom: None,
            unk: None,
            sep: None,
            pad: None,
            mask: None,
            fim: [None; 6],
            add_space_prefix: false,
            add_bos: false,
            add_eos: false,
            add_sep: false,
            ignore_merges: false,
            clean_spaces: false,
            escape_whitespaces: true,
            special_tokens: Vec::new(),
            eog: BTreeSet::new(),
            pieces: Vec::new(),
        };
        match kind {
            VocabType::Bpe => {
                let merges = spec.merges.as_ref().ok_or(TokenizerError::MissingKey {
                    key: "tokenizer.ggml.merges",
                })?;
                v.merges = Merges::from_lines(merges.iter().map(String::as_str));
                v.escape_whitespaces = false;
                let name = spec.pre.as_deref().unwrap_or("default");
                let (pre, clean, ignore, add_bos, no_bos) = pre_type(name)
                    .ok_or_else(|| TokenizerError::UnsupportedPre(name.to_string()))?;
                for stage in pre.stages() {
                    if let super::pretokenize::Stage::Regex(p) = stage {
                        super::regex_split::compiled(p)
                            .map_err(|e| TokenizerError::UnsupportedPre(format!("{name}: {e}")))?;
                    }
                }
                v.pre = Some(pre);
                v.clean_spaces = clean;
                v.ignore_merges = ignore;
                v.add_bos = add_bos;
                if no_bos {
                    bos = None;
                }
            }
            VocabType::Spm => {
                v.add_space_prefix = true;
                v.add_bos = true;
            }
        }
        if let Some(b) = flag("add_space_prefix") {
            v.add_space_prefix = b;
        }

        // tokens
        let scores = spec.scores.as_deref().unwrap_or(&[]);
        let types = spec.token_types.as_deref().unwrap_or(&[]);
        if spec.scores.is_some() && scores.len() < n {
            return Err(TokenizerError::ShortArray {
                key: "tokenizer.ggml.scores",
                got: scores.len(),
                want: n,
            });
        }
        if spec.token_types.is_some() && types.len() < n {
            return Err(TokenizerError::ShortArray {
                key: "tokenizer.ggml.token_type",
                got: types.len(),
                want: n,
            });
        }
        for (i, text) in spec.tokens.iter().enumerate() {
            let text = if text.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                text.clone()
            };
            if let Some(&first) = v.token_to_id.get(text.as_str()) {
                return Err(TokenizerError::DuplicateToken {
                    text,
                    first,
                    second: i as u32,
                });
            }
            v.token_to_id.insert(text.as_str().into(), i as u32);
            let attr = match types.get(i) {
                None => attr::NORMAL,
                Some(1) => attr::NORMAL,
                Some(2) => attr::UNKNOWN,
                Some(3) => attr::CONTROL,
                Some(4) => attr::USER_DEFINED,
                Some(5) => attr::UNUSED,
                Some(6) => attr::BYTE,
                Some(_) => attr::UNDEFINED,
            };
            v.tokens.push(TokenData {
                text,
                score: scores.get(i).copied().unwrap_or(0.0),
                attr,
            });
        }

        // special ids: defaults out of range are dropped; metadata ids out of range are ignored
        let mut ids: [Option<u32>; 17] = [None; 17];
        (ids[0], ids[1], ids[4]) = (bos, eos, unk);
        for (slot, key) in ids.iter_mut().zip(ID_KEYS) {
            if slot.is_some_and(|id| id as usize >= n) {
                *slot = None;
            }
            if let Some(&id) = spec.ids.get(key) {
                if id >= 0 && (id as usize) < n {
                    *slot = Some(id as u32);
                }
            }
        }
        // the deprecated prefix/suffix/middle keys write the same variables as fim_pre/suf/mid
        for (alias, fim) in [(14, 8), (15, 9), (16, 10)] {
            if spec.ids.contains_key(ID_KEYS[alias]) && ids[alias].is_some() {
                ids[fim] = ids[alias];
            }
        }
        [v.bos, v.eos, v.eot, v.eom, v.unk, v.sep, v.pad, v.mask] = [
            ids[0], ids[1], ids[2], ids[3], ids[4], ids[5], ids[6], ids[7],
        ];
        v.fim.copy_from_slice(&ids[8..14]);

        if let Some(b) = flag("add_bos_token") {
            v.add_bos = b;
        }
        if let Some(b) = flag("add_eos_token") {
            v.add_eos = b;
        }
        if let Some(b) = flag("add_sep_token") {
            v.add_sep = b;
        }
        for (on, id, add_key, id_key) in [
            (
                v.add_bos,
                v.bos,
                "tokenizer.ggml.add_bos_token",
                "tokenizer.ggml.bos_token_id",
            ),
            (
                v.add_eos,
                v.eos,
                "tokenizer.ggml.add_eos_token",
                "tokenizer.ggml.eos_token_id",
            ),
            (
                v.add_sep,
                v.sep,
                "tokenizer.ggml.add_sep_token",
                "tokenizer.ggml.seperator_token_id",
            ),
        ] {
            if on && id.is_none() {
                return Err(TokenizerError::AddWithoutId { add_key, id_key });
            }
        }

        v.detect_special_tokens();
        v.build_caches();
        v.apply_model_attrs(spec.name.as_deref());
        Ok(v)
    }

    /// Text-based EOT/EOM/FIM/EOG detection and the unused/EOG fix-ups of `load`.
    fn detect_special_tokens(&mut self) {
        // llama.cpp takes the first candidate its unordered_map yields; replay that order
        // when it matters (several candidates present), else any candidate is the answer
        let lists: Vec<(&[&str], bool)> = [
            (&EOT_TEXTS[..], self.eot.is_none()),
            (&["<|eom_id|>"][..], self.eom.is_none()),
        ]
        .into_iter()
        .chain(
            FIM_TEXTS
                .iter()
                .zip(self.fim)
                .map(|(t, id)| (*t, id.is_none())),
        )
        .collect();
        let ambiguous = lists.iter().any(|&(texts, open)| {
            open && texts
                .iter()
                .filter(|t| self.text_to_token(t).is_some())
                .count()
                > 1
        });
        let order = if ambiguous {
            hash_order::token_to_id_order(self.tokens.iter().map(|t| t.text.as_str()))
        } else {
            None
        };
        let pick = |v: &Self, texts: &[&str]| -> Option<u32> {
            let ids: Vec<u32> = texts.iter().filter_map(|t| v.text_to_token(t)).collect();
            match (&order, ids.len()) {
                (Some(order), 2..) => order.iter().copied().find(|id| ids.contains(id)),
                _ => ids.first().copied(),
            }
        };
        if self.eot.is_none() {
            self.eot = pick(self, &EOT_TEXTS);
            self.mark_control(self.eot);
        }
        if self.eom.is_none() {
            self.eom = pick(self, &["<|eom_id|>"]);
            self.mark_control(self.eom);
        }
        for (slot, texts) in FIM_TEXTS.iter().enumerate() {
            if self.fim[slot].is_none() {
                self.fim[slot] = pick(self, texts);
                self.mark_control(self.fim[slot]);
            }
        }
        for t in &mut self.tokens {
            if t.attr & attr::CONTROL != 0 && t.text.contains("unused") {
                t.attr |= attr::UNUSED;
            }
        }
        self.eog.extend(self.fim[3..].iter().flatten());
        for text in EOG_TEXTS {
            if let Some(id) = self.text_to_token(text) {
                self.eog.insert(id);
                self.mark_control(Some(id));
            }
        }
        for text in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let Some(id) = self.text_to_token(text) {
                self.tokens[id as usize].attr = attr::USER_DEFINED;
            }
        }
        self.eog
            .extend([self.eos, self.eot, self.eom].into_iter().flatten());
        let has = |v: &Self, t: &str| v.text_to_token(t).is_some_and(|id| v.eog.contains(&id));
        if let Some(end) = self
            .text_to_token("<|end|>")
            .filter(|id| self.eog.contains(id))
        {
            let (ret, call, calls, flush) = (
                has(self, "<|return|>"),
                has(self, "<|call|>"),
                has(self, "<|calls|>"),
                has(self, "<|flush|>"),
            );
            if (call || calls) && (ret || flush) {
                self.eog.remove(&end);
                self.tokens[end as usize].attr = attr::USER_DEFINED;
            }
        }
        if has(self, "<|tool_response>") {
            if let Some(s) = self
                .text_to_token("</s>")
                .filter(|id| self.eog.contains(id))
            {
                self.eog.remove(&s);
                self.tokens[s as usize].attr = attr::NORMAL;
            }
        }
    }

    fn mark_control(&mut self, id: Option<u32>) {
        if let Some(id) = id {
            self.tokens[id as usize].attr |= attr::CONTROL;
        }
    }

    fn build_caches(&mut self) {
        let special = attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN;
        self.special_tokens = (0..self.tokens.len() as u32)
            .filter(|&id| self.tokens[id as usize].attr & special != 0)
            .collect();
        // llama.cpp uses an unstable std::sort; ties keep id order here
        self.special_tokens
            .sort_by_key(|&id| std::cmp::Reverse(self.tokens[id as usize].text.len()));
        self.pieces = (0..self.tokens.len())
            .map(|id| self.compute_piece(id).into_boxed_slice())
            .collect();
    }

    /// Per-model attributes set by name (`load`, "Handle per token attributes").
    fn apply_model_attrs(&mut self, name: Option<&str>) {
        let name = name.unwrap_or("").to_lowercase();
        if name.contains("phi-3") || name.contains("phi3") {
            for &id in &self.special_tokens {
                self.tokens[id as usize].attr |= attr::RSTRIP;
            }
            if let Some(id) = self.text_to_token("</s>") {
                self.tokens[id as usize].attr |= attr::RSTRIP;
            }
            for t in ["<unk>", "<s>", "<|endoftext|>"] {
                if let Some(id) = self.text_to_token(t) {
                    self.tokens[id as usize].attr &= !attr::RSTRIP;
                }
            }
        }
    }

    /// `token_to_piece(id, special = true)` without the cache (`token_to_piece_for_cache`).
    fn compute_piece(&self, id: usize) -> Vec<u8> {
        let t = &self.tokens[id];
        if t.attr & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
            return t.text.as_bytes().to_vec();
        }
        if t.attr & attr::NORMAL != 0 {
            if self.kind == VocabType::Spm || self.escape_whitespaces {
                return t.text.replace('\u{2581}', " ").into_bytes();
            }
            return decode_byte_level(&t.text);
        }
        if t.attr & attr::BYTE != 0 {
            return vec![byte_of_token(&t.text)];
        }
        Vec::new()
    }

    /// Number of BPE merges (distinct pairs).
    pub fn n_merges(&self) -> usize {
        self.merges.len()
    }

    /// Number of tokens.
    pub fn n_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// `llama_vocab::text_to_token`
    pub fn text_to_token(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }

    /// The token's text as stored, if the id is in range.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(|t| t.text.as_str())
    }

    /// The token's attribute bits (`attr::*`), 0 for an id out of range.
    pub fn token_attr(&self, id: u32) -> u32 {
        self.tokens.get(id as usize).map_or(0, |t| t.attr)
    }

    pub(crate) fn score(&self, id: u32) -> f32 {
        self.tokens[id as usize].score
    }

    /// `llama_vocab::byte_to_token` for SPM: `<0xXX>`, else the byte itself as a token.
    pub(crate) fn byte_to_token(&self, b: u8) -> Option<u32> {
        self.text_to_token(&format!("<0x{b:02X}>")).or_else(|| {
            std::str::from_utf8(&[b])
                .ok()
                .and_then(|s| self.text_to_token(s))
        })
    }

    /// `llama_vocab::token_to_piece` (lstrip = 0): the bytes the token stands for; control and
    /// unknown tokens give their text when `special`, nothing otherwise.
    pub fn piece(&self, id: u32, special: bool) -> &[u8] {
        let Some(t) = self.tokens.get(id as usize) else {
            return &[];
        };
        if !special && t.attr & (attr::UNKNOWN | attr::CONTROL) != 0 {
            return &[];
        }
        &self.pieces[id as usize]
    }

    /// `llama_vocab::is_eog`
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }
}

/// A multiply-rotate hash (FxHash) for the token maps: token lookups dominate tokenizing
/// time, and the keys are not chosen by an adversary at run time.
pub(crate) type FastHash = BuildHasherDefault<FxHasher>;

#[derive(Default)]
pub(crate) struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
            ]));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf) ^ (rest.len() as u64) << 56);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// `llama_decode_text`: GPT-2 stand-in characters back to bytes.
fn decode_byte_level(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match unicode::char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
    out
}

/// `token_to_byte`: `strtol(text.substr(3, 2), 16)` of a `<0xXX>` token.
fn byte_of_token(text: &str) -> u8 {
    let digits = text.as_bytes().iter().skip(3).take(2);
    let mut v = 0u8;
    for &d in digits {
        match (d as char).to_digit(16) {
            Some(x) => v = v.wrapping_mul(16).wrapping_add(x as u8),
            None => break,
        }
    }
    v
}
