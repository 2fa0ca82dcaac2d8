//! Matrix products on resnet50's convolution shapes (M = out channels,
//! K = in * kh * kw, N = oh * ow): odin's convolution GEMM, run as a 1x1
//! convolution over an N-pixel image, against the `gemm` and
//! `matrixmultiply` crates on a plain row-major `[K][N]` B. One thread;
//! throughput is in FLOPs, so criterion's "Gelem/s" reads as GFLOP/s.
//!
//! `taskset -c 1 cargo bench --bench gemm` (about two minutes); filter with
//! e.g. `cargo bench --bench gemm -- 512x`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ndarray::Array4;
use odin::engine::ops::conv::gemm_f32;
use odin::engine::ops::{Conv2dConfig, conv2d};
use odin::engine::{Layer, Shape, Tensor, Workspace};

/// (M, K, N); every N is a square image.
const SHAPES: &[(usize, usize, usize)] = &[
    (64, 147, 12544),
    (64, 576, 3136),
    (128, 1152, 784),
    (256, 2304, 196),
    (512, 4608, 49),
    (64, 64, 3136),
    (256, 64, 3136),
    (64, 256, 3136),
    (512, 128, 784),
    (128, 512, 784),
    (1024, 256, 196),
    (256, 1024, 196),
    (2048, 512, 49),
    (512, 2048, 49),
];

/// `c = a * b` with `matrixmultiply`.
fn matrixmultiply(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    // SAFETY: row-major m x k, k x n and m x n buffers of at least those
    // sizes (asserted); `c` is borrowed mutably so does not alias.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemm");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for &(m, k, n) in SHAPES {
        let side = n.isqrt();
        assert_eq!(side * side, n, "N is a square image");
        let a = Tensor::random(Shape::new(1, 1, m, k), 1).into_vec();
        let b = Tensor::random(Shape::new(1, k, side, side), 2);
        let mut out = vec![0.0f32; m * n];
        group.throughput(Throughput::Elements(2 * (m * k * n) as u64));
        let w = Array4::from_shape_vec((m, k, 1, 1), a.clone()).expect("weight shape");
        let conv = conv2d(
            w,
            None,
            Conv2dConfig {
                stride: 1,
                padding: 0,
                groups: 1,
            },
        );
        let mut ws = Workspace::new();
        group.bench_function(format!("{m}x{k}x{n}/odin"), |bench| {
            bench.iter(|| conv.forward(black_box(&b), &mut ws))
        });
        let b = b.into_vec();
        group.bench_function(format!("{m}x{k}x{n}/gemm"), |bench| {
            bench.iter(|| gemm_f32(m, n, k, &a, black_box(&b), &mut out))
        });
        group.bench_function(format!("{m}x{k}x{n}/matrixmultiply"), |bench| {
            bench.iter(|| matrixmultiply(m, k, n, &a, black_box(&b), &mut out))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
