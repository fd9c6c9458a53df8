//! AVX-512 VNNI tiles (16 rows × 32, 16 or 8 tokens) for Q6_K in the order of ggml's tiled
//! K-quant matmul, bit-identical to `repack::vec_dot_q6_k_q8_k_tiled`: per super-block the exact
//! `isum = Σ sc · Σ (q − 32) · a`, then `acc = fma(isum · d_w, d_a, acc)`.
//!
//! Rows in lanes, as in `x86_avx512_q4_0.rs`: the rows are read in place, 16 bytes of 16 rows at
//! a time loaded four rows to a register and transposed in 128-bit lanes, so that lane `i` of a
//! register holds a dword of row `row_of(i)`. In a Q6_K block the four elements `4k..4k + 3`
//! take their low nibbles from four consecutive `ql` bytes and their high bits from four
//! consecutive `qh` bytes, so each transposed `ql`/`qh` dword pair gives, by shifts and masks,
//! the dword of 6-bit codes (0..63) of four elements of the 16 rows. The 64 code registers of a
//! super-block are unpacked once into a 4 KiB buffer, then serve all the tile's tokens, 8 at a
//! time: per sub-block and token, four `vpdpbusd` (unsigned codes × four activation bytes
//! broadcast from memory) form the 16 rows' `Σ q · a`, and one `vpmulld` by the rows' scales
//! adds it to `isum`. The `−32 · Σ sc · bsums` part of `Σ sc · (q − 32) · a` starts each
//! `isum`: eight `vpdpwssd` of the rows' scales times −32 (i16 pairs) by the token's `bsums`
//! pairs. The float steps run on 16 lanes, per lane exactly the scalar operations of the spec.
//! The `vpdpbusd` (64 MACs each, the fewest possible) take about four fifths of the time, the
//! unpacking at 32 tokens a fifth.
//!
//! Bounds (all exact in i32): `|Σ q · a|` of a sub-block ≤ 16 · 63 · 128, times `|sc|` ≤ 128,
//! sixteen of them; `|32 · sc|` ≤ 4096 fits an i16, `|bsum|` ≤ 16 · 128.

use super::x86_avx512_rows16::{bcast4, f16_lanes, store_rows, transpose16, R};
use super::GemmKernel;
use crate::kernels::x86_avx2::{Q6K, Q8K, Q8K_BSUMS, Q8K_QS};
use core::arch::x86_64::*;
use ggml_compat::QK_K;

/// Byte offsets in a Q6_K block.
const QL: usize = 0;
const QH: usize = 128;
const SCALES: usize = 192;
const D: usize = 208;

/// `(a & 0x0F) | (b & 0xF0)` per byte.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn low_high(a: __m512i, b: __m512i) -> __m512i {
    // Truth table of `C ? B : A` with A = b, B = a, C = 0x0F.
    _mm512_ternarylogic_epi32::<0xD8>(b, a, _mm512_set1_epi8(0x0F))
}

