//! Non-linear 4-bit formats: IQ4_NL and IQ4_XS (table `kvalues_iq4nl`).
//!
//! Both go through ggml's `quantize_row_iq4_nl_impl`: per 32 weights a weighted search over 15
//! scales around `max / -127`, choosing for each scale the nearest table entry per weight. IQ4_NL
//! stores that scale as f16; IQ4_XS stores 6-bit scales against one f16 per 256 weights. ggml's
//! `quantize_iq4_nl` / `quantize_iq4_xs` run this search (`ntry = 7`) with or without an
//! importance matrix; without one the weights are `x²`.

use super::common::{best_index_int8, imatrix_weights, signed_absmax, sum_sq, GROUP_MAX_EPS};
use super::float::{fp16_to_fp32, fp32_to_fp16};
use super::tables::KVALUES_IQ4NL;
use super::{nearest_int, with_blocks, with_blocks_mut, QuantFns};
use crate::blocks::{BlockIQ4NL, BlockIQ4XS};
use crate::types::QK_K;
use half::f16;

const QK4_NL: usize = 32;
/// Weights per scale in both formats.
const BLOCK: usize = 32;
/// ggml's `ntry` for `quantize_iq4_nl` / `quantize_iq4_xs`.
const NTRY: i32 = 7;

pub const IQ4_NL: QuantFns = QuantFns {
    to_float: dequantize_row_iq4_nl,
    quantize: quantize_iq4_nl,
    uses_imatrix: true,
};
pub const IQ4_XS: QuantFns = QuantFns {
    to_float: dequantize_row_iq4_xs,
    quantize: quantize_iq4_xs,
    uses_imatrix: true,
};

/// What `quantize_row_iq4_nl_impl` writes for one super-block.
struct Iq4Out<'a> {
    dh: &'a mut f16,
    qs: &'a mut [u8],
    /// IQ4_XS only: `(scales_h, scales_l)`.
    scales: Option<(&'a mut u16, &'a mut [u8; QK_K / 64])>,
}

