//! AVX2 kernels for 256-element super-blocks against Q8_K.

use super::*;

// 256-element super-blocks against Q8_K.

/// ggml's `get_scale_shuffle_k4(i)`: broadcasts 16-bit lane `i` of a 128-bit half to all 16.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn scale_shuffle_k4(i: usize) -> __m256i {
    let (lo, hi) = (2 * i as u16, 2 * i as u16 + 1);
    _mm256_set1_epi16((lo | (hi << 8)) as i16)
}

/// ggml's `get_scale_shuffle(i)`: byte `2i` to the first 8 lanes, byte `2i + 1` to the last 8.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn scale_shuffle(i: usize) -> __m128i {
    _mm_set_epi64x(
        i64::from_ne_bytes([2 * i as u8 + 1; 8]),
        i64::from_ne_bytes([2 * i as u8; 8]),
    )
}

/// Q4_K · Q8_K. Matches the AVX2 branch of `ggml_vec_dot_q4_K_q8_K`: scales and mins widened to
/// i16, the mins term from pairwise-summed `bsums` accumulated in a separate 4-lane vector.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_q4_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let m4 = _mm256_set1_epi8(0xF);
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for (x, y) in blocks::<Q4K, Q8K>(n, QK_K, w, a) {
        let yd = f32_at(&y[0..]);
        let (xd, xdmin) = fp16x2(&x[0..]);
        let d = yd * xd;
        let dmin = -yd * xdmin;
        let u = k4_utmp(&x[4..16]);
        let mins_and_scales = _mm256_cvtepu8_epi16(_mm_set_epi32(
            u[3] as i32,
            u[2] as i32,
            u[1] as i32,
            u[0] as i32,
        ));
        let q8sums = load256(&y[Q8K_BSUMS..]);
        let q8s = _mm_hadd_epi16(
            _mm256_castsi256_si128(q8sums),
            _mm256_extracti128_si256::<1>(q8sums),
        );
        let prod = _mm_madd_epi16(_mm256_extracti128_si256::<1>(mins_and_scales), q8s);
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);
        let sc128 = _mm256_castsi256_si128(mins_and_scales);
        let scales = _mm256_set_m128i(sc128, sc128);

        let mut sumi = _mm256_setzero_si256();
        for j in 0..QK_K / 64 {
            let scale_l = _mm256_shuffle_epi8(scales, scale_shuffle_k4(2 * j));
            let scale_h = _mm256_shuffle_epi8(scales, scale_shuffle_k4(2 * j + 1));
            let q4bits = load256(&x[16 + 32 * j..]);
            let q4l = _mm256_and_si256(q4bits, m4);
            let q4h = _mm256_and_si256(_mm256_srli_epi16::<4>(q4bits), m4);
            let q8l = load256(&y[Q8K_QS + 64 * j..]);
            let q8h = load256(&y[Q8K_QS + 64 * j + 32..]);
            let p16l = _mm256_madd_epi16(scale_l, _mm256_maddubs_epi16(q4l, q8l));
            let p16h = _mm256_madd_epi16(scale_h, _mm256_maddubs_epi16(q4h, q8h));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16l, p16h));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    acc_m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
    acc_m = _mm_add_ss(acc_m, _mm_movehdup_ps(acc_m));
    hsum_float_8(acc) + _mm_cvtss_f32(acc_m)
}

