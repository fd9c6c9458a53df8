//! Everything that can be wrong with a GGUF file, or go wrong writing one.
//!
//! Parse errors carry the byte offset where the problem was found and the key or tensor name
//! involved; [`GgufError::File`] wraps them with the path when a file was opened.

use std::path::PathBuf;

use super::ValueType;
use crate::GgmlType;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    // Messages are self-contained: the inner error is part of the text, not a `source()`
    // chain, so `{:#}`-style printers (anyhow) do not repeat it.
    #[error("{}: {error}", path.display())]
    File {
        path: PathBuf,
        error: Box<GgufError>,
    },

    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    #[error("not a GGUF file: magic is {found:?}, expected \"GGUF\"")]
    BadMagic { found: String },

    #[error(
        "file ends early at byte {offset}: reading {what} needs {needed} bytes, {available} left"
    )]
    Truncated {
        what: String,
        offset: u64,
        needed: u64,
        available: u64,
    },

    #[error("GGUF version {version} is not supported: {reason}")]
    UnsupportedVersion { version: u32, reason: &'static str },

    #[error("{what} at byte {offset} is {count}, but only {available} bytes remain to hold at least {min_bytes_each} byte(s) each")]
    CountTooLarge {
        what: String,
        offset: u64,
        count: u64,
        min_bytes_each: u64,
        available: u64,
    },

    #[error("{what} at byte {offset} is not valid UTF-8")]
    InvalidUtf8 { what: String, offset: u64 },

    #[error("metadata key #{index} at byte {offset} is empty")]
    EmptyKey { index: u64, offset: u64 },

    #[error("duplicate metadata key '{key}' at byte {offset}")]
    DuplicateKey { key: String, offset: u64 },

    #[error("{what} at byte {offset} has unknown value type id {id} (GGUF defines 0..=12)")]
    UnknownValueType { what: String, offset: u64, id: u32 },

    #[error("{what} at byte {offset}: arrays nested deeper than {max} levels")]
    NestingTooDeep {
        what: String,
        offset: u64,
        max: usize,
    },

    #[error("metadata key 'general.alignment' must be of type u32 but is {found}")]
    AlignmentType { found: ValueType },

    #[error("alignment {alignment} is not a non-zero power of two")]
    BadAlignment { alignment: u64 },

    #[error("tensor #{index} at byte {offset}: name is {len} bytes, ggml allows at most 63")]
    TensorNameTooLong { index: u64, offset: u64, len: usize },

    #[error("duplicate tensor name '{name}' at byte {offset}")]
    DuplicateTensor { name: String, offset: u64 },

    #[error("tensor '{name}' at byte {offset} has {n_dims} dimensions, ggml allows at most 4")]
    TooManyDims {
        name: String,
        offset: u64,
        n_dims: u32,
    },

    #[error("tensor '{name}' at byte {offset}: dimension {index} is {value} (must be 1..=2^63-1)")]
    BadDim {
        name: String,
        offset: u64,
        index: usize,
        value: u64,
    },

    #[error("tensor '{name}': shape {dims:?} has too many elements (≥ 2^63) or bytes")]
    TooManyElements { name: String, dims: Vec<u64> },

    #[error("tensor '{name}' at byte {offset} has unknown ggml type id {id}{}", removed_note(*id))]
    UnknownTensorType { name: String, offset: u64, id: u32 },

    #[error("tensor '{name}' of type {ty}: row length {ne0} is not a multiple of the block size {block}")]
    NotBlockMultiple {
        name: String,
        ty: GgmlType,
        ne0: u64,
        block: usize,
    },

    #[error("data section would start at byte {data_offset}, past the end of the file ({file_len} bytes)")]
    DataSectionPastEof { data_offset: u64, file_len: u64 },

    #[error(
        "tensor '{name}': data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    MisalignedTensor {
        name: String,
        offset: u64,
        alignment: u64,
    },

    #[error("tensor '{name}': data bytes {start}..{end} run past the end of the file ({file_len} bytes)")]
    TensorPastEof {
        name: String,
        start: u64,
        end: u64,
        file_len: u64,
    },

    #[error("tensors '{first}' (data bytes {first_start}..{first_end}) and '{second}' (from byte {second_start}) overlap")]
    OverlappingTensors {
        first: String,
        first_start: u64,
        first_end: u64,
        second: String,
        second_start: u64,
    },

    #[error("cannot write GGUF: {0}")]
    Writer(String),
}

/// ggml removed some type ids over time; name them so an old file's error explains itself.
fn removed_note(id: u32) -> &'static str {
    match id {
        4 | 5 => " (Q4_2/Q4_3, removed from ggml in 2023; re-quantize the model)",
        31..=33 => " (Q4_0_4_4/Q4_0_4_8/Q4_0_8_8, removed from ggml: repacking now happens at load time; re-quantize the model)",
        36..=38 => " (IQ4_NL_4_4/IQ4_NL_4_8/IQ4_NL_8_8, removed from ggml: repacking now happens at load time; re-quantize the model)",
        _ => "",
    }
}

impl GgufError {
    /// Wrap this error with the path of the file it is about.
    pub fn in_file(self, path: impl Into<PathBuf>) -> GgufError {
        GgufError::File {
            path: path.into(),
            error: Box::new(self),
        }
    }
}
