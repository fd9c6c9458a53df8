//! AVX-512 VNNI multi-row gemv for Q4_1, Q8_0, Q2_0 and F16 (one token): `R` rows' vec_dots of
//! `x86_avx512.rs` run side by side, each row with its own accumulator, so each row's float
//! operations are exactly its vec_dot's (bit-identical) while the `R` dependency chains overlap.
//! The activation block pair is loaded and joined once for all rows.

use crate::kernels::gemm::GemmKernel;
use crate::kernels::x86_avx2::{bytes_from_nibbles_32, fp16, fp16_mul, load128, load256};
use crate::kernels::x86_avx2::{Q2_0, Q4_1, Q8_0, Q8_1, QK};
use crate::kernels::x86_avx512::{
    dot_i8_256, dot_i8_512, fma_2_blocks, hsum8, join256, nibbles_2x32, reduce_four,
};
use core::arch::x86_64::*;
use ggml_compat::GgmlType;

/// The first `nb` blocks of `B` bytes of each of the `R` rows starting every `ws` bytes of `w`.
#[inline]
fn row_blocks<const R: usize, const B: usize>(w: &[u8], ws: usize, nb: usize) -> [&[[u8; B]]; R] {
    std::array::from_fn(|r| w[r * ws..][..nb * B].as_chunks::<B>().0)
}

/// The f16 pairs at `b0[0..4]` and `b1[0..4]` (a block's `d` and `m`, or `d` and `s`) as
/// four f32 lanes `[d0, m0, d1, m1]`, converted in one go.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn f16_pairs(b0: &[u8], b1: &[u8]) -> __m128 {
    let bits = u64::from_le_bytes([b0[0], b0[1], b0[2], b0[3], b1[0], b1[1], b1[2], b1[3]]);
    _mm_cvtph_ps(_mm_cvtsi64_si128(bits as i64))
}

/// `R` rows of [`crate::kernels::x86_avx512`]'s `vec_dot_q4_1_q8_1` (ggml's AVX2
/// `ggml_vec_dot_q4_1_q8_1`) against one Q8_1 activation row: `out[r]` for row `r`. The scale
/// products `d_x · d_y` and `m · s` of two blocks come from one conversion and one multiply
/// (`[d0, m0, d1, m1] · [dy0, s0, dy1, s1]`, the same f32 products as the vec_dot's scalar ones).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q4_1_rows<const R: usize>(n: usize, w: &[u8], ws: usize, a: &[u8], _as: usize, out: &mut [f32]) {
    let nb = n / QK;
    let y = &a[..nb * Q8_1].as_chunks::<Q8_1>().0;
    let x = row_blocks::<R, Q4_1>(w, ws, nb);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut summs = [0f32; R];
    for i in (0..nb / 2).map(|p| 2 * p) {
        let (y0, y1) = (&y[i], &y[i + 1]);
        let qy = join256(load256(&y0[4..]), load256(&y1[4..]));
        let ys = f16_pairs(y0, y1);
        for r in 0..R {
            let (x0, x1) = (&x[r][i], &x[r][i + 1]);
            let qx = nibbles_2x32(&x0[4..], &x1[4..]);
            // [d0·dy0, m0·s0, d1·dy1, m1·s1]
            let p = _mm_mul_ps(f16_pairs(x0, x1), ys);
            let hi = _mm_movehl_ps(p, p);
            summs[r] += _mm_cvtss_f32(_mm_movehdup_ps(p));
            summs[r] += _mm_cvtss_f32(_mm_movehdup_ps(hi));
            let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), qx, qy);
            let f = _mm512_cvtepi32_ps(dot);
            let lo_f = _mm512_castps512_ps256(f);
            let hi_f = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(f)));
            acc[r] = _mm256_fmadd_ps(_mm256_broadcastss_ps(p), lo_f, acc[r]);
            acc[r] = _mm256_fmadd_ps(_mm256_broadcastss_ps(hi), hi_f, acc[r]);
        }
    }
    if nb % 2 == 1 {
        let y = &y[nb - 1];
        let qy = load256(&y[4..]);
        for r in 0..R {
            let x = &x[r][nb - 1];
            summs[r] += fp16_mul(&x[2..], &y[2..]);
            let qx = bytes_from_nibbles_32(&x[4..]);
            let dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), qx, qy);
            let d = _mm256_set1_ps(fp16_mul(x, y));
            acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot), acc[r]);
        }
    }
    for r in 0..R {
        out[r] = hsum8(acc[r]) + summs[r];
    }
}

