//! Activation-aware weight quantization (AWQ, Lin et al. 2023) into ggml block formats.
//!
//! The algorithm core, with no model in sight: the caller (the calibration driver) runs the model
//! layer by layer, hands over a group's input activation samples `x` (`(n, cols)` row-major) and
//! the f32 weights of the linear layers that read that input, and then folds and quantizes with
//! what comes back. Nothing here is byte-compatible with anything: AWQ only changes the f32
//! weights (and the op before them) that ggml's ordinary quantizer then writes, so the result is
//! a plain GGUF that llama.cpp runs.
//!
//! Per input channel `j`, `s_j = mean|x_j|^α`, normalised by `sqrt(max s · min s)` as llm-awq's
//! `auto_scale.py` does; `α` is searched over `{0, 1/grid, …, (grid-1)/grid}` by the output error
//! `Σ_targets ‖X Wᵀ − (X/s) Q(W·diag(s))ᵀ‖²` where `Q` is ggml's own quantize→dequantize for the
//! target's type (with the importance matrix it would be given after scaling, `mean x² / s²`).
//! `α = 0` is `s = 1`, plain RTN, so the chosen scales never do worse on the samples.
//! [`search_clip`] then follows llm-awq's `auto_clip.py`, per ggml block instead of per group.

use ggml_compat::quant::{self, QuantError};
use ggml_compat::types::GgmlType;

mod loss;

use loss::{block_errors, block_grams, par_rows, LossEval};

/// One linear layer fed by the group's input: `w` is `(rows, cols)` row-major f32; `ty` is the
/// type it will be stored in (the recipe's choice per tensor).
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub name: &'a str,
    pub w: &'a [f32],
    pub rows: usize,
    pub ty: GgmlType,
}

/// A [`Target`] whose weights [`search_clip`] rewrites in place.
#[derive(Debug)]
pub struct TargetMut<'a> {
    pub name: &'a str,
    pub w: &'a mut [f32],
    pub rows: usize,
    pub ty: GgmlType,
}

/// Search settings. The defaults are llm-awq's.
#[derive(Clone, Debug)]
pub struct AwqOptions {
    /// Number of `α` values tried, `i / grid` for `i in 0..grid` (llm-awq: 20).
    pub grid: usize,
    /// Samples (tokens) used; more are thinned evenly (llm-awq uses 512 for clipping).
    pub max_samples: usize,
    /// Whether the driver runs [`search_clip`] after scaling (read by the driver, not here).
    pub clip: bool,
    /// Clip ratios are `1 - i / clip_grid` (llm-awq: 20).
    pub clip_grid: usize,
    /// Smallest ratio tried is `1 - clip_max_shrink` (llm-awq: 0.5).
    pub clip_max_shrink: f32,
    /// Hand the quantizer the importance matrix `mean x²` of the (scaled) samples, for types whose
    /// ggml quantizer takes one. Set it as the final quantization will be run.
    pub use_imatrix: bool,
    /// Worker threads (rows are split between them; results do not depend on it). 0 = all cores.
    pub threads: usize,
}

impl Default for AwqOptions {
    fn default() -> Self {
        AwqOptions {
            grid: 20,
            max_samples: 1024,
            clip: true,
            clip_grid: 20,
            clip_max_shrink: 0.5,
            use_imatrix: true,
            threads: 0,
        }
    }
}

/// The result of [`search_scales`]. Losses are the squared output error summed over the targets'
/// outputs and averaged over the samples used.
#[derive(Clone, Debug)]
pub struct Scales {
    /// One scale per input channel, finite and > 0.
    pub s: Vec<f32>,
    /// The exponent chosen (0 = plain RTN).
    pub alpha: f32,
    /// Loss with `s = 1`.
    pub loss_rtn: f64,
    /// Loss with `s`.
    pub loss_best: f64,
}

/// The result of [`search_clip`]. Losses as in [`Scales`], for this one target.
#[derive(Clone, Debug)]
pub struct ClipStats {
    pub loss_before: f64,
    pub loss_after: f64,
    /// Blocks in the tensor and blocks whose range was shrunk.
    pub blocks: usize,
    pub blocks_clipped: usize,
    /// Rows whose per-block choices made the whole row's output worse, put back unclipped.
    pub rows_reverted: usize,
}

