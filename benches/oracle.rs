//! How long the oracle takes to decide: resnet152's units (55 of them,
//! nominal costs from FLOPs) on 16, 32 and 64 PEs with a few slowed, in the
//! configured PE order, over every order where that is affordable, and 8
//! PEs of distinct speeds with every order enumerated (the worst 8-PE case).
//!
//! `cargo bench --bench oracle`. The target: under 10 ms on 64 PEs, so the
//! oracle and guided can decide inside one 100 ms monitor tick.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use odin::engine::profile::CostProfile;
use odin::engine::zoo;
use odin::policy::oracle;

/// `pes` PEs at speed 1, with three slowed 2x, 3x and 10x.
fn slowed(pes: usize) -> Vec<f64> {
    let mut v = vec![1.0; pes];
    for (i, s) in [(1, 2.0), (pes / 2, 3.0), (pes - 2, 10.0)] {
        v[i] = 1.0 / s;
    }
    v
}

fn bench(c: &mut Criterion) {
    let model = zoo::build("resnet152", 1).expect("resnet152");
    let unit_ms = CostProfile::nominal(&model, 50.0).unit_ms();
    drop(model);
    let mut g = c.benchmark_group("oracle");
    for pes in [16, 32, 64] {
        let speed = slowed(pes);
        g.bench_with_input(BenchmarkId::new("order_fixed", pes), &speed, |b, s| {
            b.iter(|| oracle::optimal(black_box(&unit_ms), black_box(s), false))
        });
        g.bench_with_input(BenchmarkId::new("every_order", pes), &speed, |b, s| {
            b.iter(|| oracle::optimal(black_box(&unit_ms), black_box(s), true))
        });
    }
    let distinct: Vec<f64> = (0..8).map(|i| 1.0 / (1.0 + 0.3 * i as f64)).collect();
    g.bench_function("every_order/8_distinct", |b| {
        b.iter(|| oracle::optimal(black_box(&unit_ms), black_box(&distinct), true))
    });
    let two = slowed(8);
    g.bench_function("every_order/8_slowed3", |b| {
        b.iter(|| oracle::optimal(black_box(&unit_ms), black_box(&two), true))
    });
    g.finish();
    eprintln!(
        "units: {}; order-exact on 64 PEs with 3 slowed: {}",
        unit_ms.len(),
        oracle::optimal(&unit_ms, &slowed(64), true).order_exact
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
