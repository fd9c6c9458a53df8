//! `kiln convert`: a Hugging Face folder → one GGUF file, as llama.cpp's
//! `convert_hf_to_gguf.py` writes it (`ModelBase.prepare_tensors` + `prepare_metadata`), one
//! tensor in memory at a time, into a temporary file renamed when complete.
//!
//! Output types the script has (f32, f16, bf16, q8_0, tq1_0, tq2_0) follow the script. Every
//! other llama-quantize type gives exactly what `convert --outtype f16` followed by
//! `kiln quantize` would: values rounded through f16, then the recipe, in llama-quantize's
//! tensor and metadata order.

use std::path::Path;

use ggml_compat::gguf::{GgufWriter, TensorInfoOut, Value};
use ggml_compat::GgmlType;
use indicatif::ProgressBar;

use super::arch::{self, Arch, Expected};
use super::gemma3;
use super::hf::{self, Hparams};
use super::quantize::{quantize_rows, QUANTIZATION_VERSION};
use super::recipe::{weight_order, Ftype, ModelFacts, Recipe, RecipeOptions};
use super::safetensors::{Checkpoint, Dtype, StTensor};
use super::{read_json, ConvertError};

/// Options of `kiln convert`.
#[derive(Clone, Debug)]
pub struct ConvertParams {
    pub outtype: Ftype,
    pub threads: usize,
}

/// What was written.
#[derive(Clone, Debug)]
pub struct ConvertSummary {
    pub n_tensors: usize,
    pub bytes_out: u64,
}

/// File types `convert_hf_to_gguf.py` writes itself.
fn script_type(ft: Ftype) -> Option<GgmlType> {
    Some(match ft {
        Ftype::F32 => GgmlType::F32,
        Ftype::F16 => GgmlType::F16,
        Ftype::BF16 => GgmlType::BF16,
        Ftype::Q8_0 => GgmlType::Q8_0,
        Ftype::TQ1_0 => GgmlType::TQ1_0,
        Ftype::TQ2_0 => GgmlType::TQ2_0,
        _ => return None,
    })
}

struct Planned<'a> {
    /// `None` for a tensor the converter computes (llama3's `rope_freqs`).
    src: Option<&'a StTensor>,
    generated: Vec<f32>,
    exp: Expected,
    ty: GgmlType,
    /// ggml order
    dims: Vec<u64>,
}

impl Planned<'_> {
    fn n_elements(&self) -> u64 {
        self.exp.shape.iter().product()
    }

    fn source_bytes(&self) -> u64 {
        self.n_elements() * self.src.map_or(4, |t| t.dtype.size() as u64)
    }
}

/// The per-tensor type of the script (`prepare_tensors`): 1-D and norms F32, the token
/// embedding / output F16 for ternary types, a row not a whole number of blocks F16.
fn script_tensor_type(ft: GgmlType, gguf_name: &str, dims: &[u64]) -> GgmlType {
    if dims.len() <= 1 || gguf_name.ends_with("_norm.weight") || !gguf_name.ends_with(".weight") {
        return GgmlType::F32;
    }
    let mut ty = ft;
    let emb = matches!(gguf_name, "token_embd.weight" | "output.weight");
    if emb && matches!(ft, GgmlType::TQ1_0 | GgmlType::TQ2_0) {
        ty = GgmlType::F16;
    }
    if !dims[0].is_multiple_of(ty.block_size() as u64) {
        ty = GgmlType::F16;
    }
    ty
}

