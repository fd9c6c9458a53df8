//! ggml's scale searches (`make_qx_quants`, `make_q3_quants`, `make_qkx2_quants`,
//! `make_qkx3_quants`, `make_qp_quants` in `ggml-quants.c`): given a group of values, pick a scale
//! (and for the asymmetric types a min) and the integer levels that go with it. The legacy types'
//! importance-weighted quantizers (Q4_0..Q5_1) and the K-quants share them.
//!
//! These decide every byte those types write, so each one keeps ggml's order of operations in
//! `f32`: `w * x * l` is `(w * x) * l`, integers become floats where ggml's C converts them, and
//! rounding is ggml's [`nearest_int`]. Only the modes ggml's callers use are ported; each
//! function says which.

use super::common::{signed_absmax, GROUP_MAX_EPS};
use super::nearest_int;

/// The grid `make_qkx2_quants` / `make_qkx3_quants` search over: `nstep + 1` candidate inverse
/// scales `(rmin + rdelta * is + nmax) / (max - min)`, scored by weighted absolute (`use_mad`) or
/// squared error.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Grid {
    pub rmin: f32,
    pub rdelta: f32,
    pub nstep: i32,
    pub use_mad: bool,
}

/// The grid every importance-weighted caller of `make_qkx3_quants` passes (Q4_1, Q5_1, Q2_K,
/// Q4_K, Q5_K): `-0.9f, 0.05f, 36, false`.
pub(crate) const IMATRIX_GRID: Grid = Grid {
    rmin: -0.9,
    rdelta: 0.05,
    nstep: 36,
    use_mad: false,
};

