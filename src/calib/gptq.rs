//! GPTQ (Frantar et al. 2022, `fasterquant` in the reference `gptq.py`) into ggml block formats.
//!
//! Columns are swept left to right; each column is rounded to its block's grid and the rounding
//! error is spread over the columns not yet quantized through the upper Cholesky factor `U` of
//! the damped inverse Hessian (`H⁻¹ = UᵀU`), with lazy updates in blocks of
//! [`GptqOptions::block`] columns. Every ggml block is a group: when the sweep reaches its first
//! column, the type's importance-weighted quantizer ([`super::quantize_row_weighted`]) fits its
//! parameters (weighted by `diag(H)`, as an imatrix) from the current, error-updated weights; the parameters are decoded exactly as
//! stored (fp16 scales, 6-bit sub-scales and mins) and the block's columns are then rounded to
//! that fixed grid one by one, the error fed back being the value the file will hold.
//!
//! The fit sees one block at a time, so where ggml's legacy imatrix quantizers weight by
//! `imatrix · sqrt(σ² + x²)` with `σ²` the mean square of the whole row, here `σ²` is that of
//! the block (the K-quants use the super-block's in ggml too). Q8_0 (no importance path in
//! ggml) gets ggml's reference fit; TQ1_0, TQ2_0, Q1_0 and Q2_0, whose ggml quantizers ignore the
//! weights, get kiln's weighted fit of the block's scale.

use super::codec::{self, Fitted};
use super::hessian::Hessian;
use super::quantize_row_weighted;
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
         TQ1_0, TQ2_0, Q1_0, Q2_0); quantize this tensor with the importance matrix instead"
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

/// The part of GPTQ that depends only on the Hessian: the upper Cholesky factor of the damped
/// inverse, the dead columns and the importance weights. Layers that share an input (q/k/v,
/// gate/up) share one.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// Features (the matrix's columns).
    pub n: usize,
    /// `U` with `(H + λI)⁻¹ = UᵀU`, `n × n` row-major (lower triangle zero), f32.
    u: Vec<f32>,
    /// `H_ii / rows` (ggml's imatrix value) per column: the weights of each block fit.
    imp: Vec<f32>,
    /// Columns with `H_ii = 0`.
    dead: Vec<bool>,
    /// The damping fraction that made the factorization succeed.
    pub damp_used: f64,
}

impl Prepared {
    /// Checks `h` and factors its damped inverse (`opts.damp`, raised ×10 up to
    /// 4 times if the factorization fails). No ggml counterpart.
    pub fn new(h: &Hessian, opts: &GptqOptions) -> Result<Self, GptqError> {
        let n = h.n;
        if h.sum.len() != n * n {
            return Err(GptqError::Shape {
                what: format!("Hessian over {n} features has {} entries", h.sum.len()),
            });
        }
        if h.rows == 0 {
            return Err(GptqError::NoCalibration);
        }
        if let Some(index) = h.sum.iter().position(|v| !v.is_finite()) {
            return Err(GptqError::NonFinite {
                what: "Hessian",
                index,
            });
        }
        // Dead columns: H_ii = 1 (and their weights zeroed), as the reference does.
        let mut hm = h.sum.clone();
        let mut dead = vec![false; n];
        for (i, d) in dead.iter_mut().enumerate() {
            if hm[i * n + i] == 0.0 {
                hm[i * n + i] = 1.0;
                *d = true;
            }
        }
        let (u, damp_used) = damped_inverse_factor(&hm, n, opts.damp)?;
        let imp = (0..n)
            .map(|i| (h.sum[i * n + i] / h.rows as f64) as f32)
            .collect();
        Ok(Prepared {
            n,
            u,
            imp,
            dead,
            damp_used,
        })
    }
}

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
    check(w, rows, cols, cols, ty)?;
    quantize_prepared(w, rows, cols, &Prepared::new(h, opts)?, ty, opts)
}

