//! Batched micro-kernels for prompt processing: one call computes a tile of `R` weight rows ×
//! `T` tokens, so each weight block is loaded and unpacked once for `T` tokens and each
//! activation block once for `R` rows (the idea of llamafile's tinyBLAS, which ggml's x86 build
//! uses for batches).
//!
//! Every output is bit-identical to the active table's `vec_dot` for that (row, token): the
//! integer parts of a block are exact in any order, and the float operations — which block's
//! scale multiplies which lane, the fused multiply-adds in block order, the final horizontal
//! sum — are the vec_dot's, only interleaved across rows and tokens. `matmul.rs` falls back to
//! the vec_dot for the rows and tokens that do not fill a whole tile.
//!
//! Where ggml itself multiplies a batch in another order than its vec_dot — the repacked and
//! tiled K-quants ([`Order`]), llamafile's F16 tinyBLAS ([`tinyblas`], [`TbF16`]) — the tiles
//! reproduce that order instead, and so do the single pairs used around them.

#[cfg(target_arch = "x86_64")]
mod x86_avx2_kquants;
#[cfg(target_arch = "x86_64")]
mod x86_avx2_q4_0;
#[cfg(target_arch = "x86_64")]
mod x86_avx512_floats;
#[cfg(target_arch = "x86_64")]
mod x86_avx512_legacy;
#[cfg(target_arch = "x86_64")]
mod x86_avx512_q4_0;
#[cfg(target_arch = "x86_64")]
mod x86_avx512_q4_k;
#[cfg(target_arch = "x86_64")]
mod x86_avx512_q6_k;
#[cfg(target_arch = "x86_64")]
mod x86_avx512_q8_0;
#[cfg(target_arch = "x86_64")]
mod x86_avx512_rows16;
#[cfg(target_arch = "x86_64")]
pub(super) mod x86_avx512_tq2;

#[cfg(target_arch = "x86_64")]
pub(super) use x86_avx2_q4_0::per_pair as q4_0_repack_dot;

pub(crate) mod tinyblas;

use super::{Isa, VecDot};
use ggml_compat::GgmlType;

/// A tile of `rows` weight rows × `tokens` tokens: `run(n, w, w_stride, a, a_stride, out)`
/// reads `rows` weight rows of `n` elements starting every `w_stride` bytes of `w`, `tokens`
/// activation rows starting every `a_stride` bytes of `a`, and writes
/// `out[t * rows + r] = vec_dot(n, w row r, a row t)`.
#[derive(Clone, Copy)]
pub(super) struct GemmKernel {
    pub rows: usize,
    pub tokens: usize,
    pub run: TileFn,
}

/// `run(n, w, w_stride, a, a_stride, out)` of a [`GemmKernel`].
pub(super) type TileFn =
    fn(n: usize, w: &[u8], w_stride: usize, a: &[u8], a_stride: usize, out: &mut [f32]);

impl GemmKernel {
    /// The most outputs (`rows × tokens`) a tile has.
    pub const MAX_OUT: usize = 512;
}

/// Which per-pair function a tile must reproduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Order {
    /// The table's `vec_dot`.
    VecDot,
    /// `repack::vec_dot_q4_k_q8_k_gemm` (ggml's repacked Q4_K, tokens in groups of four).
    Q4KGemm,
    /// `repack::vec_dot_q6_k_q8_k_tiled` (ggml's tiled K-quant matmul).
    Q6KTiled,
    /// `repack::vec_dot_q4_0_q8_0_repack` (ggml's repacked Q4_0, every token).
    Q40Repack,
}

/// The tile for ggml's repacked Q4_0 order on the table of `isa`, shaped for a product of
/// `n_tokens` tokens (a one-token tile for decode), if there is one.
pub(super) fn q4_0_repack_kernel(isa: Isa, n_tokens: usize) -> Option<GemmKernel> {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if isa.is_available() => {
            // SAFETY: this CPU has every feature of the AVX-512 table (checked just above).
            Some(unsafe { x86_avx512_q4_0::kernel(n_tokens) })
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if isa.is_available() => {
            // SAFETY: this CPU has every feature of the AVX2 table (checked just above).
            Some(unsafe { x86_avx2_q4_0::kernel(n_tokens) })
        }
        _ => {
            let _ = n_tokens;
            None
        }
    }
}

