//! The calibration driver: runs the model over calibration text one layer at a time, with the
//! hidden states of every chunk kept in memory, so each layer is calibrated on the inputs the
//! already-calibrated (quantized) previous layers produce — sequential GPTQ/AWQ. Per layer:
//! 1. a statistics pass (observer on every matmul input of the layer: importance sums, Hessians,
//!    activation samples);
//! 2. AWQ scales folded into the previous op, then clipping (if asked);
//! 3. each matrix quantized (GPTQ, or ggml's importance-weighted quantizer) and swapped into the
//!    model;
//! 4. an advance pass through the quantized layer gives the next layer's inputs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ggml_compat::GgmlType;
use indicatif::ProgressBar;

use super::awq::{self, AwqOptions, Target, TargetMut};
use super::gptq::{self, GptqOptions, Prepared};
use super::hessian::Hessian;
use crate::convert::imatrix::Imatrix;
use crate::convert::quantize::{quantize_rows, Replacement, TensorPlan};
use crate::model::{Model, ModelError};
use crate::tokenizer::Tokenizer;

/// How weights are quantized (`--method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// ggml's reference quantization, no calibration.
    Rtn,
    /// ggml's importance-weighted quantization with an importance matrix collected as
    /// llama-imatrix does (`eval::imatrix`, not this driver).
    Imatrix,
    /// GPTQ with ggml blocks as groups.
    Gptq,
    /// AWQ scales and clipping, then importance-weighted quantization.
    Awq,
    /// AWQ scales and clipping, then GPTQ.
    AwqGptq,
}

impl Method {
    pub const NAMES: &'static str = "rtn, imatrix, gptq, awq, awq+gptq";

    pub fn from_name(s: &str) -> Option<Method> {
        Some(match s.to_ascii_lowercase().as_str() {
            "rtn" => Method::Rtn,
            "imatrix" => Method::Imatrix,
            "gptq" => Method::Gptq,
            "awq" => Method::Awq,
            "awq+gptq" | "awq-gptq" => Method::AwqGptq,
            _ => return None,
        })
    }

    fn awq(self) -> bool {
        matches!(self, Method::Awq | Method::AwqGptq)
    }

    fn gptq(self) -> bool {
        matches!(self, Method::Gptq | Method::AwqGptq)
    }
}

/// What can go wrong while calibrating.
#[derive(Debug, thiserror::Error)]
pub enum CalibError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{0}")]
    Tokenizer(String),
    #[error("{file}: {tokens} tokens is less than one chunk of {n_ctx} (use a smaller -c)")]
    TooShort {
        file: String,
        tokens: usize,
        n_ctx: usize,
    },
    #[error("tensor '{tensor}': {why}")]
    Tensor { tensor: String, why: String },
}

/// Calibration settings.
#[derive(Clone, Debug)]
pub struct CalibOptions {
    pub method: Method,
    /// Tokens per chunk (`-c`).
    pub n_ctx: usize,
    /// Chunks of the text used (`--chunks`).
    pub chunks: usize,
    pub threads: usize,
    /// Activation rows kept per layer input for AWQ's searches.
    pub awq_samples: usize,
    /// GPTQ's damping, as a fraction of the Hessian's mean diagonal.
    pub gptq_damp: f64,
}

/// What calibration decided, for the quantizer.
pub struct Calibration {
    /// Tensors to write instead of the input's (quantized matrices, AWQ-folded norms).
    pub replacements: HashMap<String, Replacement>,
    /// The importance matrix of the calibration text (for the tensors not replaced).
    pub imatrix: Imatrix,
    /// Tokens evaluated per pass.
    pub tokens: usize,
    pub seconds: f64,
    /// One line per layer: what was done and the proxy losses.
    pub log: Vec<String>,
}

/// The layer input a weight reads (weights sharing an input share their statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Input {
    /// attn_norm output → attn_q, attn_k, attn_v
    Attn,
    /// attention output → attn_output
    AttnOut,
    /// ffn_norm output → ffn_gate, ffn_up
    Ffn,
    /// gated activation → ffn_down
    Down,
}

