//! 32-element blocks against Q8_0 / Q8_1 (ggml's `__ARM_NEON` branches of the legacy quants).
//! In a weight block, byte j holds element j in its low nibble and element j + 16 in its high
//! nibble, so one 16-byte load gives both halves of the block.

use super::*;
use ggml_compat::quant::float::e8m0_to_fp32_half;
use ggml_compat::quant::tables::{KVALUES_IQ4NL, KVALUES_MXFP4};

/// Q8_0 · Q8_0. Matches the NEON branch of `ggml_vec_dot_q8_0_q8_0`.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn vec_dot_q8_0_q8_0<D: Dot>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumv = vdupq_n_f32(0.0);
    for (x, y) in blocks::<Q8_0, Q8_0>(n, QK, w, a) {
        let p = D::dot(vdupq_n_s32(0), load_s8(&x[2..]), load_s8(&y[2..]));
        let p = D::dot(p, load_s8(&x[18..]), load_s8(&y[18..]));
        sumv = vmlaq_n_f32(sumv, vcvtq_f32_s32(p), fp16(x) * fp16(y));
    }
    vaddvq_f32(sumv)
}

/// The 32 nibbles of `qs[0..16]` as two vectors (elements 0..16, 16..32), values 0..16.
#[inline]
#[target_feature(enable = "neon")]
fn nibbles(qs: &[u8]) -> (uint8x16_t, uint8x16_t) {
    let v = load_u8(qs);
    (vandq_u8(v, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(v))
}

/// `dot(lo, y[0..16]) + dot(hi, y[16..32])` lane-wise, for a Q8_0/Q8_1 quant array `y`.
#[inline]
#[target_feature(enable = "neon")]
fn dot32<D: Dot>(lo: int8x16_t, hi: int8x16_t, y: &[u8]) -> int32x4_t {
    D::dot(
        D::dot(vdupq_n_s32(0), lo, load_s8(y)),
        hi,
        load_s8(&y[16..]),
    )
}

/// Q4_0 · Q8_0 (`d: f16, qs: [u8; 16]`, `x = d * (q - 8)`). Matches the NEON branch of
/// `ggml_vec_dot_q4_0_q8_0`.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn vec_dot_q4_0_q8_0<D: Dot>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let s8b = vdupq_n_s8(8);
    let mut sumv = vdupq_n_f32(0.0);
    for (x, y) in blocks::<Q4_0, Q8_0>(n, QK, w, a) {
        let (lo, hi) = nibbles(&x[2..]);
        let lo = vsubq_s8(vreinterpretq_s8_u8(lo), s8b);
        let hi = vsubq_s8(vreinterpretq_s8_u8(hi), s8b);
        let p = dot32::<D>(lo, hi, &y[2..]);
        sumv = vmlaq_n_f32(sumv, vcvtq_f32_s32(p), fp16(x) * fp16(y));
    }
    vaddvq_f32(sumv)
}

/// Q4_1 · Q8_1 (`d, m: f16, qs: [u8; 16]`, `x = d * q + m`). Matches the NEON branch of
/// `ggml_vec_dot_q4_1_q8_1`; the min term uses Q8_1's `s = d * sum(q)`.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn vec_dot_q4_1_q8_1<D: Dot>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumv = vdupq_n_f32(0.0);
    let mut summs = 0f32;
    for (x, y) in blocks::<Q4_1, Q8_1>(n, QK, w, a) {
        summs += fp16(&x[2..]) * fp16(&y[2..]);
        let (lo, hi) = nibbles(&x[4..]);
        let p = dot32::<D>(vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi), &y[4..]);
        sumv = vmlaq_n_f32(sumv, vcvtq_f32_s32(p), fp16(x) * fp16(y));
    }
    vaddvq_f32(sumv) + summs
}

