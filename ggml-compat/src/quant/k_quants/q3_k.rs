//! Q3_K: 16 sub-blocks of 16 with a 6-bit signed scale each, `x = d*(sc-32)*(q-4)`, 3-bit `q`
//! (low 2 bits in `qs`, high bit in `hmask`). ggml's `quantize_row_q3_K_ref`,
//! `quantize_row_q3_K_impl`, `dequantize_row_q3_K`.

use super::{pack_2bit, quantize_super_blocks};
use crate::blocks::BlockQ3K;
use crate::quant::common::{imatrix_weights, sum_sq};
use crate::quant::float::fp32_to_fp16 as f16;
use crate::quant::nearest_int;
use crate::quant::search::{make_q3_quants, make_qx_quants};
use crate::quant::with_blocks;
use crate::types::QK_K;

/// Quantizes a row as ggml's `quantize_q3_K` does: the reference quantizer without an imatrix,
/// the importance-weighted one with.
pub(super) fn quantize(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    quantize_super_blocks(src, dst, imatrix, |x, y: &mut BlockQ3K, qw| match qw {
        None => quantize_block_ref(x, y),
        Some(qw) => quantize_block_impl(x, y, qw),
    });
}

/// One super-block of ggml's `quantize_row_q3_K_ref`.
fn quantize_block_ref(x: &[f32; QK_K], y: &mut BlockQ3K) {
    let mut levels = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    let (mut max_scale, mut amax) = (0f32, 0f32);
    for (j, (xs, ls)) in x
        .chunks_exact(16)
        .zip(levels.chunks_exact_mut(16))
        .enumerate()
    {
        scales[j] = make_q3_quants(4, xs, ls);
        let scale = scales[j].abs();
        if scale > amax {
            amax = scale;
            max_scale = scales[j];
        }
    }

    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        let mut ls = [0i32; QK_K / 16];
        for (l, &scale) in ls.iter_mut().zip(&scales) {
            // ggml stores the rounded value in an int8_t before clamping.
            *l = i32::from(nearest_int(iscale * scale) as i8).clamp(-32, 31) + 32;
        }
        y.scales = pack_scales(&ls);
        y.d = f16(1.0 / iscale);
    } else {
        y.scales = [0; 12];
        y.d = f16(0.0);
    }
    requantize(x, y, &mut levels);
}

/// One super-block of ggml's `quantize_row_q3_K_impl`; `qw` is the imatrix slice for it.
fn quantize_block_impl(x: &[f32; QK_K], y: &mut BlockQ3K, qw: &[f32]) {
    let mut levels = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    let mut sw = [0f32; QK_K / 16];
    let sigma2 = 2.0 * sum_sq(x) / QK_K as f32;
    for (j, (xs, ls)) in x
        .chunks_exact(16)
        .zip(levels.chunks_exact_mut(16))
        .enumerate()
    {
        let mut weights = [0f32; 16];
        sw[j] = imatrix_weights(&qw[16 * j..16 * (j + 1)], xs, sigma2, &mut weights);
        scales[j] = make_qx_quants(4, xs, ls, Some(&weights));
    }

    let mut block_levels = [0i8; QK_K / 16];
    let d_block = make_qx_quants(32, &scales, &mut block_levels, Some(&sw));
    y.scales = pack_scales(&block_levels.map(i32::from));
    y.d = f16(d_block);
    requantize(x, y, &mut levels);
}

/// Packs sixteen 6-bit scales (0..64, stored +32): low nibbles in bytes 0..8, high 2 bits in
/// bytes 8..12.
fn pack_scales(ls: &[i32; QK_K / 16]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for (j, &l) in ls.iter().enumerate() {
        let low = (l & 0xF) as u8;
        if j < 8 {
            s[j] = low;
        } else {
            s[j - 8] |= low << 4;
        }
        s[j % 4 + 8] |= ((l >> 4) << (2 * (j / 4))) as u8;
    }
    s
}

/// The signed scale of sub-block `j` (the stored 6-bit value minus 32).
#[inline]
fn unpack_scale(s: &[u8; 12], j: usize) -> i8 {
    let low = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
    let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | (high << 4)) as i8 - 32
}

/// Re-rounds every sub-block against its stored scale, then splits levels into `hmask` and `qs`.
fn requantize(x: &[f32; QK_K], y: &mut BlockQ3K, levels: &mut [i8; QK_K]) {
    let d_all = y.d.to_f32();
    for (j, (xs, ls)) in x
        .chunks_exact(16)
        .zip(levels.chunks_exact_mut(16))
        .enumerate()
    {
        let d = d_all * f32::from(unpack_scale(&y.scales, j));
        if d == 0.0 {
            continue;
        }
        for (l, &v) in ls.iter_mut().zip(xs) {
            *l = (nearest_int(v / d).clamp(-4, 3) + 4) as i8;
        }
    }
    // The high bit of element j goes to bit j/32 of hmask[j%32].
    y.hmask = [0; QK_K / 8];
    let mut low = [0u8; QK_K];
    for (j, (&l, lo)) in levels.iter().zip(&mut low).enumerate() {
        let mut l = l as u8;
        if l > 3 {
            y.hmask[j % 32] |= 1 << (j / 32);
            l -= 4;
        }
        *lo = l;
    }
    pack_2bit(&low, &mut y.qs);
}

/// ggml's `dequantize_row_q3_K`.
pub(super) fn dequantize(src: &[u8], dst: &mut [f32]) {
    with_blocks::<BlockQ3K, _>(src, |blocks| {
        for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK_K)) {
            let d_all = b.d.to_f32();
            // Sub-block `g` sits in bits `2*((g/2)%4)` of `qs[32*(g/8) + 16*(g%2)..]`; its high
            // bits are bit `g/2` of the matching `hmask` bytes.
            for (g, ys) in y.chunks_exact_mut(16).enumerate() {
                let dl = d_all * f32::from(unpack_scale(&b.scales, g));
                let shift = 2 * ((g / 2) % 4);
                let at = 16 * (g % 2);
                let q = &b.qs[32 * (g / 8) + at..][..16];
                let hm = &b.hmask[at..at + 16];
                let bit = 1u8 << (g / 2);
                for ((v, &byte), &h) in ys.iter_mut().zip(q).zip(hm) {
                    let high = if h & bit != 0 { 0 } else { 4 };
                    *v = dl * f32::from(((byte >> shift) & 3) as i8 - high);
                }
            }
        }
    });
}
