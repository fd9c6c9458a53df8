//! Q4_K weights as ggml-cpu multiplies them on AVX2 / AVX-512 CPUs: a Q4_K matrix whose row
//! count is a multiple of 8 is repacked at load into the `q4_K_8x8_q8_K` layout
//! (`ggml_repack_get_optimal_repack_type` in `ggml-cpu/repack.cpp`), and every product then runs
//! through `ggml_gemm_q4_K_8x8_q8_K` (four activation rows at a time) or
//! `ggml_gemv_q4_K_8x8_q8_K` (the rest) in `ggml-cpu/arch/x86/repack.cpp`, never through
//! `ggml_vec_dot_q4_K_q8_K`. Both sum differently from that vec_dot: per super-block, the
//! integer sums of all eight sub-blocks (scaled) and of the mins are formed exactly, then fused
//! into two f32 accumulators, `acc += isum · (d·d8)` and `acc_min += imin · (dmin·d8)`, and the
//! result is `acc − acc_min`. Activations are Q8_K either way (`ggml_quantize_mat_q8_K_4x8`
//! computes the same blocks as `quantize_row_q8_K`, interleaved).
//!
//! Q4_0 likewise (`q4_0_8x8_q8_0`, rows a multiple of 8, any AVX2 CPU): `ggml_gemm_q4_0_8x8_q8_0`
//! and `ggml_gemv_q4_0_8x8_q8_0` sum alike — per block the exact integer sum, then
//! `acc = fma(isum, d_w · d_a, acc)` on one accumulator — so one per-pair function covers every
//! token; `ggml_quantize_mat_q8_0_4x8` computes exactly `quantize_row_q8_0`'s blocks (same
//! `amax / 127`, `127 / amax`, round-to-even), interleaved. kiln reads the rows in place (the
//! tiles in `gemm/x86_avx512_q4_0.rs`, `gemm/x86_avx2_q4_0.rs` transpose 16 or 8 rows' blocks in
//! registers), so the weights are neither copied nor held twice.

use super::scalar::{k_scales_mins, with_rows};
use ggml_compat::blocks::{BlockQ4K, BlockQ4_0, BlockQ6K, BlockQ8K, BlockQ8_0};
use ggml_compat::quant::float::fp16_to_fp32 as h;
use ggml_compat::QK_K;

/// Rows of a Q4_K matrix ggml repacks (`ne[1] % 8 == 0`).
pub fn q4_k_is_repacked(rows: usize) -> bool {
    rows.is_multiple_of(8)
}

/// Q4_K · Q8_K in the order of ggml's x86 `ggml_gemm_q4_K_8x8_q8_K` (activation rows in
/// groups of four): one fused update of each accumulator per 64 elements (two sub-blocks).
pub fn vec_dot_q4_k_q8_k_gemm(n: usize, w: &[u8], a: &[u8]) -> f32 {
    with_fma(n, w, a, body::<2>)
}

/// Q4_K · Q8_K in the order of ggml's x86 `ggml_gemv_q4_K_8x8_q8_K` (the activation rows left
/// over after the groups of four): one fused update per super-block of 256. Runs the AVX2
/// twin (`x86_avx2::k_quants`, bit-identical) where the CPU has it: this is decode's Q4_K path.
pub fn vec_dot_q4_k_q8_k_gemv(n: usize, w: &[u8], a: &[u8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = super::x86_avx2::q4_k_gemv() {
        return k(n, w, a);
    }
    vec_dot_q4_k_q8_k_gemv_portable(n, w, a)
}

/// [`vec_dot_q4_k_q8_k_gemv`] in portable Rust (the specification of the SIMD twin).
pub fn vec_dot_q4_k_q8_k_gemv_portable(n: usize, w: &[u8], a: &[u8]) -> f32 {
    with_fma(n, w, a, body::<8>)
}

#[inline(always)]
fn with_fma(n: usize, w: &[u8], a: &[u8], f: fn(usize, &[u8], &[u8]) -> f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "fma")]
        fn fast(n: usize, w: &[u8], a: &[u8], f: fn(usize, &[u8], &[u8]) -> f32) -> f32 {
            f(n, w, a)
        }
        if std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has FMA (checked just above).
            return unsafe { fast(n, w, a, f) };
        }
    }
    f(n, w, a)
}

/// The dot product with the accumulators updated once per `SUBS` sub-blocks of 32.
#[inline(always)]
fn body<const SUBS: usize>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    with_rows(w, a, |x: &[BlockQ4K], y: &[BlockQ8K]| {
        let (mut acc, mut acc_min) = (0f32, 0f32);
        for (x, y) in x.iter().zip(y).take(n / QK_K) {
            let (scales, mins) = k_scales_mins(&x.scales);
            let (d, dmin) = (h(x.d) * y.d, h(x.dmin) * y.d);
            let (mut isum, mut imin) = (0i32, 0i32);
            for s in 0..8 {
                // sub-block s: elements 32s.., nibbles (s % 2 == 0 low, else high) of bytes
                // 32 * (s / 2)..
                let bytes = &x.qs[32 * (s / 2)..][..32];
                let dot: i32 = bytes
                    .iter()
                    .zip(&y.qs[32 * s..][..32])
                    .map(|(&b, &q)| (if s % 2 == 0 { b & 0xF } else { b >> 4 }) as i32 * q as i32)
                    .sum();
                isum += scales[s] as i32 * dot;
                imin += mins[s] as i32 * (y.bsums[2 * s] as i32 + y.bsums[2 * s + 1] as i32);
                if (s + 1) % SUBS == 0 {
                    acc = (isum as f32).mul_add(d, acc);
                    acc_min = (imin as f32).mul_add(dmin, acc_min);
                    (isum, imin) = (0, 0);
                }
            }
        }
        acc - acc_min
    })
}

