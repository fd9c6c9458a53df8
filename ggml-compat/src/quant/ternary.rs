//! Ternary formats TQ1_0 (1.69 bpw) and TQ2_0 (2.06 bpw): `x = d * t`, `t ∈ {-1, 0, 1}`,
//! `d = amax` of the 256-weight block. Neither takes an importance matrix.
//!
//! TQ1_0 packs 5 trits per byte as a base-3 fixed-point fraction (`q = ceil(n * 256 / 243)`),
//! so that the k-th trit is `((q * 3^k) mod 256) * 3 >> 8`: 48 bytes hold 240 trits (the first 32
//! bytes cover 160 weights, five strided rows of 32; the next 16 cover 80), and `qh` holds the
//! last 16 weights four to a byte.

use super::float::{fp16_to_fp32, fp32_to_fp16};
use super::{with_blocks, with_blocks_mut, QuantFns};
use crate::blocks::{BlockTQ1_0, BlockTQ2_0};
use crate::types::QK_K;

pub const TQ1_0: QuantFns = QuantFns {
    to_float: dequantize_row_tq1_0,
    quantize: quantize_tq1_0,
    uses_imatrix: false,
};
pub const TQ2_0: QuantFns = QuantFns {
    to_float: dequantize_row_tq2_0,
    quantize: quantize_tq2_0,
    uses_imatrix: false,
};

/// Bytes of `qs` in the 32-byte-strided part of TQ1_0 (ggml's `sizeof(qs) - sizeof(qs) % 32`).
const QS_MAIN: usize = 32;
const QS_LEN: usize = (QK_K - 4 * QK_K / 64) / 5;
const QH_LEN: usize = QK_K / 64;

/// `d = amax` and `1/d` (0 for an all-zero block).
fn block_scale(xb: &[f32]) -> (f32, f32) {
    let mut amax = 0f32;
    for &v in xb {
        amax = if amax > v.abs() { amax } else { v.abs() };
    }
    (amax, if amax != 0.0 { 1.0 / amax } else { 0.0 })
}

/// `lroundf(x * id) + 1`: -1, 0, 1 → 0, 1, 2 (ties away from zero). Wrapping: a subnormal
/// `amax` makes `id` infinite, where ggml's conversion is undefined; we only promise no panic.
#[inline]
fn trit(x: f32, id: f32) -> u8 {
    ((x * id).round() as i32).wrapping_add(1) as u8
}

/// Base-3 digits (first is most significant) to ggml's fixed-point byte: `ceil(n * 256 / 243)`.
fn pack_trits(trits: impl Iterator<Item = u8>) -> u8 {
    let n = trits.fold(0u8, |q, t| q.wrapping_mul(3).wrapping_add(t));
    (n as u16 * 256).div_ceil(243) as u8
}

/// The k-th trit (0, 1 or 2) of a packed byte.
#[inline]
fn unpack_trit(q: u8, k: usize) -> i32 {
    const POW3: [u8; 5] = [1, 3, 9, 27, 81];
    let q = q.wrapping_mul(POW3[k]);
    ((q as u16 * 3) >> 8) as i32
}

/// ggml's `quantize_row_tq1_0_ref`.
pub fn quantize_row_tq1_0_ref(x: &[f32], y: &mut [BlockTQ1_0]) {
    for (xb, yb) in x.chunks_exact(QK_K).zip(y) {
        let (d, id) = block_scale(xb);
        yb.d = fp32_to_fp16(d);
        // 5 weights per byte, strided by 32 over the first 160 weights.
        for m in 0..QS_MAIN {
            yb.qs[m] = pack_trits((0..5).map(|n| trit(xb[m + n * 32], id)));
        }
        // Then strided by 16 over the next 80.
        let rest = &xb[5 * QS_MAIN..];
        for m in 0..QS_LEN - QS_MAIN {
            yb.qs[QS_MAIN + m] = pack_trits((0..5).map(|n| trit(rest[m + n * 16], id)));
        }
        // 4 weights per byte over the last 16, shifted up one trit.
        let tail = &xb[5 * QS_LEN..];
        for j in 0..QH_LEN {
            let four = (0..4).map(|m| trit(tail[j + m * QH_LEN], id));
            yb.qh[j] = pack_trits(four.chain(std::iter::once(0)));
        }
    }
}

/// ggml's `quantize_row_tq2_0_ref`: 2 bits per weight, byte m of each 32 holds weights
/// m, m+32, m+64, m+96 of its 128.
pub fn quantize_row_tq2_0_ref(x: &[f32], y: &mut [BlockTQ2_0]) {
    for (xb, yb) in x.chunks_exact(QK_K).zip(y) {
        let (d, id) = block_scale(xb);
        yb.d = fp32_to_fp16(d);
        for (qs, x128) in yb.qs.chunks_exact_mut(32).zip(xb.chunks_exact(128)) {
            for (m, q) in qs.iter_mut().enumerate() {
                *q = (0..4).fold(0u8, |acc, n| {
                    acc.wrapping_add((trit(x128[m + n * 32], id) & 3) << (2 * n))
                });
            }
        }
    }
}

fn quantize_tq1_0(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    with_blocks_mut(dst, |y| quantize_row_tq1_0_ref(src, y))
}

fn quantize_tq2_0(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    with_blocks_mut(dst, |y| quantize_row_tq2_0_ref(src, y))
}

/// ggml's `dequantize_row_tq1_0`.
pub fn dequantize_row_tq1_0(src: &[u8], dst: &mut [f32]) {
    with_blocks(src, |x: &[BlockTQ1_0]| {
        for (xb, yb) in x.iter().zip(dst.chunks_exact_mut(QK_K)) {
            let d = fp16_to_fp32(xb.d);
            let mut k = 0;
            let mut put = |t: i32| {
                yb[k] = (t - 1) as f32 * d;
                k += 1;
            };
            for n in 0..5 {
                for &q in &xb.qs[..QS_MAIN] {
                    put(unpack_trit(q, n));
                }
            }
            for n in 0..5 {
                for &q in &xb.qs[QS_MAIN..] {
                    put(unpack_trit(q, n));
                }
            }
            for n in 0..4 {
                for &q in &xb.qh {
                    put(unpack_trit(q, n));
                }
            }
        }
    })
}

/// ggml's `dequantize_row_tq2_0`: `x = (q - 1) * d`.
pub fn dequantize_row_tq2_0(src: &[u8], dst: &mut [f32]) {
    with_blocks(src, |x: &[BlockTQ2_0]| {
        for (xb, yb) in x.iter().zip(dst.chunks_exact_mut(QK_K)) {
            let d = fp16_to_fp32(xb.d);
            for (qs, y128) in xb.qs.chunks_exact(32).zip(yb.chunks_exact_mut(128)) {
                for l in 0..4 {
                    for (m, &q) in qs.iter().enumerate() {
                        let t = ((q >> (2 * l)) & 3) as i32;
                        y128[l * 32 + m] = (t - 1) as f32 * d;
                    }
                }
            }
        }
    })
}