/// What can go wrong: shapes that do not fit, or a type the quantizer cannot write.
#[derive(Debug, thiserror::Error)]
pub enum AwqError {
    #[error("AWQ: {got} activation values are not a non-empty whole number of rows of {cols}")]
    Samples { got: usize, cols: usize },
    #[error("AWQ: tensor {name}: {got} weights, expected {rows} rows × {cols} input columns")]
    Weights {
        name: String,
        got: usize,
        rows: usize,
        cols: usize,
    },
    #[error("AWQ: tensor {name}: {cols} columns is not a whole number of {ty} blocks of {block}; choose another type for it")]
    NotWholeBlocks {
        name: String,
        ty: GgmlType,
        cols: usize,
        block: usize,
    },
    #[error("AWQ: tie has {got} class ids, the input has {cols} channels")]
    Tie { got: usize, cols: usize },
    #[error("AWQ: {got} scales for {cols} input channels")]
    ScalesLen { got: usize, cols: usize },
    #[error("AWQ: no targets to search scales for")]
    NoTargets,
    #[error("AWQ: bad option: {0}")]
    Options(&'static str),
    // The cause is in the message, so not also the `source` (it would print twice).
    #[error("AWQ: tensor {name}: {cause}")]
    Quant { name: String, cause: QuantError },
}

/// Smallest scale before normalisation (llm-awq's `clamp(min=1e-4)`).
const S_MIN: f32 = 1e-4;

/// Searches per-input-channel scales for one group of linear layers that read the same input
/// (llm-awq's `auto_scale_block` / `_search_module_scale`; no ggml counterpart).
///
/// `x`: `(n, cols)` input samples. `tie`: a class id per channel; channels of one class get one
/// scale (the class's mean `mean|x|` to the power `α`), e.g. [`gqa_tie`] for o_proj under GQA when
/// the scale is folded into v. Returns scales to apply with [`scale_cols`] on every target and to
/// fold into the previous op with [`fold_into_norm`] / [`fold_into_rows`].
pub fn search_scales(
    x: &[f32],
    cols: usize,
    targets: &[Target],
    tie: Option<&[usize]>,
    opts: &AwqOptions,
) -> Result<Scales, AwqError> {
    check_samples(x, cols)?;
    if targets.is_empty() {
        return Err(AwqError::NoTargets);
    }
    if opts.grid == 0 {
        return Err(AwqError::Options("grid must be at least 1"));
    }
    for t in targets {
        check_target(t.name, t.w.len(), t.rows, cols, t.ty)?;
    }
    if let Some(tie) = tie {
        if tie.len() != cols {
            return Err(AwqError::Tie {
                got: tie.len(),
                cols,
            });
        }
    }
    let xs = subsample(x, cols, opts.max_samples);
    let eval = LossEval::new(&xs, cols);
    let n = eval.n as f64;
    let mut mean_abs = vec![0f64; cols];
    let mut mean_sq = vec![0f64; cols];
    for row in xs.chunks_exact(cols) {
        for ((a, q), &v) in mean_abs.iter_mut().zip(&mut mean_sq).zip(row) {
            *a += v.abs() as f64;
            *q += (v as f64) * (v as f64);
        }
    }
    let mut x_mean: Vec<f32> = mean_abs.iter().map(|&a| (a / n) as f32).collect();
    let x_sq: Vec<f32> = mean_sq.iter().map(|&q| (q / n) as f32).collect();
    if let Some(tie) = tie {
        tie_means(&mut x_mean, tie);
    }

    let mut best: Option<(f64, f32, Vec<f32>)> = None;
    let mut loss_rtn = f64::NAN;
    let threads = threads(opts);
    for i in 0..opts.grid {
        let alpha = i as f32 / opts.grid as f32;
        let s = scales_for(&x_mean, alpha);
        let mut loss = 0f64;
        for t in targets {
            loss += scaled_loss(&eval, t, &s, &x_sq, opts.use_imatrix, threads)?;
        }
        if i == 0 {
            loss_rtn = loss;
        }
        // A quantizer that produced NaN/inf is never better: such a candidate is skipped.
        let better = loss.is_finite()
            && best
                .as_ref()
                .is_none_or(|(b, _, _)| !b.is_finite() || loss < *b);
        if better || best.is_none() {
            best = Some((loss, alpha, s));
        }
    }
    let (loss_best, alpha, s) = best.expect("grid >= 1");
    Ok(Scales {
        s,
        alpha,
        loss_rtn,
        loss_best,
    })
}

/// The loss [`search_scales`] minimises, for given scales `s` (all ones = RTN), on any samples
/// `x` — e.g. held-out ones. `use_imatrix` as in [`AwqOptions`]; the importance matrix is taken
/// from these same samples.
pub fn output_loss(
    x: &[f32],
    cols: usize,
    targets: &[Target],
    s: &[f32],
    use_imatrix: bool,
) -> Result<f64, AwqError> {
    check_samples(x, cols)?;
    if s.len() != cols {
        return Err(AwqError::ScalesLen { got: s.len(), cols });
    }
    let eval = LossEval::new(x, cols);
    let x_sq = mean_sq(x, cols);
    let threads = threads(&AwqOptions::default());
    let mut loss = 0f64;
    for t in targets {
        check_target(t.name, t.w.len(), t.rows, cols, t.ty)?;
        loss += scaled_loss(&eval, t, s, &x_sq, use_imatrix, threads)?;
    }
    Ok(loss)
}

/// Clipping search after scaling (llm-awq's `auto_clip_layer`; no ggml counterpart): for each
/// output row and each ggml block of the target's type, the block's range is shrunk to
/// `ratio · max|w|` for ratios `1, 1 - 1/clip_grid, …` down to `1 - clip_max_shrink`, and the
/// ratio with the smallest error of that block's share of the output is kept. A row whose
/// whole-row output error ends up worse than unclipped is put back. The clipped (not quantized)
/// weights are written back into `t.w`; quantize them with the same type. The importance matrix
/// used while searching is `mean x²` of the samples (when `use_imatrix`), an estimate of the
/// calibration imatrix the final quantization takes.
///
/// `x` must be the input these weights see, i.e. already divided by the AWQ scales
/// ([`scale_samples`]). The per-block choice is exact where ggml quantizes every block of a row on
/// its own (K-quants, IQ4_XS, TQ*, and the legacy types without an importance matrix); with one,
/// Q4_0/Q4_1/Q5_0/Q5_1 weigh values by the whole row's mean square, so blocks interact a little,
/// and the per-row check is what guarantees no row gets worse. llm-awq skips q/k projections
/// (attention scores are sensitive to clipping); that choice is the driver's.
pub fn search_clip(
    x: &[f32],
    cols: usize,
    t: &mut TargetMut,
    opts: &AwqOptions,
) -> Result<ClipStats, AwqError> {
    check_samples(x, cols)?;
    check_target(t.name, t.w.len(), t.rows, cols, t.ty)?;
    if opts.clip_grid == 0 || !(0.0..1.0).contains(&opts.clip_max_shrink) {
        return Err(AwqError::Options(
            "clip_grid must be at least 1 and clip_max_shrink in [0, 1)",
        ));
    }
    let (rows, ty) = (t.rows, t.ty);
    let bs = ty.block_size();
    let nb = cols / bs;
    let xs = subsample(x, cols, opts.max_samples);
    let n = xs.len() / cols;
    let imat = opts.use_imatrix.then(|| mean_sq(&xs, cols));
    let grams = block_grams(&xs, cols, bs);
    let w0 = t.w.to_vec();
    let amax: Vec<f32> = w0
        .chunks_exact(bs)
        .map(|b| b.iter().fold(0f32, |m, v| m.max(v.abs())))
        .collect();
    let steps = ((opts.clip_max_shrink * opts.clip_grid as f32) as usize).max(1);
    let mut best_err = vec![f64::INFINITY; rows * nb];
    let mut best_ratio = vec![1f32; rows * nb];
    let threads = threads(opts);
    let (name, imat) = (t.name, imat.as_deref());
    for i in 0..steps {
        let ratio = 1.0 - i as f32 / opts.clip_grid as f32;
        let err = par_rows(rows, threads, |r, work: &mut Work| {
            let Work {
                ws,
                bytes,
                deq,
                diff,
                prod,
            } = work;
            let w = &w0[r.start * cols..r.end * cols];
            let m = &amax[r.start * nb..r.end * nb];
            ws.clear();
            for (src, &m) in w.chunks_exact(bs).zip(m) {
                let lim = m * ratio;
                ws.extend(src.iter().map(|v| v.clamp(-lim, lim)));
            }
            fake_quant(name, ws, cols, ty, imat, bytes, deq)?;
            diff.clear();
            diff.extend(w.iter().zip(deq.iter()).map(|(&w, &q)| w - q));
            Ok(block_errors(diff, r.len(), cols, bs, &grams, prod))
        })?;
        for ((e, b), r) in err.iter().zip(&mut best_err).zip(&mut best_ratio) {
            if e.is_finite() && *e < *b {
                *b = *e;
                *r = ratio;
            }
        }
    }
    // Build the clipped weights, then check each row's whole output error against unclipped.
    for ((dst, src), (&m, &r)) in
        t.w.chunks_exact_mut(bs)
            .zip(w0.chunks_exact(bs))
            .zip(amax.iter().zip(&best_ratio))
    {
        let lim = m * r;
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = v.clamp(-lim, lim);
        }
    }
    let eval = LossEval::new(&xs, cols);
    let before = row_losses(&eval, &w0, &w0, cols, ty, imat, name, threads)?;
    let after = row_losses(&eval, &w0, t.w, cols, ty, imat, name, threads)?;
    let mut rows_reverted = 0;
    let mut loss_after = 0f64;
    for r in 0..rows {
        // NaN compares false: a row whose error is not a number is reverted too.
        let keep = after[r] <= before[r];
        if keep {
            loss_after += after[r];
        } else {
            t.w[r * cols..(r + 1) * cols].copy_from_slice(&w0[r * cols..(r + 1) * cols]);
            best_ratio[r * nb..(r + 1) * nb].fill(1.0);
            rows_reverted += 1;
            loss_after += before[r];
        }
    }
    let blocks_clipped = best_ratio.iter().filter(|&&r| r < 1.0).count();
    let nf = n as f64;
    let loss_before = before.iter().sum::<f64>() / nf;
    let loss_after = loss_after / nf;
    Ok(ClipStats {
        loss_before,
        loss_after,
        blocks: rows * nb,
        blocks_clipped,
        rows_reverted,
    })
}

