//! AVX-512 VNNI tiles (16 rows × `T` tokens) for Q4_0 in the order of ggml's repacked
//! `ggml_gemm_q4_0_8x8_q8_0` / `ggml_gemv_q4_0_8x8_q8_0`, bit-identical to
//! `repack::vec_dot_q4_0_q8_0_repack`: per block, the exact `isum = Σ (q − 8) · a`, then
//! `acc = fma(isum, d_w · d_a, acc)`.
//!
//! The rows are read in place (no repacked copy): the 16 bytes of quants of 16 rows' block `b`
//! are loaded four rows to a register and transposed in 128-bit lanes, so that lane `i` of
//! register `j` holds dword `j` of row `row_of(i)`. Each lane then is one row: eight
//! `vpdpbusd` (unsigned nibble codes `q` × four activation bytes broadcast from memory) form all
//! 16 rows' integer sums of a token at once, and the float steps run on 16 lanes — per lane
//! exactly the scalar operations of the spec. `Σ q · a − 8 · Σ a` is the same exact integer as
//! `Σ (q − 8) · a`; `Σ a` is formed once per token and block.

use super::x86_avx512_rows16::{bcast4, f16_lanes, store_rows, transpose16, R};
use super::GemmKernel;
use crate::kernels::x86_avx2::{Q4_0, Q8_0, QK};
use core::arch::x86_64::*;

/// `−8 · Σ a` and `d` of one token's Q8_0 block at `y`.
///
/// # Safety
/// `y` must point to a readable Q8_0 block (34 bytes).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn token_one(y: *const u8) -> (i32, f32) {
    // SAFETY: 2 + 32 readable bytes at `y` (caller); unaligned reads.
    let (bits, v) = unsafe {
        (
            y.cast::<u16>().read_unaligned(),
            _mm256_loadu_si256(y.add(2).cast()),
        )
    };
    let s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(1), v);
    let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0x4E>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0xB1>(s));
    let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)));
    (-(_mm_cvtsi128_si32(s) << 3), d)
}

/// `−8 · Σ a` and `d` of four tokens' Q8_0 blocks at `y[0..4]`, as 4 lanes each
/// (the sums formed together: one `vpdpbusd` per two tokens, one shared reduction).
///
/// # Safety
/// Each `y[t]` must point to a readable Q8_0 block (34 bytes).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn token_quad(y: [*const u8; 4]) -> (__m128i, __m128) {
    // SAFETY: 32 readable bytes at `y[t] + 2` and 2 at `y[t]` (caller); unaligned reads.
    let (q, d) = unsafe {
        (
            |t: usize| _mm256_loadu_si256(y[t].add(2).cast()),
            |t: usize| y[t].cast::<u16>().read_unaligned() as u64,
        )
    };
    let pair = |t: usize| _mm512_inserti64x4::<1>(_mm512_castsi256_si512(q(t)), q(t + 1));
    let ones = _mm512_set1_epi8(1);
    // 128-bit lanes 0, 1 of s01 hold token 0's partial sums, 2, 3 token 1's (s23 alike).
    let s01 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, pair(0));
    let s23 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, pair(2));
    let u = _mm512_add_epi32(
        _mm512_unpacklo_epi32(s01, s23),
        _mm512_unpackhi_epi32(s01, s23),
    );
    // Each 128-bit lane: [its s01 sum, its s23 sum, same, same].
    let u = _mm512_add_epi32(_mm512_unpacklo_epi64(u, u), _mm512_unpackhi_epi64(u, u));
    // Lanes 0 + 1 and 2 + 3: dwords 0, 1 = tokens 0, 2; dwords 8, 9 = tokens 1, 3.
    let u = _mm512_add_epi32(u, _mm512_shuffle_i32x4::<0b10_11_00_01>(u, u));
    let u = _mm512_permutexvar_epi32(
        _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 1, 8, 0),
        u,
    );
    let neg = _mm_sub_epi32(
        _mm_setzero_si128(),
        _mm_slli_epi32::<3>(_mm512_castsi512_si128(u)),
    );
    let bits = d(0) | d(1) << 16 | d(2) << 32 | d(3) << 48;
    (neg, _mm_cvtph_ps(_mm_cvtsi64_si128(bits as i64)))
}