/// Convert the Hugging Face folder `dir` to `output`. On error no file named `output` exists.
pub fn convert_dir(
    dir: &Path,
    output: &Path,
    params: &ConvertParams,
    progress: &ProgressBar,
) -> Result<ConvertSummary, ConvertError> {
    let cfg_path = dir.join("config.json");
    if !cfg_path.is_file() {
        return Err(ConvertError::Missing {
            dir: dir.to_path_buf(),
            what: "config.json",
        });
    }
    let cfg = read_json(&cfg_path)?;
    let mut hp = Hparams::from_config(&cfg_path, &cfg)?;
    let arch = Arch::from_hf(&hp.architecture).ok_or_else(|| ConvertError::Architecture {
        name: hp.architecture.clone(),
        supported: Arch::SUPPORTED,
    })?;
    if arch == Arch::Gemma3 {
        gemma3::adjust_hparams(&cfg, &mut hp);
    }
    let ck = Checkpoint::open_dir(dir)?;
    let has_lm_head = ck.tensors().contains_key("lm_head.weight");
    let expected = arch::expected_tensors(arch, &hp, has_lm_head);

    // Match checkpoint and expectation both ways; report everything wrong at once.
    let mut plan: Vec<Planned> = Vec::new();
    let (mut extra, mut wrong) = (Vec::new(), Vec::new());
    for (name, t) in ck.tensors() {
        if name.ends_with(".rotary_emb.inv_freq")
            || name.ends_with(".attention.masked_bias")
            || name.ends_with(".attention.bias")
        {
            continue;
        }
        match expected.iter().find(|e| &e.hf == name) {
            None => extra.push(name.clone()),
            Some(e) if e.shape != t.shape && !oov_rows(arch, e, &t.shape) => wrong.push(format!(
                "{name}: shape {:?} in {}, config.json implies {:?}",
                t.shape,
                ck.path_of(t).display(),
                e.shape
            )),
            Some(e) => plan.push(Planned {
                src: Some(t),
                generated: Vec::new(),
                exp: e.clone(),
                ty: GgmlType::F32,
                dims: e.shape.iter().rev().copied().collect(),
            }),
        }
    }
    let missing: Vec<String> = expected
        .iter()
        .filter(|e| !ck.tensors().contains_key(&e.hf))
        .map(|e| e.hf.clone())
        .collect();
    if !extra.is_empty() || !missing.is_empty() || !wrong.is_empty() {
        return Err(ConvertError::Tensors {
            dir: dir.to_path_buf(),
            missing,
            extra,
            wrong,
        });
    }

    // LlamaModel.generate_extra_tensors: llama3 rope scaling → rope_freqs, written first
    if let Some(factors) = hp.rope_scaling.as_ref().and_then(|r| r.llama3_factors(&hp)) {
        let n = factors.len() as u64;
        plan.insert(
            0,
            Planned {
                src: None,
                generated: factors,
                exp: Expected {
                    hf: "(rope_freqs)".into(),
                    gguf: "rope_freqs.weight".into(),
                    shape: vec![n],
                    transform: arch::Transform::None,
                },
                ty: GgmlType::F32,
                dims: vec![n],
            },
        );
    }

    // Types.
    let script = script_type(params.outtype);
    let mut recipe_order = false;
    if let Some(ft) = script {
        for p in &mut plan {
            p.ty = script_tensor_type(ft, &p.exp.gguf, &p.dims);
        }
    } else {
        // as convert --outtype f16, then llama-quantize in its own order
        for p in &mut plan {
            p.ty = script_tensor_type(GgmlType::F16, &p.exp.gguf, &p.dims);
        }
        plan.sort_by(|a, b| weight_order(&a.exp.gguf, &b.exp.gguf));
        let facts = ModelFacts {
            arch: arch.gguf_name().into(),
            n_layer: hp.n_layer as u32,
            n_head: hp.n_head as u32,
            n_head_kv: hp.n_head_kv as u32,
            n_expert: 0,
        };
        let opts = RecipeOptions {
            ftype: params.outtype,
            pure: false,
            overrides: Vec::new(),
            has_imatrix: false,
        };
        let mut recipe = Recipe::new(opts, facts, plan.iter().map(|p| p.exp.gguf.as_str()));
        for p in &mut plan {
            p.ty = recipe
                .tensor_type(&p.exp.gguf, &p.dims, p.ty)
                .map_err(|e| ConvertError::Other(e.to_string()))?;
        }
        recipe_order = true;
    }

    let total_params: u64 = plan.iter().map(|p| p.n_elements()).sum();
    let metadata = build_metadata(
        dir,
        (&cfg_path, &cfg),
        arch,
        &hp,
        params.outtype,
        total_params,
        recipe_order,
    )?;

    let infos: Vec<TensorInfoOut> = plan
        .iter()
        .map(|p| TensorInfoOut {
            name: p.exp.gguf.clone(),
            ty: p.ty,
            dims: p.dims.clone(),
        })
        .collect();
    let mut writer = GgufWriter::create(output, 3, 32, &metadata, &infos)?;
    progress.set_length(plan.iter().map(Planned::source_bytes).sum());
    let mut buf = Vec::new();
    let mut bytes_out = 0u64;
    for p in &plan {
        progress.set_message(format!("{} → {} {}", p.exp.hf, p.exp.gguf, p.ty));
        match p.src {
            Some(t) => ck.read_f32(t, &mut buf),
            None => buf.clone_from(&p.generated),
        }
        // Gemma3Model.modify_tensors: `embed_tokens[:n_vocab]` drops out-of-vocabulary rows
        buf.truncate(p.n_elements() as usize);
        let rows = p.exp.shape.first().copied().unwrap_or(1) as usize;
        let mut data = arch::apply(p.exp.transform, &buf, rows);
        if p.exp.transform == arch::Transform::NormShift
            && p.src.is_some_and(|t| t.dtype == Dtype::F16)
        {
            // the script adds 1.0 to the float16 tensor itself: the sum is rounded to f16
            for v in &mut data {
                *v = half::f16::from_f32(*v).to_f32();
            }
        }
        if !recipe_order || p.ty == GgmlType::F32 {
            // the script's own types
        } else {
            // through the f16 file llama-quantize would have read
            for v in &mut data {
                *v = half::f16::from_f32(*v).to_f32();
            }
        }
        let ncols = p.dims.first().copied().unwrap_or(1) as usize;
        let bytes = if p.ty == GgmlType::F32 {
            data.iter().flat_map(|v| v.to_le_bytes()).collect()
        } else {
            quantize_rows(p.ty, &data, ncols, 1, None, params.threads)
                .map_err(|e| ConvertError::Other(format!("tensor '{}': {e}", p.exp.hf)))?
        };
        writer.write_tensor_data(&p.exp.gguf, &bytes)?;
        bytes_out += bytes.len() as u64;
        progress.inc(p.source_bytes());
    }
    writer.finish()?;
    Ok(ConvertSummary {
        n_tensors: plan.len(),
        bytes_out,
    })
}

