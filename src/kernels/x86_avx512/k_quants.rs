//! AVX-512 + VNNI kernels for 256-element super-blocks against Q8_K: 64 bytes per `vpdpbusd`,
//! each group's scale applied with an integer multiply (`vpmulld`).

use super::*;
use crate::kernels::x86_avx2::{fp16, IQ4XS, Q2K, Q3K};
use ggml_compat::QK_K;

/// `dot` (16 i32 lanes, four per group of 16 elements: groups `g .. g + 4`) times those groups'
/// scales, taken from `scales` (one i32 lane per group).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn scale_groups16(dot: __m512i, scales: __m512i, g: usize) -> __m512i {
    let g = g as i32;
    let idx = _mm512_set_epi32(
        g + 3,
        g + 3,
        g + 3,
        g + 3,
        g + 2,
        g + 2,
        g + 2,
        g + 2,
        g + 1,
        g + 1,
        g + 1,
        g + 1,
        g,
        g,
        g,
        g,
    );
    _mm512_mullo_epi32(dot, _mm512_permutexvar_epi32(idx, scales))
}

/// Q4_K · Q8_K, the integer sums of `ggml_vec_dot_q4_K_q8_K`: per 64 elements one `vpdpbusd`
/// (lanes 0..8 group 2j, 8..16 group 2j + 1) times the groups' scales; the mins term as in
/// the AVX2 kernel.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn vec_dot_q4_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let m4 = _mm512_set1_epi8(0xF);
    let mut acc = _mm512_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for (x, y) in blocks::<Q4K, Q8K>(n, QK_K, w, a) {
        let yd = f32_at(&y[0..]);
        let (xd, xdmin) = fp16x2(&x[0..]);
        let u = k4_utmp(&x[4..16]);
        acc_m = _mm_fmadd_ps(_mm_set1_ps(-yd * xdmin), k_mins(&u, y), acc_m);
        let scales = _mm512_cvtepu8_epi32(_mm_set_epi32(0, 0, u[1] as i32, u[0] as i32));
        let mut sumi = _mm512_setzero_si512();
        for j in 0..QK_K / 64 {
            let q4bits = load256(&x[16 + 32 * j..]);
            let q4 = _mm512_and_si512(join256(q4bits, _mm256_srli_epi16::<4>(q4bits)), m4);
            let q8 = load512(&y[Q8K_QS + 64 * j..]);
            let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q4, q8);
            let (g0, g1) = (2 * j as i32, 2 * j as i32 + 1);
            let idx = _mm512_set_epi32(
                g1, g1, g1, g1, g1, g1, g1, g1, g0, g0, g0, g0, g0, g0, g0, g0,
            );
            let sc = _mm512_permutexvar_epi32(idx, scales);
            sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(dot, sc));
        }
        acc = _mm512_fmadd_ps(_mm512_set1_ps(yd * xd), _mm512_cvtepi32_ps(sumi), acc);
    }
    acc_m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
    acc_m = _mm_add_ss(acc_m, _mm_movehdup_ps(acc_m));
    _mm512_reduce_add_ps(acc) + _mm_cvtss_f32(acc_m)
}

/// The Q4_K / Q5_K mins term of one super-block: pairwise-summed `bsums` (one per group of 32)
/// times the 8 mins (`utmp` words 2..4), as 4 i32 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn k_mins(u: &[u32; 4], y: &[u8]) -> __m128 {
    let mins = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, u[3] as i32, u[2] as i32));
    let q8sums = load256(&y[Q8K_BSUMS..]);
    let q8s = _mm_hadd_epi16(
        _mm256_castsi256_si128(q8sums),
        _mm256_extracti128_si256::<1>(q8sums),
    );
    _mm_cvtepi32_ps(_mm_madd_epi16(mins, q8s))
}

/// Q5_K · Q8_K, the integer sums of `ggml_vec_dot_q5_K_q8_K`: as the Q4_K kernel, with bit
/// `2j` (low nibbles) and `2j + 1` (high nibbles) of `qh` adding 16.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn vec_dot_q5_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let m4 = _mm512_set1_epi8(0xF);
    let one = _mm512_set1_epi8(1);
    let mut acc = _mm512_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for (x, y) in blocks::<Q5K, Q8K>(n, QK_K, w, a) {
        // d, dmin, scales[12], qh[32] at 16, qs[128] at 48.
        let yd = f32_at(&y[0..]);
        let (xd, xdmin) = fp16x2(&x[0..]);
        let u = k4_utmp(&x[4..16]);
        acc_m = _mm_fmadd_ps(_mm_set1_ps(-yd * xdmin), k_mins(&u, y), acc_m);
        let scales = _mm512_cvtepu8_epi32(_mm_set_epi32(0, 0, u[1] as i32, u[0] as i32));
        let qh = load256(&x[16..]);
        let qh = join256(qh, _mm256_srli_epi16::<1>(qh));
        let mut sumi = _mm512_setzero_si512();
        for j in 0..QK_K / 64 {
            let q5bits = load256(&x[48 + 32 * j..]);
            let low = _mm512_and_si512(join256(q5bits, _mm256_srli_epi16::<4>(q5bits)), m4);
            let bit = _mm_cvtsi64_si128(2 * j as i64);
            let high = _mm512_and_si512(_mm512_srl_epi16(qh, bit), one);
            let q5 = _mm512_or_si512(low, _mm512_slli_epi16::<4>(high));
            let q8 = load512(&y[Q8K_QS + 64 * j..]);
            let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q5, q8);
            let (g0, g1) = (2 * j as i32, 2 * j as i32 + 1);
            let idx = _mm512_set_epi32(
                g1, g1, g1, g1, g1, g1, g1, g1, g0, g0, g0, g0, g0, g0, g0, g0,
            );
            let sc = _mm512_permutexvar_epi32(idx, scales);
            sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(dot, sc));
        }
        acc = _mm512_fmadd_ps(_mm512_set1_ps(yd * xd), _mm512_cvtepi32_ps(sumi), acc);
    }
    acc_m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
    acc_m = _mm_add_ss(acc_m, _mm_movehdup_ps(acc_m));
    _mm512_reduce_add_ps(acc) + _mm_cvtss_f32(acc_m)
}

