//! Model files in, GGUF files out: `kiln quantize` (GGUF → GGUF with llama-quantize's recipe)
//! and `kiln convert` (a Hugging Face safetensors folder → GGUF, as `convert_hf_to_gguf.py`).

pub mod arch;
pub mod gemma3;
pub mod hf;
pub mod hf_to_gguf;
pub mod imatrix;
mod pre_hashes;
pub mod quantize;
pub mod recipe;
pub mod safetensors;
pub mod sentencepiece;
pub mod special_vocab;

use std::path::{Path, PathBuf};

use ggml_compat::gguf::GgufError;
use serde_json::Value as Json;

/// What can go wrong converting a Hugging Face folder.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{dir}: no {what}")]
    Missing { dir: PathBuf, what: &'static str },
    #[error("{file}: {msg}")]
    Json { file: PathBuf, msg: String },
    #[error("{file}: {msg}")]
    Config { file: PathBuf, msg: String },
    #[error("{file}: {msg}")]
    Safetensors { file: PathBuf, msg: String },
    #[error("{file}: {msg}")]
    Tokenizer { file: PathBuf, msg: String },
    #[error("architecture '{name}' is not supported; kiln converts {supported}")]
    Architecture {
        name: String,
        supported: &'static str,
    },
    #[error(
        "{dir}: the checkpoint does not match config.json{}{}{}",
        list("missing tensors", missing),
        list("unexpected tensors", extra),
        list("wrong shapes", wrong)
    )]
    Tensors {
        dir: PathBuf,
        missing: Vec<String>,
        extra: Vec<String>,
        wrong: Vec<String>,
    },
    #[error("{0}")]
    Other(String),
}

fn list(what: &str, v: &[String]) -> String {
    if v.is_empty() {
        return String::new();
    }
    let shown: Vec<&str> = v.iter().take(12).map(String::as_str).collect();
    let more = if v.len() > 12 {
        format!(" … and {} more", v.len() - 12)
    } else {
        String::new()
    };
    format!("\n  {what} ({}): {}{more}", v.len(), shown.join(", "))
}

pub(crate) fn read_text(path: &Path) -> Result<String, ConvertError> {
    std::fs::read_to_string(path).map_err(|error| ConvertError::Io {
        path: path.to_path_buf(),
        error,
    })
}

pub(crate) fn read_json(path: &Path) -> Result<Json, ConvertError> {
    serde_json::from_str(&read_text(path)?).map_err(|e| ConvertError::Json {
        file: path.to_path_buf(),
        msg: e.to_string(),
    })
}
