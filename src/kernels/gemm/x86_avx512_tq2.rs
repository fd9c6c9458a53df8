//! AVX-512 VNNI tiles for TQ2_0 against Q8_K: `R` rows × `T` tokens per call, bit-identical to
//! `x86_avx2::k_quants::vec_dot_tq2_0_q8_k` (ggml's AVX2 `ggml_vec_dot_tq2_0_q8_K`, which the
//! AVX-512 table uses too). The `T = 1` instantiation is the decode gemv (`gemv.rs`).
//!
//! Per super-block that vec_dot ends with 8 i32 lanes, lane `L` the exact sum of the products
//! at bytes `4L..4L + 4` of each of its eight 32-byte (code, activation) vectors minus
//! `bsums[2L] + bsums[2L + 1]`, then `sumf = cvt(lane) · (d_y · d_x) + sumf` (multiply, then
//! add). `vpdpbusd` sums the same four bytes into lane `L`, so here the two 32-byte halves of the
//! super-block's codes run side by side in one 512-bit register (four `vpdpbusd`, one per 2-bit
//! plane, the low half's lanes starting from `−bsums`), the halves are added (exact), and the
//! floats follow the vec_dot's.

use super::GemmKernel;
use crate::kernels::x86_avx2::{
    f32_at, fp16, hsum_float_8, load256, Q8K, Q8K_BSUMS, Q8K_QS, TQ2_0,
};
use crate::kernels::x86_avx512::{join256, load512};
use core::arch::x86_64::*;
use ggml_compat::QK_K;

/// Rows per prefill tile.
const R: usize = 4;
/// Tokens per prefill tile.
const T: usize = 4;

/// One tile: see [`GemmKernel`] for the arguments.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn tile<const R: usize, const T: usize>(
    n: usize,
    w: &[u8],
    ws: usize,
    a: &[u8],
    as_: usize,
    out: &mut [f32],
) {
    let m3 = _mm512_set1_epi8(3);
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    for b in 0..n / QK_K {
        // Per token: the activations of each 2-bit plane k (bytes 32k.. for the low half of the
        // codes, 128 + 32k.. for the high half), the lanes' start and the activation scale.
        let mut ys = [[_mm512_setzero_si512(); 4]; T];
        let mut start = [_mm512_setzero_si512(); T];
        let mut dy = [0f32; T];
        for t in 0..T {
            let y = &a[t * as_ + b * Q8K..][..Q8K];
            for (k, ys) in ys[t].iter_mut().enumerate() {
                let (lo, hi) = (&y[Q8K_QS + 32 * k..], &y[Q8K_QS + 128 + 32 * k..]);
                *ys = join256(load256(lo), load256(hi));
            }
            let bsums = _mm256_madd_epi16(load256(&y[Q8K_BSUMS..]), _mm256_set1_epi16(1));
            let neg = _mm256_sub_epi32(_mm256_setzero_si256(), bsums);
            start[t] = _mm512_castsi256_si512(neg);
            start[t] = _mm512_inserti64x4::<1>(start[t], _mm256_setzero_si256());
            dy[t] = f32_at(y);
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            let x = &w[r * ws + b * TQ2_0..][..TQ2_0];
            let q = load512(x);
            let codes = [
                _mm512_and_si512(q, m3),
                _mm512_and_si512(_mm512_srli_epi16::<2>(q), m3),
                _mm512_and_si512(_mm512_srli_epi16::<4>(q), m3),
                _mm512_and_si512(_mm512_srli_epi16::<6>(q), m3),
            ];
            let dx = fp16(&x[64..]);
            for t in 0..T {
                let mut s = start[t];
                for k in 0..4 {
                    s = _mm512_dpbusd_epi32(s, codes[k], ys[t][k]);
                }
                let lo = _mm512_castsi512_si256(s);
                let hi = _mm512_extracti64x4_epi64::<1>(s);
                let sumi = _mm256_add_epi32(lo, hi);
                let d = _mm256_set1_ps(dy[t] * dx);
                acc[t] = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(sumi), d), acc[t]);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (t, acc) in acc.iter().enumerate() {
            out[t * R + r] = hsum_float_8(*acc);
        }
    }
}

/// Declares a safe wrapper per instantiation.
macro_rules! wrappers {
    ($($name:ident => ($r:expr, $t:expr)),* $(,)?) => {
        $(
            fn $name(n: usize, w: &[u8], ws: usize, a: &[u8], as_: usize, out: &mut [f32]) {
                // SAFETY: reachable only through `kernel()` / `gemv_kernel()`, whose callers
                // guarantee the CPU has avx512f/bw/vl/vnni, avx2, fma and f16c.
                unsafe { tile::<{ $r }, { $t }>(n, w, ws, a, as_, out) }
            }
        )*
    };
}

wrappers!(
    tile_rt => (R, T),
    gemv_2 => (2, 1),
    gemv_4 => (4, 1),
    gemv_8 => (8, 1),
);

/// The TQ2_0 prefill tile.
///
/// # Safety
/// The returned function executes AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C instructions: call
/// only on a CPU that has them.
pub(in crate::kernels) unsafe fn kernel() -> GemmKernel {
    GemmKernel {
        rows: R,
        tokens: T,
        run: tile_rt,
    }
}

/// The TQ2_0 decode gemv of `rows` rows (2, 4 or 8), if there is one.
///
/// # Safety
/// As [`kernel`].
pub(in crate::kernels) unsafe fn gemv_kernel(rows: usize) -> Option<GemmKernel> {
    let run = match rows {
        2 => gemv_2,
        4 => gemv_4,
        8 => gemv_8,
        _ => return None,
    };
    Some(GemmKernel {
        rows,
        tokens: 1,
        run,
    })
}
