//! kiln's importance-weighted fit for the four formats whose ggml quantizer ignores the
//! importance matrix: TQ1_0 and TQ2_0 (`x = d·t`, `t ∈ {-1, 0, 1}`, 256 weights), Q1_0
//! (`x = ±d`, 128 weights) and Q2_0 (`x = d·t`, `t ∈ {-1, 0, 1, 2}`, 64 weights), each with one
//! f16 scale `d` per block.
//!
//! ggml's `quantize_tq2_0` (and the other three) set `d = amax` (Q1_0: `mean|x|`) whatever the
//! importance matrix says; for weights that were not trained ternary that rounds most of a block
//! to zero. Here each block gets the f16 scale minimizing `Σ w_i (x_i − d·q_i)²` with every `q_i`
//! the level nearest to `x_i` — the exact optimum over all f16 scales (see [`fit_block`]) — and
//! the result is written as an ordinary ggml block that llama.cpp reads unchanged. This is not
//! ggml arithmetic, so it lives here and not in `ggml-compat`; without an importance vector
//! [`quantize_row_weighted`] is ggml's reference quantizer byte for byte.

use super::codec;
use ggml_compat::quant::float::fp16_to_fp32;
use ggml_compat::quant::{self, QuantError};
use ggml_compat::GgmlType;
use half::f16;

/// Largest finite f16, as bits.
const F16_MAX_BITS: u16 = 0x7bff;

/// Whether kiln's own weighted fit replaces ggml's quantizer for `ty` when an importance vector
/// is given: the low-bit types whose ggml quantizer ignores it. (ggml also ignores it for the
/// float types, Q8_0/Q8_1 and MXFP4; those stay ggml's.)
pub fn has_weighted_fit(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, TQ1_0 | TQ2_0 | Q1_0 | Q2_0)
}

/// Quantizes one row `x` into `out` (exactly the row's byte size), weighted by `weights` (one
/// per element of `x`) when given. Without weights, and for every type whose ggml quantizer
/// takes an importance matrix, this is ggml's `quantize_<type>` (`ggml_quantize_chunk`) exactly,
/// via [`quant::quantize_row`]. With weights, for TQ1_0, TQ2_0, Q1_0 and Q2_0 (where ggml's
/// quantizer ignores them) each block is kiln's weighted least-squares fit instead, which has no
/// ggml counterpart (llama.cpp reads its blocks like any other).
pub fn quantize_row_weighted(
    ty: GgmlType,
    x: &[f32],
    out: &mut [u8],
    weights: Option<&[f32]>,
) -> Result<(), QuantError> {
    // ggml's quantizer checks the lengths, and is the answer for everything but the weighted
    // low-bit case; there it leaves blocks with the right layout that `fit_block` refits.
    quant::quantize_row(ty, x, out, weights)?;
    let Some(w) = weights else {
        return Ok(());
    };
    if !has_weighted_fit(ty) {
        return Ok(());
    }
    let (bs, ts) = (ty.block_size(), ty.type_size());
    let mut scratch = Scratch::default();
    let blocks = x.chunks_exact(bs).zip(w.chunks_exact(bs));
    for ((xb, wb), ob) in blocks.zip(out.chunks_exact_mut(ts)) {
        fit_block(ty, xb, wb, ob, &mut scratch);
    }
    Ok(())
}

/// Buffers reused from block to block.
#[derive(Default)]
struct Scratch {
    w: Vec<f64>,
    pos: Sorted,
    neg: Sorted,
    codes: Vec<i32>,
    breaks: Vec<f64>,
}

/// Fits one block of `ty` (one of [`has_weighted_fit`]) to `x` under weights `w` and writes it
/// into `block` (which must hold a block of `ty` already; its codes and scale are replaced).
///
/// For a fixed scale `d` the best code of each element is its nearest level, whatever its weight,
/// so the nearest-level assignment, as a function of `d`, only changes where `|x_i|` crosses a
/// rounding threshold. For each assignment `q` the error is a convex quadratic in `d`, least at
/// `d_q = Σ w x q / Σ w q²`; the best f16 scale for that assignment is one of the two f16 values
/// around `d_q`, and re-rounding every element to the nearest level at that f16 scale can only
/// lower the error further. So trying the f16 neighbours of `d_q` for every assignment the
/// thresholds allow, each scored exactly with the nearest levels, finds the best f16 scale:
/// ternary — the assignments are "the k largest `|x|` are ±1"; Q1_0 — the signs; Q2_0 — both
/// signs of `d` (its levels are not symmetric) and every interval between the thresholds
/// `2|x|` and `2x/3`. Scoring uses prefix sums over `|x|` sorted descending.
///
/// Weights that are negative or not finite count as 0; a block whose weights are all 0 is fitted
/// unweighted (every weight 1).
fn fit_block(ty: GgmlType, x: &[f32], w: &[f32], block: &mut [u8], s: &mut Scratch) {
    s.w.clear();
    s.w.extend(w.iter().map(|&v| {
        if v.is_finite() && v > 0.0 {
            f64::from(v)
        } else {
            0.0
        }
    }));
    if s.w.iter().all(|&v| v == 0.0) {
        s.w.fill(1.0);
    }
    let d = match ty {
        GgmlType::TQ1_0 | GgmlType::TQ2_0 => ternary_scale(x, s),
        GgmlType::Q1_0 => sign_scale(x, &s.w),
        GgmlType::Q2_0 => {
            let up = q2_0_scale(x, 1.0, s);
            let down = q2_0_scale(x, -1.0, s);
            if better(down.0, up.0) {
                f16::from_bits(down.1.to_bits() | 0x8000)
            } else {
                up.1
            }
        }
        _ => return,
    };
    if !codec::set_scale(ty, block, d) {
        return;
    }
    let fitted = codec::fit_grids(ty, block);
    s.codes.clear();
    s.codes.extend(
        x.iter()
            .enumerate()
            .map(|(j, &v)| fitted.grid(j).nearest(v).0),
    );
    codec::pack_codes(ty, block, &s.codes);
}

