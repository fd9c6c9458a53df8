//! Q8_K: the activation type K-quant dot products pair with. 256 values, `x = d*q` with an f32
//! `d`, 8-bit `q`, and the sum of each group of 16 `q` in `bsums`. ggml's
//! `quantize_row_q8_K_ref` and `dequantize_row_q8_K`.

use super::quantize_super_blocks;
use crate::blocks::BlockQ8K;
use crate::quant::common::signed_absmax;
use crate::quant::nearest_int;
use crate::quant::with_blocks;
use crate::types::QK_K;

/// ggml's `quantize_row_q8_K_ref` (also what the CPU backend's `quantize_row_q8_K` runs on x86).
/// Q8_K takes no importance matrix. For an all-zero block ggml clears `d` and `qs` but leaves
/// `bsums` untouched; this writes zeros there, the sums of the zero quants.
pub(super) fn quantize(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    quantize_super_blocks(src, dst, None, |x, y, _| quantize_block(x, y));
}

fn quantize_block(x: &[f32; QK_K], y: &mut BlockQ8K) {
    let (max, amax) = signed_absmax(x);
    if amax == 0.0 {
        y.d = 0.0;
        y.qs = [0; QK_K];
        y.bsums = [0; QK_K / 16];
        return;
    }
    // -127 rather than -128 so that no value rounds to -128 (ggml: "for IQ2_XXS").
    let iscale = -127.0 / max;
    for (q, &v) in y.qs.iter_mut().zip(x) {
        *q = nearest_int(iscale * v).min(127) as i8;
    }
    for (s, qs) in y.bsums.iter_mut().zip(y.qs.chunks_exact(16)) {
        *s = qs.iter().map(|&q| i32::from(q)).sum::<i32>() as i16;
    }
    y.d = 1.0 / iscale;
}

/// ggml's `dequantize_row_q8_K`.
pub(super) fn dequantize(src: &[u8], dst: &mut [f32]) {
    with_blocks::<BlockQ8K, _>(src, |blocks| {
        for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK_K)) {
            for (v, &q) in y.iter_mut().zip(&b.qs) {
                *v = b.d * f32::from(q);
            }
        }
    });
}
