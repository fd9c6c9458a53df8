//! The original 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1.
//!
//! Without an importance matrix each type uses ggml's `quantize_row_*_ref` (amax or min/max
//! scaling, no search). With one, Q4_0 and Q5_0 run `make_qx_quants` (symmetric, weighted) and
//! Q4_1 and Q5_1 run `make_qkx3_quants` (scale + min, weighted), all with weights
//! `imatrix[j] * sqrt(sigma2 + x[j]²)` where `sigma2` is the mean square of the whole row.
//! Q8_0 and Q8_1 ignore an importance matrix, as ggml does.

use super::common::{imatrix_weights, signed_absmax, sum_sq};
use super::float::{fp16_to_fp32, fp32_to_fp16};
use super::search::{make_qkx3_quants, make_qx_quants, IMATRIX_GRID};
use super::{with_blocks, with_blocks_mut, QuantFns};
use crate::blocks::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};

const QK: usize = 32;

pub const Q4_0: QuantFns = QuantFns {
    to_float: dequantize_row_q4_0,
    quantize: quantize_q4_0,
    uses_imatrix: true,
};
pub const Q4_1: QuantFns = QuantFns {
    to_float: dequantize_row_q4_1,
    quantize: quantize_q4_1,
    uses_imatrix: true,
};
pub const Q5_0: QuantFns = QuantFns {
    to_float: dequantize_row_q5_0,
    quantize: quantize_q5_0,
    uses_imatrix: true,
};
pub const Q5_1: QuantFns = QuantFns {
    to_float: dequantize_row_q5_1,
    quantize: quantize_q5_1,
    uses_imatrix: true,
};
pub const Q8_0: QuantFns = QuantFns {
    to_float: dequantize_row_q8_0,
    quantize: quantize_q8_0,
    uses_imatrix: false,
};
pub const Q8_1: QuantFns = QuantFns {
    to_float: dequantize_row_q8_1,
    quantize: quantize_q8_1,
    uses_imatrix: false,
};

/// `sum(x²) / n` over a whole row: ggml's `sigma2` in the legacy `quantize_row_*_impl`.
fn mean_square(x: &[f32]) -> f32 {
    sum_sq(x) / x.len() as f32
}

/// Smallest and largest value, starting from `(FLT_MAX, -FLT_MAX)` as ggml does.
fn min_max(x: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// `1/d`, or 0 when `d` is 0 (ggml's `d ? 1.0f/d : 0.0f`).
#[inline]
fn inverse(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

/// C's `(int8_t)(float)`: truncation toward zero through an `int` as x86 does it.
#[inline]
fn trunc_i8(v: f32) -> i32 {
    v as i32 as i8 as i32
}

/// The 5th bits of 32 five-bit levels packed as ggml's `qh` (bit j for element j).
fn pack_qh(l: impl Iterator<Item = u8>) -> [u8; 4] {
    let mut qh = 0u32;
    for (j, q) in l.enumerate() {
        qh |= (((q & 0x10) >> 4) as u32) << j;
    }
    qh.to_le_bytes()
}

/// ggml's `quantize_row_q4_0_ref`: `d = max / -8`, `q = min(15, trunc(x/d + 8.5))`.
pub fn quantize_row_q4_0_ref(x: &[f32], y: &mut [BlockQ4_0]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y) {
        let d = signed_absmax(xb).0 / -8.0;
        let id = inverse(d);
        yb.d = fp32_to_fp16(d);
        for j in 0..QK / 2 {
            let q0 = trunc_i8(xb[j] * id + 8.5).min(15) as u8;
            let q1 = trunc_i8(xb[j + QK / 2] * id + 8.5).min(15) as u8;
            yb.qs[j] = q0 | (q1 << 4);
        }
    }
}

/// ggml's `quantize_row_q4_1_ref`: `d = (max - min) / 15`, `m = min`.
pub fn quantize_row_q4_1_ref(x: &[f32], y: &mut [BlockQ4_1]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y) {
        let (min, max) = min_max(xb);
        let d = (max - min) / 15.0;
        let id = inverse(d);
        yb.d = fp32_to_fp16(d);
        yb.m = fp32_to_fp16(min);
        for j in 0..QK / 2 {
            let q0 = trunc_i8((xb[j] - min) * id + 0.5).min(15) as u8;
            let q1 = trunc_i8((xb[j + QK / 2] - min) * id + 0.5).min(15) as u8;
            yb.qs[j] = q0 | (q1 << 4);
        }
    }
}

