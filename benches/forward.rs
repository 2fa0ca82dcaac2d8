//! Whole-model forward pass, one image, one thread.
//!
//! `cargo bench --bench forward` (pin with `taskset -c 1` for stable figures).

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use odin::engine::{Tensor, Workspace, zoo};

fn forward(c: &mut Criterion) {
    let mut group = c.benchmark_group("forward");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for &name in zoo::NAMES {
        let model = zoo::build(name, 1).expect("built-in model");
        let x = Tensor::random(model.input(), 7);
        let mut ws = Workspace::new();
        group.throughput(Throughput::Elements(1));
        group.bench_function(name, |b| b.iter(|| model.forward(&x, &mut ws)));
    }
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
