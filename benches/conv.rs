//! Convolution throughput on the layer shapes that dominate the zoo models,
//! one thread. Throughput is in FLOPs (2 per multiply-accumulate), so
//! criterion's "Gelem/s" reads as GFLOP/s.
//!
//! Then the same over a pool of two threads (group `conv_2t`), as a PE of
//! two CPUs runs them.
//!
//! With `ODIN_BENCH_COLD=1`, group `conv_cold` times one thread again with
//! the caches flushed before every call (64 MiB written between calls), as
//! a layer finds them inside a whole network whose other layers evicted its
//! input and weights.
//!
//! `cargo bench --bench conv` (about two minutes); filter with e.g.
//! `cargo bench --bench conv -- conv/dw_`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ndarray::Array4;
use odin::engine::ops::{Activation, Conv2dConfig, conv2d};
use odin::engine::{Layer, Shape, Tensor, Workspace};

/// (name, in channels, out channels, input size, kernel, stride, padding, groups)
type Spec = (
    &'static str,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
);

const SPECS: &[Spec] = &[
    ("r50_stem_7x7s2", 3, 64, 224, 7, 2, 3, 1),
    ("r50_3x3_56", 64, 64, 56, 3, 1, 1, 1),
    ("r50_3x3_28", 128, 128, 28, 3, 1, 1, 1),
    ("r50_3x3_14", 256, 256, 14, 3, 1, 1, 1),
    ("r50_3x3_7", 512, 512, 7, 3, 1, 1, 1),
    ("r50_1x1_56_expand", 64, 256, 56, 1, 1, 0, 1),
    ("r50_1x1_56_reduce", 256, 64, 56, 1, 1, 0, 1),
    ("r50_1x1_28_reduce", 512, 128, 28, 1, 1, 0, 1),
    ("r50_1x1_14_expand", 256, 1024, 14, 1, 1, 0, 1),
    ("r50_1x1_7_expand", 512, 2048, 7, 1, 1, 0, 1),
    ("r50_1x1s2_downsample_28", 256, 512, 56, 1, 2, 0, 1),
    ("vgg16_conv1_2", 64, 64, 224, 3, 1, 1, 1),
    ("dw_144_56_s1", 144, 144, 56, 3, 1, 1, 144),
    ("dw_144_56_s2", 144, 144, 56, 3, 2, 1, 144),
    ("dw_384_14_s1", 384, 384, 14, 3, 1, 1, 384),
    ("dw_960_7_s1", 960, 960, 7, 3, 1, 1, 960),
    ("mb2_f1_dw_32_112", 32, 32, 112, 3, 1, 1, 32),
    ("mb2_f1_project_112", 32, 16, 112, 1, 1, 0, 1),
    ("mb2_f2_expand_112", 16, 96, 112, 1, 1, 0, 1),
    ("mb2_f2_dw_96_112_s2", 96, 96, 112, 3, 2, 1, 96),
    ("mb2_f2_project_56", 96, 24, 56, 1, 1, 0, 1),
    ("mb2_f3_expand_56", 24, 144, 56, 1, 1, 0, 1),
    ("mb2_f3_project_56", 144, 24, 56, 1, 1, 0, 1),
    ("mb2_f15_expand_7", 160, 960, 7, 1, 1, 0, 1),
    ("mb2_f15_project_7", 960, 160, 7, 1, 1, 0, 1),
];

fn bench(c: &mut Criterion) {
    run(c, "conv", Workspace::new(), false);
    if std::env::var_os("ODIN_BENCH_COLD").is_some() {
        run(c, "conv_cold", Workspace::new(), true);
    }
    // A PE of two CPUs: the layer split over a pool of two threads.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("two-thread pool");
    run(
        c,
        "conv_2t",
        Workspace::with_pool(std::sync::Arc::new(pool)),
        false,
    );
}

fn run(c: &mut Criterion, name: &str, mut ws: Workspace, cold: bool) {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for &(name, cin, cout, hw, k, stride, padding, groups) in SPECS {
        let w = Tensor::random(Shape::new(cout, cin / groups, k, k), 1);
        let w =
            Array4::from_shape_vec((cout, cin / groups, k, k), w.into_vec()).expect("weight shape");
        let cfg = Conv2dConfig {
            stride,
            padding,
            groups,
        };
        let conv = conv2d(w, Some(vec![0.01; cout]), cfg).with_activation(Activation::Relu);
        let input = Shape::new(1, cin, hw, hw);
        let x = Tensor::random(input, 2);
        group.throughput(Throughput::Elements(2 * conv.cost(input).macs));
        // On a worker of the pool, as `Model::forward_range` runs layers.
        if cold {
            let mut junk = vec![0u8; 64 << 20];
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    for i in 0..iters {
                        junk.iter_mut()
                            .step_by(64)
                            .for_each(|v| *v = v.wrapping_add(i as u8));
                        let start = std::time::Instant::now();
                        black_box(conv.forward(black_box(&x), &mut ws));
                        spent += start.elapsed();
                    }
                    spent
                })
            });
            continue;
        }
        let pool = ws.pool_handle();
        group.bench_function(name, |b| match &pool {
            Some(pool) => b.iter(|| pool.install(|| conv.forward(black_box(&x), &mut ws))),
            None => b.iter(|| conv.forward(black_box(&x), &mut ws)),
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
