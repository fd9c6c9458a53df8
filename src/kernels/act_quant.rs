//! Activation conversion to Q8_0 / Q8_1 as ggml-cpu's x86 build does it (`quantize_row_q8_0`
//! and `quantize_row_q8_1` in `ggml-cpu/arch/x86/quants.c`, the `from_float` of those types on
//! AVX/AVX2/AVX-512 CPUs). It differs from the reference quantizer in two places, and on real
//! activations both matter: the multiplier is `127 / amax` (not `1 / (amax / 127)`), and the
//! products are rounded half to even (`_mm256_round_ps`), not half away from zero (`roundf`).
//! Each element is independent, so plain Rust computes exactly what the vector code computes.

use ggml_compat::quant::{quantize_row, QuantError};
use ggml_compat::GgmlType;
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

/// Elements of a Q8_K block.
const QK_K: usize = 256;
/// Bytes of a Q8_K block: `d` (f32), 256 × `i8`, 16 × `i16` sums.
const Q8K_BYTES: usize = 4 + QK_K + 2 * (QK_K / 16);

/// One row of whole Q8_K blocks into `out` — ggml's `quantize_row_q8_K_ref`, which is also what
/// ggml-cpu's x86 `quantize_row_q8_K` runs (scalar). With AVX-512 (F, VNNI), a vector version
/// with the same bytes ([`q8_k_avx512`]); otherwise, and for any block holding a NaN or an
/// infinity or whose scale overflows, ggml_compat's reference.
pub fn quantize_row_q8_k_x86(x: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vnni")
        && x.len().is_multiple_of(QK_K)
        && out.len() == x.len() / QK_K * Q8K_BYTES
    {
        for (x, b) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(Q8K_BYTES)) {
            // SAFETY: the CPU has AVX-512 F and VNNI (checked just above).
            if !unsafe { q8_k_avx512::quantize_block(x.try_into().unwrap(), b.try_into().unwrap()) }
            {
                quantize_row(GgmlType::Q8_K, x, b, None)?;
            }
        }
        return Ok(());
    }
    quantize_row(GgmlType::Q8_K, x, out, None)
}

/// `quantize_row_q8_K_ref` in AVX-512, one block at a time. Every step is the reference's own
/// arithmetic: the max |x| (a max is order-free), the first element holding it (its sign picks
/// `max`), `iscale = −127 / max` and `d = 1 / iscale` in scalar f32, `iscale · x` per element
/// rounded by `vcvtps2dq` (nearest even — what `nearest_int`'s `+ 1.5·2²³` does for
/// |v| < 2²²), `min(127)`, and the sums of 16 quants (exact integers) by `vpdpbusd` with ones.
#[cfg(target_arch = "x86_64")]
mod q8_k_avx512 {
    use super::{Q8K_BYTES, QK_K};
    use core::arch::x86_64::*;

