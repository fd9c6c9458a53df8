//! AVX-512 (F/BW/VL) + VNNI kernels for the float and the common integer types (the rest keep
//! their AVX2 kernels in the AVX-512 table). ggml has no AVX-512 kernels of its own for most of
//! these (its AVX2 code only swaps in `vpdpbusd` when built with
//! `__AVX512VNNI__`), so these are kiln's: the same integer sums per block as the scalar twins,
//! computed 64 bytes at a time with `_mm512_dpbusd_epi32`, and the float sums in yet another
//! order — which the tests bound like ggml's.
//!
//! Legacy 32-element blocks go two per iteration (an odd last block takes the 256-bit VNNI
//! path); K-quant super-blocks 64 elements per `vpdpbusd`, the per-group scales applied with an
//! integer multiply. Every kernel kept here beat its AVX2 twin in `time_per_row`
//! (tests/kernels_simd.rs); see the numbers in the commit that added it.

use super::x86_avx2::{
    blocks, bytes_from_nibbles_32, f32_at, fp16_mul, fp16x2, iq4nl_values, k4_utmp, load128,
    load256, lookup_nibbles_32, IQ4NL, Q4K, Q4_0, Q4_1, Q5K, Q5_0, Q5_1, Q6K, Q8K, Q8K_BSUMS,
    Q8K_QS, Q8_0, Q8_1, QK,
};
use super::VecDot;
use core::arch::x86_64::*;
use ggml_compat::GgmlType;

mod k_quants;
use k_quants::*;

// ---------------------------------------------------------------------------------------------
// Helpers.

/// 64 bytes starting at `b[0]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load512(b: &[u8]) -> __m512i {
    let b: &[u8; 64] = b[..64].try_into().unwrap();
    // SAFETY: `b` is 64 readable bytes; the load is unaligned.
    unsafe { _mm512_loadu_si512(b.as_ptr().cast()) }
}

/// Two 32-byte halves into one register, `lo` in the low half.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn join256(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// The 16-byte nibble arrays at `q0[0..16]` and `q1[0..16]` → 64 values in 0..16: block 0's low
/// nibbles, its high nibbles, then block 1's (the order of two consecutive Q8 blocks).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn nibbles_2x32(q0: &[u8], q1: &[u8]) -> __m512i {
    let t = _mm256_set_m128i(load128(q1), load128(q0));
    // [q0, q1, q0 >> 4, q1 >> 4] → [q0, q0 >> 4, q1, q1 >> 4]
    let z = join256(t, _mm256_srli_epi16::<4>(t));
    let z = _mm512_shuffle_i64x2::<0b11_01_10_00>(z, z);
    _mm512_and_si512(z, _mm512_set1_epi8(0xF))
}

/// Signed `x` times signed `y`, each group of four products summed into an i32 lane:
/// `|x| * (y * sign x)` as `vpdpbusd` needs an unsigned operand (exact for quants in
/// -127..=127, as [`super::x86_avx2::mul_sum_i8_pairs_float`]).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dot_i8_512(x: __m512i, y: __m512i) -> __m512i {
    let ax = _mm512_abs_epi8(x);
    let sy = _mm512_mask_sub_epi8(y, _mm512_movepi8_mask(x), _mm512_setzero_si512(), y);
    _mm512_dpbusd_epi32(_mm512_setzero_si512(), ax, sy)
}

/// The 256-bit [`dot_i8_512`], as floats.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dot_i8_256(x: __m256i, y: __m256i) -> __m256 {
    let ax = _mm256_sign_epi8(x, x);
    let sy = _mm256_sign_epi8(y, x);
    _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sy))
}

/// Lanes 0..8 = `v[0]`, lanes 8..16 = `v[i1]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn spread_2(v: __m128, i1: i32) -> __m512 {
    let idx = _mm512_set_epi32(i1, i1, i1, i1, i1, i1, i1, i1, 0, 0, 0, 0, 0, 0, 0, 0);
    _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(v))
}

