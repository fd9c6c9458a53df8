//! `Gemma3ForCausalLM` specifics of `convert_hf_to_gguf.py` (class `Gemma3Model` on top of
//! `TextModel`): its hyperparameter defaults, the `gemma3.*` keys in the order the script
//! writes them, and the SentencePiece vocabulary with `add_space_prefix = false`.

use std::path::Path;

use ggml_compat::gguf::Value;
use serde_json::{Map, Value as Json};

use super::hf::Hparams;
use super::sentencepiece::spm_vocab_metadata;
use super::ConvertError;

/// `Gemma3Model`'s defaults for keys a config.json may leave out (`hparams.get(key, default)`),
/// and Gemma3TextConfig's `tie_word_embeddings = True`.
pub fn adjust_hparams(cfg: &Json, hp: &mut Hparams) {
    let get = |k: &str| cfg.get(k).and_then(Json::as_u64);
    hp.head_dim = get("head_dim").unwrap_or(256);
    hp.head_dim_explicit = true;
    hp.n_head_kv = get("num_key_value_heads").unwrap_or(4);
    hp.tie_word_embeddings = cfg
        .get("tie_word_embeddings")
        .and_then(Json::as_bool)
        .unwrap_or(true);
}

/// Python's `d[key] = value` on an ordered dict: replace in place, or append.
fn put(md: &mut Vec<(String, Value)>, key: String, v: Value) {
    match md.iter_mut().find(|(k, _)| *k == key) {
        Some(e) => e.1 = v,
        None => md.push((key, v)),
    }
}

/// `find_hparam`: the value of the first of `keys` that config.json has (even if null).
fn find<'a>(cfg: &'a Json, keys: &[&str]) -> Option<&'a Json> {
    keys.iter().find_map(|k| cfg.get(*k))
}

/// `TextModel.__init__`'s `rope_parameters`: `rope_parameters` (or `rope_scaling`) with the
/// global and sliding-window thetas mirrored in when it has no per-attention-type entries.
fn rope_parameters(cfg: &Json) -> Map<String, Json> {
    let base = match cfg.get("rope_parameters") {
        Some(v) => Some(v),
        None => cfg.get("rope_scaling"),
    };
    let mut rp = base.and_then(Json::as_object).cloned().unwrap_or_default();
    if !rp.contains_key("full_attention") && !rp.contains_key("sliding_attention") {
        let local = find(
            cfg,
            &[
                "local_rope_theta",
                "rope_local_theta",
                "rope_theta_local",
                "swa_rope_theta",
                "rope_local_base_freq",
            ],
        )
        .filter(|v| !v.is_null());
        if let Some(t) = local {
            let mut m = Map::new();
            m.insert("rope_theta".into(), t.clone());
            rp.insert("sliding_attention".into(), Json::Object(m));
        }
        let global = find(
            cfg,
            &[
                "global_rope_theta",
                "rope_global_theta",
                "rope_theta_global",
                "rope_theta",
                "rotary_emb_base",
            ],
        )
        .filter(|v| !v.is_null());
        if let (false, Some(t)) = (rp.contains_key("rope_theta"), global) {
            rp.insert("rope_theta".into(), t.clone());
        }
        if !rp.contains_key("rope_type") {
            if let Some(t) = rp.get("type").filter(|v| !v.is_null()).cloned() {
                rp.insert("rope_type".into(), t);
            }
        }
    }
    rp
}