/// `R` rows of [`crate::kernels::x86_avx512`]'s `vec_dot_q8_0_q8_0` (ggml's AVX2
/// `ggml_vec_dot_q8_0_q8_0`) against one Q8_0 activation row.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q8_0_rows<const R: usize>(n: usize, w: &[u8], ws: usize, a: &[u8], _as: usize, out: &mut [f32]) {
    let nb = n / QK;
    let y = &a[..nb * Q8_0].as_chunks::<Q8_0>().0;
    let x = row_blocks::<R, Q8_0>(w, ws, nb);
    let mut acc = [_mm256_setzero_ps(); R];
    for i in (0..nb / 2).map(|p| 2 * p) {
        let (y0, y1) = (&y[i], &y[i + 1]);
        let qy = join256(load256(&y0[2..]), load256(&y1[2..]));
        for r in 0..R {
            let (x0, x1) = (&x[r][i], &x[r][i + 1]);
            let qx = join256(load256(&x0[2..]), load256(&x1[2..]));
            let (d0, d1) = (fp16_mul(x0, y0), fp16_mul(x1, y1));
            acc[r] = fma_2_blocks(acc[r], d0, d1, dot_i8_512(qx, qy));
        }
    }
    if nb % 2 == 1 {
        let y = &y[nb - 1];
        let qy = load256(&y[2..]);
        for r in 0..R {
            let x = &x[r][nb - 1];
            let dot = dot_i8_256(load256(&x[2..]), qy);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(fp16_mul(x, y)), dot, acc[r]);
        }
    }
    for r in 0..R {
        out[r] = hsum8(acc[r]);
    }
}

/// `R` rows of `x86_avx2::legacy::vec_dot_q2_0_q8_0` (kiln's AVX2 Q2_0 kernel, which the AVX-512
/// table uses too) against one Q8_0 activation row. That kernel's 8 lanes per Q8_0 block sum the
/// elements `16h + s + {0, 4, 8, 12}` (planar codes, activations shuffled to match); here one
/// 512-bit `vpdpbusd` of the unsigned codes covers both Q8_0 blocks of a Q2_0 block with the
/// same lanes, starting from `−Σ y` of each lane (shared by all rows), so each lane is the same
/// exact integer `Σ (q − 1) · y`, and the floats follow as [`fma_2_blocks`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q2_0_rows<const R: usize>(n: usize, w: &[u8], ws: usize, a: &[u8], _as: usize, out: &mut [f32]) {
    let nb = n / 64;
    let y = &a[..2 * nb * Q8_0].as_chunks::<Q8_0>().0;
    let x = row_blocks::<R, Q2_0>(w, ws, nb);
    // Byte 4s + b of a 128-bit half takes element 4b + s of that half (as the vec_dot).
    let order = _mm256_setr_epi8(
        0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, 0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10,
        14, 3, 7, 11, 15,
    );
    // 128-bit lane i takes code word i: Q8_0 block 0's low and high half, then block 1's.
    let spread = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    let shifts = _mm512_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6, 0, 2, 4, 6, 0, 2, 4, 6);
    let (m3, ones, zero) = (
        _mm512_set1_epi8(3),
        _mm512_set1_epi8(1),
        _mm512_setzero_si512(),
    );
    let mut acc = [_mm256_setzero_ps(); R];
    for i in 0..nb {
        let (y0, y1) = (&y[2 * i], &y[2 * i + 1]);
        let q8 = join256(
            _mm256_shuffle_epi8(load256(&y0[2..]), order),
            _mm256_shuffle_epi8(load256(&y1[2..]), order),
        );
        let start = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, ones, q8));
        let (dy0, dy1) = (fp16(y0), fp16(y1));
        for r in 0..R {
            let xb = &x[r][i];
            let words = _mm512_permutexvar_epi32(spread, _mm512_castsi128_si512(load128(&xb[2..])));
            let codes = _mm512_and_si512(_mm512_srlv_epi32(words, shifts), m3);
            let dx = fp16(xb);
            let dot = _mm512_dpbusd_epi32(start, codes, q8);
            acc[r] = fma_2_blocks(acc[r], dx * dy0, dx * dy1, dot);
        }
    }
    for r in 0..R {
        out[r] = hsum8(acc[r]);
    }
}