/// Both rows cut to whole blocks, the same number of each, at most `n / block_len`.
#[inline]
fn rows<'a, const W: usize, const A: usize>(
    n: usize,
    block_len: usize,
    w: &'a [u8],
    a: &'a [u8],
) -> (&'a [[u8; W]], &'a [[u8; A]]) {
    let (x, _) = w.as_chunks::<W>();
    let (y, _) = a.as_chunks::<A>();
    let nb = (n / block_len).min(x.len()).min(y.len());
    (&x[..nb], &y[..nb])
}

// ---------------------------------------------------------------------------------------------
// 32-element blocks, two per iteration.

/// Q8_0 · Q8_0, the integer sums of `ggml_vec_dot_q8_0_q8_0`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn vec_dot_q8_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (x, y) = rows::<Q8_0, Q8_0>(n, QK, w, a);
    let mut acc = _mm512_setzero_ps();
    for (x, y) in x.chunks_exact(2).zip(y.chunks_exact(2)) {
        let qx = join256(load256(&x[0][2..]), load256(&x[1][2..]));
        let qy = join256(load256(&y[0][2..]), load256(&y[1][2..]));
        let d = _mm_setr_ps(fp16_mul(&x[0], &y[0]), fp16_mul(&x[1], &y[1]), 0.0, 0.0);
        let dot = _mm512_cvtepi32_ps(dot_i8_512(qx, qy));
        acc = _mm512_fmadd_ps(spread_2(d, 1), dot, acc);
    }
    let mut sum = _mm512_reduce_add_ps(acc);
    if x.len() % 2 == 1 {
        let (x, y) = (&x[x.len() - 1], &y[y.len() - 1]);
        let dot = dot_i8_256(load256(&x[2..]), load256(&y[2..]));
        sum += fp16_mul(x, y) * hsum8(dot);
    }
    sum
}

/// Horizontal sum of 8 floats.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn hsum8(v: __m256) -> f32 {
    super::x86_avx2::hsum_float_8(v)
}

/// The f16 pairs `(d, m)` of two Q4_1 blocks and `(d, s)` of their Q8_1 partners, converted
/// and multiplied: lanes 0 and 1 are `d·d` and `m·s` of the first pair, lanes 4 and 5 of the
/// second.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dm_products(x0: &[u8], y0: &[u8], x1: &[u8], y1: &[u8]) -> __m256 {
    let word = |b: &[u8]| i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let v = _mm256_cvtph_ps(_mm_setr_epi32(word(x0), word(y0), word(x1), word(y1)));
    _mm256_mul_ps(v, _mm256_permute_ps::<0b01_00_11_10>(v))
}

/// The sum of the `m·s` lanes (1 and 5) of accumulated [`dm_products`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn ms_terms(summs: __m256) -> f32 {
    let ms = _mm256_castps256_ps128(_mm256_permutevar8x32_ps(
        summs,
        _mm256_setr_epi32(1, 5, 0, 0, 0, 0, 0, 0),
    ));
    _mm_cvtss_f32(ms) + _mm_cvtss_f32(_mm_movehdup_ps(ms))
}

/// Q4_1 · Q8_1, the integer sums of `ggml_vec_dot_q4_1_q8_1`; `m·s` summed separately.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn vec_dot_q4_1_q8_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (x, y) = rows::<Q4_1, Q8_1>(n, QK, w, a);
    let mut acc = _mm512_setzero_ps();
    let mut summs = _mm256_setzero_ps();
    for (x, y) in x.chunks_exact(2).zip(y.chunks_exact(2)) {
        let qx = nibbles_2x32(&x[0][4..], &x[1][4..]);
        let qy = join256(load256(&y[0][4..]), load256(&y[1][4..]));
        let p = dm_products(&x[0], &y[0], &x[1], &y[1]);
        summs = _mm256_add_ps(summs, p);
        let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), qx, qy);
        let d = _mm512_permutexvar_ps(
            _mm512_set_epi32(4, 4, 4, 4, 4, 4, 4, 4, 0, 0, 0, 0, 0, 0, 0, 0),
            _mm512_castps256_ps512(p),
        );
        acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(dot), acc);
    }
    let mut sum = _mm512_reduce_add_ps(acc) + ms_terms(summs);
    if x.len() % 2 == 1 {
        let (x, y) = (&x[x.len() - 1], &y[y.len() - 1]);
        let qx = bytes_from_nibbles_32(&x[4..]);
        let dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), qx, load256(&y[4..]));
        sum += fp16_mul(x, y) * hsum8(_mm256_cvtepi32_ps(dot)) + fp16_mul(&x[2..], &y[2..]);
    }
    sum
}