/// Folds `1/s` into an RMSNorm weight (`norm_w[j] /= s[j]`), so that norm → scaled linear is the
/// same function as before (llm-awq's `scale_ln_fcs`; no ggml counterpart). `norm_w` is the
/// multiplier as ggml applies it (`ggml_mul` after `ggml_rms_norm`): for Gemma that is the GGUF
/// tensor, where the converter already added HF's `1 +`.
/// Panics if the lengths differ (a driver bug, not a file's).
pub fn fold_into_norm(norm_w: &mut [f32], s: &[f32]) {
    assert_eq!(
        norm_w.len(),
        s.len(),
        "norm weight and scales differ in length"
    );
    for (w, &s) in norm_w.iter_mut().zip(s) {
        *w /= s;
    }
}

/// Folds `1/s` into the output rows of the previous linear layer (`prev` is `(rows, cols)`, row
/// `r /= s[r]`), e.g. v_proj before o_proj or up_proj before down_proj (llm-awq's `scale_fc_fc`;
/// no ggml counterpart). Panics on mismatched shapes (a driver bug, not a file's).
pub fn fold_into_rows(prev: &mut [f32], rows: usize, cols: usize, s: &[f32]) {
    assert_eq!(prev.len(), rows * cols, "previous layer is not rows × cols");
    assert_eq!(
        s.len(),
        rows,
        "one scale per output row of the previous layer"
    );
    for (row, &s) in prev.chunks_exact_mut(cols).zip(s) {
        for w in row {
            *w /= s;
        }
    }
}

