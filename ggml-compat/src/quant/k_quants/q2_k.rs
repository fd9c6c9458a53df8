//! Q2_K: 16 sub-blocks of 16 with a 4-bit scale and 4-bit min each, `x = d*sc*q - dmin*m`,
//! 2-bit `q`. ggml's `quantize_row_q2_K_ref`, `quantize_row_q2_K_impl`, `dequantize_row_q2_K`.

use super::{pack_2bit, quantize_super_blocks, requantize_asym};
use crate::blocks::BlockQ2K;
use crate::quant::common::{imatrix_weights, sum_sq};
use crate::quant::float::fp32_to_fp16 as f16;
use crate::quant::nearest_int;
use crate::quant::search::{
    make_qkx2_quants, make_qkx3_quants, make_qp_quants, Grid, IMATRIX_GRID,
};
use crate::quant::with_blocks;
use crate::types::QK_K;

/// Quantizes a row as ggml's `quantize_q2_K` does: the reference quantizer without an imatrix,
/// the importance-weighted one with.
pub(super) fn quantize(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    quantize_super_blocks(src, dst, imatrix, |x, y: &mut BlockQ2K, qw| match qw {
        None => quantize_block_ref(x, y),
        Some(qw) => quantize_block_impl(x, y, qw),
    });
}

/// One super-block of ggml's `quantize_row_q2_K_ref`.
fn quantize_block_ref(x: &[f32; QK_K], y: &mut BlockQ2K) {
    const Q4SCALE: f32 = 15.0;
    let grid = Grid {
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: true,
    };
    let mut levels = [0u8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    let mut mins = [0f32; QK_K / 16];
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for (j, (xs, ls)) in x
        .chunks_exact(16)
        .zip(levels.chunks_exact_mut(16))
        .enumerate()
    {
        let mut weights = [0f32; 16];
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = v.abs();
        }
        (scales[j], mins[j]) = make_qkx2_quants(3, xs, &weights, ls, grid);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }

    if max_scale > 0.0 {
        let iscale = Q4SCALE / max_scale;
        for (s, &scale) in y.scales.iter_mut().zip(&scales) {
            *s = nearest_int(iscale * scale) as u8;
        }
        y.d = f16(max_scale / Q4SCALE);
    } else {
        y.scales = [0; QK_K / 16];
        y.d = f16(0.0);
    }
    if max_min > 0.0 {
        let iscale = Q4SCALE / max_min;
        for (s, &min) in y.scales.iter_mut().zip(&mins) {
            *s |= (nearest_int(iscale * min) << 4) as u8;
        }
        y.dmin = f16(max_min / Q4SCALE);
    } else {
        y.dmin = f16(0.0);
    }
    requantize(x, y, &mut levels);
}

/// One super-block of ggml's `quantize_row_q2_K_impl`; `qw` is the imatrix slice for it.
fn quantize_block_impl(x: &[f32; QK_K], y: &mut BlockQ2K, qw: &[f32]) {
    let mut levels = [0u8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    let mut mins = [0f32; QK_K / 16];
    let mut sw = [0f32; QK_K / 16];
    let sigma2 = sum_sq(x) / QK_K as f32;
    for (j, (xs, ls)) in x
        .chunks_exact(16)
        .zip(levels.chunks_exact_mut(16))
        .enumerate()
    {
        let mut weights = [0f32; 16];
        sw[j] = imatrix_weights(&qw[16 * j..16 * (j + 1)], xs, sigma2, &mut weights);
        (scales[j], mins[j]) = make_qkx3_quants(3, xs, &weights, ls, IMATRIX_GRID);
    }

    let mut ls = [0u8; QK_K / 16];
    let mut lm = [0u8; QK_K / 16];
    let dm = make_qp_quants(15, &scales, &mut ls, &sw);
    let mm = make_qp_quants(15, &mins, &mut lm, &sw);
    y.d = f16(dm);
    y.dmin = f16(mm);
    for (s, (&l, &m)) in y.scales.iter_mut().zip(ls.iter().zip(&lm)) {
        *s = l | (m << 4);
    }
    requantize(x, y, &mut levels);
}

/// Re-rounds every sub-block against its stored scale and min, then packs `qs`.
fn requantize(x: &[f32; QK_K], y: &mut BlockQ2K, levels: &mut [u8; QK_K]) {
    let (d, dmin) = (y.d.to_f32(), y.dmin.to_f32());
    for ((xs, ls), &sc) in x
        .chunks_exact(16)
        .zip(levels.chunks_exact_mut(16))
        .zip(&y.scales)
    {
        let dl = d * f32::from(sc & 0xF);
        let ml = dmin * f32::from(sc >> 4);
        requantize_asym(xs, ls, dl, ml, 3);
    }
    pack_2bit(levels, &mut y.qs);
}

/// ggml's `dequantize_row_q2_K`.
pub(super) fn dequantize(src: &[u8], dst: &mut [f32]) {
    with_blocks::<BlockQ2K, _>(src, |blocks| {
        for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK_K)) {
            let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
            // Sub-block `g` (16 values) sits in bits `2*((g/2)%4)` of `qs[32*(g/8) + 16*(g%2)..]`.
            for (g, (ys, &sc)) in y.chunks_exact_mut(16).zip(&b.scales).enumerate() {
                let dl = d * f32::from(sc & 0xF);
                let ml = dmin * f32::from(sc >> 4);
                let shift = 2 * ((g / 2) % 4);
                let q = &b.qs[32 * (g / 8) + 16 * (g % 2)..][..16];
                for (v, &byte) in ys.iter_mut().zip(q) {
                    *v = dl * f32::from((byte >> shift) & 3) - ml;
                }
            }
        }
    });
}
