//! AVX2 kernels for 32-element blocks against Q8_0 / Q8_1.

use super::*;

// 32-element blocks against Q8_0 / Q8_1.

/// Q4_0 · Q8_0. Matches the AVX2 branch of `ggml_vec_dot_q4_0_q8_0`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_q4_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (x, y) in blocks::<Q4_0, Q8_0>(n, QK, w, a) {
        let d = _mm256_set1_ps(fp16_mul(&x[0..], &y[0..]));
        let qx = _mm256_sub_epi8(bytes_from_nibbles_32(&x[2..]), _mm256_set1_epi8(8));
        let qy = load256(&y[2..]);
        acc = _mm256_fmadd_ps(d, mul_sum_i8_pairs_float(qx, qy), acc);
    }
    hsum_float_8(acc)
}

/// Q4_1 · Q8_1. Matches the AVX2 branch of `ggml_vec_dot_q4_1_q8_1`: the min term
/// `m * s` is summed in a separate scalar.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_q4_1_q8_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0f32;
    for (x, y) in blocks::<Q4_1, Q8_1>(n, QK, w, a) {
        let dm = fp16_mul2(&x[0..], &y[0..], &x[2..], &y[2..]);
        summs += _mm_cvtss_f32(_mm_movehl_ps(dm, dm));
        let d0d1 = _mm256_broadcastss_ps(dm);
        let qx = bytes_from_nibbles_32(&x[4..]);
        let qy = load256(&y[4..]);
        acc = _mm256_fmadd_ps(d0d1, mul_sum_us8_pairs_float(qx, qy), acc);
    }
    hsum_float_8(acc) + summs
}

/// Q5_0 · Q8_0. Matches the AVX2 branch of `ggml_vec_dot_q5_0_q8_0`: a clear fifth bit turns
/// the nibble's byte into `nibble - 16` (OR with 0xF0).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_q5_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (x, y) in blocks::<Q5_0, Q8_0>(n, QK, w, a) {
        let d = _mm256_set1_ps(fp16_mul(&x[0..], &y[0..]));
        let bxhi = _mm256_andnot_si256(bytes_from_bits_32(&x[2..]), _mm256_set1_epi8(0xF0u8 as i8));
        let qx = _mm256_or_si256(bytes_from_nibbles_32(&x[6..]), bxhi);
        let qy = load256(&y[2..]);
        acc = _mm256_fmadd_ps(d, mul_sum_i8_pairs_float(qx, qy), acc);
    }
    hsum_float_8(acc)
}

/// Q5_1 · Q8_1. Matches the AVX2 branch of `ggml_vec_dot_q5_1_q8_1`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_q5_1_q8_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0f32;
    for (x, y) in blocks::<Q5_1, Q8_1>(n, QK, w, a) {
        let dm = fp16_mul2(&x[0..], &y[0..], &x[2..], &y[2..]);
        summs += _mm_cvtss_f32(_mm_movehl_ps(dm, dm));
        let d0d1 = _mm256_broadcastss_ps(dm);
        let bxhi = _mm256_and_si256(bytes_from_bits_32(&x[4..]), _mm256_set1_epi8(0x10));
        let qx = _mm256_or_si256(bytes_from_nibbles_32(&x[8..]), bxhi);
        let qy = load256(&y[4..]);
        acc = _mm256_fmadd_ps(d0d1, mul_sum_us8_pairs_float(qx, qy), acc);
    }
    hsum_float_8(acc) + summs
}

/// Q8_0 · Q8_0. Matches the AVX2 branch of `ggml_vec_dot_q8_0_q8_0`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_q8_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (x, y) in blocks::<Q8_0, Q8_0>(n, QK, w, a) {
        let d = _mm256_set1_ps(fp16_mul(&x[0..], &y[0..]));
        let q = mul_sum_i8_pairs_float(load256(&x[2..]), load256(&y[2..]));
        acc = _mm256_fmadd_ps(d, q, acc);
    }
    hsum_float_8(acc)
}

/// The shared body of IQ4_NL and MXFP4 against Q8_0: a nibble lookup in `values`, two blocks
/// per step into two accumulators (ggml's `accum1`, `accum2`); an odd last block joins the
/// first. `qs` is the offset of the 16 nibble bytes in a weight block, `scale` the block's
/// combined float scale.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn table_q8_0<const W: usize>(
    n: usize,
    w: &[u8],
    a: &[u8],
    values: __m128i,
    qs: usize,
    scale: impl Fn(&[u8; W], &[u8; Q8_0]) -> f32,
) -> f32 {
    let mut accum = [_mm256_setzero_ps(); 2];
    let (x, _) = w.as_chunks::<W>();
    let (y, _) = a.as_chunks::<Q8_0>();
    let nb = (n / QK).min(x.len()).min(y.len());
    let block = |x: &[u8; W], y: &[u8; Q8_0]| {
        let q4b = lookup_nibbles_32(values, &x[qs..]);
        let p16 = mul_add_epi8(q4b, load256(&y[2..]));
        let p = _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
        (_mm256_set1_ps(scale(x, y)), _mm256_cvtepi32_ps(p))
    };
    for (x, y) in x[..nb].chunks_exact(2).zip(y[..nb].chunks_exact(2)) {
        for (acc, (x, y)) in accum.iter_mut().zip(x.iter().zip(y)) {
            let (d, p) = block(x, y);
            *acc = _mm256_fmadd_ps(d, p, *acc);
        }
    }
    if nb % 2 == 1 {
        let (d, p) = block(&x[nb - 1], &y[nb - 1]);
        accum[0] = _mm256_fmadd_ps(d, p, accum[0]);
    }
    hsum_float_8(_mm256_add_ps(accum[0], accum[1]))
}

