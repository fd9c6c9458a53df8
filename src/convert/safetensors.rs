//! A bounded reader of Hugging Face safetensors files over a memory map: one
//! `model.safetensors`, or shards listed in `model.safetensors.index.json`.
//!
//! Written here rather than with the `safetensors` crate: the format is an 8-byte length, a
//! JSON header and raw data, and owning the checks lets every error name the file and tensor
//! (truncated file, offsets outside the data, size disagreeing with shape and dtype, unknown
//! dtype) without copying tensor bytes out of the map.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde_json::Value as Json;

use super::ConvertError;

/// Element types kiln converts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    BF16,
}

impl Dtype {
    fn parse(s: &str) -> Option<Dtype> {
        Some(match s {
            "F32" => Dtype::F32,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
        }
    }
}

/// One tensor: where its bytes are.
#[derive(Clone, Debug)]
pub struct StTensor {
    pub name: String,
    pub dtype: Dtype,
    /// PyTorch order (row-major, last dimension contiguous).
    pub shape: Vec<u64>,
    file: usize,
    start: usize,
    end: usize,
}

impl StTensor {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.shape.iter().product()
    }
}

struct Shard {
    path: PathBuf,
    map: Mmap,
}

/// All tensors of a checkpoint, by name (sorted, as Python's `safe_open(...).keys()`).
pub struct Checkpoint {
    shards: Vec<Shard>,
    tensors: BTreeMap<String, StTensor>,
}

fn bad(path: &Path, msg: impl Into<String>) -> ConvertError {
    ConvertError::Safetensors {
        file: path.to_path_buf(),
        msg: msg.into(),
    }
}

impl Checkpoint {
    /// Open the safetensors files of the Hugging Face folder `dir`.
    pub fn open_dir(dir: &Path) -> Result<Checkpoint, ConvertError> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index.is_file() {
            let text = super::read_text(&index)?;
            let json: Json = serde_json::from_str(&text).map_err(|e| bad(&index, e.to_string()))?;
            let map = json
                .get("weight_map")
                .and_then(Json::as_object)
                .ok_or_else(|| bad(&index, "no \"weight_map\" object"))?;
            let mut names: Vec<&str> = map.values().filter_map(Json::as_str).collect();
            names.sort_unstable();
            names.dedup();
            names.into_iter().map(|n| dir.join(n)).collect()
        } else if single.is_file() {
            vec![single]
        } else {
            return Err(ConvertError::Missing {
                dir: dir.to_path_buf(),
                what: "model.safetensors or model.safetensors.index.json",
            });
        };
        let mut ck = Checkpoint {
            shards: Vec::new(),
            tensors: BTreeMap::new(),
        };
        for path in files {
            ck.add_shard(path)?;
        }
        Ok(ck)
    }

    fn add_shard(&mut self, path: PathBuf) -> Result<(), ConvertError> {
        let file = File::open(&path).map_err(|error| ConvertError::Io {
            path: path.clone(),
            error,
        })?;
        // SAFETY: the map is read-only and lives as long as `self`; like every mmap reader we
        // rely on the file not being truncated by another process while we read it.
        let map = unsafe { Mmap::map(&file) }.map_err(|error| ConvertError::Io {
            path: path.clone(),
            error,
        })?;
        let idx = self.shards.len();
        let len8 = map.get(..8).ok_or_else(|| {
            bad(
                &path,
                format!("{} bytes is too short for a header", map.len()),
            )
        })?;
        let n = u64::from_le_bytes(len8.try_into().unwrap_or([0; 8]));
        let data_start = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_add(8))
            .filter(|&e| e <= map.len())
            .ok_or_else(|| {
                bad(
                    &path,
                    format!(
                        "header of {n} bytes runs past the end of the {}-byte file (truncated?)",
                        map.len()
                    ),
                )
            })?;
        let header: serde_json::Map<String, Json> = serde_json::from_slice(&map[8..data_start])
            .map_err(|e| bad(&path, format!("header is not a JSON object: {e}")))?;
        let data_len = map.len() - data_start;
        for (name, info) in header {
            if name == "__metadata__" {
                continue;
            }
            let tbad = |m: String| bad(&path, format!("tensor '{name}': {m}"));
            let dt = info.get("dtype").and_then(Json::as_str).unwrap_or("?");
            let dtype = Dtype::parse(dt).ok_or_else(|| {
                tbad(format!(
                    "unsupported dtype '{dt}' (kiln converts F32, F16 and BF16 checkpoints)"
                ))
            })?;
            let shape: Vec<u64> = info
                .get("shape")
                .and_then(Json::as_array)
                .and_then(|a| a.iter().map(Json::as_u64).collect())
                .ok_or_else(|| tbad("no valid \"shape\"".into()))?;
            let offs: Vec<u64> = info
                .get("data_offsets")
                .and_then(Json::as_array)
                .and_then(|a| a.iter().map(Json::as_u64).collect())
                .filter(|v: &Vec<u64>| v.len() == 2)
                .ok_or_else(|| tbad("no valid \"data_offsets\"".into()))?;
            let (start, end) = (offs[0], offs[1]);
            if start > end || end > data_len as u64 {
                return Err(tbad(format!(
                    "data {start}..{end} lies outside the {data_len} data bytes of the file (truncated?)"
                )));
            }
            let want = shape
                .iter()
                .try_fold(dtype.size() as u64, |a, &d| a.checked_mul(d));
            if want != Some(end - start) {
                return Err(tbad(format!(
                    "{} bytes of data for shape {shape:?} of {dt}",
                    end - start
                )));
            }
            let t = StTensor {
                name: name.clone(),
                dtype,
                shape,
                file: idx,
                start: data_start + start as usize,
                end: data_start + end as usize,
            };
            if self.tensors.insert(name.clone(), t).is_some() {
                return Err(bad(&path, format!("tensor '{name}' appears in two shards")));
            }
        }
        self.shards.push(Shard { path, map });
        Ok(())
    }

    /// Tensors by name.
    pub fn tensors(&self) -> &BTreeMap<String, StTensor> {
        &self.tensors
    }

    /// The file a tensor is stored in.
    pub fn path_of(&self, t: &StTensor) -> &Path {
        &self.shards[t.file].path
    }

    /// The raw bytes of `t`, borrowed from the map.
    pub fn bytes(&self, t: &StTensor) -> &[u8] {
        &self.shards[t.file].map[t.start..t.end]
    }

    /// `t` as f32 (exact for every supported dtype), into `out`.
    pub fn read_f32(&self, t: &StTensor, out: &mut Vec<f32>) {
        let b = self.bytes(t);
        out.clear();
        match t.dtype {
            Dtype::F32 => out.extend(
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
            Dtype::F16 => out.extend(
                b.chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
            ),
            Dtype::BF16 => out.extend(
                b.chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()),
            ),
        }
    }
}