/// The hyperparameter keys of `TextModel.set_gguf_parameters` followed by
/// `Gemma3Model.set_gguf_parameters` (which overwrites some in place and appends others),
/// ending with `general.file_type`'s position kept where TextModel put it.
pub fn hparam_metadata(
    cfg_path: &Path,
    cfg: &Json,
    hp: &Hparams,
    file_type: u32,
) -> Result<Vec<(String, Value)>, ConvertError> {
    let a = "gemma3";
    let bad = |msg: String| ConvertError::Config {
        file: cfg_path.to_path_buf(),
        msg,
    };
    let u32_of = |v: &Json, key: &str| {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| bad(format!("\"{key}\" is not an unsigned 32-bit integer: {v}")))
    };
    let f32_of = |v: &Json, key: &str| {
        v.as_f64()
            .map(|f| f as f32)
            .ok_or_else(|| bad(format!("\"{key}\" is not a number: {v}")))
    };
    let mut md: Vec<(String, Value)> = Vec::new();
    // TextModel.set_gguf_parameters
    md.push((format!("{a}.block_count"), Value::U32(hp.n_layer as u32)));
    let optional_u32 = [
        (
            "context_length",
            &[
                "max_position_embeddings",
                "n_ctx",
                "n_positions",
                "max_length",
                "max_sequence_length",
                "model_max_length",
            ][..],
        ),
        ("embedding_length", &["hidden_size", "n_embd", "dim"][..]),
        (
            "feed_forward_length",
            &[
                "prefix_dense_intermediate_size",
                "dense_intermediate_size",
                "intermediate_size",
                "n_inner",
                "hidden_dim",
            ][..],
        ),
        (
            "attention.head_count",
            &["num_attention_heads", "n_head", "n_heads"][..],
        ),
        (
            "attention.head_count_kv",
            &["num_key_value_heads", "n_kv_heads"][..],
        ),
    ];
    for (key, names) in optional_u32 {
        if let Some(v) = find(cfg, names).filter(|v| !v.is_null()) {
            md.push((format!("{a}.{key}"), Value::U32(u32_of(v, names[0])?)));
        }
    }
    if cfg.get("is_causal") == Some(&Json::Bool(false)) {
        md.push((format!("{a}.attention.causal"), Value::Bool(false)));
    }
    let rp = rope_parameters(cfg);
    let full = rp
        .get("full_attention")
        .and_then(Json::as_object)
        .unwrap_or(&rp);
    if let Some(ty) = full.get("rope_type").and_then(Json::as_str) {
        let factor = full.get("factor").filter(|f| !f.is_null());
        match (ty, factor) {
            ("linear", Some(f)) => {
                md.push((
                    format!("{a}.rope.scaling.type"),
                    Value::String("linear".into()),
                ));
                md.push((
                    format!("{a}.rope.scaling.factor"),
                    Value::F32(f32_of(f, "factor")?),
                ));
            }
            ("yarn", Some(_)) | ("su" | "longrope", _) => {
                return Err(bad(format!(
                    "rope type '{ty}' is not supported yet for Gemma 3 (kiln converts linear)"
                )))
            }
            _ => {}
        }
    }
    if let Some(t) = full.get("rope_theta").filter(|v| !v.is_null()) {
        md.push((
            format!("{a}.rope.freq_base"),
            Value::F32(f32_of(t, "rope_theta")?),
        ));
    }
    let swa = rp
        .get("sliding_attention")
        .and_then(|s| s.get("rope_theta"))
        .filter(|v| !v.is_null());
    if let Some(t) = swa {
        md.push((
            format!("{a}.rope.freq_base_swa"),
            Value::F32(f32_of(t, "rope_local_base_freq")?),
        ));
    }
    let eps_key = format!("{a}.attention.layer_norm_rms_epsilon");
    if let Some(e) = find(cfg, &["rms_norm_eps", "norm_eps"]).filter(|v| !v.is_null()) {
        md.push((eps_key.clone(), Value::F32(f32_of(e, "rms_norm_eps")?)));
    }
    if let Some(e) = find(
        cfg,
        &["layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"],
    )
    .filter(|v| !v.is_null())
    {
        md.push((
            format!("{a}.attention.layer_norm_epsilon"),
            Value::F32(f32_of(e, "layer_norm_eps")?),
        ));
    }
    if let Some(hd) = cfg.get("head_dim").filter(|v| !v.is_null()) {
        let hd = u32_of(hd, "head_dim")?;
        md.push((format!("{a}.attention.key_length"), Value::U32(hd)));
        md.push((format!("{a}.attention.value_length"), Value::U32(hd)));
    }
    md.push(("general.file_type".into(), Value::U32(file_type)));

    // Gemma3Model.set_gguf_parameters
    let get = |k: &str| cfg.get(k).filter(|v| !v.is_null());
    let ctx = get("max_position_embeddings")
        .map_or(Ok(131072), |v| u32_of(v, "max_position_embeddings"))?;
    put(&mut md, format!("{a}.context_length"), Value::U32(ctx));
    let heads = get("num_attention_heads").map_or(Ok(8), |v| u32_of(v, "num_attention_heads"))?;
    put(
        &mut md,
        format!("{a}.attention.head_count"),
        Value::U32(heads),
    );
    let eps = get("rms_norm_eps").map_or(Ok(1e-6), |v| f32_of(v, "rms_norm_eps"))?;
    put(&mut md, eps_key, Value::F32(eps));
    let hd = hp.head_dim as u32;
    put(&mut md, format!("{a}.attention.key_length"), Value::U32(hd));
    put(
        &mut md,
        format!("{a}.attention.value_length"),
        Value::U32(hd),
    );
    let theta = full
        .get("rope_theta")
        .filter(|v| !v.is_null())
        .map_or(Ok(1_000_000.0), |v| f32_of(v, "rope_theta"))?;
    put(&mut md, format!("{a}.rope.freq_base"), Value::F32(theta));
    if get("attn_logit_softcapping").is_some() {
        return Err(bad(
            "attn_logit_softcapping is set, but Gemma 3 has none (convert_hf_to_gguf.py asserts it is null)".into(),
        ));
    }
    if let Some(c) = get("final_logit_softcapping") {
        let c = f32_of(c, "final_logit_softcapping")?;
        if c != 0.0 {
            put(
                &mut md,
                format!("{a}.final_logit_softcapping"),
                Value::F32(c),
            );
        }
    }
    if cfg.get("sliding_window_pattern").and_then(Json::as_u64) != Some(1) {
        let w = get("sliding_window")
            .ok_or_else(|| bad("no \"sliding_window\" (Gemma 3 needs it)".into()))?;
        put(
            &mut md,
            format!("{a}.attention.sliding_window"),
            Value::U32(u32_of(w, "sliding_window")?),
        );
    }
    put(
        &mut md,
        format!("{a}.attention.head_count_kv"),
        Value::U32(hp.n_head_kv as u32),
    );
    Ok(md)
}

