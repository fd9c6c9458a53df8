//! Helpers shared by several quant families, ported from `ggml-quants.c` and `ggml-impl.h`:
//! ggml's own f32 → f16 rounding, the weighted scale searches `make_qx_quants` and
//! `make_qkx3_quants`, the importance weights built from an imatrix, and `best_index_int8`.
//!
//! All arithmetic is f32 in ggml's operation order (no fused multiply-add), because the
//! quantizers compare sums that differ in the last bit.

use super::nearest_int;
use half::f16;

/// ggml's `GROUP_MAX_EPS`: a group whose largest magnitude is below this is treated as all zero.
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `ggml_compute_fp32_to_fp16` (the portable bit-trick version `GGML_FP32_TO_FP16` uses in
/// `ggml-quants.c`): round to nearest even, overflow to infinity, every NaN to the quiet NaN
/// `0x7e00` with the input's sign.
pub(crate) fn fp32_to_fp16(f: f32) -> f16 {
    let scale_to_inf = f32::from_bits(0x7780_0000);
    let scale_to_zero = f32::from_bits(0x0880_0000);
    let mut base = (f.abs() * scale_to_inf) * scale_to_zero;

    let w = f.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let bias = (shl1_w & 0xff00_0000).max(0x7100_0000);

    base += f32::from_bits((bias >> 1) + 0x0780_0000);
    let bits = base.to_bits();
    let exp_bits = (bits >> 13) & 0x0000_7c00;
    let mantissa_bits = bits & 0x0000_0fff;
    let nonsign = exp_bits + mantissa_bits;
    let h = (sign >> 16)
        | if shl1_w > 0xff00_0000 {
            0x7e00
        } else {
            nonsign
        };
    f16::from_bits(h as u16)
}

/// ggml's `GGML_FP16_TO_FP32`: exact widening.
#[inline]
pub(crate) fn fp16_to_fp32(h: f16) -> f32 {
    h.to_f32()
}

/// ggml's `MAX(-lo, MIN(hi, l))` clamp on an integer level.
#[inline]
fn clamp(l: i32, lo: i32, hi: i32) -> i32 {
    l.min(hi).max(lo)
}

/// The weight of element `x` in ggml's error sums: the imatrix value if given, otherwise the
/// `rmse_type` default of `make_qx_quants` (1: x², 2: 1, 3: |x|, else √|x|).
#[inline]
fn qx_weight(qw: Option<&[f32]>, i: usize, x: f32, rmse_type: i32) -> f32 {
    match qw {
        Some(w) => w[i],
        None => match rmse_type {
            1 => x * x,
            2 => 1.0,
            3 => x.abs(),
            _ => x.abs().sqrt(),
        },
    }
}

/// ggml's `make_qx_quants`: symmetric quantization of `x` to levels `-nmax..nmax-1`, stored in `l`
/// offset by `nmax`. Returns the scale. With `rmse_type != 0` it searches 18 scales around
/// `nmax / max` for the one maximising `sumlx² / suml2` under the weights `qw` (or x² etc.).
pub(crate) fn make_qx_quants(
    nmax: i32,
    x: &[f32],
    l: &mut [i8],
    mut rmse_type: i32,
    qw: Option<&[f32]>,
) -> f32 {
    let n = x.len();
    let mut max = 0f32;
    let mut amax = 0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let mut iscale = -(nmax as f32) / max;
    if rmse_type == 0 {
        for (li, &v) in l.iter_mut().zip(x) {
            *li = (nmax + clamp(nearest_int(iscale * v), -nmax, nmax - 1)) as i8;
        }
        return 1.0 / iscale;
    }
    let mut return_early = false;
    if rmse_type < 0 {
        rmse_type = -rmse_type;
        return_early = true;
    }
    let mut sumlx = 0f32;
    let mut suml2 = 0f32;
    for i in 0..n {
        let q = clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        l[i] = (q + nmax) as i8;
        let w = qx_weight(qw, i, x[i], rmse_type);
        let q = q as f32;
        sumlx += w * x[i] * q;
        suml2 += w * q * q;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    if return_early {
        return if suml2 > 0.0 {
            0.5 * (scale + 1.0 / iscale)
        } else {
            1.0 / iscale
        };
    }
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for (i, &xi) in x.iter().enumerate() {
            let q = clamp(nearest_int(iscale * xi), -nmax, nmax - 1) as f32;
            let w = qx_weight(qw, i, xi, rmse_type);
            sumlx += w * xi * q;
            suml2 += w * q * q;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (li, &v) in l.iter_mut().zip(x) {
                *li = (nmax + clamp(nearest_int(iscale * v), -nmax, nmax - 1)) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Result of [`make_qkx3_quants`]: `x ≈ scale * l - min`.
pub(crate) struct ScaleMin {
    pub scale: f32,
    /// ggml's `the_min` (already negated: the value subtracted).
    pub min: f32,
}

/// ggml's `make_qkx3_quants`: asymmetric quantization of `x` to levels `0..=nmax` in `l`,
/// searching `nstep + 1` scales `(rmin + rdelta*is + nmax) / (max - min)` for the weighted
/// least-squares scale and min with the smallest weighted error (squared, or absolute when
/// `use_mad`). `weights` defaults to x². `laux` is scratch of `x.len()` bytes.
#[allow(clippy::too_many_arguments)]
pub(crate) fn make_qkx3_quants(
    nmax: i32,
    x: &[f32],
    weights: Option<&[f32]>,
    l: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> ScaleMin {
    let n = x.len();
    let weight = |i: usize| weights.map_or(x[i] * x[i], |w| w[i]);
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weight(0);
    let mut sum_x = sum_w * x[0];
    for (i, &xi) in x.iter().enumerate().skip(1) {
        if xi < min {
            min = xi;
        }
        if xi > max {
            max = xi;
        }
        let w = weight(i);
        sum_w += w;
        sum_x += w * xi;
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max <= min {
        l[..n].fill(0);
        return ScaleMin {
            scale: 0.0,
            min: -min,
        };
    }
    let nmax_f = nmax as f32;
    let mut iscale = nmax_f / (max - min);
    let mut scale = 1.0 / iscale;
    let err = |diff: f32| if use_mad { diff.abs() } else { diff * diff };
    let mut best_mad = 0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = q as u8;
        let diff = scale * l[i] as f32 + min - x[i];
        best_mad += weight(i) * err(diff);
    }
    if nstep < 1 {
        return ScaleMin { scale, min: -min };
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax_f) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            // `min` is the best fit so far and may sit at or near `max`: v can be inf or NaN.
            let v = iscale * (x[i] - min);
            let q = if v > 0.0 {
                nearest_int(if v < nmax_f { v } else { nmax_f })
            } else {
                0
            };
            laux[i] = q as u8;
            let w = weight(i);
            let q = q as f32;
            sum_l += w * q;
            sum_l2 += w * q * q;
            sum_xl += w * q * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut mad = 0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                mad += weight(i) * err(diff);
            }
            if mad < best_mad {
                l[..n].copy_from_slice(&laux[..n]);
                best_mad = mad;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    ScaleMin { scale, min: -min }
}

/// `sum(x²) / n` over a whole row: ggml's `sigma2` in the legacy `quantize_row_*_impl`.
pub(crate) fn mean_square(x: &[f32]) -> f32 {
    let mut sum = 0f32;
    for &v in x {
        sum += v * v;
    }
    sum / x.len() as f32
}

/// ggml's importance weights: `w[j] = qw[j] * sqrt(sigma2 + x[j]²)`.
pub(crate) fn imatrix_weights(x: &[f32], qw: &[f32], sigma2: f32, w: &mut [f32]) {
    for ((w, &q), &v) in w.iter_mut().zip(qw).zip(x) {
        *w = q * (sigma2 + v * v).sqrt();
    }
}

/// ggml's `best_index_int8`: index of the entry of the sorted table `val` (length a power of
/// two) nearest to `x`; a tie goes to the larger entry. Compared as `2x ≥ val[j-1] + val[j]`,
/// which is exact.
pub(crate) fn best_index_int8(val: &[i8], x: f32) -> usize {
    let x2 = x + x;
    let mut idx = 0;
    let mut step = val.len() >> 1;
    while step > 0 {
        let j = idx + step;
        if x2 >= (val[j - 1] as i32 + val[j] as i32) as f32 {
            idx = j;
        }
        step >>= 1;
    }
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ggml's bit trick rounds like IEEE (which `half` implements) for every non-NaN input.
    #[test]
    fn fp16_rounding_matches_ieee_round_to_nearest_even() {
        let mut bits = 0u32;
        // A stride coprime to 2^32 visits a spread of exponents, subnormals and halfway cases.
        for _ in 0..2_000_000 {
            bits = bits.wrapping_add(2_654_435_761);
            let f = f32::from_bits(bits);
            if f.is_nan() {
                assert_eq!(fp32_to_fp16(f).to_bits() & 0x7fff, 0x7e00);
                continue;
            }
            assert_eq!(
                fp32_to_fp16(f).to_bits(),
                f16::from_f32(f).to_bits(),
                "{f:e} ({bits:#010x})"
            );
        }
        // Exact halfway points between f16 neighbours round to even.
        let one_and_half_ulp = f32::from_bits(0x3f80_1000); // 1 + 2^-11
        assert_eq!(fp32_to_fp16(one_and_half_ulp).to_bits(), 0x3c00);
        let three_halves_ulp = f32::from_bits(0x3f80_3000); // 1 + 3*2^-11
        assert_eq!(fp32_to_fp16(three_halves_ulp).to_bits(), 0x3c02);
        assert_eq!(fp32_to_fp16(65520.0).to_bits(), 0x7c00);
    }

    #[test]
    fn best_index_picks_nearest_and_breaks_ties_upward() {
        let val: [i8; 4] = [-10, -2, 3, 20];
        assert_eq!(best_index_int8(&val, -100.0), 0);
        assert_eq!(best_index_int8(&val, -6.0), 1); // tie between -10 and -2
        assert_eq!(best_index_int8(&val, -6.1), 0);
        assert_eq!(best_index_int8(&val, 0.5), 2); // tie between -2 and 3
        assert_eq!(best_index_int8(&val, 11.4), 2);
        assert_eq!(best_index_int8(&val, 1e9), 3);
    }
}
