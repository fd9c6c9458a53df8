//! AVX2 kernels in the Q4_0 order of ggml's repacked gemm / gemv
//! (`repack::vec_dot_q4_0_q8_0_repack`), bit-identical to it:
//!
//! - a per-pair twin (one row · one token), for the rows and tokens the tiles leave over: per
//!   block the exact `Σ (q − 8) · a` as `Σ q · a − Σ 8 · a` (`vpmaddubsw` twice, exact for every
//!   activation byte, −128 included), summed across the 8 lanes (two blocks share the
//!   reduction), then fused into one f32 accumulator in block order;
//! - 8-row tiles (4 tokens, or 1 for decode): the AVX-512 tile's in-place transpose on 256-bit
//!   registers, rows in lanes, without VNNI.

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

/// Rows per AVX2 tile: one per 32-bit lane of a 256-bit register.
const R: usize = 8;

/// The row whose sums lane `i` holds after the in-lane transpose (lane `4L + m` ↔ row `2m + L`).
const fn row_of(i: usize) -> usize {
    2 * (i % 4) + i / 4
}

/// `−8 · Σ a` and `d` of one token's Q8_0 block at `y`.
///
/// # Safety
/// `y` must point to a readable Q8_0 block (34 bytes).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn token(y: *const u8) -> (__m256i, __m256) {
    // SAFETY: 2 + 32 readable bytes at `y` (caller); unaligned reads.
    let (bits, v) = unsafe {
        (
            y.cast::<u16>().read_unaligned(),
            _mm256_loadu_si256(y.add(2).cast()),
        )
    };
    let s = _mm256_madd_epi16(
        _mm256_maddubs_epi16(_mm256_set1_epi8(1), v),
        _mm256_set1_epi16(1),
    );
    let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0x4E>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0xB1>(s));
    let neg = _mm_sub_epi32(_mm_setzero_si128(), _mm_slli_epi32::<3>(s));
    let d = _mm_cvtph_ps(_mm_set1_epi16(bits as i16));
    (_mm256_broadcastd_epi32(neg), _mm256_broadcastss_ps(d))
}

/// One 8 × `T` tile in the repack order (see [`super::GemmKernel`] for the arguments): the
/// AVX-512 tile's scheme on 256-bit registers, without VNNI. The eight `vpmaddubsw` pair sums
/// of a block (each within ±2 · 15 · 128) are added in i16 (|Σ| ≤ 30720: exact), widened once
/// with `vpmaddwd`, and corrected by `−8 · Σ a`.
#[target_feature(enable = "avx2,fma,f16c")]
fn tile<const T: usize>(n: usize, w: &[u8], ws: usize, a: &[u8], as_: usize, out: &mut [f32]) {
    let nb = n / QK;
    assert!(w.len() >= (R - 1) * ws + nb * Q4_0);
    assert!(a.len() >= (T - 1) * as_ + nb * Q8_0);
    assert!(out.len() >= R * T);
    let low = _mm256_set1_epi8(0xF);
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let mut acc = [_mm256_setzero_ps(); T];
    let (next, lines) = (wp.wrapping_add(R * ws), (R * ws).div_ceil(64));
    for b in 0..nb {
        // SAFETY (all raw reads of this iteration): row r's block b and token t's block b lie
        // inside `w` and `a` by the asserts above.
        let blk = unsafe { wp.add(b * Q4_0) };
        // Prefetch the next 8 rows, spread over the blocks (as the AVX-512 tile does).
        for line in b * lines / nb..(b + 1) * lines / nb {
            _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(64 * line).cast());
        }
        let row = |r: usize| unsafe { _mm_loadu_si128(blk.add(r * ws + 2).cast()) };
        let z: [__m256i; 4] = std::array::from_fn(|m| _mm256_set_m128i(row(2 * m + 1), row(2 * m)));
        let t0 = _mm256_unpacklo_epi32(z[0], z[1]);
        let t1 = _mm256_unpackhi_epi32(z[0], z[1]);
        let t2 = _mm256_unpacklo_epi32(z[2], z[3]);
        let t3 = _mm256_unpackhi_epi32(z[2], z[3]);
        let wd = [
            _mm256_unpacklo_epi64(t0, t2),
            _mm256_unpackhi_epi64(t0, t2),
            _mm256_unpacklo_epi64(t1, t3),
            _mm256_unpackhi_epi64(t1, t3),
        ];
        let lo: [__m256i; 4] = std::array::from_fn(|j| _mm256_and_si256(wd[j], low));
        let hi: [__m256i; 4] =
            std::array::from_fn(|j| _mm256_and_si256(_mm256_srli_epi16::<4>(wd[j]), low));
        let d = |i: usize| unsafe { blk.add(row_of(i) * ws).cast::<u16>().read_unaligned() };
        let quad =
            |k: usize| (0..4).fold(0u64, |q, i| q | (d(4 * k + i) as u64) << (16 * i)) as i64;
        let d_w = _mm256_cvtph_ps(_mm_set_epi64x(quad(1), quad(0)));
        for (t, acc) in acc.iter_mut().enumerate() {
            let y = unsafe { ap.add(t * as_ + b * Q8_0) };
            // SAFETY: token t's block b (see above).
            let (corr, d_a) = unsafe { token(y) };
            let bc = |off: usize| unsafe {
                _mm256_set1_epi32(y.add(2 + off).cast::<i32>().read_unaligned())
            };
            let mut s16 = _mm256_maddubs_epi16(lo[0], bc(0));
            s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(hi[0], bc(16)));
            for j in 1..4 {
                s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(lo[j], bc(4 * j)));
                s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(hi[j], bc(16 + 4 * j)));
            }
            let isum = _mm256_add_epi32(_mm256_madd_epi16(s16, _mm256_set1_epi16(1)), corr);
            let dd = _mm256_mul_ps(d_w, d_a);
            *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), dd, *acc);
        }
    }
    for (t, acc) in acc.iter().enumerate() {
        let mut lanes = [0f32; R];
        // SAFETY: `lanes` is 32 writable bytes; unaligned store.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), *acc) };
        for (i, v) in lanes.into_iter().enumerate() {
            out[t * R + row_of(i)] = v;
        }
    }
}

fn gemm4(n: usize, w: &[u8], ws: usize, a: &[u8], as_: usize, out: &mut [f32]) {
    // SAFETY: reachable only through `kernel()`, whose caller guarantees the CPU has avx2,
    // fma and f16c.
    unsafe { tile::<4>(n, w, ws, a, as_, out) }
}

fn gemv(n: usize, w: &[u8], ws: usize, a: &[u8], as_: usize, out: &mut [f32]) {
    // SAFETY: as in `gemm4`.
    unsafe { tile::<1>(n, w, ws, a, as_, out) }
}

/// The AVX2 tile for `n_tokens` tokens: 8 rows × 4 tokens from 4 tokens, else 8 rows × 1.
///
/// # Safety
/// The returned function executes AVX2, FMA and F16C instructions: call only on a CPU that has
/// them.
pub(super) unsafe fn kernel(n_tokens: usize) -> super::GemmKernel {
    let (tokens, run): (usize, super::TileFn) = if n_tokens >= 4 { (4, gemm4) } else { (1, gemv) };
    super::GemmKernel {
        rows: R,
        tokens,
        run,
    }
}
