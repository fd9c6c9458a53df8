//! MXFP4: OCP microscaling 4-bit floats (E2M1) with an E8M0 block exponent.
//!
//! 32 weights share one byte `e`; each weight is a 4-bit index into `kvalues_mxfp4`, the E2M1
//! values doubled so they are integers, and `x = kvalues_mxfp4[q] * 2^(e - 128)` (the halving
//! undoes the doubling). ggml's `quantize_mxfp4` ignores an importance matrix.

use super::float::e8m0_to_fp32_half;
use super::tables::KVALUES_MXFP4;
use super::{with_blocks, with_blocks_mut, QuantFns};
use crate::blocks::BlockMXFP4;

const QK_MXFP4: usize = 32;

pub const MXFP4: QuantFns = QuantFns {
    to_float: dequantize_row_mxfp4,
    quantize: quantize_mxfp4,
    uses_imatrix: false,
};

/// ggml's `best_index_mxfp4`: the first index with the smallest `|kvalues[i] * e - x|`.
fn best_index_mxfp4(x: f32, e: f32) -> u8 {
    let mut best = 0;
    let mut best_err = (KVALUES_MXFP4[0] as f32 * e - x).abs();
    for (i, &k) in KVALUES_MXFP4.iter().enumerate().skip(1) {
        let err = (k as f32 * e - x).abs();
        if err < best_err {
            best = i;
            best_err = err;
        }
    }
    best as u8
}

/// ggml's `quantize_row_mxfp4_ref`: `e = floor(log2(amax)) - 2 + 127` (so the largest weight
/// lands near the top E2M1 value 6), then the nearest table entry per weight.
pub fn quantize_row_mxfp4_ref(x: &[f32], y: &mut [BlockMXFP4]) {
    for (xb, yb) in x.chunks_exact(QK_MXFP4).zip(y) {
        let mut amax = 0f32;
        for &v in xb {
            if amax < v.abs() {
                amax = v.abs();
            }
        }
        // C's `(uint8_t)` of the float goes through an int (x86 wraps it to 8 bits).
        let e = if amax > 0.0 {
            (amax.log2().floor() - 2.0 + 127.0) as i32 as u8
        } else {
            0
        };
        let d = e8m0_to_fp32_half(e);
        yb.e = e;
        for j in 0..QK_MXFP4 / 2 {
            let q0 = best_index_mxfp4(xb[j], d);
            let q1 = best_index_mxfp4(xb[j + QK_MXFP4 / 2], d);
            yb.qs[j] = q0 | (q1 << 4);
        }
    }
}

fn quantize_mxfp4(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    with_blocks_mut(dst, |y| quantize_row_mxfp4_ref(src, y))
}

/// ggml's `dequantize_row_mxfp4`: `x = kvalues_mxfp4[q] * e8m0_to_fp32_half(e)`.
pub fn dequantize_row_mxfp4(src: &[u8], dst: &mut [f32]) {
    with_blocks(src, |x: &[BlockMXFP4]| {
        for (xb, yb) in x.iter().zip(dst.chunks_exact_mut(QK_MXFP4)) {
            let d = e8m0_to_fp32_half(xb.e);
            for (j, &q) in xb.qs.iter().enumerate() {
                yb[j] = KVALUES_MXFP4[(q & 0x0f) as usize] as f32 * d;
                yb[j + QK_MXFP4 / 2] = KVALUES_MXFP4[(q >> 4) as usize] as f32 * d;
            }
        }
    })
}
