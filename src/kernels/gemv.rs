//! Multi-row gemv for decode (one token): one call computes the dot products of `R` weight rows
//! with one activation row. ggml's vec_dot keeps one accumulator chain per row, whose latency
//! (a fused multiply-add per block, in order) bounds a one-row-at-a-time loop; running `R` rows'
//! chains side by side lets them overlap. Each row's float operations stay exactly its vec_dot's,
//! so every output is bit-identical to the table's `vec_dot` (tested below).
//!
//! A kernel is a [`GemmKernel`] with `tokens == 1`. `matmul.rs` hands it rows that lie far apart
//! (a task's rows cut into `R` equal runs, each read front to back): the hardware prefetchers
//! follow several sequential streams, but not adjacent rows read side by side (measured: that
//! was slower than one row at a time once the weights stream from memory), one row chunk per
//! thread. Rows per call: 4 (Q4_1, Q2_0, TQ2_0), 2 (Q8_0, F16); `KILN_GEMV_ROWS=N` overrides it
//! for all types (for measurements; a count without a kernel, e.g. 1, turns the gemv off).

#[cfg(target_arch = "x86_64")]
mod x86_avx512;

use super::gemm::GemmKernel;
use super::Isa;
use ggml_compat::GgmlType;

/// The multi-row gemv of weight type `ty` for the table of `isa` whose outputs equal that
/// table's `vec_dot` bit for bit, if there is one.
pub(super) fn kernel(isa: Isa, ty: GgmlType) -> Option<GemmKernel> {
    static R: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let over = *R.get_or_init(|| {
        std::env::var("KILN_GEMV_ROWS")
            .ok()
            .and_then(|s| s.parse().ok())
    });
    let rows = over.unwrap_or(match ty {
        GgmlType::Q8_0 | GgmlType::F16 => 2,
        _ => 4,
    });
    kernel_rows(isa, ty, rows)
}