/// `e` beats `best` (a NaN `best` is beaten by any number).
#[inline]
fn better(e: f64, best: f64) -> bool {
    e < best || (best.is_nan() && !e.is_nan())
}

/// Scores the f16 values around the positive scale `d` (nearest, one step below and above,
/// capped at the largest finite f16) with `err`, keeping the best `(error, scale)` in `best`.
fn try_around(d: f64, err: impl Fn(f64) -> f64, best: &mut (f64, f16)) {
    if !(d.is_finite() && d > 0.0) {
        return;
    }
    let bits = f16::from_f64(d).to_bits().min(F16_MAX_BITS);
    for b in [bits.saturating_sub(1), bits, (bits + 1).min(F16_MAX_BITS)] {
        let h = f16::from_bits(b);
        let e = err(f64::from(fp16_to_fp32(h)));
        if better(e, best.0) {
            *best = (e, h);
        }
    }
}

/// Values sorted in descending order with their weights' prefix sums, for "the weighted sums
/// over all values above a threshold" in `O(log n)`.
#[derive(Default)]
struct Sorted {
    /// `(value, weight)`, values descending.
    items: Vec<(f64, f64)>,
    /// `sw[k] = Σ_{i<k} w_i`, `swx[k] = Σ_{i<k} w_i·v_i`.
    sw: Vec<f64>,
    swx: Vec<f64>,
}

impl Sorted {
    fn build(&mut self, items: impl Iterator<Item = (f64, f64)>) {
        self.items.clear();
        self.items.extend(items);
        self.items.sort_by(|a, b| b.0.total_cmp(&a.0));
        self.sw.clear();
        self.swx.clear();
        let (mut sw, mut swx) = (0.0, 0.0);
        self.sw.push(sw);
        self.swx.push(swx);
        for &(v, w) in &self.items {
            sw += w;
            swx += w * v;
            self.sw.push(sw);
            self.swx.push(swx);
        }
    }

    /// How many values exceed `t`.
    fn above(&self, t: f64) -> usize {
        self.items.partition_point(|&(v, _)| v > t)
    }
}

/// `Σ w x²` of a block.
fn sum_wx2(x: &[f32], w: &[f64]) -> f64 {
    x.iter()
        .zip(w)
        .map(|(&v, &w)| w * f64::from(v).powi(2))
        .sum()
}

/// Best f16 `d` for levels `{-1, 0, 1}·d`: for each k, the k largest `|x|` at `±d`.
fn ternary_scale(x: &[f32], s: &mut Scratch) -> f16 {
    let total = sum_wx2(x, &s.w);
    let a = &mut s.pos;
    a.build(x.iter().zip(&s.w).map(|(&v, &w)| (f64::from(v.abs()), w)));
    let err = |d: f64| {
        let m = a.above(d / 2.0);
        total - 2.0 * d * a.swx[m] + d * d * a.sw[m]
    };
    let mut best = (total, f16::ZERO);
    for k in 1..=a.items.len() {
        if a.sw[k] > 0.0 {
            try_around(a.swx[k] / a.sw[k], err, &mut best);
        }
    }
    best.1
}

/// Best f16 `d` for levels `±d` (the signs are fixed): `d = Σ w|x| / Σ w`.
fn sign_scale(x: &[f32], w: &[f64]) -> f16 {
    let total = sum_wx2(x, w);
    let sw: f64 = w.iter().sum();
    let swa: f64 = x.iter().zip(w).map(|(&v, &w)| w * f64::from(v.abs())).sum();
    let err = |d: f64| total - 2.0 * d * swa + d * d * sw;
    let mut best = (total, f16::ZERO);
    try_around(swa / sw, err, &mut best);
    best.1
}

