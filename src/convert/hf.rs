//! Hugging Face folder metadata → GGUF metadata, as `convert_hf_to_gguf.py` writes it:
//! config.json hyperparameters (`TextModel.set_gguf_parameters`), the model name heuristics of
//! gguf-py's `Metadata` (from the folder name), and the byte-level BPE vocabulary of
//! tokenizer.json with gguf-py's `SpecialVocab` (merges, special ids, add_bos/add_eos, chat
//! template).

use std::collections::HashMap;
use std::path::Path;

use ggml_compat::gguf::{Array, Value, ValueType};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use super::pre_hashes::{CHKTXT, PRE_HASHES};
use super::special_vocab::SpecialVocab;
use super::{read_json, ConvertError};
use crate::tokenizer::{Tokenizer, Vocab, VocabSpec};

/// The hyperparameters the converter uses.
#[derive(Clone, Debug)]
pub struct Hparams {
    pub architecture: String,
    pub n_layer: u64,
    pub n_ctx: Option<u64>,
    pub n_embd: u64,
    pub n_ff: u64,
    pub n_head: u64,
    pub n_head_kv: u64,
    pub head_dim: u64,
    /// `head_dim` given in config.json (then key/value lengths are written).
    pub head_dim_explicit: bool,
    pub n_vocab: u64,
    pub rope_theta: Option<f64>,
    pub rms_eps: Option<f64>,
    pub tie_word_embeddings: bool,
    /// `rope_scaling` / `rope_parameters`
    pub rope_scaling: Option<RopeScaling>,
    /// `attention_bias` (llama/qwen3 Q/K/V biases)
    pub attention_bias: bool,
}

fn find_u64(cfg: &Json, keys: &[&str]) -> Option<u64> {
    keys.iter().find_map(|k| cfg.get(*k)).and_then(Json::as_u64)
}

fn find_f64(cfg: &Json, keys: &[&str]) -> Option<f64> {
    keys.iter().find_map(|k| cfg.get(*k)).and_then(Json::as_f64)
}

impl Hparams {
    /// Read config.json (`find_hparam` with the key lists of `TextModel`).
    pub fn from_config(path: &Path, cfg: &Json) -> Result<Hparams, ConvertError> {
        let need = |keys: &[&str]| {
            find_u64(cfg, keys).ok_or_else(|| ConvertError::Config {
                file: path.to_path_buf(),
                msg: format!("missing integer hyperparameter (one of {keys:?})"),
            })
        };
        let architecture = cfg
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(Json::as_str)
            .ok_or_else(|| ConvertError::Config {
                file: path.to_path_buf(),
                msg: "no \"architectures\" list".into(),
            })?
            .to_string();
        let n_embd = need(&["hidden_size", "n_embd", "dim"])?;
        let n_head = need(&["num_attention_heads", "n_head", "n_heads"])?;
        let head_dim = find_u64(cfg, &["head_dim"]);
        let rope = cfg
            .get("rope_parameters")
            .or_else(|| cfg.get("rope_scaling"))
            .filter(|r| !r.is_null());
        let rope_scaling = match rope {
            None => None,
            Some(r) => RopeScaling::parse(r).map_err(|()| ConvertError::Config {
                file: path.to_path_buf(),
                msg: format!(
                    "rope scaling {r} is not supported yet (kiln converts linear and llama3)"
                ),
            })?,
        };
        let rope_theta_nested = rope
            .and_then(|r| r.get("rope_theta"))
            .and_then(Json::as_f64);
        Ok(Hparams {
            architecture,
            n_layer: need(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"])?,
            n_ctx: find_u64(
                cfg,
                &[
                    "max_position_embeddings",
                    "n_ctx",
                    "n_positions",
                    "max_length",
                    "max_sequence_length",
                    "model_max_length",
                ],
            ),
            n_embd,
            n_ff: need(&[
                "prefix_dense_intermediate_size",
                "dense_intermediate_size",
                "intermediate_size",
                "n_inner",
                "hidden_dim",
            ])?,
            n_head,
            n_head_kv: find_u64(cfg, &["num_key_value_heads", "n_kv_heads"]).unwrap_or(n_head),
            head_dim: head_dim.unwrap_or(n_embd / n_head.max(1)),
            head_dim_explicit: head_dim.is_some(),
            n_vocab: need(&["vocab_size"])?,
            rope_theta: find_f64(
                cfg,
                &[
                    "global_rope_theta",
                    "rope_global_theta",
                    "rope_theta_global",
                    "rope_theta",
                    "rotary_emb_base",
                ],
            )
            .or(rope_theta_nested),
            rms_eps: find_f64(cfg, &["rms_norm_eps", "norm_eps"]),
            tie_word_embeddings: cfg
                .get("tie_word_embeddings")
                .and_then(Json::as_bool)
                .unwrap_or(false),
            rope_scaling,
            attention_bias: cfg
                .get("attention_bias")
                .and_then(Json::as_bool)
                .unwrap_or(false),
        })
    }
}

/// RoPE scaling from config.json.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// `rope.scaling.type = linear` with its factor.
    Linear { factor: f64 },
    /// Llama 3.1's frequency-dependent factors, stored as the `rope_freqs` tensor.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_ctx: f64,
        theta: f64,
    },
}

