//! Output-error evaluation for the calibration searches: `‖X Dᵀ‖²` per row of a weight
//! difference `D`, per block of columns, and a row-parallel driver. Dense f32 products (no ggml
//! arithmetic), summed in f64.

use std::ops::Range;

use crate::calib::gemm::{gemm, Mat};

/// Evaluates `‖X Dᵀ‖²` per row of `D` either directly (`n` small) or through the Gram matrix
/// `G = XᵀX` as `Σ D ⊙ (D G)` (cheaper when `cols < n`).
pub(crate) struct LossEval<'a> {
    x: &'a [f32],
    pub(crate) n: usize,
    pub(crate) cols: usize,
    gram: Option<Vec<f32>>,
}

impl<'a> LossEval<'a> {
    pub(crate) fn new(x: &'a [f32], cols: usize) -> Self {
        let n = x.len() / cols;
        let gram = (cols < n).then(|| {
            let mut g = vec![0f32; cols * cols];
            let xm = Mat::rows(x, n, cols);
            gemm(xm.t(), xm, Mat::rows_mut(&mut g, cols, cols));
            g
        });
        LossEval { x, n, cols, gram }
    }

    pub(crate) fn loss(&self, d: &[f32], rows: usize, prod: &mut Vec<f32>) -> Vec<f64> {
        let cols = self.cols;
        let dm = Mat::rows(d, rows, cols);
        match &self.gram {
            Some(g) => {
                prod.resize(rows * cols, 0.0);
                gemm(
                    dm,
                    Mat::rows(g, cols, cols),
                    Mat::rows_mut(prod, rows, cols),
                );
                d.chunks_exact(cols)
                    .zip(prod.chunks_exact(cols))
                    .map(|(a, b)| a.iter().zip(b).map(|(&a, &b)| a as f64 * b as f64).sum())
                    .collect()
            }
            None => {
                prod.resize(self.n * rows, 0.0);
                let xm = Mat::rows(self.x, self.n, cols);
                gemm(xm, dm.t(), Mat::rows_mut(prod, self.n, rows));
                let mut out = vec![0f64; rows];
                for e in prod.chunks_exact(rows) {
                    for (o, &v) in out.iter_mut().zip(e) {
                        *o += v as f64 * v as f64;
                    }
                }
                out
            }
        }
    }
}

/// `G_b = X_bᵀ X_b` for each block of columns `b` (`bs × bs` each).
pub(crate) fn block_grams(x: &[f32], cols: usize, bs: usize) -> Vec<Vec<f32>> {
    let n = x.len() / cols;
    let xm = Mat::rows(x, n, cols);
    (0..cols / bs)
        .map(|b| {
            let mut g = vec![0f32; bs * bs];
            let xb = xm.cols(b * bs, bs);
            gemm(xb.t(), xb, Mat::rows_mut(&mut g, bs, bs));
            g
        })
        .collect()
}

/// `err[r·nb + b] = d_rb G_b d_rbᵀ`: the error of block `b`'s share of row `r`'s output.
pub(crate) fn block_errors(
    d: &[f32],
    rows: usize,
    cols: usize,
    bs: usize,
    grams: &[Vec<f32>],
    prod: &mut Vec<f32>,
) -> Vec<f64> {
    let nb = cols / bs;
    let mut err = vec![0f64; rows * nb];
    let dm = Mat::rows(d, rows, cols);
    prod.resize(rows * bs, 0.0);
    for (b, g) in grams.iter().enumerate() {
        let db = dm.cols(b * bs, bs);
        gemm(db, Mat::rows(g, bs, bs), Mat::rows_mut(prod, rows, bs));
        for r in 0..rows {
            let dr = &d[r * cols + b * bs..r * cols + (b + 1) * bs];
            let pr = &prod[r * bs..(r + 1) * bs];
            err[r * nb + b] = dr.iter().zip(pr).map(|(&a, &p)| a as f64 * p as f64).sum();
        }
    }
    err
}

/// Splits `0..rows` into at most `threads` contiguous ranges, runs `f` on each (in scoped
/// threads, each with its own scratch `S`) and concatenates the results in row order. Each row's
/// result depends only on that row, so the answer does not depend on `threads`.
pub(crate) fn par_rows<S, E, F>(rows: usize, threads: usize, f: F) -> Result<Vec<f64>, E>
where
    S: Default,
    E: Send,
    F: Fn(Range<usize>, &mut S) -> Result<Vec<f64>, E> + Sync,
{
    let threads = threads.clamp(1, rows.max(1));
    let chunk = rows.div_ceil(threads);
    if threads == 1 {
        return f(0..rows, &mut S::default());
    }
    let ranges: Vec<Range<usize>> = (0..rows)
        .step_by(chunk)
        .map(|a| a..(a + chunk).min(rows))
        .collect();
    let parts: Vec<Result<Vec<f64>, E>> = std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = ranges[1..]
            .iter()
            .map(|r| {
                let r = r.clone();
                scope.spawn(move || f(r, &mut S::default()))
            })
            .collect();
        let mut parts = vec![f(ranges[0].clone(), &mut S::default())];
        for h in handles {
            // A panic in a worker is a bug here; pass it on rather than hide it.
            parts.push(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        parts
    });
    let mut out = Vec::with_capacity(rows);
    for p in parts {
        out.extend(p?);
    }
    Ok(out)
}
