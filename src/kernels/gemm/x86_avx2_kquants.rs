//! AVX2 twins of `x86_avx512_kquants.rs` (4 rows × 4 tokens): ggml's batched K-quant orders —
//! Q4_K repack gemm, Q6_K tiled — bit-identical to `repack.rs`'s per-pair functions, which the
//! AVX2 table uses too. Same scheme on 256-bit vectors: exact integer sums from `vpmaddubsw` /
//! `vpmaddwd`, four tokens reduced together, float steps on 4 lanes (one per token).

use super::GemmKernel;
use crate::kernels::scalar::k_scales_mins;
use crate::kernels::x86_avx2::{load128, load256, Q4K, Q6K, Q8K, Q8K_BSUMS, Q8K_QS};
use core::arch::x86_64::*;
use ggml_compat::quant::float::fp16_to_fp32 as h;
use ggml_compat::QK_K;

const R: usize = 4;
const T: usize = 4;

/// `[Σ v0, Σ v1, Σ v2, Σ v3]` of the 8 i32 lanes of each: interleave-and-add within 128-bit
/// lanes first, so one fold serves all four vectors.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn reduce4(v: [__m256i; 4]) -> __m128i {
    let pair = |a: __m256i, b: __m256i| {
        _mm256_add_epi32(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b))
    };
    let (s01, s23) = (pair(v[0], v[1]), pair(v[2], v[3]));
    let s = _mm256_add_epi32(
        _mm256_unpacklo_epi64(s01, s23),
        _mm256_unpackhi_epi64(s01, s23),
    );
    _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s))
}

/// The four tokens' Q8_K `d`s as 4 lanes; `y(t)` is token t's block offset in `a`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn token_d(y: &impl Fn(usize) -> usize, a: &[u8]) -> __m128 {
    let d = |t: usize| f32::from_le_bytes(a[y(t)..y(t) + 4].try_into().unwrap());
    _mm_set_ps(d(3), d(2), d(1), d(0))
}

/// Writes lane t of `v[r]` to `out[t * R + r]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn store(v: &[__m128; R], out: &mut [f32]) {
    for (r, v) in v.iter().enumerate() {
        let mut o = [0f32; 4];
        // SAFETY: `o` is 16 writable bytes; the store is unaligned.
        unsafe { _mm_storeu_ps(o.as_mut_ptr(), *v) };
        for (t, x) in o.into_iter().enumerate() {
            out[t * R + r] = x;
        }
    }
}

/// 16 lanes of i16: `lo` in the first 8, `hi` in the last 8.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn halves_i16(lo: i16, hi: i16) -> __m256i {
    _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo))
}

/// Q4_K · Q8_K in the gemm order; see [`GemmKernel`] for the arguments.
#[target_feature(enable = "avx2,fma,f16c")]
fn tile_q4_k_gemm(n: usize, w: &[u8], ws: usize, a: &[u8], as_: usize, out: &mut [f32]) {
    let mut acc = [_mm_setzero_ps(); R];
    let mut acc_min = [_mm_setzero_ps(); R];
    let low = _mm256_set1_epi8(0xF);
    for b in 0..n / QK_K {
        let y = |t: usize| t * as_ + b * Q8K;
        let d_tok = token_d(&y, a);
        // As in the AVX-512 file: per chunk k, [P_t0(2k), P_t0(2k+1), P_t1(2k), …] as i16.
        let mut pairs = [[0i16; 8]; 4];
        for t in 0..T {
            let bs = &a[y(t) + Q8K_BSUMS..][..32];
            let bsum = |i: usize| i16::from_le_bytes([bs[2 * i], bs[2 * i + 1]]);
            for s in 0..8 {
                pairs[s / 2][2 * t + s % 2] = bsum(2 * s) + bsum(2 * s + 1);
            }
        }
        for (r, (acc, acc_min)) in acc.iter_mut().zip(&mut acc_min).enumerate() {
            let x = &w[r * ws + b * Q4K..][..Q4K];
            let (scales, mins) = k_scales_mins(x[4..16].try_into().unwrap());
            let d_w = _mm_mul_ps(
                _mm_set1_ps(h(half::f16::from_le_bytes([x[0], x[1]]))),
                d_tok,
            );
            let dmin_w = _mm_mul_ps(
                _mm_set1_ps(h(half::f16::from_le_bytes([x[2], x[3]]))),
                d_tok,
            );
            for k in 0..4 {
                let q = load256(&x[16 + 32 * k..]);
                let (u_lo, u_hi) = (
                    _mm256_and_si256(q, low),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(q), low),
                );
                let (s_lo, s_hi) = (
                    _mm256_set1_epi16(scales[2 * k] as i16),
                    _mm256_set1_epi16(scales[2 * k + 1] as i16),
                );
                let dots: [__m256i; T] = std::array::from_fn(|t| {
                    let qa = &a[y(t) + Q8K_QS + 64 * k..];
                    let lo = _mm256_madd_epi16(_mm256_maddubs_epi16(u_lo, load256(qa)), s_lo);
                    let hi =
                        _mm256_madd_epi16(_mm256_maddubs_epi16(u_hi, load256(&qa[32..])), s_hi);
                    _mm256_add_epi32(lo, hi)
                });
                let isum = reduce4(dots);
                let m = (mins[2 * k] as i32) | ((mins[2 * k + 1] as i32) << 16);
                // SAFETY: `pairs[k]` is 16 readable bytes; the load is unaligned.
                let p = unsafe { _mm_loadu_si128(pairs[k].as_ptr().cast()) };
                let imin = _mm_madd_epi16(p, _mm_set1_epi32(m));
                *acc = _mm_fmadd_ps(_mm_cvtepi32_ps(isum), d_w, *acc);
                *acc_min = _mm_fmadd_ps(_mm_cvtepi32_ps(imin), dmin_w, *acc_min);
            }
        }
    }
    let res: [__m128; R] = std::array::from_fn(|r| _mm_sub_ps(acc[r], acc_min[r]));
    store(&res, out);
}