    /// Quantizes one block into `out`; `false` (nothing written) when the block holds a NaN or
    /// an infinity, or `−127 / max` is not finite: the caller then runs the reference.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F and VNNI.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) fn quantize_block(x: &[f32; QK_K], out: &mut [u8; Q8K_BYTES]) -> bool {
        let xp = x.as_ptr();
        // SAFETY: 16 × 16 floats are `x`'s 256; the loads are unaligned.
        let v: [__m512; 16] = std::array::from_fn(|i| unsafe { _mm512_loadu_ps(xp.add(16 * i)) });
        let mut amax = _mm512_setzero_ps();
        let mut unordered: __mmask16 = 0;
        for &v in &v {
            amax = _mm512_max_ps(amax, _mm512_abs_ps(v));
            unordered |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        }
        let amax = _mm512_reduce_max_ps(amax);
        if unordered != 0 || !amax.is_finite() {
            return false;
        }
        if amax == 0.0 {
            // The reference's all-zero block: d = 0, zero quants, zero sums.
            out.fill(0);
            return true;
        }
        let wanted = _mm512_set1_ps(amax);
        let Some((i, m)) = v.iter().enumerate().find_map(|(i, &v)| {
            let m = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_abs_ps(v), wanted);
            (m != 0).then_some((i, m))
        }) else {
            return false;
        };
        let max = x[16 * i + m.trailing_zeros() as usize];
        let iscale = -127.0 / max;
        if !iscale.is_finite() {
            return false;
        }
        let scale = _mm512_set1_ps(iscale);
        let top = _mm512_set1_epi32(127);
        let op = out.as_mut_ptr();
        out[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
        for (i, &v) in v.iter().enumerate() {
            let q = _mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(scale, v)), top);
            // SAFETY: bytes 4 + 16i .. 4 + 16(i + 1) ≤ 260 of `out`; the store is unaligned.
            unsafe { _mm_storeu_si128(op.add(4 + 16 * i).cast(), _mm512_cvtepi32_epi8(q)) };
        }
        // Σ of each 16 quants: `vpdpbusd` with ones sums 4 at a time, then two rounds of
        // even + odd lanes fold 64 partial sums to 16, in group order.
        let ones = _mm512_set1_epi8(1);
        // SAFETY: bytes 4 .. 260 of `out`; the loads are unaligned.
        let s: [__m512i; 4] = std::array::from_fn(|k| {
            let q = unsafe { _mm512_loadu_si512(op.add(4 + 64 * k).cast()) };
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, q)
        });
        let even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
        let odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
        let fold = |a, b| {
            _mm512_add_epi32(
                _mm512_permutex2var_epi32(a, even, b),
                _mm512_permutex2var_epi32(a, odd, b),
            )
        };
        let sums = fold(fold(s[0], s[1]), fold(s[2], s[3]));
        // SAFETY: bytes 260 .. 292 of `out`; the store is unaligned.
        unsafe { _mm256_storeu_si256(op.add(4 + QK_K).cast(), _mm512_cvtepi32_epi16(sums)) };
        true
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
                let v = crate::testing::xorshift(&mut seed) * 10f32.powi((i / 32) % 9 - 4);
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

    /// The Q8_K quantizer's bytes equal ggml_compat's `quantize_row_q8_K_ref` on random blocks
    /// over many magnitudes, |x| ties of opposite signs (the first one's sign wins), all-zero
    /// and signed-zero blocks, huge and tiny (subnormal) values, and blocks with a NaN or an
    /// infinity (the reference's own handling).
    #[test]
    fn q8_k_equals_reference_bytes() {
        let mut seed = 0x2468_ace1u32;
        let mut rnd = || crate::testing::xorshift(&mut seed);
        let blocks = 40;
        let mut x: Vec<f32> = (0..QK_K * blocks)
            .map(|i| rnd() * 10f32.powi((i / QK_K) as i32 % 13 - 6))
            .collect();
        let b = |k: usize| k * QK_K..(k + 1) * QK_K;
        // Ties of |x| with opposite signs, the negative first, then the positive first.
        x[b(1)][7] = -9.0;
        x[b(1)][200] = 9.0;
        x[b(2)][3] = 9.0;
        x[b(2)][100] = -9.0;
        // Ties inside one 16-lane vector and across vectors.
        x[b(3)][17] = -5.0;
        x[b(3)][18] = 5.0;
        x[b(3)][255] = -5.0;
        x[b(4)].fill(0.0);
        x[b(5)]
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = if i % 2 == 0 { 0.0 } else { -0.0 });
        x[b(6)].iter_mut().for_each(|v| *v *= 1e37);
        x[b(7)].iter_mut().for_each(|v| *v *= 1e-38);
        x[b(8)]
            .iter_mut()
            .for_each(|v| *v = f32::from_bits(v.to_bits() & 0x807f_ffff));
        x[b(9)][0] = f32::from_bits(1);
        x[b(9)][1..].fill(0.0);
        x[b(10)][50] = f32::NAN;
        x[b(11)][60] = f32::INFINITY;
        x[b(12)][70] = f32::NEG_INFINITY;
        x[b(13)][0] = f32::MAX;
        x[b(13)][1] = -f32::MAX;
        // Rounding ties: multiples of 0.5 under iscale = 1.
        x[b(14)]
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = (i as f32 - 127.0) * 0.5);
        x[b(14)][0] = -127.0;
        for k in 15..blocks {
            x[b(k)][(k * 37) % QK_K] = if k % 2 == 0 { 1e4 } else { -3e-3 };
        }
        let bytes = Q8K_BYTES;
        let mut want = vec![0u8; bytes * blocks];
        let mut got = vec![0xAAu8; bytes * blocks];
        quantize_row(GgmlType::Q8_K, &x, &mut want, None).unwrap();
        quantize_row_q8_k_x86(&x, &mut got).unwrap();
        for k in 0..blocks {
            let r = k * bytes..(k + 1) * bytes;
            assert_eq!(&got[r.clone()], &want[r], "block {k}");
        }
    }
}
