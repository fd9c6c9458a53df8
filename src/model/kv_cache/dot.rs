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

#[cfg(target_arch = "x86_64")]
use super::dot_x86;

/// Whether the AVX-512 path of `dot_x86.rs` can take rows of `len` elements in `order`.
#[cfg(target_arch = "x86_64")]
fn use_x86(order: Order, len: usize) -> bool {
    len.is_multiple_of(order.lanes()) && dot_x86::available()
}

/// `k · q` over one head as [`kq_lanes`], with `k` read from the f16 cache; `row` is room for
/// one widened key row.
pub fn kq(order: Order, k: &[f16], q: &[f32], row: &mut [f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if q.len() == k.len() && use_x86(order, k.len()) {
        // SAFETY: `use_x86` checked the CPU has AVX-512 F and F16C, and the length is whole
        // steps of the order's accumulators (tinyBLAS then takes the row, as `kq_lanes` says).
        return unsafe {
            match order {
                Order::TinyBlas => dot_x86::kq::<1>(k, q),
                Order::VecDot => dot_x86::kq::<4>(k, q),
            }
        };
    }
    let row = &mut row[..k.len()];
    k.convert_to_f32_slice(row);
    kq_lanes(order, row, q)
}

/// One head of `mul_mat(v, kq)` as [`kqv_lanes`] (see there).
pub fn kqv(
    order: Order,
    v: &[f16],
    stride: usize,
    w: &[f32],
    o: &mut [f32],
    acc: &mut Vec<f32>,
    row: &mut Vec<f32>,
) {
    #[cfg(target_arch = "x86_64")]
    if use_x86(Order::TinyBlas, o.len()) {
        // SAFETY: `use_x86` checked the CPU has AVX-512 F and F16C; `o` is whole vectors.
        return unsafe {
            match order {
                Order::TinyBlas => dot_x86::kqv::<1>(v, stride, w, o, acc),
                Order::VecDot => dot_x86::kqv::<4>(v, stride, w, o, acc),
            }
        };
    }
    kqv_lanes(order, v, stride, w, o, acc, row)
}

/// Queries per tile of [`kq_tile`] and [`kqv_tile`].
pub const TILE: usize = 8;
/// Queries per call of [`kqv_tile`]; a tile of [`TILE`] takes several.
pub const KQV_TILE: usize = 4;
const _: () = assert!(TILE.is_multiple_of(KQV_TILE));
#[cfg(target_arch = "x86_64")]
const _: () = assert!(KQV_TILE == dot_x86::MAX_TILE_Q);

/// Whether [`kq_tile`] and [`kqv_tile`] can take heads of `hd` (keys) and `hd_v` (values)
/// elements on this CPU. Without them, attention takes one query at a time.
pub fn tile_available(hd: usize, hd_v: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        hd.is_multiple_of(LANES) && hd_v.is_multiple_of(LANES) && dot_x86::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (hd, hd_v);
        false
    }
}

/// [`kq`] in `Order::TinyBlas` for [`TILE`] queries (`q`, (TILE, hd), rounded to f16) against
/// the keys of the groups of 16 positions `groups`, read from the transposed keys `kt` of one
/// head (element `d` of key `16g + l` at `kt[(g·stride + d)·16 + l]`), times `scale`:
/// `scores[i·row_len + j]` for each query `i` and key `j` of those groups, each bit-identical to
/// `kq(Order::TinyBlas, ..) * scale` of that pair. Call only where [`tile_available`] holds.
pub fn kq_tile(
    kt: &[f16],
    stride: usize,
    groups: std::ops::Range<usize>,
    q: &[f32],
    scale: f32,
    scores: &mut [f32],
    row_len: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if tile_available(q.len() / TILE, LANES) {
        // SAFETY: `tile_available` checked the CPU has AVX-512 F and F16C and that the head is
        // whole vectors.
        return unsafe {
            dot_x86::kq_tile_t::<TILE>(kt, stride, groups, q, scale, scores, row_len)
        };
    }
    let _ = (kt, stride, groups, q, scale, scores, row_len);
    unreachable!("kq_tile called where tile_available is false");
}

/// [`kqv`] in `Order::TinyBlas` for [`KQV_TILE`] queries: query `i < outs.len()` weighs the
/// value rows `keys` with `w[i·row_len + j]` (the rows past its own positions hold zeros;
/// positions outside `keys` weigh zero for every query) and writes `hd` outputs to `outs[i]`,
/// each bit-identical to `kqv(Order::TinyBlas, ..)` of that query. `w` holds [`KQV_TILE`] rows
/// of `row_len`. `finite` promises every value in the rows of `keys` is finite (a faster path).
/// Call only where [`tile_available`] holds.
///
/// # Safety
/// Every `outs[i]` points to `hd` writable floats that nothing else accesses during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn kqv_tile(
    v: &[f16],
    stride: usize,
    w: &[f32],
    row_len: usize,
    keys: std::ops::Range<usize>,
    finite: bool,
    outs: &[*mut f32],
    hd: usize,
    acc: &mut Vec<f32>,
) {
    #[cfg(target_arch = "x86_64")]
    if tile_available(LANES, hd) {
        // SAFETY: `tile_available` checked the CPU features and the head width; the caller
        // vouches for `outs`.
        return unsafe { dot_x86::kqv_tile(v, stride, w, row_len, keys, finite, outs, hd, acc) };
    }
    let _ = (v, stride, w, row_len, keys, finite, outs, hd, acc);
    unreachable!("kqv_tile called where tile_available is false");
}

