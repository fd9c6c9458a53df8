//! GPTQ (Frantar et al. 2022, `fasterquant` in the reference `gptq.py`) into ggml block formats.
//!
//! Columns are swept left to right; each column is rounded to its block's grid and the rounding
//! error is spread over the columns not yet quantized through the upper Cholesky factor `U` of
//! the damped inverse Hessian (`H⁻¹ = UᵀU`), with lazy updates in blocks of
//! [`GptqOptions::block`] columns. Every ggml block is a group: when the sweep reaches its first
//! column, ggml's own quantizer for the type fits its parameters (weighted by `diag(H)`, as an
//! imatrix) from the current, error-updated weights; the parameters are decoded exactly as
//! stored (fp16 scales, 6-bit sub-scales and mins) and the block's columns are then rounded to
//! that fixed grid one by one, the error fed back being the value the file will hold.

use super::codec::{self, Fitted};
use super::hessian::Hessian;
use ggml_compat::quant::{self, QuantError};
use ggml_compat::GgmlType;
use std::thread;

/// GPTQ settings.
#[derive(Clone, Debug)]
pub struct GptqOptions {
    /// Damping as a fraction of the mean of `diag(H)` (0.01 in the reference).
    pub damp: f64,
    /// Lazy-update width in columns (128 in the reference); rounded up to a multiple of the
    /// type's block size.
    pub block: usize,
    /// Worker threads; 0 uses all available.
    pub threads: usize,
}

impl Default for GptqOptions {
    fn default() -> Self {
        GptqOptions {
            damp: 0.01,
            block: 128,
            threads: 0,
        }
    }
}

/// What [`quantize`] produced.
#[derive(Clone, Debug)]
pub struct GptqResult {
    /// `rows × row_size(ty, cols)` bytes of ggml blocks, ready for a GGUF tensor.
    pub bytes: Vec<u8>,
    /// The damping fraction that made the Cholesky factorization succeed (`damp`, or 10×, 100×…).
    pub damp_used: f64,
    /// GPTQ's own proxy loss `½ Σ (w − q)² / U_ii²` (the reference's `Losses` summed): the
    /// increase of `‖XWᵀ − XŴᵀ‖²` GPTQ predicts, in units of `H`.
    pub loss: f64,
    /// Columns whose `H_ii` was zero (never active in calibration): their weights were zeroed.
    pub dead_columns: usize,
}

/// Errors from [`quantize`].
#[derive(Debug, thiserror::Error)]
pub enum GptqError {
    #[error(
        "GPTQ cannot write {0} (supported: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, IQ4_NL, \
         TQ1_0, TQ2_0, Q1_0); quantize this tensor with the importance matrix instead"
    )]
    Unsupported(GgmlType),
    #[error("GPTQ: {what}")]
    Shape { what: String },
    #[error(
        "GPTQ: the Hessian has no calibration rows; run calibration text through the layer first"
    )]
    NoCalibration,
    #[error("GPTQ: weights or Hessian contain a non-finite value (first at index {index} of the {what})")]
    NonFinite { what: &'static str, index: usize },
    #[error(
        "GPTQ: the damped Hessian is not positive definite even with damping {damp} × mean diag; \
         collect more calibration rows"
    )]
    NotPositiveDefinite { damp: f64 },
    #[error("GPTQ: {0}")]
    Quant(#[from] QuantError),
    #[error(
        "GPTQ internal error: row {row} column {col} dequantizes to {got} but {want} was fed back"
    )]
    EncodingMismatch {
        row: usize,
        col: usize,
        got: f32,
        want: f32,
    },
}

/// Damping retries: the fraction is multiplied by 10 this many times before giving up.
const DAMP_RETRIES: usize = 4;

