//! Q5_K: 8 sub-blocks of 32 with 6-bit scale and min, `x = d*sc*q - dmin*m`, 5-bit `q` (low
//! nibbles in `qs`, fifth bits in `qh`). ggml's `quantize_row_q5_K_ref`,
//! `quantize_row_q5_K_impl`, `dequantize_row_q5_K`.

use super::quantize_super_blocks;
use super::scale_min::{self, chunk_scales, ScaleMin};
use crate::blocks::BlockQ5K;
use crate::quant::search::Grid;
use crate::quant::with_blocks;
use crate::types::QK_K;

/// The reference search grid: `make_qkx2_quants(32, 31, .., -0.5f, 0.1f, 15, false)`.
const GRID: Grid = Grid {
    rmin: -0.5,
    rdelta: 0.1,
    nstep: 15,
    use_mad: false,
};

/// Quantizes a row as ggml's `quantize_q5_K` does: the reference quantizer without an imatrix,
/// the importance-weighted one with.
pub(super) fn quantize(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    quantize_super_blocks(src, dst, imatrix, |x, y: &mut BlockQ5K, qw| {
        let s = match qw {
            None => scale_min::quantize_ref(x, 31, GRID),
            Some(qw) => scale_min::quantize_impl(x, qw, 31, true),
        };
        store(&s, y);
    });
}

/// Chunk `c` of 64 values: low nibbles as in Q4_K in `qs[32*c..]`; the fifth bit of element
/// `64*c + l` is bit `2c` of `qh[l]`, of element `64*c + 32 + l` bit `2c+1`.
fn store(s: &ScaleMin, y: &mut BlockQ5K) {
    y.d = s.d;
    y.dmin = s.dmin;
    y.scales = s.scales;
    y.qh = [0; QK_K / 8];
    for (c, (lv, ql)) in s
        .levels
        .chunks_exact(64)
        .zip(y.qs.chunks_exact_mut(32))
        .enumerate()
    {
        let (m1, m2) = (1u8 << (2 * c), 2u8 << (2 * c));
        for (j, byte) in ql.iter_mut().enumerate() {
            let (mut l1, mut l2) = (lv[j], lv[j + 32]);
            if l1 > 15 {
                l1 -= 16;
                y.qh[j] |= m1;
            }
            if l2 > 15 {
                l2 -= 16;
                y.qh[j] |= m2;
            }
            *byte = l1 | (l2 << 4);
        }
    }
}

/// ggml's `dequantize_row_q5_K`.
pub(super) fn dequantize(src: &[u8], dst: &mut [f32]) {
    with_blocks::<BlockQ5K, _>(src, |blocks| {
        for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK_K)) {
            for (c, (ys, q)) in y
                .chunks_exact_mut(64)
                .zip(b.qs.chunks_exact(32))
                .enumerate()
            {
                let [d1, m1, d2, m2] = chunk_scales(b.d, b.dmin, &b.scales, c);
                let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
                let (lo, hi) = ys.split_at_mut(32);
                for (((a, h), &byte), &qh) in lo.iter_mut().zip(hi).zip(q).zip(&b.qh) {
                    let b1 = if qh & u1 != 0 { 16 } else { 0 };
                    let b2 = if qh & u2 != 0 { 16 } else { 0 };
                    *a = d1 * f32::from((byte & 0xF) + b1) - m1;
                    *h = d2 * f32::from((byte >> 4) + b2) - m2;
                }
            }
        }
    });
}
