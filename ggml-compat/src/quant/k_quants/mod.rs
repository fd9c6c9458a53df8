//! K-quants: 256-element super-blocks with quantized sub-block scales (Q2_K..Q6_K), and Q8_K,
//! the activation type their dot products pair with. Byte-for-byte ggml's `ggml-quants.c`.
//!
//! Each type has a reference quantizer (`quantize_row_*_ref`, used when no importance matrix is
//! given) and an importance-weighted one (`quantize_row_*_impl`); the scale searches both use
//! are in `quant/search.rs`, shared with the legacy types.

mod q2_k;
mod q3_k;
mod q4_k;
mod q5_k;
mod q6_k;
mod q8_k;
mod scale_min;

use super::{nearest_int, with_blocks_mut, QuantFns};
use crate::types::QK_K;

/// Q2_K: `dequantize_row_q2_K`, and `quantize_q2_K` (`quantize_row_q2_K_ref` / `_impl`).
pub const Q2_K: QuantFns = QuantFns {
    to_float: q2_k::dequantize,
    quantize: q2_k::quantize,
    uses_imatrix: true,
};
/// Q3_K: `dequantize_row_q3_K`, and `quantize_q3_K` (`quantize_row_q3_K_ref` / `_impl`).
pub const Q3_K: QuantFns = QuantFns {
    to_float: q3_k::dequantize,
    quantize: q3_k::quantize,
    uses_imatrix: true,
};
/// Q4_K: `dequantize_row_q4_K`, and `quantize_q4_K` (`quantize_row_q4_K_ref` / `_impl`).
pub const Q4_K: QuantFns = QuantFns {
    to_float: q4_k::dequantize,
    quantize: q4_k::quantize,
    uses_imatrix: true,
};
/// Q5_K: `dequantize_row_q5_K`, and `quantize_q5_K` (`quantize_row_q5_K_ref` / `_impl`).
pub const Q5_K: QuantFns = QuantFns {
    to_float: q5_k::dequantize,
    quantize: q5_k::quantize,
    uses_imatrix: true,
};
/// Q6_K: `dequantize_row_q6_K`, and `quantize_q6_K` (`quantize_row_q6_K_ref` / `_impl`).
pub const Q6_K: QuantFns = QuantFns {
    to_float: q6_k::dequantize,
    quantize: q6_k::quantize,
    uses_imatrix: true,
};
/// Q8_K: `dequantize_row_q8_K` and `quantize_row_q8_K_ref`; no importance matrix.
pub const Q8_K: QuantFns = QuantFns {
    to_float: q8_k::dequantize,
    quantize: q8_k::quantize,
    uses_imatrix: false,
};

/// Packs 2-bit levels (0..=3) of one super-block: byte `32*h + l` holds elements
/// `128*h + l + 32*k` in bits `2k..2k+2`. The `qs` layout of Q2_K and Q3_K.
fn pack_2bit(levels: &[u8; QK_K], qs: &mut [u8; QK_K / 4]) {
    for (lv, q) in levels.chunks_exact(128).zip(qs.chunks_exact_mut(32)) {
        for (l, byte) in q.iter_mut().enumerate() {
            *byte = lv[l] | (lv[l + 32] << 2) | (lv[l + 64] << 4) | (lv[l + 96] << 6);
        }
    }
}

/// Packs the eight 6-bit scales and mins of Q4_K / Q5_K into 12 bytes (the inverse of
/// [`get_scale_min_k4`]), as `quantize_row_q4_K_ref` writes them.
fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
    s
}

/// Scale and min of sub-block `j` (0..8) from Q4_K / Q5_K's 12 packed bytes. ggml's
/// `get_scale_min_k4`.
#[inline]
fn get_scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The asymmetric types' second stage (Q2_K, Q4_K, Q5_K), shared by their reference and
/// importance-weighted quantizers: with the sub-block scale `d` and min `dm` as stored, re-round
/// each value to `round((x + dm) / d)` in `0..=nmax`. A sub-block whose scale is zero keeps the
/// levels its search produced, as in ggml.
fn requantize_asym(x: &[f32], levels: &mut [u8], d: f32, dm: f32, nmax: i32) {
    if d == 0.0 {
        return;
    }
    for (l, &v) in levels.iter_mut().zip(x) {
        *l = nearest_int((v + dm) / d).clamp(0, nmax) as u8;
    }
}

/// Zero-copy view over the 256-element super-blocks of a row.
fn super_blocks(x: &[f32]) -> impl Iterator<Item = &[f32; QK_K]> {
    x.chunks_exact(QK_K)
        .map(|c| c.try_into().expect("chunks_exact yields QK_K"))
}

/// The row loop of ggml's `quantize_<type>` for a K-quant: `quantize_block(x, y, qw)` gets each
/// super-block of `src`, the block `B` it becomes in `dst`, and the matching 256 values of the
/// importance matrix if there is one.
fn quantize_super_blocks<B: bytemuck::Pod>(
    src: &[f32],
    dst: &mut [u8],
    imatrix: Option<&[f32]>,
    quantize_block: impl Fn(&[f32; QK_K], &mut B, Option<&[f32]>),
) {
    with_blocks_mut::<B, _>(dst, |blocks| {
        for (i, (x, y)) in super_blocks(src).zip(blocks).enumerate() {
            quantize_block(x, y, imatrix.map(|qw| &qw[i * QK_K..(i + 1) * QK_K]));
        }
    });
}
