//! The stage Q4_K and Q5_K share: 8 sub-blocks of 32, each with a 6-bit scale and 6-bit min
//! packed into 12 bytes (`get_scale_min_k4`), levels `0..=nmax`. This is the common part of
//! ggml's `quantize_row_q{4,5}_K_ref` and `quantize_row_q{4,5}_K_impl`; the types differ only in
//! `nmax`, the reference search grid and how the levels are packed.

use super::{get_scale_min_k4, pack_scale_min_k4, requantize_asym};
use crate::quant::common::{imatrix_weights, sum_sq};
use crate::quant::float::fp32_to_fp16 as f16;
use crate::quant::nearest_int;
use crate::quant::search::{
    make_qkx2_quants, make_qkx3_quants, make_qp_quants, Grid, IMATRIX_GRID,
};
use crate::types::QK_K;
use half::f16 as F16;

/// What the shared stage produces for one super-block.
pub(super) struct ScaleMin {
    pub d: F16,
    pub dmin: F16,
    pub scales: [u8; 12],
    /// Levels `0..=nmax`, one per value, in element order.
    pub levels: [u8; QK_K],
}

/// ggml's reference path (`quantize_row_q4_K_ref` / `quantize_row_q5_K_ref`): per sub-block a
/// `make_qkx2_quants` search weighted by `rms(x) + |x|`, then scales and mins quantized to 6 bits
/// against the largest of each.
pub(super) fn quantize_ref(x: &[f32; QK_K], nmax: i32, grid: Grid) -> ScaleMin {
    let mut levels = [0u8; QK_K];
    let mut scales = [0f32; QK_K / 32];
    let mut mins = [0f32; QK_K / 32];
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for (j, (xs, ls)) in x
        .chunks_exact(32)
        .zip(levels.chunks_exact_mut(32))
        .enumerate()
    {
        let av_x = (sum_sq(xs) / 32.0).sqrt();
        let mut weights = [0f32; 32];
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        (scales[j], mins[j]) = make_qkx2_quants(nmax, xs, &weights, ls, grid);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }

    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    // ggml stores the rounded value in a uint8_t, then clamps to 63.
    let quant6 = |inv: f32, v: f32| (nearest_int(inv * v) as u8).min(63);
    let ls = std::array::from_fn(|j| quant6(inv_scale, scales[j]));
    let lm = std::array::from_fn(|j| quant6(inv_min, mins[j]));
    finish(
        x,
        f16(max_scale / 63.0),
        f16(max_min / 63.0),
        pack_scale_min_k4(&ls, &lm),
        levels,
        nmax,
    )
}

/// ggml's importance-weighted path (`quantize_row_q4_K_impl` / `quantize_row_q5_K_impl` with
/// quant weights `qw` for this super-block): `make_qkx3_quants` per sub-block, then
/// `make_qp_quants` for the scales and mins. `clamp_levels` is Q5_K's extra `MIN(63, ·)` on the
/// 6-bit levels, which Q4_K lacks (it matters only if a level wrapped below zero).
pub(super) fn quantize_impl(
    x: &[f32; QK_K],
    qw: &[f32],
    nmax: i32,
    clamp_levels: bool,
) -> ScaleMin {
    let mut levels = [0u8; QK_K];
    let mut scales = [0f32; QK_K / 32];
    let mut mins = [0f32; QK_K / 32];
    let mut sw = [0f32; QK_K / 32];
    let sigma2 = 2.0 * sum_sq(x) / QK_K as f32;
    for (j, (xs, ls)) in x
        .chunks_exact(32)
        .zip(levels.chunks_exact_mut(32))
        .enumerate()
    {
        let mut weights = [0f32; 32];
        sw[j] = imatrix_weights(&qw[32 * j..32 * (j + 1)], xs, sigma2, &mut weights);
        (scales[j], mins[j]) = make_qkx3_quants(nmax, xs, &weights, ls, IMATRIX_GRID);
    }

    let mut ls = [0u8; QK_K / 32];
    let mut lm = [0u8; QK_K / 32];
    let d_block = make_qp_quants(63, &scales, &mut ls, &sw);
    let m_block = make_qp_quants(63, &mins, &mut lm, &sw);
    if clamp_levels {
        ls = ls.map(|l| l.min(63));
        lm = lm.map(|l| l.min(63));
    }
    finish(
        x,
        f16(d_block),
        f16(m_block),
        pack_scale_min_k4(&ls, &lm),
        levels,
        nmax,
    )
}

/// Re-rounds each sub-block against its stored (f16 × 6-bit) scale and min.
fn finish(
    x: &[f32; QK_K],
    d: F16,
    dmin: F16,
    scales: [u8; 12],
    mut levels: [u8; QK_K],
    nmax: i32,
) -> ScaleMin {
    for (j, (xs, ls)) in x
        .chunks_exact(32)
        .zip(levels.chunks_exact_mut(32))
        .enumerate()
    {
        let (sc, m) = get_scale_min_k4(j, &scales);
        let dl = d.to_f32() * f32::from(sc);
        let ml = dmin.to_f32() * f32::from(m);
        requantize_asym(xs, ls, dl, ml, nmax);
    }
    ScaleMin {
        d,
        dmin,
        scales,
        levels,
    }
}

/// Scale and min of sub-blocks `2c` and `2c+1` as `(d1, m1, d2, m2)`, the values ggml's
/// `dequantize_row_q{4,5}_K` compute for 64-value chunk `c`.
#[inline]
pub(super) fn chunk_scales(d: F16, dmin: F16, scales: &[u8; 12], c: usize) -> [f32; 4] {
    let (d, min) = (d.to_f32(), dmin.to_f32());
    let (sc1, m1) = get_scale_min_k4(2 * c, scales);
    let (sc2, m2) = get_scale_min_k4(2 * c + 1, scales);
    [
        d * f32::from(sc1),
        min * f32::from(m1),
        d * f32::from(sc2),
        min * f32::from(m2),
    ]
}
