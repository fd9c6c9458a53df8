//! Activation conversion to Q8_0 / Q8_1 as ggml-cpu's x86 build does it (`quantize_row_q8_0`
//! and `quantize_row_q8_1` in `ggml-cpu/arch/x86/quants.c`, the `from_float` of those types on
//! AVX/AVX2/AVX-512 CPUs). It differs from the reference quantizer in two places, and on real
//! activations both matter: the multiplier is `127 / amax` (not `1 / (amax / 127)`), and the
//! products are rounded half to even (`_mm256_round_ps`), not half away from zero (`roundf`).
//! Each element is independent, so plain Rust computes exactly what the vector code computes.

use half::f16;

const QK: usize = 32;

/// `(d, qs)` of one block of 32: ggml's max-abs, `d = amax / 127`, `id = 127 / amax`,
/// `qs = round_ties_even(x * id)`.
#[inline(always)]
fn block(x: &[f32], qs: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = (v * id).round_ties_even() as i8;
    }
    d
}

/// Compiles `$body` twice — plainly and with AVX2 (whose SSE4.1 `roundps` rounds ties to even
/// in one instruction, where the plain build calls libm's `rintf` per element) — behind one
/// safe entry point. Both compute the same bits: every operation is an IEEE one.
macro_rules! with_avx2 {
    ($(#[$m:meta])* pub fn $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        $(#[$m])*
        pub fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                fn fast($($arg: $ty),*) { body($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2 (checked just above).
                    return unsafe { fast($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

/// One row of whole Q8_0 blocks (`d: f16`, 32 × `i8`) into `out` — ggml-cpu x86
/// `quantize_row_q8_0`. With AVX2, ggml's own instruction sequence ([`q8_0_avx2`]); otherwise
/// the same arithmetic element by element (equal but for NaN and infinite inputs, where the
/// vector code's max and integer conversion have their own rules).
pub fn quantize_row_q8_0_x86(x: &[f32], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { q8_0_avx2::quantize_row(x, out) };
    }
    for (x, b) in x.chunks_exact(QK).zip(out.chunks_exact_mut(2 + QK)) {
        let mut qs = [0i8; QK];
        let d = block(x, &mut qs);
        b[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        b[2..].copy_from_slice(bytemuck::cast_slice(&qs));
    }
}

/// ggml-cpu's AVX2 `quantize_row_q8_0`, vector for vector: the max-abs as a tree of
/// `max_ps` (4 vectors, then halves, `movehl`, `movehdup`), `x · id` rounded by `roundps`
/// to nearest even, converted by `cvtps_epi32` and packed with signed saturation. The scalar
/// loop it replaces (`f32::max` folded left to right) is a chain of dependent `maxss` that the
/// compiler cannot reorder, several times slower.
#[cfg(target_arch = "x86_64")]
mod q8_0_avx2 {
    use super::QK;
    use core::arch::x86_64::*;

    /// See [`super::quantize_row_q8_0_x86`].
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn quantize_row(x: &[f32], out: &mut [u8]) {
        let sign = _mm256_set1_ps(-0.0);
        let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for (x, b) in x.chunks_exact(QK).zip(out.chunks_exact_mut(2 + QK)) {
            // SAFETY: `x` is 32 readable floats (chunks_exact), loads unaligned.
            let v: [__m256; 4] =
                std::array::from_fn(|i| unsafe { _mm256_loadu_ps(x.as_ptr().add(8 * i)) });
            let mut max = _mm256_andnot_ps(sign, v[0]);
            for v in &v[1..] {
                max = _mm256_max_ps(max, _mm256_andnot_ps(sign, *v));
            }
            let hi = _mm256_extractf128_ps::<1>(max);
            let mut m4 = _mm_max_ps(hi, _mm256_castps256_ps128(max));
            m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
            let amax = _mm_cvtss_f32(m4);
            let d = amax / 127.0;
            let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            let mul = _mm256_set1_ps(id);
            let q: [__m256i; 4] = std::array::from_fn(|i| {
                let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT }>(_mm256_mul_ps(v[i], mul));
                _mm256_cvtps_epi32(r)
            });
            let lo = _mm256_packs_epi32(q[0], q[1]);
            let hi = _mm256_packs_epi32(q[2], q[3]);
            let bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(lo, hi), perm);
            b[..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
            // SAFETY: `b[2..]` is 32 writable bytes (chunks_exact of 34), store unaligned.
            unsafe { _mm256_storeu_si256(b[2..].as_mut_ptr().cast(), bytes) };
        }
    }
}

with_avx2! {
    /// One row of whole Q8_1 blocks (`d: f16`, `s: f16`, 32 × `i8`) into `out` — ggml-cpu x86
    /// `quantize_row_q8_1`: `s = d * Σ qs` (the integer sum converted to f32).
    pub fn quantize_row_q8_1_x86(x: &[f32], out: &mut [u8]) {
        for (x, b) in x.chunks_exact(QK).zip(out.chunks_exact_mut(4 + QK)) {
            let mut qs = [0i8; QK];
            let d = block(x, &mut qs);
            let sum: i32 = qs.iter().map(|&q| q as i32).sum();
            b[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
            b[2..4].copy_from_slice(&f16::from_f32(d * sum as f32).to_le_bytes());
            b[4..].copy_from_slice(bytemuck::cast_slice(&qs));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_round_to_even_and_multiplier_is_127_over_amax() {
        // amax 127 → id 1: 2.5 rounds to 2 (roundf would give 3), -3.5 to -4.
        let mut x = [0f32; QK];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -3.5;
        let mut out = [0u8; 2 + QK];
        quantize_row_q8_0_x86(&x, &mut out);
        let qs: &[i8] = bytemuck::cast_slice(&out[2..]);
        assert_eq!(&qs[..3], &[127, 2, -4]);
        assert_eq!(f16::from_le_bytes([out[0], out[1]]).to_f32(), 1.0);
    }

    #[test]
    fn q8_1_sum_is_d_times_integer_sum() {
        let x: Vec<f32> = (0..QK).map(|i| i as f32 - 10.0).collect();
        let mut out = [0u8; 4 + QK];
        quantize_row_q8_1_x86(&x, &mut out);
        let d = f16::from_le_bytes([out[0], out[1]]).to_f32();
        let qs: &[i8] = bytemuck::cast_slice(&out[4..]);
        let sum: i32 = qs.iter().map(|&q| q as i32).sum();
        let s = f16::from_le_bytes([out[2], out[3]]).to_f32();
        assert_eq!(s, f16::from_f32((21.0f32 / 127.0) * sum as f32).to_f32());
        assert!(d > 0.0);
    }

    /// ggml's vector sequence equals the element-by-element arithmetic on finite inputs, ties
    /// and zero blocks included.
    #[test]
    fn q8_0_vector_equals_scalar() {
        let mut seed = 0x1234_5678u32;
        let mut x: Vec<f32> = (0..32 * 64)
            .map(|i| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let v = (seed as f32 / u32::MAX as f32 - 0.5) * 10f32.powi((i / 32) % 9 - 4);
                if i % 97 == 3 {
                    (v * 8.0).round() / 8.0
                } else {
                    v
                }
            })
            .collect();
        x[32..64].fill(0.0);
        x[64..96]
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = i as f32 - 15.5);
        let mut got = vec![0u8; 34 * 64];
        quantize_row_q8_0_x86(&x, &mut got);
        for (x, b) in x.chunks_exact(QK).zip(got.chunks_exact(2 + QK)) {
            let mut qs = [0i8; QK];
            let d = block(x, &mut qs);
            assert_eq!(&b[..2], &f16::from_f32(d).to_le_bytes());
            assert_eq!(&b[2..], bytemuck::cast_slice::<i8, u8>(&qs));
        }
    }
}
