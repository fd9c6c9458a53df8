//! AVX2 + FMA + F16C kernels: ports of the `__AVX2__` branches of ggml's
//! `ggml-cpu/arch/x86/quants.c`. Each kernel computes the same integer sums per block as its
//! scalar twin in `scalar.rs`; the float sums keep ggml's SIMD order (per-lane accumulators,
//! FMA), so results differ from the scalar kernel only by rounding.
//!
//! Kernels read blocks straight from the byte rows (unaligned loads, so no copy for misaligned
//! rows) and, like the scalar ones, use the whole blocks present, up to `n` elements.
//! They are safe `#[target_feature]` functions; [`kernels`] hands out safe wrappers and is
//! `unsafe` itself, because calling them on a CPU without these features is undefined.

use super::VecDot;
use core::arch::x86_64::*;
use ggml_compat::{GgmlType, QK_K};

mod floats;
mod k_quants;
mod legacy;

pub(super) const QK: usize = 32;

/// Byte sizes of the blocks read here, from ggml-compat's `#[repr(C)]` twins of ggml-common.h
/// (field offsets are spelled out at each use, in comments where not obvious).
mod sizes {
    use ggml_compat::blocks::*;
    use std::mem::size_of;
    pub(in crate::kernels) const Q4_0: usize = size_of::<BlockQ4_0>();
    pub(in crate::kernels) const Q4_1: usize = size_of::<BlockQ4_1>();
    pub(in crate::kernels) const Q5_0: usize = size_of::<BlockQ5_0>();
    pub(in crate::kernels) const Q5_1: usize = size_of::<BlockQ5_1>();
    pub(in crate::kernels) const Q8_0: usize = size_of::<BlockQ8_0>();
    pub(in crate::kernels) const Q8_1: usize = size_of::<BlockQ8_1>();
    pub(in crate::kernels) const Q2K: usize = size_of::<BlockQ2K>();
    pub(in crate::kernels) const Q3K: usize = size_of::<BlockQ3K>();
    pub(in crate::kernels) const Q4K: usize = size_of::<BlockQ4K>();
    pub(in crate::kernels) const Q5K: usize = size_of::<BlockQ5K>();
    pub(in crate::kernels) const Q6K: usize = size_of::<BlockQ6K>();
    pub(in crate::kernels) const Q8K: usize = size_of::<BlockQ8K>();
    pub(in crate::kernels) const IQ4NL: usize = size_of::<BlockIQ4NL>();
    pub(in crate::kernels) const IQ4XS: usize = size_of::<BlockIQ4XS>();
    pub(in crate::kernels) const TQ1_0: usize = size_of::<BlockTQ1_0>();
    pub(in crate::kernels) const TQ2_0: usize = size_of::<BlockTQ2_0>();
    pub(in crate::kernels) const MXFP4: usize = size_of::<BlockMXFP4>();
    pub(in crate::kernels) const Q1_0: usize = size_of::<BlockQ1_0>();
    pub(in crate::kernels) const Q2_0: usize = size_of::<BlockQ2_0>();
    /// Offsets inside a Q8_K block (`d: f32`, `qs: [i8; 256]`, `bsums: [i16; 16]`).
    pub(in crate::kernels) const Q8K_QS: usize = std::mem::offset_of!(BlockQ8K, qs);
    pub(in crate::kernels) const Q8K_BSUMS: usize = std::mem::offset_of!(BlockQ8K, bsums);
}
pub(super) use sizes::*;

// ---------------------------------------------------------------------------------------------
// Helpers (ggml's names).

/// 32 bytes starting at `b[0]`. Panics if `b` is shorter (callers pass constant ranges of
/// fixed-size blocks, so the check folds away).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load256(b: &[u8]) -> __m256i {
    let b: &[u8; 32] = b[..32].try_into().unwrap();
    // SAFETY: `b` is 32 readable bytes; the load is unaligned.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

