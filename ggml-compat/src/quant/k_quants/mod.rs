//! K-quants: 256-element super-blocks with quantized sub-block scales (Q2_K..Q6_K), and Q8_K,
//! the activation type their dot products pair with. Byte-for-byte ggml's `ggml-quants.c`.
//!
//! Each type has a reference quantizer (`quantize_row_*_ref`, used when no importance matrix is
//! given) and an importance-weighted one (`quantize_row_*_impl`); `search` holds the scale
//! searches both share.

mod q2_k;
mod q3_k;
mod q4_k;
mod q5_k;
mod q6_k;
mod q8_k;
mod scale_min;
pub(crate) mod search;

use super::QuantFns;
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

/// ggml's `nearest_int`, also outside the domain it asserts.
///
/// Within `|x| <= 4194303` this is [`crate::quant::nearest_int`] (round half to even). ggml builds
/// without asserts, and beyond that its bit trick (add `1.5 * 2^23`, read the integer back out of
/// the mantissa) does not saturate: `±inf` gives `-4194304`, large finite values wrap. The
/// K-quants do get there: a Q4_K/Q5_K super-block with values near 5e6 overflows `dmin` to `inf`
/// in f16 and then rounds `(x + inf) / d`. Reproducing the trick keeps those bytes equal to ggml's.
#[inline]
pub(crate) fn nearest_int(x: f32) -> i32 {
    if x.abs() <= 4_194_303.0 {
        crate::quant::nearest_int(x)
    } else {
        let bits = (x + 12_582_912.0).to_bits() as i32;
        (bits & 0x007f_ffff) - 0x0040_0000
    }
}

/// ggml's `GGML_FP32_TO_FP16` (round to nearest even).
#[inline]
fn f16(x: f32) -> half::f16 {
    half::f16::from_f32(x)
}

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

/// The importance weights ggml's `quantize_row_*_impl` derive from an imatrix row:
/// `qw[i] * sqrt(sigma2 + x[i]²)`.
#[inline]
fn imatrix_weights(qw: &[f32], x: &[f32], sigma2: f32, out: &mut [f32]) {
    for ((o, &q), &v) in out.iter_mut().zip(qw).zip(x) {
        *o = q * (sigma2 + v * v).sqrt();
    }
}

/// `Σ x²` over a super-block, summed in order as ggml does.
#[inline]
fn sum_sq(x: &[f32]) -> f32 {
    let mut s = 0f32;
    for &v in x {
        s += v * v;
    }
    s
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

#[cfg(test)]
mod tests {
    use super::nearest_int;

    /// ggml's trick, written out, agrees with rounding half to even everywhere in its domain.
    #[test]
    fn bit_trick_is_round_ties_even_in_ggml_domain() {
        let trick = |x: f32| ((x + 12_582_912.0).to_bits() as i32 & 0x007f_ffff) - 0x0040_0000;
        for x in [
            0.0f32, -0.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, 3.7, -3.7, 4194303.0,
            -4194303.0, 4194302.5, -4194302.5, 1e-30,
        ] {
            assert_eq!(trick(x), x.round_ties_even() as i32, "x = {x}");
            assert_eq!(nearest_int(x), trick(x), "x = {x}");
        }
    }

    #[test]
    fn nearest_int_outside_domain_is_ggml_bit_trick() {
        // inf + 1.5*2^23 = inf: mantissa 0, so 0 - 2^22.
        assert_eq!(nearest_int(f32::INFINITY), -4_194_304);
        assert_eq!(nearest_int(f32::NEG_INFINITY), -4_194_304);
        // 5e6 + 12582912 = 17582912, mantissa (17582912 - 2^24) / 2 = 402848.
        assert_eq!(nearest_int(5e6), 402_848 - 4_194_304);
        // A quiet NaN keeps only the quiet bit: 2^22 - 2^22.
        assert_eq!(nearest_int(f32::NAN), 0);
    }
}