/// `x[i] = f16(x[i])` widened back (round to nearest even).
pub fn round_to_f16(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if dot_x86::available() {
        // SAFETY: the CPU has AVX-512 F and F16C (checked just above).
        return unsafe { dot_x86::round_to_f16(x) };
    }
    for v in x {
        *v = f16::from_f32(*v).to_f32();
    }
}

/// `x[i] = f16(x[i] · s)` widened back: the softmax's scaling by the inverse sum and ggml's
/// conversion of the weights to f16 (`ggml_vec_scale_f32`, then `GGML_CPU_FP32_TO_FP16`), in
/// one pass.
pub fn scale_round_to_f16(x: &mut [f32], s: f32) {
    #[cfg(target_arch = "x86_64")]
    if dot_x86::available() {
        // SAFETY: the CPU has AVX-512 F and F16C (checked just above).
        return unsafe { dot_x86::scale_round_to_f16(x, s) };
    }
    for v in x {
        *v = f16::from_f32(*v * s).to_f32();
    }
}

/// The largest element of `x` (NaN ignored, `NEG_INFINITY` if empty), as
/// `x.iter().fold(f32::NEG_INFINITY, f32::max)` (the maximum `ops::softmax` subtracts).
pub fn max(x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if dot_x86::available() {
        // SAFETY: the CPU has AVX-512 F (checked just above).
        return unsafe { dot_x86::max(x) };
    }
    x.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

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
    pub fn kq_lanes(order: Order, k: &[f32], q: &[f32]) -> f32 {
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
    pub fn kqv_lanes(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(seed: &mut u32, scale: f32) -> f32 {
        crate::testing::xorshift(seed) * scale
    }

    /// The f16-reading products (the AVX-512 path where the CPU has it) equal the portable
    /// lane-by-lane ones bit for bit, for one and several steps and every context length shape.
    #[test]
    fn kq_and_kqv_equal_lanes_bit_for_bit() {
        for order in [Order::VecDot, Order::TinyBlas] {
            check_order(order);
        }
    }

    fn check_order(order: Order) {
        let mut seed = 0x2545_f491u32;
        for hd in [48usize, 64, 256] {
            let stride = 3 * hd;
            for len in [1usize, 7, 64, 65, 200] {
                let cache: Vec<f16> = (0..len * stride)
                    .map(|_| f16::from_f32(noise(&mut seed, 6.0)))
                    .collect();
                let mut q: Vec<f32> = (0..hd).map(|_| noise(&mut seed, 4.0)).collect();
                round_to_f16(&mut q);
                let mut row = vec![0f32; hd];
                for j in 0..len {
                    let k = &cache[j * stride + hd..][..hd];
                    let want = {
                        let mut r = vec![0f32; hd];
                        k.convert_to_f32_slice(&mut r);
                        kq_lanes(order, &r, &q)
                    };
                    let got = kq(order, k, &q, &mut row);
                    assert_eq!(got.to_bits(), want.to_bits(), "{order:?} kq hd {hd} j {j}");
                }
                let mut w: Vec<f32> = (0..len).map(|_| noise(&mut seed, 1.0).abs()).collect();
                w[len / 2] = 0.0;
                round_to_f16(&mut w);
                let (mut a, mut b) = (vec![0f32; hd], vec![0f32; hd]);
                let (mut acc, mut row) = (Vec::new(), Vec::new());
                kqv(
                    Order::VecDot,
                    &cache[hd..],
                    stride,
                    &w,
                    &mut a,
                    &mut acc,
                    &mut row,
                );
                kqv_lanes(
                    Order::VecDot,
                    &cache[hd..],
                    stride,
                    &w,
                    &mut b,
                    &mut acc,
                    &mut row,
                );
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a), bits(&b), "kqv hd {hd} len {len}");
            }
        }
    }

    /// The one-pass scaling and rounding equals the two passes, and the vector maximum the
    /// sequential one (NaN and infinities included).
    #[test]
    fn scale_round_and_max_equal_the_plain_loops() {
        let mut seed = 11u32;
        for len in [0usize, 1, 15, 16, 17, 48, 100] {
            let x: Vec<f32> = (0..len).map(|_| noise(&mut seed, 50.0)).collect();
            let s = 1.0 / (1.0 + noise(&mut seed, 1.0).abs());
            let mut got = x.clone();
            scale_round_to_f16(&mut got, s);
            let mut want: Vec<f32> = x.iter().map(|v| v * s).collect();
            round_to_f16(&mut want);
            assert_eq!(got, want, "len {len}");
            let mut y = x.clone();
            if len > 3 {
                y[len / 2] = f32::NAN;
                y[1] = f32::NEG_INFINITY;
            }
            let want = y.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&y).to_bits(), want.to_bits(), "len {len}");
        }
        assert_eq!(max(&[f32::NEG_INFINITY; 20]), f32::NEG_INFINITY);
    }

    #[test]
    fn round_to_f16_rounds_ties_to_even() {
        let mut seed = 7u32;
        let mut x: Vec<f32> = (0..37).map(|_| noise(&mut seed, 1e5)).collect();
        x.extend([
            f32::from_bits(0x3f80_1000),
            f32::from_bits(0x3f80_3000),
            65520.0,
            -0.0,
        ]);
        let want: Vec<f32> = x.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
        round_to_f16(&mut x);
        assert_eq!(x, want);
    }
}
