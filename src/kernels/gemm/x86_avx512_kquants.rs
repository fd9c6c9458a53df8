//! AVX-512 tiles (4 rows × 4 tokens) for the K-quant orders ggml's x86 build uses on batches,
//! bit-identical to the per-pair functions of `repack.rs` (Q4_K's gemm order has its own tile,
//! `x86_avx512_q4_k.rs`):
//!
//! - Q6_K in the tiled order (`repack::vec_dot_q6_k_q8_k_tiled`): per super-block the exact
//!   `isum = Σ sc · Σ (q − 32) · a`, then `acc = fma(isum · d_w, d_a, acc)`.
//!
//! The integer sums are exact whatever the order, so they are formed with `vpmaddubsw` (weights
//! 0..63 unsigned × activations, a pair sum of at most 2 · 63 · 128 < 2^15: no saturation) and
//! `vpmaddwd` by the sub-block scales; the four tokens' sums are reduced together into one
//! 4-lane vector, and the float steps run on 4 lanes (one per token) — per lane exactly the
//! scalar operations of `repack.rs`.

use super::GemmKernel;
use crate::kernels::x86_avx2::{load256, Q6K, Q8K, Q8K_BSUMS, Q8K_QS};
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

/// Q6_K · Q8_K in the tiled order; see [`GemmKernel`] for the arguments.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn tile_q6_k_tiled(n: usize, w: &[u8], ws: usize, a: &[u8], as_: usize, out: &mut [f32]) {
    let mut acc = [_mm_setzero_ps(); R];
    let (low, hi2) = (_mm512_set1_epi8(0xF), _mm512_set1_epi8(0x30));
    for b in 0..n / QK_K {
        let y = |t: usize| t * as_ + b * Q8K;
        let d_tok = token_d(&y, a);
        for (r, acc) in acc.iter_mut().enumerate() {
            let x = &w[r * ws + b * Q6K..][..Q6K];
            // SAFETY: `x[192..208]` is 16 readable bytes (the i8 scales); unaligned load.
            let sc8 = unsafe { _mm_loadu_si128(x[192..208].as_ptr().cast()) };
            let sc16 = _mm256_cvtepi8_epi16(sc8);
            let sc16z = _mm512_castsi256_si512(sc16);
            let mut sums = [_mm512_setzero_si512(); T];
            for half in 0..2 {
                let l = load512(&x[64 * half..]);
                let qh = load256(&x[128 + 32 * half..]);
                // [qh, qh >> 2]: the high bits of the elements l and l + 32.
                let qh =
                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(qh), _mm256_srli_epi16::<2>(qh));
                let codes = [
                    _mm512_or_si512(
                        _mm512_and_si512(l, low),
                        _mm512_and_si512(_mm512_slli_epi16::<4>(qh), hi2),
                    ),
                    _mm512_or_si512(
                        _mm512_and_si512(_mm512_srli_epi16::<4>(l), low),
                        _mm512_and_si512(qh, hi2),
                    ),
                ];
                for (j, u) in codes.into_iter().enumerate() {
                    // Elements 128 half + 64 j.., sub-blocks 8 half + 4 j.. (16 each, 8 i16
                    // lanes of the pair sums each).
                    let s0 = (8 * half + 4 * j) as i16;
                    let idx = _mm512_set_epi16(
                        s0 + 3,
                        s0 + 3,
                        s0 + 3,
                        s0 + 3,
                        s0 + 3,
                        s0 + 3,
                        s0 + 3,
                        s0 + 3,
                        s0 + 2,
                        s0 + 2,
                        s0 + 2,
                        s0 + 2,
                        s0 + 2,
                        s0 + 2,
                        s0 + 2,
                        s0 + 2,
                        s0 + 1,
                        s0 + 1,
                        s0 + 1,
                        s0 + 1,
                        s0 + 1,
                        s0 + 1,
                        s0 + 1,
                        s0 + 1,
                        s0,
                        s0,
                        s0,
                        s0,
                        s0,
                        s0,
                        s0,
                        s0,
                    );
                    let sc = _mm512_permutexvar_epi16(idx, sc16z);
                    for (t, sum) in sums.iter_mut().enumerate() {
                        let off = y(t) + Q8K_QS + 128 * half + 64 * j;
                        let qa = load512(&a[off..]);
                        let d = _mm512_madd_epi16(_mm512_maddubs_epi16(u, qa), sc);
                        *sum = _mm512_add_epi32(*sum, d);
                    }
                }
            }
            // Σ sc · (q − 32) · a = Σ sc · q · a − 32 · Σ sc · bsums.
            for (t, sum) in sums.iter_mut().enumerate() {
                let bsums = load256(&a[y(t) + Q8K_BSUMS..]);
                let corr = _mm256_slli_epi32::<5>(_mm256_madd_epi16(sc16, bsums));
                *sum = _mm512_sub_epi32(*sum, _mm512_zextsi256_si512(corr));
            }
            let isum = _mm_cvtepi32_ps(reduce4(sums));
            let d_w = _mm_set1_ps(h(half::f16::from_le_bytes([x[208], x[209]])));
            *acc = _mm_fmadd_ps(_mm_mul_ps(isum, d_w), d_tok, *acc);
        }
    }
    let res: [[f32; 4]; R] = std::array::from_fn(|r| lanes(acc[r]));
    store(&res, out);
}

fn q6_k_tiled(n: usize, w: &[u8], ws: usize, a: &[u8], as_: usize, out: &mut [f32]) {
    // SAFETY: reachable only through `kernel()`, whose caller guarantees the CPU has
    // avx512f/bw/vl/vnni, avx2, fma and f16c.
    unsafe { tile_q6_k_tiled(n, w, ws, a, as_, out) }
}

/// The tile for the Q6_K tiled order.
///
/// # Safety
/// The returned function executes AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C instructions: call
/// only on a CPU that has them.
pub(super) unsafe fn q6_k_tiled_kernel() -> GemmKernel {
    GemmKernel {
        rows: R,
        tokens: T,
        run: q6_k_tiled,
    }
}
