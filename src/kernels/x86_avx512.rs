//! AVX-512 (F/BW/VL) + VNNI kernels for the floats and the legacy 32-element integer types (the
//! rest keep their AVX2 kernels in the AVX-512 table). ggml has AVX-512 code of its own only for
//! the floats (`GGML_SIMD` with 16-lane vectors); for the integer types its x86 build runs the
//! AVX2 kernels, with `vpdpbusd` swapped in under `__AVX512VNNI__`. The integer kernels here
//! therefore compute the integer sums of two blocks per 512-bit `vpdpbusd` but apply the floats
//! exactly as ggml's AVX2 loop does, one block after the other into one 8-lane accumulator
//! ([`fma_2_blocks`]), so their results are bit-identical to ggml's — which the model goldens
//! need (tests/model_golden.rs). The K-quant kernels that summed in their own order were
//! removed for that reason (see git history); an odd last block takes the 256-bit VNNI path.

use super::x86_avx2::{
    bytes_from_nibbles_32, fp16_mul, load128, load256, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, QK,
};
use super::VecDot;
use core::arch::x86_64::*;
use ggml_compat::GgmlType;

// ---------------------------------------------------------------------------------------------
// Helpers.

/// 64 bytes starting at `b[0]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn load512(b: &[u8]) -> __m512i {
    let b: &[u8; 64] = b[..64].try_into().unwrap();
    // SAFETY: `b` is 64 readable bytes; the load is unaligned.
    unsafe { _mm512_loadu_si512(b.as_ptr().cast()) }
}

/// Two 32-byte halves into one register, `lo` in the low half.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn join256(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// The 16-byte nibble arrays at `q0[0..16]` and `q1[0..16]` → 64 values in 0..16: block 0's low
/// nibbles, its high nibbles, then block 1's (the order of two consecutive Q8 blocks).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn nibbles_2x32(q0: &[u8], q1: &[u8]) -> __m512i {
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
pub(super) fn dot_i8_512(x: __m512i, y: __m512i) -> __m512i {
    let ax = _mm512_abs_epi8(x);
    let sy = _mm512_mask_sub_epi8(y, _mm512_movepi8_mask(x), _mm512_setzero_si512(), y);
    _mm512_dpbusd_epi32(_mm512_setzero_si512(), ax, sy)
}

/// The 256-bit [`dot_i8_512`], as floats.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn dot_i8_256(x: __m256i, y: __m256i) -> __m256 {
    let ax = _mm256_sign_epi8(x, x);
    let sy = _mm256_sign_epi8(y, x);
    _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sy))
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

/// ggml's AVX2 accumulation of two consecutive blocks whose integer lane sums are the low and
/// high halves of `dot`: `acc += d0 · lo`, then `acc += d1 · hi`, each a fused multiply-add in
/// block order — exactly the float operations of ggml's one-block-per-iteration loop.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn fma_2_blocks(acc: __m256, d0: f32, d1: f32, dot: __m512i) -> __m256 {
    let f = _mm512_cvtepi32_ps(dot);
    let lo = _mm512_castps512_ps256(f);
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(f)));
    let acc = _mm256_fmadd_ps(_mm256_set1_ps(d0), lo, acc);
    _mm256_fmadd_ps(_mm256_set1_ps(d1), hi, acc)
}

/// Q8_0 · Q8_0 in the order of `ggml_vec_dot_q8_0_q8_0`'s AVX2 branch (which ggml runs on
/// AVX-512 CPUs too): two blocks' integer sums per `vpdpbusd`, floats as [`fma_2_blocks`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn vec_dot_q8_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (x, y) = rows::<Q8_0, Q8_0>(n, QK, w, a);
    let mut acc = _mm256_setzero_ps();
    for (x, y) in x.chunks_exact(2).zip(y.chunks_exact(2)) {
        let qx = join256(load256(&x[0][2..]), load256(&x[1][2..]));
        let qy = join256(load256(&y[0][2..]), load256(&y[1][2..]));
        let (d0, d1) = (fp16_mul(&x[0], &y[0]), fp16_mul(&x[1], &y[1]));
        acc = fma_2_blocks(acc, d0, d1, dot_i8_512(qx, qy));
    }
    if x.len() % 2 == 1 {
        let (x, y) = (&x[x.len() - 1], &y[y.len() - 1]);
        let dot = dot_i8_256(load256(&x[2..]), load256(&y[2..]));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(fp16_mul(x, y)), dot, acc);
    }
    hsum8(acc)
}

