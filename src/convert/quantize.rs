//! GGUF → GGUF quantization, as `llama-quantize` does it (`llama_model_quantize_impl`): the
//! metadata copied with `general.quantization_version` and `general.file_type` rewritten, the
//! tensors in llama.cpp's loader order, each converted to the type the recipe picks, one tensor
//! in memory at a time, rows spread over threads, into a temporary file renamed at the end.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ggml_compat::gguf::{GgufError, GgufFile, GgufWriter, TensorInfoOut, Value};
use ggml_compat::quant::{self, QuantError};
use ggml_compat::GgmlType;
use indicatif::ProgressBar;
use regex::Regex;

use super::imatrix::Imatrix;
use super::recipe::{weight_order, Ftype, ModelFacts, Recipe, RecipeError, RecipeOptions};

/// `GGML_QNT_VERSION`, written as `general.quantization_version`.
pub const QUANTIZATION_VERSION: u32 = 2;

/// What can go wrong while quantizing a file.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    // The cause is part of the message, so it is not also the error's `source` (anyhow's `{:#}`
    // would print it twice).
    #[error("{file}: {cause}")]
    Recipe { file: PathBuf, cause: RecipeError },
    #[error("{file}: metadata key '{key}' is missing or not {what}")]
    Key {
        file: PathBuf,
        key: String,
        what: &'static str,
    },
    #[error(
        "{file}: tensor '{tensor}' is {ty}; requantizing is disabled (pass --allow-requantize)"
    )]
    Requantize {
        file: PathBuf,
        tensor: String,
        ty: GgmlType,
    },
    #[error("{file}: tensor '{tensor}': {cause}")]
    Quant {
        file: PathBuf,
        tensor: String,
        cause: QuantError,
    },
    #[error(
        "{file}: tensor '{tensor}': the importance matrix has {got} values, the tensor needs {want}"
    )]
    ImatrixSize {
        file: PathBuf,
        tensor: String,
        got: usize,
        want: usize,
    },
    #[error("{file}: tensor '{tensor}': {why}")]
    Replacement {
        file: PathBuf,
        tensor: String,
        why: String,
    },
    #[error("tensor type override '{0}': {1}")]
    BadPattern(String, String),
}

/// Options of `kiln quantize` (the parts of `llama_model_quantize_params` kiln supports).
#[derive(Clone, Debug)]
pub struct QuantizeParams {
    pub ftype: Ftype,
    /// `--tensor-type PATTERN=TYPE`, in the order given. Patterns are lowercased as
    /// llama-quantize does.
    pub overrides: Vec<(String, GgmlType)>,
    pub pure: bool,
    pub allow_requantize: bool,
    /// Importance matrix, and the file name recorded as `quantize.imatrix.file`.
    pub imatrix: Option<(Imatrix, String)>,
    /// Worker threads (at least 1).
    pub threads: usize,
    /// Tensors decided by calibration (`kiln::calib`), used instead of the input's data.
    pub replacements: HashMap<String, Replacement>,
}

/// A tensor's content decided before writing (by calibration).
#[derive(Clone, Debug)]
pub enum Replacement {
    /// New values (e.g. AWQ-scaled weights or norms), quantized to the planned type as usual.
    Values(Vec<f32>),
    /// Final bytes of the planned type (e.g. GPTQ's), written as they are.
    Quantized { ty: GgmlType, bytes: Vec<u8> },
}

/// One tensor of the output, as decided.
#[derive(Clone, Debug)]
pub struct TensorPlan {
    pub name: String,
    pub from: GgmlType,
    pub to: GgmlType,
    pub dims: Vec<u64>,
}

/// What was written.
#[derive(Clone, Debug)]
pub struct QuantizeSummary {
    pub tensors: Vec<TensorPlan>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub n_fallback: usize,
}

fn key_u32(f: &GgufFile, key: &str) -> Result<u32, QuantizeError> {
    let v = f.get(key).and_then(|v| match v {
        Value::Array(a) => a.values.first().and_then(Value::as_u64),
        v => v.as_u64(),
    });
    v.and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| QuantizeError::Key {
            file: f.path().to_path_buf(),
            key: key.to_string(),
            what: "an unsigned integer",
        })
}

/// The model facts the recipe needs, from the file's metadata.
fn model_facts(f: &GgufFile) -> Result<ModelFacts, QuantizeError> {
    let arch = f
        .get("general.architecture")
        .and_then(Value::as_str)
        .ok_or_else(|| QuantizeError::Key {
            file: f.path().to_path_buf(),
            key: "general.architecture".into(),
            what: "a string",
        })?
        .to_string();
    let n_layer = key_u32(f, &format!("{arch}.block_count"))?;
    let n_head = key_u32(f, &format!("{arch}.attention.head_count"))?;
    let n_head_kv = key_u32(f, &format!("{arch}.attention.head_count_kv")).unwrap_or(n_head);
    let n_expert = key_u32(f, &format!("{arch}.expert_count")).unwrap_or(0);
    Ok(ModelFacts {
        arch,
        n_layer,
        n_head,
        n_head_kv,
        n_expert,
    })
}

