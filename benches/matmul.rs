//! CPU matrix-multiply benchmark (criterion): GFLOP/s of the packed, cache-blocked, rayon-parallel
//! GEMM on square sizes and on the ViT's own shapes. Run with `cargo bench --bench matmul`;
//! criterion prints time per call, and the throughput line gives "elements" = FLOPs, so
//! "Gelem/s" reads as GFLOP/s. Results and the machine's peak are in BENCHMARKS.md.
//!
//! The result is validated after timing (a benchmark can hide a wrong kernel): every C element
//! of an all-ones product must equal K.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vitcore::backend::cpu::gemm::{gemm, MatRef};

fn bench(c: &mut Criterion) {
    let shapes: &[(&str, usize, usize, usize, bool, bool)] = &[
        ("square-256", 256, 256, 256, false, false),
        ("square-512", 512, 512, 512, false, false),
        ("square-1024", 1024, 1024, 1024, false, false),
        // Default preset, batch 128 x 17 tokens: fc1 forward, its dX and dW.
        ("vit-fc1-fwd", 2176, 128, 64, false, true),
        ("vit-fc1-dx", 2176, 64, 128, false, false),
        ("vit-fc1-dw", 128, 64, 2176, true, false),
        // Seed preset, batch 512 x 50 tokens: fc2 forward (K = 2048).
        ("seed-fc2-fwd", 25600, 16, 2048, false, true),
    ];
    let mut group = c.benchmark_group("gemm");
    group.sample_size(10);
    for &(name, m, n, k, ta, tb) in shapes {
        let a = vec![1.0f32; m * k];
        let b = vec![1.0f32; k * n];
        let mut out = vec![0.0f32; m * n];
        group.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &(), |bench, _| {
            bench.iter(|| {
                let am = MatRef::new(&a, if ta { m } else { k }, ta);
                let bm = MatRef::new(&b, if tb { k } else { n }, tb);
                gemm(m, n, k, am, bm, &mut out, n, false, true);
            })
        });
        assert!(out.iter().all(|&x| x == k as f32), "{name}: wrong result after timing");
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