impl RopeScaling {
    /// `Ok(None)` for no scaling, `Err(())` for a scaling kiln does not convert.
    fn parse(r: &Json) -> Result<Option<RopeScaling>, ()> {
        let ty = r
            .get("rope_type")
            .or_else(|| r.get("type"))
            .and_then(Json::as_str);
        let f = |k: &str, d: f64| r.get(k).and_then(Json::as_f64).unwrap_or(d);
        Ok(match ty.map(str::to_ascii_lowercase).as_deref() {
            None | Some("default") => None,
            Some("linear") => r
                .get("factor")
                .and_then(Json::as_f64)
                .map(|factor| RopeScaling::Linear { factor }),
            Some("llama3") => Some(RopeScaling::Llama3 {
                factor: f("factor", 8.0),
                low_freq_factor: f("low_freq_factor", 1.0),
                high_freq_factor: f("high_freq_factor", 4.0),
                original_ctx: f("original_max_position_embeddings", 8192.0),
                theta: f("rope_theta", f64::NAN),
            }),
            Some(_) => return Err(()),
        })
    }

    /// The `rope_freqs` factors of `LlamaModel.generate_extra_tensors` (float32 arithmetic as
    /// torch does it), or `None` for other scalings.
    pub fn llama3_factors(&self, hp: &Hparams) -> Option<Vec<f32>> {
        let RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_ctx,
            theta,
        } = *self
        else {
            return None;
        };
        let base = if theta.is_nan() {
            hp.rope_theta.unwrap_or(10000.0)
        } else {
            theta
        } as f32;
        let dim = hp.head_dim as f32;
        let low_wavelen = original_ctx / low_freq_factor;
        let high_wavelen = original_ctx / high_freq_factor;
        let out = (0..hp.head_dim)
            .step_by(2)
            .map(|i| {
                let freq = 1.0f32 / base.powf(i as f32 / dim);
                let wavelen = (2.0 * std::f64::consts::PI) as f32 / freq;
                if f64::from(wavelen) < high_wavelen {
                    1.0
                } else if f64::from(wavelen) > low_wavelen {
                    factor as f32
                } else {
                    let smooth = (original_ctx as f32 / wavelen - low_freq_factor as f32)
                        / (high_freq_factor - low_freq_factor) as f32;
                    1.0 / ((1.0 - smooth) / factor as f32 + smooth)
                }
            })
            .collect();
        Some(out)
    }
}

/// The parts of a model name (gguf-py `Metadata.get_model_id_components`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NameParts {
    pub name: String,
    pub basename: Option<String>,
    pub finetune: Option<String>,
    pub version: Option<String>,
    pub size_label: Option<String>,
}

fn is_version(p: &str) -> bool {
    let l = p.to_ascii_lowercase();
    let l = l
        .strip_prefix("iter")
        .or_else(|| l.strip_prefix('v'))
        .unwrap_or(&l);
    !l.is_empty()
        && l.split('.')
            .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
}

