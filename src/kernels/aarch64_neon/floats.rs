//! F32 and F16 rows (ggml's `ggml_vec_dot_f32` / `ggml_vec_dot_f16` with `GGML_SIMD` on NEON:
//! `GGML_F32_STEP` = 16 elements per step in four accumulators of four lanes, FMA, the
//! accumulators folded pairwise, then the leftovers added: in f32 for F32, in `ggml_float` for
//! F16). BF16 has no NEON kernel: ggml's `ggml_vec_dot_bf16` is the scalar f64 loop on NEON.
//!
//! F16 is converted to f32 (`fcvtl`, exact) and multiplied in f32, as ggml does on CPUs without
//! FP16 vector arithmetic (with it, ggml accumulates in f16, which loses precision: not copied).

use super::*;

/// ggml's `GGML_F32_VEC_REDUCE` for four accumulators: `(s0 + s2) + (s1 + s3)`, then the lanes.
#[inline]
#[target_feature(enable = "neon")]
fn reduce(s: [float32x4_t; 4]) -> f32 {
    let a = vaddq_f32(s[0], s[2]);
    let b = vaddq_f32(s[1], s[3]);
    vaddvq_f32(vaddq_f32(a, b))
}

/// F32 · F32. Matches the NEON branch of `ggml_vec_dot_f32`.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn vec_dot_f32<D: Dot>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let n = n.min(w.len() / 4).min(a.len() / 4);
    let np = n & !15;
    let mut s = [vdupq_n_f32(0.0); 4];
    for (x, y) in blocks::<64, 64>(np, 16, w, a) {
        for (k, acc) in s.iter_mut().enumerate() {
            *acc = vfmaq_f32(*acc, load_f32(&x[16 * k..]), load_f32(&y[16 * k..]));
        }
    }
    // ggml's SIMD branch sums F32 leftovers in f32 (`float sumf`), unlike F16's.
    let mut sumf = reduce(s);
    for i in np..n {
        sumf += f32_at(&w[4 * i..]) * f32_at(&a[4 * i..]);
    }
    sumf
}

/// F16 · F16. Matches the NEON branch of `ggml_vec_dot_f16` (f32 arithmetic).
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn vec_dot_f16<D: Dot>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let n = n.min(w.len() / 2).min(a.len() / 2);
    let np = n & !15;
    let mut s = [vdupq_n_f32(0.0); 4];
    for (x, y) in blocks::<32, 32>(np, 16, w, a) {
        for k in 0..2 {
            let (x0, x1) = f16x8_to_f32(&x[16 * k..]);
            let (y0, y1) = f16x8_to_f32(&y[16 * k..]);
            s[2 * k] = vfmaq_f32(s[2 * k], x0, y0);
            s[2 * k + 1] = vfmaq_f32(s[2 * k + 1], x1, y1);
        }
    }
    let mut sumf = reduce(s) as f64;
    for i in np..n {
        sumf += (fp16(&w[2 * i..]) * fp16(&a[2 * i..])) as f64;
    }
    sumf as f32
}