/// Symmetric levels `0..2*nmax` (value `l - nmax`) for `x`, least-squares scale weighted by `qw`
/// (or by `x²` without one). Matches ggml's `make_qx_quants` with `rmse_type == 1`, the only mode
/// any ggml caller uses (Q4_0 / Q5_0 `_impl`, Q3_K `_impl`, Q6_K `_ref` and `_impl`). Returns the
/// scale; `levels[i]` is written for every `i`.
pub(crate) fn make_qx_quants(nmax: i32, x: &[f32], levels: &mut [i8], qw: Option<&[f32]>) -> f32 {
    let (max, amax) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let weight = |i: usize| qw.map_or(x[i] * x[i], |w| w[i]);
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    // Weighted sums Σ w·x·l and Σ w·l² for one inverse scale.
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for (i, &v) in x.iter().enumerate() {
            let l = level(iscale, v) as f32;
            let w = weight(i);
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let set_levels = |levels: &mut [i8], iscale: f32| {
        for (q, &v) in levels.iter_mut().zip(x) {
            *q = (nmax + level(iscale, v)) as i8;
        }
    };

    let iscale = -(nmax as f32) / max;
    set_levels(levels, iscale);
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            set_levels(levels, iscale);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Symmetric levels `0..2*nmax` for `x` with `x²` weights, refined coordinate by coordinate.
/// Matches ggml's `make_q3_quants` with `do_rmse == true` (the mode Q3_K uses). Returns the scale.
pub(crate) fn make_q3_quants(nmax: i32, x: &[f32], levels: &mut [i8]) -> f32 {
    let (max, amax) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (q, &v) in levels.iter_mut().zip(x) {
        let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        *q = l as i8;
        let w = v * v;
        let l = l as f32;
        sumlx += w * v * l;
        suml2 += w * l * l;
    }
    for _ in 0..5 {
        let mut changed = false;
        for (q, &v) in levels.iter_mut().zip(x) {
            let w = v * v;
            let old = *q as f32;
            let mut slx = sumlx - w * v * old;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * old * old;
                let new_l = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != i32::from(*q) {
                    let nl = new_l as f32;
                    slx += w * v * nl;
                    sl2 += w * nl * nl;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *q = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for q in levels.iter_mut() {
        *q += nmax as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Which of ggml's two asymmetric searches to run; they differ only in their edge cases.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Asym {
    /// `make_qkx2_quants`: rounds `iscale * (x - min)` and clamps.
    Qkx2,
    /// `make_qkx3_quants`: clamps `iscale * (x - min)` to `[0, nmax]` before rounding, so a
    /// candidate min at or near `max` (an infinite `iscale`) still yields valid levels.
    Qkx3,
}

/// Asymmetric levels `0..=nmax` for `x` (`x ≈ scale * l - the_min`, `the_min >= 0`), searching
/// the `grid` for the lowest `weights`-weighted error. Matches ggml's `make_qkx2_quants`.
/// Returns `(scale, the_min)`.
pub(crate) fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    levels: &mut [u8],
    grid: Grid,
) -> (f32, f32) {
    make_asym(nmax, x, weights, levels, grid, Asym::Qkx2)
}

/// The importance-weighted twin of [`make_qkx2_quants`]: ggml's `make_qkx3_quants`. Every ggml
/// caller passes weights, so they are not optional here. Returns `(scale, the_min)`.
pub(crate) fn make_qkx3_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    levels: &mut [u8],
    grid: Grid,
) -> (f32, f32) {
    make_asym(nmax, x, weights, levels, grid, Asym::Qkx3)
}

/// The body of both asymmetric searches; groups of at most 32 values (every caller's size).
fn make_asym(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    levels: &mut [u8],
    grid: Grid,
    kind: Asym,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for (&v, &w) in x.iter().zip(weights).skip(1) {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
        sum_w += w;
        sum_x += w * v;
    }
    if min > 0.0 {
        min = 0.0;
    }
    // qkx2 tests `max == min`, qkx3 `max <= min`: the same once `min <= max`.
    if max == min || (kind == Asym::Qkx3 && max <= min) {
        levels.fill(0);
        return (0.0, -min);
    }
    let error = |diff: f32| {
        if grid.use_mad {
            diff.abs()
        } else {
            diff * diff
        }
    };

    let nmax_f = nmax as f32;
    let iscale = nmax_f / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        levels[i] = l as u8;
        let diff = scale * f32::from(levels[i]) + min - x[i];
        best_error += weights[i] * error(diff);
    }
    if grid.nstep < 1 {
        return (scale, -min);
    }

    let mut aux = [0u8; 32];
    let aux = &mut aux[..n];
    for is in 0..=grid.nstep {
        // `min` is the best fit so far: later candidates are measured from it.
        let iscale = (grid.rmin + grid.rdelta * is as f32 + nmax_f) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = match kind {
                Asym::Qkx2 => nearest_int(iscale * (x[i] - min)).clamp(0, nmax),
                Asym::Qkx3 => {
                    let v = iscale * (x[i] - min);
                    if v > 0.0 {
                        nearest_int(v.min(nmax_f))
                    } else {
                        0
                    }
                }
            };
            aux[i] = l as u8;
            let w = weights[i];
            let l = l as f32;
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * f32::from(aux[i]) + this_min - x[i];
                cur_error += weights[i] * error(diff);
            }
            if cur_error < best_error {
                levels.copy_from_slice(aux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Levels `0..=nmax` for non-negative `x` (sub-block scales or mins) with a scale through zero,
/// weighted by `quant_weights`. Matches ggml's `make_qp_quants`, including its `uint8_t` levels:
/// a negative level wraps when stored but its sums use the unwrapped value. Returns the scale.
pub(crate) fn make_qp_quants(
    nmax: i32,
    x: &[f32],
    levels: &mut [u8],
    quant_weights: &[f32],
) -> f32 {
    let mut max = 0f32;
    for &v in x {
        max = if max > v { max } else { v };
    }
    if max < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let nmax_f = nmax as f32;
    let mut iscale = nmax_f / max;
    for (q, &v) in levels.iter_mut().zip(x) {
        *q = nearest_int(iscale * v) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0f32;
    for ((&q, &v), &w) in levels.iter().zip(x).zip(quant_weights) {
        let diff = v - scale * f32::from(q);
        best_mse += w * diff * diff;
    }
    for is in (-4..=4).filter(|&is| is != 0) {
        let iscale_is = (0.1 * is as f32 + nmax_f) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0f32;
        for (&v, &w) in x.iter().zip(quant_weights) {
            let l = nearest_int(iscale_is * v).min(nmax);
            let diff = v - scale_is * l as f32;
            mse += w * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for ((q, &v), &w) in levels.iter_mut().zip(x).zip(quant_weights) {
        let l = nearest_int(iscale * v).min(nmax);
        *q = l as u8;
        let l = l as f32;
        sumlx += w * v * l;
        suml2 += w * l * l;
    }
    for _ in 0..5 {
        let mut changed = false;
        for ((q, &v), &w) in levels.iter_mut().zip(x).zip(quant_weights) {
            let old = f32::from(*q);
            let mut slx = sumlx - w * v * old;
            let mut sl2 = suml2 - w * old * old;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(v * sl2 / slx).min(nmax);
                if new_l != i32::from(*q) {
                    let nl = new_l as f32;
                    slx += w * v * nl;
                    sl2 += w * nl * nl;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *q = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}