fn is_type(p: &str) -> bool {
    let re = regex::Regex::new(r"(?i)^(i?q\d(_\w)*|b?fp?(16|32))$");
    re.map(|r| r.is_match(p)).unwrap_or(false)
}

fn is_size(p: &str) -> bool {
    let re = regex::Regex::new(
        r"(?i)^((([A]|\d+[x])?\d+([._]\d+)?[KMBT][\d]?)|small|mini|medium|large|x?xl)$",
    );
    re.map(|r| r.is_match(p)).unwrap_or(false)
}

/// Split a folder name like `SmolLM2-135M-Instruct` into name, basename, size label,
/// finetune and version (gguf-py's heuristics; `total_params` 0 disables the size check).
pub fn model_id_components(id: &str, total_params: u64) -> NameParts {
    let title = id_to_title(id);
    if id.contains(' ') {
        return NameParts {
            name: id.to_string(),
            ..Default::default()
        };
    }
    let full = id.rsplit('/').next().unwrap_or(id);
    let mut parts: Vec<String> = full
        .split('-')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let mut types: Vec<Vec<&str>> = vec![Vec::new(); parts.len()];
    for i in 0..parts.len() {
        let p = parts[i].clone();
        if is_version(&p) {
            types[i].push("version");
        } else if is_type(&p) {
            types[i].push("type");
            parts[i] = p.to_uppercase();
        } else if i > 0 && is_size(&p) {
            let mut q = p.replace('_', ".");
            let c: Vec<char> = q.chars().collect();
            if c.last().is_some_and(|c| c.is_ascii_digit()) && c.len() >= 2 {
                let n = c.len();
                q = format!(
                    "{}.{}{}",
                    c[..n - 2].iter().collect::<String>(),
                    c[n - 1],
                    c[n - 2]
                );
            }
            let c: Vec<char> = q.chars().collect();
            if c.len() > 1 && c[c.len() - 2].is_ascii_digit() && "kmbt".contains(c[c.len() - 1]) {
                q = format!(
                    "{}{}",
                    c[..c.len() - 1].iter().collect::<String>(),
                    c[c.len() - 1].to_ascii_uppercase()
                );
            }
            if total_params != 0 {
                let c: Vec<char> = q.chars().collect();
                let unit = " KMBT".find(c[c.len() - 1]);
                let num: Option<f64> = c[..c.len() - 1].iter().collect::<String>().parse().ok();
                if let (Some(u), Some(n)) = (unit, num) {
                    let label = n * 1000f64.powi(u as i32);
                    let t = total_params as f64;
                    if (label - t).abs() > (7 * total_params / 8) as f64 {
                        types[i].push("finetune");
                        let n = q.len();
                        q = format!("{}{}", &q[..n - 1], q[n - 1..].to_lowercase());
                    }
                }
            }
            if types[i].is_empty() {
                types[i].push("size_label");
            }
            parts[i] = q;
        } else if i > 0
            && ["chat", "instruct", "vision", "lora"].contains(&p.to_lowercase().as_str())
        {
            types[i].push("finetune");
        }
    }
    let has_digit_size = parts
        .iter()
        .zip(&types)
        .any(|(n, t)| t.contains(&"size_label") && n.bytes().any(|b| b.is_ascii_digit()));
    if has_digit_size {
        for (n, t) in parts.iter().zip(types.iter_mut()) {
            if t.contains(&"size_label") && n.chars().all(char::is_alphabetic) {
                t.retain(|x| *x != "size_label");
            }
        }
    }
    let mut at_start = true;
    for (p, t) in parts.iter().zip(types.iter_mut()) {
        let alpha0 = p.chars().next().is_some_and(char::is_alphabetic);
        if at_start && ((t.is_empty() && alpha0) || t.contains(&"version")) {
            t.push("basename");
        } else {
            at_start = false;
            if t.is_empty() {
                t.push("finetune");
            }
        }
    }
    for t in types.iter_mut().rev() {
        if t.contains(&"basename") && t.len() > 1 {
            t.retain(|x| *x != "basename");
        } else {
            break;
        }
    }
    let join = |f: &dyn Fn(&Vec<&str>) -> bool| {
        let v: Vec<&str> = parts
            .iter()
            .zip(&types)
            .filter(|(_, t)| f(t))
            .map(|(p, _)| p.as_str())
            .collect();
        let mut seen = Vec::new();
        for s in v {
            if !seen.contains(&s) {
                seen.push(s);
            }
        }
        (!seen.is_empty()).then(|| seen.join("-"))
    };
    let mut basename = join(&|t| t.contains(&"basename"));
    let size_label = join(&|t| t.contains(&"size_label"));
    let finetune = join(&|t| t.contains(&"finetune"));
    let version = join(&|t| t.contains(&"version") && !t.contains(&"basename"));
    if size_label.is_none() && finetune.is_none() && version.is_none() {
        basename = None;
    }
    NameParts {
        name: title,
        basename,
        finetune,
        version,
        size_label,
    }
}

