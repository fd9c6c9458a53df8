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

// ---------------------------------------------------------------------------------------------
// llamafile's order (`tinyblas.rs`): one 16-lane accumulator per output, steps of 16.
//
// ggml converts the f32 activations to f16 and tinyBLAS converts every loaded vector back to
// f32, once per tile it is used in. Here the activations are rounded to f16 and widened back
// to f32 once per matmul ([`widen_f16`]), so a tile loads them ready; only the weights are
// converted on the fly, once per `TB_T` tokens. The values multiplied are the same f32s.

/// Rows per tinyBLAS-order tile.
const TB_R: usize = 6;
/// Tokens per tinyBLAS-order tile. `TB_R × TB_T` accumulators + `TB_R` weight vectors + one
/// activation vector fit the 32 registers. With the activations in L1 this tile runs at the
/// FMA units' peak, like 4 × 6 (tinyBLAS's shape); streaming them from L2 (the matmul walks
/// weight rows outermost) it was ~10% faster than 4 × 6 here, as each activation vector
/// loaded serves six rows, and 4 tokens divide the matmul's 16-token chunks.
const TB_T: usize = 4;

/// 16 f32s at `p` (unaligned).
///
/// # Safety
/// `p` points at 64 readable bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn f32x16_at(p: *const u8) -> __m512 {
    // SAFETY: per this function's contract.
    unsafe { _mm512_loadu_ps(p.cast()) }
}

/// 16 f16s at `p` (unaligned), as f32 lanes.
///
/// # Safety
/// `p` points at 32 readable bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn f16x16_at(p: *const u8) -> __m512 {
    // SAFETY: per this function's contract.
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(p.cast()) })
}

/// `out[t * R + r]` = tinyBLAS's F16 dot of weight row `r` (f16 bytes, rows `ws` bytes apart)
/// and activation row `t` (f16 values widened to f32, rows `as_` bytes apart); `n` a multiple
/// of 16.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn tile_tb<const R: usize, const T: usize>(
    n: usize,
    w: &[u8],
    ws: usize,
    a: &[u8],
    as_: usize,
    out: &mut [f32],
) {
    let n = n / 16 * 16;
    if n == 0 {
        out[..R * T].fill(0.0);
        return;
    }
    // Every load below lies in these bounds: row r < R, element l + 16 ≤ n.
    assert!(w.len() >= (R - 1) * ws + 2 * n && a.len() >= (T - 1) * as_ + 4 * n);
    assert!(out.len() >= R * T);
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let mut acc = [[_mm512_setzero_ps(); R]; T];
    for l in (0..n).step_by(16) {
        // SAFETY: r * ws + 2 * l + 32 ≤ (R - 1) * ws + 2 * n ≤ w.len() (asserted above).
        let x: [__m512; R] = std::array::from_fn(|r| unsafe { f16x16_at(wp.add(r * ws + 2 * l)) });
        for (t, acc) in acc.iter_mut().enumerate() {
            // SAFETY: t * as_ + 4 * l + 64 ≤ (T - 1) * as_ + 4 * n ≤ a.len() (asserted above).
            let y = unsafe { f32x16_at(ap.add(t * as_ + 4 * l)) };
            for (acc, x) in acc.iter_mut().zip(&x) {
                *acc = _mm512_fmadd_ps(*x, y, *acc);
            }
        }
    }
    for (t, acc) in acc.iter().enumerate() {
        for (r, acc) in acc.iter().enumerate() {
            out[t * R + r] = _mm512_reduce_add_ps(*acc);
        }
    }
}

/// One output of [`tile_tb`] (the rows and tokens that fill no tile).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dot_tb(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut out = [0f32];
    tile_tb::<1, 1>(n, w, 0, a, 0, &mut out);
    out[0]
}

/// Rounds each f32 of `x` to f16 (F16C, nearest even: ggml's `ggml_cpu_fp32_to_fp16`) and
/// widens it back (`_mm512_cvtph_ps`, as tinyBLAS's `load`), into `dst` as f32 bytes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn widen_f16_avx512(x: &[f32], dst: &mut [u8]) {
    let (dst, _) = dst.as_chunks_mut::<4>();
    let n = x.len().min(dst.len());
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 ≤ n ≤ x.len(), dst.len(): 64 readable and 64 writable bytes.
        unsafe {
            let v = _mm512_loadu_ps(x.as_ptr().add(i));
            let h = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
            _mm512_storeu_ps(dst.as_mut_ptr().add(i).cast(), _mm512_cvtph_ps(h));
        }
        i += 16;
    }
    for (x, d) in x[i..n].iter().zip(&mut dst[i..n]) {
        *d = half::f16::from_f32(*x).to_f32().to_le_bytes();
    }
}

fn tb_tile(n: usize, w: &[u8], ws: usize, a: &[u8], as_: usize, out: &mut [f32]) {
    // SAFETY: reachable only through `tinyblas_f16()`, whose caller guarantees the CPU has
    // avx512f/bw/vl/vnni, avx2, fma and f16c.
    unsafe { tile_tb::<TB_R, TB_T>(n, w, ws, a, as_, out) }
}

fn tb_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
    // SAFETY: as in `tb_tile`.
    unsafe { dot_tb(n, w, a) }
}

fn tb_widen(x: &[f32], dst: &mut [u8]) {
    // SAFETY: as in `tb_tile`.
    unsafe { widen_f16_avx512(x, dst) }
}

/// llamafile's F16 order: the tile, the single pair (both take activations from [`TbF16::widen`]
/// as f32 bytes) and the activation conversion.
///
/// # Safety
/// The returned functions execute AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C instructions: call
/// only on a CPU that has them.
pub(super) unsafe fn tinyblas_f16() -> super::TbF16 {
    super::TbF16 {
        tile: GemmKernel {
            rows: TB_R,
            tokens: TB_T,
            run: tb_tile,
        },
        dot: tb_dot,
        widen: tb_widen,
    }
}