/// Horizontal sum of 8 floats.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn hsum8(v: __m256) -> f32 {
    super::x86_avx2::hsum_float_8(v)
}

/// Q4_1 · Q8_1 in the order of `ggml_vec_dot_q4_1_q8_1`'s AVX2 branch: lanes as
/// [`fma_2_blocks`], the `m·s` terms summed one block at a time in f32, added last.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn vec_dot_q4_1_q8_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (x, y) = rows::<Q4_1, Q8_1>(n, QK, w, a);
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0f32;
    for (x, y) in x.chunks_exact(2).zip(y.chunks_exact(2)) {
        let qx = nibbles_2x32(&x[0][4..], &x[1][4..]);
        let qy = join256(load256(&y[0][4..]), load256(&y[1][4..]));
        summs += fp16_mul(&x[0][2..], &y[0][2..]);
        summs += fp16_mul(&x[1][2..], &y[1][2..]);
        let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), qx, qy);
        acc = fma_2_blocks(acc, fp16_mul(&x[0], &y[0]), fp16_mul(&x[1], &y[1]), dot);
    }
    if x.len() % 2 == 1 {
        let (x, y) = (&x[x.len() - 1], &y[y.len() - 1]);
        summs += fp16_mul(&x[2..], &y[2..]);
        let qx = bytes_from_nibbles_32(&x[4..]);
        let dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), qx, load256(&y[4..]));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(fp16_mul(x, y)), _mm256_cvtepi32_ps(dot), acc);
    }
    hsum8(acc) + summs
}

/// Q5_0 · Q8_0 in the order of `ggml_vec_dot_q5_0_q8_0`'s AVX2 branch: a clear fifth bit
/// makes the byte `nibble - 16` (OR 0xF0), selected by the 64-bit mask of both blocks' `qh`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn vec_dot_q5_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (x, y) = rows::<Q5_0, Q8_0>(n, QK, w, a);
    let mut acc = _mm256_setzero_ps();
    let high = _mm512_set1_epi8(0xF0u8 as i8);
    for (x, y) in x.chunks_exact(2).zip(y.chunks_exact(2)) {
        let nib = nibbles_2x32(&x[0][6..], &x[1][6..]);
        let qh = u64::from_le_bytes([
            x[0][2], x[0][3], x[0][4], x[0][5], x[1][2], x[1][3], x[1][4], x[1][5],
        ]);
        let qx = _mm512_mask_mov_epi8(_mm512_or_si512(nib, high), qh, nib);
        let qy = join256(load256(&y[0][2..]), load256(&y[1][2..]));
        let (d0, d1) = (fp16_mul(&x[0], &y[0]), fp16_mul(&x[1], &y[1]));
        acc = fma_2_blocks(acc, d0, d1, dot_i8_512(qx, qy));
    }
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
        acc = _mm256_fmadd_ps(_mm256_set1_ps(fp16_mul(x, y)), dot, acc);
    }
    hsum8(acc)
}

/// Q4_0 · Q8_0 in the order of `ggml_vec_dot_q4_0_q8_0`'s AVX2 branch.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn vec_dot_q4_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (x, y) = rows::<Q4_0, Q8_0>(n, QK, w, a);
    let mut acc = _mm256_setzero_ps();
    for (x, y) in x.chunks_exact(2).zip(y.chunks_exact(2)) {
        let qx = _mm512_sub_epi8(nibbles_2x32(&x[0][2..], &x[1][2..]), _mm512_set1_epi8(8));
        let qy = join256(load256(&y[0][2..]), load256(&y[1][2..]));
        let (d0, d1) = (fp16_mul(&x[0], &y[0]), fp16_mul(&x[1], &y[1]));
        acc = fma_2_blocks(acc, d0, d1, dot_i8_512(qx, qy));
    }
    if x.len() % 2 == 1 {
        let (x, y) = (&x[x.len() - 1], &y[y.len() - 1]);
        let qx = _mm256_sub_epi8(bytes_from_nibbles_32(&x[2..]), _mm256_set1_epi8(8));
        let dot = dot_i8_256(qx, load256(&y[2..]));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(fp16_mul(x, y)), dot, acc);
    }
    hsum8(acc)
}

