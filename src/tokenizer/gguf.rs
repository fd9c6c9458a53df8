//! Reading the `tokenizer.ggml.*` metadata of a GGUF file into a [`VocabSpec`].

use ggml_compat::gguf::{GgufFile, Value, ValueType};

use super::vocab::{VocabSpec, ID_KEYS};

impl VocabSpec {
    /// The `tokenizer.ggml.*` metadata of `file`, as stored (no defaults applied); build
    /// with `Vocab::from_spec` (`llama_vocab::load`), possibly after overriding fields.
    pub fn from_gguf(file: &GgufFile) -> Result<VocabSpec, TokenizerError> {
        spec_from_gguf(file)
    }
}
use super::TokenizerError;

const FLAG_KEYS: [&str; 5] = [
    "add_bos_token",
    "add_eos_token",
    "add_sep_token",
    "add_space_prefix",
    "remove_extra_whitespaces",
];

fn wrong(key: &str, v: &Value, expected: &'static str) -> TokenizerError {
    TokenizerError::WrongType {
        key: key.to_string(),
        found: format!("{:?}", v.value_type()),
        expected,
    }
}

fn string_array(file: &GgufFile, key: &'static str) -> Result<Option<Vec<String>>, TokenizerError> {
    let Some(v) = file.get(key) else {
        return Ok(None);
    };
    let strings = v
        .as_array()
        .and_then(|a| a.strings())
        .ok_or_else(|| wrong(key, v, "array of string"))?;
    Ok(Some(strings.into_iter().map(str::to_owned).collect()))
}

/// Collects the tokenizer metadata of `file` (no defaults applied; see `Vocab::from_spec`).
pub(crate) fn spec_from_gguf(file: &GgufFile) -> Result<VocabSpec, TokenizerError> {
    let key_model = "tokenizer.ggml.model";
    let model = file
        .get(key_model)
        .ok_or(TokenizerError::MissingKey { key: key_model })?;
    let model = model
        .as_str()
        .ok_or_else(|| wrong(key_model, model, "string"))?
        .to_string();
    let pre = match file.get("tokenizer.ggml.pre") {
        None => None,
        Some(v) => Some(
            v.as_str()
                .ok_or_else(|| wrong("tokenizer.ggml.pre", v, "string"))?
                .to_string(),
        ),
    };
    let tokens =
        string_array(file, "tokenizer.ggml.tokens")?.ok_or(TokenizerError::MissingKey {
            key: "tokenizer.ggml.tokens",
        })?;
    let merges = string_array(file, "tokenizer.ggml.merges")?;

    let scores = match file.get("tokenizer.ggml.scores") {
        None => None,
        Some(v) => {
            let a = v
                .as_array()
                .filter(|a| matches!(a.elem, ValueType::F32 | ValueType::I32));
            let a = a.ok_or_else(|| wrong("tokenizer.ggml.scores", v, "array of f32 or i32"))?;
            Some(
                a.f32s()
                    .ok_or_else(|| wrong("tokenizer.ggml.scores", v, "array of f32 or i32"))?,
            )
        }
    };
    let token_types = match file.get("tokenizer.ggml.token_type") {
        None => None,
        Some(v) => {
            let err = || wrong("tokenizer.ggml.token_type", v, "array of i32");
            let a = v
                .as_array()
                .filter(|a| a.elem == ValueType::I32)
                .ok_or_else(err)?;
            let ints = a.i64s().ok_or_else(err)?;
            Some(ints.into_iter().map(|x| x as i32).collect())
        }
    };

    let mut spec = VocabSpec {
        model,
        pre,
        tokens,
        scores,
        token_types,
        merges,
        ..VocabSpec::default()
    };
    for key in ID_KEYS {
        let full = format!("tokenizer.ggml.{key}");
        if let Some(v) = file.get(&full) {
            let id = v.as_i64().ok_or_else(|| wrong(&full, v, "integer"))?;
            spec.ids.insert(key.to_string(), id);
        }
    }
    for key in FLAG_KEYS {
        let full = format!("tokenizer.ggml.{key}");
        if let Some(v) = file.get(&full) {
            let b = v.as_bool().ok_or_else(|| wrong(&full, v, "bool"))?;
            spec.flags.insert(key.to_string(), b);
        }
    }
    spec.name = file
        .get("general.name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(spec)
}
