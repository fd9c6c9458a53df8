//! Dequantization throughput of every type `ggml_compat` converts, on a 4096 × 256 matrix
//! (4096 rows of 256 columns: one K-quant super-block per row, 1 Mi elements in all).
//!
//! Two throughputs per type, from the same runs: bytes of *quantized* data read per second
//! (`<type>/bytes`, what matters when dequantization is memory-bound: a 4-bit type reads a
//! quarter of what F16 reads for the same elements) and elements produced per second
//! (`<type>/elements`).
//!
//! ```text
//! cargo bench --bench dequant                                  # full run
//! cargo bench --bench dequant -- --measurement-time 1 --warm-up-time 0.5   # quick look
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ggml_compat::quant::{dequantize, fns, quantize_row};
use ggml_compat::GgmlType;
use std::hint::black_box;

const ROWS: usize = 4096;
const COLS: usize = 256;

/// The matrix quantized to `ty` with ggml's reference quantizer, row by row. Stored in `u64`s so
/// the bytes are aligned for every block struct, as in an mmapped GGUF (misaligned bytes would
/// be copied before dequantizing, and the copy would be measured).
fn quantized(ty: GgmlType, x: &[f32]) -> Vec<u64> {
    let row_bytes = ty.row_bytes(COLS as u64).expect("whole blocks") as usize;
    let len = ROWS * row_bytes;
    let mut storage = vec![0u64; len.div_ceil(8)];
    let bytes = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut storage)[..len];
    for (src, dst) in x.chunks_exact(COLS).zip(bytes.chunks_exact_mut(row_bytes)) {
        quantize_row(ty, src, dst, None).expect("quantize");
    }
    storage
}

fn dequant(c: &mut Criterion) {
    // The same values for every type.
    let x = common::values(ROWS * COLS, 1);
    let mut out = vec![0f32; ROWS * COLS];
    for ty in GgmlType::ALL.into_iter().filter(|&t| fns(t).is_some()) {
        let storage = quantized(ty, &x);
        let len = ROWS * ty.row_bytes(COLS as u64).expect("whole blocks") as usize;
        let bytes = &bytemuck::cast_slice::<u64, u8>(&storage)[..len];
        let mut group = c.benchmark_group(ty.name());
        for (what, throughput) in [
            ("bytes", Throughput::Bytes(bytes.len() as u64)),
            ("elements", Throughput::Elements((ROWS * COLS) as u64)),
        ] {
            group.throughput(throughput);
            group.bench_function(BenchmarkId::from_parameter(what), |b| {
                b.iter(|| {
                    dequantize(ty, black_box(bytes), &mut out).expect("dequantize");
                    black_box(&out);
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, dequant);
criterion_main!(benches);