/// Q5_0 · Q8_0 (`d: f16, qh: [u8; 4], qs: [u8; 16]`, `x = d * (q - 16)`, bit j of `qh` the
/// fifth bit of element j). Matches the NEON branch of `ggml_vec_dot_q5_0_q8_0`: subtract 16
/// where the fifth bit is clear.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn vec_dot_q5_0_q8_0<D: Dot>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let m16 = vdupq_n_u8(0x10);
    let mut sumv = vdupq_n_f32(0.0);
    for (x, y) in blocks::<Q5_0, Q8_0>(n, QK, w, a) {
        let (hl, hh) = bytes_from_bits_32(&x[2..]);
        let (lo, hi) = nibbles(&x[6..]);
        let lo = vsubq_s8(
            vreinterpretq_s8_u8(lo),
            vreinterpretq_s8_u8(vbicq_u8(m16, hl)),
        );
        let hi = vsubq_s8(
            vreinterpretq_s8_u8(hi),
            vreinterpretq_s8_u8(vbicq_u8(m16, hh)),
        );
        let p = dot32::<D>(lo, hi, &y[2..]);
        sumv = vmlaq_n_f32(sumv, vcvtq_f32_s32(p), fp16(x) * fp16(y));
    }
    vaddvq_f32(sumv)
}

/// Q5_1 · Q8_1 (`d, m: f16, qh: [u8; 4], qs: [u8; 16]`, `x = d * q + m`). Matches the NEON
/// branch of `ggml_vec_dot_q5_1_q8_1`.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn vec_dot_q5_1_q8_1<D: Dot>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let m16 = vdupq_n_u8(0x10);
    let mut sumv = vdupq_n_f32(0.0);
    let mut summs = 0f32;
    for (x, y) in blocks::<Q5_1, Q8_1>(n, QK, w, a) {
        summs += fp16(&x[2..]) * fp16(&y[2..]);
        let (hl, hh) = bytes_from_bits_32(&x[4..]);
        let (lo, hi) = nibbles(&x[8..]);
        let lo = vreinterpretq_s8_u8(vorrq_u8(lo, vandq_u8(m16, hl)));
        let hi = vreinterpretq_s8_u8(vorrq_u8(hi, vandq_u8(m16, hh)));
        let p = dot32::<D>(lo, hi, &y[4..]);
        sumv = vmlaq_n_f32(sumv, vcvtq_f32_s32(p), fp16(x) * fp16(y));
    }
    vaddvq_f32(sumv) + summs
}

/// The 32 nibbles of `qs[0..16]` looked up in `values` (elements 0..16, 16..32).
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn lookup_nibbles(values: int8x16_t, qs: &[u8]) -> (int8x16_t, int8x16_t) {
    let (lo, hi) = nibbles(qs);
    (vqtbl1q_s8(values, lo), vqtbl1q_s8(values, hi))
}

/// IQ4_NL · Q8_0 (`d: f16, qs: [u8; 16]`, `x = d * kvalues_iq4nl[q]`). Matches the NEON branch
/// of `ggml_vec_dot_iq4_nl_q8_0`.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn vec_dot_iq4_nl_q8_0<D: Dot>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let values = load_s8(&KVALUES_IQ4NL.map(|v| v as u8));
    let mut sumf = 0f32;
    for (x, y) in blocks::<IQ4NL, Q8_0>(n, QK, w, a) {
        let (lo, hi) = lookup_nibbles(values, &x[2..]);
        let sumi = vaddvq_s32(dot32::<D>(lo, hi, &y[2..]));
        sumf += fp16(x) * fp16(y) * sumi as f32;
    }
    sumf
}

/// MXFP4 · Q8_0 (`e: u8` E8M0 exponent, `qs: [u8; 16]` E2M1 codes; `x = 2^(e-128) *
/// kvalues_mxfp4[q]`). Matches the NEON branch of `ggml_vec_dot_mxfp4_q8_0`.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn vec_dot_mxfp4_q8_0<D: Dot>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let values = load_s8(&KVALUES_MXFP4.map(|v| v as u8));
    let mut sumf = 0f32;
    for (x, y) in blocks::<MXFP4, Q8_0>(n, QK, w, a) {
        let (lo, hi) = lookup_nibbles(values, &x[1..]);
        let sumi = vaddvq_s32(dot32::<D>(lo, hi, &y[2..]));
        sumf += fp16(y) * e8m0_to_fp32_half(x[0]) * sumi as f32;
    }
    sumf
}