/// Scales the input columns of a target, `w[:, j] *= s[j]` (`w` is `(rows, cols)`; no ggml
/// counterpart). Panics on mismatched shapes (a driver bug, not a file's).
pub fn scale_cols(w: &mut [f32], rows: usize, cols: usize, s: &[f32]) {
    assert_eq!(w.len(), rows * cols, "weights are not rows × cols");
    assert_eq!(s.len(), cols, "one scale per input column");
    for row in w.chunks_exact_mut(cols) {
        for (w, &s) in row.iter_mut().zip(s) {
            *w *= s;
        }
    }
}

/// Divides activation samples `(n, cols)` by the scales, giving the input the scaled weights see
/// (for [`search_clip`] and for the importance matrix of the final quantization).
pub fn scale_samples(x: &mut [f32], cols: usize, s: &[f32]) {
    assert_eq!(s.len(), cols, "one scale per input column");
    for row in x.chunks_exact_mut(cols) {
        for (v, &s) in row.iter_mut().zip(s) {
            *v /= s;
        }
    }
}

/// The importance matrix after scaling: ggml's imatrix is `mean x²` per column, and the scaled
/// input is `x / s`, so each entry is divided by `s²`.
pub fn imatrix_after_scaling(imatrix: &mut [f32], s: &[f32]) {
    assert_eq!(imatrix.len(), s.len(), "one scale per importance value");
    for (v, &s) in imatrix.iter_mut().zip(s) {
        *v /= s * s;
    }
}