/// Q5_0 · Q8_0, the integer sums of `ggml_vec_dot_q5_0_q8_0`: a clear fifth bit makes the
/// byte `nibble - 16` (OR 0xF0), selected by the 64-bit mask of both blocks' `qh`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn vec_dot_q5_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (x, y) = rows::<Q5_0, Q8_0>(n, QK, w, a);
    let mut acc = _mm512_setzero_ps();
    let high = _mm512_set1_epi8(0xF0u8 as i8);
    for (x, y) in x.chunks_exact(2).zip(y.chunks_exact(2)) {
        let nib = nibbles_2x32(&x[0][6..], &x[1][6..]);
        let qh = u64::from_le_bytes([
            x[0][2], x[0][3], x[0][4], x[0][5], x[1][2], x[1][3], x[1][4], x[1][5],
        ]);
        let qx = _mm512_mask_mov_epi8(_mm512_or_si512(nib, high), qh, nib);
        let qy = join256(load256(&y[0][2..]), load256(&y[1][2..]));
        let d = _mm_setr_ps(fp16_mul(&x[0], &y[0]), fp16_mul(&x[1], &y[1]), 0.0, 0.0);
        let dot = _mm512_cvtepi32_ps(dot_i8_512(qx, qy));
        acc = _mm512_fmadd_ps(spread_2(d, 1), dot, acc);
    }
    let mut sum = _mm512_reduce_add_ps(acc);
    if x.len() % 2 == 1 {
        let (x, y) = (&x[x.len() - 1], &y[y.len() - 1]);
        let nib = bytes_from_nibbles_32(&x[6..]);
        let qh = u32::from_le_bytes([x[2], x[3], x[4], x[5]]);
        let qx = _mm256_mask_mov_epi8(
            _mm256_or_si256(nib, _mm256_set1_epi8(0xF0u8 as i8)),
            qh,
            nib,
        );
        let dot = dot_i8_256(qx, load256(&y[2..]));
        sum += fp16_mul(x, y) * hsum8(dot);
    }
    sum
}

/// Q4_0 · Q8_0, the integer sums of `ggml_vec_dot_q4_0_q8_0`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn vec_dot_q4_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (x, y) = rows::<Q4_0, Q8_0>(n, QK, w, a);
    let mut acc = _mm512_setzero_ps();
    for (x, y) in x.chunks_exact(2).zip(y.chunks_exact(2)) {
        let qx = _mm512_sub_epi8(nibbles_2x32(&x[0][2..], &x[1][2..]), _mm512_set1_epi8(8));
        let qy = join256(load256(&y[0][2..]), load256(&y[1][2..]));
        let d = _mm_setr_ps(fp16_mul(&x[0], &y[0]), fp16_mul(&x[1], &y[1]), 0.0, 0.0);
        let dot = _mm512_cvtepi32_ps(dot_i8_512(qx, qy));
        acc = _mm512_fmadd_ps(spread_2(d, 1), dot, acc);
    }
    let mut sum = _mm512_reduce_add_ps(acc);
    if x.len() % 2 == 1 {
        let (x, y) = (&x[x.len() - 1], &y[y.len() - 1]);
        let qx = _mm256_sub_epi8(bytes_from_nibbles_32(&x[2..]), _mm256_set1_epi8(8));
        sum += fp16_mul(x, y) * hsum8(dot_i8_256(qx, load256(&y[2..])));
    }
    sum
}

