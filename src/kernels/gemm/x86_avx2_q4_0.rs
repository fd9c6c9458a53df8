//! AVX2 twin of `repack::vec_dot_q4_0_q8_0_repack` (one row · one token, bit-identical): the
//! Q4_0 order of ggml's repacked gemm / gemv, used for the tokens and rows left over by the
//! tiles and as the whole product on the AVX2 table.
//!
//! Per block the exact integer `Σ (q − 8) · a` is formed as `Σ q · a − Σ 8 · a` (`vpmaddubsw`
//! twice, exact for every activation byte, −128 included) and summed across the 8 lanes, then fused into one
//! f32 accumulator as the spec does. Two blocks are summed side by side to share the
//! horizontal reduction; the float steps stay in block order.

use crate::kernels::x86_avx2::{Q4_0, Q8_0, QK};
use crate::kernels::VecDot;
use core::arch::x86_64::*;

/// The 8 i32 lanes of `Σ (q − 8) · a` for Q4_0 block `x` and Q8_0 block `y`.
///
/// # Safety
/// `x` must point to `Q4_0` readable bytes and `y` to `Q8_0`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_lanes(x: *const u8, y: *const u8) -> __m256i {
    // SAFETY: 16 bytes at `x + 2` and 32 at `y + 2` are readable (caller); unaligned loads.
    let (t, q) = unsafe {
        (
            _mm_loadu_si128(x.add(2).cast()),
            _mm256_loadu_si256(y.add(2).cast()),
        )
    };
    let u = _mm256_and_si256(
        _mm256_set_m128i(_mm_srli_epi16::<4>(t), t),
        _mm256_set1_epi8(0xF),
    );
    // Pair sums of q · a and of 8 · a (|·| ≤ 2 · 15 · 128: no saturation), then their exact
    // difference, widened.
    let p = _mm256_sub_epi16(
        _mm256_maddubs_epi16(u, q),
        _mm256_maddubs_epi16(_mm256_set1_epi8(8), q),
    );
    _mm256_madd_epi16(p, _mm256_set1_epi16(1))
}

/// The f16s at `x` and `y` (the two blocks' `d`), converted and multiplied: `d_w · d_a`.
///
/// # Safety
/// `x` and `y` must point to 2 readable bytes each.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scale(x: *const u8, y: *const u8) -> f32 {
    // SAFETY: 2 readable bytes at each (caller); unaligned reads.
    let (dx, dy) = unsafe {
        (
            x.cast::<u16>().read_unaligned(),
            y.cast::<u16>().read_unaligned(),
        )
    };
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128((dx as u32 | (dy as u32) << 16) as i32));
    _mm_cvtss_f32(_mm_mul_ss(v, _mm_movehdup_ps(v)))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = (n / QK).min(w.len() / Q4_0).min(a.len() / Q8_0);
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    // SAFETY (all raw reads): block b < nb lies inside `w` and `a` by the line above.
    let blk = |b: usize| unsafe { (wp.add(b * Q4_0), ap.add(b * Q8_0)) };
    let mut acc = 0f32;
    let mut b = 0;
    while b + 2 <= nb {
        let ((x0, y0), (x1, y1)) = (blk(b), blk(b + 1));
        let (s0, s1) = unsafe { (block_lanes(x0, y0), block_lanes(x1, y1)) };
        // [Σ s0 lanes 0..4 | Σ s1 …] folded to one i32 each: lanes 0 and 4 after the adds.
        let h = _mm256_hadd_epi32(s0, s1); // s0 01 23 s1 01 23 | s0 45 67 s1 45 67
        let h = _mm256_hadd_epi32(h, h); // s0 0123 s1 0123 … | s0 4567 s1 4567 …
        let v = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
        let (i0, i1) = (_mm_cvtsi128_si32(v), _mm_extract_epi32::<1>(v));
        acc = (i0 as f32).mul_add(unsafe { scale(x0, y0) }, acc);
        acc = (i1 as f32).mul_add(unsafe { scale(x1, y1) }, acc);
        b += 2;
    }
    if b < nb {
        let (x, y) = blk(b);
        let s = unsafe { block_lanes(x, y) };
        let v = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
        let v = _mm_add_epi32(v, _mm_shuffle_epi32::<0x4E>(v));
        let v = _mm_add_epi32(v, _mm_shuffle_epi32::<0xB1>(v));
        acc = (_mm_cvtsi128_si32(v) as f32).mul_add(unsafe { scale(x, y) }, acc);
    }
    acc
}

fn dot_wrapper(n: usize, w: &[u8], a: &[u8]) -> f32 {
    // SAFETY: handed out by `per_pair` only when the CPU has avx2, fma and f16c.
    unsafe { dot(n, w, a) }
}

/// The AVX2 per-pair function, if this CPU runs it.
pub(in crate::kernels) fn per_pair() -> Option<VecDot> {
    static K: std::sync::OnceLock<Option<VecDot>> = std::sync::OnceLock::new();
    *K.get_or_init(|| {
        crate::kernels::Isa::Avx2
            .is_available()
            .then_some(dot_wrapper as VecDot)
    })
}