/// The tile for ggml's repacked Q4_K gemm order (`repack::vec_dot_q4_k_q8_k_gemm`) on the table
/// of `isa`, for a matrix of `rows` rows whose tokens before `until` take that order (a multiple
/// of four; the rest take the gemv order), if there is one. AVX-512: 16 rows × 8 tokens when
/// `until` is a multiple of 8, else × 4 (so no group of four is left to the per-pair function);
/// AVX2: 4 × 4 — also on AVX-512 CPUs for matrices whose rows are not a multiple of 16, so that
/// no rows are left to the (far slower) per-pair function.
pub(super) fn q4_k_gemm_kernel(isa: Isa, rows: usize, until: usize) -> Option<GemmKernel> {
    match isa {
        _ if until < 4 => None,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if isa.is_available() && rows.is_multiple_of(16) => {
            let tokens = if until.is_multiple_of(8) { 8 } else { 4 };
            // SAFETY: this CPU has every feature of the AVX-512 table (checked just above).
            Some(unsafe { x86_avx512_q4_k::kernel(tokens) })
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx2 if Isa::Avx2.is_available() => {
            // SAFETY: this CPU has every feature of the AVX2 table (checked just above).
            Some(unsafe { x86_avx2_kquants::q4_k_gemm_kernel() })
        }
        _ => {
            let _ = rows;
            None
        }
    }
}

/// The batched kernel of weight type `ty` for the table of `isa` whose results equal `order`'s
/// per-pair function bit for bit, shaped for a product of `rows` rows × `n_tokens` tokens, if
/// there is one. The 16-row AVX-512 K-quant tiles are taken for row counts they divide; other
/// matrices take the AVX2 4-row tile of the same order, so that at most 3 rows are left to the
/// (far slower) per-pair function.
pub(super) fn kernel(
    isa: Isa,
    ty: GgmlType,
    order: Order,
    rows: usize,
    n_tokens: usize,
) -> Option<GemmKernel> {
    match order {
        Order::VecDot => vec_dot_kernel(isa, ty),
        Order::Q4KGemm if ty == GgmlType::Q4_K => q4_k_gemm_kernel(isa, rows, 8),
        #[cfg(target_arch = "x86_64")]
        Order::Q6KTiled
            if ty == GgmlType::Q6_K
                && isa == Isa::Avx512
                && isa.is_available()
                && rows.is_multiple_of(16) =>
        {
            // SAFETY: this CPU has every feature of the AVX-512 table (checked just above).
            Some(unsafe { x86_avx512_q6_k::kernel(n_tokens) })
        }
        #[cfg(target_arch = "x86_64")]
        Order::Q6KTiled
            if ty == GgmlType::Q6_K
                && matches!(isa, Isa::Avx512 | Isa::Avx2)
                && Isa::Avx2.is_available() =>
        {
            // SAFETY: this CPU has every feature of the AVX2 table (checked just above).
            Some(unsafe { x86_avx2_kquants::q6_k_tiled_kernel() })
        }
        _ => {
            let _ = (rows, n_tokens);
            None
        }
    }
}

/// llamafile's F16 × F16 order ([`tinyblas`]) on one instruction set: a tile, the same order for
/// one pair, and the activation conversion both read. The activations are not F16 bytes but
/// f32 bytes holding each value rounded to f16 (`widen(x, dst)`, `dst` 4 bytes a value), so a
/// tile loads them ready instead of converting each vector for every tile it is used in.
#[derive(Clone, Copy)]
pub(super) struct TbF16 {
    pub tile: GemmKernel,
    pub dot: VecDot,
    pub widen: fn(x: &[f32], dst: &mut [u8]),
}

/// The [`TbF16`] of `isa`, if it has one (AVX-512: ggml's `tinyBLAS<16, __m512, ..>`).
pub(super) fn tinyblas_f16(isa: Isa) -> Option<TbF16> {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if isa.is_available() => {
            // SAFETY: this CPU has every feature of the AVX-512 table (checked just above).
            Some(unsafe { x86_avx512_floats::tinyblas_f16() })
        }
        _ => None,
    }
}