/// ggml's `quantize_row_q5_0_ref`: `d = max / -16`, `q = min(31, trunc(x/d + 16.5))`.
pub fn quantize_row_q5_0_ref(x: &[f32], y: &mut [BlockQ5_0]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y) {
        let d = signed_absmax(xb).0 / -16.0;
        let id = inverse(d);
        yb.d = fp32_to_fp16(d);
        let l: [u8; QK] = std::array::from_fn(|j| trunc_i8(xb[j] * id + 16.5).min(31) as u8);
        pack_q5(&l, &mut yb.qs, &mut yb.qh);
    }
}

/// ggml's `quantize_row_q5_1_ref`: `d = (max - min) / 31`, `m = min`.
pub fn quantize_row_q5_1_ref(x: &[f32], y: &mut [BlockQ5_1]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y) {
        let (min, max) = min_max(xb);
        let d = (max - min) / 31.0;
        let id = inverse(d);
        yb.d = fp32_to_fp16(d);
        yb.m = fp32_to_fp16(min);
        // ggml casts straight to uint8_t here, without the min(31).
        let l: [u8; QK] = std::array::from_fn(|j| ((xb[j] - min) * id + 0.5) as i32 as u8);
        pack_q5(&l, &mut yb.qs, &mut yb.qh);
    }
}

/// Low nibbles of element j and j+16 share byte j; 5th bits go to `qh`.
fn pack_q5(l: &[u8; QK], qs: &mut [u8; 16], qh: &mut [u8; 4]) {
    for j in 0..QK / 2 {
        qs[j] = (l[j] & 0x0f) | ((l[j + QK / 2] & 0x0f) << 4);
    }
    *qh = pack_qh(l.iter().copied());
}

/// ggml's `quantize_row_q8_0_ref`: `d = amax / 127`, `q = roundf(x/d)` (half away from zero).
pub fn quantize_row_q8_0_ref(x: &[f32], y: &mut [BlockQ8_0]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y) {
        let (d, id) = q8_scale(xb);
        yb.d = fp32_to_fp16(d);
        for (q, &v) in yb.qs.iter_mut().zip(xb) {
            *q = (v * id).round() as i8;
        }
    }
}

/// ggml's `quantize_row_q8_1_ref`: Q8_0 plus `s = d * sum(q)`.
pub fn quantize_row_q8_1_ref(x: &[f32], y: &mut [BlockQ8_1]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y) {
        let (d, id) = q8_scale(xb);
        yb.d = fp32_to_fp16(d);
        let mut sum = 0i32;
        for (q, &v) in yb.qs.iter_mut().zip(xb) {
            *q = (v * id).round() as i8;
            sum += *q as i32;
        }
        yb.s = fp32_to_fp16(sum as f32 * d);
    }
}

fn q8_scale(xb: &[f32]) -> (f32, f32) {
    let mut amax = 0f32;
    for &v in xb {
        amax = if amax > v.abs() { amax } else { v.abs() };
    }
    let d = amax / 127.0;
    (d, inverse(d))
}

/// ggml's `quantize_row_q4_0_impl` (with quant_weights): `make_qx_quants(32, 8, .., 1, w)`.
fn quantize_row_q4_0_impl(x: &[f32], y: &mut [BlockQ4_0], qw: &[f32]) {
    let sigma2 = mean_square(x);
    let mut w = [0f32; QK];
    let mut l = [0i8; QK];
    for ((xb, qb), yb) in x.chunks_exact(QK).zip(qw.chunks_exact(QK)).zip(y) {
        imatrix_weights(qb, xb, sigma2, &mut w);
        let d = make_qx_quants(8, xb, &mut l, Some(&w));
        yb.d = fp32_to_fp16(d);
        for j in 0..QK / 2 {
            yb.qs[j] = l[j] as u8 | ((l[j + QK / 2] as u8) << 4);
        }
    }
}