/// Q5_1 · Q8_1, the integer sums of `ggml_vec_dot_q5_1_q8_1`: a set fifth bit adds 16.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn vec_dot_q5_1_q8_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (x, y) = rows::<Q5_1, Q8_1>(n, QK, w, a);
    let bit4 = _mm512_set1_epi8(0x10);
    let mut acc = _mm512_setzero_ps();
    let mut summs = _mm256_setzero_ps();
    for (x, y) in x.chunks_exact(2).zip(y.chunks_exact(2)) {
        let nib = nibbles_2x32(&x[0][8..], &x[1][8..]);
        let qh = u64::from_le_bytes([
            x[0][4], x[0][5], x[0][6], x[0][7], x[1][4], x[1][5], x[1][6], x[1][7],
        ]);
        let qx = _mm512_mask_mov_epi8(nib, qh, _mm512_or_si512(nib, bit4));
        let qy = join256(load256(&y[0][4..]), load256(&y[1][4..]));
        let p = dm_products(&x[0], &y[0], &x[1], &y[1]);
        summs = _mm256_add_ps(summs, p);
        let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), qx, qy);
        let d = _mm512_permutexvar_ps(
            _mm512_set_epi32(4, 4, 4, 4, 4, 4, 4, 4, 0, 0, 0, 0, 0, 0, 0, 0),
            _mm512_castps256_ps512(p),
        );
        acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(dot), acc);
    }
    let mut sum = _mm512_reduce_add_ps(acc) + ms_terms(summs);
    if x.len() % 2 == 1 {
        let (x, y) = (&x[x.len() - 1], &y[y.len() - 1]);
        let nib = bytes_from_nibbles_32(&x[8..]);
        let qh = u32::from_le_bytes([x[4], x[5], x[6], x[7]]);
        let qx = _mm256_mask_mov_epi8(nib, qh, _mm256_or_si256(nib, _mm256_set1_epi8(0x10)));
        let dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), qx, load256(&y[4..]));
        sum += fp16_mul(x, y) * hsum8(_mm256_cvtepi32_ps(dot)) + fp16_mul(&x[2..], &y[2..]);
    }
    sum
}

/// IQ4_NL · Q8_0, the integer sums of `ggml_vec_dot_iq4_nl_q8_0`: nibbles looked up in
/// `kvalues_iq4nl` with a 64-byte shuffle.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn vec_dot_iq4_nl_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (x, y) = rows::<IQ4NL, Q8_0>(n, QK, w, a);
    let values = _mm512_broadcast_i32x4(iq4nl_values());
    let mut acc = _mm512_setzero_ps();
    for (x, y) in x.chunks_exact(2).zip(y.chunks_exact(2)) {
        let qx = _mm512_shuffle_epi8(values, nibbles_2x32(&x[0][2..], &x[1][2..]));
        let qy = join256(load256(&y[0][2..]), load256(&y[1][2..]));
        let d = _mm_setr_ps(fp16_mul(&y[0], &x[0]), fp16_mul(&y[1], &x[1]), 0.0, 0.0);
        let dot = _mm512_cvtepi32_ps(dot_i8_512(qx, qy));
        acc = _mm512_fmadd_ps(spread_2(d, 1), dot, acc);
    }
    let mut sum = _mm512_reduce_add_ps(acc);
    if x.len() % 2 == 1 {
        let (x, y) = (&x[x.len() - 1], &y[y.len() - 1]);
        let qx = lookup_nibbles_32(iq4nl_values(), &x[2..]);
        sum += fp16_mul(y, x) * hsum8(dot_i8_256(qx, load256(&y[2..])));
    }
    sum
}

// ---------------------------------------------------------------------------------------------
// Plain floats: ggml's `GGML_SIMD` AVX-512 path (`STEP` 64 in four 16-lane accumulators,
// `GGML_F32x16_REDUCE`), the rest in f64.

/// Four 16-lane accumulators over 64 elements a step, `load(i)` giving elements `i..i + 16` of
/// each row; returns the f32 reduction and the number of elements consumed.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn four_acc_dot(n: usize, mut load: impl FnMut(usize) -> (__m512, __m512)) -> (f32, usize) {
    let np = n / 64 * 64;
    let mut sum = [_mm512_setzero_ps(); 4];
    for i in (0..np).step_by(64) {
        for (j, s) in sum.iter_mut().enumerate() {
            let (x, y) = load(i + 16 * j);
            *s = _mm512_fmadd_ps(x, y, *s);
        }
    }
    let a = _mm512_add_ps(sum[0], sum[2]);
    let b = _mm512_add_ps(sum[1], sum[3]);
    (_mm512_reduce_add_ps(_mm512_add_ps(a, b)), np)
}