/// `Metadata.id_to_title`: dashes to spaces, all-lowercase words title-cased (not versions or
/// words starting with a digit).
pub fn id_to_title(s: &str) -> String {
    s.trim()
        .replace('-', " ")
        .split_whitespace()
        .map(|w| {
            let lower = w.chars().all(|c| !c.is_uppercase()) && w.chars().any(char::is_lowercase);
            let keep = w.starts_with(|c: char| c.is_ascii_digit()) || is_version(w);
            if lower && !keep {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().chain(c).collect())
                    .unwrap_or_default()
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// gguf-py `model_weight_count_rounded_notation` (for `general.size_label`).
pub fn size_label(n: u64) -> String {
    let n = n as f64;
    let (scaled, suffix) = if n > 1e12 {
        (n * 1e-12, "T")
    } else if n > 1e9 {
        (n * 1e-9, "B")
    } else if n > 1e6 {
        (n * 1e-6, "M")
    } else {
        (n * 1e-3, "K")
    };
    let digits = format!("{}", scaled.round_ties_even() as u64).len();
    let fix = 2usize.saturating_sub(digits);
    format!("{scaled:.fix$}{suffix}")
}

fn str_array(v: Vec<String>) -> Value {
    Value::Array(Array {
        elem: ValueType::String,
        values: v.into_iter().map(Value::String).collect(),
    })
}

/// The `tokenizer.ggml.*` keys (`_set_vocab_gpt2` + `SpecialVocab.add_to_gguf`), in the
/// order the script writes them.
pub fn bpe_vocab_metadata(dir: &Path, n_vocab: u64) -> Result<Vec<(String, Value)>, ConvertError> {
    let tok_path = dir.join("tokenizer.json");
    if !tok_path.is_file() {
        return Err(ConvertError::Missing {
            dir: dir.to_path_buf(),
            what: "tokenizer.json (kiln converts byte-level BPE tokenizers)",
        });
    }
    let tok = read_json(&tok_path)?;
    let bad = |msg: String| ConvertError::Tokenizer {
        file: tok_path.clone(),
        msg,
    };
    let model = tok.get("model").ok_or_else(|| bad("no \"model\"".into()))?;
    if model.get("type").and_then(Json::as_str) != Some("BPE")
        || model.get("byte_fallback") == Some(&Json::Bool(true))
    {
        return Err(bad(
            "only byte-level BPE tokenizers (no byte fallback) are supported yet".into(),
        ));
    }
    let vocab = model
        .get("vocab")
        .and_then(Json::as_object)
        .ok_or_else(|| bad("no \"model.vocab\" object".into()))?;
    let mut reverse: HashMap<u64, String> = HashMap::new();
    for (t, id) in vocab {
        if let Some(id) = id.as_u64() {
            reverse.insert(id, t.clone());
        }
    }
    // (content, special) of added tokens by id
    let mut added: HashMap<u64, (String, bool)> = HashMap::new();
    let added_list = tok
        .get("added_tokens")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    for a in &added_list {
        if let (Some(id), Some(c)) = (
            a.get("id").and_then(Json::as_u64),
            a.get("content").and_then(Json::as_str),
        ) {
            let special = a.get("special").and_then(Json::as_bool).unwrap_or(false);
            reverse.insert(id, c.to_string());
            added.insert(id, (c.to_string(), special));
        }
    }
    if let Some(max) = reverse.keys().max() {
        if *max >= n_vocab {
            return Err(bad(format!(
                "token id {max} is not below config.json's vocab_size {n_vocab}"
            )));
        }
    }
    let mut tokens = Vec::with_capacity(n_vocab as usize);
    let mut types = Vec::with_capacity(n_vocab as usize);
    for i in 0..n_vocab {
        match reverse.get(&i) {
            None => {
                tokens.push(format!("[PAD{i}]"));
                types.push(5);
            }
            Some(t) => {
                if let Some((_, special)) = added.get(&i) {
                    if *special || looks_special(t) {
                        tokens.push(t.clone());
                        types.push(3);
                    } else {
                        tokens.push(t.replace('\u{2581}', " "));
                        types.push(4);
                    }
                } else {
                    tokens.push(t.clone());
                    types.push(1);
                }
            }
        }
    }
    let merges: Vec<String> = match model.get("merges").and_then(Json::as_array) {
        Some(m) => m
            .iter()
            .map(|e| match e {
                Json::String(s) => Ok(s.clone()),
                Json::Array(p) if p.len() == 2 => {
                    let enc = |s: &Json| {
                        s.as_str()
                            .unwrap_or("")
                            .chars()
                            .map(|c| if c == ' ' { '\u{120}' } else { c })
                            .collect::<String>()
                    };
                    Ok(format!("{} {}", enc(&p[0]), enc(&p[1])))
                }
                _ => Err(bad("unknown merges format".into())),
            })
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };

    // the special tokens the post-processor puts around a sequence (part of what the
    // script's pre-tokenizer hash sees)
    let (mut prefix, mut suffix) = (Vec::new(), Vec::new());
    let id_of = |c: &str| {
        added_list
            .iter()
            .find(|a| a.get("content").and_then(Json::as_str) == Some(c))
            .and_then(|a| a.get("id"))
            .and_then(Json::as_u64)
    };
    if let Some(pp) = tok.get("post_processor").filter(|p| !p.is_null()) {
        let procs = pp
            .get("processors")
            .and_then(Json::as_array)
            .cloned()
            .unwrap_or_else(|| vec![pp.clone()]);
        for p in procs {
            if p.get("type").and_then(Json::as_str) != Some("TemplateProcessing") {
                continue;
            }
            let single = p
                .get("single")
                .and_then(Json::as_array)
                .cloned()
                .unwrap_or_default();
            let sp = |e: &Json| {
                e.get("SpecialToken")
                    .and_then(|s| s.get("id"))
                    .and_then(Json::as_str)
                    .map(String::from)
            };
            if single.len() > 1 {
                if let Some(first) = single.first().and_then(sp) {
                    prefix.extend(id_of(&first));
                }
                if let Some(last) = single.last().and_then(sp) {
                    suffix.extend(id_of(&last));
                }
            }
        }
    }

    let pre = detect_pre(&tokens, &types, &merges, &prefix, &suffix).ok_or_else(|| {
        bad("the BPE pre-tokenizer is not one kiln recognises (its output on convert_hf_to_gguf.py's check text matches no known hash)".into())
    })?;

    let mut md: Vec<(String, Value)> = vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String(pre)),
        ("tokenizer.ggml.tokens".into(), str_array(tokens)),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(Array {
                elem: ValueType::I32,
                values: types.into_iter().map(Value::I32).collect(),
            }),
        ),
    ];
    if !merges.is_empty() {
        md.push(("tokenizer.ggml.merges".into(), str_array(merges)));
    }
    md.extend(SpecialVocab::load(dir, None)?.metadata());
    Ok(md)
}