/// ggml's `quantize_row_q5_0_impl` (with quant_weights): `make_qx_quants(32, 16, .., 1, w)`.
fn quantize_row_q5_0_impl(x: &[f32], y: &mut [BlockQ5_0], qw: &[f32]) {
    let sigma2 = mean_square(x);
    let mut w = [0f32; QK];
    let mut l = [0i8; QK];
    for ((xb, qb), yb) in x.chunks_exact(QK).zip(qw.chunks_exact(QK)).zip(y) {
        imatrix_weights(qb, xb, sigma2, &mut w);
        let d = make_qx_quants(16, xb, &mut l, Some(&w));
        yb.d = fp32_to_fp16(d);
        pack_q5(&l.map(|q| q as u8), &mut yb.qs, &mut yb.qh);
    }
}

/// ggml's `quantize_row_q4_1_impl` (with quant_weights):
/// `make_qkx3_quants(32, 15, .., w, -0.9, 0.05, 36, false)`.
fn quantize_row_q4_1_impl(x: &[f32], y: &mut [BlockQ4_1], qw: &[f32]) {
    let sigma2 = mean_square(x);
    let mut w = [0f32; QK];
    let mut l = [0u8; QK];
    for ((xb, qb), yb) in x.chunks_exact(QK).zip(qw.chunks_exact(QK)).zip(y) {
        imatrix_weights(qb, xb, sigma2, &mut w);
        let (scale, the_min) = make_qkx3_quants(15, xb, &w, &mut l, IMATRIX_GRID);
        yb.d = fp32_to_fp16(scale);
        yb.m = fp32_to_fp16(-the_min);
        for j in 0..QK / 2 {
            yb.qs[j] = l[j] | (l[j + QK / 2] << 4);
        }
    }
}

/// ggml's `quantize_row_q5_1_impl` (with quant_weights):
/// `make_qkx3_quants(32, 31, .., w, -0.9, 0.05, 36, false)`.
fn quantize_row_q5_1_impl(x: &[f32], y: &mut [BlockQ5_1], qw: &[f32]) {
    let sigma2 = mean_square(x);
    let mut w = [0f32; QK];
    let mut l = [0u8; QK];
    for ((xb, qb), yb) in x.chunks_exact(QK).zip(qw.chunks_exact(QK)).zip(y) {
        imatrix_weights(qb, xb, sigma2, &mut w);
        let (scale, the_min) = make_qkx3_quants(31, xb, &w, &mut l, IMATRIX_GRID);
        yb.d = fp32_to_fp16(scale);
        yb.m = fp32_to_fp16(-the_min);
        pack_q5(&l, &mut yb.qs, &mut yb.qh);
    }
}

/// ggml's `quantize_q4_0` for one row: `_ref` without an imatrix, `_impl` with one.
fn quantize_q4_0(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    with_blocks_mut(dst, |y| match imatrix {
        Some(qw) => quantize_row_q4_0_impl(src, y, qw),
        None => quantize_row_q4_0_ref(src, y),
    })
}

/// ggml's `quantize_q4_1` for one row.
fn quantize_q4_1(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    with_blocks_mut(dst, |y| match imatrix {
        Some(qw) => quantize_row_q4_1_impl(src, y, qw),
        None => quantize_row_q4_1_ref(src, y),
    })
}

/// ggml's `quantize_q5_0` for one row.
fn quantize_q5_0(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    with_blocks_mut(dst, |y| match imatrix {
        Some(qw) => quantize_row_q5_0_impl(src, y, qw),
        None => quantize_row_q5_0_ref(src, y),
    })
}

/// ggml's `quantize_q5_1` for one row.
fn quantize_q5_1(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    with_blocks_mut(dst, |y| match imatrix {
        Some(qw) => quantize_row_q5_1_impl(src, y, qw),
        None => quantize_row_q5_1_ref(src, y),
    })
}

/// ggml's `quantize_q8_0` for one row (always the reference quantizer).
fn quantize_q8_0(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    with_blocks_mut(dst, |y| quantize_row_q8_0_ref(src, y))
}

