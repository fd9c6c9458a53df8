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

/// Dot product with 8 independent partial sums (so the compiler can keep them in SIMD lanes).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, ar) = a.as_chunks::<8>();
    let (bc, br) = b.as_chunks::<8>();
    for (x, y) in ac.iter().zip(bc) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = 0f32;
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    acc.iter().sum::<f32>() + s
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
        for tile in x.chunks(TILE * n) {
            let t = tile.len() / n;
            if t == 0 {
                continue;
            }
            // xt: (n, t), feature-major so each H entry is one contiguous dot product.
            xt.clear();
            xt.resize(n * t, 0.0);
            for (r, row) in tile.chunks_exact(n).enumerate() {
                for (i, &v) in row.iter().enumerate() {
                    xt[i * t + r] = v;
                }
            }
            self.fold_tile(&xt, t, threads);
            self.rows += t as u64;
        }
        // Mirror the upper triangle the tiles filled.
        for i in 0..n {
            for j in 0..i {
                self.sum[i * n + j] = self.sum[j * n + i];
            }
        }
    }

    /// `sum[i][j] += Σ_r xt[i][r]·xt[j][r]` for `j ≥ i`, rows of `sum` split over threads by
    /// equal shares of the triangle.
    fn fold_tile(&mut self, xt: &[f32], t: usize, threads: usize) {
        let n = self.n;
        // Row bounds so that each thread gets about the same number of (i, j ≥ i) pairs.
        let total = n * (n + 1) / 2;
        let mut bounds = vec![0];
        let mut acc = 0;
        for i in 0..n {
            acc += n - i;
            if acc * threads >= total * bounds.len() && bounds.len() < threads {
                bounds.push(i + 1);
            }
        }
        bounds.push(n);
        bounds.dedup();
        thread::scope(|s| {
            let mut rest = &mut self.sum[..];
            let mut start = 0;
            for &end in &bounds[1..] {
                let (mine, tail) = rest.split_at_mut((end - start) * n);
                rest = tail;
                let first = start;
                s.spawn(move || {
                    for (ii, hrow) in mine.chunks_exact_mut(n).enumerate() {
                        let i = first + ii;
                        let xi = &xt[i * t..(i + 1) * t];
                        for j in i..n {
                            hrow[j] += f64::from(dot(xi, &xt[j * t..(j + 1) * t]));
                        }
                    }
                });
                start = end;
            }
        });
    }

    /// The diagonal `H_ii`: ggml's imatrix values times the row count.
    pub fn diag(&self) -> Vec<f64> {
        (0..self.n).map(|i| self.sum[i * self.n + i]).collect()
    }
}
