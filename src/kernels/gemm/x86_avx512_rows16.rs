//! The pieces shared by the AVX-512 VNNI tiles that put 16 weight ROWS in the 16 lanes of a
//! register (`x86_avx512_q4_0.rs`, `x86_avx512_q4_k.rs`, `x86_avx512_q6_k.rs`): the rows are read
//! in place, four to a register, and transposed in 128-bit lanes, so that `vpdpbusd` with four
//! activation bytes broadcast forms all 16 rows' integer sums at once, with no horizontal sum.

use core::arch::x86_64::*;

/// Rows per tile: one per 32-bit lane of a 512-bit register.
pub(super) const R: usize = 16;

/// The row whose values lane `i` holds after [`transpose16`] (lane `4L + m` ↔ row `4m + L`).
pub(super) const fn row_of(i: usize) -> usize {
    4 * (i % 4) + i / 4
}

/// The 16 bytes at `p + r · ws` of rows `r = 0..16`, transposed: lane `i` of register `j` is
/// dword `j` of row [`row_of`]`(i)`.
///
/// # Safety
/// `p + r · ws .. + 16` must be readable for every `r < 16`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn transpose16(p: *const u8, ws: usize) -> [__m512i; 4] {
    // SAFETY: 16 readable bytes at each row (caller); unaligned loads.
    let row = |r: usize| unsafe { _mm_loadu_si128(p.add(r * ws).cast()) };
    let z: [__m512i; 4] = std::array::from_fn(|m| {
        let v = _mm512_castsi128_si512(row(4 * m));
        let v = _mm512_inserti32x4::<1>(v, row(4 * m + 1));
        let v = _mm512_inserti32x4::<2>(v, row(4 * m + 2));
        _mm512_inserti32x4::<3>(v, row(4 * m + 3))
    });
    let t0 = _mm512_unpacklo_epi32(z[0], z[1]);
    let t1 = _mm512_unpackhi_epi32(z[0], z[1]);
    let t2 = _mm512_unpacklo_epi32(z[2], z[3]);
    let t3 = _mm512_unpackhi_epi32(z[2], z[3]);
    [
        _mm512_unpacklo_epi64(t0, t2),
        _mm512_unpackhi_epi64(t0, t2),
        _mm512_unpacklo_epi64(t1, t3),
        _mm512_unpackhi_epi64(t1, t3),
    ]
}

/// The f16 at `p + row_of(i) · ws` of each lane `i`, as f32 (exact): four f16s to a general
/// register, then one conversion (a gather is several times slower on AMD Zen 4).
///
/// # Safety
/// `p + r · ws .. + 2` must be readable for every `r < 16`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn f16_lanes(p: *const u8, ws: usize) -> __m512 {
    // SAFETY: 2 readable bytes at each row (caller); unaligned reads.
    let d = |i: usize| unsafe { p.add(row_of(i) * ws).cast::<u16>().read_unaligned() };
    let quad = |k: usize| (0..4).fold(0u64, |q, i| q | (d(4 * k + i) as u64) << (16 * i)) as i64;
    _mm512_cvtph_ps(_mm256_set_epi64x(quad(3), quad(2), quad(1), quad(0)))
}

/// The dword at `p`, broadcast (`vpdpbusd`'s `{1to16}` memory operand).
///
/// # Safety
/// `p` must point to 4 readable bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn bcast4(p: *const u8) -> __m512i {
    // SAFETY: 4 readable bytes at `p` (caller); unaligned read.
    _mm512_set1_epi32(unsafe { p.cast::<i32>().read_unaligned() })
}

/// Token `t`'s 16 results (`results[t]`, lane `i` = row [`row_of`]`(i)`) as `out[t · R + r]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn store_rows(results: &[__m512], out: &mut [f32]) {
    for (t, v) in results.iter().enumerate() {
        let mut lanes = [0f32; R];
        // SAFETY: `lanes` is 64 writable bytes; unaligned store.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), *v) };
        for (i, v) in lanes.into_iter().enumerate() {
            out[t * R + row_of(i)] = v;
        }
    }
}
