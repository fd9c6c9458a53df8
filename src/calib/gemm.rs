//! A safe f32 GEMM over strided views, on the `matrixmultiply` crate (pure Rust, runtime-detected
//! AVX/FMA/NEON kernels, no BLAS to install). The calibration losses are dense f32 products of
//! activations and weight differences; none of this is ggml arithmetic.

/// A read-only `(rows, cols)` view of f32 data with arbitrary (non-negative) strides.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

/// A writable row-major `(rows, cols)` matrix.
pub(crate) struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
}

impl<'a> Mat<'a> {
    /// Row-major `(rows, cols)`. Panics if `data` is shorter.
    pub(crate) fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert!(data.len() >= rows * cols, "matrix data too short");
        Mat {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose (no copy).
    pub(crate) fn t(self) -> Self {
        Mat {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// Columns `start..start + n` (no copy).
    pub(crate) fn cols(self, start: usize, n: usize) -> Self {
        assert!(start + n <= self.cols, "column range out of the matrix");
        let off = start * self.cs;
        Mat {
            data: &self.data[off.min(self.data.len())..],
            cols: n,
            ..self
        }
    }

    /// Whether every element `(r, c)` with `r < rows, c < cols` lies inside `data`.
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

impl<'a> MatMut<'a> {
    /// Row-major `(rows, cols)`. Panics if `data` is shorter.
    pub(crate) fn rows_mut(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        assert!(data.len() >= rows * cols, "matrix data too short");
        MatMut { data, rows, cols }
    }
}

impl Mat<'_> {
    /// Alias of [`MatMut::rows_mut`] so call sites read `Mat::rows_mut(..)`.
    pub(crate) fn rows_mut(data: &mut [f32], rows: usize, cols: usize) -> MatMut<'_> {
        MatMut::rows_mut(data, rows, cols)
    }
}

/// `c = a · b` (overwrites `c`). Panics if the shapes do not agree.
pub(crate) fn gemm(a: Mat, b: Mat, c: MatMut) {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    assert_eq!((c.rows, c.cols), (a.rows, b.cols), "output shape differs");
    assert!(a.in_bounds() && b.in_bounds(), "strided view out of bounds");
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.data[..m * n].fill(0.0);
        return;
    }
    // SAFETY: every element sgemm reads is (i·rs + j·cs) for i < rows, j < cols of `a` and `b`,
    // which `in_bounds` checked lies inside their slices; it writes c[i·n + j] for i < m, j < n,
    // inside `c.data` (len ≥ m·n, checked in `rows_mut`), which is a unique borrow, so nothing
    // aliases it. beta = 0 means c's old contents (possibly anything) are not read as values.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.data.as_ptr(),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr(),
            b.rs as isize,
            b.cs as isize,
            0.0,
            c.data.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The naive triple loop on strided views: transposes and column ranges included.
    #[test]
    fn matches_naive() {
        let (m, k, n) = (7, 13, 5);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 11) as f32) - 5.0).collect();
        let b: Vec<f32> = (0..n * 20)
            .map(|i| ((i * 17 % 7) as f32) * 0.5 - 1.0)
            .collect();
        // b viewed as the transpose of columns 3..16 of a (n, 20) matrix: (13, 5)
        let bv = Mat::rows(&b, n, 20).cols(3, k).t();
        let mut c = vec![f32::NAN; m * n];
        gemm(Mat::rows(&a, m, k), bv, Mat::rows_mut(&mut c, m, n));
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|p| a[i * k + p] * b[j * 20 + 3 + p]).sum();
                assert!((c[i * n + j] - want).abs() <= 1e-4 * want.abs().max(1.0));
            }
        }
    }
}