/// `R` rows of [`crate::kernels::x86_avx512`]'s `vec_dot_f16` (ggml's `ggml_vec_dot_f16` with
/// AVX-512 `GGML_SIMD`: four 16-lane accumulators over steps of 64, `GGML_F32x16_REDUCE`, the
/// tail in f64) against one F16 activation row; each row keeps its own four accumulators, the
/// activations are converted once for all rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn f16_rows<const R: usize>(n: usize, w: &[u8], ws: usize, a: &[u8], _as: usize, out: &mut [f32]) {
    let n = n.min(a.len() / 2);
    let np = n / 64 * 64;
    let x: [&[u8]; R] = std::array::from_fn(|r| &w[r * ws..][..2 * n]);
    let y = &a[..2 * n];
    let mut sum = [[_mm512_setzero_ps(); 4]; R];
    for i in (0..np).step_by(64) {
        let yv: [__m512; 4] =
            std::array::from_fn(|j| _mm512_cvtph_ps(load256(&y[2 * (i + 16 * j)..])));
        for (x, sum) in x.iter().zip(&mut sum) {
            for (j, (s, yv)) in sum.iter_mut().zip(yv).enumerate() {
                let xv = _mm512_cvtph_ps(load256(&x[2 * (i + 16 * j)..]));
                *s = _mm512_fmadd_ps(xv, yv, *s);
            }
        }
    }
    for ((x, sum), out) in x.iter().zip(sum).zip(out) {
        let mut sumf = reduce_four(sum) as f64;
        for i in np..n {
            let xv = half::f16::from_le_bytes([x[2 * i], x[2 * i + 1]]).to_f32();
            let yv = half::f16::from_le_bytes([y[2 * i], y[2 * i + 1]]).to_f32();
            sumf += (xv * yv) as f64;
        }
        *out = sumf as f32;
    }
}

/// Declares a safe wrapper per instantiation.
macro_rules! wrappers {
    ($($name:ident => $f:ident :: <$r:literal>),* $(,)?) => {
        $(
            fn $name(n: usize, w: &[u8], ws: usize, a: &[u8], as_: usize, out: &mut [f32]) {
                // SAFETY: reachable only through `kernel()`, whose caller guarantees the CPU has
                // avx512f/bw/vl/vnni, avx2, fma and f16c.
                unsafe { $f::<$r>(n, w, ws, a, as_, out) }
            }
        )*
    };
}

wrappers!(
    q4_1_x2 => q4_1_rows::<2>,
    q4_1_x4 => q4_1_rows::<4>,
    q8_0_x2 => q8_0_rows::<2>,
    q8_0_x4 => q8_0_rows::<4>,
    q4_1_x8 => q4_1_rows::<8>,
    q8_0_x8 => q8_0_rows::<8>,
    q2_0_x2 => q2_0_rows::<2>,
    q2_0_x4 => q2_0_rows::<4>,
    q2_0_x8 => q2_0_rows::<8>,
    f16_x2 => f16_rows::<2>,
    f16_x4 => f16_rows::<4>,
);

/// The `rows`-row gemv of weight type `ty`, if this file has one.
///
/// # Safety
/// The returned function executes AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C instructions: call
/// only on a CPU that has them.
pub(super) unsafe fn kernel(ty: GgmlType, rows: usize) -> Option<GemmKernel> {
    let run = match (ty, rows) {
        (GgmlType::Q4_1, 2) => q4_1_x2,
        (GgmlType::Q4_1, 4) => q4_1_x4,
        (GgmlType::Q8_0, 2) => q8_0_x2,
        (GgmlType::Q8_0, 4) => q8_0_x4,
        (GgmlType::Q4_1, 8) => q4_1_x8,
        (GgmlType::Q8_0, 8) => q8_0_x8,
        (GgmlType::Q2_0, 2) => q2_0_x2,
        (GgmlType::Q2_0, 4) => q2_0_x4,
        (GgmlType::Q2_0, 8) => q2_0_x8,
        (GgmlType::F16, 2) => f16_x2,
        (GgmlType::F16, 4) => f16_x4,
        _ => return None,
    };
    Some(GemmKernel {
        rows,
        tokens: 1,
        run,
    })
}
