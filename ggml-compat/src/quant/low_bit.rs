//! 1- and 2-bit formats Q1_0 (sign times scale) and Q2_0 (four levels times scale), ggml ids
//! 41 and 42. ggml's `quantize_q1_0` / `quantize_q2_0` accept an importance matrix but ignore
//! it (both always run the reference quantizer).

use super::float::{fp16_to_fp32, fp32_to_fp16};
use super::{with_blocks, with_blocks_mut, QuantFns};
use crate::blocks::{BlockQ1_0, BlockQ2_0};

const QK1_0: usize = 128;
const QK2_0: usize = 64;

pub const Q1_0: QuantFns = QuantFns {
    to_float: dequantize_row_q1_0,
    quantize: quantize_q1_0,
    uses_imatrix: false,
};
pub const Q2_0: QuantFns = QuantFns {
    to_float: dequantize_row_q2_0,
    quantize: quantize_q2_0,
    uses_imatrix: false,
};

/// ggml's `quantize_row_q1_0_ref`: `d = mean(|x|)`; bit j (LSB first) is set when `x[j] >= 0`.
pub fn quantize_row_q1_0_ref(x: &[f32], y: &mut [BlockQ1_0]) {
    for (xb, yb) in x.chunks_exact(QK1_0).zip(y) {
        let mut sum_abs = 0f32;
        for &v in xb {
            sum_abs += v.abs();
        }
        yb.d = fp32_to_fp16(sum_abs / QK1_0 as f32);
        yb.qs = [0; QK1_0 / 8];
        for (j, &v) in xb.iter().enumerate() {
            if v >= 0.0 {
                yb.qs[j / 8] |= 1 << (j % 8);
            }
        }
    }
}

/// ggml's `quantize_row_q2_0_ref`: `d = amax`, `q = clamp(roundf(x/d) + 1, 0, 3)`, 2 bits per
/// weight LSB first. Since `|x/d| <= 1` the level 3 (`+2d`) is never produced.
pub fn quantize_row_q2_0_ref(x: &[f32], y: &mut [BlockQ2_0]) {
    for (xb, yb) in x.chunks_exact(QK2_0).zip(y) {
        let mut amax = 0f32;
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
            }
        }
        let d = amax;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        yb.d = fp32_to_fp16(d);
        yb.qs = [0; QK2_0 / 4];
        for (j, &v) in xb.iter().enumerate() {
            let q = ((v * id).round() as i32).wrapping_add(1).clamp(0, 3) as u8;
            yb.qs[j / 4] |= q << (2 * (j % 4));
        }
    }
}

fn quantize_q1_0(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    with_blocks_mut(dst, |y| quantize_row_q1_0_ref(src, y))
}

fn quantize_q2_0(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    with_blocks_mut(dst, |y| quantize_row_q2_0_ref(src, y))
}

/// ggml's `dequantize_row_q1_0`: `x = bit ? d : -d`.
pub fn dequantize_row_q1_0(src: &[u8], dst: &mut [f32]) {
    with_blocks(src, |x: &[BlockQ1_0]| {
        for (xb, yb) in x.iter().zip(dst.chunks_exact_mut(QK1_0)) {
            let d = fp16_to_fp32(xb.d);
            for (j, y) in yb.iter_mut().enumerate() {
                *y = if (xb.qs[j / 8] >> (j % 8)) & 1 != 0 {
                    d
                } else {
                    -d
                };
            }
        }
    })
}

/// ggml's `dequantize_row_q2_0`: `x = (q - 1) * d`.
pub fn dequantize_row_q2_0(src: &[u8], dst: &mut [f32]) {
    with_blocks(src, |x: &[BlockQ2_0]| {
        for (xb, yb) in x.iter().zip(dst.chunks_exact_mut(QK2_0)) {
            let d = fp16_to_fp32(xb.d);
            for (j, y) in yb.iter_mut().enumerate() {
                let q = (xb.qs[j / 4] >> (2 * (j % 4))) & 3;
                *y = (q as i32 - 1) as f32 * d;
            }
        }
    })
}