/// Q5_1 · Q8_1 in the order of `ggml_vec_dot_q5_1_q8_1`'s AVX2 branch: a set fifth bit adds
/// 16; `m·s` summed one block at a time, added last.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn vec_dot_q5_1_q8_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (x, y) = rows::<Q5_1, Q8_1>(n, QK, w, a);
    let bit4 = _mm512_set1_epi8(0x10);
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0f32;
    for (x, y) in x.chunks_exact(2).zip(y.chunks_exact(2)) {
        let nib = nibbles_2x32(&x[0][8..], &x[1][8..]);
        let qh = u64::from_le_bytes([
            x[0][4], x[0][5], x[0][6], x[0][7], x[1][4], x[1][5], x[1][6], x[1][7],
        ]);
        let qx = _mm512_mask_mov_epi8(nib, qh, _mm512_or_si512(nib, bit4));
        let qy = join256(load256(&y[0][4..]), load256(&y[1][4..]));
        summs += fp16_mul(&x[0][2..], &y[0][2..]);
        summs += fp16_mul(&x[1][2..], &y[1][2..]);
        let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), qx, qy);
        acc = fma_2_blocks(acc, fp16_mul(&x[0], &y[0]), fp16_mul(&x[1], &y[1]), dot);
    }
    if x.len() % 2 == 1 {
        let (x, y) = (&x[x.len() - 1], &y[y.len() - 1]);
        summs += fp16_mul(&x[2..], &y[2..]);
        let nib = bytes_from_nibbles_32(&x[8..]);
        let qh = u32::from_le_bytes([x[4], x[5], x[6], x[7]]);
        let qx = _mm256_mask_mov_epi8(nib, qh, _mm256_or_si256(nib, _mm256_set1_epi8(0x10)));
        let dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), qx, load256(&y[4..]));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(fp16_mul(x, y)), _mm256_cvtepi32_ps(dot), acc);
    }
    hsum8(acc) + summs
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
    (reduce_four(sum), np)
}

/// `GGML_F32x16_REDUCE` of four accumulators: `(s0 + s2) + (s1 + s3)`, then across lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn reduce_four(sum: [__m512; 4]) -> f32 {
    let a = _mm512_add_ps(sum[0], sum[2]);
    let b = _mm512_add_ps(sum[1], sum[3]);
    _mm512_reduce_add_ps(_mm512_add_ps(a, b))
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
    Q5_0 => vec_dot_q5_0_q8_0,
    Q8_0 => vec_dot_q8_0_q8_0,
);

/// The AVX-512 kernels, by weight type (each has the `vec_dot_type` of the scalar table).
///
/// # Safety
/// The functions execute AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C instructions: call only after
/// checking the CPU has them (`is_x86_feature_detected!`), as `KernelTable::build` does.
pub(super) unsafe fn kernels() -> &'static [(GgmlType, VecDot)] {
    KERNELS
}

#[cfg(test)]
mod tests {
    use crate::kernels::{quantize_activations, table, Isa};
    use ggml_compat::quant::quantize_row;
    use ggml_compat::GgmlType;

    /// The integer kernels compute ggml's floats: bit-identical to the AVX2 twins (ggml's own
    /// loop) for even and odd block counts.
    #[test]
    fn integer_kernels_equal_avx2_bit_for_bit() {
        if !Isa::Avx512.is_available() {
            return;
        }
        let (t512, t2) = (table(Isa::Avx512).unwrap(), table(Isa::Avx2).unwrap());
        let mut seed = 0x1234_5678u32;
        let mut next = || crate::testing::xorshift(&mut seed) * 8.0;
        use GgmlType::*;
        for ty in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0] {
            for blocks in [1usize, 2, 5, 18] {
                let n = 32 * blocks;
                let w: Vec<f32> = (0..n).map(|_| next()).collect();
                let a: Vec<f32> = (0..n).map(|_| next() * next()).collect();
                let mut wq = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
                quantize_row(ty, &w, &mut wq, None).unwrap();
                let k = t512.get(ty).unwrap();
                let vdt = k.vec_dot_type;
                let mut aq = vec![0u8; vdt.row_bytes(n as u64).unwrap() as usize];
                quantize_activations(vdt, &a, n, &mut aq).unwrap();
                let (got, want) = (
                    (k.vec_dot)(n, &wq, &aq),
                    (t2.get(ty).unwrap().vec_dot)(n, &wq, &aq),
                );
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{ty} × {blocks} blocks: {got} vs {want}"
                );
            }
        }
    }
}