/// `TextModel.does_token_look_special`.
pub(crate) fn looks_special(t: &str) -> bool {
    ["<pad>", "<mask>", "<2mass>", "[@BOS@]"].contains(&t)
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<｜") && t.ends_with("｜>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

/// `get_vocab_base_pre`: the script hashes the Hugging Face tokenizer's ids for a fixed text
/// and looks the hash up. kiln has no Hugging Face tokenizer, so it runs llama.cpp's own
/// pre-tokenizer of each name in the table (kiln's tokenizer matches llama.cpp token for
/// token) and takes the first name whose output has that name's hash.
fn detect_pre(
    tokens: &[String],
    types: &[i32],
    merges: &[String],
    prefix: &[u64],
    suffix: &[u64],
) -> Option<String> {
    let mut tried: HashMap<&str, String> = HashMap::new();
    for (hash, name) in PRE_HASHES {
        let h = match tried.get(name) {
            Some(h) => h.clone(),
            None => {
                let spec = VocabSpec {
                    model: "gpt2".into(),
                    pre: Some((*name).to_string()),
                    tokens: tokens.to_vec(),
                    token_types: Some(types.to_vec()),
                    merges: Some(merges.to_vec()),
                    ..Default::default()
                };
                let Ok(vocab) = Vocab::from_spec(spec) else {
                    tried.insert(name, String::new());
                    continue;
                };
                if vocab.pre.is_none() {
                    tried.insert(name, String::new());
                    continue;
                }
                let ids = Tokenizer::new(vocab).encode(CHKTXT, false, false);
                let all: Vec<String> = prefix
                    .iter()
                    .map(u64::to_string)
                    .chain(ids.iter().map(u32::to_string))
                    .chain(suffix.iter().map(u64::to_string))
                    .collect();
                let text = format!("[{}]", all.join(", "));
                let h = hex(&Sha256::digest(text.as_bytes()));
                tried.insert(name, h.clone());
                h
            }
        };
        if h == *hash {
            return Some((*name).to_string());
        }
    }
    None
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smollm_folder_name() {
        let p = model_id_components("SmolLM2-135M-Instruct", 134_515_008);
        assert_eq!(p.name, "SmolLM2 135M Instruct");
        assert_eq!(p.basename.as_deref(), Some("SmolLM2"));
        assert_eq!(p.size_label.as_deref(), Some("135M"));
        assert_eq!(p.finetune.as_deref(), Some("Instruct"));
        assert_eq!(p.version, None);
    }

    #[test]
    fn size_labels() {
        assert_eq!(size_label(134_515_008), "135M");
        assert_eq!(size_label(1_235_814_400), "1.2B");
    }
}

#[cfg(test)]
mod rope_tests {
    use super::*;

    #[test]
    fn llama3_rope_factors_shape() {
        // Llama 3.1 8B: head_dim 128, theta 500000, factor 8, low 1, high 4, original 8192
        let cfg: Json = serde_json::from_str(
            r#"{"architectures": ["LlamaForCausalLM"], "hidden_size": 4096,
            "num_attention_heads": 32, "num_hidden_layers": 1, "intermediate_size": 14336,
            "vocab_size": 128256, "rope_theta": 500000.0,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}"#,
        )
        .unwrap();
        let hp = Hparams::from_config(Path::new("config.json"), &cfg).unwrap();
        let f = hp
            .rope_scaling
            .as_ref()
            .unwrap()
            .llama3_factors(&hp)
            .unwrap();
        assert_eq!(f.len(), 64);
        // high frequencies untouched, low frequencies scaled by the full factor, smooth between
        assert_eq!(f[0], 1.0);
        assert_eq!(f[63], 8.0);
        let mid: Vec<&f32> = f.iter().filter(|&&v| v != 1.0 && v != 8.0).collect();
        assert!(
            !mid.is_empty() && mid.windows(2).all(|w| w[0] < w[1]),
            "{f:?}"
        );
    }

    #[test]
    fn unknown_rope_scaling_is_an_error() {
        let cfg: Json = serde_json::from_str(
            r#"{"architectures": ["LlamaForCausalLM"], "hidden_size": 8,
            "num_attention_heads": 2, "num_hidden_layers": 1, "intermediate_size": 16,
            "vocab_size": 16, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}"#,
        )
        .unwrap();
        let e = Hparams::from_config(Path::new("config.json"), &cfg).unwrap_err();
        assert!(e.to_string().contains("yarn"), "{e}");
    }
}
