//! Importance matrices, in both of llama.cpp's file formats:
//! - GGUF (`llama-imatrix`'s default): per weight `NAME.in_sum2` (F32, `[cols, n_mat]`: the sum
//!   of squared input activations per column) and `NAME.counts` (F32, `[1, n_mat]`: how many
//!   activation rows were summed), with `general.type = imatrix`, `imatrix.datasets`,
//!   `imatrix.chunk_count`, `imatrix.chunk_size`;
//! - the legacy `.dat` file: entries of `(value / count) * ncall` and `ncall`, then the chunk
//!   count and the dataset name.
//!
//! [`read`] is `common_imatrix_load`, [`load`] is llama-quantize's `load_imatrix` (the weights
//! handed to the quantizer), [`Collector`] is llama-imatrix's `IMatrixCollector` (collect, merge
//! `--in-file`s, save in either format).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use ggml_compat::gguf::{Array, GgufError, GgufFile, GgufWriter, TensorInfoOut, Value, ValueType};
use ggml_compat::GgmlType;

/// `LLM_KV_IMATRIX_DATASETS` and friends (common/imatrix-loader.h).
pub const KEY_DATASETS: &str = "imatrix.datasets";
pub const KEY_CHUNK_COUNT: &str = "imatrix.chunk_count";
pub const KEY_CHUNK_SIZE: &str = "imatrix.chunk_size";

/// Why an importance matrix could not be read, merged or written.
#[derive(Debug, thiserror::Error)]
pub enum ImatrixError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{file}: {error}")]
    Io {
        file: PathBuf,
        error: std::io::Error,
    },
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
    #[error("{file}: not an importance matrix: {msg}")]
    NotImatrix { file: PathBuf, msg: String },
    #[error(
        "non-finite values detected in the activations of '{0}' (the model overflows on this text)"
    )]
    NonFinite(String),
}

/// One weight's statistics: `sums` holds `n_mat` rows of `cols` values, `counts` one per matrix
/// (expert). In a legacy file `sums` are already `(sum / count) * ncall` and `counts` is `[ncall]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Entry {
    pub sums: Vec<f32>,
    pub counts: Vec<i64>,
}

impl Entry {
    /// The quantizer's weights (llama-quantize's `load_imatrix` on GGUF data): each expert's sums
    /// divided by its count (1 where the count is 0).
    pub fn weights(&self) -> Result<Vec<f32>, String> {
        let n_mat = self.counts.len();
        if n_mat == 0 || !self.sums.len().is_multiple_of(n_mat) {
            return Err(format!(
                "{} sums do not split into {n_mat} experts",
                self.sums.len()
            ));
        }
        let ne0 = self.sums.len() / n_mat;
        let mut e = vec![1.0f32; self.sums.len()];
        for (j, &count) in self.counts.iter().enumerate() {
            let count = count as f32;
            if count > 0.0 {
                for i in 0..ne0 {
                    e[j * ne0 + i] = self.sums[j * ne0 + i] / count;
                }
            }
        }
        Ok(e)
    }
}

/// A file as read by [`read`] (llama.cpp's `common_imatrix`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImatrixFile {
    pub entries: BTreeMap<String, Entry>,
    pub datasets: Vec<String>,
    pub chunk_count: i32,
    /// 0 in a legacy file.
    pub chunk_size: i32,
    pub is_legacy: bool,
    /// All three `imatrix.*` keys are present (GGUF only).
    pub has_metadata: bool,
}