/// F32 · F32. Matches `ggml_vec_dot_f32` with `GGML_SIMD` (AVX-512).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn vec_dot_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (x, _) = w.as_chunks::<4>();
    let (y, _) = a.as_chunks::<4>();
    let n = n.min(x.len()).min(y.len());
    let ld = |i: usize| {
        let xb = load512(x[i..i + 16].as_flattened());
        let yb = load512(y[i..i + 16].as_flattened());
        (_mm512_castsi512_ps(xb), _mm512_castsi512_ps(yb))
    };
    let (sum, np) = four_acc_dot(n, ld);
    let mut sumf = sum as f64;
    for i in np..n {
        sumf += (f32::from_le_bytes(x[i]) * f32::from_le_bytes(y[i])) as f64;
    }
    sumf as f32
}

/// F16 · F16. Matches `ggml_vec_dot_f16` with `GGML_SIMD` (AVX-512 + F16C conversions).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn vec_dot_f16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (x, _) = w.as_chunks::<2>();
    let (y, _) = a.as_chunks::<2>();
    let n = n.min(x.len()).min(y.len());
    let ld = |i: usize| {
        let xb = load256(x[i..i + 16].as_flattened());
        let yb = load256(y[i..i + 16].as_flattened());
        (_mm512_cvtph_ps(xb), _mm512_cvtph_ps(yb))
    };
    let (sum, np) = four_acc_dot(n, ld);
    let mut sumf = sum as f64;
    for i in np..n {
        let xv = half::f16::from_le_bytes(x[i]).to_f32();
        let yv = half::f16::from_le_bytes(y[i]).to_f32();
        sumf += (xv * yv) as f64;
    }
    sumf as f32
}

// ---------------------------------------------------------------------------------------------
// The table.

/// Declares a safe wrapper per kernel and the list [`kernels`] returns.
macro_rules! kernel_list {
    ($($ty:ident => $kernel:ident),* $(,)?) => {
        mod wrappers {
            $(
                pub(super) fn $kernel(n: usize, w: &[u8], a: &[u8]) -> f32 {
                    // SAFETY: this wrapper is reachable only through `kernels()`, whose caller
                    // guarantees the CPU has avx512f/bw/vl/vnni, avx2, fma and f16c.
                    unsafe { super::$kernel(n, w, a) }
                }
            )*
        }
        const KERNELS: &[(GgmlType, VecDot)] = &[$((GgmlType::$ty, wrappers::$kernel as VecDot)),*];
    };
}

kernel_list!(
    F32 => vec_dot_f32,
    F16 => vec_dot_f16,
    Q4_0 => vec_dot_q4_0_q8_0,
    Q4_1 => vec_dot_q4_1_q8_1,
    Q5_1 => vec_dot_q5_1_q8_1,
    IQ4_NL => vec_dot_iq4_nl_q8_0,
    IQ4_XS => vec_dot_iq4_xs_q8_k,
    Q5_0 => vec_dot_q5_0_q8_0,
    Q8_0 => vec_dot_q8_0_q8_0,
    Q2_K => vec_dot_q2_k_q8_k,
    Q3_K => vec_dot_q3_k_q8_k,
    Q4_K => vec_dot_q4_k_q8_k,
    Q5_K => vec_dot_q5_k_q8_k,
    Q6_K => vec_dot_q6_k_q8_k,
);

/// The AVX-512 kernels, by weight type (each has the `vec_dot_type` of the scalar table).
///
/// # Safety
/// The functions execute AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C instructions: call only after
/// checking the CPU has them (`is_x86_feature_detected!`), as `KernelTable::build` does.
pub(super) unsafe fn kernels() -> &'static [(GgmlType, VecDot)] {
    KERNELS
}