/// Q4_K · Q8_K in the order of ggml's x86 `ggml_gemv_q4_K_8x8_q8_K`, bit for bit what the
/// portable `repack::vec_dot_q4_k_q8_k_gemv_portable` computes: per super-block the exact
/// integer sums `isum = Σ scale_s · Σ q·y` and `imin = Σ min_s · (bsum_2s + bsum_2s+1)` (any
/// order: integers), then `acc = fma(isum, d·d8, acc)`, `acc_min = fma(imin, dmin·d8,
/// acc_min)`; the result is `acc − acc_min`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_q4_k_q8_k_gemv(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let m4 = _mm256_set1_epi8(0xF);
    let (mut acc, mut acc_min) = (0f32, 0f32);
    for (x, y) in blocks::<Q4K, Q8K>(n, QK_K, w, a) {
        let yd = f32_at(&y[0..]);
        let (xd, xdmin) = fp16x2(&x[0..]);
        let u = k4_utmp(&x[4..16]);
        // scales: bytes of words 0, 1; mins: bytes of words 2, 3.
        let mut sm = [0u8; 16];
        for (b, w) in sm.chunks_exact_mut(4).zip(u) {
            b.copy_from_slice(&w.to_le_bytes());
        }
        let mut sumi = _mm256_setzero_si256();
        for j in 0..QK_K / 64 {
            let q4 = load256(&x[16 + 32 * j..]);
            let lo = _mm256_and_si256(q4, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q4), m4);
            let yl = load256(&y[Q8K_QS + 64 * j..]);
            let yh = load256(&y[Q8K_QS + 64 * j + 32..]);
            let sl = _mm256_set1_epi16(sm[2 * j] as i16);
            let sh = _mm256_set1_epi16(sm[2 * j + 1] as i16);
            let pl = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, yl), sl);
            let ph = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, yh), sh);
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
        }
        let s4 = _mm_add_epi32(
            _mm256_castsi256_si128(sumi),
            _mm256_extracti128_si256::<1>(sumi),
        );
        let s2 = _mm_add_epi32(s4, _mm_shuffle_epi32::<0b01_00_11_10>(s4));
        let isum = _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32::<0b10_11_00_01>(s2)));
        // Σ min_s · (bsum_2s + bsum_2s+1): the 16 bsums paired by one madd with the mins
        // widened to i16 (each twice), then summed.
        let bsums = load256(&y[Q8K_BSUMS..]);
        let m8 = _mm_cvtsi64_si128(u64::from_le_bytes(sm[8..].try_into().unwrap()) as i64);
        let mins = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
        let pm = _mm256_madd_epi16(bsums, mins);
        let m4s = _mm_add_epi32(
            _mm256_castsi256_si128(pm),
            _mm256_extracti128_si256::<1>(pm),
        );
        let m2s = _mm_add_epi32(m4s, _mm_shuffle_epi32::<0b01_00_11_10>(m4s));
        let imin = _mm_cvtsi128_si32(_mm_add_epi32(m2s, _mm_shuffle_epi32::<0b10_11_00_01>(m2s)));
        acc = (isum as f32).mul_add(xd * yd, acc);
        acc_min = (imin as f32).mul_add(xdmin * yd, acc_min);
    }
    acc - acc_min
}

/// The two high bits of a Q6_K quant (`shifted & 3`) moved to bits 4..6.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q6_high(shifted: __m256i, m2: __m256i) -> __m256i {
    _mm256_slli_epi16::<4>(_mm256_and_si256(shifted, m2))
}