/// 16 bytes starting at `b[0]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load128(b: &[u8]) -> __m128i {
    let b: &[u8; 16] = b[..16].try_into().unwrap();
    // SAFETY: `b` is 16 readable bytes; the load is unaligned.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

/// The little-endian f16s at `b[0..2]` and `c[0..2]`, converted (F16C, exact), multiplied.
///
/// The two halves are combined in a general register and moved with `vmovd`, which clears the
/// vector register: converting one f16 at a time lets LLVM insert it into a register of
/// undefined contents (`vpinsrw`), which it picked to be the loop's accumulator, chaining every
/// block's scale onto the previous block's sum (measured: 4x slower Q8_0).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn fp16_mul(b: &[u8], c: &[u8]) -> f32 {
    let bits = u32::from_le_bytes([b[0], b[1], c[0], c[1]]);
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32));
    _mm_cvtss_f32(_mm_mul_ss(v, _mm_movehdup_ps(v)))
}

/// The little-endian f16s at `b[0..2]`, `c[0..2]`, `e[0..2]`, `f[0..2]`, converted in one go:
/// lane 0 is `b * c` and lane 2 is `e * f` (see [`fp16_mul`] on why one move).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn fp16_mul2(b: &[u8], c: &[u8], e: &[u8], f: &[u8]) -> __m128 {
    let bits = u64::from_le_bytes([b[0], b[1], c[0], c[1], e[0], e[1], f[0], f[1]]);
    let v = _mm_cvtph_ps(_mm_cvtsi64_si128(bits as i64));
    _mm_mul_ps(v, _mm_movehdup_ps(v))
}

/// The little-endian f16 at `b[0..2]` as f32, broadcast from memory (no false dependency,
/// see [`fp16_mul`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn fp16(b: &[u8]) -> f32 {
    let v = _mm_set1_epi16(i16::from_le_bytes([b[0], b[1]]));
    _mm_cvtss_f32(_mm_cvtph_ps(v))
}

/// The two little-endian f16s at `b[0..4]` as f32s (one `vmovd`, see [`fp16_mul`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn fp16x2(b: &[u8]) -> (f32, f32) {
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from_le_bytes([
        b[0], b[1], b[2], b[3],
    ])));
    (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
}

/// The little-endian f32 at `b[0..4]`.
#[inline]
pub(super) fn f32_at(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// ggml's `hsum_float_8`: horizontal sum of 8 floats, high half onto low half first.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum_float_8(x: __m256) -> f32 {
    let mut res = _mm256_extractf128_ps::<1>(x);
    res = _mm_add_ps(res, _mm256_castps256_ps128(x));
    res = _mm_add_ps(res, _mm_movehl_ps(res, res));
    res = _mm_add_ss(res, _mm_movehdup_ps(res));
    _mm_cvtss_f32(res)
}

/// ggml's `bytes_from_nibbles_32`: 16 bytes → 32 values in 0..16, low nibbles first.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn bytes_from_nibbles_32(qs: &[u8]) -> __m256i {
    let tmp = load128(qs);
    let bytes = _mm256_set_m128i(_mm_srli_epi16::<4>(tmp), tmp);
    _mm256_and_si256(bytes, _mm256_set1_epi8(0xF))
}

/// ggml's `bytes_from_bits_32`: the 32 bits of `qh[0..4]` → 32 bytes, 0xFF where set.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn bytes_from_bits_32(qh: &[u8]) -> __m256i {
    let x32 = i32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let shuf = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x32), shuf);
    let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
    _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
}

/// ggml's `mul_sum_us8_pairs_float`: unsigned `ax` times signed `sy`, each group of four
/// products summed to an i32, as 8 floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn mul_sum_us8_pairs_float(ax: __m256i, sy: __m256i) -> __m256 {
    let dot = _mm256_maddubs_epi16(ax, sy);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_set1_epi16(1), dot))
}