fn kernel_rows(isa: Isa, ty: GgmlType, rows: usize) -> Option<GemmKernel> {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if isa.is_available() && ty == GgmlType::TQ2_0 => {
            // SAFETY: this CPU has every feature of the AVX-512 table (checked just above).
            unsafe { super::gemm::x86_avx512_tq2::gemv_kernel(rows) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if isa.is_available() => {
            // SAFETY: as above.
            unsafe { x86_avx512::kernel(ty, rows) }
        }
        _ => {
            let _ = (ty, rows);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gemm::tests::{assert_outputs, values};
    use crate::kernels::{quantize_activations, table};
    use ggml_compat::quant::quantize_row;

    /// Every gemv output equals the table's vec_dot bit for bit, for every type and row count
    /// with a kernel on every instruction set this CPU runs, block counts odd and even, rows
    /// read at an odd offset into the weights.
    #[test]
    fn gemv_equals_vec_dot_bit_for_bit() {
        let mut seed = 0x2545_f491u32;
        let mut checked = 0;
        for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
            let t = table(isa).unwrap();
            for ty in crate::kernels::supported_types() {
                for rows in 1..=8 {
                    let Some(g) = kernel_rows(isa, ty, rows) else {
                        continue;
                    };
                    assert_eq!((g.rows, g.tokens), (rows, 1));
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
                        let row_bytes = ty.row_bytes(n as u64).unwrap() as usize;
                        // One spare byte in front, so rows start at odd addresses.
                        let mut wq = vec![0u8; 1 + rows * row_bytes];
                        for r in 0..rows {
                            let w = values(&mut seed, n);
                            let dst = &mut wq[1 + r * row_bytes..][..row_bytes];
                            quantize_row(ty, &w, dst, None).unwrap();
                        }
                        let a = values(&mut seed, n);
                        let vdt = k.vec_dot_type;
                        let mut aq = vec![0u8; vdt.row_bytes(n as u64).unwrap() as usize];
                        quantize_activations(vdt, &a, n, &mut aq).unwrap();
                        let mut out = vec![f32::NAN; rows];
                        (g.run)(n, &wq[1..], row_bytes, &aq, aq.len(), &mut out);
                        assert_outputs(
                            &out,
                            rows,
                            &format_args!("{isa} {ty} {rows} rows × {blocks} blocks"),
                            |r, _| (k.vec_dot)(n, &wq[1 + r * row_bytes..][..row_bytes], &aq),
                        );
                        checked += 1;
                    }
                }
            }
        }
        if Isa::Avx512.is_available() {
            assert!(checked > 0, "no gemv kernel was checked");
        }
    }

    /// One pass over several matrices equals one matmul each, bit for bit, for the decode types
    /// with and without a gemv (row counts not a multiple of the gemv's rows), and falls back for
    /// mixed types and batches.
    #[test]
    fn matmul_many_equals_one_matmul_each() {
        use crate::kernels::{
            matmul, matmul_many_with, MatmulScratch, ScopedThreads, WeightMatrix,
        };
        let mut seed = 0x51ed_270bu32;
        let cols = 256;
        for (tys, n_tokens) in [
            ([GgmlType::Q4_1, GgmlType::Q4_1, GgmlType::Q4_1], 1),
            ([GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::Q8_0], 1),
            ([GgmlType::Q2_0, GgmlType::Q2_0, GgmlType::Q2_0], 1),
            ([GgmlType::F16, GgmlType::F16, GgmlType::F16], 1),
            ([GgmlType::TQ2_0, GgmlType::TQ2_0, GgmlType::TQ2_0], 1),
            ([GgmlType::Q5_K, GgmlType::Q5_K, GgmlType::Q5_K], 1),
            ([GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::Q4_1], 1),
            ([GgmlType::Q4_1, GgmlType::Q4_1, GgmlType::Q4_1], 3),
        ] {
            let rows = [37usize, 64, 9];
            let bytes: Vec<Vec<u8>> = tys
                .iter()
                .zip(rows)
                .map(|(&ty, r)| {
                    let rb = ty.row_bytes(cols as u64).unwrap() as usize;
                    let mut b = vec![0u8; r * rb];
                    for row in b.chunks_exact_mut(rb) {
                        let v = values(&mut seed, cols);
                        if ty.is_quantized() {
                            quantize_row(ty, &v, row, None).unwrap();
                        } else {
                            quantize_activations(ty, &v, cols, row).unwrap();
                        }
                    }
                    b
                })
                .collect();
            let ws: Vec<WeightMatrix> = (0..3)
                .map(|i| WeightMatrix::new("w", tys[i], rows[i], cols, &bytes[i]).unwrap())
                .collect();
            let x = values(&mut seed, n_tokens * cols);
            for threads in [1, 3] {
                let mut got: Vec<Vec<f32>> =
                    rows.iter().map(|r| vec![f32::NAN; r * n_tokens]).collect();
                let mut outs: Vec<&mut [f32]> = got.iter_mut().map(|v| v.as_mut_slice()).collect();
                let par = ScopedThreads::new(threads);
                matmul_many_with(
                    &par,
                    &mut MatmulScratch::default(),
                    &ws,
                    &x,
                    n_tokens,
                    &mut outs,
                )
                .unwrap();
                for (i, w) in ws.iter().enumerate() {
                    let mut want = vec![0f32; rows[i] * n_tokens];
                    matmul(w, &x, n_tokens, &mut want, threads).unwrap();
                    let same = got[i]
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{tys:?} × {n_tokens} tokens on {threads} threads, matrix {i}"
                    );
                }
            }
        }
    }

    /// Timing, not a check (`cargo test --release --lib gemv_speed -- --ignored --nocapture`):
    /// a 92 MB Q4_1 matrix (beyond the caches) times one token on a two-thread pool, one
    /// vec_dot per row against the gemv on rows far apart, alternating.
    #[test]
    #[ignore]
    fn gemv_speed() {
        use crate::kernels::matmul::Parallel;
        use std::time::Instant;
        let ty = GgmlType::Q4_1;
        let (rows, cols) = (256 * 1024usize, 576usize);
        let isa = Isa::best();
        let k = table(isa).unwrap().get(ty).unwrap();
        let rb = ty.row_bytes(cols as u64).unwrap() as usize;
        let mut seed = 3u32;
        let mut proto = vec![0u8; 64 * rb];
        for row in proto.chunks_exact_mut(rb) {
            quantize_row(ty, &values(&mut seed, cols), row, None).unwrap();
        }
        let w: Vec<u8> = (0..rows)
            .flat_map(|i| proto[(i % 64) * rb..][..rb].to_vec())
            .collect();
        let mut aq = vec![0u8; GgmlType::Q8_1.row_bytes(cols as u64).unwrap() as usize];
        quantize_activations(GgmlType::Q8_1, &values(&mut seed, cols), cols, &mut aq).unwrap();
        for threads in [1, 2] {
            let pool = crate::threadpool::ThreadPool::new(threads);
            let tasks = 4 * threads * 64;
            let chunk = rows / tasks;
            let mut res: Vec<(f64, f64)> = Vec::new();
            for _ in 0..7 {
                let mut t = [0f64; 2];
                for (mode, t) in t.iter_mut().enumerate() {
                    let t0 = Instant::now();
                    pool.run(tasks, &|i| {
                        let r0 = i * chunk;
                        let mut out = [0f32; 4];
                        if mode == 0 {
                            for r in r0..r0 + chunk {
                                out[0] += (k.vec_dot)(cols, &w[r * rb..][..rb], &aq);
                            }
                        } else {
                            let g = kernel_rows(isa, ty, 4).unwrap();
                            let run = chunk / 4;
                            for r in r0..r0 + run {
                                (g.run)(cols, &w[r * rb..], run * rb, &aq, aq.len(), &mut out);
                            }
                        }
                        std::hint::black_box(out);
                    });
                    *t = w.len() as f64 / t0.elapsed().as_secs_f64() / 1e9;
                }
                res.push((t[0], t[1]));
            }
            let mut ratio: Vec<f64> = res.iter().map(|(a, b)| b / a).collect();
            ratio.sort_by(f64::total_cmp);
            eprintln!(
                "{threads} threads: GB/s vec_dot, gemv {res:.1?}; median gemv/vec_dot {:.2}",
                ratio[3]
            );
        }
    }
}