/// One 16 × `T` tile; see [`GemmKernel`] for the arguments.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn tile<const T: usize>(n: usize, w: &[u8], ws: usize, a: &[u8], as_: usize, out: &mut [f32]) {
    let nb = n / QK;
    // Every byte read below lies in these ranges (the loads of the last row's last block and
    // of the last token's last block end exactly there).
    assert!(w.len() >= (R - 1) * ws + nb * Q4_0);
    assert!(a.len() >= (T - 1) * as_ + nb * Q8_0);
    assert!(out.len() >= R * T);
    let low = _mm512_set1_epi8(0xF);
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let mut acc = [_mm512_setzero_ps(); T];
    let (next, lines) = (wp.wrapping_add(R * ws), (R * ws).div_ceil(64));
    for b in 0..nb {
        // SAFETY (all raw reads of this iteration): row r's block b spans
        // `r * ws + b * Q4_0 ..+ Q4_0` and token t's `t * as_ + b * Q8_0 ..+ Q8_0`, inside `w`
        // and `a` by the asserts above.
        let blk = unsafe { wp.add(b * Q4_0) };
        // Sixteen row streams are more than the hardware prefetchers follow: spread over
        // this tile's blocks, prefetch the next 16 rows (the next tile of the matmul's loop,
        // contiguous after these). Prefetches never fault, so the end of `w` needs no check.
        for line in b * lines / nb..(b + 1) * lines / nb {
            _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(64 * line).cast());
        }
        let wd = unsafe { transpose16(blk.add(2), ws) };
        // Codes of elements 4j.. (low nibbles) and 16 + 4j.. (high nibbles), rows in lanes.
        let lo: [__m512i; 4] = std::array::from_fn(|j| _mm512_and_si512(wd[j], low));
        let hi: [__m512i; 4] =
            std::array::from_fn(|j| _mm512_and_si512(_mm512_srli_epi16::<4>(wd[j]), low));
        let d_w = unsafe { f16_lanes(blk, ws) };
        // Per token: `−8 · Σ a` (the start of `Σ q · a`) and `d`, broadcast.
        let y = |t: usize| unsafe { ap.add(t * as_ + b * Q8_0) };
        let mut quads = [(_mm_setzero_si128(), _mm_setzero_ps()); 4];
        if T.is_multiple_of(4) {
            for (g, quad) in quads.iter_mut().enumerate().take(T / 4) {
                let ys = std::array::from_fn(|i| y(4 * g + i));
                // SAFETY: four tokens' blocks b (see above).
                *quad = unsafe { token_quad(ys) };
            }
        }
        for (t, acc) in acc.iter_mut().enumerate() {
            let (corr, d_a) = if T.is_multiple_of(4) {
                // Lane t % 4 of the group's vectors (a permute, not a round trip through a
                // general register: LLVM's extract + re-broadcast was 10% of the tile).
                let (c, d) = quads[t / 4];
                let k = _mm512_set1_epi32((t % 4) as i32);
                (
                    _mm512_permutexvar_epi32(k, _mm512_castsi128_si512(c)),
                    _mm512_permutexvar_ps(k, _mm512_castps128_ps512(d)),
                )
            } else {
                // SAFETY: token t's block b (see above).
                let (c, d) = unsafe { token_one(y(t)) };
                (_mm512_set1_epi32(c), _mm512_set1_ps(d))
            };
            let q = unsafe { y(t).add(2) };
            let mut isum = corr;
            for j in 0..4 {
                isum = _mm512_dpbusd_epi32(isum, lo[j], unsafe { bcast4(q.add(4 * j)) });
                isum = _mm512_dpbusd_epi32(isum, hi[j], unsafe { bcast4(q.add(16 + 4 * j)) });
            }
            let d = _mm512_mul_ps(d_w, d_a);
            *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), d, *acc);
        }
    }
    store_rows(&acc, out);
}

fn gemm8(n: usize, w: &[u8], ws: usize, a: &[u8], as_: usize, out: &mut [f32]) {
    // SAFETY: reachable only through `kernel()`, whose caller guarantees the CPU has
    // avx512f/bw/vl/vnni, avx2, fma and f16c.
    unsafe { tile::<8>(n, w, ws, a, as_, out) }
}

fn gemm4(n: usize, w: &[u8], ws: usize, a: &[u8], as_: usize, out: &mut [f32]) {
    // SAFETY: as in `gemm8`.
    unsafe { tile::<4>(n, w, ws, a, as_, out) }
}

fn gemv(n: usize, w: &[u8], ws: usize, a: &[u8], as_: usize, out: &mut [f32]) {
    // SAFETY: as in `gemm`.
    unsafe { tile::<1>(n, w, ws, a, as_, out) }
}

/// The tile for `n_tokens` tokens: 16 rows × 8 tokens from 8 tokens, × 4 from 4, else × 1.
///
/// # Safety
/// The returned function executes AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C instructions: call
/// only on a CPU that has them.
pub(super) unsafe fn kernel(n_tokens: usize) -> GemmKernel {
    let (tokens, run): (usize, super::TileFn) = match n_tokens {
        8.. => (8, gemm8),
        4.. => (4, gemm4),
        _ => (1, gemv),
    };
    GemmKernel {
        rows: R,
        tokens,
        run,
    }
}
