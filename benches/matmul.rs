//! Prefill matmul throughput: a SmolLM2 `ffn_gate`-shaped weight (1536 rows × 576 columns; K
//! types 1536 × 768, a whole number of super-blocks) times 64 tokens on one thread, for the
//! types of the benchmark files. Two results per type, from the same run: `matmul` (what
//! `kiln` runs: batched tiles where the active table has them) and `vec_dots` (one `vec_dot`
//! per (row, token) pair, the path before batching), so their ratio is the batching gain.
//!
//! ```text
//! cargo bench --bench matmul -- --measurement-time 2 --warm-up-time 0.5
//! KILN_KERNELS=avx2 cargo bench --bench matmul          # another instruction set
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ggml_compat::quant::quantize_row;
use ggml_compat::GgmlType;
use kiln::kernels::{
    kernels, matmul_with, quantize_activations, MatmulScratch, ScopedThreads, WeightMatrix,
};
use std::hint::black_box;

const ROWS: usize = 1536;
const TOKENS: usize = 64;

fn bench(c: &mut Criterion) {
    use GgmlType::*;
    let mut group = c.benchmark_group("matmul");
    for ty in [Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K, F16] {
        let cols = if ty.block_size() == 256 { 768 } else { 576 };
        let row_bytes = ty.row_bytes(cols as u64).unwrap() as usize;
        let w = common::values(ROWS * cols, 7);
        let mut bytes = vec![0u8; ROWS * row_bytes];
        for (src, dst) in w.chunks_exact(cols).zip(bytes.chunks_exact_mut(row_bytes)) {
            if ty.is_quantized() {
                quantize_row(ty, src, dst, None).unwrap();
            } else {
                quantize_activations(ty, src, cols, dst).unwrap();
            }
        }
        let wm = WeightMatrix::new("bench", ty, ROWS, cols, &bytes).unwrap();
        let x = common::values(TOKENS * cols, 8);
        let mut out = vec![0f32; TOKENS * ROWS];
        let mut scratch = MatmulScratch::default();
        let one = ScopedThreads::new(1);
        group.throughput(Throughput::Elements((ROWS * cols * TOKENS) as u64));
        group.bench_function(BenchmarkId::new("matmul", ty.name()), |b| {
            b.iter(|| matmul_with(&one, &mut scratch, &wm, black_box(&x), TOKENS, &mut out))
        });
        let k = kernels(ty).unwrap();
        let act_row = k.vec_dot_type.row_bytes(cols as u64).unwrap() as usize;
        let mut act = vec![0u8; TOKENS * act_row];
        group.bench_function(BenchmarkId::new("vec_dots", ty.name()), |b| {
            b.iter(|| {
                quantize_activations(k.vec_dot_type, black_box(&x), cols, &mut act).unwrap();
                for r in 0..ROWS {
                    let w_row = wm.row(r).unwrap();
                    for t in 0..TOKENS {
                        let a = &act[t * act_row..(t + 1) * act_row];
                        out[t * ROWS + r] = (k.vec_dot)(cols, w_row, a);
                    }
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