/// ggml's `mul_sum_i8_pairs_float`: signed `x` times signed `y` via `|x| * (y * sign x)`.
/// Exact for quants in -127..=127 (what ggml's quantizers produce); like ggml's, a pair of
/// -128s overflows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn mul_sum_i8_pairs_float(x: __m256i, y: __m256i) -> __m256 {
    let ax = _mm256_sign_epi8(x, x);
    let sy = _mm256_sign_epi8(y, x);
    mul_sum_us8_pairs_float(ax, sy)
}

/// The Q4_K / Q5_K scale words as ggml's SIMD code unpacks them (`utmp`): words 0..2 hold the
/// eight 6-bit scales, words 2..4 the eight 6-bit mins.
#[inline]
pub(super) fn k4_utmp(packed: &[u8]) -> [u32; 4] {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    let word =
        |i: usize| u32::from_le_bytes([packed[i], packed[i + 1], packed[i + 2], packed[i + 3]]);
    let (u0, u1, u2) = (word(0), word(4), word(8));
    [
        u0 & KMASK1,
        (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4),
        u1 & KMASK1,
        ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4),
    ]
}

/// ggml's `mul_add_epi8`: signed `x` times signed `y`, adjacent pairs summed to i16
/// (`|x| * (y * sign x)`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn mul_add_epi8(x: __m256i, y: __m256i) -> __m256i {
    _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
}

/// `kvalues_iq4nl` (ggml-common.h) as a byte-shuffle table.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn iq4nl_values() -> __m128i {
    _mm_setr_epi8(
        -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
    )
}

/// 16 nibble bytes at `qs[0..16]` → the 32 table values `values[nibble]`, low nibbles first
/// (ggml's IQ4_NL/IQ4_XS/MXFP4 `_mm_shuffle_epi8(values128, ...)`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn lookup_nibbles_32(values: __m128i, qs: &[u8]) -> __m256i {
    let q4bits = load128(qs);
    let m4b = _mm_set1_epi8(0xF);
    _mm256_set_m128i(
        _mm_shuffle_epi8(values, _mm_and_si128(_mm_srli_epi16::<4>(q4bits), m4b)),
        _mm_shuffle_epi8(values, _mm_and_si128(q4bits, m4b)),
    )
}

/// Whole blocks of both rows, at most `n / block_len` of them.
#[inline]
pub(super) fn blocks<'a, const W: usize, const A: usize>(
    n: usize,
    block_len: usize,
    w: &'a [u8],
    a: &'a [u8],
) -> impl Iterator<Item = (&'a [u8; W], &'a [u8; A])> {
    let (x, _) = w.as_chunks::<W>();
    let (y, _) = a.as_chunks::<A>();
    x.iter().zip(y).take(n / block_len)
}

// ---------------------------------------------------------------------------------------------
// The table.

/// Declares a safe wrapper per kernel and the list [`kernels`] returns.
macro_rules! kernel_list {
    ($($ty:ident => $module:ident :: $kernel:ident),* $(,)?) => {
        mod wrappers {
            $(
                pub(super) fn $kernel(n: usize, w: &[u8], a: &[u8]) -> f32 {
                    // SAFETY: this wrapper is reachable only through `kernels()`, whose caller
                    // guarantees the CPU has avx2, fma and f16c.
                    unsafe { super::$module::$kernel(n, w, a) }
                }
            )*
        }
        const KERNELS: &[(GgmlType, VecDot)] = &[$((GgmlType::$ty, wrappers::$kernel as VecDot)),*];
    };
}