/// Token batches from which ggml multiplies K-quant weights through its tiled kernels
/// (`ggml_tiled_min_batch` in `ggml-cpu/tiled/tiled.cpp`).
pub const TILED_MIN_BATCH: usize = 8;

/// Q6_K · Q8_K in the order of ggml's tiled K-quant matmul (`ggml-cpu/tiled/`, taken for
/// batches of at least [`TILED_MIN_BATCH`] tokens): per super-block the exact integer sum
/// `Σ scale · Σ (q − 32) · a`, converted to f32, times the weight's `d`, then fused into the
/// accumulator with the activation's `d` (`buf += result · d8`, contracted by GCC).
pub fn vec_dot_q6_k_q8_k_tiled(n: usize, w: &[u8], a: &[u8]) -> f32 {
    with_fma(n, w, a, q6_k_tiled_body)
}

#[inline(always)]
fn q6_k_tiled_body(n: usize, w: &[u8], a: &[u8]) -> f32 {
    with_rows(w, a, |x: &[BlockQ6K], y: &[BlockQ8K]| {
        let mut acc = 0f32;
        for (x, y) in x.iter().zip(y).take(n / QK_K) {
            let mut q = [0i32; QK_K];
            for half in 0..2 {
                let (ql, qh) = (&x.ql[64 * half..], &x.qh[32 * half..]);
                let out = &mut q[128 * half..];
                for l in 0..32 {
                    out[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32;
                    out[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32;
                    out[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32;
                    out[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32;
                }
            }
            let mut isum = 0i32;
            for (s, &sc) in x.scales.iter().enumerate() {
                let raw: i32 = (0..16)
                    .map(|e| (q[16 * s + e] - 32) * y.qs[16 * s + e] as i32)
                    .sum();
                isum += sc as i32 * raw;
            }
            acc = (isum as f32 * h(x.d)).mul_add(y.d, acc);
        }
        acc
    })
}

/// Rows of a Q4_0 matrix ggml's x86 build repacks into `q4_0_8x8_q8_0` (`ne[1] % 8 == 0`, on any
/// CPU with AVX2: `ggml_repack_get_optimal_repack_type`). The generic (non-AVX2) build does not
/// repack, so the scalar table keeps `ggml_vec_dot_q4_0_q8_0`.
pub fn q4_0_is_repacked(rows: usize) -> bool {
    rows.is_multiple_of(8)
}

/// Q4_0 · Q8_0 in the order of ggml's x86 `ggml_gemm_q4_0_8x8_q8_0` and
/// `ggml_gemv_q4_0_8x8_q8_0` (`gemm_q4_b32_8x8_q8_0_lut_avx` / `gemv_…`, AVX-512 and AVX2
/// branches alike): per block of 32 the exact integer sum `isum = Σ (q − 8) · a`, then one
/// fused update `acc = fma(isum, d_w · d_a, acc)` of a single f32 accumulator. The gemm and the
/// gemv sum alike, and `ggml_quantize_mat_q8_0_4x8` computes the same Q8_0 blocks as
/// `quantize_row_q8_0` (interleaved), so this one function is the order of every token. Runs
/// the AVX2 twin where the CPU has it.
pub fn vec_dot_q4_0_q8_0_repack(n: usize, w: &[u8], a: &[u8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = super::gemm::q4_0_repack_dot() {
        return k(n, w, a);
    }
    vec_dot_q4_0_q8_0_repack_portable(n, w, a)
}

/// [`vec_dot_q4_0_q8_0_repack`] in portable Rust (the specification of the SIMD kernels).
pub fn vec_dot_q4_0_q8_0_repack_portable(n: usize, w: &[u8], a: &[u8]) -> f32 {
    with_fma(n, w, a, q4_0_repack_body)
}

#[inline(always)]
fn q4_0_repack_body(n: usize, w: &[u8], a: &[u8]) -> f32 {
    with_rows(w, a, |x: &[BlockQ4_0], y: &[BlockQ8_0]| {
        let mut acc = 0f32;
        for (x, y) in x.iter().zip(y).take(n / 32) {
            let isum: i32 = (0..16)
                .map(|j| {
                    let (lo, hi) = ((x.qs[j] & 0xF) as i32 - 8, (x.qs[j] >> 4) as i32 - 8);
                    lo * y.qs[j] as i32 + hi * y.qs[j + 16] as i32
                })
                .sum();
            acc = (isum as f32).mul_add(h(x.d) * h(y.d), acc);
        }
        acc
    })
}
