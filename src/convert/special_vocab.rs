//! gguf-py's `SpecialVocab` (without merges) for SentencePiece vocabularies: special token ids,
//! add_bos/add_eos/add_sep, the chat template and normalizer flags, read from tokenizer.json
//! (added tokens, post-processor), tokenizer_config.json and config.json, in the order the
//! script writes them.

use std::path::Path;

use ggml_compat::gguf::Value;
use serde_json::Value as Json;

use super::{read_json, read_text, ConvertError};

pub(crate) use super::hf::looks_special;

/// What `SpecialVocab.add_to_gguf` writes. Vectors keep Python's dict insertion order.
#[derive(Clone, Debug, Default)]
pub struct SpecialVocab {
    pub ids: Vec<(String, u64)>,
    pub add: Vec<(String, bool)>,
    pub chat_template: Option<String>,
    pub lowercase: Option<bool>,
    pub strip_accents: Option<bool>,
    types: Vec<String>,
    n_vocab: Option<u64>,
}

fn set_in_order<T>(v: &mut Vec<(String, T)>, k: &str, val: T) {
    match v.iter_mut().find(|(key, _)| key == k) {
        Some(e) => e.1 = val,
        None => v.push((k.to_string(), val)),
    }
}

fn setdefault<T>(v: &mut Vec<(String, T)>, k: &str, val: T) {
    if !v.iter().any(|(key, _)| key == k) {
        v.push((k.to_string(), val));
    }
}

/// tokenizer_config.json's `bos_token` etc.: a string or `{"content": ...}`.
fn token_text(cfg: &Json, key: &str) -> Option<String> {
    match cfg.get(key)? {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content").and_then(Json::as_str).map(String::from),
        _ => None,
    }
}

fn special_id(e: &Json) -> Option<String> {
    e.get("SpecialToken")
        .and_then(|s| s.get("id"))
        .and_then(Json::as_str)
        .map(String::from)
}

impl SpecialVocab {
    /// `SpecialVocab(dir, n_vocab=n_vocab)`: `_try_load_load_tokenizer_json`, then
    /// `_try_load_load_config_json`.
    pub fn load(dir: &Path, n_vocab: Option<u64>) -> Result<SpecialVocab, ConvertError> {
        let mut sv = SpecialVocab {
            types: ["bos", "eos", "unk", "sep", "pad", "cls", "mask"]
                .map(String::from)
                .to_vec(),
            n_vocab,
            ..Default::default()
        };
        sv.load_tokenizer_json(dir)?;
        sv.load_config_json(dir)?;
        Ok(sv)
    }

    fn set_special(
        &mut self,
        file: &Path,
        typ: &str,
        tid: Option<&Json>,
    ) -> Result<(), ConvertError> {
        let Some(tid) = tid.and_then(Json::as_i64) else {
            return Ok(());
        };
        if tid < 0 {
            return Err(ConvertError::Tokenizer {
                file: file.to_path_buf(),
                msg: format!("invalid value for special token type {typ}: {tid}"),
            });
        }
        let tid = tid as u64;
        if self.n_vocab.is_none_or(|n| tid < n) && !self.ids.iter().any(|(k, _)| k == typ) {
            self.ids.push((typ.to_string(), tid));
        }
        Ok(())
    }

    fn parse_normalizer(&mut self, n: &Json) {
        match n.get("type").and_then(Json::as_str) {
            Some("Lowercase") => self.lowercase = Some(true),
            Some("StripAccents") => self.strip_accents = Some(true),
            Some("BertNormalizer") => {
                if let Some(b) = n.get("lowercase") {
                    self.lowercase = b.as_bool();
                }
                if let Some(b) = n.get("strip_accents") {
                    self.strip_accents = b.as_bool();
                }
            }
            Some("Sequence") => {
                for m in n
                    .get("normalizers")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                {
                    self.parse_normalizer(m);
                }
            }
            _ => {}
        }
    }

