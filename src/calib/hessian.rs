//! The input Hessian of one linear layer for GPTQ: `H = Σ x xᵀ` over calibration rows `x`
//! (the layer's input activations), with the number of rows seen.
//!
//! Accumulation is blocked: each tile of at most [`TILE`] rows is transposed, its `XᵀX` formed
//! with f32 dot products of length ≤ 256, and the tile's result folded into the f64 sum. The
//! relative error of one tile is then that of a 256-term f32 dot product (~1e-7), and across
//! tiles the sum is f64, so millions of calibration rows lose nothing more.

use std::thread;

/// Rows per f32 tile before it is folded into the f64 sum.
pub const TILE: usize = 256;

/// `Σ x xᵀ` over calibration rows, accumulated in f64, with the row count.
#[derive(Clone, Debug)]
pub struct Hessian {
    /// Number of input features (the layer's columns).
    pub n: usize,
    /// `n × n`, row-major, symmetric.
    pub sum: Vec<f64>,
    /// Calibration rows added so far.
    pub rows: u64,
}

/// Rows of `xt` (features) per register block: `I × J` entries of `H` are formed together, so
/// each load of a feature row feeds several products.
const I: usize = 2;
const J: usize = 4;
/// Tile rows are padded to a multiple of this (zeros add nothing).
const PAD: usize = 8;

/// `out[a][b] = Σ_r xi[a][r]·xj[b][r]` with `L` partial sums per entry, summed in a fixed
/// order (so the result does not depend on the thread count). `t` is a multiple of `L`.
#[inline(always)]
fn block_dots<const L: usize>(xi: [&[f32]; I], xj: [&[f32]; J]) -> [[f32; J]; I] {
    let mut acc = [[[0f32; L]; J]; I];
    let t = xi[0].len();
    for c in (0..t).step_by(L) {
        let a: [&[f32; L]; I] = xi.map(|x| x[c..c + L].try_into().expect("L lanes"));
        for b in 0..J {
            let y: &[f32; L] = xj[b][c..c + L].try_into().expect("L lanes");
            for (acc_a, xa) in acc.iter_mut().zip(&a) {
                for l in 0..L {
                    acc_a[b][l] += xa[l] * y[l];
                }
            }
        }
    }
    acc.map(|row| row.map(|lanes| lanes.iter().sum()))
}

/// Adds the tile's products for the `H` rows `first..first + rows.len() / n` (pairs of rows;
/// entries left of the diagonal are formed too, and overwritten by the mirror step).
#[inline(always)]
fn fold_rows<const L: usize>(xt: &[f32], t: usize, n: usize, first: usize, rows: &mut [f64]) {
    let np = n.div_ceil(J) * J;
    let row = |i: usize| &xt[i * t..(i + 1) * t];
    let count = rows.len() / n;
    for ii in (0..count).step_by(I) {
        let i = first + ii;
        let xi: [&[f32]; I] = std::array::from_fn(|a| row(i + a));
        for j in (i / J * J..np).step_by(J) {
            let xj: [&[f32]; J] = std::array::from_fn(|b| row(j + b));
            let d = block_dots::<L>(xi, xj);
            for (a, da) in d.iter().enumerate().take(count - ii) {
                let hrow = &mut rows[(ii + a) * n..(ii + a + 1) * n];
                for (b, &v) in da.iter().enumerate().take(n.saturating_sub(j)) {
                    hrow[j + b] += f64::from(v);
                }
            }
        }
    }
}

/// [`fold_rows`] compiled for AVX2 (8 lanes).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fold_rows_avx2(xt: &[f32], t: usize, n: usize, first: usize, rows: &mut [f64]) {
    fold_rows::<8>(xt, t, n, first, rows)
}

/// [`fold_rows`] with the widest vectors this CPU has.
fn fold_rows_dispatch(xt: &[f32], t: usize, n: usize, first: usize, rows: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected at run time just above.
        return unsafe { fold_rows_avx2(xt, t, n, first, rows) };
    }
    fold_rows::<4>(xt, t, n, first, rows)
}

impl Hessian {
    /// An empty Hessian over `n` features.
    pub fn new(n: usize) -> Self {
        Hessian {
            n,
            sum: vec![0.0; n * n],
            rows: 0,
        }
    }

    /// Adds `x`, `k` activation rows of `n` features (`(k, n)` row-major, `x.len() == k * n`).
    /// A trailing partial row is ignored. No ggml counterpart: llama.cpp's imatrix keeps only
    /// the diagonal.
    pub fn add(&mut self, x: &[f32]) {
        let n = self.n;
        if n == 0 {
            return;
        }
        let threads = thread::available_parallelism().map_or(1, |t| t.get());
        let mut xt = Vec::new();
        // Feature rows padded to a multiple of J (zero rows), samples to a multiple of PAD.
        let np = n.div_ceil(J) * J;
        for tile in x.chunks(TILE * n) {
            let rows = tile.len() / n;
            if rows == 0 {
                continue;
            }
            let t = rows.div_ceil(PAD) * PAD;
            // xt: (np, t), feature-major so each H entry is one contiguous dot product.
            xt.clear();
            xt.resize(np * t, 0.0);
            for (r, row) in tile.chunks_exact(n).enumerate() {
                for (i, &v) in row.iter().enumerate() {
                    xt[i * t + r] = v;
                }
            }
            self.fold_tile(&xt, t, threads);
            self.rows += rows as u64;
        }
        // Mirror the upper triangle the tiles filled.
        for i in 0..n {
            for j in 0..i {
                self.sum[i * n + j] = self.sum[j * n + i];
            }
        }
    }

    /// `sum[i][j] += Σ_r xt[i][r]·xt[j][r]` for `j ≥ i`, rows of `sum` split over threads in
    /// whole register blocks by about equal shares of the triangle.
    fn fold_tile(&mut self, xt: &[f32], t: usize, threads: usize) {
        let n = self.n;
        let total = n * (n + 1) / 2;
        let mut bounds = vec![0];
        let mut acc = 0;
        for i in 0..n {
            acc += n - i;
            let cut = (i + 1).is_multiple_of(I) && i + 1 < n;
            if cut && acc * threads >= total * bounds.len() && bounds.len() < threads {
                bounds.push(i + 1);
            }
        }
        bounds.push(n);
        thread::scope(|s| {
            let mut rest = &mut self.sum[..];
            for w in bounds.windows(2) {
                let (mine, tail) = rest.split_at_mut((w[1] - w[0]) * n);
                rest = tail;
                let first = w[0];
                s.spawn(move || fold_rows_dispatch(xt, t, n, first, mine));
            }
        });
    }

    /// The diagonal `H_ii`: ggml's imatrix values times the row count.
    pub fn diag(&self) -> Vec<f64> {
        (0..self.n).map(|i| self.sum[i * self.n + i]).collect()
    }
}
