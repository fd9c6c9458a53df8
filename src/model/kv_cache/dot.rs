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

/// Accumulators of one output: tinyBLAS uses the first 16 lanes, `vec_dot_f16` all 64.
struct Acc([f32; STEP]);

impl Acc {
    #[inline(always)]
    fn add(&mut self, order: Order, i: usize, a: f32, b: f32) {
        let lane = match order {
            Order::TinyBlas => i % LANES,
            Order::VecDot => i % STEP,
        };
        self.0[lane] = a.mul_add(b, self.0[lane]);
    }

    #[inline(always)]
    fn sum(&self, order: Order) -> f32 {
        let part = |r: usize| -> [f32; LANES] { self.0[r * LANES..][..LANES].try_into().unwrap() };
        match order {
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
    /// `k · q` over one head: `k` from the F16 cache, `q` already rounded to f16 (as ggml
    /// converts the f32 queries to the cache type before the product).
    pub fn kq(order: Order, k: &[f16], q: &[f32]) -> f32 {
        let mut acc = Acc([0.0; STEP]);
        let whole = match order {
            Order::TinyBlas if k.len().is_multiple_of(LANES) => k.len(),
            // tinyBLAS declines a row it cannot split into whole vectors; vec_dot_f16 then runs.
            _ => k.len() / STEP * STEP,
        };
        let order = if whole == k.len() { order } else { Order::VecDot };
        for (i, (k, &q)) in k[..whole].iter().zip(&q[..whole]).enumerate() {
            acc.add(order, i, k.to_f32(), q);
        }
        let mut sum = acc.sum(order) as f64;
        for (k, &q) in k[whole..].iter().zip(&q[whole..]) {
            sum += (k.to_f32() * q) as f64;
        }
        sum as f32
    }
}

super::super::vmath::with_fma! {
    /// `o[d] = Σ_j w[j] · v[j·stride + d]` over positions `j` of `w` (the f16-rounded softmax
    /// weights, zero where masked) — one row of ggml's `mul_mat(v, kq)` on the transposed value
    /// cache, whose rows (one per output `d`) run over all cells; cells past `w` hold weight 0.
    pub fn kqv(order: Order, v: &[f16], stride: usize, w: &[f32], o: &mut [f32]) {
        let mut acc: Vec<Acc> = (0..o.len()).map(|_| Acc([0.0; STEP])).collect();
        for (j, &wj) in w.iter().enumerate() {
            if wj == 0.0 {
                continue; // adds exactly zero
            }
            let row = &v[j * stride..][..o.len()];
            for (a, x) in acc.iter_mut().zip(row) {
                a.add(order, j, x.to_f32(), wj);
            }
        }
        for (o, a) in o.iter_mut().zip(&acc) {
            *o = a.sum(order);
        }
    }
}