const WEIGHTS: [(&str, Input); 7] = [
    ("attn_q", Input::Attn),
    ("attn_k", Input::Attn),
    ("attn_v", Input::Attn),
    ("attn_output", Input::AttnOut),
    ("ffn_gate", Input::Ffn),
    ("ffn_up", Input::Ffn),
    ("ffn_down", Input::Down),
];

/// Statistics of one layer input over the calibration text.
struct InputStats {
    cols: usize,
    /// Σ x² per column (llama-imatrix's `in_sum2`) and rows seen.
    sum_sq: Vec<f64>,
    rows: u64,
    hessian: Option<Hessian>,
    /// Every `stride`-th activation row (AWQ), and the rows passed so far.
    samples: Vec<f32>,
    stride: usize,
    seen: usize,
}

impl InputStats {
    fn add(&mut self, x: &[f32], n: usize) {
        for row in x.chunks_exact(self.cols).take(n) {
            for (s, &v) in self.sum_sq.iter_mut().zip(row) {
                *s += (v as f64) * (v as f64);
            }
            if self.stride > 0 && self.seen.is_multiple_of(self.stride) {
                self.samples.extend_from_slice(row);
            }
            self.seen += 1;
        }
        self.rows += n as u64;
        if let Some(h) = &mut self.hessian {
            h.add(&x[..n * self.cols]);
        }
    }

    /// Mean x² per column, as llama-quantize reads an importance matrix.
    fn importance(&self) -> Vec<f32> {
        let n = self.rows.max(1) as f64;
        self.sum_sq.iter().map(|&s| (s / n) as f32).collect()
    }
}

/// The observer's view: which layer is collected, and into what.
struct Collector {
    prefix: String,
    stats: HashMap<Input, InputStats>,
    hessians: bool,
    stride: usize,
}

fn input_of(name: &str, prefix: &str) -> Option<Input> {
    let rest = name.strip_prefix(prefix)?.strip_suffix(".weight")?;
    WEIGHTS.iter().find(|(w, _)| *w == rest).map(|&(_, i)| i)
}

/// The token put in place of each chunk's first one: BOS, when the model adds one.
pub fn chunk_bos(tok: &Tokenizer) -> Option<u32> {
    tok.bos().filter(|_| tok.add_bos())
}

/// Tokenizes `text` and cuts it into chunks as llama-imatrix does (first token of each chunk
/// replaced by BOS when the model adds one).
pub fn chunks(
    tok: &Tokenizer,
    text: &str,
    file: &str,
    n_ctx: usize,
    max_chunks: usize,
) -> Result<Vec<Vec<u32>>, CalibError> {
    let tokens = tok.encode(text, tok.add_bos(), false);
    let n = (tokens.len() / n_ctx).min(max_chunks);
    if n == 0 {
        return Err(CalibError::TooShort {
            file: file.to_string(),
            tokens: tokens.len(),
            n_ctx,
        });
    }
    let bos = chunk_bos(tok);
    Ok((0..n)
        .map(|c| {
            let mut chunk = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
            if let Some(b) = bos {
                chunk[0] = b;
            }
            chunk
        })
        .collect())
}

