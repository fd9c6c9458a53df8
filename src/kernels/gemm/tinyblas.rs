//! How ggml's x86 CPU build multiplies F16 and Q8_0 weights, and the per-pair spec of the one
//! order that differs from the vec_dot (read in llama.cpp 0c1e570, `ggml-cpu/ggml-cpu.c`
//! `ggml_compute_forward_mul_mat` and `ggml-cpu/llamafile/sgemm.cpp`, built natively with
//! AVX-512 F/BW/VL/VNNI, `GGML_LLAMAFILE=ON`).
//!
//! **When llamafile's `llamafile_sgemm` takes the matmul.** `mul_mat` calls it twice. First with
//! the f32 activations as they are: for F16 and Q8_0 weights it declines (on AVX-512 the F16
//! case wants F16 activations; Q8_0 wants Q8_0). The activations are then converted to the
//! weight type's `vec_dot_type` (F16: F16C round to nearest even; Q8_0: x86 `quantize_row_q8_0`,
//! each thread converting its share of every row) and it is called again:
//! - it always declines a batch of one token (`n < 2`, "only enable sgemm for prompt
//!   processing"): **decode is the vec_dot** for both types, as kiln already does;
//! - F16 × F16: `tinyBLAS<16, __m512, ...>::matmul` takes it when `k % 16 == 0` (`k` = columns)
//!   and the rows `m % 4 == 0`, and otherwise declines — the vec_dot then runs, also for a batch;
//! - Q8_0 × Q8_0: `tinyBLAS_Q0_AVX` always takes it.
//!
//! **F16 (`tinyBLAS::gemm_bloc`).** Each output has one 16-lane f32 accumulator `C` of its own;
//! for `l` in steps of 16 over the columns, `C = fma(A[l..l+16], B[l..l+16], C)` with both
//! operands f16 converted to f32 (`_mm512_cvtph_ps`), then `hsum` = `_mm512_reduce_add_ps`,
//! which folds halves: `c[i] += c[i + 8]`, `c[i] += c[i + 4]`, `c[i] += c[i + 2]`, `c[0] + c[1]`.
//! No tail (whole steps are a condition), no f64. The tile shape `mnpack` picks (RM = 4 rows,
//! RN ≤ 6 tokens, BM 1–4 row tiles per job, from `m`, `n` and the thread count) and the job
//! split only decide which accumulators live together: every output's sequence of operations
//! is the same, so the result does not depend on `m`, `n` or the threads. This differs from
//! the vec_dot (`ggml_vec_dot_f16`: four accumulators over steps of 64, an f64 tail).
//!
//! **Q8_0 (`tinyBLAS_Q0_AVX`).** `mnpack` recursively cuts the output into 4 × 4, 4 × 3,
//! ... tiles (`gemm4xN`, `gemmMx4`, `gemm<RM, RN>`), each output again with one accumulator,
//! here 8 lanes: per block, lane `j` gets `fma(d_w · d_a, Σ_{i<4} w[4j+i] · a[4j+i], C)` (the
//! sum exact in i32 by `vpdpbusd` on `|w|` and `sign(a, w)`), then `hsum` of the `__m256`
//! (`hi + lo`, `movehl`, `movehdup`). That is, operation for operation, the AVX2 vec_dot
//! `ggml_vec_dot_q8_0_q8_0` with its `hsum_float_8`: the orders are equal, so kiln's Q8_0
//! vec_dot and tile already reproduce it (the sign trick differs from the exact product only
//! for an activation of −128, which ggml's quantizer never writes).

/// Lanes of tinyBLAS's F16 accumulator on an AVX-512 build (`KN` of `tinyBLAS<16, __m512, ..>`).
pub(crate) const F16_LANES: usize = 16;

/// Whether ggml's `llamafile_sgemm` takes an F16 × F16 matmul of `rows` weight rows, `cols`
/// columns and `n_tokens` tokens on an AVX-512 build (`tinyBLAS::matmul`'s conditions).
pub(crate) fn takes_f16(rows: usize, cols: usize, n_tokens: usize) -> bool {
    n_tokens >= 2 && rows.is_multiple_of(4) && cols.is_multiple_of(F16_LANES)
}

/// The f16 at element `i` of little-endian bytes `b`, as f32.
#[cfg_attr(not(test), allow(dead_code))] // the spec runs in the tests
fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32()
}

/// `_mm512_reduce_add_ps` (and every tinyBLAS `hsum`): fold the upper half onto the lower
/// until one lane is left.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn fold_halves<const L: usize>(mut c: [f32; L]) -> f32 {
    let mut half = L / 2;
    while half > 0 {
        for i in 0..half {
            c[i] += c[i + half];
        }
        half /= 2;
    }
    c[0]
}

/// F16 · F16 as llamafile's `tinyBLAS<16, __m512, __m512, ggml_fp16_t, ggml_fp16_t, float>`
/// computes one output (`gemm_bloc`): the portable spec of the F16 prompt-processing order.
/// `n` must be a multiple of 16 ([`takes_f16`]); `w` and `a` hold `n` little-endian f16s.
#[cfg_attr(not(test), allow(dead_code))]
pub fn vec_dot_f16_tinyblas(n: usize, w: &[u8], a: &[u8]) -> f32 {
    debug_assert!(n.is_multiple_of(F16_LANES));
    let mut c = [0f32; F16_LANES];
    for l in (0..n / F16_LANES * F16_LANES).step_by(F16_LANES) {
        for (j, c) in c.iter_mut().enumerate() {
            *c = f16_at(w, l + j).mul_add(f16_at(a, l + j), *c);
        }
    }
    fold_halves(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_halves_is_the_reduce_tree() {
        // 1e8 swallows 1.0 only when they are added directly: the tree adds lane 0 to lane 8
        // first, so the small values meet each other before they meet the big one.
        let mut c = [1.0f32; 16];
        c[0] = 1e8;
        c[8] = -1e8;
        // Lanes 0 and 8 cancel exactly; the other 14 ones sum exactly.
        assert_eq!(fold_halves(c), 14.0);
        let mut d = [0f32; 8];
        d[1] = 1e8;
        d[5] = 1.0;
        d[3] = -1e8;
        // ((d1 + d5) + (d3 + d7)) rounds the 1 away: 1e8 + 1 = 1e8 in f32.
        assert_eq!(fold_halves(d), 0.0);
    }

    #[test]
    fn takes_f16_follows_tinyblas_conditions() {
        assert!(takes_f16(576, 576, 2));
        assert!(!takes_f16(576, 576, 1), "decode is the vec_dot");
        assert!(!takes_f16(574, 576, 8), "m % 4");
        assert!(!takes_f16(576, 40, 8), "k % 16");
    }
}
