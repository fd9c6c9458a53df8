//! AVX2 kernels for plain float rows: ggml's `GGML_SIMD` paths of `ggml_vec_dot_f32`,
//! `ggml_vec_dot_f16` (`ggml-cpu/vec.cpp`, F32/F16 `STEP` 32 in four 8-lane accumulators) and the
//! AVX2 branch of `ggml_vec_dot_bf16`; the elements past the last multiple of 32 are summed in f64
//! as ggml does.

use super::*;

/// Four accumulators of 8 lanes over 32 elements a step, `load(i)` giving elements `i..i + 8`
/// of each row; returns the f32 reduction and the number of elements consumed.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn four_acc_dot(n: usize, mut load: impl FnMut(usize) -> (__m256, __m256)) -> (f32, usize) {
    let np = n / 32 * 32;
    let mut sum = [_mm256_setzero_ps(); 4];
    for i in (0..np).step_by(32) {
        for (j, s) in sum.iter_mut().enumerate() {
            let (x, y) = load(i + 8 * j);
            *s = _mm256_fmadd_ps(x, y, *s);
        }
    }
    (reduce4(sum), np)
}

/// ggml's `GGML_F32x8_REDUCE`: halves added pairwise (0+2, 1+3, then 0+1), then across lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn reduce4(s: [__m256; 4]) -> f32 {
    let a = _mm256_add_ps(s[0], s[2]);
    let b = _mm256_add_ps(s[1], s[3]);
    let x = _mm256_add_ps(a, b);
    let t0 = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
    let t1 = _mm_hadd_ps(t0, t0);
    _mm_cvtss_f32(_mm_hadd_ps(t1, t1))
}

/// F32 · F32. Matches `ggml_vec_dot_f32` with `GGML_SIMD` (AVX2).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (x, _) = w.as_chunks::<4>();
    let (y, _) = a.as_chunks::<4>();
    let n = n.min(x.len()).min(y.len());
    let ld = |i: usize| {
        let (xb, yb): (&[u8], &[u8]) = (x[i..i + 8].as_flattened(), y[i..i + 8].as_flattened());
        let xb: &[u8; 32] = xb.try_into().unwrap();
        let yb: &[u8; 32] = yb.try_into().unwrap();
        // SAFETY: each is 32 readable bytes; the loads are unaligned.
        unsafe {
            (
                _mm256_loadu_ps(xb.as_ptr().cast()),
                _mm256_loadu_ps(yb.as_ptr().cast()),
            )
        }
    };
    let (sum, np) = four_acc_dot(n, ld);
    let mut sumf = sum as f64;
    for i in np..n {
        sumf += (f32::from_le_bytes(x[i]) * f32::from_le_bytes(y[i])) as f64;
    }
    sumf as f32
}

/// F16 · F16. Matches `ggml_vec_dot_f16` with `GGML_SIMD` (AVX2 + F16C).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_f16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (x, _) = w.as_chunks::<2>();
    let (y, _) = a.as_chunks::<2>();
    let n = n.min(x.len()).min(y.len());
    let ld = |i: usize| {
        let xb = load128(x[i..i + 8].as_flattened());
        let yb = load128(y[i..i + 8].as_flattened());
        (_mm256_cvtph_ps(xb), _mm256_cvtph_ps(yb))
    };
    let (sum, np) = four_acc_dot(n, ld);
    let mut sumf = sum as f64;
    for i in np..n {
        sumf += (half::f16::from_le_bytes(x[i]).to_f32() * half::f16::from_le_bytes(y[i]).to_f32())
            as f64;
    }
    sumf as f32
}

/// Eight bf16 (16 bytes) widened to f32 by shifting into the high half.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bf16x8(b: &[u8]) -> __m256 {
    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(load128(b))))
}

/// BF16 · BF16. Matches the AVX2 branch of `ggml_vec_dot_bf16`: four accumulators reduced as
/// `(c1 + c3) + (c2 + c4)`, then the tail in f64.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_bf16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (x, _) = w.as_chunks::<2>();
    let (y, _) = a.as_chunks::<2>();
    let n = n.min(x.len()).min(y.len());
    let np = n / 32 * 32;
    let mut c = [_mm256_setzero_ps(); 4];
    for i in (0..np).step_by(32) {
        for (j, c) in c.iter_mut().enumerate() {
            let k = i + 8 * j;
            let xv = bf16x8(x[k..k + 8].as_flattened());
            let yv = bf16x8(y[k..k + 8].as_flattened());
            *c = _mm256_fmadd_ps(xv, yv, *c);
        }
    }
    let c1 = _mm256_add_ps(_mm256_add_ps(c[0], c[2]), _mm256_add_ps(c[1], c[3]));
    let mut sumf = 0f64;
    if np > 0 {
        sumf += hsum_float_8(c1) as f64;
    }
    for i in np..n {
        let xv = half::bf16::from_le_bytes(x[i]).to_f32();
        let yv = half::bf16::from_le_bytes(y[i]).to_f32();
        sumf += (xv * yv) as f64;
    }
    sumf as f32
}