/// Best positive f16 `d` for levels `{-1, 0, 1, 2}·d` applied to `sign · x`, and its error.
fn q2_0_scale(x: &[f32], sign: f64, s: &mut Scratch) -> (f64, f16) {
    let total = sum_wx2(x, &s.w);
    let vals = || x.iter().zip(&s.w).map(|(&v, &w)| (sign * f64::from(v), w));
    s.pos.build(vals().filter(|&(v, _)| v > 0.0));
    s.neg
        .build(vals().filter(|&(v, _)| v < 0.0).map(|(v, w)| (-v, w)));
    let (pos, neg) = (&s.pos, &s.neg);
    // (Σ w x q, Σ w q²) of the nearest levels at scale d > 0: positives above 3d/2 at 2, above
    // d/2 at 1; negatives below -d/2 at -1.
    let sums = |d: f64| {
        let (i1, i2, j) = (pos.above(d / 2.0), pos.above(1.5 * d), neg.above(d / 2.0));
        (
            pos.swx[i1] + pos.swx[i2] + neg.swx[j],
            pos.sw[i1] + 3.0 * pos.sw[i2] + neg.sw[j],
        )
    };
    let err = |d: f64| {
        let (sxq, sq2) = sums(d);
        total - 2.0 * d * sxq + d * d * sq2
    };
    // The assignment changes only at d = 2x, 2x/3 (positives) and 2|x| (negatives): one probe
    // inside every interval between them, and one below the smallest.
    let breaks = &mut s.breaks;
    breaks.clear();
    breaks.extend(
        pos.items
            .iter()
            .flat_map(|&(v, _)| [2.0 * v, 2.0 * v / 3.0]),
    );
    breaks.extend(neg.items.iter().map(|&(v, _)| 2.0 * v));
    breaks.sort_by(f64::total_cmp);
    breaks.dedup();
    let mut best = (total, f16::ZERO);
    let probes = breaks
        .first()
        .map(|&b| b / 2.0)
        .into_iter()
        .chain(breaks.windows(2).map(|p| 0.5 * (p[0] + p[1])));
    for probe in probes {
        let (sxq, sq2) = sums(probe);
        if sq2 > 0.0 {
            try_around(sxq / sq2, err, &mut best);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The weighted error of `x` with its nearest level at scale `d`, for a level set.
    fn brute_err(x: &[f32], w: &[f64], d: f32, levels: &[i32]) -> f64 {
        x.iter()
            .zip(w)
            .map(|(&v, &w)| {
                let e = levels
                    .iter()
                    .map(|&l| (f64::from(v) - f64::from(l as f32 * d)).powi(2))
                    .fold(f64::INFINITY, f64::min);
                w * e
            })
            .sum()
    }

    /// Every finite f16 scale (both signs), the best error.
    fn brute_best(x: &[f32], w: &[f64], levels: &[i32]) -> f64 {
        (0..=F16_MAX_BITS)
            .flat_map(|b| [b, b | 0x8000])
            .map(|b| brute_err(x, w, f16::from_bits(b).to_f32(), levels))
            .fold(f64::INFINITY, f64::min)
    }

    /// The scale search returns the best f16 scale: checked against every finite f16 value on
    /// small blocks (the search code does not depend on the block size).
    #[test]
    fn scale_search_matches_exhaustive_search() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut unit = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32
        };
        for trial in 0..30 {
            let n = 16 + trial % 5;
            let x: Vec<f32> = (0..n)
                .map(|_| {
                    let v = unit() - 0.45;
                    if unit() < 0.1 {
                        v * 8.0
                    } else {
                        v
                    }
                })
                .collect();
            let w: Vec<f64> = (0..n)
                .map(|_| {
                    if trial % 3 == 0 {
                        1.0
                    } else {
                        f64::from(unit())
                    }
                })
                .collect();
            let mut s = Scratch {
                w: w.clone(),
                ..Default::default()
            };
            let tern = ternary_scale(&x, &mut s).to_f32();
            let got = brute_err(&x, &w, tern, &[-1, 0, 1]);
            let want = brute_best(&x, &w, &[-1, 0, 1]);
            assert!(
                got <= want * (1.0 + 1e-9),
                "ternary {trial}: {got} vs {want}"
            );

            let sg = sign_scale(&x, &w).to_f32();
            let got = brute_err(&x, &w, sg, &[-1, 1]);
            let want = brute_best(&x, &w, &[-1, 1]);
            assert!(got <= want * (1.0 + 1e-9), "sign {trial}: {got} vs {want}");

            let up = q2_0_scale(&x, 1.0, &mut s);
            let down = q2_0_scale(&x, -1.0, &mut s);
            let d = if better(down.0, up.0) {
                -down.1.to_f32()
            } else {
                up.1.to_f32()
            };
            let got = brute_err(&x, &w, d, &[-1, 0, 1, 2]);
            let want = brute_best(&x, &w, &[-1, 0, 1, 2]);
            assert!(got <= want * (1.0 + 1e-9), "q2_0 {trial}: {got} vs {want}");
        }
    }
}