/// Q6_K · Q8_K in the tiled order; see [`GemmKernel`] for the arguments.
#[target_feature(enable = "avx2,fma,f16c")]
fn tile_q6_k_tiled(n: usize, w: &[u8], ws: usize, a: &[u8], as_: usize, out: &mut [f32]) {
    let mut acc = [_mm_setzero_ps(); R];
    let (low, hi2) = (_mm256_set1_epi8(0xF), _mm256_set1_epi8(0x30));
    for b in 0..n / QK_K {
        let y = |t: usize| t * as_ + b * Q8K;
        let d_tok = token_d(&y, a);
        for (r, acc) in acc.iter_mut().enumerate() {
            let x = &w[r * ws + b * Q6K..][..Q6K];
            let sc8: [i8; 16] = std::array::from_fn(|i| x[192 + i] as i8);
            let sc16 = _mm256_cvtepi8_epi16(load128(&x[192..]));
            let mut sums = [_mm256_setzero_si256(); T];
            for half in 0..2 {
                let (l0, l1) = (load256(&x[64 * half..]), load256(&x[64 * half + 32..]));
                let qh = load256(&x[128 + 32 * half..]);
                let qh2 = _mm256_srli_epi16::<2>(qh);
                let hi = |v: __m256i| _mm256_and_si256(v, hi2);
                // Elements 128 half + 32 c.. for c = 0..4 (see `repack::q6_k_tiled_body`).
                let codes = [
                    _mm256_or_si256(_mm256_and_si256(l0, low), hi(_mm256_slli_epi16::<4>(qh))),
                    _mm256_or_si256(_mm256_and_si256(l1, low), hi(_mm256_slli_epi16::<4>(qh2))),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(l0), low), hi(qh)),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(l1), low), hi(qh2)),
                ];
                for (c, u) in codes.into_iter().enumerate() {
                    let s0 = 8 * half + 2 * c;
                    let sc = halves_i16(sc8[s0] as i16, sc8[s0 + 1] as i16);
                    for (t, sum) in sums.iter_mut().enumerate() {
                        let qa = load256(&a[y(t) + Q8K_QS + 128 * half + 32 * c..]);
                        let d = _mm256_madd_epi16(_mm256_maddubs_epi16(u, qa), sc);
                        *sum = _mm256_add_epi32(*sum, d);
                    }
                }
            }
            // Σ sc · (q − 32) · a = Σ sc · q · a − 32 · Σ sc · bsums.
            for (t, sum) in sums.iter_mut().enumerate() {
                let bsums = load256(&a[y(t) + Q8K_BSUMS..]);
                let corr = _mm256_slli_epi32::<5>(_mm256_madd_epi16(sc16, bsums));
                *sum = _mm256_sub_epi32(*sum, corr);
            }
            let isum = _mm_cvtepi32_ps(reduce4(sums));
            let d_w = _mm_set1_ps(h(half::f16::from_le_bytes([x[208], x[209]])));
            *acc = _mm_fmadd_ps(_mm_mul_ps(isum, d_w), d_tok, *acc);
        }
    }
    store(&acc, out);
}

fn q4_k_gemm(n: usize, w: &[u8], ws: usize, a: &[u8], as_: usize, out: &mut [f32]) {
    // SAFETY: reachable only through `q4_k_gemm_kernel()`, whose caller guarantees the CPU has
    // avx2, fma and f16c.
    unsafe { tile_q4_k_gemm(n, w, ws, a, as_, out) }
}

fn q6_k_tiled(n: usize, w: &[u8], ws: usize, a: &[u8], as_: usize, out: &mut [f32]) {
    // SAFETY: as in `q4_k_gemm`.
    unsafe { tile_q6_k_tiled(n, w, ws, a, as_, out) }
}

/// The tile for the Q4_K gemm order.
///
/// # Safety
/// The returned function executes AVX2, FMA and F16C instructions: call only on a CPU that has
/// them.
pub(super) unsafe fn q4_k_gemm_kernel() -> GemmKernel {
    GemmKernel {
        rows: R,
        tokens: T,
        run: q4_k_gemm,
    }
}

/// The tile for the Q6_K tiled order.
///
/// # Safety
/// As [`q4_k_gemm_kernel`].
pub(super) unsafe fn q6_k_tiled_kernel() -> GemmKernel {
    GemmKernel {
        rows: R,
        tokens: T,
        run: q6_k_tiled,
    }
}
