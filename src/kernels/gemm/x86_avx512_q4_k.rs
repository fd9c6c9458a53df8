//! AVX-512 VNNI tiles (16 rows × `T` tokens) for Q4_K in the order of ggml's repacked
//! `ggml_gemm_q4_K_8x8_q8_K`, bit-identical to `repack::vec_dot_q4_k_q8_k_gemm`: per pair of
//! sub-blocks (64 elements), the exact integer sums `isum = Σ sc · Σ q · a` and
//! `imin = Σ m · (bsums pair)`, then `acc = fma(isum, d_w · d_a, acc)` and
//! `acc_min = fma(imin, dmin_w · d_a, acc_min)`; the result is `acc − acc_min`.
//!
//! Rows in lanes, as the Q4_0 tile (`x86_avx512_q4_0.rs`): the rows are read in place, 16 bytes
//! of 16 rows loaded four rows to a register and transposed in 128-bit lanes, so that lane `i`
//! of register `j` holds dword `j` of row `row_of(i)`. Then
//! - the super-block header (`d`, `dmin` and the 12 packed scale bytes: 16 bytes) gives the 16
//!   rows' `d`, `dmin`, and their 6-bit scales and mins unpacked per lane with the masks of
//!   ggml's `get_scale_min_k4`, once for `T` tokens;
//! - each dword of quants holds four elements of sub-block `2k` (low nibbles) and of `2k + 1`
//!   (high nibbles): eight `vpdpbusd` per sub-block (nibble codes × four activation bytes
//!   broadcast from memory) form the 16 rows' `Σ q · a` of a token with no horizontal
//!   reduction, `vpmulld` by the per-lane scales makes `isum`, and one `vpmaddwd` of the
//!   per-lane mins (an i16 pair) by the token's two bsum pair sums (an i16 pair, broadcast)
//!   makes `imin`;
//! - the float steps run on 16 lanes, per lane exactly the scalar operations of the spec.

use super::x86_avx512_rows16::{bcast4, store_rows, transpose16, R};
use super::GemmKernel;
use crate::kernels::x86_avx2::{Q4K, Q8K, Q8K_BSUMS, Q8K_QS};
use core::arch::x86_64::*;
use ggml_compat::QK_K;

/// Byte offsets inside a Q4_K block (`d: f16`, `dmin: f16`, `scales: [u8; 12]`, `qs: [u8; 128]`).
const Q4K_QS: usize = 16;

/// Byte `i` of each dword of `v`, zero-extended.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn byte_of(v: __m512i, i: u32) -> __m512i {
    _mm512_and_si512(
        _mm512_srl_epi32(v, _mm_cvtsi32_si128(8 * i as i32)),
        _mm512_set1_epi32(0xFF),
    )
}

/// Bytes `i` and `i + 1` of each dword of `v` as an i16 pair (zero-extended).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn byte_pair_of(v: __m512i, i: u32) -> __m512i {
    let s = _mm512_srl_epi32(v, _mm_cvtsi32_si128(8 * i as i32));
    _mm512_or_si512(
        _mm512_and_si512(s, _mm512_set1_epi32(0xFF)),
        _mm512_and_si512(_mm512_slli_epi32::<8>(s), _mm512_set1_epi32(0xFF_0000)),
    )
}

