//! The GGUF container: a bounded reader over a memory map and a streaming writer.
//!
//! Layout (little-endian, versions 2 and 3 are identical on disk):
//! ```text
//! "GGUF" | version u32 | n_tensors u64 | n_kv u64
//! n_kv    × (key: string, type u32, value)         string = u64 length + UTF-8 bytes
//! n_tensors × (name: string, n_dims u32, dims u64 × n_dims, ggml type u32, offset u64)
//! zero padding to `alignment` | tensor data, each tensor at data_offset + offset
//! ```
//! [`parse`] checks everything ggml's `gguf.cpp` checks (and the tensor bounds that
//! `llama_model_loader` checks), before allocating or slicing: see `reader.rs`.

mod error;
mod reader;
mod value;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};

pub use error::GgufError;
pub use reader::parse;
pub use value::{Array, Value, ValueType};
pub use writer::{GgufWriter, TensorInfoOut};

use crate::GgmlType;

/// The four bytes every GGUF file starts with.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// The metadata key that sets the data alignment (`GGUF_KEY_GENERAL_ALIGNMENT`).
pub const KEY_ALIGNMENT: &str = "general.alignment";
/// The alignment when `general.alignment` is absent (`GGUF_DEFAULT_ALIGNMENT`).
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The most dimensions a tensor can have (`GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// The longest tensor name in bytes (`GGML_MAX_NAME` - 1 for the C string terminator).
pub const MAX_NAME_LEN: usize = 63;
/// How deep arrays of arrays may nest. ggml itself refuses nested arrays; gguf-py writes them.
pub const MAX_ARRAY_DEPTH: usize = 8;

/// Everything before the tensor data: version, metadata, tensor infos and where the data starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// In file order; keys are unique.
    pub metadata: Vec<(String, Value)>,
    /// In file order; names are unique, data ranges checked against the file.
    pub tensors: Vec<TensorInfo>,
    /// `general.alignment`, or 32.
    pub alignment: u64,
    /// Absolute start of the tensor data section.
    pub data_offset: u64,
}

impl Header {
    /// The value of metadata key `key` (`gguf_find_key` + `gguf_get_val_*`).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The tensor named `name` (`gguf_find_tensor`).
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// One tensor's description (`struct gguf_tensor_info`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub ty: GgmlType,
    /// ggml order: `dims[0]` = ne0 = the row length (contiguous). As many as stored (0..=4).
    pub dims: Vec<u64>,
    /// Relative to [`Header::data_offset`], as stored.
    pub offset: u64,
    /// Bytes of data, from `ty` and `dims` (`ggml_nbytes`).
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements (`ggml_nelements`).
    pub fn n_elements(&self) -> u64 {
        // parse() checked that this product is below 2^63.
        self.dims.iter().product()
    }

    /// Number of rows: all elements but the first dimension (`ggml_nrows`).
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }

    /// Bytes per row (`ggml_row_size(type, ne0)`).
    pub fn row_bytes(&self) -> u64 {
        let ne0 = self.dims.first().copied().unwrap_or(1);
        ne0 / self.ty.block_size() as u64 * self.ty.type_size() as u64
    }
}

/// An open GGUF file: the memory map and its parsed, bounds-checked header.
pub struct GgufFile {
    path: PathBuf,
    map: memmap2::Mmap,
    header: Header,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("len", &self.map.len())
            .field("version", &self.header.version)
            .field("n_kv", &self.header.metadata.len())
            .field("n_tensors", &self.header.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Map `path` and parse it (`gguf_init_from_file` with `no_alloc`, data served from the
    /// map like `llama_mmap`). Errors name the path.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref().to_path_buf();
        let io = |error| GgufError::Io {
            path: path.clone(),
            error,
        };
        let file = File::open(&path).map_err(io)?;
        // SAFETY: the map is read-only and lives as long as `GgufFile`. If another process
        // truncates or rewrites the file while it is mapped, reads may fault or see new
        // bytes; that is the accepted contract of every mmap-based model loader (ggml's
        // `llama_mmap` included). Parsing does not rely on the bytes staying unchanged for
        // memory safety beyond that.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let header = parse(&map).map_err(|e| e.in_file(&path))?;
        Ok(GgufFile { path, map, header })
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed header (`gguf_context` without the data).
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The value of metadata key `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.header.get(key)
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.header.tensor(name)
    }

    /// The data of tensor `t`, borrowed from the map (no copy). Bounds were checked by
    /// [`parse`]; a `TensorInfo` from another file that does not fit gives an empty slice.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let start = self.header.data_offset.saturating_add(t.offset);
        let end = start.saturating_add(t.size);
        usize::try_from(start)
            .ok()
            .zip(usize::try_from(end).ok())
            .and_then(|(s, e)| self.map.get(s..e))
            .unwrap_or(&[])
    }

    /// The whole mapped file (`llama_mmap::addr`).
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
}
