//! Q6_K: 16 sub-blocks of 16 with a signed 8-bit scale each, `x = d*sc*(q-32)`, 6-bit `q` (low
//! nibbles in `ql`, high 2 bits in `qh`). ggml's `quantize_row_q6_K_ref`,
//! `quantize_row_q6_K_impl`, `dequantize_row_q6_K`.

use super::quantize_super_blocks;
use crate::blocks::BlockQ6K;
use crate::quant::common::GROUP_MAX_EPS;
use crate::quant::float::fp32_to_fp16 as f16;
use crate::quant::nearest_int;
use crate::quant::search::make_qx_quants;
use crate::quant::with_blocks;
use crate::types::QK_K;
use bytemuck::Zeroable;

/// Quantizes a row as ggml's `quantize_q6_K` does: `quantize_row_q6_K_ref` without an imatrix,
/// `quantize_row_q6_K_impl` with (which weights each group's search by the imatrix alone).
pub(super) fn quantize(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    quantize_super_blocks(src, dst, imatrix, quantize_block);
}

/// One super-block; the reference and importance-weighted paths differ only in the weights
/// handed to `make_qx_quants` (`x²` versus the imatrix).
fn quantize_block(x: &[f32; QK_K], y: &mut BlockQ6K, qw: Option<&[f32]>) {
    let mut levels = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
    for (ib, (xs, ls)) in x
        .chunks_exact(16)
        .zip(levels.chunks_exact_mut(16))
        .enumerate()
    {
        let w = qw.map(|qw| &qw[16 * ib..16 * (ib + 1)]);
        let scale = make_qx_quants(32, xs, ls, w);
        scales[ib] = scale;
        if scale.abs() > max_abs_scale {
            max_abs_scale = scale.abs();
            max_scale = scale;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        *y = BlockQ6K::zeroed();
        return;
    }

    let iscale = -128.0 / max_scale;
    y.d = f16(1.0 / iscale);
    for (s, &scale) in y.scales.iter_mut().zip(&scales) {
        *s = nearest_int(iscale * scale).min(127) as i8;
    }
    let d_all = y.d.to_f32();
    for ((xs, ls), &sc) in x
        .chunks_exact(16)
        .zip(levels.chunks_exact_mut(16))
        .zip(&y.scales)
    {
        let d = d_all * f32::from(sc);
        if d == 0.0 {
            continue;
        }
        for (l, &v) in ls.iter_mut().zip(xs) {
            *l = (nearest_int(v / d).clamp(-32, 31) + 32) as i8;
        }
    }

    // Half h (128 values): element 128h + 32k + l has its low nibble in ql[64h + 32(k%2) + l]
    // (high nibble when k >= 2) and its top two bits at bits 2k of qh[32h + l].
    for ((lv, ql), qh) in levels
        .chunks_exact(128)
        .zip(y.ql.chunks_exact_mut(64))
        .zip(y.qh.chunks_exact_mut(32))
    {
        let lv: [u8; 128] = std::array::from_fn(|e| lv[e] as u8);
        for l in 0..32 {
            let [a, b, c, d] = [lv[l], lv[l + 32], lv[l + 64], lv[l + 96]];
            ql[l] = (a & 0xF) | ((c & 0xF) << 4);
            ql[l + 32] = (b & 0xF) | ((d & 0xF) << 4);
            qh[l] = (a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((d >> 4) << 6);
        }
    }
}

/// ggml's `dequantize_row_q6_K`.
pub(super) fn dequantize(src: &[u8], dst: &mut [f32]) {
    with_blocks::<BlockQ6K, _>(src, |blocks| {
        for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK_K)) {
            let d = b.d.to_f32();
            for (h, ys) in y.chunks_exact_mut(128).enumerate() {
                let ql = &b.ql[64 * h..64 * (h + 1)];
                let qh = &b.qh[32 * h..32 * (h + 1)];
                let sc = &b.scales[8 * h..8 * (h + 1)];
                for l in 0..32 {
                    let is = l / 16;
                    let q = [
                        (ql[l] & 0xF) | ((qh[l] & 3) << 4),
                        (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4),
                        (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                        (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
                    ];
                    for (k, &q) in q.iter().enumerate() {
                        let q = q as i8 - 32;
                        ys[l + 32 * k] = d * f32::from(sc[is + 2 * k]) * f32::from(q);
                    }
                }
            }
        }
    });
}