/// Q6_K · Q8_K, the integer sums of `ggml_vec_dot_q6_K_q8_K`: unsigned 6-bit quants against
/// the activations 64 at a time, each group's scale applied with an integer multiply, and the
/// bias 32 taken out once per super-block as `32 * sum(scale * bsum)`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn vec_dot_q6_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let m4 = _mm512_set1_epi8(0xF);
    let m2 = _mm512_set1_epi8(3);
    let mut acc = _mm512_setzero_ps();
    for (x, y) in blocks::<Q6K, Q8K>(n, QK_K, w, a) {
        // ql at 0..128, qh at 128..192, scales at 192..208, d at 208.
        let d = f32_at(&y[0..]) * fp16(&x[208..]);
        let scales8 = load128(&x[192..]);
        let scales = _mm512_cvtepi8_epi32(scales8);
        let bias = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scales8), load256(&y[Q8K_BSUMS..]));
        let mut sumi = _mm512_slli_epi32::<5>(_mm512_zextsi256_si512(bias));
        sumi = _mm512_sub_epi32(_mm512_setzero_si512(), sumi);
        for j in 0..QK_K / 128 {
            let ql = load512(&x[64 * j..]);
            let qh = load256(&x[128 + 32 * j..]);
            // Elements 0..64 of this 128: low nibbles with qh bits 0-1, then 2-3;
            // elements 64..128: high nibbles with qh bits 4-5, then 6-7.
            let qh2 = join256(qh, _mm256_srli_epi16::<2>(qh));
            let lo = _mm512_or_si512(
                _mm512_and_si512(ql, m4),
                _mm512_slli_epi16::<4>(_mm512_and_si512(qh2, m2)),
            );
            let hi = _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4),
                _mm512_slli_epi16::<4>(_mm512_and_si512(_mm512_srli_epi16::<4>(qh2), m2)),
            );
            for (k, q) in [lo, hi].into_iter().enumerate() {
                let q8 = load512(&y[Q8K_QS + 128 * j + 64 * k..]);
                let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, q8);
                sumi = _mm512_add_epi32(sumi, scale_groups16(dot, scales, 8 * j + 4 * k));
            }
        }
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    }
    _mm512_reduce_add_ps(acc)
}

/// Q2_K · Q8_K, the integer sums of `ggml_vec_dot_q2_K_q8_K` (`scales[16]` at 0, `qs[64]` at
/// 16, `d`, `dmin` at 80): 2-bit quants 64 at a time, the mins term from `bsums` as in the AVX2
/// kernel.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn vec_dot_q2_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let m3 = _mm512_set1_epi8(3);
    let mut acc = _mm512_setzero_ps();
    let mut acc_m = _mm256_setzero_ps();
    for (x, y) in blocks::<Q2K, Q8K>(n, QK_K, w, a) {
        let yd = f32_at(&y[0..]);
        let (xd, xdmin) = fp16x2(&x[80..]);
        let mins_and_scales = load128(&x[0..]);
        let mins8 = _mm_and_si128(_mm_srli_epi16::<4>(mins_and_scales), _mm_set1_epi8(0xF));
        let prod = _mm256_madd_epi16(_mm256_cvtepu8_epi16(mins8), load256(&y[Q8K_BSUMS..]));
        acc_m = _mm256_fmadd_ps(_mm256_set1_ps(-yd * xdmin), _mm256_cvtepi32_ps(prod), acc_m);
        let scales = _mm512_cvtepu8_epi32(_mm_and_si128(mins_and_scales, _mm_set1_epi8(0xF)));
        let mut sumi = _mm512_setzero_si512();
        for j in 0..QK_K / 128 {
            let q2bits = load256(&x[16 + 32 * j..]);
            // Shifts 0, 2 → elements 0..64 of this 128; shifts 4, 6 → 64..128.
            let q2lo = join256(q2bits, _mm256_srli_epi16::<2>(q2bits));
            let q2hi = _mm512_srli_epi16::<4>(q2lo);
            for (k, q) in [q2lo, q2hi].into_iter().enumerate() {
                let q = _mm512_and_si512(q, m3);
                let q8 = load512(&y[Q8K_QS + 128 * j + 64 * k..]);
                let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, q8);
                sumi = _mm512_add_epi32(sumi, scale_groups16(dot, scales, 8 * j + 4 * k));
            }
        }
        acc = _mm512_fmadd_ps(_mm512_set1_ps(yd * xd), _mm512_cvtepi32_ps(sumi), acc);
    }
    _mm512_reduce_add_ps(acc) + hsum8(acc_m)
}