/// Q6_K · Q8_K. Matches the AVX2 branch of `ggml_vec_dot_q6_K_q8_K` (0c1e570): `maddubs` sees
/// the unsigned 6-bit quants, and the bias 32 is subtracted once per block and lane as
/// `32 · madd(bsums, scales)` — which moves it between lanes compared with subtracting
/// `maddubs(32, q8)` per element, so the lanes' float sums (and the result's last bits) differ.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_q6_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let m4 = _mm256_set1_epi8(0xF);
    let m2 = _mm256_set1_epi8(3);
    let mut acc = _mm256_setzero_ps();
    for (x, y) in blocks::<Q6K, Q8K>(n, QK_K, w, a) {
        // ql at 0..128, qh at 128..192, scales at 192..208, d at 208.
        let d = f32_at(&y[0..]) * fp16(&x[208..]);
        let scales = load128(&x[192..]);
        // The bias 32 of every q, taken out once per lane: 32 · (bsums · scales) pairwise.
        let q8sclsub = _mm256_slli_epi32::<5>(_mm256_madd_epi16(
            load256(&y[Q8K_BSUMS..]),
            _mm256_cvtepi8_epi16(scales),
        ));
        let mut sumi = _mm256_setzero_si256();
        for j in 0..QK_K / 128 {
            let q4bits1 = load256(&x[64 * j..]);
            let q4bits2 = load256(&x[64 * j + 32..]);
            let q4bits_h = load256(&x[128 + 32 * j..]);
            let q4 = [
                _mm256_or_si256(_mm256_and_si256(q4bits1, m4), q6_high(q4bits_h, m2)),
                _mm256_or_si256(
                    _mm256_and_si256(q4bits2, m4),
                    q6_high(_mm256_srli_epi16::<2>(q4bits_h), m2),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(q4bits1), m4),
                    q6_high(_mm256_srli_epi16::<4>(q4bits_h), m2),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(q4bits2), m4),
                    q6_high(_mm256_srli_epi16::<6>(q4bits_h), m2),
                ),
            ];
            let mut p = [_mm256_setzero_si256(); 4];
            for (k, (p, q4)) in p.iter_mut().zip(q4).enumerate() {
                let q8 = load256(&y[Q8K_QS + 128 * j + 32 * k..]);
                let p16 = _mm256_maddubs_epi16(q4, q8);
                let scale = _mm_shuffle_epi8(scales, scale_shuffle(4 * j + k));
                *p = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scale), p16);
            }
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p[0], p[1]));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p[2], p[3]));
        }
        sumi = _mm256_sub_epi32(sumi, q8sclsub);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_float_8(acc)
}

/// ggml's `get_scale_shuffle_q3k(i)`: 16-bit lane `2i` of each 128-bit half to its low half's
/// eight lanes, lane `2i + 1` to the high half's.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scale_shuffle_q3k(i: usize) -> __m256i {
    let lane = |k: usize| ((2 * k) as u16 | (((2 * k + 1) as u16) << 8)) as i16;
    _mm256_set_m128i(_mm_set1_epi16(lane(2 * i + 1)), _mm_set1_epi16(lane(2 * i)))
}

/// Eight i16 scales (from a 16-lane vector's half) in both 128-bit halves.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn both_halves(s: __m128i) -> __m256i {
    _mm256_set_m128i(s, s)
}

/// Q2_K · Q8_K (`scales[16]` low nibble scale / high nibble min, `qs[64]`, `d`, `dmin` at
/// 80, 82). Matches the AVX2 branch of `ggml_vec_dot_q2_K_q8_K`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_q2_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let m3 = _mm256_set1_epi8(3);
    let m4 = _mm_set1_epi8(0xF);
    let mut acc = _mm256_setzero_ps();
    for (x, y) in blocks::<Q2K, Q8K>(n, QK_K, w, a) {
        let yd = f32_at(&y[0..]);
        let (xd, xdmin) = fp16x2(&x[80..]);
        let (d, dmin) = (yd * xd, -yd * xdmin);
        let mins_and_scales = load128(&x[0..]);
        let scales8 = _mm_and_si128(mins_and_scales, m4);
        let mins8 = _mm_and_si128(_mm_srli_epi16::<4>(mins_and_scales), m4);
        let mins = _mm256_cvtepi8_epi16(mins8);
        let prod = _mm256_madd_epi16(mins, load256(&y[Q8K_BSUMS..]));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(prod), acc);

        let all_scales = _mm256_cvtepi8_epi16(scales8);
        let scales = [
            both_halves(_mm256_castsi256_si128(all_scales)),
            both_halves(_mm256_extracti128_si256::<1>(all_scales)),
        ];
        let mut sumi = _mm256_setzero_si256();
        for (j, scales) in scales.into_iter().enumerate() {
            let q2bits = load256(&x[16 + 32 * j..]);
            let q2 = [
                _mm256_and_si256(q2bits, m3),
                _mm256_and_si256(_mm256_srli_epi16::<2>(q2bits), m3),
                _mm256_and_si256(_mm256_srli_epi16::<4>(q2bits), m3),
                _mm256_and_si256(_mm256_srli_epi16::<6>(q2bits), m3),
            ];
            let mut p = [_mm256_setzero_si256(); 4];
            for (k, (p, q2)) in p.iter_mut().zip(q2).enumerate() {
                let q8 = load256(&y[Q8K_QS + 128 * j + 32 * k..]);
                let sc = _mm256_shuffle_epi8(scales, scale_shuffle_q3k(k));
                *p = _mm256_madd_epi16(sc, _mm256_maddubs_epi16(q2, q8));
            }
            let p01 = _mm256_add_epi32(p[0], p[1]);
            let p23 = _mm256_add_epi32(p[2], p[3]);
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p01, p23));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_float_8(acc)
}