/// The weights handed to the quantizer.
#[derive(Clone, Debug, Default)]
pub struct Imatrix {
    /// Tensor name → weights (one per column, per expert, concatenated).
    pub data: HashMap<String, Vec<f32>>,
    /// `imatrix.datasets`
    pub datasets: Vec<String>,
    /// `imatrix.chunk_count`
    pub chunk_count: u32,
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Read `path` in either format, as `common_imatrix_load` does: a file that does not start
/// with the GGUF magic is read as a legacy `.dat` file (a damaged GGUF file is reported as such
/// rather than retried as legacy).
pub fn read(path: &Path) -> Result<ImatrixFile, ImatrixError> {
    let io = |error| ImatrixError::Io {
        file: path.to_path_buf(),
        error,
    };
    let mut magic = [0u8; 4];
    let is_gguf = {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(io)?;
        f.read(&mut magic).map_err(io)? == 4 && &magic == b"GGUF"
    };
    if is_gguf {
        read_gguf(path)
    } else {
        let bytes = std::fs::read(path).map_err(io)?;
        read_legacy(path, &bytes)
    }
}

fn read_gguf(path: &Path) -> Result<ImatrixFile, ImatrixError> {
    let file = GgufFile::open(path)?;
    let file_path = file.path().to_path_buf();
    if file.tensors().is_empty() {
        return Err(ImatrixError::NotImatrix {
            file: file_path,
            msg: "no tensors (no data)".into(),
        });
    }
    let mut out = ImatrixFile::default();
    let datasets = file.get(KEY_DATASETS);
    if let Some(names) = datasets
        .and_then(|v| v.as_array())
        .and_then(|a| a.strings())
    {
        out.datasets = names.into_iter().map(String::from).collect();
    }
    let count = file.get(KEY_CHUNK_COUNT);
    let size = file.get(KEY_CHUNK_SIZE);
    out.has_metadata = datasets.is_some() && count.is_some() && size.is_some();
    out.chunk_count = count.and_then(|v| v.as_u64()).unwrap_or(0) as i32;
    out.chunk_size = size.and_then(|v| v.as_u64()).unwrap_or(0) as i32;

    let mut pairs: BTreeMap<String, (Option<usize>, Option<usize>)> = BTreeMap::new();
    for (i, t) in file.tensors().iter().enumerate() {
        if let Some(n) = t.name.strip_suffix(".in_sum2") {
            pairs.entry(n.to_string()).or_default().0 = Some(i);
        } else if let Some(n) = t.name.strip_suffix(".counts") {
            pairs.entry(n.to_string()).or_default().1 = Some(i);
        }
    }
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
        if ts.ty != GgmlType::F32 || tc.ty != GgmlType::F32 {
            return Err(ImatrixError::Bad {
                file: file_path,
                name,
                msg: "sums and counts must be F32".into(),
            });
        }
        let sums = f32s(file.tensor_data(ts));
        // std::lround: halves away from zero, as f32::round
        let counts = f32s(file.tensor_data(tc))
            .into_iter()
            .map(|c| c.round() as i64)
            .collect();
        out.entries.insert(name, Entry { sums, counts });
    }
    Ok(out)
}