/// Calibrates `model` (loaded from the file being quantized) on `chunks`, for the output types
/// in `plans` (methods gptq, awq, awq+gptq). The model's matrices are replaced by their quantized versions as it goes.
pub fn calibrate(
    model: &mut Model,
    chunks: &[Vec<u32>],
    plans: &[TensorPlan],
    opts: &CalibOptions,
    progress: &ProgressBar,
) -> Result<Calibration, CalibError> {
    let t0 = Instant::now();
    let types: HashMap<&str, GgmlType> = plans.iter().map(|p| (p.name.as_str(), p.to)).collect();
    let n_ctx = chunks.first().map_or(0, Vec::len);
    let n_tokens = chunks.len() * n_ctx;
    let mut state = model.new_state(n_ctx);
    let mut hidden: Vec<Vec<f32>> = Vec::with_capacity(chunks.len());
    for c in chunks {
        model.begin(&mut state, c)?;
        hidden.push(state.hidden().to_vec());
    }
    let n_layer = model.config.n_layer;
    progress.set_length((n_layer * 2 * chunks.len()) as u64);
    let mut out = Calibration {
        replacements: HashMap::new(),
        imatrix: Imatrix {
            datasets: vec![],
            chunk_count: chunks.len() as u32,
            ..Default::default()
        },
        tokens: n_tokens,
        seconds: 0.0,
        log: Vec::new(),
    };
    let stride = if opts.method.awq() {
        n_tokens.div_ceil(opts.awq_samples.max(1))
    } else {
        0
    };
    for il in 0..n_layer {
        // 1. statistics of the layer's inputs
        let collector = Arc::new(Mutex::new(Collector {
            prefix: format!("blk.{il}."),
            stats: HashMap::new(),
            hessians: opts.method.gptq(),
            stride,
        }));
        let sink = Arc::clone(&collector);
        model.set_observer(Some(Box::new(move |name, x, n| {
            let mut c = sink.lock().unwrap_or_else(|e| e.into_inner());
            let Some(input) = input_of(name, &c.prefix) else {
                return;
            };
            // weights sharing an input see it once
            if matches!(
                name.rsplit('.').nth(1),
                Some("attn_k" | "attn_v" | "ffn_up")
            ) {
                return;
            }
            let cols = x.len() / n.max(1);
            let (hessians, stride) = (c.hessians, c.stride);
            c.stats
                .entry(input)
                .or_insert_with(|| InputStats {
                    cols,
                    sum_sq: vec![0.0; cols],
                    rows: 0,
                    hessian: hessians.then(|| Hessian::new(cols)),
                    samples: Vec::new(),
                    stride,
                    seen: 0,
                })
                .add(x, n);
        })));
        progress.set_message(format!("layer {il}/{n_layer}: statistics"));
        for h in &hidden {
            model.set_hidden(&mut state, h);
            model.forward_layer(&mut state, il)?;
            progress.inc(1);
        }
        model.set_observer(None);
        let stats = std::mem::take(&mut collector.lock().unwrap_or_else(|e| e.into_inner()).stats);
        for &(w, input) in &WEIGHTS {
            if let Some(s) = stats.get(&input) {
                out.imatrix
                    .data
                    .insert(format!("blk.{il}.{w}.weight"), s.importance());
            }
        }

        // 2.-3. scales, clipping, quantization
        progress.set_message(format!("layer {il}/{n_layer}: quantizing"));
        let line = quantize_layer(model, il, &stats, &types, opts, &mut out)?;
        out.log.push(line);

        // 4. advance through the (quantized) layer
        progress.set_message(format!("layer {il}/{n_layer}: advancing"));
        for h in hidden.iter_mut() {
            model.set_hidden(&mut state, h);
            model.forward_layer(&mut state, il)?;
            h.copy_from_slice(state.hidden());
            progress.inc(1);
        }
    }
    out.seconds = t0.elapsed().as_secs_f64();
    Ok(out)
}

