//! Whole-model forward pass, one image, one thread; and each unit of
//! resnet18 on its own, throughput in FLOPs (criterion's "Gelem/s" reads as
//! GFLOP/s), to see where a forward pass spends its time.
//!
//! `cargo bench --bench forward` (pin with `taskset -c 1` for stable
//! figures); only the units with `cargo bench --bench forward -- units/`.

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

fn units(c: &mut Criterion) {
    let mut group = c.benchmark_group("units");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    let model = zoo::build("resnet18", 1).expect("built-in model");
    let mut ws = Workspace::new();
    for (i, u) in model.units().iter().enumerate() {
        let x = Tensor::random(u.input, 1);
        group.throughput(Throughput::Elements(u.cost().flops.max(1)));
        group.bench_function(format!("resnet18/{i:02}_{}", u.name), |b| {
            b.iter(|| model.forward_range(i..i + 1, &x, &mut ws))
        });
    }
    group.finish();
}

criterion_group!(benches, forward, units);
criterion_main!(benches);