/// A little-endian cursor over a legacy file that names the file in its errors.
struct Cursor<'a> {
    file: &'a Path,
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], ImatrixError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(ImatrixError::NotImatrix {
                file: self.file.to_path_buf(),
                msg: format!(
                    "legacy imatrix truncated at byte {} while reading {what}",
                    self.pos
                ),
            });
        };
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn i32(&mut self, what: &str) -> Result<i32, ImatrixError> {
        let b = self.take(4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A length that must be positive and fit in what is left of the file.
    fn len(&mut self, what: &str, elem: usize) -> Result<usize, ImatrixError> {
        let n = self.i32(what)?;
        let left = (self.bytes.len() - self.pos) / elem;
        if n < 0 || n as usize > left {
            return Err(ImatrixError::NotImatrix {
                file: self.file.to_path_buf(),
                msg: format!(
                    "{what} is {n}, but only {left} fit in the rest of the file (truncated?)"
                ),
            });
        }
        Ok(n as usize)
    }
}

/// `common_imatrix_load_legacy`: `i32 n_entries`, then per entry `i32 len, name, i32 ncall,
/// i32 nval, nval × f32`, then optionally `i32 chunk_count, i32 len, dataset name`.
fn read_legacy(path: &Path, bytes: &[u8]) -> Result<ImatrixFile, ImatrixError> {
    let mut cur = Cursor {
        file: path,
        bytes,
        pos: 0,
    };
    let n_entries = cur.i32("the entry count")?;
    if n_entries < 1 {
        return Err(ImatrixError::NotImatrix {
            file: path.to_path_buf(),
            msg: format!("neither GGUF nor a legacy imatrix with entries (count {n_entries})"),
        });
    }
    let mut out = ImatrixFile {
        is_legacy: true,
        ..Default::default()
    };
    for i in 0..n_entries {
        let len = cur.len(&format!("the name length of entry {}", i + 1), 1)?;
        let name = String::from_utf8_lossy(cur.take(len, "a name")?).into_owned();
        let ncall = cur.i32(&format!("ncall of '{name}'"))?;
        let nval = cur.len(&format!("the value count of '{name}'"), 4)?;
        if nval < 1 {
            return Err(ImatrixError::Bad {
                file: path.to_path_buf(),
                name,
                msg: "no values".into(),
            });
        }
        let sums = f32s(cur.take(nval * 4, "values")?);
        out.entries.insert(
            name,
            Entry {
                sums,
                counts: vec![ncall as i64],
            },
        );
    }
    if cur.pos < bytes.len() {
        out.chunk_count = cur.i32("the chunk count")?;
        if let Ok(len) = cur.len("the dataset name length", 1) {
            if len > 0 {
                let d = cur.take(len, "the dataset name")?;
                out.datasets.push(String::from_utf8_lossy(d).into_owned());
            }
        }
    }
    Ok(out)
}

/// Load `path` (either format) into the quantizer's weights, matching llama-quantize's
/// `load_imatrix`: GGUF sums divided by their expert's count (1 where the count is 0; the
/// `imatrix.*` metadata must be present), legacy values divided by `ncall`.
pub fn load(path: &Path) -> Result<Imatrix, ImatrixError> {
    let file = read(path)?;
    if !file.is_legacy && !file.has_metadata {
        return Err(ImatrixError::NotImatrix {
            file: path.to_path_buf(),
            msg: format!(
                "missing imatrix metadata ({KEY_DATASETS}, {KEY_CHUNK_COUNT}, {KEY_CHUNK_SIZE})"
            ),
        });
    }
    let mut data = HashMap::new();
    for (name, entry) in file.entries {
        let bad = |msg: String| ImatrixError::Bad {
            file: path.to_path_buf(),
            name: name.clone(),
            msg,
        };
        let e: Vec<f32> = if file.is_legacy {
            let ncall = entry.counts.first().copied().unwrap_or(0);
            if ncall > 0 {
                entry.sums.iter().map(|&s| s / ncall as f32).collect()
            } else {
                entry.sums.clone()
            }
        } else {
            entry.weights().map_err(bad)?
        };
        if let Some(v) = e.iter().find(|v| !v.is_finite()) {
            return Err(bad(format!("contains the non-finite value {v}")));
        }
        data.insert(name, e);
    }
    Ok(Imatrix {
        data,
        datasets: file.datasets,
        chunk_count: file.chunk_count.max(0) as u32,
    })
}

/// The dimensions gguf writes for a tensor: `ggml_n_dims` drops trailing 1s (keeping one).
fn n_dims(ne: &[u64]) -> Vec<u64> {
    let n = ne.iter().rposition(|&d| d != 1).map_or(1, |i| i + 1);
    ne[..n].to_vec()
}

/// llama-imatrix's `IMatrixCollector`: raw sums of squared activations and row counts per
/// weight, merged from earlier files, saved as GGUF or legacy `.dat`.
#[derive(Clone, Debug, Default)]
pub struct Collector {
    /// Weight name → raw sums and counts (`m_stats`).
    pub stats: BTreeMap<String, Entry>,
    /// Datasets of merged files (`m_datasets`).
    pub datasets: Vec<String>,
    /// Tokens per chunk (`n_ctx / n_parallel`).
    pub chunk_size: usize,
    /// Chunks seen so far, counting merged files (`m_last_chunk`).
    pub last_chunk: i32,
    /// First weight whose sums became non-finite.
    non_finite: Option<String>,
}

impl Collector {
    /// An empty collector for chunks of `chunk_size` tokens.
    pub fn new(chunk_size: usize) -> Collector {
        Collector {
            chunk_size: chunk_size.max(1),
            ..Default::default()
        }
    }

    /// Whether llama-imatrix collects this matmul (`collect_imatrix` with `ask`): weights of the
    /// blocks, `output.weight` only with `--process-output`, batches of at least 16 rows.
    pub fn wants(name: &str, n_rows: usize, process_output: bool) -> bool {
        n_rows >= 16 && (name.starts_with("blk.") || (process_output && name == "output.weight"))
    }

    /// Accumulate the `n` rows of `x` (n, cols) fed to the 2-D weight `name`
    /// (`collect_imatrix`'s dense `GGML_OP_MUL_MAT` branch).
    pub fn observe(&mut self, name: &str, x: &[f32], n: usize) {
        if n == 0 || x.is_empty() {
            return;
        }
        let cols = x.len() / n;
        let e = self.stats.entry(name.to_string()).or_default();
        // one count per dense tensor (older files may carry equal per-expert counts)
        if e.counts.len() > 1 && e.counts.iter().all(|&c| c == e.counts[0]) {
            e.counts.truncate(1);
        }
        if e.sums.is_empty() {
            e.sums = vec![0.0; cols];
            e.counts = vec![0];
        } else if e.sums.len() != cols {
            // llama-imatrix exits; keep the first shape and report it as non-finite data would be
            self.non_finite.get_or_insert_with(|| {
                format!("{name} (inconsistent size: {} vs {cols})", e.sums.len())
            });
            return;
        }
        for row in x[..n * cols].chunks_exact(cols) {
            for (acc, &v) in e.sums.iter_mut().zip(row) {
                *acc += v * v;
            }
        }
        if self.non_finite.is_none() && !e.sums.iter().all(|v| v.is_finite()) {
            self.non_finite = Some(name.to_string());
        }
        for c in e.counts.iter_mut() {
            *c += n as i64;
            self.last_chunk = self.last_chunk.max((*c / self.chunk_size as i64) as i32);
        }
    }

    /// What the quantizer reads, as if this collection had been saved and loaded with [`load`].
    pub fn to_imatrix(&self, dataset: &str) -> Result<Imatrix, ImatrixError> {
        self.check()?;
        let mut data = HashMap::new();
        for (name, e) in &self.stats {
            let w = e.weights().map_err(|msg| ImatrixError::Bad {
                file: dataset.into(),
                name: name.clone(),
                msg,
            })?;
            data.insert(name.clone(), w);
        }
        Ok(Imatrix {
            data,
            datasets: vec![dataset.to_string()],
            chunk_count: self.last_chunk.max(0) as u32,
        })
    }

    /// Error if some weight's sums overflowed (llama-imatrix exits at once).
    pub fn check(&self) -> Result<(), ImatrixError> {
        match &self.non_finite {
            Some(n) => Err(ImatrixError::NonFinite(n.clone())),
            None => Ok(()),
        }
    }

    /// Add a file read by [`read`] (`IMatrixCollector::load_imatrix`): legacy values are scaled
    /// back to raw sums by `chunk_size`, GGUF sums and counts are added as they are.
    pub fn merge(&mut self, file: &ImatrixFile, path: &Path) -> Result<(), ImatrixError> {
        let chunk = self.chunk_size as i64;
        for (name, entry) in &file.entries {
            let e = self.stats.entry(name.clone()).or_default();
            let bad = |msg: String| ImatrixError::Bad {
                file: path.to_path_buf(),
                name: name.clone(),
                msg,
            };
            if file.is_legacy {
                if e.sums.is_empty() {
                    e.sums = vec![0.0; entry.sums.len()];
                    e.counts = vec![0];
                } else if e.sums.len() != entry.sums.len() {
                    return Err(bad(format!(
                        "mismatched sums size: {} != {}",
                        entry.sums.len(),
                        e.sums.len()
                    )));
                }
                let scale = chunk as f32;
                for (acc, &s) in e.sums.iter_mut().zip(&entry.sums) {
                    *acc += s * scale;
                }
                let add = entry.counts.first().copied().unwrap_or(0) * chunk;
                e.counts.iter_mut().for_each(|c| *c += add);
            } else {
                if e.sums.is_empty() {
                    e.sums = vec![0.0; entry.sums.len()];
                } else if e.sums.len() != entry.sums.len() {
                    return Err(bad(format!(
                        "mismatched sums size: {} != {}",
                        entry.sums.len(),
                        e.sums.len()
                    )));
                }
                let n = entry.counts.len();
                if e.counts.is_empty() {
                    e.counts = vec![0; n];
                } else if e.counts.len() == 1 && n > 1 {
                    e.counts = vec![e.counts[0]; n];
                } else if e.counts.len() != n {
                    return Err(bad(format!(
                        "mismatched counts size: {n} != {}",
                        e.counts.len()
                    )));
                }
                for (acc, &s) in e.sums.iter_mut().zip(&entry.sums) {
                    *acc += s;
                }
                for (acc, &c) in e.counts.iter_mut().zip(&entry.counts) {
                    *acc += c;
                }
            }
        }
        self.datasets.extend(file.datasets.iter().cloned());
        let max_count = self
            .stats
            .values()
            .flat_map(|e| e.counts.iter().copied())
            .max()
            .unwrap_or(0)
            .max(0);
        self.last_chunk = (max_count / chunk) as i32;
        Ok(())
    }

    /// Write the GGUF format (`save_imatrix`): keys `general.type`, `imatrix.datasets` (merged
    /// files' datasets, then `prompt_file`), `imatrix.chunk_count`, `imatrix.chunk_size`; per
    /// weight in name order `NAME.in_sum2` `[cols, n_mat]` and `NAME.counts` `[1, n_mat]`, F32
    /// (trailing 1-dimensions dropped, as gguf writes them).
    pub fn write_gguf(&self, path: &Path, prompt_file: Option<&str>) -> Result<(), ImatrixError> {
        let mut datasets: Vec<Value> = self.datasets.iter().cloned().map(Value::String).collect();
        if let Some(p) = prompt_file.filter(|p| !p.is_empty()) {
            datasets.push(Value::String(p.to_string()));
        }
        let metadata = vec![
            ("general.type".to_string(), Value::String("imatrix".into())),
            (
                KEY_DATASETS.to_string(),
                Value::Array(Array {
                    elem: ValueType::String,
                    values: datasets,
                }),
            ),
            (
                KEY_CHUNK_COUNT.to_string(),
                Value::U32(self.last_chunk as u32),
            ),
            (
                KEY_CHUNK_SIZE.to_string(),
                Value::U32(self.chunk_size as u32),
            ),
        ];
        let stored: Vec<(&String, &Entry)> = self
            .stats
            .iter()
            .filter(|(_, e)| !e.sums.is_empty() && !e.counts.is_empty())
            .collect();
        let mut infos = Vec::with_capacity(stored.len() * 2);
        for (name, e) in &stored {
            let n_mat = e.counts.len() as u64;
            infos.push(TensorInfoOut {
                name: format!("{name}.in_sum2"),
                ty: GgmlType::F32,
                dims: n_dims(&[e.sums.len() as u64 / n_mat, n_mat]),
            });
            infos.push(TensorInfoOut {
                name: format!("{name}.counts"),
                ty: GgmlType::F32,
                dims: n_dims(&[1, n_mat]),
            });
        }
        let mut w = GgufWriter::create(path, 3, 32, &metadata, &infos)?;
        for (name, e) in &stored {
            let sums: Vec<u8> = e.sums.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.write_tensor_data(&format!("{name}.in_sum2"), &sums)?;
            let counts: Vec<u8> = e
                .counts
                .iter()
                .flat_map(|&c| (c as f32).to_le_bytes())
                .collect();
            w.write_tensor_data(&format!("{name}.counts"), &counts)?;
        }
        Ok(w.finish()?)
    }

    /// Write the legacy format (`save_imatrix_legacy`): weights with no data at all skipped;
    /// `ncall = ceil(max count / chunk_size)`; values `(sum / count) * ncall` (1 × ncall where
    /// an expert has no data); then the chunk count and the dataset (`prompt_file`, else the
    /// last merged dataset).
    pub fn write_dat(&self, path: &Path, prompt_file: Option<&str>) -> Result<(), ImatrixError> {
        let chunk = self.chunk_size as i64;
        let stored: Vec<(&String, &Entry)> = self
            .stats
            .iter()
            .filter(|(_, e)| !e.counts.is_empty() && e.counts.iter().any(|&c| c != 0))
            .collect();
        let mut out = Vec::new();
        out.extend((stored.len() as i32).to_le_bytes());
        for (name, e) in stored {
            out.extend((name.len() as i32).to_le_bytes());
            out.extend(name.as_bytes());
            let max = e.counts.iter().copied().max().unwrap_or(0);
            let ncall = ((max + chunk - 1) / chunk) as i32;
            out.extend(ncall.to_le_bytes());
            out.extend((e.sums.len() as i32).to_le_bytes());
            let per_mat = e.sums.len() / e.counts.len();
            for (i, &v) in e.sums.iter().enumerate() {
                let count = e.counts[i / per_mat.max(1)] as f32;
                let (v, count) = if count == 0.0 { (1.0, 1.0) } else { (v, count) };
                out.extend(((v / count) * ncall as f32).to_le_bytes());
            }
        }
        out.extend(self.last_chunk.to_le_bytes());
        let dataset = match prompt_file.filter(|p| !p.is_empty()) {
            Some(p) => p,
            None => self.datasets.last().map_or("", String::as_str),
        };
        out.extend((dataset.len() as i32).to_le_bytes());
        out.extend(dataset.as_bytes());
        let io = |error| ImatrixError::Io {
            file: path.to_path_buf(),
            error,
        };
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        let tmp = path.with_file_name(name);
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&out).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-imatrix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn sample() -> Collector {
        let mut c = Collector::new(4);
        let x: Vec<f32> = (0..8 * 3).map(|i| (i as f32 - 7.0) * 0.25).collect();
        c.observe("blk.0.attn_q.weight", &x, 8);
        c.observe("blk.0.ffn_down.weight", &x[..12], 2);
        c.datasets.push("earlier.txt".into());
        c
    }

    #[test]
    fn observe_sums_squares_per_column_and_counts_rows() {
        let c = sample();
        let e = &c.stats["blk.0.attn_q.weight"];
        let want: Vec<f32> = (0..3)
            .map(|col| {
                (0..8)
                    .map(|r| ((r * 3 + col) as f32 - 7.0) * 0.25)
                    .map(|v| v * v)
                    .sum()
            })
            .collect();
        assert_eq!(e.sums, want);
        assert_eq!(e.counts, vec![8]);
        assert_eq!(c.last_chunk, 2);
    }

    #[test]
    fn gguf_round_trip_keeps_raw_sums_counts_and_metadata() {
        let c = sample();
        let p = tmp("rt.gguf");
        c.write_gguf(&p, Some("calib.txt")).unwrap();
        let f = read(&p).unwrap();
        assert!(!f.is_legacy && f.has_metadata);
        assert_eq!(f.datasets, vec!["earlier.txt", "calib.txt"]);
        assert_eq!((f.chunk_count, f.chunk_size), (2, 4));
        assert_eq!(f.entries, c.stats);
        let g = GgufFile::open(&p).unwrap();
        assert_eq!(
            g.get("general.type").and_then(|v| v.as_str()),
            Some("imatrix")
        );
        let t = g.tensor("blk.0.attn_q.weight.counts").unwrap();
        // ggml_n_dims: `[1, 1]` and `[3, 1]` are written with one dimension
        assert_eq!(t.dims, vec![1]);
        let t = g.tensor("blk.0.attn_q.weight.in_sum2").unwrap();
        assert_eq!(t.dims, vec![3]);
        assert_eq!(n_dims(&[1, 4]), vec![1, 4]);
        // the quantizer's weights are the means
        let im = load(&p).unwrap();
        let e = &c.stats["blk.0.attn_q.weight"];
        let mean: Vec<f32> = e.sums.iter().map(|s| s / 8.0).collect();
        assert_eq!(im.data["blk.0.attn_q.weight"], mean);
    }

    #[test]
    fn dat_round_trip_and_merge_restore_the_collector() {
        let c = sample();
        let p = tmp("rt.dat");
        c.write_dat(&p, None).unwrap();
        let f = read(&p).unwrap();
        assert!(f.is_legacy);
        assert_eq!(f.datasets, vec!["earlier.txt"]);
        assert_eq!(f.chunk_count, 2);
        // attn_q: 8 rows, chunk 4 → ncall 2, values mean × 2
        let e = &f.entries["blk.0.attn_q.weight"];
        assert_eq!(e.counts, vec![2]);
        let raw = &c.stats["blk.0.attn_q.weight"].sums;
        for (v, s) in e.sums.iter().zip(raw) {
            assert_eq!(*v, (s / 8.0) * 2.0);
        }
        // ffn_down: 2 rows → ceil(2/4) = 1 call
        assert_eq!(f.entries["blk.0.ffn_down.weight"].counts, vec![1]);
        let im = load(&p).unwrap();
        assert_eq!(
            im.data["blk.0.attn_q.weight"][0],
            (raw[0] / 8.0) * 2.0 / 2.0
        );
        // merging a legacy file gives raw sums back (up to rounding) with counts ncall × chunk
        let mut m = Collector::new(4);
        m.merge(&f, &p).unwrap();
        let e = &m.stats["blk.0.attn_q.weight"];
        assert_eq!(e.counts, vec![8]);
        for (a, b) in e.sums.iter().zip(raw) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0));
        }
        assert_eq!(m.last_chunk, 2);
    }

    #[test]
    fn merging_gguf_files_adds_sums_and_counts() {
        let c = sample();
        let p = tmp("m.gguf");
        c.write_gguf(&p, Some("a.txt")).unwrap();
        let f = read(&p).unwrap();
        let mut m = Collector::new(4);
        m.merge(&f, &p).unwrap();
        m.merge(&f, &p).unwrap();
        let e = &m.stats["blk.0.attn_q.weight"];
        assert_eq!(e.counts, vec![16]);
        let want: Vec<f32> = c.stats["blk.0.attn_q.weight"]
            .sums
            .iter()
            .map(|s| s + s)
            .collect();
        assert_eq!(e.sums, want);
        assert_eq!(m.last_chunk, 4);
        assert_eq!(m.datasets.len(), 4);
    }

    #[test]
    fn bad_files_are_errors_that_name_the_file() {
        let p = tmp("trunc.dat");
        let c = sample();
        c.write_dat(&p, None).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..20]).unwrap();
        let err = read(&p).unwrap_err().to_string();
        assert!(
            err.contains("trunc.dat") && err.contains("truncated"),
            "{err}"
        );
        std::fs::write(&p, 0i32.to_le_bytes()).unwrap();
        assert!(read(&p).is_err());
        std::fs::write(&p, b"").unwrap();
        assert!(read(&p).is_err());
    }

    #[test]
    fn non_finite_activations_are_reported() {
        let mut c = Collector::new(4);
        c.observe("blk.0.attn_q.weight", &[f32::MAX, 1.0], 1);
        assert!(c.check().is_err());
    }

    #[test]
    fn collection_filter_matches_llama_imatrix() {
        assert!(Collector::wants("blk.3.ffn_up.weight", 512, false));
        assert!(!Collector::wants("blk.3.ffn_up.weight", 15, false));
        assert!(!Collector::wants("output.weight", 512, false));
        assert!(Collector::wants("output.weight", 512, true));
        assert!(!Collector::wants("token_embd.weight", 512, true));
    }
}
