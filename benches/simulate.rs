//! How long the simulator takes on the largest shipped case: resnet152 on
//! 64 PEs under the multi-pe scenario, 1000 frames for every policy (what
//! `odin simulate --model resnet152 --pes 64 --scenario multi-pe --frames
//! 1000` runs). The target: well under a minute.
//!
//! `cargo bench --bench simulate`

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use odin::engine::profile::CostProfile;
use odin::engine::zoo;
use odin::pipeline::source::Arrivals;
use odin::policy::{self, config::PolicyConfig};
use odin::sim::scenario::Scenario;
use odin::sim::{self, Spec};

fn bench(c: &mut Criterion) {
    let model = zoo::build("resnet152", 1).expect("resnet152");
    let profile = CostProfile::nominal(&model, 100.0);
    drop(model);
    let spec = Spec {
        model: "resnet152".into(),
        unit_ms: profile.unit_ms(),
        intensity: sim::intensity(&profile),
        pes: 64,
        scenario: Scenario::find("multi-pe", |_| unreachable!("a shipped scenario"))
            .expect("multi-pe"),
        policies: policy::NAMES.iter().map(|s| s.to_string()).collect(),
        frames: 1000,
        slo_latency_ms: None,
        seed: 1,
        load: Arrivals::Closed,
        tick_s: 0.1,
        policy: PolicyConfig::default(),
    };
    let mut g = c.benchmark_group("simulate");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("resnet152_64pes_multi-pe_1000frames", |b| {
        b.iter(|| sim::simulate(&spec).expect("simulates"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