/// Quantizes `w` (`rows × cols`, row-major, the layer computes `x Wᵀ`) to `ty` with GPTQ
/// against the Hessian `h` of the layer's inputs (`h.n == cols`). Returns the ggml row bytes.
/// The blocks are ggml's (`quantize_row_<type>` fits each block's parameters, `dequantize_row_
/// <type>` of the result equals the values GPTQ fed back, bit for bit).
pub fn quantize(
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &Hessian,
    ty: GgmlType,
    opts: &GptqOptions,
) -> Result<GptqResult, GptqError> {
    if !codec::supported(ty) {
        return Err(GptqError::Unsupported(ty));
    }
    let bs = ty.block_size();
    let shape = |what: String| Err(GptqError::Shape { what });
    if rows.checked_mul(cols) != Some(w.len()) {
        return shape(format!("{} weights for a {rows}×{cols} matrix", w.len()));
    }
    if h.n != cols || h.sum.len() != cols * cols {
        return shape(format!(
            "Hessian is over {} features, the matrix has {cols} columns",
            h.n
        ));
    }
    if !cols.is_multiple_of(bs) {
        return shape(format!(
            "{cols} columns is not a whole number of {ty} blocks of {bs}"
        ));
    }
    if h.rows == 0 {
        return Err(GptqError::NoCalibration);
    }
    if let Some(index) = w.iter().position(|v| !v.is_finite()) {
        return Err(GptqError::NonFinite {
            what: "weights",
            index,
        });
    }
    if let Some(index) = h.sum.iter().position(|v| !v.is_finite()) {
        return Err(GptqError::NonFinite {
            what: "Hessian",
            index,
        });
    }

    // Dead columns: H_ii = 1, w[:, i] = 0 (as the reference does).
    let mut hm = h.sum.clone();
    let mut w = w.to_vec();
    let mut dead_columns = 0;
    for i in 0..cols {
        if hm[i * cols + i] == 0.0 {
            hm[i * cols + i] = 1.0;
            dead_columns += 1;
            for r in 0..rows {
                w[r * cols + i] = 0.0;
            }
        }
    }
    let (u, damp_used) = damped_inverse_factor(&hm, cols, opts.damp)?;
    // Importance of each column for ggml's block fit: the imatrix value, mean x².
    let imp: Vec<f32> = (0..cols)
        .map(|i| (h.sum[i * cols + i] / h.rows as f64) as f32)
        .collect();

    let lazy = opts.block.max(1).div_ceil(bs) * bs;
    let threads = match opts.threads {
        0 => thread::available_parallelism().map_or(1, |t| t.get()),
        t => t,
    }
    .clamp(1, rows.max(1));
    let row_bytes = cols / bs * ty.type_size();
    let mut bytes = vec![0u8; rows * row_bytes];
    let mut fed = vec![0f32; rows * cols];
    let sweep = Sweep {
        u: &u,
        imp: &imp,
        cols,
        ty,
        lazy,
    };

    let per = rows.div_ceil(threads);
    let losses: Vec<Result<f64, QuantError>> = thread::scope(|s| {
        let handles: Vec<_> = w
            .chunks_mut(per * cols)
            .zip(bytes.chunks_mut(per * row_bytes))
            .zip(fed.chunks_mut(per * cols))
            .map(|((wc, bc), fc)| s.spawn(|| sweep.rows(wc, bc, fc)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("GPTQ worker panicked"))
            .collect()
    });
    let mut loss = 0.0;
    for l in losses {
        loss += l?;
    }

    // The file must hold exactly what was fed back: check it with ggml's dequantization.
    let mut back = vec![0f32; cols];
    for r in 0..rows {
        quant::dequantize(ty, &bytes[r * row_bytes..(r + 1) * row_bytes], &mut back)?;
        let want = &fed[r * cols..(r + 1) * cols];
        if let Some(col) = (0..cols).find(|&c| back[c].to_bits() != want[c].to_bits()) {
            return Err(GptqError::EncodingMismatch {
                row: r,
                col,
                got: back[col],
                want: want[col],
            });
        }
    }
    Ok(GptqResult {
        bytes,
        damp_used,
        loss,
        dead_columns,
    })
}

/// Rows processed together in the lazy (trailing) update, so each row of `U` is read once per
/// tile instead of once per row.
const ROW_TILE: usize = 8;

/// The shared, read-only state of one sweep.
struct Sweep<'a> {
    /// Upper Cholesky factor of the damped `H⁻¹`, `cols × cols` row-major, f32.
    u: &'a [f32],
    imp: &'a [f32],
    cols: usize,
    ty: GgmlType,
    lazy: usize,
}

impl Sweep<'_> {
    /// Quantizes the rows in `w` (updated in place as the error is fed forward), writing their
    /// blocks to `out` and the dequantized values to `fed`. Returns the summed proxy loss.
    fn rows(&self, w: &mut [f32], out: &mut [u8], fed: &mut [f32]) -> Result<f64, QuantError> {
        let n = self.cols;
        let bs = self.ty.block_size();
        let row_bytes = n / bs * self.ty.type_size();
        let mut loss = 0.0;
        let mut err = vec![0f32; ROW_TILE * self.lazy];
        let mut block = vec![0u8; self.ty.type_size()];
        let mut codes = vec![0i32; bs];
        let tiles = w
            .chunks_mut(ROW_TILE * n)
            .zip(out.chunks_mut(ROW_TILE * row_bytes))
            .zip(fed.chunks_mut(ROW_TILE * n));
        for ((wt, ot), ft) in tiles {
            let tile_rows = wt.len() / n;
            for i1 in (0..n).step_by(self.lazy) {
                let i2 = (i1 + self.lazy).min(n);
                let count = i2 - i1;
                for r in 0..tile_rows {
                    let wr = &mut wt[r * n..(r + 1) * n];
                    let er = &mut err[r * count..(r + 1) * count];
                    let mut fitted: Option<Fitted> = None;
                    for i in i1..i2 {
                        let j = i % bs;
                        if j == 0 {
                            let cols = i..i + bs;
                            let imp = &self.imp[cols.clone()];
                            let weights = (imp.iter().any(|&v| v > 0.0)).then_some(imp);
                            quant::quantize_row(self.ty, &wr[cols], &mut block, weights)?;
                            fitted = Some(codec::fit_grids(self.ty, &block));
                        }
                        let grid = fitted.as_ref().expect("block fitted at its first column");
                        let x = wr[i];
                        let (q, v) = grid.grid(j).nearest(x);
                        codes[j] = q;
                        ft[r * n + i] = v;
                        let urow = &self.u[i * n..(i + 1) * n];
                        let d = urow[i];
                        let e = (x - v) / d;
                        loss += 0.5 * f64::from(e) * f64::from(e);
                        er[i - i1] = e;
                        axpy(-e, &urow[i + 1..i2], &mut wr[i + 1..i2]);
                        if j == bs - 1 {
                            codec::pack_codes(self.ty, &mut block, &codes);
                            let at = r * row_bytes + i / bs * block.len();
                            ot[at..at + block.len()].copy_from_slice(&block);
                        }
                    }
                }
                if i2 < n {
                    for i in i1..i2 {
                        let urow = &self.u[i * n + i2..(i + 1) * n];
                        for r in 0..tile_rows {
                            let e = err[r * count + i - i1];
                            axpy(-e, urow, &mut wt[r * n + i2..(r + 1) * n]);
                        }
                    }
                }
            }
        }
        Ok(loss)
    }
}

