//! AVX-512 tile (4 rows × 4 tokens) for the Q4_K order ggml's x86 build uses on batches,
//! bit-identical to the per-pair function of `repack.rs`: Q4_K in the `ggml_gemm_q4_K_8x8_q8_K`
//! order (`repack::vec_dot_q4_k_q8_k_gemm`): per pair of sub-blocks (64 elements), the exact
//! integer sums `isum = Σ sc · Σ q · a` and `imin = Σ m · bsums`, then
//! `acc = fma(isum, d_w · d_a, acc)` and `acc_min = fma(imin, dmin_w · d_a, acc_min)`; the
//! result is `acc − acc_min` (the Q6_K tile is in `x86_avx512_q6_k.rs`).
//!
//! The integer sums are exact whatever the order, so they are formed with `vpmaddubsw` (weights
//! 0..63 unsigned × activations, a pair sum of at most 2 · 63 · 128 < 2^15: no saturation) and
//! `vpmaddwd` by the sub-block scales; the four tokens' sums are reduced together into one
//! 4-lane vector, and the float steps run on 4 lanes (one per token) — per lane exactly the
//! scalar operations of `repack.rs`.

use super::GemmKernel;
use crate::kernels::scalar::k_scales_mins;
use crate::kernels::x86_avx2::{load256, Q4K, Q8K, Q8K_BSUMS, Q8K_QS};
use core::arch::x86_64::*;
use ggml_compat::quant::float::fp16_to_fp32 as h;
use ggml_compat::QK_K;

const R: usize = 4;
const T: usize = 4;

/// 64 bytes starting at `b[0]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load512(b: &[u8]) -> __m512i {
    let b: &[u8; 64] = b[..64].try_into().unwrap();
    // SAFETY: `b` is 64 readable bytes; the load is unaligned.
    unsafe { _mm512_loadu_si512(b.as_ptr().cast()) }
}

/// `[Σ v0, Σ v1, Σ v2, Σ v3]` of the 16 i32 lanes of each (wrapping, as exact sums are):
/// interleave-and-add within 128-bit lanes first, so one fold serves all four vectors.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn reduce4(v: [__m512i; 4]) -> __m128i {
    let pair = |a: __m512i, b: __m512i| {
        _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b))
    };
    let (s01, s23) = (pair(v[0], v[1]), pair(v[2], v[3]));
    // Each 128-bit lane: [part of Σ v0, of Σ v1, of Σ v2, of Σ v3].
    let s = _mm512_add_epi32(
        _mm512_unpacklo_epi64(s01, s23),
        _mm512_unpackhi_epi64(s01, s23),
    );
    let a = _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64::<1>(s));
    _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256::<1>(a))
}

/// The four tokens' Q8_K `d`s of super-block `b` as 4 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn token_d(y: &impl Fn(usize) -> usize, a: &[u8]) -> __m128 {
    let d = |t: usize| f32::from_le_bytes(a[y(t)..y(t) + 4].try_into().unwrap());
    _mm_set_ps(d(3), d(2), d(1), d(0))
}

/// Stores 4 rows × 4 tokens of f32 lanes (lane t of `v[r]`) as `out[t * R + r]`.
#[inline]
fn store(v: &[[f32; 4]; R], out: &mut [f32]) {
    for (r, lanes) in v.iter().enumerate() {
        for (t, &x) in lanes.iter().enumerate() {
            out[t * R + r] = x;
        }
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn lanes(v: __m128) -> [f32; 4] {
    let mut o = [0f32; 4];
    // SAFETY: `o` is 16 writable bytes; the store is unaligned.
    unsafe { _mm_storeu_ps(o.as_mut_ptr(), v) };
    o
}

/// Q4_K · Q8_K in the gemm order; see [`GemmKernel`] for the arguments.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn tile_q4_k_gemm(n: usize, w: &[u8], ws: usize, a: &[u8], as_: usize, out: &mut [f32]) {
    let mut acc = [_mm_setzero_ps(); R];
    let mut acc_min = [_mm_setzero_ps(); R];
    let low = _mm512_set1_epi8(0xF);
    for b in 0..n / QK_K {
        let y = |t: usize| t * as_ + b * Q8K;
        let d_tok = token_d(&y, a);
        // Per chunk k (sub-blocks 2k, 2k + 1), the tokens' bsum pair sums as i16 pairs:
        // [P_t0(2k), P_t0(2k+1), P_t1(2k), …], P(s) = bsums[2s] + bsums[2s+1] (|P| ≤ 4096).
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
                let u =
                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(q), _mm256_srli_epi16::<4>(q));
                let u = _mm512_and_si512(u, low);
                let sc = _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(_mm256_set1_epi16(scales[2 * k] as i16)),
                    _mm256_set1_epi16(scales[2 * k + 1] as i16),
                );
                let dots: [__m512i; T] = std::array::from_fn(|t| {
                    let qa = load512(&a[y(t) + Q8K_QS + 64 * k..]);
                    _mm512_madd_epi16(_mm512_maddubs_epi16(u, qa), sc)
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
    let res: [[f32; 4]; R] = std::array::from_fn(|r| lanes(_mm_sub_ps(acc[r], acc_min[r])));
    store(&res, out);
}

fn q4_k_gemm(n: usize, w: &[u8], ws: usize, a: &[u8], as_: usize, out: &mut [f32]) {
    // SAFETY: reachable only through `kernel()`, whose caller guarantees the CPU has
    // avx512f/bw/vl/vnni, avx2, fma and f16c.
    unsafe { tile_q4_k_gemm(n, w, ws, a, as_, out) }
}

/// The tile for the Q4_K gemm order.
///
/// # Safety
/// The returned function executes AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C instructions: call
/// only on a CPU that has them.
pub(super) unsafe fn q4_k_gemm_kernel() -> GemmKernel {
    GemmKernel {
        rows: R,
        tokens: T,
        run: q4_k_gemm,
    }
}