/// Q3_K · Q8_K (`hmask[32]`, `qs[64]`, `scales[12]`, `d` at 108). Matches the AVX2 branch of
/// `ggml_vec_dot_q3_K_q8_K`: low 2 bits and the "minus 4 when the high bit is clear" part
/// multiplied separately with `maddubs` and subtracted.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_q3_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let m3 = _mm256_set1_epi8(3);
    let mone = _mm256_set1_epi8(1);
    let mut acc = _mm256_setzero_ps();
    for (x, y) in blocks::<Q3K, Q8K>(n, QK_K, w, a) {
        let d = f32_at(&y[0..]) * fp16(&x[108..]);
        let word = |i: usize| u32::from_le_bytes([x[96 + i], x[97 + i], x[98 + i], x[99 + i]]);
        let aux = [word(0), word(4), word(8)];
        let scales128 = _mm_set_epi32(
            (((aux[1] >> 4) & KMASK2) | (((aux[2] >> 6) & KMASK1) << 4)) as i32,
            (((aux[0] >> 4) & KMASK2) | (((aux[2] >> 4) & KMASK1) << 4)) as i32,
            ((aux[1] & KMASK2) | (((aux[2] >> 2) & KMASK1) << 4)) as i32,
            ((aux[0] & KMASK2) | ((aux[2] & KMASK1) << 4)) as i32,
        );
        let scales128 = _mm_sub_epi8(scales128, _mm_set1_epi8(32));
        let all_scales = _mm256_cvtepi8_epi16(scales128);
        let scales = [
            both_halves(_mm256_castsi256_si128(all_scales)),
            both_halves(_mm256_extracti128_si256::<1>(all_scales)),
        ];
        let hbits = load256(&x[0..]);
        let mut sumi = _mm256_setzero_si256();
        for (j, scales) in scales.into_iter().enumerate() {
            let q3bits = load256(&x[32 + 32 * j..]);
            let mut p = [_mm256_setzero_si256(); 4];
            for (k, p) in p.iter_mut().enumerate() {
                let bit = (4 * j + k) as i64;
                let shift = _mm_cvtsi64_si128(bit);
                let q3l = _mm256_and_si256(
                    _mm256_srl_epi16(q3bits, _mm_cvtsi64_si128(2 * k as i64)),
                    m3,
                );
                // 4 where the high bit is clear, else 0.
                let clear = _mm256_andnot_si256(hbits, _mm256_sll_epi16(mone, shift));
                let q3h = _mm256_slli_epi16::<2>(_mm256_srl_epi16(clear, shift));
                let q8 = load256(&y[Q8K_QS + 128 * j + 32 * k..]);
                let p16 =
                    _mm256_sub_epi16(_mm256_maddubs_epi16(q3l, q8), _mm256_maddubs_epi16(q3h, q8));
                *p = _mm256_madd_epi16(_mm256_shuffle_epi8(scales, scale_shuffle_q3k(k)), p16);
            }
            let p01 = _mm256_add_epi32(p[0], p[1]);
            let p23 = _mm256_add_epi32(p[2], p[3]);
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p01, p23));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_float_8(acc)
}