/// AWQ (if asked), then quantization of every matrix of layer `il`, swapped into the model.
fn quantize_layer(
    model: &mut Model,
    il: usize,
    stats: &HashMap<Input, InputStats>,
    types: &HashMap<&str, GgmlType>,
    opts: &CalibOptions,
    out: &mut Calibration,
) -> Result<String, CalibError> {
    let name = |w: &str| format!("blk.{il}.{w}.weight");
    let ty_of = |w: &str| -> Result<GgmlType, CalibError> {
        types
            .get(name(w).as_str())
            .copied()
            .ok_or_else(|| CalibError::Tensor {
                tensor: name(w),
                why: "not in the output plan".into(),
            })
    };
    // f32 weights of the layer, as the model holds them now
    let mut w: HashMap<&str, Vec<f32>> = HashMap::new();
    for &(key, _) in &WEIGHTS {
        let m = model.weights.layers[il]
            .matrix_mut(key)
            .expect("WEIGHTS names layer matrices");
        w.insert(key, m.to_f32(&model.file));
    }
    let mut line = format!("layer {il}:");
    // per input: the AWQ scale of each column (1 where none)
    let mut scale: HashMap<Input, Vec<f32>> = HashMap::new();
    if opts.method.awq() {
        let c = model.config.clone();
        let awq_opts = AwqOptions {
            max_samples: opts.awq_samples,
            ..AwqOptions::default()
        };
        let groups: [(Input, &[&str]); 4] = [
            (Input::Attn, &["attn_q", "attn_k", "attn_v"]),
            (Input::AttnOut, &["attn_output"]),
            (Input::Ffn, &["ffn_gate", "ffn_up"]),
            (Input::Down, &["ffn_down"]),
        ];
        for (input, members) in groups {
            let Some(st) = stats.get(&input) else {
                continue;
            };
            let cols = st.cols;
            // o_proj columns fold into v rows: heads sharing a kv head share a scale
            let tie: Option<Vec<usize>> = (input == Input::AttnOut).then(|| {
                let ratio = c.n_head / c.n_head_kv.max(1);
                (0..cols)
                    .map(|j| (j / c.head_dim_v / ratio) * c.head_dim_v + j % c.head_dim_v)
                    .collect()
            });
            let mut targets = Vec::new();
            for &m in members {
                let rows = w[m].len() / cols;
                targets.push((m, rows, ty_of(m)?));
            }
            let s = {
                let ts: Vec<Target> = targets
                    .iter()
                    .map(|&(m, rows, ty)| Target {
                        name: m,
                        w: &w[m],
                        rows,
                        ty,
                    })
                    .collect();
                awq::search_scales(&st.samples, cols, &ts, tie.as_deref(), &awq_opts).map_err(
                    |e| CalibError::Tensor {
                        tensor: name(members[0]),
                        why: format!("AWQ: {e}"),
                    },
                )?
            };
            line += &format!(
                " {:?} α={:.2} loss {:.3e}→{:.3e};",
                input, s.alpha, s.loss_rtn, s.loss_best
            );
            for &(m, rows, _) in &targets {
                awq::scale_cols(w.get_mut(m).expect("loaded above"), rows, cols, &s.s);
            }
            // the previous op absorbs 1/s
            let l = &mut model.weights.layers[il];
            match input {
                Input::Attn => awq::fold_into_norm(&mut l.attn_norm, &s.s),
                Input::Ffn => awq::fold_into_norm(&mut l.ffn_norm, &s.s),
                Input::AttnOut => {
                    let v = w.get_mut("attn_v").expect("loaded above");
                    let ratio = c.n_head / c.n_head_kv.max(1);
                    let per_row: Vec<f32> = (0..c.n_embd_v())
                        .map(|r| s.s[(r / c.head_dim_v) * ratio * c.head_dim_v + r % c.head_dim_v])
                        .collect();
                    awq::fold_into_rows(v, per_row.len(), c.n_embd, &per_row);
                }
                Input::Down => {
                    let up = w.get_mut("ffn_up").expect("loaded above");
                    awq::fold_into_rows(up, s.s.len(), c.n_embd, &s.s);
                }
            }
            scale.insert(input, s.s);
        }
        let l = &model.weights.layers[il];
        for (key, v) in [("attn_norm", &l.attn_norm), ("ffn_norm", &l.ffn_norm)] {
            out.replacements
                .insert(name(key), Replacement::Values(v.clone()));
        }
        if awq_opts.clip {
            // as llm-awq's auto_clip: not q/k, whose dot products attention amplifies
            for &(m, input) in WEIGHTS
                .iter()
                .filter(|(m, _)| !matches!(*m, "attn_q" | "attn_k"))
            {
                let st = &stats[&input];
                let s = scale.get(&input);
                let x: Vec<f32> = match s {
                    Some(s) => st
                        .samples
                        .chunks_exact(st.cols)
                        .flat_map(|row| row.iter().zip(s).map(|(v, s)| v / s))
                        .collect(),
                    None => st.samples.clone(),
                };
                let ty = ty_of(m)?;
                let wm = w.get_mut(m).expect("loaded above");
                let rows = wm.len() / st.cols;
                let mut t = TargetMut {
                    name: m,
                    w: wm,
                    rows,
                    ty,
                };
                awq::search_clip(&x, st.cols, &mut t, &awq_opts).map_err(|e| {
                    CalibError::Tensor {
                        tensor: name(m),
                        why: format!("AWQ clip: {e}"),
                    }
                })?;
            }
        }
    }

    // quantize each matrix and swap it in
    let gptq_opts = GptqOptions {
        damp: opts.gptq_damp,
        ..GptqOptions::default()
    };
    let mut prepared: HashMap<Input, Prepared> = HashMap::new();
    for &(m, input) in &WEIGHTS {
        let ty = ty_of(m)?;
        let st = stats.get(&input).ok_or_else(|| CalibError::Tensor {
            tensor: name(m),
            why: "the calibration pass never reached it".into(),
        })?;
        let cols = st.cols;
        let wm = &w[m];
        let rows = wm.len() / cols;
        let s = scale.get(&input);
        // after scaling, the input is x / s
        let importance: Vec<f32> = match s {
            Some(s) => st
                .importance()
                .iter()
                .zip(s)
                .map(|(v, s)| v / (s * s))
                .collect(),
            None => st.importance(),
        };
        let mut bytes = None;
        if opts.method.gptq() {
            // one factorization per input, shared by the weights reading it
            if let std::collections::hash_map::Entry::Vacant(e) = prepared.entry(input) {
                let h = st.hessian.as_ref().expect("collected for gptq");
                // after scaling, the input is x / s: H' = diag(1/s) H diag(1/s)
                let scaled = s.map(|s| scaled_hessian(h, s));
                let p = Prepared::new(scaled.as_ref().unwrap_or(h), &gptq_opts).map_err(|e| {
                    CalibError::Tensor {
                        tensor: name(m),
                        why: e.to_string(),
                    }
                })?;
                e.insert(p);
            }
            match gptq::quantize_prepared(wm, rows, cols, &prepared[&input], ty, &gptq_opts) {
                Ok(r) => {
                    line += &format!(" {m} gptq(damp {:.3}, loss {:.3e});", r.damp_used, r.loss);
                    bytes = Some(r.bytes);
                }
                Err(gptq::GptqError::Unsupported(_)) => {
                    line += &format!(" {m} {ty}: imatrix (no GPTQ for the type);");
                }
                Err(e) => {
                    return Err(CalibError::Tensor {
                        tensor: name(m),
                        why: format!("GPTQ: {e}"),
                    })
                }
            }
        }
        let bytes =
            match bytes {
                Some(b) => b,
                None => quantize_rows(ty, wm, cols, rows, Some(&importance), opts.threads)
                    .map_err(|e| CalibError::Tensor {
                        tensor: name(m),
                        why: e.to_string(),
                    })?,
            };
        let matrix = model.weights.layers[il]
            .matrix_mut(m)
            .expect("WEIGHTS names layer matrices");
        matrix
            .replace(ty, bytes.clone())
            .map_err(|e| CalibError::Tensor {
                tensor: name(m),
                why: e.to_string(),
            })?;
        out.replacements
            .insert(name(m), Replacement::Quantized { ty, bytes });
        out.imatrix.data.insert(name(m), importance);
    }
    Ok(line)
}