/// Class ids for o_proj's input columns under grouped-query attention when AWQ's scale is folded
/// into v_proj: column `h·head_dim + d` of query head `h` reads v row `(h / group)·head_dim + d`,
/// and that row id is the class. With `n_head == n_head_kv` every column is its own class.
pub fn gqa_tie(n_head: usize, n_head_kv: usize, head_dim: usize) -> Vec<usize> {
    assert!(
        n_head_kv > 0 && n_head.is_multiple_of(n_head_kv),
        "n_head must be a multiple of n_head_kv"
    );
    let group = n_head / n_head_kv;
    (0..n_head * head_dim)
        .map(|c| (c / head_dim / group) * head_dim + c % head_dim)
        .collect()
}

/// The scale of each class (`0..=max id`) from per-channel scales that respect `tie`: what
/// [`fold_into_rows`] wants for v_proj after o_proj's search with [`gqa_tie`]. Classes without a
/// channel get 1.
pub fn class_scales(s: &[f32], tie: &[usize]) -> Vec<f32> {
    assert_eq!(s.len(), tie.len(), "one class id per scale");
    let classes = tie.iter().max().map_or(0, |m| m + 1);
    let mut out = vec![1f32; classes];
    for (&c, &v) in tie.iter().zip(s) {
        out[c] = v;
    }
    out
}

// ---------------------------------------------------------------------------------------------

fn check_samples(x: &[f32], cols: usize) -> Result<(), AwqError> {
    if cols == 0 || x.is_empty() || !x.len().is_multiple_of(cols) {
        return Err(AwqError::Samples { got: x.len(), cols });
    }
    Ok(())
}

fn check_target(
    name: &str,
    len: usize,
    rows: usize,
    cols: usize,
    ty: GgmlType,
) -> Result<(), AwqError> {
    if rows == 0 || rows.checked_mul(cols) != Some(len) {
        return Err(AwqError::Weights {
            name: name.to_string(),
            got: len,
            rows,
            cols,
        });
    }
    if quant::fns(ty).is_none() {
        return Err(AwqError::Quant {
            name: name.to_string(),
            cause: QuantError::Unsupported(ty),
        });
    }
    if !cols.is_multiple_of(ty.block_size()) {
        return Err(AwqError::NotWholeBlocks {
            name: name.to_string(),
            ty,
            cols,
            block: ty.block_size(),
        });
    }
    Ok(())
}

/// At most `max` rows of `x`, evenly spread (all of them when there are few enough).
fn subsample(x: &[f32], cols: usize, max: usize) -> std::borrow::Cow<'_, [f32]> {
    let n = x.len() / cols;
    if max == 0 || n <= max {
        return x.into();
    }
    let mut out = Vec::with_capacity(max * cols);
    for i in 0..max {
        let r = i * n / max;
        out.extend_from_slice(&x[r * cols..(r + 1) * cols]);
    }
    out.into()
}

fn mean_sq(x: &[f32], cols: usize) -> Vec<f32> {
    let mut acc = vec![0f64; cols];
    for row in x.chunks_exact(cols) {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += (v as f64) * (v as f64);
        }
    }
    let n = (x.len() / cols) as f64;
    acc.iter().map(|&a| (a / n) as f32).collect()
}

/// Replaces each channel's `mean|x|` with its class's mean.
fn tie_means(x_mean: &mut [f32], tie: &[usize]) {
    let mut sum: std::collections::HashMap<usize, (f64, usize)> = Default::default();
    for (&c, &v) in tie.iter().zip(x_mean.iter()) {
        let e = sum.entry(c).or_default();
        e.0 += v as f64;
        e.1 += 1;
    }
    for (&c, v) in tie.iter().zip(x_mean.iter_mut()) {
        let (s, k) = sum[&c];
        *v = (s / k as f64) as f32;
    }
}