/// Q5_K · Q8_K (`d`, `dmin`, `scales[12]`, `qh[32]` at 16, `qs[128]` at 48). Matches the AVX2
/// branch of `ggml_vec_dot_q5_K_q8_K`: the mins term summed to a scalar per super-block.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_q5_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let m4 = _mm256_set1_epi8(0xF);
    let mone = _mm256_set1_epi8(1);
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0f32;
    for (x, y) in blocks::<Q5K, Q8K>(n, QK_K, w, a) {
        let yd = f32_at(&y[0..]);
        let (xd, xdmin) = fp16x2(&x[0..]);
        let (d, dmin) = (yd * xd, -yd * xdmin);
        let u = k4_utmp(&x[4..16]);
        let mins_and_scales = _mm256_cvtepu8_epi16(_mm_set_epi32(
            u[3] as i32,
            u[2] as i32,
            u[1] as i32,
            u[0] as i32,
        ));
        let q8sums = load256(&y[Q8K_BSUMS..]);
        let q8s = _mm_hadd_epi16(
            _mm256_castsi256_si128(q8sums),
            _mm256_extracti128_si256::<1>(q8sums),
        );
        let prod = _mm_madd_epi16(_mm256_extracti128_si256::<1>(mins_and_scales), q8s);
        let zero = _mm_setzero_si128();
        let hsum = _mm_hadd_epi32(_mm_hadd_epi32(prod, zero), zero);
        summs += dmin * _mm_cvtsi128_si32(hsum) as f32;

        let scales = both_halves(_mm256_castsi256_si128(mins_and_scales));
        let hbits = load256(&x[16..]);
        let mut sumi = _mm256_setzero_si256();
        for j in 0..QK_K / 64 {
            let q5bits = load256(&x[48 + 32 * j..]);
            let mut p = [_mm256_setzero_si256(); 2];
            for (k, p) in p.iter_mut().enumerate() {
                let bit = _mm_cvtsi64_si128((2 * j + k) as i64);
                let low = _mm256_and_si256(
                    _mm256_srl_epi16(q5bits, _mm_cvtsi64_si128(4 * k as i64)),
                    m4,
                );
                let hmask = _mm256_sll_epi16(mone, bit);
                let high =
                    _mm256_slli_epi16::<4>(_mm256_srl_epi16(_mm256_and_si256(hbits, hmask), bit));
                let q5 = _mm256_add_epi8(low, high);
                let q8 = load256(&y[Q8K_QS + 64 * j + 32 * k..]);
                let sc = _mm256_shuffle_epi8(scales, scale_shuffle_k4(2 * j + k));
                *p = _mm256_madd_epi16(sc, _mm256_maddubs_epi16(q5, q8));
            }
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p[0], p[1]));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_float_8(acc) + summs
}

