//! Small helpers shared by several quant families, ported from `ggml-quants.c`: the all-zero
//! threshold, the signed largest magnitude, the importance weights built from an imatrix, and
//! `best_index_int8`. The scale searches are in `search.rs`, the float formats in `float.rs`.

/// ggml's `GROUP_MAX_EPS`: a group whose largest magnitude is below this is treated as all zero.
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// `(max, amax)`: the value of largest magnitude in `x` with its sign (the first one on ties) and
/// its magnitude, as ggml's `if (ax > amax) { amax = ax; max = x[i]; }` loop finds them (NaNs
/// are skipped, an empty or all-zero `x` gives `(0, 0)`).
#[inline]
pub(crate) fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    (max, amax)
}

/// `Σ x²`, summed in order as ggml does (its `sumx2` / `sigma2` loops).
#[inline]
pub(crate) fn sum_sq(x: &[f32]) -> f32 {
    let mut s = 0f32;
    for &v in x {
        s += v * v;
    }
    s
}

/// The importance weights ggml's `quantize_row_*_impl` derive from an imatrix slice `qw`:
/// `out[j] = qw[j] * sqrt(sigma2 + x[j]²)`. Returns their sum in order (the K-quants' `sumw`).
#[inline]
pub(crate) fn imatrix_weights(qw: &[f32], x: &[f32], sigma2: f32, out: &mut [f32]) -> f32 {
    let mut sum = 0f32;
    for ((o, &q), &v) in out.iter_mut().zip(qw).zip(x) {
        *o = q * (sigma2 + v * v).sqrt();
        sum += *o;
    }
    sum
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