/// The weights of the 16 rows' super-block at `blk` (row `r` at `blk + r · ws`), unpacked:
/// `codes[k]` the codes of elements `4k..4k + 3`, `sc[s]` the scale of sub-block `s` (i32),
/// `corr[2j]` / `corr[2j + 1]` the scales of sub-blocks `(4j, 4j + 2)` / `(4j + 1, 4j + 3)`
/// times −32 (i16 pairs), and the rows' `d` — every lane in the row order of `row_of`
/// (`x86_avx512_rows16.rs`).
///
/// # Safety
/// `blk + r · ws .. + Q6K` must be readable for every `r < 16`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn unpack(
    blk: *const u8,
    ws: usize,
    codes: &mut [__m512i; QK_K / 4],
    sc: &mut [__m512i; 16],
    corr: &mut [__m512i; 8],
) -> __m512 {
    // Element e = 128 h + 32 g + l (l < 32): low nibble of ql[64 h + 32 (g & 1) + l] (the high
    // one from g = 2), high bits 2g, 2g + 1 of qh[32 h + l].
    let (m03, m0c) = (_mm512_set1_epi8(0x33), _mm512_set1_epi8(-52 /* 0xCC */));
    for h in 0..2 {
        for part in 0..2 {
            let l = 16 * part;
            // SAFETY: these 16-byte ranges lie in each row's block (caller).
            let (qh, qa, qb) = unsafe {
                (
                    transpose16(blk.add(QH + 32 * h + l), ws),
                    transpose16(blk.add(QL + 64 * h + l), ws),
                    transpose16(blk.add(QL + 64 * h + 32 + l), ws),
                )
            };
            for d in 0..4 {
                // Bits 0, 1 and 4, 5 (groups 0, 2) and bits 2, 3 and 6, 7 (groups 1, 3) moved
                // to bits 4, 5; the bits shifted in from neighbouring bytes land in the low
                // nibble or in bits 6, 7, both zero or masked.
                let h02 = _mm512_and_si512(qh[d], m03);
                let h13 = _mm512_and_si512(qh[d], m0c);
                let k = 32 * h + l / 4 + d;
                codes[k] = low_high(qa[d], _mm512_slli_epi32::<4>(h02));
                codes[k + 8] = low_high(qb[d], _mm512_slli_epi32::<2>(h13));
                codes[k + 16] = low_high(_mm512_srli_epi32::<4>(qa[d]), h02);
                codes[k + 24] =
                    low_high(_mm512_srli_epi32::<4>(qb[d]), _mm512_srli_epi32::<2>(h13));
            }
        }
    }
    // SAFETY: the 16 scale bytes of each row's block (caller).
    let s4 = unsafe { transpose16(blk.add(SCALES), ws) };
    let minus32 = _mm512_set1_epi16(-32);
    for (j, &v) in s4.iter().enumerate() {
        sc[4 * j] = _mm512_srai_epi32::<24>(_mm512_slli_epi32::<24>(v));
        sc[4 * j + 1] = _mm512_srai_epi32::<24>(_mm512_slli_epi32::<16>(v));
        sc[4 * j + 2] = _mm512_srai_epi32::<24>(_mm512_slli_epi32::<8>(v));
        sc[4 * j + 3] = _mm512_srai_epi32::<24>(v);
        let even = _mm512_srai_epi16::<8>(_mm512_slli_epi16::<8>(v));
        corr[2 * j] = _mm512_mullo_epi16(even, minus32);
        corr[2 * j + 1] = _mm512_mullo_epi16(_mm512_srai_epi16::<8>(v), minus32);
    }
    // SAFETY: the 2 bytes of `d` of each row's block (caller).
    unsafe { f16_lanes(blk.add(D), ws) }
}

/// Adds 8 tokens' products with the 16 unpacked rows of one super-block to `acc` (token t's
/// block at `y[t]`).
///
/// # Safety
/// Each `y[t]` must point to a readable Q8_K block.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn group(
    codes: &[__m512i; QK_K / 4],
    sc: &[__m512i; 16],
    corr: &[__m512i; 8],
    d_w: __m512,
    y: [*const u8; 8],
    acc: &mut [__m512; 8],
) {
    // Token t's bsums as the i16 pairs of `corr`: in each 128-bit lane the dwords
    // (b0, b2), (b1, b3), (b4, b6), (b5, b7) of its eight.
    let pair_order = _mm256_set_epi8(
        15, 14, 11, 10, 13, 12, 9, 8, 7, 6, 3, 2, 5, 4, 1, 0, //
        15, 14, 11, 10, 13, 12, 9, 8, 7, 6, 3, 2, 5, 4, 1, 0,
    );
    let mut pairs = [[0i32; 8]; 8];
    let mut isum: [__m512i; 8] = std::array::from_fn(|t| {
        // SAFETY: token t's block (caller); unaligned reads and store.
        unsafe {
            let bs = _mm256_loadu_si256(y[t].add(Q8K_BSUMS).cast());
            let p = _mm256_shuffle_epi8(bs, pair_order);
            _mm256_storeu_si256(pairs[t].as_mut_ptr().cast(), p);
        }
        corr.iter()
            .zip(pairs[t])
            .fold(_mm512_setzero_si512(), |s, (&c, p)| {
                _mm512_dpwssd_epi32(s, c, _mm512_set1_epi32(p))
            })
    });
    for s in 0..16 {
        let c = &codes[4 * s..4 * s + 4];
        for (t, isum) in isum.iter_mut().enumerate() {
            // SAFETY: the 16 bytes of sub-block s of token t's quants (caller).
            let q = unsafe { y[t].add(Q8K_QS + 16 * s) };
            let mut dot = _mm512_setzero_si512();
            for (j, &c) in c.iter().enumerate() {
                // SAFETY: as above.
                dot = _mm512_dpbusd_epi32(dot, c, unsafe { bcast4(q.add(4 * j)) });
            }
            *isum = _mm512_add_epi32(*isum, _mm512_mullo_epi32(dot, sc[s]));
        }
    }
    for (t, (acc, isum)) in acc.iter_mut().zip(isum).enumerate() {
        // SAFETY: the f32 `d` of token t's block (caller); unaligned read.
        let d_a = unsafe { y[t].cast::<f32>().read_unaligned() };
        let x = _mm512_mul_ps(_mm512_cvtepi32_ps(isum), d_w);
        *acc = _mm512_fmadd_ps(x, _mm512_set1_ps(d_a), *acc);
    }
}