/// One 16 × `T` tile; see [`GemmKernel`] for the arguments.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn tile<const T: usize>(n: usize, w: &[u8], ws: usize, a: &[u8], as_: usize, out: &mut [f32]) {
    let nb = n / QK_K;
    // Every byte read below lies in these ranges (the loads of the last row's last block and
    // of the last token's last block end exactly there).
    assert!(w.len() >= (R - 1) * ws + nb * Q4K);
    assert!(a.len() >= (T - 1) * as_ + nb * Q8K);
    assert!(out.len() >= R * T);
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let low = _mm512_set1_epi8(0xF);
    let mut acc = [_mm512_setzero_ps(); T];
    let mut acc_min = [_mm512_setzero_ps(); T];
    let (next, lines) = (wp.wrapping_add(R * ws), (R * ws).div_ceil(64));
    for b in 0..nb {
        // SAFETY (all raw reads of this iteration): row r's block b spans
        // `r * ws + b * Q4K ..+ Q4K` and token t's `t * as_ + b * Q8K ..+ Q8K`, inside `w` and
        // `a` by the asserts above.
        let blk = unsafe { wp.add(b * Q4K) };
        let y = |t: usize| unsafe { ap.add(t * as_ + b * Q8K) };
        // Sixteen row streams are more than the hardware prefetchers follow: spread over this
        // tile's blocks, prefetch the next 16 rows (the next tile of the matmul's loop,
        // contiguous after these). Prefetches never fault, so the end of `w` needs no check.
        for line in b * lines / nb..(b + 1) * lines / nb {
            _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(64 * line).cast());
        }
        // [d | dmin << 16, scale bytes 0..4, 4..8, 8..12] of the 16 rows.
        let [dm, u0, u1, u2] = unsafe { transpose16(blk, ws) };
        let d_w = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dm));
        let dmin_w = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(dm)));
        // ggml's `get_scale_min_k4` on four bytes at a time: scales 0..4, 4..8, mins 0..4, 4..8.
        let (m6, m4, hi2) = (
            _mm512_set1_epi32(0x3f3f_3f3f),
            _mm512_set1_epi32(0x0f0f_0f0f),
            _mm512_set1_epi32(0x3030_3030),
        );
        let sc = [
            _mm512_and_si512(u0, m6),
            _mm512_or_si512(
                _mm512_and_si512(u2, m4),
                _mm512_and_si512(_mm512_srli_epi32::<2>(u0), hi2),
            ),
        ];
        let mins = [
            _mm512_and_si512(u1, m6),
            _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi32::<4>(u2), m4),
                _mm512_and_si512(_mm512_srli_epi32::<2>(u1), hi2),
            ),
        ];
        // Per token: `d_w · d_a`, `dmin_w · d_a` (one f32 product each, as the spec), and the
        // bsum pair sums P(s) = bsums[2s] + bsums[2s + 1] as i16 pairs [P(2k), P(2k + 1)]
        // (|P| ≤ 4096; the wrapping adds are exact).
        let mut d = [_mm512_setzero_ps(); T];
        let mut dmin = [_mm512_setzero_ps(); T];
        let mut pairs = [[0i32; 4]; T];
        for t in 0..T {
            // SAFETY: token t's block b (see above): d at 0, bsums at Q8K_BSUMS (32 bytes).
            let (d_a, lo, hi) = unsafe {
                (
                    _mm512_set1_ps(y(t).cast::<f32>().read_unaligned()),
                    _mm_loadu_si128(y(t).add(Q8K_BSUMS).cast()),
                    _mm_loadu_si128(y(t).add(Q8K_BSUMS + 16).cast()),
                )
            };
            d[t] = _mm512_mul_ps(d_w, d_a);
            dmin[t] = _mm512_mul_ps(dmin_w, d_a);
            // SAFETY: `pairs[t]` is 16 writable bytes; unaligned store.
            unsafe { _mm_storeu_si128(pairs[t].as_mut_ptr().cast(), _mm_hadd_epi16(lo, hi)) };
        }
        let pairs: [[i32; T]; 4] = std::array::from_fn(|k| std::array::from_fn(|t| pairs[t][k]));
        for (k, pairs) in pairs.iter().enumerate() {
            // Chunk k: quant bytes 32k.. (sub-block 2k low nibbles, 2k + 1 high nibbles).
            let q = blk.wrapping_add(Q4K_QS + 32 * k);
            let (qa, qb) = unsafe { (transpose16(q, ws), transpose16(q.add(16), ws)) };
            let wd = [qa[0], qa[1], qa[2], qa[3], qb[0], qb[1], qb[2], qb[3]];
            let lo: [__m512i; 8] = std::array::from_fn(|j| _mm512_and_si512(wd[j], low));
            let hi: [__m512i; 8] =
                std::array::from_fn(|j| _mm512_and_si512(_mm512_srli_epi16::<4>(wd[j]), low));
            let (i, s) = ((2 * k % 4) as u32, k / 2);
            let (sc_lo, sc_hi) = (byte_of(sc[s], i), byte_of(sc[s], i + 1));
            let m = byte_pair_of(mins[s], i);
            for t in 0..T {
                // SAFETY: token t's block b (see above): 64 quants at Q8K_QS + 64k.
                let qy = unsafe { y(t).add(Q8K_QS + 64 * k) };
                let (mut s_lo, mut s_hi) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                for j in 0..8 {
                    s_lo = _mm512_dpbusd_epi32(s_lo, lo[j], unsafe { bcast4(qy.add(4 * j)) });
                    s_hi = _mm512_dpbusd_epi32(s_hi, hi[j], unsafe { bcast4(qy.add(32 + 4 * j)) });
                }
                let isum = _mm512_add_epi32(
                    _mm512_mullo_epi32(s_lo, sc_lo),
                    _mm512_mullo_epi32(s_hi, sc_hi),
                );
                let imin = _mm512_madd_epi16(m, _mm512_set1_epi32(pairs[t]));
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), d[t], acc[t]);
                acc_min[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(imin), dmin[t], acc_min[t]);
            }
        }
    }
    let results: [__m512; T] = std::array::from_fn(|t| _mm512_sub_ps(acc[t], acc_min[t]));
    store_rows(&results, out);
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

/// The tile of `tokens` tokens (8 or 4: the gemm order takes tokens in groups of four).
///
/// # Safety
/// The returned function executes AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C instructions: call
/// only on a CPU that has them.
pub(super) unsafe fn kernel(tokens: usize) -> GemmKernel {
    let (tokens, run): (usize, super::TileFn) = match tokens {
        8.. => (8, gemm8),
        _ => (4, gemm4),
    };
    GemmKernel {
        rows: R,
        tokens,
        run,
    }
}