/// The batched twin of the table's `vec_dot`.
fn vec_dot_kernel(isa: Isa, ty: GgmlType) -> Option<GemmKernel> {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if isa.is_available() && ty == GgmlType::F16 => {
            // SAFETY: this CPU has every feature of the AVX-512 table (checked just above).
            Some(unsafe { x86_avx512_floats::f16_kernel() })
        }
        // Q8_0 has its own tile: the generic one below, instantiated for Q8_0, made SmolLM2 Q8_0
        // prefill ~12% slower (it spills; one thread, user time, alternating runs).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if isa.is_available() && ty == GgmlType::Q8_0 => {
            // SAFETY: this CPU has every feature of the AVX-512 table (checked just above).
            Some(unsafe { x86_avx512_q8_0::kernel() })
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if isa.is_available() && ty == GgmlType::TQ2_0 => {
            // SAFETY: as above.
            Some(unsafe { x86_avx512_tq2::kernel() })
        }
        // The AVX-512 table's vec_dots of the 32-element types sum exactly as the AVX2 ones
        // (ggml's), and so do these tiles.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if isa.is_available() => {
            // SAFETY: as above.
            unsafe { x86_avx512_legacy::kernel(ty) }
        }
        // AVX2 tiles for the 32-element types (4 × 2 and 2 × 2, `vpmaddubsw` without VNNI)
        // measured no faster than the vec_dots, so the AVX2 table keeps those; no NEON tiles yet.
        _ => {
            let _ = ty;
            None
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::kernels::{quantize_activations, table};
    use ggml_compat::quant::quantize_row;

    /// A tiny xorshift generator: values in (-4, 4), some blocks scaled way down or up (shared
    /// with the gemv tests).
    pub(in crate::kernels) fn values(seed: &mut u32, len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let v = crate::testing::xorshift(seed) * 8.0;
                match (i / 32) % 7 {
                    3 => v * 1e-3,
                    5 => v * 50.0,
                    _ => v,
                }
            })
            .collect()
    }

    /// Asserts that every output `out[t * rows + r]` equals `want(r, t)` bit for bit (a tile's
    /// or a matmul's outputs against their per-pair specification), naming `what`, the row and
    /// the token on a mismatch; returns how many outputs were compared.
    pub(in crate::kernels) fn assert_outputs(
        out: &[f32],
        rows: usize,
        what: &dyn std::fmt::Display,
        want: impl Fn(usize, usize) -> f32,
    ) -> usize {
        for (t, outs) in out.chunks_exact(rows).enumerate() {
            for (r, got) in outs.iter().enumerate() {
                let want = want(r, t);
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{what}, row {r} token {t}: {got} vs {want}"
                );
            }
        }
        out.len()
    }

    /// Each tile output equals the table's vec_dot bit for bit, for every type with a tile on
    /// every instruction set this CPU runs, block counts odd and even.
    #[test]
    fn tiles_equal_vec_dot_bit_for_bit() {
        let mut seed = 0x9e37_79b9u32;
        let mut checked = 0;
        for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
            let t = table(isa).unwrap();
            for ty in crate::kernels::supported_types() {
                let Some(g) = kernel(isa, ty, Order::VecDot, 16, 64) else {
                    continue;
                };
                let k = t.get(ty).unwrap();
                let block = ty.block_size().max(k.vec_dot_type.block_size());
                // F16 (blocks of 1): whole steps of 64, f64 tails, both.
                let counts: &[usize] = if block == 1 {
                    &[1, 63, 64, 130, 576, 705]
                } else {
                    &[1, 2, 3, 18, 25]
                };
                for &blocks in counts {
                    let n = block * blocks;
                    let wb = ty.row_bytes(n as u64).unwrap() as usize;
                    let ab = k.vec_dot_type.row_bytes(n as u64).unwrap() as usize;
                    // Strides wider than a row, to catch a kernel that assumes packed rows.
                    let (ws, as_) = (wb + 3, ab + 5);
                    let mut w = vec![0u8; ws * g.rows];
                    for r in 0..g.rows {
                        let x = values(&mut seed, n);
                        let dst = &mut w[r * ws..r * ws + wb];
                        if ty.is_quantized() {
                            quantize_row(ty, &x, dst, None).unwrap();
                        } else {
                            quantize_activations(ty, &x, n, dst).unwrap();
                        }
                    }
                    let mut a = vec![0u8; as_ * g.tokens];
                    for t in 0..g.tokens {
                        let x = values(&mut seed, n);
                        let dst = &mut a[t * as_..t * as_ + ab];
                        quantize_activations(k.vec_dot_type, &x, n, dst).unwrap();
                    }
                    let mut out = vec![f32::NAN; g.rows * g.tokens];
                    (g.run)(n, &w, ws, &a, as_, &mut out);
                    checked += assert_outputs(
                        &out,
                        g.rows,
                        &format_args!("{isa} {ty} {blocks} blocks"),
                        |r, t| (k.vec_dot)(n, &w[r * ws..][..wb], &a[t * as_..][..ab]),
                    );
                }
            }
        }
        if Isa::Avx512.is_available() {
            assert!(checked > 0, "no tile kernel was tested");
        }
    }

    /// Pushes some of the Q6_K row `r`'s values to the ends of their ranges: one sub-block's
    /// codes all 63 or all 0 (its `ql`, `qh` bytes 0xFF or 0x00), and scales −128 and 127.
    fn q6_k_extremes(row: &mut [u8], r: usize) {
        for blk in row.chunks_exact_mut(210) {
            let fill = if r.is_multiple_of(2) { 0xFF } else { 0x00 };
            // Elements 16 (r % 2) ..+ 16: ql[16 (r % 2)..], qh[16 (r % 2)..] of the first half.
            let l = 16 * (r % 2);
            blk[l..l + 16].fill(fill);
            blk[128 + l..128 + l + 16].fill(fill);
            blk[192 + r % 16] = 0x80;
            blk[192 + (r + 5) % 16] = 0x7F;
        }
    }

    /// Sets some of the Q8_K row of token `t` to −128 and 127 (Q8_K keeps −128 for a block's
    /// largest magnitude) and its `bsums` to match.
    fn q8_k_extremes(row: &mut [u8], t: usize) {
        for blk in row.chunks_exact_mut(292) {
            for i in 0..16 {
                blk[4 + 16 * (t % 16) + i] = if (i + t).is_multiple_of(3) {
                    0x7F
                } else {
                    0x80
                };
            }
            for s in 0..16 {
                let sum: i16 = blk[4 + 16 * s..4 + 16 * s + 16]
                    .iter()
                    .map(|&q| q as i8 as i16)
                    .sum();
                blk[260 + 2 * s..262 + 2 * s].copy_from_slice(&sum.to_le_bytes());
            }
        }
    }

    /// The K-quant tiles (Q4_K's of 8 and 4 tokens, Q6_K's of 8, 16 and 32) equal `repack.rs`'s
    /// per-pair functions bit for bit; weights and activations partly forced to their extremes.
    #[test]
    fn k_quant_tiles_equal_repack_order_bit_for_bit() {
        use crate::kernels::repack;
        let mut seed = 0x2545_f491u32;
        let mut checked = 0;
        for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
            let q6 = |n_tokens| kernel(isa, GgmlType::Q6_K, Order::Q6KTiled, 16, n_tokens);
            let cases = [
                (GgmlType::Q4_K, q4_k_gemm_kernel(isa, 16, 8)),
                (GgmlType::Q4_K, q4_k_gemm_kernel(isa, 16, 4)),
                (GgmlType::Q6_K, q6(8)),
                (GgmlType::Q6_K, q6(16)),
                (GgmlType::Q6_K, q6(32)),
            ];
            for (ty, g) in cases {
                let Some(g) = g else {
                    continue;
                };
                let per_pair: crate::kernels::VecDot = match ty {
                    GgmlType::Q4_K => repack::vec_dot_q4_k_q8_k_gemm,
                    _ => repack::vec_dot_q6_k_q8_k_tiled,
                };
                for blocks in [1usize, 2, 3, 5, 8] {
                    let n = 256 * blocks;
                    let wb = ty.row_bytes(n as u64).unwrap() as usize;
                    let ab = GgmlType::Q8_K.row_bytes(n as u64).unwrap() as usize;
                    let (ws, as_) = (wb + 7, ab + 1);
                    let mut w = vec![0u8; ws * g.rows];
                    for r in 0..g.rows {
                        let x = values(&mut seed, n);
                        let row = &mut w[r * ws..r * ws + wb];
                        quantize_row(ty, &x, row, None).unwrap();
                        if ty == GgmlType::Q4_K {
                            // Block r % blocks: a quant byte of nibbles 0 / 15, and the packed
                            // scales all ones (every 6-bit scale and min 63) in every third row.
                            let blk = 144 * (r % blocks);
                            row[blk + 16 + 5 * r % 128] = if r % 2 == 0 { 0x0F } else { 0xF0 };
                            if r % 3 == 0 {
                                row[blk + 4..blk + 16].fill(0xFF);
                            }
                        } else {
                            q6_k_extremes(row, r);
                        }
                    }
                    let mut a = vec![0u8; as_ * g.tokens];
                    for t in 0..g.tokens {
                        let x = values(&mut seed, n);
                        let dst = &mut a[t * as_..t * as_ + ab];
                        quantize_activations(GgmlType::Q8_K, &x, n, dst).unwrap();
                        q8_k_extremes(dst, t);
                    }
                    let mut out = vec![f32::NAN; g.rows * g.tokens];
                    (g.run)(n, &w, ws, &a, as_, &mut out);
                    checked += assert_outputs(
                        &out,
                        g.rows,
                        &format_args!("{isa} {ty} {}x{} {blocks} blocks", g.rows, g.tokens),
                        |r, t| per_pair(n, &w[r * ws..][..wb], &a[t * as_..][..ab]),
                    );
                }
            }
        }
        if Isa::Avx512.is_available() {
            assert!(checked > 0, "no K-quant tile was tested");
        }
    }

    /// Through `matmul` (tiles, partial tiles and tails on 1–3 threads), a repacked Q4_K matrix
    /// gives the gemm order for the tokens in whole groups of four and the gemv order for the
    /// rest (row counts a multiple of 16 or only of 8, token counts taking the 8- or the
    /// 4-token tile), and Q6_K from 8 tokens the tiled order (16-row tiles of 8, 16 or 32 tokens
    /// chosen by the last chunk; the 4-row tile where 16 does not divide the rows; rows and
    /// tokens left over, fewer rows than a tile) — bit for bit.
    #[test]
    fn matmul_keeps_the_k_quant_orders() {
        use crate::kernels::{matmul, repack, WeightMatrix};
        let mut seed = 0x1357_9bdfu32;
        let cols = 512;
        let q4_k_tokens = [4usize, 11, 13, 21, 36];
        let shapes = q4_k_tokens
            .iter()
            .flat_map(|&n| [(GgmlType::Q4_K, 24, n), (GgmlType::Q4_K, 48, n)])
            .chain([
                (GgmlType::Q6_K, 13, 4),
                (GgmlType::Q6_K, 13, 11),
                (GgmlType::Q6_K, 37, 8),
                (GgmlType::Q6_K, 37, 27),
                (GgmlType::Q6_K, 48, 16),
                (GgmlType::Q6_K, 37, 35),
                (GgmlType::Q6_K, 40, 21),
                (GgmlType::Q6_K, 32, 64),
            ]);
        for (ty, rows, n_tokens) in shapes {
            let wb = ty.row_bytes(cols as u64).unwrap() as usize;
            let mut w = vec![0u8; wb * rows];
            for row in w.chunks_exact_mut(wb) {
                quantize_row(ty, &values(&mut seed, cols), row, None).unwrap();
            }
            let wm = WeightMatrix::new("t", ty, rows, cols, &w).unwrap();
            let scalar = crate::kernels::active_isa() == "scalar";
            let until = n_tokens - n_tokens % 4;
            let x = values(&mut seed, cols * n_tokens);
            let ab = GgmlType::Q8_K.row_bytes(cols as u64).unwrap() as usize;
            let mut a = vec![0u8; ab * n_tokens];
            quantize_activations(GgmlType::Q8_K, &x, cols, &mut a).unwrap();
            for threads in 1..=3 {
                let mut out = vec![f32::NAN; rows * n_tokens];
                matmul(&wm, &x, n_tokens, &mut out, threads).unwrap();
                let what = format_args!("{ty} {rows} rows, {n_tokens} tokens on {threads}");
                assert_outputs(&out, rows, &what, |r, t| {
                    let per_pair: crate::kernels::VecDot = match ty {
                        _ if scalar => crate::kernels::kernels(ty).unwrap().vec_dot,
                        GgmlType::Q4_K if t < until => repack::vec_dot_q4_k_q8_k_gemm,
                        GgmlType::Q4_K => repack::vec_dot_q4_k_q8_k_gemv,
                        _ if n_tokens < repack::TILED_MIN_BATCH => {
                            crate::kernels::kernels(ty).unwrap().vec_dot
                        }
                        _ => repack::vec_dot_q6_k_q8_k_tiled,
                    };
                    per_pair(cols, wm.row(r).unwrap(), &a[t * ab..(t + 1) * ab])
                });
            }
        }
    }

    /// llamafile's F16 order: the AVX-512 tile and single pair equal the portable spec
    /// (`tinyblas::vec_dot_f16_tinyblas` on the F16 activations) bit for bit.
    #[test]
    fn tinyblas_f16_tile_and_pair_equal_spec_bit_for_bit() {
        let Some(tb) = tinyblas_f16(Isa::Avx512) else {
            return;
        };
        let mut seed = 0x0bad_cafeu32;
        let g = tb.tile;
        for n in [16usize, 48, 576, 1536] {
            let (ws, as_) = (2 * n + 6, 4 * n + 12);
            let mut w = vec![0u8; ws * g.rows];
            for r in 0..g.rows {
                let x = values(&mut seed, n);
                quantize_activations(GgmlType::F16, &x, n, &mut w[r * ws..r * ws + 2 * n]).unwrap();
            }
            let mut a16 = vec![0u8; 2 * n * g.tokens];
            let mut a32 = vec![0u8; as_ * g.tokens];
            for t in 0..g.tokens {
                let x = values(&mut seed, n);
                let a16 = &mut a16[t * 2 * n..(t + 1) * 2 * n];
                quantize_activations(GgmlType::F16, &x, n, a16).unwrap();
                (tb.widen)(&x, &mut a32[t * as_..t * as_ + 4 * n]);
            }
            let mut out = vec![f32::NAN; g.rows * g.tokens];
            (g.run)(n, &w, ws, &a32, as_, &mut out);
            for r in 0..g.rows {
                for t in 0..g.tokens {
                    let (wr, ar) = (&w[r * ws..r * ws + 2 * n], &a16[t * 2 * n..(t + 1) * 2 * n]);
                    let want = tinyblas::vec_dot_f16_tinyblas(n, wr, ar);
                    let got = out[t * g.rows + r];
                    assert_eq!(got.to_bits(), want.to_bits(), "tile n {n} r {r} t {t}");
                    let pair = (tb.dot)(n, wr, &a32[t * as_..t * as_ + 4 * n]);
                    assert_eq!(pair.to_bits(), want.to_bits(), "pair n {n} r {r} t {t}");
                }
            }
        }
    }

    /// Through `matmul` on 1–3 threads: an F16 matrix gives llamafile's order for batches it
    /// takes (rows % 4, columns % 16, two tokens or more; odd counts leave partial tiles) and
    /// the vec_dot otherwise; Q8_0 (activations converted on several threads from 16K floats)
    /// gives its vec_dot — bit for bit.
    #[test]
    fn matmul_keeps_the_float_orders() {
        use crate::kernels::{kernels, matmul, WeightMatrix};
        let avx512 = crate::kernels::active_isa() == "avx512";
        let mut seed = 0x7f4a_7c15u32;
        for (ty, rows, cols) in [
            (GgmlType::F16, 28, 576),
            (GgmlType::F16, 30, 576),
            (GgmlType::F16, 12, 40),
            (GgmlType::Q8_0, 20, 576),
        ] {
            let k = *kernels(ty).unwrap();
            let wb = ty.row_bytes(cols as u64).unwrap() as usize;
            let mut w = vec![0u8; wb * rows];
            for row in w.chunks_exact_mut(wb) {
                let x = values(&mut seed, cols);
                if ty == GgmlType::F16 {
                    quantize_activations(ty, &x, cols, row).unwrap();
                } else {
                    quantize_row(ty, &x, row, None).unwrap();
                }
            }
            let wm = WeightMatrix::new("t", ty, rows, cols, &w).unwrap();
            for n_tokens in [1usize, 2, 7, 13, 37] {
                let x = values(&mut seed, cols * n_tokens);
                let ab = k.vec_dot_type.row_bytes(cols as u64).unwrap() as usize;
                let mut a = vec![0u8; ab * n_tokens];
                quantize_activations(k.vec_dot_type, &x, cols, &mut a).unwrap();
                let tb = avx512 && ty == GgmlType::F16 && tinyblas::takes_f16(rows, cols, n_tokens);
                for threads in 1..=3 {
                    let mut out = vec![f32::NAN; rows * n_tokens];
                    matmul(&wm, &x, n_tokens, &mut out, threads).unwrap();
                    let what = format_args!("{ty} {rows}x{cols}, {n_tokens} tokens on {threads}");
                    assert_outputs(&out, rows, &what, |r, t| {
                        let ar = &a[t * ab..(t + 1) * ab];
                        if tb {
                            tinyblas::vec_dot_f16_tinyblas(cols, wm.row(r).unwrap(), ar)
                        } else {
                            (k.vec_dot)(cols, wm.row(r).unwrap(), ar)
                        }
                    });
                }
            }
        }
    }

    /// Q4_0 rows and Q8_0 activation rows of `n` elements (wider strides than the rows), the
    /// activations with a few bytes forced to −128 and the weights to their nibble ends.
    fn q4_0_operands(seed: &mut u32, n: usize, rows: usize, tokens: usize) -> Operands {
        let wb = GgmlType::Q4_0.row_bytes(n as u64).unwrap() as usize;
        let ab = GgmlType::Q8_0.row_bytes(n as u64).unwrap() as usize;
        let (ws, as_) = (wb + 5, ab + 3);
        let mut w = vec![0u8; ws * rows];
        for r in 0..rows {
            let dst = &mut w[r * ws..r * ws + wb];
            quantize_row(GgmlType::Q4_0, &values(seed, n), dst, None).unwrap();
            dst[2 + 18 * (r % (n / 32))] = if r % 2 == 0 { 0x00 } else { 0xFF };
        }
        let mut a = vec![0u8; as_ * tokens];
        for t in 0..tokens {
            let dst = &mut a[t * as_..t * as_ + ab];
            quantize_activations(GgmlType::Q8_0, &values(seed, n), n, dst).unwrap();
            dst[2 + 34 * (t % (n / 32)) + t % 32] = 0x80;
        }
        Operands {
            w,
            ws,
            wb,
            a,
            as_,
            ab,
        }
    }

    struct Operands {
        w: Vec<u8>,
        ws: usize,
        wb: usize,
        a: Vec<u8>,
        as_: usize,
        ab: usize,
    }

    impl Operands {
        fn w_row(&self, r: usize) -> &[u8] {
            &self.w[r * self.ws..r * self.ws + self.wb]
        }
        fn a_row(&self, t: usize) -> &[u8] {
            &self.a[t * self.as_..t * self.as_ + self.ab]
        }
    }

    /// The Q4_0 repack-order tiles (gemm and gemv shapes) and the per-pair SIMD twin equal
    /// `repack::vec_dot_q4_0_q8_0_repack_portable` bit for bit.
    #[test]
    fn q4_0_repack_tiles_equal_spec_bit_for_bit() {
        use crate::kernels::repack::vec_dot_q4_0_q8_0_repack_portable as spec;
        let mut seed = 0x0bad_cafeu32;
        let mut checked = 0;
        for blocks in [1usize, 2, 3, 18, 48] {
            let n = 32 * blocks;
            let ops = q4_0_operands(&mut seed, n, 16, 8);
            for r in 0..16 {
                for t in 0..8 {
                    let want = spec(n, ops.w_row(r), ops.a_row(t));
                    let got = crate::kernels::repack::vec_dot_q4_0_q8_0_repack(
                        n,
                        ops.w_row(r),
                        ops.a_row(t),
                    );
                    assert_eq!(got.to_bits(), want.to_bits(), "twin {blocks} blocks");
                }
            }
            for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
                for n_tokens in [1, 4, 8] {
                    let Some(g) = q4_0_repack_kernel(isa, n_tokens) else {
                        continue;
                    };
                    let mut out = vec![f32::NAN; g.rows * g.tokens];
                    (g.run)(n, &ops.w, ops.ws, &ops.a, ops.as_, &mut out);
                    checked += assert_outputs(
                        &out,
                        g.rows,
                        &format_args!("{isa} {blocks} blocks"),
                        |r, t| spec(n, ops.w_row(r), ops.a_row(t)),
                    );
                }
            }
        }
        if Isa::Avx512.is_available() {
            assert!(checked > 0, "no Q4_0 tile was tested");
        }
    }

    /// Through `matmul` (tiles, leftover rows and tokens, 1–3 threads), a Q4_0 matrix with a
    /// multiple of 8 rows gives the repack order on the x86 tables and the vec_dot on the scalar
    /// one; other row counts keep the vec_dot.
    #[test]
    fn matmul_keeps_the_q4_0_repack_order() {
        use crate::kernels::{matmul, repack, WeightMatrix};
        let mut seed = 0x7f4a_7c15u32;
        let cols = 576;
        let ab = GgmlType::Q8_0.row_bytes(cols as u64).unwrap() as usize;
        let x86 = matches!(crate::kernels::active_isa(), "avx2" | "avx512");
        for rows in [40usize, 48, 20] {
            let ops = q4_0_operands(&mut seed, cols, rows, 0);
            let w: Vec<u8> = (0..rows).flat_map(|r| ops.w_row(r).to_vec()).collect();
            let wm = WeightMatrix::new("t", GgmlType::Q4_0, rows, cols, &w).unwrap();
            let per_pair: crate::kernels::VecDot = if x86 && rows % 8 == 0 {
                repack::vec_dot_q4_0_q8_0_repack_portable
            } else {
                crate::kernels::kernels(GgmlType::Q4_0).unwrap().vec_dot
            };
            for n_tokens in [1usize, 2, 3, 4, 5, 8, 11, 21] {
                let x = values(&mut seed, cols * n_tokens);
                let mut a = vec![0u8; ab * n_tokens];
                quantize_activations(GgmlType::Q8_0, &x, cols, &mut a).unwrap();
                for threads in 1..=3 {
                    let mut out = vec![f32::NAN; rows * n_tokens];
                    matmul(&wm, &x, n_tokens, &mut out, threads).unwrap();
                    let what = format_args!("{rows} rows, {n_tokens} tokens on {threads}");
                    assert_outputs(&out, rows, &what, |r, t| {
                        per_pair(cols, wm.row(r).unwrap(), &a[t * ab..][..ab])
                    });
                }
            }
        }
    }
}