/// One 16 × `T` tile (`T` a multiple of 8); see [`GemmKernel`] for the arguments.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn tile<const T: usize>(n: usize, w: &[u8], ws: usize, a: &[u8], as_: usize, out: &mut [f32]) {
    const { assert!(T.is_multiple_of(8)) };
    let nb = n / QK_K;
    // Every byte read below lies in these ranges (the last row's and the last token's last
    // blocks end exactly there).
    assert!(w.len() >= (R - 1) * ws + nb * Q6K);
    assert!(a.len() >= (T - 1) * as_ + nb * Q8K);
    assert!(out.len() >= R * T);
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let mut codes = [_mm512_setzero_si512(); QK_K / 4];
    let mut sc = [_mm512_setzero_si512(); 16];
    let mut corr = [_mm512_setzero_si512(); 8];
    let mut acc = [_mm512_setzero_ps(); T];
    let next = wp.wrapping_add(R * ws);
    let (lines, per_block) = ((R * ws).div_ceil(64), (R * ws).div_ceil(64 * nb.max(1)));
    for b in 0..nb {
        // SAFETY (all raw reads of this iteration): row r's block b spans
        // `r * ws + b * Q6K ..+ Q6K` and token t's `t * as_ + b * Q8K ..+ Q8K`, inside `w`
        // and `a` by the asserts above.
        let blk = unsafe { wp.add(b * Q6K) };
        // As in `x86_avx512_q4_0.rs`: spread over this tile's blocks, prefetch the next 16
        // rows (prefetches never fault, so the end of `w` needs no check).
        for line in (b * per_block).min(lines)..((b + 1) * per_block).min(lines) {
            _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(64 * line).cast());
        }
        // SAFETY: see above.
        let d_w = unsafe { unpack(blk, ws, &mut codes, &mut sc, &mut corr) };
        // SAFETY: see above (the pointer to token t's block b).
        let y = |t: usize| unsafe { ap.add(t * as_ + b * Q8K) };
        for (g, acc) in acc.chunks_exact_mut(8).enumerate() {
            let ys = std::array::from_fn(|t| y(8 * g + t));
            // SAFETY: tokens 8g..8g + 8 have block b (see above).
            unsafe { group(&codes, &sc, &corr, d_w, ys, acc.try_into().unwrap()) };
        }
    }
    store_rows(&acc, out);
}

fn gemm32(n: usize, w: &[u8], ws: usize, a: &[u8], as_: usize, out: &mut [f32]) {
    // SAFETY: reachable only through `kernel()`, whose caller guarantees the CPU has
    // avx512f/bw/vl/vnni, avx2, fma and f16c.
    unsafe { tile::<32>(n, w, ws, a, as_, out) }
}

fn gemm16(n: usize, w: &[u8], ws: usize, a: &[u8], as_: usize, out: &mut [f32]) {
    // SAFETY: as in `gemm32`.
    unsafe { tile::<16>(n, w, ws, a, as_, out) }
}

fn gemm8(n: usize, w: &[u8], ws: usize, a: &[u8], as_: usize, out: &mut [f32]) {
    // SAFETY: as in `gemm32`.
    unsafe { tile::<8>(n, w, ws, a, as_, out) }
}

/// The tile for the Q6_K tiled order (`repack::vec_dot_q6_k_q8_k_tiled`, ggml's
/// `ggml-cpu/tiled` matmul of Q6_K) for a product of `n_tokens` tokens: 16 rows × 32, 16 or 8
/// tokens. `matmul` cuts the tokens into chunks of 16 or of the tile's width if wider, and a
/// last chunk narrower than the tile goes without it; so the widest tile (one unpacking for the
/// most tokens: 32 measured 13% faster than 16, 16 17% faster than 8) whose last chunk has
/// fewer than 8 tokens — then exactly the `n_tokens % 8` an 8-token tile leaves too.
///
/// # Safety
/// The returned function executes AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C instructions: call
/// only on a CPU that has them.
pub(super) unsafe fn kernel(n_tokens: usize) -> GemmKernel {
    let (tokens, run): (usize, super::TileFn) = if n_tokens % 32 < 8 {
        (32, gemm32)
    } else if n_tokens % 16 < 8 {
        (16, gemm16)
    } else {
        (8, gemm8)
    };
    GemmKernel {
        rows: R,
        tokens,
        run,
    }
}