/// The Hessian of the inputs `x / s`: `diag(1/s) H diag(1/s)`.
fn scaled_hessian(h: &Hessian, s: &[f32]) -> Hessian {
    let mut out = h.clone();
    let n = h.n;
    for (i, row) in out.sum.chunks_exact_mut(n).enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v /= s[i] as f64 * s[j] as f64;
        }
    }
    out
}

/// Peak resident memory of this process so far (VmHWM), in bytes, where the OS tells.
pub fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// What [`load`] gives: the model, the chunks, and the token that replaced each chunk's first.
pub type Loaded = (Model, Vec<Vec<u32>>, Option<u32>);

/// Loads the model in `path` for calibration and cuts `text` into chunks; also returns the
/// token each chunk starts with in place of its first ([`chunk_bos`]).
pub fn load(
    path: &Path,
    text: &str,
    text_name: &str,
    opts: &CalibOptions,
) -> Result<Loaded, CalibError> {
    let model = Model::load(path, opts.threads)?;
    let tok =
        Tokenizer::from_gguf(&model.file).map_err(|e| CalibError::Tokenizer(e.to_string()))?;
    let chunks = chunks(&tok, text, text_name, opts.n_ctx, opts.chunks)?;
    Ok((model, chunks, chunk_bos(&tok)))
}