/// Gemma 3's token embedding may have more rows than the vocabulary (the script keeps the
/// first `vocab_size`).
fn oov_rows(arch: Arch, e: &Expected, shape: &[u64]) -> bool {
    arch == Arch::Gemma3
        && e.gguf == "token_embd.weight"
        && shape.len() == 2
        && shape[1] == e.shape[1]
        && shape[0] > e.shape[0]
}

/// All metadata, in the order the script writes it (or, for recipe types, as llama-quantize
/// rewrites it: quantization version and file type moved to the end).
fn build_metadata(
    dir: &Path,
    (cfg_path, cfg): (&Path, &serde_json::Value),
    arch: Arch,
    hp: &Hparams,
    ftype: Ftype,
    total_params: u64,
    recipe_order: bool,
) -> Result<Vec<(String, Value)>, ConvertError> {
    let a = arch.gguf_name();
    let dir_abs = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let folder = dir_abs
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let parts = hf::model_id_components(&folder, total_params);
    let u32v = |v: u64| Value::U32(v as u32);
    let mut md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(a.into())),
        ("general.type".into(), Value::String("model".into())),
        ("general.name".into(), Value::String(parts.name.clone())),
    ];
    if let Some(v) = parts.version {
        md.push(("general.version".into(), Value::String(v)));
    }
    if let Some(v) = parts.finetune {
        md.push(("general.finetune".into(), Value::String(v)));
    }
    if let Some(v) = parts.basename {
        md.push(("general.basename".into(), Value::String(v)));
    }
    let size = parts
        .size_label
        .unwrap_or_else(|| hf::size_label(total_params));
    md.push(("general.size_label".into(), Value::String(size)));
    let file_type = ("general.file_type".to_string(), Value::U32(ftype.id()));
    let qv = (
        "general.quantization_version".to_string(),
        Value::U32(QUANTIZATION_VERSION),
    );
    if arch == Arch::Gemma3 {
        md.extend(gemma3::hparam_metadata(cfg_path, cfg, hp, ftype.id())?);
        md.push(qv.clone());
        md.extend(gemma3::vocab_metadata(dir, hp.n_vocab)?);
        if recipe_order {
            md.retain(|(k, _)| k != &file_type.0 && k != &qv.0);
            md.push(qv);
            md.push(file_type);
        }
        return Ok(md);
    }
    md.push((format!("{a}.block_count"), u32v(hp.n_layer)));
    if let Some(n) = hp.n_ctx {
        md.push((format!("{a}.context_length"), u32v(n)));
    }
    md.push((format!("{a}.embedding_length"), u32v(hp.n_embd)));
    md.push((format!("{a}.feed_forward_length"), u32v(hp.n_ff)));
    md.push((format!("{a}.attention.head_count"), u32v(hp.n_head)));
    md.push((format!("{a}.attention.head_count_kv"), u32v(hp.n_head_kv)));
    if let Some(hf::RopeScaling::Linear { factor }) = hp.rope_scaling {
        md.push((
            format!("{a}.rope.scaling.type"),
            Value::String("linear".into()),
        ));
        md.push((
            format!("{a}.rope.scaling.factor"),
            Value::F32(factor as f32),
        ));
    }
    if let Some(t) = hp.rope_theta {
        md.push((format!("{a}.rope.freq_base"), Value::F32(t as f32)));
    }
    if let Some(e) = hp.rms_eps {
        md.push((
            format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(e as f32),
        ));
    }
    if hp.head_dim_explicit {
        md.push((format!("{a}.attention.key_length"), u32v(hp.head_dim)));
        md.push((format!("{a}.attention.value_length"), u32v(hp.head_dim)));
    }
    md.push(file_type.clone());
    if arch == Arch::Llama {
        // LlamaModel.set_gguf_parameters
        md.push((format!("{a}.vocab_size"), u32v(hp.n_vocab)));
        md.push((format!("{a}.rope.dimension_count"), u32v(hp.head_dim)));
    }
    md.push(qv.clone());
    md.extend(hf::bpe_vocab_metadata(dir, hp.n_vocab)?);
    if arch == Arch::Llama && hp.n_vocab == 49152 {
        // LlamaModel.set_vocab: "Apply to granite small models only"
        let key = "tokenizer.ggml.add_bos_token";
        md.retain(|(k, _)| k != key);
        md.push((key.into(), Value::Bool(false)));
    }
    if recipe_order {
        md.retain(|(k, _)| k != &file_type.0 && k != &qv.0);
        md.push(qv);
        md.push(file_type);
    }
    Ok(md)
}