/// Q3_K · Q8_K, the integer sums of `ggml_vec_dot_q3_K_q8_K` (`hmask[32]`, `qs[64]` at 32,
/// `scales[12]` at 96, `d` at 108): the unsigned `low | high << 2` (0..8) against the
/// activations, and the bias 4 taken out once per super-block as `4 * sum(scale * bsum)`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn vec_dot_q3_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let (m3, one) = (_mm512_set1_epi8(3), _mm512_set1_epi8(1));
    let mut acc = _mm512_setzero_ps();
    for (x, y) in blocks::<Q3K, Q8K>(n, QK_K, w, a) {
        let d = f32_at(&y[0..]) * fp16(&x[108..]);
        let word = |i: usize| u32::from_le_bytes([x[96 + i], x[97 + i], x[98 + i], x[99 + i]]);
        let aux = [word(0), word(4), word(8)];
        let scales8 = _mm_set_epi32(
            (((aux[1] >> 4) & KMASK2) | (((aux[2] >> 6) & KMASK1) << 4)) as i32,
            (((aux[0] >> 4) & KMASK2) | (((aux[2] >> 4) & KMASK1) << 4)) as i32,
            ((aux[1] & KMASK2) | (((aux[2] >> 2) & KMASK1) << 4)) as i32,
            ((aux[0] & KMASK2) | ((aux[2] & KMASK1) << 4)) as i32,
        );
        let scales8 = _mm_sub_epi8(scales8, _mm_set1_epi8(32));
        let scales = _mm512_cvtepi8_epi32(scales8);
        let bias = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scales8), load256(&y[Q8K_BSUMS..]));
        let mut sumi = _mm512_sub_epi32(
            _mm512_setzero_si512(),
            _mm512_slli_epi32::<2>(_mm512_zextsi256_si512(bias)),
        );
        let hm = load256(&x[0..]);
        let hm = join256(hm, _mm256_srli_epi16::<1>(hm));
        for j in 0..QK_K / 128 {
            let q3bits = load256(&x[32 + 32 * j..]);
            let q3lo = join256(q3bits, _mm256_srli_epi16::<2>(q3bits));
            let q3hi = _mm512_srli_epi16::<4>(q3lo);
            for (k, low) in [q3lo, q3hi].into_iter().enumerate() {
                // Element 128 j + 32 s + l has its high bit at bit 4 j + s of hmask[l].
                let shift = _mm_cvtsi64_si128((4 * j + 2 * k) as i64);
                let high = _mm512_and_si512(_mm512_srl_epi16(hm, shift), one);
                let q = _mm512_or_si512(_mm512_and_si512(low, m3), _mm512_slli_epi16::<2>(high));
                let q8 = load512(&y[Q8K_QS + 128 * j + 64 * k..]);
                let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, q8);
                sumi = _mm512_add_epi32(sumi, scale_groups16(dot, scales, 8 * j + 4 * k));
            }
        }
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    }
    _mm512_reduce_add_ps(acc)
}

/// IQ4_XS · Q8_K, the integer sums of `ggml_vec_dot_iq4_xs_q8_K` (`d`, `scales_h: u16`,
/// `scales_l[4]`, `qs[128]` at 8): two groups of 32 per 64-byte lookup and `vpdpbusd`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn vec_dot_iq4_xs_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let values = _mm512_broadcast_i32x4(iq4nl_values());
    let mut acc = _mm512_setzero_ps();
    for (x, y) in blocks::<IQ4XS, Q8K>(n, QK_K, w, a) {
        let sh = u16::from_le_bytes([x[2], x[3]]) as u32;
        let mut sumi = _mm512_setzero_si512();
        for ib in (0..QK_K / 32).step_by(2) {
            let qx =
                _mm512_shuffle_epi8(values, nibbles_2x32(&x[8 + 16 * ib..], &x[24 + 16 * ib..]));
            let q8 = load512(&y[Q8K_QS + 32 * ib..]);
            let dot = dot_i8_512(qx, q8);
            let sl = x[4 + ib / 2] as u32;
            let ls1 = ((sl & 0xF) | (((sh >> (2 * ib)) & 3) << 4)) as i32 - 32;
            let ls2 = ((sl >> 4) | (((sh >> (2 * ib + 2)) & 3) << 4)) as i32 - 32;
            let ls =
                _mm512_mask_blend_epi32(0xFF00, _mm512_set1_epi32(ls1), _mm512_set1_epi32(ls2));
            sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(dot, ls));
        }
        let d = fp16(&x[0..]) * f32_at(&y[0..]);
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    }
    _mm512_reduce_add_ps(acc)
}