/// IQ4_XS · Q8_K (`d`, `scales_h: u16`, `scales_l[4]`, `qs[128]` at 8). Matches the AVX2
/// branch of `ggml_vec_dot_iq4_xs_q8_K`: nibbles looked up in `kvalues_iq4nl` with a byte
/// shuffle, two groups of 32 per step.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_iq4_xs_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let values = iq4nl_values();
    let mut acc = _mm256_setzero_ps();
    for (x, y) in blocks::<IQ4XS, Q8K>(n, QK_K, w, a) {
        let mut sh = u16::from_le_bytes([x[2], x[3]]);
        let mut sumi1 = _mm256_setzero_si256();
        let mut sumi2 = _mm256_setzero_si256();
        for ib in (0..QK_K / 32).step_by(2) {
            let q4b_1 = lookup_nibbles_32(values, &x[8 + 16 * ib..]);
            let q4b_2 = lookup_nibbles_32(values, &x[8 + 16 * ib + 16..]);
            let q8b_1 = load256(&y[Q8K_QS + 32 * ib..]);
            let q8b_2 = load256(&y[Q8K_QS + 32 * ib + 32..]);
            let p16_1 = mul_add_epi8(q4b_1, q8b_1);
            let p16_2 = mul_add_epi8(q4b_2, q8b_2);
            let sl = x[4 + ib / 2] as u16;
            let ls1 = ((sl & 0xF) | ((sh << 4) & 0x30)) as i16 - 32;
            let ls2 = ((sl >> 4) | ((sh << 2) & 0x30)) as i16 - 32;
            sh >>= 4;
            sumi1 = _mm256_add_epi32(_mm256_madd_epi16(p16_1, _mm256_set1_epi16(ls1)), sumi1);
            sumi2 = _mm256_add_epi32(_mm256_madd_epi16(p16_2, _mm256_set1_epi16(ls2)), sumi2);
        }
        let d = fp16(&x[0..]) * f32_at(&y[0..]);
        acc = _mm256_fmadd_ps(
            _mm256_set1_ps(d),
            _mm256_cvtepi32_ps(_mm256_add_epi32(sumi1, sumi2)),
            acc,
        );
    }
    hsum_float_8(acc)
}

/// TQ2_0 · Q8_K (`qs[64]`, `d` at 64). Matches the AVX2 branch of `ggml_vec_dot_tq2_0_q8_K`:
/// codes 0..=2 multiplied as they are, then `sum(q8)` (the `bsums`) subtracted, in 16-bit sums.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_tq2_0_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let m3 = _mm256_set1_epi8(3);
    let mut sumf = _mm256_setzero_ps();
    for (x, y) in blocks::<TQ2_0, Q8K>(n, QK_K, w, a) {
        let mut sumi0 = _mm256_setzero_si256();
        let mut sumi1 = _mm256_setzero_si256();
        for j in (0..64).step_by(32) {
            let qx0 = load256(&x[j..]);
            let qx = [
                _mm256_and_si256(qx0, m3),
                _mm256_and_si256(_mm256_srli_epi16::<2>(qx0), m3),
                _mm256_and_si256(_mm256_srli_epi16::<4>(qx0), m3),
                _mm256_and_si256(_mm256_srli_epi16::<6>(qx0), m3),
            ];
            let mut p = [_mm256_setzero_si256(); 4];
            for (k, (p, qx)) in p.iter_mut().zip(qx).enumerate() {
                *p = _mm256_maddubs_epi16(qx, load256(&y[Q8K_QS + 4 * j + 32 * k..]));
            }
            sumi0 = _mm256_add_epi16(sumi0, _mm256_add_epi16(p[0], p[1]));
            sumi1 = _mm256_add_epi16(sumi1, _mm256_add_epi16(p[2], p[3]));
        }
        let ysum = load256(&y[Q8K_BSUMS..]);
        let d = _mm256_set1_ps(f32_at(&y[0..]) * fp16(&x[64..]));
        let sumi = _mm256_sub_epi16(_mm256_add_epi16(sumi0, sumi1), ysum);
        let sumi = _mm256_madd_epi16(sumi, _mm256_set1_epi16(1));
        sumf = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(sumi), d), sumf);
    }
    hsum_float_8(sumf)
}

/// `q * 3` per byte, wrapping (ggml's "1 * 3" step).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn times3(q: __m256i) -> __m256i {
    _mm256_add_epi8(q, _mm256_add_epi8(q, q))
}

/// `q * 9 + r` per byte, wrapping: `(q << 3)` with the bits shifted across bytes masked off.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn times8_plus(q: __m256i, r: __m256i) -> __m256i {
    _mm256_add_epi8(
        _mm256_and_si256(_mm256_slli_epi16::<3>(q), _mm256_set1_epi8(-8)),
        r,
    )
}