/// ggml's `quantize_row_q8_1_ref` for one row.
fn quantize_q8_1(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    with_blocks_mut(dst, |y| quantize_row_q8_1_ref(src, y))
}

/// ggml's `dequantize_row_q4_0`: `x = (q - 8) * d`.
pub fn dequantize_row_q4_0(src: &[u8], dst: &mut [f32]) {
    with_blocks(src, |x: &[BlockQ4_0]| {
        for (xb, yb) in x.iter().zip(dst.chunks_exact_mut(QK)) {
            let d = fp16_to_fp32(xb.d);
            for (j, &q) in xb.qs.iter().enumerate() {
                yb[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
                yb[j + QK / 2] = ((q >> 4) as i32 - 8) as f32 * d;
            }
        }
    })
}

/// ggml's `dequantize_row_q4_1`: `x = q * d + m`.
pub fn dequantize_row_q4_1(src: &[u8], dst: &mut [f32]) {
    with_blocks(src, |x: &[BlockQ4_1]| {
        for (xb, yb) in x.iter().zip(dst.chunks_exact_mut(QK)) {
            let d = fp16_to_fp32(xb.d);
            let m = fp16_to_fp32(xb.m);
            for (j, &q) in xb.qs.iter().enumerate() {
                yb[j] = (q & 0x0f) as f32 * d + m;
                yb[j + QK / 2] = (q >> 4) as f32 * d + m;
            }
        }
    })
}

/// The 5-bit level of element j from its nibble and `qh`.
#[inline]
fn q5_level(qs: &[u8; 16], qh: u32, j: usize) -> u8 {
    let nibble = if j < QK / 2 {
        qs[j] & 0x0f
    } else {
        qs[j - QK / 2] >> 4
    };
    nibble | ((((qh >> j) & 1) as u8) << 4)
}

/// ggml's `dequantize_row_q5_0`: `x = (q - 16) * d`.
pub fn dequantize_row_q5_0(src: &[u8], dst: &mut [f32]) {
    with_blocks(src, |x: &[BlockQ5_0]| {
        for (xb, yb) in x.iter().zip(dst.chunks_exact_mut(QK)) {
            let d = fp16_to_fp32(xb.d);
            let qh = u32::from_le_bytes(xb.qh);
            for (j, y) in yb.iter_mut().enumerate() {
                *y = (q5_level(&xb.qs, qh, j) as i32 - 16) as f32 * d;
            }
        }
    })
}

/// ggml's `dequantize_row_q5_1`: `x = q * d + m`.
pub fn dequantize_row_q5_1(src: &[u8], dst: &mut [f32]) {
    with_blocks(src, |x: &[BlockQ5_1]| {
        for (xb, yb) in x.iter().zip(dst.chunks_exact_mut(QK)) {
            let d = fp16_to_fp32(xb.d);
            let m = fp16_to_fp32(xb.m);
            let qh = u32::from_le_bytes(xb.qh);
            for (j, y) in yb.iter_mut().enumerate() {
                *y = q5_level(&xb.qs, qh, j) as f32 * d + m;
            }
        }
    })
}

/// ggml's `dequantize_row_q8_0`: `x = q * d`.
pub fn dequantize_row_q8_0(src: &[u8], dst: &mut [f32]) {
    with_blocks(src, |x: &[BlockQ8_0]| {
        for (xb, yb) in x.iter().zip(dst.chunks_exact_mut(QK)) {
            let d = fp16_to_fp32(xb.d);
            for (y, &q) in yb.iter_mut().zip(&xb.qs) {
                *y = q as f32 * d;
            }
        }
    })
}

/// `x = q * d`. ggml registers no `to_float` for Q8_1 (it is only an activation format); this is
/// the dequantization its layout implies, the same as Q8_0's.
pub fn dequantize_row_q8_1(src: &[u8], dst: &mut [f32]) {
    with_blocks(src, |x: &[BlockQ8_1]| {
        for (xb, yb) in x.iter().zip(dst.chunks_exact_mut(QK)) {
            let d = fp16_to_fp32(xb.d);
            for (y, &q) in yb.iter_mut().zip(&xb.qs) {
                *y = q as f32 * d;
            }
        }
    })
}