/// Weighted scale search for one block of 32 (the inner loop of ggml's
/// `quantize_row_iq4_nl_impl`). Fills `l` with table indices and returns the block scale.
fn search_block_scale(xb: &[f32], weight: &[f32], l: &mut [u8], ntry: i32) -> f32 {
    let values = &KVALUES_IQ4NL;
    let v0 = values[0] as f32;
    let (max, amax) = signed_absmax(xb);
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let mut d = if ntry > 0 { -max / v0 } else { max / v0 };
    let mut id = 1.0 / d;
    let (mut sumqx, mut sumq2) = (0f32, 0f32);
    for j in 0..xb.len() {
        let idx = best_index_int8(values, id * xb[j]);
        l[j] = idx as u8;
        let q = values[idx] as f32;
        let w = weight[j];
        sumqx += w * q * xb[j];
        sumq2 += w * q * q;
    }
    d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -ntry..=ntry {
        id = (itry + values[0] as i32) as f32 / max;
        sumqx = 0.0;
        sumq2 = 0.0;
        for j in 0..xb.len() {
            let q = values[best_index_int8(values, id * xb[j])] as f32;
            let w = weight[j];
            sumqx += w * q * xb[j];
            sumq2 += w * q * q;
        }
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d
}

/// ggml's `quantize_row_iq4_nl_impl` for `kvalues_iq4nl` (16 levels, no `qh`), one super-block
/// `x` of 32 (IQ4_NL) or 256 (IQ4_XS) weights.
fn quantize_iq4_impl(x: &[f32], out: Iq4Out<'_>, quant_weights: Option<&[f32]>, ntry: i32) {
    let super_block_size = x.len();
    let nb = super_block_size / BLOCK;
    let sigma2 = sum_sq(x) * (2.0 / super_block_size as f32);

    out.qs.fill(0);
    *out.dh = fp32_to_fp16(0.0);

    let mut l = [0u8; QK_K];
    let mut scales = [0f32; QK_K / BLOCK];
    let mut weight = [0f32; BLOCK];
    let (mut max_scale, mut amax_scale) = (0f32, 0f32);
    for ib in 0..nb {
        let xb = &x[ib * BLOCK..(ib + 1) * BLOCK];
        match quant_weights {
            Some(qw) => {
                imatrix_weights(&qw[ib * BLOCK..(ib + 1) * BLOCK], xb, sigma2, &mut weight);
            }
            None => {
                for (w, &v) in weight.iter_mut().zip(xb) {
                    *w = v * v;
                }
            }
        }
        let d = search_block_scale(xb, &weight, &mut l[ib * BLOCK..(ib + 1) * BLOCK], ntry);
        scales[ib] = d;
        if d.abs() > amax_scale {
            amax_scale = d.abs();
            max_scale = d;
        }
    }

    if let Some((scales_h, scales_l)) = out.scales {
        *scales_h = 0;
        let d = -max_scale / 32.0;
        *out.dh = fp32_to_fp16(d);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for ib in 0..nb {
            let ls = nearest_int(id * scales[ib]).clamp(-32, 31);
            let dl = d * ls as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            let xb = &x[ib * BLOCK..(ib + 1) * BLOCK];
            for (lj, &v) in l[ib * BLOCK..].iter_mut().zip(xb) {
                *lj = best_index_int8(&KVALUES_IQ4NL, idl * v) as u8;
            }
            let ls = (ls + 32) as u8;
            let (lo, hi) = (ls & 0xf, ls >> 4);
            if ib % 2 == 0 {
                scales_l[ib / 2] = lo;
            } else {
                scales_l[ib / 2] |= lo << 4;
            }
            *scales_h |= (hi as u16) << (2 * (ib % 8));
        }
    } else {
        *out.dh = fp32_to_fp16(scales[0]);
        if ntry > 0 {
            let id = if scales[0] != 0.0 {
                1.0 / scales[0]
            } else {
                0.0
            };
            for (lj, &v) in l.iter_mut().zip(x) {
                *lj = best_index_int8(&KVALUES_IQ4NL, id * v) as u8;
            }
        }
    }

    for i in 0..super_block_size / 32 {
        for j in 0..16 {
            out.qs[16 * i + j] = l[32 * i + j] | (l[32 * i + 16 + j] << 4);
        }
    }
}

/// ggml's `quantize_iq4_nl` for one row (`ntry = 7`, with or without importance weights).
fn quantize_iq4_nl(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    with_blocks_mut(dst, |y: &mut [BlockIQ4NL]| {
        for (ib, (xb, yb)) in src.chunks_exact(QK4_NL).zip(y).enumerate() {
            let qw = imatrix.map(|w| &w[ib * QK4_NL..(ib + 1) * QK4_NL]);
            let out = Iq4Out {
                dh: &mut yb.d,
                qs: &mut yb.qs,
                scales: None,
            };
            quantize_iq4_impl(xb, out, qw, NTRY);
        }
    })
}

/// ggml's `quantize_iq4_xs` for one row (also `quantize_row_iq4_xs_ref`).
fn quantize_iq4_xs(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    with_blocks_mut(dst, |y: &mut [BlockIQ4XS]| {
        for (ibl, (xb, yb)) in src.chunks_exact(QK_K).zip(y).enumerate() {
            let qw = imatrix.map(|w| &w[ibl * QK_K..(ibl + 1) * QK_K]);
            let out = Iq4Out {
                dh: &mut yb.d,
                qs: &mut yb.qs,
                scales: Some((&mut yb.scales_h, &mut yb.scales_l)),
            };
            quantize_iq4_impl(xb, out, qw, NTRY);
        }
    })
}

/// ggml's `dequantize_row_iq4_nl`: `x = d * kvalues_iq4nl[q]`.
pub fn dequantize_row_iq4_nl(src: &[u8], dst: &mut [f32]) {
    with_blocks(src, |x: &[BlockIQ4NL]| {
        for (xb, yb) in x.iter().zip(dst.chunks_exact_mut(QK4_NL)) {
            let d = fp16_to_fp32(xb.d);
            for (j, &q) in xb.qs.iter().enumerate() {
                yb[j] = d * KVALUES_IQ4NL[(q & 0xf) as usize] as f32;
                yb[j + 16] = d * KVALUES_IQ4NL[(q >> 4) as usize] as f32;
            }
        }
    })
}

/// ggml's `dequantize_row_iq4_xs`: `x = d * (ls - 32) * kvalues_iq4nl[q]`, `ls` 6 bits per 32.
pub fn dequantize_row_iq4_xs(src: &[u8], dst: &mut [f32]) {
    with_blocks(src, |x: &[BlockIQ4XS]| {
        for (xb, yb) in x.iter().zip(dst.chunks_exact_mut(QK_K)) {
            let d = fp16_to_fp32(xb.d);
            for ib in 0..QK_K / 32 {
                let lo = (xb.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xf;
                let hi = ((xb.scales_h >> (2 * ib)) & 3) as u8;
                let ls = (lo | (hi << 4)) as i32;
                let dl = d * (ls - 32) as f32;
                let qs = &xb.qs[16 * ib..16 * ib + 16];
                let y = &mut yb[32 * ib..32 * ib + 32];
                for (j, &q) in qs.iter().enumerate() {
                    y[j] = dl * KVALUES_IQ4NL[(q & 0xf) as usize] as f32;
                    y[j + 16] = dl * KVALUES_IQ4NL[(q >> 4) as usize] as f32;
                }
            }
        }
    })
}