/// `s = max(mean|x|^α, 1e-4) / sqrt(max s · min s)`, as llm-awq. `α = 0` gives exactly 1.
fn scales_for(x_mean: &[f32], alpha: f32) -> Vec<f32> {
    let mut s: Vec<f32> = x_mean
        .iter()
        .map(|&m| {
            let v = m.powf(alpha);
            if v.is_finite() {
                v.max(S_MIN)
            } else {
                1.0
            }
        })
        .collect();
    let (lo, hi) = s
        .iter()
        .fold((f32::INFINITY, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let norm = ((lo as f64) * (hi as f64)).sqrt() as f32;
    if norm.is_finite() && norm > 0.0 {
        for v in &mut s {
            *v /= norm;
        }
    }
    s
}

/// Scratch buffers of one worker.
#[derive(Default)]
struct Work {
    ws: Vec<f32>,
    bytes: Vec<u8>,
    deq: Vec<f32>,
    diff: Vec<f32>,
    prod: Vec<f32>,
}

/// `deq = dequantize(quantize(w))` row by row with the quantizer the file will be written with
/// (ggml's for `ty`, or kiln's weighted fit for the low-bit types, [`super::quantize_row_weighted`]).
fn fake_quant(
    name: &str,
    w: &[f32],
    cols: usize,
    ty: GgmlType,
    imatrix: Option<&[f32]>,
    bytes: &mut Vec<u8>,
    deq: &mut Vec<f32>,
) -> Result<(), AwqError> {
    bytes.resize(cols / ty.block_size() * ty.type_size(), 0);
    deq.resize(w.len(), 0.0);
    let wrap = |cause| AwqError::Quant {
        name: name.to_string(),
        cause,
    };
    for (src, dst) in w.chunks_exact(cols).zip(deq.chunks_exact_mut(cols)) {
        super::quantize_row_weighted(ty, src, bytes, imatrix).map_err(wrap)?;
        quant::dequantize(ty, bytes, dst).map_err(wrap)?;
    }
    Ok(())
}

/// `‖X Wᵀ − (X/s) Q(W·diag(s))ᵀ‖² / n` for one target.
fn scaled_loss(
    eval: &LossEval,
    t: &Target,
    s: &[f32],
    x_sq: &[f32],
    use_imatrix: bool,
    threads: usize,
) -> Result<f64, AwqError> {
    let cols = eval.cols;
    let imat: Option<Vec<f32>> =
        use_imatrix.then(|| x_sq.iter().zip(s).map(|(&q, &s)| q / (s * s)).collect());
    let per_row = par_rows(t.rows, threads, |r, work: &mut Work| {
        let Work {
            ws,
            bytes,
            deq,
            diff,
            prod,
        } = work;
        let w = &t.w[r.start * cols..r.end * cols];
        ws.clear();
        ws.extend_from_slice(w);
        scale_cols(ws, r.len(), cols, s);
        fake_quant(t.name, ws, cols, t.ty, imat.as_deref(), bytes, deq)?;
        diff.clear();
        diff.extend(
            w.iter()
                .zip(deq.iter())
                .zip(s.iter().cycle())
                .map(|((&w, &q), &s)| w - q / s),
        );
        Ok(eval.loss(diff, r.len(), prod))
    })?;
    Ok(per_row.iter().sum::<f64>() / eval.n as f64)
}

/// Per-row output error of quantizing `w` (compared with the exact output of `w0`).
#[allow(clippy::too_many_arguments)]
fn row_losses(
    eval: &LossEval,
    w0: &[f32],
    w: &[f32],
    cols: usize,
    ty: GgmlType,
    imatrix: Option<&[f32]>,
    name: &str,
    threads: usize,
) -> Result<Vec<f64>, AwqError> {
    par_rows(w.len() / cols, threads, |r, work: &mut Work| {
        let Work {
            bytes,
            deq,
            diff,
            prod,
            ..
        } = work;
        let rows = r.start * cols..r.end * cols;
        fake_quant(name, &w[rows.clone()], cols, ty, imatrix, bytes, deq)?;
        diff.clear();
        diff.extend(w0[rows].iter().zip(deq.iter()).map(|(&a, &b)| a - b));
        Ok(eval.loss(diff, r.len(), prod))
    })
}

/// `opts.threads`, or the machine's parallelism for 0.
fn threads(opts: &AwqOptions) -> usize {
    match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}