fn check(w: &[f32], rows: usize, cols: usize, n: usize, ty: GgmlType) -> Result<(), GptqError> {
    if !codec::supported(ty) {
        return Err(GptqError::Unsupported(ty));
    }
    let bs = ty.block_size();
    let shape = |what: String| Err(GptqError::Shape { what });
    if rows.checked_mul(cols) != Some(w.len()) {
        return shape(format!("{} weights for a {rows}×{cols} matrix", w.len()));
    }
    if n != cols {
        return shape(format!(
            "Hessian is over {n} features, the matrix has {cols} columns"
        ));
    }
    if !cols.is_multiple_of(bs) {
        return shape(format!(
            "{cols} columns is not a whole number of {ty} blocks of {bs}"
        ));
    }
    if let Some(index) = w.iter().position(|v| !v.is_finite()) {
        return Err(GptqError::NonFinite {
            what: "weights",
            index,
        });
    }
    Ok(())
}

/// [`quantize`] with the Hessian's factor computed once ([`Prepared::new`]) for several
/// matrices that share an input.
pub fn quantize_prepared(
    w: &[f32],
    rows: usize,
    cols: usize,
    p: &Prepared,
    ty: GgmlType,
    opts: &GptqOptions,
) -> Result<GptqResult, GptqError> {
    check(w, rows, cols, p.n, ty)?;
    let bs = ty.block_size();
    let mut w = w.to_vec();
    let dead_columns = p.dead.iter().filter(|&&d| d).count();
    for row in w.chunks_exact_mut(cols) {
        for (v, &d) in row.iter_mut().zip(&p.dead) {
            if d {
                *v = 0.0;
            }
        }
    }
    let (u, imp, damp_used) = (&p.u, &p.imp, p.damp_used);

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
        u,
        imp,
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
                            quantize_row_weighted(self.ty, &wr[cols], &mut block, weights)?;
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

/// Runs `f` compiled for AVX2 when the CPU has it (wider vectors for the f64 loops; the
/// arithmetic and its order are the same, so results do not depend on the CPU).
fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    /// # Safety
    /// The CPU must support AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected at run time just above.
        return unsafe { avx2(f) };
    }
    f()
}

/// Lower Cholesky factor `L` (`A = LLᵀ`, row-major) of the symmetric `a`, or `None` if a pivot
/// is not positive and finite.
pub(crate) fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    with_avx2(|| cholesky_impl(a, n))
}