/// Compile the `--tensor-type` patterns (lowercased, as llama-quantize's `parse_tensor_type`).
pub fn compile_overrides(
    overrides: &[(String, GgmlType)],
) -> Result<Vec<(Regex, GgmlType)>, QuantizeError> {
    overrides
        .iter()
        .map(|(p, t)| {
            Regex::new(&p.to_lowercase())
                .map(|r| (r, *t))
                .map_err(|e| QuantizeError::BadPattern(p.clone(), e.to_string()))
        })
        .collect()
}

/// Quantize the rows of `src` (`ncols` values each) to `ty`, spreading rows over `threads`
/// (`llama_tensor_quantize_impl`; rows are independent, so the split does not change a byte).
/// `imatrix` holds `ncols` weights per expert, `rows_per_expert` rows each. With an importance
/// matrix, TQ1_0, TQ2_0, Q1_0 and Q2_0 get kiln's weighted fit (ggml's quantizer ignores the
/// matrix there; see [`crate::calib::quantize_row_weighted`]); every other case is ggml's bytes.
pub fn quantize_rows(
    ty: GgmlType,
    src: &[f32],
    ncols: usize,
    rows_per_expert: usize,
    imatrix: Option<&[f32]>,
    threads: usize,
) -> Result<Vec<u8>, QuantError> {
    let nrows = src.len().checked_div(ncols).unwrap_or(0);
    let row_bytes = ncols / ty.block_size() * ty.type_size();
    let mut out = vec![0u8; nrows * row_bytes];
    if nrows == 0 {
        return Ok(out);
    }
    // `quantize_row` checks the row is whole blocks; check once up front for a clear error.
    quant::quantize_row(ty, &src[..ncols], &mut out[..row_bytes], None)?;
    let threads = threads.max(1).min(nrows);
    let per = nrows.div_ceil(threads);
    let rows_per_expert = rows_per_expert.max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = out
            .chunks_mut(per * row_bytes)
            .enumerate()
            .map(|(t, dst)| {
                s.spawn(move || -> Result<(), QuantError> {
                    for (k, drow) in dst.chunks_mut(row_bytes).enumerate() {
                        let r = t * per + k;
                        let w = imatrix.map(|m| {
                            let e = r / rows_per_expert;
                            m.get(e * ncols..(e + 1) * ncols).unwrap_or(&[])
                        });
                        let x = &src[r * ncols..(r + 1) * ncols];
                        crate::calib::quantize_row_weighted(ty, x, drow, w)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().unwrap_or(Ok(())))
    })?;
    Ok(out)
}

/// At most `n` bytes of `s` (the tool copies into 128-byte buffers), cut at a char boundary.
fn truncate(s: &str, n: usize) -> String {
    let mut end = s.len().min(n);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The output tensors in write order, each with the type the recipe gives it, plus the input
/// index of each and the number of fallbacks (`llama_model_quantize_impl`'s first loop).
pub fn plan_tensors(
    file: &GgufFile,
    params: &QuantizeParams,
) -> Result<(Vec<TensorPlan>, Vec<usize>, usize), QuantizeError> {
    let path = file.path().to_path_buf();
    let facts = model_facts(file)?;

    let mut order: Vec<usize> = (0..file.tensors().len()).collect();
    order.sort_by(|&a, &b| weight_order(&file.tensors()[a].name, &file.tensors()[b].name));

    let opts = RecipeOptions {
        ftype: params.ftype,
        pure: params.pure,
        overrides: compile_overrides(&params.overrides)?,
        has_imatrix: params.imatrix.is_some(),
    };
    let names = order.iter().map(|&i| file.tensors()[i].name.as_str());
    let mut recipe = Recipe::new(opts, facts, names);

    let mut plans = Vec::with_capacity(order.len());
    for &i in &order {
        let t = &file.tensors()[i];
        let to = recipe
            .tensor_type(&t.name, &t.dims, t.ty)
            .map_err(|cause| QuantizeError::Recipe {
                file: path.clone(),
                cause,
            })?;
        if to != t.ty && t.ty.is_quantized() && !params.allow_requantize {
            return Err(QuantizeError::Requantize {
                file: path,
                tensor: t.name.clone(),
                ty: t.ty,
            });
        }
        plans.push(TensorPlan {
            name: t.name.clone(),
            from: t.ty,
            to,
            dims: t.dims.clone(),
        });
    }

    Ok((plans, order, recipe.n_fallback))
}

/// Quantize `input` to `output` like `llama-quantize input output TYPE`. The output appears
/// only when complete; on error no file named `output` is left.
pub fn quantize_file(
    input: &Path,
    output: &Path,
    params: &QuantizeParams,
    progress: &ProgressBar,
) -> Result<QuantizeSummary, QuantizeError> {
    let file = GgufFile::open(input)?;
    let path = file.path().to_path_buf();
    let (plans, order, n_fallback) = plan_tensors(&file, params)?;
    // Metadata: everything of the input, then quantization version and file type re-added
    // at the end (gguf_set_val_* removes an existing key first), split keys dropped.
    let mut metadata: Vec<(String, Value)> = file
        .header()
        .metadata
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "general.quantization_version"
                    | "general.file_type"
                    | "split.no"
                    | "split.count"
                    | "split.tensors.count"
            )
        })
        .cloned()
        .collect();
    metadata.push((
        "general.quantization_version".into(),
        Value::U32(QUANTIZATION_VERSION),
    ));
    metadata.push(("general.file_type".into(), Value::U32(params.ftype.id())));
    if let Some((im, name)) = &params.imatrix {
        // the tool's kv overrides (quantize.cpp), applied after the file type
        let mut set = |k: &str, v: Value| {
            metadata.retain(|(key, _)| key != k);
            metadata.push((k.to_string(), v));
        };
        set("quantize.imatrix.file", Value::String(truncate(name, 127)));
        if let Some(d) = im.datasets.first() {
            set("quantize.imatrix.dataset", Value::String(truncate(d, 127)));
        }
        set(
            "quantize.imatrix.entries_count",
            Value::U32(im.data.len() as u32),
        );
        if im.chunk_count > 0 {
            set("quantize.imatrix.chunks_count", Value::U32(im.chunk_count));
        }
    }

    let infos: Vec<TensorInfoOut> = plans
        .iter()
        .map(|p| TensorInfoOut {
            name: p.name.clone(),
            ty: p.to,
            dims: p.dims.clone(),
        })
        .collect();
    let alignment = file.header().alignment;
    let mut writer = GgufWriter::create(output, 3, alignment, &metadata, &infos)?;

    let total: u64 = order.iter().map(|&i| file.tensors()[i].size).sum();
    progress.set_length(total);
    let (mut bytes_in, mut bytes_out) = (0u64, 0u64);
    let mut f32_buf: Vec<f32> = Vec::new();
    for (plan, &i) in plans.iter().zip(&order) {
        let t = &file.tensors()[i];
        progress.set_message(format!("{} → {}", plan.name, plan.to));
        let data = file.tensor_data(t);
        bytes_in += data.len() as u64;
        let replaced = params.replacements.get(&plan.name);
        if let Some(Replacement::Quantized { ty, bytes }) = replaced {
            if *ty != plan.to {
                return Err(QuantizeError::Replacement {
                    file: path.clone(),
                    tensor: plan.name.clone(),
                    why: format!("calibrated as {ty}, the recipe says {}", plan.to),
                });
            }
            writer.write_tensor_data(&plan.name, bytes)?;
            bytes_out += bytes.len() as u64;
        } else if plan.to == t.ty && replaced.is_none() {
            writer.write_tensor_data(&plan.name, data)?;
            bytes_out += data.len() as u64;
        } else {
            let qerr = |cause| QuantizeError::Quant {
                file: path.clone(),
                tensor: plan.name.clone(),
                cause,
            };
            let n = t.n_elements() as usize;
            match replaced {
                Some(Replacement::Values(v)) if v.len() == n => f32_buf.clone_from(v),
                Some(Replacement::Values(v)) => {
                    return Err(QuantizeError::Replacement {
                        file: path.clone(),
                        tensor: plan.name.clone(),
                        why: format!("{} calibrated values for {n} elements", v.len()),
                    })
                }
                _ => {
                    f32_buf.resize(n, 0.0);
                    quant::dequantize(t.ty, data, &mut f32_buf).map_err(qerr)?;
                }
            }
            let ncols = t.dims.first().copied().unwrap_or(1) as usize;
            let rows_per_expert = t.dims.get(1).copied().unwrap_or(1) as usize;
            let n_expert = t.dims.get(2).copied().unwrap_or(1) as usize;
            let weights = params.imatrix.as_ref().map(|(im, _)| &im.data);
            let imatrix = match weights.and_then(|m| m.get(&plan.name)) {
                Some(w) if w.len() == ncols * n_expert => Some(w.as_slice()),
                Some(w) if plan.name != "token_embd.weight" => {
                    return Err(QuantizeError::ImatrixSize {
                        file: path.clone(),
                        tensor: plan.name.clone(),
                        got: w.len(),
                        want: ncols * n_expert,
                    })
                }
                _ => None,
            };
            let out = quantize_rows(
                plan.to,
                &f32_buf,
                ncols,
                rows_per_expert,
                imatrix,
                params.threads,
            )
            .map_err(qerr)?;
            writer.write_tensor_data(&plan.name, &out)?;
            bytes_out += out.len() as u64;
        }
        progress.inc(data.len() as u64);
    }
    writer.finish()?;
    Ok(QuantizeSummary {
        tensors: plans,
        bytes_in,
        bytes_out,
        n_fallback,
    })
}
