//! AVX-512 tile (4 rows × 4 tokens) for F16 weights × F16 activations, bit-identical to
//! `x86_avx512.rs`'s `vec_dot_f16` (ggml's `GGML_SIMD` AVX-512 loop: per step of 64 elements,
//! accumulator `j` (of four) takes `fma(x[i + 16j..], y[i + 16j..], acc_j)`; then
//! `reduce((acc0 + acc2) + (acc1 + acc3))`, and the elements past the last whole step in f64).
//!
//! The four accumulators never mix until the end, so each is run to completion on its own:
//! one accumulator per (row, token) is live at a time, and a 4 × 4 tile fits in registers
//! while each weight vector is converted once for four tokens and each activation vector once
//! for four rows.

use super::GemmKernel;
use crate::kernels::x86_avx2::load256;
use core::arch::x86_64::*;

const R: usize = 4;
const T: usize = 4;

/// 16 f16s at `b[0..32]` as f32 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load_f16x16(b: &[u8]) -> __m512 {
    _mm512_cvtph_ps(load256(b))
}

/// F16 · F16; see [`GemmKernel`] for the arguments.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn tile_f16(n: usize, w: &[u8], ws: usize, a: &[u8], as_: usize, out: &mut [f32]) {
    let np = n / 64 * 64;
    let mut done = [[[_mm512_setzero_ps(); 4]; T]; R];
    for j in 0..4 {
        let mut acc = [[_mm512_setzero_ps(); T]; R];
        for i in (16 * j..np).step_by(64) {
            let y: [__m512; T] = std::array::from_fn(|t| load_f16x16(&a[t * as_ + 2 * i..]));
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = load_f16x16(&w[r * ws + 2 * i..]);
                for (acc, y) in acc.iter_mut().zip(&y) {
                    *acc = _mm512_fmadd_ps(x, *y, *acc);
                }
            }
        }
        for (done, acc) in done.iter_mut().zip(&acc) {
            for (done, acc) in done.iter_mut().zip(acc) {
                done[j] = *acc;
            }
        }
    }
    let f16_at = |b: &[u8], i: usize| half::f16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32();
    for (r, done) in done.iter().enumerate() {
        for (t, s) in done.iter().enumerate() {
            let sum = _mm512_add_ps(_mm512_add_ps(s[0], s[2]), _mm512_add_ps(s[1], s[3]));
            let mut sumf = _mm512_reduce_add_ps(sum) as f64;
            let (x, y) = (&w[r * ws..], &a[t * as_..]);
            for i in np..n {
                sumf += (f16_at(x, i) * f16_at(y, i)) as f64;
            }
            out[t * R + r] = sumf as f32;
        }
    }
}

fn f16(n: usize, w: &[u8], ws: usize, a: &[u8], as_: usize, out: &mut [f32]) {
    // SAFETY: reachable only through `f16_kernel()`, whose caller guarantees the CPU has
    // avx512f/bw/vl/vnni, avx2, fma and f16c.
    unsafe { tile_f16(n, w, ws, a, as_, out) }
}

/// The F16 tile.
///
/// # Safety
/// The returned function executes AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C instructions: call
/// only on a CPU that has them.
pub(super) unsafe fn f16_kernel() -> GemmKernel {
    GemmKernel {
        rows: R,
        tokens: T,
        run: f16,
    }
}