/// The top trit of each byte, `(q * 3) >> 8`, as ggml computes it without 8-bit multiplies:
/// a halving add of `q - 1` and `(q - 1) / 2`, then the top two bits.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn top_trit(q: __m256i) -> __m256i {
    let q = _mm256_subs_epu8(q, _mm256_set1_epi8(1));
    let q = _mm256_avg_epu8(q, _mm256_avg_epu8(q, _mm256_setzero_si256()));
    _mm256_and_si256(_mm256_srli_epi16::<6>(q), _mm256_set1_epi8(3))
}

/// TQ1_0 · Q8_K (`qs[48]`: 5 trits a byte, `qh[4]`: 4 a byte, `d` at 52). Matches the AVX2
/// branch of `ggml_vec_dot_tq1_0_q8_K`: each trit shifted to the top by a multiplication with
/// a power of 3 (mod 256), codes 0..=2 multiplied as they are and `sum(q8)` subtracted, in
/// 16-bit sums.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_tq1_0_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = _mm256_setzero_ps();
    for (x, y) in blocks::<TQ1_0, Q8K>(n, QK_K, w, a) {
        let q8 = |i: usize| load256(&y[Q8K_QS + i..]);
        // First 32 bytes: trit l of byte m is element 32 l + m.
        let qx0 = load256(&x[0..]);
        let qx1 = times3(qx0);
        let qx2 = times8_plus(qx0, qx0);
        let qx3 = times8_plus(qx1, qx1);
        let qx4 = times8_plus(qx2, qx2);
        let p = |qx: __m256i, at: usize| _mm256_maddubs_epi16(top_trit(qx), q8(at));
        let mut sumi0 = _mm256_add_epi16(p(qx0, 0), p(qx1, 32));
        let mut sumi1 = _mm256_add_epi16(p(qx2, 64), p(qx3, 96));
        let mut sumi2 = p(qx4, 128);

        // Last 16 bytes (element 160 + 16 l + m) and the 4 qh bytes (element 240 + 4 l + j).
        let t0 = _mm256_castsi128_si256(load128(&x[32..]));
        let t1 = times3(t0);
        let t2 = times8_plus(t0, t0);
        let t3 = times8_plus(t1, t1);
        let t4 = times8_plus(t2, t2);
        let qh = i32::from_le_bytes([x[48], x[49], x[50], x[51]]);
        let qx5_l = _mm256_mullo_epi16(
            _mm256_cvtepu8_epi16(_mm_set1_epi32(qh)),
            _mm256_set_epi16(27, 27, 27, 27, 9, 9, 9, 9, 3, 3, 3, 3, 1, 1, 1, 1),
        );
        let qx5_l = _mm256_and_si256(qx5_l, _mm256_set1_epi16(0xFF));
        let qx5 = _mm_packus_epi16(
            _mm256_castsi256_si128(qx5_l),
            _mm256_extracti128_si256::<1>(qx5_l),
        );
        let lo = _mm256_castsi256_si128;
        let qx01 = _mm256_set_m128i(lo(t1), lo(t0));
        let qx23 = _mm256_set_m128i(lo(t3), lo(t2));
        let qx45 = _mm256_set_m128i(qx5, lo(t4));
        sumi0 = _mm256_add_epi16(sumi0, p(qx01, 160));
        sumi1 = _mm256_add_epi16(sumi1, p(qx23, 192));
        sumi2 = _mm256_add_epi16(sumi2, p(qx45, 224));

        let ysum = load256(&y[Q8K_BSUMS..]);
        let d = _mm256_set1_ps(f32_at(&y[0..]) * fp16(&x[52..]));
        let sumi = _mm256_sub_epi16(sumi0, ysum);
        let sumi = _mm256_add_epi16(sumi, _mm256_add_epi16(sumi1, sumi2));
        let sumi = _mm256_madd_epi16(sumi, _mm256_set1_epi16(1));
        sumf = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(sumi), d), sumf);
    }
    hsum_float_8(sumf)
}
