//! Importance matrices written by `llama-imatrix` (GGUF format: `NAME.in_sum2` and
//! `NAME.counts` F32 tensors), read as llama-quantize's `load_imatrix` does: each column's
//! sum of squared activations divided by its expert's count (1 where the count is 0).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ggml_compat::gguf::{GgufError, GgufFile};
use ggml_compat::GgmlType;

/// Why an importance matrix could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImatrixError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(
        "{file}: '{name}' has {what} but not its partner (.in_sum2 and .counts come in pairs)"
    )]
    Unpaired {
        file: PathBuf,
        name: String,
        what: &'static str,
    },
    #[error("{file}: '{name}': {msg}")]
    Bad {
        file: PathBuf,
        name: String,
        msg: String,
    },
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A loaded importance matrix.
#[derive(Clone, Debug, Default)]
pub struct Imatrix {
    /// Tensor name → weights (one per column, per expert, concatenated).
    pub data: HashMap<String, Vec<f32>>,
    /// `imatrix.datasets`
    pub datasets: Vec<String>,
    /// `imatrix.chunk_count`
    pub chunk_count: u32,
}

/// Load `path`, matching `common_imatrix_load` + `load_imatrix` of llama.cpp's quantize tool
/// (GGUF format only; the metadata `imatrix.datasets`, `chunk_count`, `chunk_size` must be
/// there, as llama-quantize requires).
pub fn load(path: &Path) -> Result<Imatrix, ImatrixError> {
    let file = GgufFile::open(path)?;
    let file_path = file.path().to_path_buf();
    let meta_bad = |key: &str| ImatrixError::Bad {
        file: file_path.clone(),
        name: key.to_string(),
        msg: "missing imatrix metadata (not a llama-imatrix GGUF file?)".into(),
    };
    let datasets: Vec<String> = file
        .get("imatrix.datasets")
        .and_then(|v| v.as_array())
        .and_then(|a| a.strings())
        .ok_or_else(|| meta_bad("imatrix.datasets"))?
        .into_iter()
        .map(String::from)
        .collect();
    let chunk_count = file
        .get("imatrix.chunk_count")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| meta_bad("imatrix.chunk_count"))? as u32;
    file.get("imatrix.chunk_size")
        .ok_or_else(|| meta_bad("imatrix.chunk_size"))?;
    let mut pairs: HashMap<String, (Option<usize>, Option<usize>)> = HashMap::new();
    for (i, t) in file.tensors().iter().enumerate() {
        if let Some(n) = t.name.strip_suffix(".in_sum2") {
            pairs.entry(n.to_string()).or_default().0 = Some(i);
        } else if let Some(n) = t.name.strip_suffix(".counts") {
            pairs.entry(n.to_string()).or_default().1 = Some(i);
        }
    }
    let mut out = HashMap::new();
    for (name, pair) in pairs {
        let (s, c) = match pair {
            (Some(s), Some(c)) => (s, c),
            (s, _) => {
                return Err(ImatrixError::Unpaired {
                    file: file_path,
                    name,
                    what: if s.is_some() { ".in_sum2" } else { ".counts" },
                })
            }
        };
        let (ts, tc) = (&file.tensors()[s], &file.tensors()[c]);
        let bad = |msg: String| ImatrixError::Bad {
            file: file_path.clone(),
            name: name.clone(),
            msg,
        };
        if ts.ty != GgmlType::F32 || tc.ty != GgmlType::F32 {
            return Err(bad("sums and counts must be F32".into()));
        }
        let sums = f32s(file.tensor_data(ts));
        let counts: Vec<f32> = f32s(file.tensor_data(tc))
            .into_iter()
            .map(|c| c.round())
            .collect();
        if counts.is_empty() || !sums.len().is_multiple_of(counts.len()) {
            return Err(bad(format!(
                "{} sums do not split into {} experts",
                sums.len(),
                counts.len()
            )));
        }
        let ne0 = sums.len() / counts.len();
        let mut e = vec![1.0f32; sums.len()];
        for (j, &count) in counts.iter().enumerate() {
            if count > 0.0 {
                for i in 0..ne0 {
                    e[j * ne0 + i] = sums[j * ne0 + i] / count;
                }
            }
        }
        if let Some(v) = e.iter().find(|v| !v.is_finite()) {
            return Err(bad(format!("contains the non-finite value {v}")));
        }
        out.insert(name, e);
    }
    Ok(Imatrix {
        data: out,
        datasets,
        chunk_count,
    })
}
