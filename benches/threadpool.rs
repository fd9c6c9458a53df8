//! Per-op synchronization cost: one empty data-parallel op on the persistent pool vs spawning
//! scoped threads (what a naive matmul does), and the matmul-style task hand-out. Decode runs
//! hundreds of ops per token, so this cost multiplies.

use criterion::{criterion_group, criterion_main, Criterion};
use kiln::kernels::matmul::{Parallel, ScopedThreads};
use kiln::threadpool::ThreadPool;
use std::hint::black_box;

fn sync_cost(c: &mut Criterion) {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    let mut g = c.benchmark_group(format!("empty op, {threads} threads"));
    let pool = ThreadPool::new(threads);
    g.bench_function("pool broadcast", |b| {
        b.iter(|| {
            pool.broadcast(&|ith, nth| {
                black_box((ith, nth));
            })
        })
    });
    g.bench_function("pool run 64 tasks", |b| {
        b.iter(|| {
            pool.run(64, &|i| {
                black_box(i);
            })
        })
    });
    let scoped = ScopedThreads::new(threads);
    g.bench_function("scoped threads 64 tasks", |b| {
        b.iter(|| {
            scoped.run(64, &|i| {
                black_box(i);
            })
        })
    });
    g.finish();
}

criterion_group!(benches, sync_cost);
criterion_main!(benches);