kernel_list!(
    Q4_0 => legacy::vec_dot_q4_0_q8_0,
    Q4_1 => legacy::vec_dot_q4_1_q8_1,
    Q5_0 => legacy::vec_dot_q5_0_q8_0,
    Q5_1 => legacy::vec_dot_q5_1_q8_1,
    Q8_0 => legacy::vec_dot_q8_0_q8_0,
    Q4_K => k_quants::vec_dot_q4_k_q8_k,
    Q6_K => k_quants::vec_dot_q6_k_q8_k,
    F16 => floats::vec_dot_f16,
    F32 => floats::vec_dot_f32,
    BF16 => floats::vec_dot_bf16,
    Q2_K => k_quants::vec_dot_q2_k_q8_k,
    Q3_K => k_quants::vec_dot_q3_k_q8_k,
    Q5_K => k_quants::vec_dot_q5_k_q8_k,
    IQ4_XS => k_quants::vec_dot_iq4_xs_q8_k,
    TQ2_0 => k_quants::vec_dot_tq2_0_q8_k,
    IQ4_NL => legacy::vec_dot_iq4_nl_q8_0,
    MXFP4 => legacy::vec_dot_mxfp4_q8_0,
    Q1_0 => legacy::vec_dot_q1_0_q8_0,
    Q2_0 => legacy::vec_dot_q2_0_q8_0,
    TQ1_0 => k_quants::vec_dot_tq1_0_q8_k,
);

/// `repack::vec_dot_q4_k_q8_k_gemv` (ggml's `ggml_gemv_q4_K_8x8_q8_K` order) in AVX2, bit for
/// bit the portable version, or `None` if this CPU lacks AVX2, FMA or F16C.
pub(super) fn q4_k_gemv() -> Option<VecDot> {
    fn wrapper(n: usize, w: &[u8], a: &[u8]) -> f32 {
        // SAFETY: handed out below only when the CPU has avx2, fma and f16c.
        unsafe { k_quants::vec_dot_q4_k_q8_k_gemv(n, w, a) }
    }
    static K: std::sync::OnceLock<Option<VecDot>> = std::sync::OnceLock::new();
    *K.get_or_init(|| super::Isa::Avx2.is_available().then_some(wrapper as VecDot))
}

/// The AVX2 kernels, by weight type (each has the `vec_dot_type` of the scalar table).
///
/// # Safety
/// The functions execute AVX2, FMA and F16C instructions: call only after checking the CPU has
/// them (`is_x86_feature_detected!`), as `KernelTable::build` does.
pub(super) unsafe fn kernels() -> &'static [(GgmlType, VecDot)] {
    KERNELS
}

#[cfg(test)]
mod tests {
    use crate::kernels::{quantize_activations, repack};
    use ggml_compat::quant::quantize_row;
    use ggml_compat::GgmlType;

    /// The AVX2 Q4_K gemv equals the portable one bit for bit (1–6 super-blocks, rows with
    /// outliers that push scales and mins to their 6-bit ends).
    #[test]
    fn q4_k_gemv_equals_portable_bit_for_bit() {
        let Some(k) = super::q4_k_gemv() else { return };
        let mut seed = 0xdead_beefu32;
        let mut next = || crate::testing::xorshift(&mut seed) * 8.0;
        for blocks in 1..=6usize {
            let n = 256 * blocks;
            for row in 0..8 {
                let w: Vec<f32> = (0..n)
                    .map(|i| match row % 4 {
                        1 if i % 37 == 0 => 300.0,
                        2 => next().abs() + 1.0,
                        _ => next() * next(),
                    })
                    .collect();
                let a: Vec<f32> = (0..n).map(|_| next() * next()).collect();
                let mut wq = vec![0u8; GgmlType::Q4_K.row_bytes(n as u64).unwrap() as usize];
                quantize_row(GgmlType::Q4_K, &w, &mut wq, None).unwrap();
                let mut aq = vec![0u8; GgmlType::Q8_K.row_bytes(n as u64).unwrap() as usize];
                quantize_activations(GgmlType::Q8_K, &a, n, &mut aq).unwrap();
                let (got, want) = (
                    k(n, &wq, &aq),
                    repack::vec_dot_q4_k_q8_k_gemv_portable(n, &wq, &aq),
                );
                assert_eq!(got.to_bits(), want.to_bits(), "{blocks} blocks, row {row}");
            }
        }
    }
}