/// `y += a·x`.
#[inline]
fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// Dot product in f64 with 4 partial sums.
#[inline]
fn dot64(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0f64; 4];
    let (ac, ar) = a.as_chunks::<4>();
    let (bc, br) = b.as_chunks::<4>();
    for (x, y) in ac.iter().zip(bc) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = 0.0;
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + s
}

/// Lower Cholesky factor `L` (`A = LLᵀ`, row-major) of the symmetric `a`, or `None` if a pivot
/// is not positive and finite.
pub(crate) fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s = a[i * n + j] - dot64(&l[i * n..i * n + j], &l[j * n..j * n + j]);
            if i == j {
                if !(s > 0.0 && s.is_finite()) {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// Inverse of the lower-triangular `l` (row-major), itself lower triangular.
fn invert_lower(l: &[f64], n: usize) -> Vec<f64> {
    let mut x = vec![0f64; n * n];
    for i in 0..n {
        let (done, row) = x.split_at_mut(i * n);
        let row = &mut row[..n];
        // row_i(X) = (e_i − Σ_{k<i} L_ik row_k(X)) / L_ii; row_k(X) is zero past column k.
        for k in 0..i {
            let lik = l[i * n + k];
            for (y, &v) in row[..=k].iter_mut().zip(&done[k * n..k * n + k + 1]) {
                *y -= lik * v;
            }
        }
        row[i] = 1.0;
        let inv = 1.0 / l[i * n + i];
        for y in &mut row[..=i] {
            *y *= inv;
        }
    }
    x
}

/// The upper Cholesky factor `U` of `(H + λI)⁻¹` (`(H + λI)⁻¹ = UᵀU`), `λ = damp · mean diag`,
/// raising `damp` ×10 on failure. Returns `U` as f32 and the damping fraction used.
///
/// With `P` the index reversal, `P(H+λI)P = L'L'ᵀ` gives `H+λI = U'U'ᵀ` with `U' = PL'P` upper,
/// so `(H+λI)⁻¹ = (U'⁻¹)ᵀ U'⁻¹` and `U = U'⁻¹ = P L'⁻¹ P`: one factorization and one triangular
/// inverse instead of the reference's Cholesky, inverse and second Cholesky (same `U`, which is
/// unique).
pub(crate) fn damped_inverse_factor(
    h: &[f64],
    n: usize,
    damp: f64,
) -> Result<(Vec<f32>, f64), GptqError> {
    let mean = (0..n).map(|i| h[i * n + i]).sum::<f64>() / n.max(1) as f64;
    let mut frac = damp;
    let mut rev = vec![0f64; n * n];
    for _ in 0..=DAMP_RETRIES {
        let lambda = frac * mean;
        for i in 0..n {
            for j in 0..n {
                rev[i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)];
            }
            rev[i * n + i] += lambda;
        }
        if let Some(l) = cholesky(&rev, n) {
            let li = invert_lower(&l, n);
            let mut u = vec![0f32; n * n];
            for i in 0..n {
                for j in i..n {
                    u[i * n + j] = li[(n - 1 - i) * n + (n - 1 - j)] as f32;
                }
            }
            return Ok((u, frac));
        }
        frac *= 10.0;
    }
    Err(GptqError::NotPositiveDefinite { damp: frac / 10.0 })
}

/// `‖XWᵀ − XŴᵀ‖² = Σ_r (w_r − ŵ_r) H (w_r − ŵ_r)ᵀ`: the output error of a quantized matrix
/// `w_hat` on the calibration inputs behind `h` (in f64). No ggml counterpart.
pub fn output_error(w: &[f32], w_hat: &[f32], cols: usize, h: &Hessian) -> f64 {
    let mut total = 0.0;
    let mut dw = vec![0f64; cols];
    for (a, b) in w.chunks_exact(cols).zip(w_hat.chunks_exact(cols)) {
        for ((d, &x), &y) in dw.iter_mut().zip(a).zip(b) {
            *d = f64::from(x) - f64::from(y);
        }
        for i in 0..cols {
            total += dw[i] * dot64(&h.sum[i * cols..(i + 1) * cols], &dw);
        }
    }
    total
}