/// IQ4_NL · Q8_0 (`d: f16`, `qs[16]` indices into `kvalues_iq4nl`). Matches the AVX2 branch of
/// `ggml_vec_dot_iq4_nl_q8_0`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_iq4_nl_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    table_q8_0::<IQ4NL>(n, w, a, iq4nl_values(), 2, |x, y| fp16_mul(y, x))
}

/// ggml's `GGML_CPU_E8M0_TO_FP32_HALF`: `2^(e - 128)`, built from bits (subnormal for e < 2).
#[inline]
fn e8m0_to_f32_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000u32 << e
    } else {
        (e as u32 - 1) << 23
    };
    f32::from_bits(bits)
}

/// MXFP4 · Q8_0 (`e: u8` E8M0 exponent, `qs[16]` E2M1 codes into `kvalues_mxfp4`). Matches the
/// AVX2 branch of `ggml_vec_dot_mxfp4_q8_0`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_mxfp4_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let values = _mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
    table_q8_0::<MXFP4>(n, w, a, values, 1, |x, y| {
        fp16(&y[0..]) * e8m0_to_f32_half(x[0])
    })
}

/// Q1_0 · Q8_0 (128 weights: `d: f16`, `qs[16]`; bit `i` set means `+d`, clear `-d`): each
/// Q8_0 block meets 32 bits, turned into ±1 bytes that sign the activations. The integer sums of
/// `ggml_vec_dot_q1_0_q8_0_generic`; each block's `d8 * sum` is folded into one FMA with the
/// weight scale instead of a per-block float sum.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_q1_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let ones = _mm256_set1_epi8(1);
    let mut acc = _mm256_setzero_ps();
    let (x, _) = w.as_chunks::<Q1_0>();
    let (y, _) = a.as_chunks::<Q8_0>();
    for (x, y4) in x.iter().zip(y.chunks_exact(4)).take(n / 128) {
        let dx = fp16(&x[0..]);
        for (k, yb) in y4.iter().enumerate() {
            let set = bytes_from_bits_32(&x[2 + 4 * k..]);
            // +1 where the bit is set, -1 where it is clear.
            let sign = _mm256_or_si256(_mm256_andnot_si256(set, _mm256_set1_epi8(-1)), ones);
            let dot = mul_sum_i8_pairs_float(sign, load256(&yb[2..]));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(dx * fp16(&yb[0..])), dot, acc);
        }
    }
    hsum_float_8(acc)
}

/// Q2_0 · Q8_0 (64 weights: `d: f16`, `qs[16]`, 2-bit codes packed from the low bits up,
/// `x = d * (q - 1)`). Per Q8_0 block, its 8 code bytes are unpacked planar (a per-lane variable
/// shift puts the codes of elements `4b + s` in byte `4s + b` of each 128-bit half) and the
/// activations shuffled to match. The integer sums of `ggml_vec_dot_q2_0_q8_0_generic`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_q2_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let shifts = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    // Byte 4s + b of a half takes element 4b + s of that half.
    let order = _mm256_setr_epi8(
        0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, 0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10,
        14, 3, 7, 11, 15,
    );
    let (m3, one) = (_mm256_set1_epi8(3), _mm256_set1_epi8(1));
    let mut acc = _mm256_setzero_ps();
    let (x, _) = w.as_chunks::<Q2_0>();
    let (y, _) = a.as_chunks::<Q8_0>();
    for (x, y2) in x.iter().zip(y.chunks_exact(2)).take(n / 64) {
        let dx = fp16(&x[0..]);
        for (k, yb) in y2.iter().enumerate() {
            let q = &x[2 + 8 * k..];
            let lo = i32::from_le_bytes([q[0], q[1], q[2], q[3]]);
            let hi = i32::from_le_bytes([q[4], q[5], q[6], q[7]]);
            let words = _mm256_set_m128i(_mm_set1_epi32(hi), _mm_set1_epi32(lo));
            let codes = _mm256_and_si256(_mm256_srlv_epi32(words, shifts), m3);
            let q8 = _mm256_shuffle_epi8(load256(&yb[2..]), order);
            let dot = mul_sum_i8_pairs_float(_mm256_sub_epi8(codes, one), q8);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(dx * fp16(&yb[0..])), dot, acc);
        }
    }
    hsum_float_8(acc)
}
