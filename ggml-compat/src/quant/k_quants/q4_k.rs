//! Q4_K: 8 sub-blocks of 32 with 6-bit scale and min, `x = d*sc*q - dmin*m`, 4-bit `q`.
//! ggml's `quantize_row_q4_K_ref`, `quantize_row_q4_K_impl`, `dequantize_row_q4_K`.

use super::quantize_super_blocks;
use super::scale_min::{self, chunk_scales, ScaleMin};
use crate::blocks::BlockQ4K;
use crate::quant::search::Grid;
use crate::quant::with_blocks;
use crate::types::QK_K;

/// The reference search grid: `make_qkx2_quants(32, 15, .., -1.f, 0.1f, 20, false)`.
const GRID: Grid = Grid {
    rmin: -1.0,
    rdelta: 0.1,
    nstep: 20,
    use_mad: false,
};

/// Quantizes a row as ggml's `quantize_q4_K` does: the reference quantizer without an imatrix,
/// the importance-weighted one with.
pub(super) fn quantize(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    quantize_super_blocks(src, dst, imatrix, |x, y: &mut BlockQ4K, qw| {
        let s = match qw {
            None => scale_min::quantize_ref(x, 15, GRID),
            Some(qw) => scale_min::quantize_impl(x, qw, 15, false),
        };
        store(&s, y);
    });
}

/// Byte `32*c + l` of `qs` holds element `64*c + l` (low nibble) and `64*c + 32 + l` (high).
fn store(s: &ScaleMin, y: &mut BlockQ4K) {
    y.d = s.d;
    y.dmin = s.dmin;
    y.scales = s.scales;
    for (lv, q) in s.levels.chunks_exact(64).zip(y.qs.chunks_exact_mut(32)) {
        for (l, byte) in q.iter_mut().enumerate() {
            *byte = lv[l] | (lv[l + 32] << 4);
        }
    }
}

/// ggml's `dequantize_row_q4_K`.
pub(super) fn dequantize(src: &[u8], dst: &mut [f32]) {
    with_blocks::<BlockQ4K, _>(src, |blocks| {
        for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK_K)) {
            for (c, (ys, q)) in y
                .chunks_exact_mut(64)
                .zip(b.qs.chunks_exact(32))
                .enumerate()
            {
                let [d1, m1, d2, m2] = chunk_scales(b.d, b.dmin, &b.scales, c);
                let (lo, hi) = ys.split_at_mut(32);
                for ((a, h), &byte) in lo.iter_mut().zip(hi).zip(q) {
                    *a = d1 * f32::from(byte & 0xF) - m1;
                    *h = d2 * f32::from(byte >> 4) - m2;
                }
            }
        }
    });
}
