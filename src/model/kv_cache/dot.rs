//! The two dot products of attention, summed in the order ggml's x86 AVX-512 build sums them.
//!
//! `mul_mat` with F16 operands goes through llamafile's tinyBLAS (`tinyBLAS<16, __m512, ...>` in
//! `ggml-cpu/llamafile/sgemm.cpp`) when the batch has two or more tokens: one 16-lane
//! accumulator per output, element `l` into lane `l % 16` by fused multiply-add, then
//! `_mm512_reduce_add_ps`. A single token goes through `ggml_vec_dot_f16` instead: four 16-lane
//! accumulators over steps of 64, reduced `(a0 + a2) + (a1 + a3)` and then across lanes, with
//! elements past the last whole step added one by one in f64.

use super::super::vmath::{reduce_add_16, LANES};
use half::f16;
use half::slice::HalfFloatSliceExt;

/// Which of ggml's two F16 matmul paths to follow.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Order {
    /// llamafile tinyBLAS: a batch of two or more tokens.
    TinyBlas,
    /// `ggml_vec_dot_f16`: one token.
    VecDot,
}

/// Elements per `ggml_vec_dot_f16` step (`GGML_F16_STEP` with AVX-512).
const STEP: usize = 4 * LANES;

impl Order {
    /// Accumulator lanes: tinyBLAS one 16-lane vector, `vec_dot_f16` four.
    fn lanes(self) -> usize {
        match self {
            Order::TinyBlas => LANES,
            Order::VecDot => STEP,
        }
    }

    /// The sum of the accumulator lanes `acc[0..self.lanes()]`, in ggml's order.
    #[inline(always)]
    fn reduce(self, acc: &[f32]) -> f32 {
        let part = |r: usize| -> [f32; LANES] { acc[r * LANES..][..LANES].try_into().unwrap() };
        match self {
            Order::TinyBlas => reduce_add_16(&part(0)),
            Order::VecDot => {
                let (a0, a1, a2, a3) = (part(0), part(1), part(2), part(3));
                let mut s = [0f32; LANES];
                for l in 0..LANES {
                    s[l] = (a0[l] + a2[l]) + (a1[l] + a3[l]);
                }
                reduce_add_16(&s)
            }
        }
    }
}

super::super::vmath::with_fma! {
    /// `k · q` over one head: `k` (the cache row, already widened from f16) times `q` (already
    /// rounded to f16, as ggml converts the f32 queries to the cache type before the product).
    pub fn kq(order: Order, k: &[f32], q: &[f32]) -> f32 {
        // tinyBLAS declines a row it cannot split into whole vectors; vec_dot_f16 then runs.
        let order = if order == Order::TinyBlas && !k.len().is_multiple_of(LANES) {
            Order::VecDot
        } else {
            order
        };
        let lanes = order.lanes();
        let whole = k.len() / lanes * lanes;
        let mut acc = [0f32; STEP];
        let acc = &mut acc[..lanes];
        for (k, q) in k[..whole].chunks_exact(lanes).zip(q[..whole].chunks_exact(lanes)) {
            for ((a, &k), &q) in acc.iter_mut().zip(k).zip(q) {
                *a = k.mul_add(q, *a);
            }
        }
        let mut sum = order.reduce(acc) as f64;
        for (k, &q) in k[whole..].iter().zip(&q[whole..]) {
            sum += (k * q) as f64;
        }
        sum as f32
    }
}

super::super::vmath::with_fma! {
    /// `o[d] = Σ_j w[j] · v[j·stride + d]` over positions `j` of `w` (the f16-rounded softmax
    /// weights, zero where masked) — one row of ggml's `mul_mat(v, kq)` on the transposed value
    /// cache, whose rows (one per output `d`) run over all cells; cells past `w` hold weight 0,
    /// and ggml's rows are whole vectors (the cache view is a multiple of 256 cells). `acc` is
    /// scratch space, `row` room for one widened value row.
    pub fn kqv(
        order: Order,
        v: &[f16],
        stride: usize,
        w: &[f32],
        o: &mut [f32],
        acc: &mut Vec<f32>,
        row: &mut Vec<f32>
    ) {
        let (lanes, hd) = (order.lanes(), o.len());
        // acc[lane][d]: the lane position j goes to, for every output d.
        acc.clear();
        acc.resize(lanes * hd, 0.0);
        row.resize(hd, 0.0);
        for (j, &wj) in w.iter().enumerate() {
            if wj == 0.0 {
                continue; // adds exactly zero
            }
            v[j * stride..][..hd].convert_to_f32_slice(row);
            let a = &mut acc[(j % lanes) * hd..][..hd];
            for (a, &x) in a.iter_mut().zip(row.iter()) {
                *a = x.mul_add(wj, *a);
            }
        }
        let mut lane_vals = [0f32; STEP];
        for (d, o) in o.iter_mut().enumerate() {
            for (l, v) in lane_vals[..lanes].iter_mut().enumerate() {
                *v = acc[l * hd + d];
            }
            *o = order.reduce(&lane_vals[..lanes]);
        }
    }
}