/// `Gemma3Model.set_vocab` with a `tokenizer.model`: `_set_vocab_sentencepiece`, then
/// `add_add_space_prefix(False)`.
pub fn vocab_metadata(dir: &Path, n_vocab: u64) -> Result<Vec<(String, Value)>, ConvertError> {
    if !dir.join("tokenizer.model").is_file() {
        return Err(ConvertError::Missing {
            dir: dir.to_path_buf(),
            what: "tokenizer.model (kiln converts Gemma 3 with its SentencePiece vocabulary)",
        });
    }
    let mut md = spm_vocab_metadata(dir, n_vocab)?;
    put(
        &mut md,
        "tokenizer.ggml.add_space_prefix".into(),
        Value::Bool(false),
    );
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(cfg: &str) -> Vec<(String, String)> {
        let cfg: Json = serde_json::from_str(cfg).unwrap();
        let mut hp = Hparams::from_config(Path::new("config.json"), &cfg).unwrap();
        adjust_hparams(&cfg, &mut hp);
        hparam_metadata(Path::new("config.json"), &cfg, &hp, 1)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect()
    }

    const BASE: &str = r#""architectures": ["Gemma3ForCausalLM"], "hidden_size": 640,
        "intermediate_size": 2048, "num_hidden_layers": 18, "num_attention_heads": 4,
        "num_key_value_heads": 1, "head_dim": 256, "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-06, "sliding_window": 512, "vocab_size": 262144"#;

    #[test]
    fn gemma3_270m_order_and_swa_theta() {
        let k = keys(&format!(
            "{{{BASE}, \"rope_theta\": 1000000.0, \"rope_local_base_freq\": 10000.0, \"rope_scaling\": null}}"
        ));
        let names: Vec<&str> = k.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "gemma3.block_count",
                "gemma3.context_length",
                "gemma3.embedding_length",
                "gemma3.feed_forward_length",
                "gemma3.attention.head_count",
                "gemma3.attention.head_count_kv",
                "gemma3.rope.freq_base",
                "gemma3.rope.freq_base_swa",
                "gemma3.attention.layer_norm_rms_epsilon",
                "gemma3.attention.key_length",
                "gemma3.attention.value_length",
                "general.file_type",
                "gemma3.attention.sliding_window",
            ]
        );
        let v = |n: &str| k.iter().find(|(k, _)| k == n).unwrap().1.clone();
        assert_eq!(
            v("gemma3.rope.freq_base_swa"),
            Value::F32(10000.0).to_string()
        );
        assert_eq!(
            v("gemma3.attention.head_count_kv"),
            Value::U32(1).to_string()
        );
    }

    #[test]
    fn nested_rope_parameters_and_linear_scaling() {
        // transformers 5 style: per-attention-type rope parameters
        let k = keys(&format!(
            "{{{BASE}, \"final_logit_softcapping\": 30.0, \"rope_parameters\": {{
            \"full_attention\": {{\"rope_type\": \"linear\", \"factor\": 8.0, \"rope_theta\": 1000000.0}},
            \"sliding_attention\": {{\"rope_type\": \"default\", \"rope_theta\": 10000.0}}}}}}"
        ));
        let names: Vec<&str> = k.iter().map(|(k, _)| k.as_str()).collect();
        assert!(names.contains(&"gemma3.rope.scaling.type"), "{names:?}");
        assert!(
            names.contains(&"gemma3.final_logit_softcapping"),
            "{names:?}"
        );
        let pos = |n: &str| names.iter().position(|k| *k == n).unwrap();
        assert!(pos("gemma3.rope.scaling.factor") < pos("gemma3.rope.freq_base"));
        assert!(pos("general.file_type") < pos("gemma3.final_logit_softcapping"));
    }

    #[test]
    fn sliding_window_pattern_one_writes_no_window() {
        let k = keys(&format!("{{{BASE}, \"sliding_window_pattern\": 1}}"));
        assert!(!k
            .iter()
            .any(|(k, _)| k == "gemma3.attention.sliding_window"));
        // no theta in config.json: the 1e6 default of Gemma3Model
        let theta = k
            .iter()
            .find(|(k, _)| k == "gemma3.rope.freq_base")
            .unwrap();
        assert_eq!(theta.1, Value::F32(1e6).to_string());
    }
}
