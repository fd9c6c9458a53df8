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
/// `quantize_row_q8_0`. Runs the AVX2 twin (ggml's own vector code) where the CPU has it.
pub fn quantize_row_q8_0_x86(x: &[f32], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { avx2::quantize_row_q8_0(x, out) };
    }
    quantize_row_q8_0_portable(x, out)
}

with_avx2! {
    /// [`quantize_row_q8_0_x86`] one element at a time (the specification of the AVX2 twin).
    pub fn quantize_row_q8_0_portable(x: &[f32], out: &mut [u8]) {
        for (x, b) in x.chunks_exact(QK).zip(out.chunks_exact_mut(2 + QK)) {
            let mut qs = [0i8; QK];
            let d = block(x, &mut qs);
            b[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
            b[2..].copy_from_slice(bytemuck::cast_slice(&qs));
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

/// ggml's AVX2 `quantize_row_q8_0` body: the max-abs reduced in ggml's order (`vmaxps` of the
/// four vectors, then halves, then pairs), `vroundps` to nearest even, `vcvtps2dq` and two
/// saturating packs. For finite inputs every step equals the portable one (max is exact in any
/// order; the packs saturate as `as i8` does); a NaN element is ignored by the portable fold
/// and, as in ggml, taken by `vmaxps` only where ggml takes it.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::QK;
    use core::arch::x86_64::*;

    #[target_feature(enable = "avx2,f16c")]
    pub(super) fn quantize_row_q8_0(x: &[f32], out: &mut [u8]) {
        for (x, b) in x.chunks_exact(QK).zip(out.chunks_exact_mut(2 + QK)) {
            // SAFETY: `x` is 32 readable floats (a whole chunk); unaligned loads.
            let v: [__m256; 4] =
                std::array::from_fn(|i| unsafe { _mm256_loadu_ps(x[8 * i..].as_ptr()) });
            let sign = _mm256_set1_ps(-0.0);
            let mut m = _mm256_andnot_ps(sign, v[0]);
            for vi in &v[1..] {
                m = _mm256_max_ps(m, _mm256_andnot_ps(sign, *vi));
            }
            let m4 = _mm_max_ps(_mm256_extractf128_ps::<1>(m), _mm256_castps256_ps128(m));
            let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            let m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
            let amax = _mm_cvtss_f32(m4);
            let d = amax / 127.0;
            let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
            let q: [__m256i; 4] = std::array::from_fn(|i| {
                let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                    _mm256_mul_ps(v[i], id),
                );
                _mm256_cvtps_epi32(r)
            });
            let p = _mm256_packs_epi16(
                _mm256_packs_epi32(q[0], q[1]),
                _mm256_packs_epi32(q[2], q[3]),
            );
            let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            b[..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
            let qs: &mut [u8; 32] = (&mut b[2..]).try_into().unwrap();
            // SAFETY: `qs` is 32 writable bytes; unaligned store.
            unsafe { _mm256_storeu_si256(qs.as_mut_ptr().cast(), p) };
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

    /// The AVX2 twin writes the portable function's bytes (random rows with zero, tiny, huge,
    /// negative-zero and halfway blocks).
    #[test]
    fn q8_0_avx2_equals_portable() {
        let mut seed = 0x1234_5678u32;
        let mut x: Vec<f32> = (0..QK * 64)
            .map(|i| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let v = (seed as f32 / u32::MAX as f32 - 0.5) * 8.0;
                match (i / QK) % 5 {
                    1 => v * 1e-30,
                    2 => v * 1e30,
                    3 => 0.0,
                    _ => v,
                }
            })
            .collect();
        x[4 * QK..5 * QK].fill(-0.0);
        x[5 * QK] = 127.0;
        x[5 * QK + 1] = 2.5;
        x[5 * QK + 2] = -3.5;
        let mut want = vec![0u8; 64 * (2 + QK)];
        let mut got = want.clone();
        quantize_row_q8_0_portable(&x, &mut want);
        quantize_row_q8_0_x86(&x, &mut got);
        assert_eq!(got, want);
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
}