    fn load_tokenizer_json(&mut self, dir: &Path) -> Result<(), ConvertError> {
        let tok_path = dir.join("tokenizer.json");
        let tok = if tok_path.is_file() {
            Some(read_json(&tok_path)?)
        } else {
            None
        };
        let added: Vec<Json> = tok
            .as_ref()
            .and_then(|t| t.get("added_tokens"))
            .and_then(Json::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(n) = tok
            .as_ref()
            .and_then(|t| t.get("normalizer"))
            .filter(|n| !n.is_null())
        {
            self.parse_normalizer(n);
        }
        let cfg_path = dir.join("tokenizer_config.json");
        let mut cfg = if cfg_path.is_file() {
            read_json(&cfg_path)?
        } else {
            Json::Null
        };
        let has_cfg = cfg.as_object().is_some_and(|o| !o.is_empty());
        if let Some(tok) = &tok {
            let mut bos = token_text(&cfg, "bos_token");
            let mut cls = token_text(&cfg, "cls_token");
            let mut eos = token_text(&cfg, "eos_token");
            let mut sep = token_text(&cfg, "sep_token");
            if bos.is_none() && cls.is_some() && has_cfg {
                bos.clone_from(&cls);
                cfg["bos_token"] = Json::from(bos.clone());
            }
            if eos.is_none() && sep.is_some() && has_cfg {
                eos.clone_from(&sep);
                cfg["eos_token"] = Json::from(eos.clone());
            }
            if let Some(pp) = tok.get("post_processor").filter(|p| !p.is_null()) {
                let procs = pp
                    .get("processors")
                    .and_then(Json::as_array)
                    .cloned()
                    .unwrap_or_else(|| vec![pp.clone()]);
                for p in procs {
                    match p.get("type").and_then(Json::as_str) {
                        Some("ByteLevel") => {
                            setdefault(&mut self.add, "bos", false);
                            setdefault(&mut self.add, "eos", false);
                        }
                        Some("TemplateProcessing") => self.template_processing(
                            &p, &mut cfg, has_cfg, &mut bos, &mut cls, &mut eos, &sep,
                        ),
                        Some("RobertaProcessing") => {
                            for t in ["bos", "eos", "sep"] {
                                set_in_order(&mut self.add, t, true);
                            }
                            let first = |k: &str, default: &Option<String>| {
                                p.get(k)
                                    .and_then(|v| v.get(0))
                                    .and_then(Json::as_str)
                                    .map(String::from)
                                    .or_else(|| default.clone())
                            };
                            if cls.is_none() && has_cfg {
                                cls = first("cls", &bos);
                                cfg["cls_token"] = Json::from(cls.clone());
                            }
                            if sep.is_none() && has_cfg {
                                sep = first("sep", &eos);
                                cfg["sep_token"] = Json::from(sep.clone());
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        if !has_cfg {
            return Ok(());
        }
        let jinja = dir.join("chat_template.jinja");
        let json_alt = dir.join("chat_template.json");
        let alt = if jinja.is_file() {
            Some(Json::String(read_text(&jinja)?))
        } else if json_alt.is_file() {
            read_json(&json_alt)?.get("chat_template").cloned()
        } else {
            None
        };
        match cfg.get("chat_template").cloned().or(alt) {
            Some(Json::String(s)) => self.chat_template = Some(s),
            Some(Json::Array(_)) => {
                return Err(ConvertError::Tokenizer {
                    file: cfg_path,
                    msg: "a list of named chat templates is not supported yet".into(),
                })
            }
            _ => {}
        }
        for typ in self.types.clone() {
            if let Some(b) = cfg.get(format!("add_{typ}_token")).and_then(Json::as_bool) {
                setdefault(&mut self.add, &typ, b);
            }
            let Some(content) = token_text(&cfg, &format!("{typ}_token")) else {
                continue;
            };
            let id = added
                .iter()
                .find(|a| a.get("content").and_then(Json::as_str) == Some(content.as_str()))
                .and_then(|a| a.get("id"))
                .cloned();
            self.set_special(&cfg_path, &typ, id.as_ref())?;
        }
        Ok(())
    }

    /// The crude TemplateProcessing parse of `_try_load_load_tokenizer_json`.
    #[allow(clippy::too_many_arguments)]
    fn template_processing(
        &mut self,
        p: &Json,
        cfg: &mut Json,
        has_cfg: bool,
        bos: &mut Option<String>,
        cls: &mut Option<String>,
        eos: &mut Option<String>,
        sep: &Option<String>,
    ) {
        let single = p
            .get("single")
            .and_then(Json::as_array)
            .cloned()
            .unwrap_or_default();
        let pair = p
            .get("pair")
            .and_then(Json::as_array)
            .cloned()
            .unwrap_or_default();
        let (mut first, mut last) = (None, None);
        if single.len() > 1 {
            first = single.first().and_then(special_id);
            if let Some(f) = &first {
                let known = Some(f) == bos.as_ref() || Some(f) == cls.as_ref();
                if !has_cfg {
                    *bos = Some(f.clone());
                } else if !known {
                    if bos.is_none() {
                        *bos = Some(f.clone());
                        cfg["bos_token"] = Json::from(f.clone());
                    }
                    if cls.is_none() {
                        *cls = Some(f.clone());
                        cfg["cls_token"] = Json::from(f.clone());
                    }
                }
                let known = Some(f) == bos.as_ref() || Some(f) == cls.as_ref();
                set_in_order(&mut self.add, "bos", known);
            }
            last = single.last().and_then(special_id);
            if let Some(l) = &last {
                if !has_cfg {
                    *eos = Some(l.clone());
                } else if Some(l) != eos.as_ref() {
                    for extra in ["eot", "eom"] {
                        if !self.types.iter().any(|t| t == extra) {
                            self.types.push(extra.into());
                            cfg[format!("{extra}_token")] = Json::from(eos.clone());
                            break;
                        }
                    }
                    *eos = Some(l.clone());
                    cfg["eos_token"] = Json::from(l.clone());
                }
                set_in_order(&mut self.add, "eos", Some(l) == eos.as_ref());
            }
        }
        if pair.is_empty() {
            return;
        }
        let start = usize::from(first.is_some() && pair.first().and_then(special_id) == first);
        let stop_trim = last.is_some() && pair.last().and_then(special_id) == last;
        let end = pair.len() - usize::from(stop_trim);
        if start >= end {
            return;
        }
        let mid = &pair[start..end];
        let seq = |e: &Json| {
            e.get("Sequence")
                .and_then(|s| s.get("id"))
                .and_then(Json::as_str)
                .map(String::from)
        };
        let (a, b) = (mid.first().and_then(seq), mid.last().and_then(seq));
        if a.as_deref() != Some("A") || b.as_deref() != Some("B") || mid.len() < 3 {
            return;
        }
        let inner = &mid[1..mid.len() - 1];
        let is_sep = |s: &Option<String>| s.is_some() && (s == sep || s == eos);
        let mut add_sep = false;
        if let Some(e) = inner.first().map(special_id) {
            if is_sep(&e) && last.is_none() {
                add_sep = true;
            }
        }
        if inner.len() == 2 && is_sep(&special_id(&inner[1])) {
            add_sep = true;
        }
        set_in_order(&mut self.add, "sep", add_sep);
        if add_sep && sep.is_none() && has_cfg {
            cfg["sep_token"] = Json::from(eos.clone());
        }
    }

    fn load_config_json(&mut self, dir: &Path) -> Result<(), ConvertError> {
        let path = dir.join("config.json");
        if !path.is_file() {
            return Ok(());
        }
        let cfg = read_json(&path)?;
        for typ in self.types.clone() {
            let key = format!("{typ}_token_id");
            let id = cfg
                .get(&key)
                .filter(|v| !v.is_null())
                .or_else(|| cfg.get("text_config").and_then(|t| t.get(&key)))
                .cloned();
            self.set_special(&path, &typ, id.as_ref())?;
        }
        Ok(())
    }

    /// The keys `add_to_gguf` writes (types without a GGUFWriter handler, like cls, are
    /// skipped as the script does).
    pub fn metadata(&self) -> Vec<(String, Value)> {
        let mut md = Vec::new();
        for (typ, id) in &self.ids {
            let key = match typ.as_str() {
                "bos" | "eos" | "mask" | "eot" | "eom" => typ.as_str(),
                "unk" => "unknown",
                "sep" => "seperator",
                "pad" => "padding",
                _ => continue,
            };
            md.push((
                format!("tokenizer.ggml.{key}_token_id"),
                Value::U32(*id as u32),
            ));
        }
        for (typ, b) in &self.add {
            if matches!(typ.as_str(), "bos" | "eos" | "sep") {
                md.push((format!("tokenizer.ggml.add_{typ}_token"), Value::Bool(*b)));
            }
        }
        if let Some(t) = &self.chat_template {
            md.push(("tokenizer.chat_template".into(), Value::String(t.clone())));
        }
        if let Some(b) = self.lowercase {
            md.push(("tokenizer.ggml.normalizer.lowercase".into(), Value::Bool(b)));
        }
        if let Some(b) = self.strip_accents {
            md.push((
                "tokenizer.ggml.normalizer.strip_accents".into(),
                Value::Bool(b),
            ));
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder of (file, JSON or text) in the temp dir.
    fn folder(name: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("kiln-special-vocab-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        for (f, text) in files {
            std::fs::write(d.join(f), text).unwrap();
        }
        d
    }

    fn keys(dir: &Path, n_vocab: Option<u64>) -> Vec<(String, String)> {
        let md = SpecialVocab::load(dir, n_vocab).unwrap().metadata();
        let _ = std::fs::remove_dir_all(dir);
        md.into_iter().map(|(k, v)| (k, v.to_string())).collect()
    }

    fn want(v: &[(&str, Value)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    // Expected values: gguf-py's SpecialVocab on the same folders.

    #[test]
    fn template_processing_trailing_token_becomes_eos_and_old_eos_eot() {
        let d = folder(
            "a",
            &[
                (
                    "tokenizer.json",
                    r#"{"added_tokens": [{"id": 0, "content": "<s>"}, {"id": 1, "content": "</s>"},
                    {"id": 2, "content": "<|end|>"}, {"id": 3, "content": "<sep>"}],
                    "post_processor": {"type": "TemplateProcessing",
                      "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}},
                                 {"SpecialToken": {"id": "<|end|>"}}],
                      "pair": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}},
                               {"SpecialToken": {"id": "<sep>"}}, {"Sequence": {"id": "B"}},
                               {"SpecialToken": {"id": "<|end|>"}}]},
                    "normalizer": {"type": "Sequence", "normalizers": [{"type": "Lowercase"}]}}"#,
                ),
                (
                    "tokenizer_config.json",
                    r#"{"bos_token": "<s>", "eos_token": "</s>", "sep_token": "<sep>",
                    "add_eos_token": false, "chat_template": "T"}"#,
                ),
                (
                    "config.json",
                    r#"{"pad_token_id": 1, "eos_token_id": [1, 2]}"#,
                ),
            ],
        );
        assert_eq!(
            keys(&d, None),
            want(&[
                ("tokenizer.ggml.bos_token_id", Value::U32(0)),
                ("tokenizer.ggml.eos_token_id", Value::U32(2)),
                ("tokenizer.ggml.seperator_token_id", Value::U32(3)),
                ("tokenizer.ggml.eot_token_id", Value::U32(1)),
                ("tokenizer.ggml.padding_token_id", Value::U32(1)),
                ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
                ("tokenizer.ggml.add_eos_token", Value::Bool(true)),
                ("tokenizer.ggml.add_sep_token", Value::Bool(false)),
                ("tokenizer.chat_template", Value::String("T".into())),
                ("tokenizer.ggml.normalizer.lowercase", Value::Bool(true)),
            ])
        );
    }

    #[test]
    fn roberta_processing_and_jinja_template() {
        let d = folder(
            "b",
            &[
                (
                    "tokenizer.json",
                    r#"{"added_tokens": [{"id": 0, "content": "<s>"}, {"id": 2, "content": "</s>"}],
                    "post_processor": {"type": "RobertaProcessing", "cls": ["<s>", 0], "sep": ["</s>", 2]}}"#,
                ),
                (
                    "tokenizer_config.json",
                    r#"{"bos_token": "<s>", "eos_token": "</s>"}"#,
                ),
                ("chat_template.jinja", "J"),
            ],
        );
        // cls gets an id too, but GGUFWriter has no key for it
        assert_eq!(
            keys(&d, None),
            want(&[
                ("tokenizer.ggml.bos_token_id", Value::U32(0)),
                ("tokenizer.ggml.eos_token_id", Value::U32(2)),
                ("tokenizer.ggml.seperator_token_id", Value::U32(2)),
                ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
                ("tokenizer.ggml.add_eos_token", Value::Bool(true)),
                ("tokenizer.ggml.add_sep_token", Value::Bool(true)),
                ("tokenizer.chat_template", Value::String("J".into())),
            ])
        );
    }

    #[test]
    fn without_tokenizer_json_ids_come_from_config_and_respect_n_vocab() {
        let d = folder(
            "c",
            &[
                (
                    "tokenizer_config.json",
                    r#"{"add_bos_token": true, "add_eos_token": true, "bos_token": {"content": "<bos>"}}"#,
                ),
                (
                    "config.json",
                    r#"{"bos_token_id": 2, "eos_token_id": 9, "unk_token_id": 3}"#,
                ),
            ],
        );
        assert_eq!(
            keys(&d, Some(8)),
            want(&[
                ("tokenizer.ggml.bos_token_id", Value::U32(2)),
                ("tokenizer.ggml.unknown_token_id", Value::U32(3)),
                ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
                ("tokenizer.ggml.add_eos_token", Value::Bool(true)),
            ])
        );
    }
}