#[inline(always)]
fn cholesky_impl(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0f64; n * n];
    // Rows in blocks of ROW_BLOCK: for columns left of the block, each finished row L_j is
    // read once for all the block's rows (the unblocked loop streams all of L per row). Each
    // entry is computed exactly as unblocked: same dot product, same order of j per row.
    for i0 in (0..n).step_by(ROW_BLOCK) {
        let i1 = (i0 + ROW_BLOCK).min(n);
        let (done, block) = l.split_at_mut(i0 * n);
        for j in 0..i0 {
            let lj = &done[j * n..j * n + j];
            let ljj = done[j * n + j];
            for i in i0..i1 {
                let li = &mut block[(i - i0) * n..(i - i0 + 1) * n];
                li[j] = (a[i * n + j] - dot64(&li[..j], lj)) / ljj;
            }
        }
        for i in i0..i1 {
            for j in i0..=i {
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
    }
    Some(l)
}

/// Rows factored or inverted together (see [`cholesky_impl`]).
const ROW_BLOCK: usize = 8;

/// Inverse of the lower-triangular `l` (row-major), itself lower triangular. Columns of the
/// inverse are independent (`L x = e_c`), so threads take column ranges of equal work.
fn invert_lower(l: &[f64], n: usize) -> Vec<f64> {
    let threads = thread::available_parallelism().map_or(1, |t| t.get());
    // Column c costs about (n - c)²: cut where the remaining work crosses each share.
    let total: f64 = (0..n).map(|c| ((n - c) * (n - c)) as f64).sum();
    let mut bounds = vec![0];
    let mut acc = 0.0;
    for c in 0..n {
        acc += ((n - c) * (n - c)) as f64;
        if acc * threads as f64 >= total * bounds.len() as f64 && bounds.len() < threads {
            bounds.push(c + 1);
        }
    }
    bounds.push(n);
    bounds.dedup();
    let parts: Vec<(usize, usize, Vec<f64>)> = thread::scope(|s| {
        let handles: Vec<_> = bounds
            .windows(2)
            .map(|w| {
                let (c0, c1) = (w[0], w[1]);
                s.spawn(move || (c0, c1, with_avx2(|| invert_lower_columns(l, n, c0, c1))))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("inverse worker panicked"))
            .collect()
    });
    let mut x = vec![0f64; n * n];
    for (c0, c1, y) in parts {
        let w = c1 - c0;
        for i in c0..n {
            x[i * n + c0..i * n + c1].copy_from_slice(&y[(i - c0) * w..(i - c0 + 1) * w]);
        }
    }
    x
}

/// Columns `c0..c1` of `L⁻¹`, rows `c0..n` (above are zero), as an `(n - c0) × (c1 - c0)`
/// row-major block: `row_i = (e_i − Σ_{c0≤k<i} L_ik row_k) / L_ii`.
#[inline(always)]
fn invert_lower_columns(l: &[f64], n: usize, c0: usize, c1: usize) -> Vec<f64> {
    let w = c1 - c0;
    let mut y = vec![0f64; (n - c0) * w];
    // row_k is zero past column k: only its first m(k) entries take part.
    let m = |k: usize| (k + 1).min(c1) - c0;
    // Blocks of rows as in `cholesky_impl`; per row the same operations in the same order.
    for i0 in (c0..n).step_by(ROW_BLOCK) {
        let i1 = (i0 + ROW_BLOCK).min(n);
        let (done, block) = y.split_at_mut((i0 - c0) * w);
        for k in c0..i0 {
            let yk = &done[(k - c0) * w..(k - c0) * w + m(k)];
            for i in i0..i1 {
                let lik = l[i * n + k];
                let row = &mut block[(i - i0) * w..(i - i0) * w + yk.len()];
                for (v, &z) in row.iter_mut().zip(yk) {
                    *v -= lik * z;
                }
            }
        }
        for i in i0..i1 {
            let (done, row) = y.split_at_mut((i - c0) * w);
            let row = &mut row[..w];
            for k in i0..i {
                let lik = l[i * n + k];
                let yk = &done[(k - c0) * w..(k - c0) * w + m(k)];
                for (v, &z) in row.iter_mut().zip(yk) {
                    *v -= lik * z;
                }
            }
            if i < c1 {
                row[i - c0] += 1.0;
            }
            let inv = 1.0 / l[i * n + i];
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }
    y
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `U` from the reversed-Cholesky route satisfies `Uᵀ U (H + λI) = I` and is upper
    /// triangular with a positive diagonal (so it is the reference's unique factor).
    #[test]
    fn inverse_factor_inverts_the_damped_hessian() {
        let n = 37;
        let mut seed = 42u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f64 / (1u64 << 31) as f64) - 0.5
        };
        // H = BᵀB from 50 random rows: symmetric positive definite.
        let b: Vec<f64> = (0..50 * n).map(|_| next()).collect();
        let mut h = vec![0f64; n * n];
        for row in b.chunks_exact(n) {
            for i in 0..n {
                for j in 0..n {
                    h[i * n + j] += row[i] * row[j];
                }
            }
        }
        let (u, damp) = damped_inverse_factor(&h, n, 0.01).unwrap();
        assert_eq!(damp, 0.01);
        let mean = (0..n).map(|i| h[i * n + i]).sum::<f64>() / n as f64;
        for i in 0..n {
            h[i * n + i] += 0.01 * mean;
            assert!(u[i * n + i] > 0.0);
            for j in 0..i {
                assert_eq!(u[i * n + j], 0.0);
            }
        }
        // (UᵀU) H
        for i in 0..n {
            for j in 0..n {
                let mut s = 0f64;
                for k in 0..n {
                    let utu: f64 = (0..n)
                        .map(|m| f64::from(u[m * n + i]) * f64::from(u[m * n + k]))
                        .sum();
                    s += utu * h[k * n + j];
                }
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((s - want).abs() < 1e-4, "({i},{j}) = {s}");
            }
        }
    }
}
