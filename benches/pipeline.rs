//! Pipeline overhead.
//!
//! - `handoff`: one frame at a time through pipelines of trivial units, so
//!   the time is queue + wakeup: 1 stage is two handoffs (admission, done),
//!   each further stage adds one.
//! - `resnet18`: the direct forward vs. the same model as 1 stage (one frame
//!   at a time), and the per-frame time of 2 stages on 2 CPUs in closed loop,
//!   printed next to the slowest stage's smoothed service time.
//!
//! `cargo bench --bench pipeline`

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use odin::cpulist::CpuSet;
use odin::engine::ops::{Act, Activation};
use odin::engine::{Model, Shape, Tensor, Workspace, zoo};
use odin::pipeline::affinity::SchedAffinity;
use odin::pipeline::{Partition, Pipeline, PipelineConfig};

fn pes(stages: usize) -> Vec<CpuSet> {
    let cpus: Vec<usize> = odin::topology::online_cpus(Path::new("/"))
        .unwrap()
        .iter()
        .collect();
    (0..stages)
        .map(|s| CpuSet::single(cpus[s % cpus.len()]))
        .collect()
}

fn trivial_model(units: usize) -> Arc<Model> {
    let mut m = Model::new("trivial", Shape::new(1, 1, 1, 4));
    for i in 0..units {
        m.push(format!("id{i}"), Act(Activation::Identity)).unwrap();
    }
    Arc::new(m)
}

fn one_at_a_time(p: &Pipeline, x: &Tensor) {
    p.admitter().admit(|_| x.clone()).unwrap();
    p.completed().recv().unwrap();
}

fn handoff(c: &mut Criterion) {
    // The measuring thread receives completions on the last CPU, as the
    // consumer of a real pipeline would run beside it.
    let cpus = pes(2);
    odin::pipeline::affinity::pin_current_thread(cpus.last().unwrap()).unwrap();
    let mut g = c.benchmark_group("handoff");
    g.measurement_time(Duration::from_secs(3));
    for stages in [1, 2, 3] {
        let model = trivial_model(3);
        let x = Tensor::zeros(model.input());
        let cfg = PipelineConfig::new(pes(stages), Partition::even(3, stages).unwrap());
        let p = Pipeline::start(model, cfg, Arc::new(SchedAffinity)).unwrap();
        g.bench_function(format!("{stages}_stages"), |b| {
            b.iter(|| one_at_a_time(&p, &x))
        });
        p.shutdown();
    }
    g.finish();
}

fn resnet18(c: &mut Criterion) {
    let mut g = c.benchmark_group("resnet18");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    let model = Arc::new(zoo::build("resnet18", 1).unwrap());
    let x = Tensor::random(model.input(), 1);
    let mut ws = Workspace::new();
    odin::pipeline::affinity::pin_current_thread(&pes(1)[0]).unwrap();
    g.bench_function("forward_direct", |b| b.iter(|| model.forward(&x, &mut ws)));

    let cfg = PipelineConfig::new(pes(1), Partition::single(model.len()).unwrap());
    let p = Pipeline::start(model.clone(), cfg, Arc::new(SchedAffinity)).unwrap();
    g.bench_function("pipeline_1_stage", |b| b.iter(|| one_at_a_time(&p, &x)));
    p.shutdown();

    let costs = odin::engine::profile::CostProfile::nominal(&model, 50.0).unit_ms();
    let cfg = PipelineConfig::new(pes(2), Partition::optimal(&costs, &[1.0, 1.0]).unwrap());
    let p = Pipeline::start(model.clone(), cfg, Arc::new(SchedAffinity)).unwrap();
    let frames = 16;
    g.bench_function("pipeline_2_stages_per_frame", |b| {
        b.iter_custom(|iters| {
            let admitter = p.admitter();
            let start = std::time::Instant::now();
            let total = iters * frames;
            let feeder = {
                let x = x.clone();
                std::thread::spawn(move || {
                    for _ in 0..total {
                        admitter.admit(|_| x.clone()).unwrap();
                    }
                })
            };
            for _ in 0..total {
                p.completed().recv().unwrap();
            }
            feeder.join().unwrap();
            start.elapsed() / frames as u32
        })
    });
    let slowest = p
        .stage_stats()
        .iter()
        .map(|s| s.service_ms)
        .fold(0.0, f64::max);
    eprintln!("resnet18 2 stages: slowest stage smoothed service time {slowest:.2} ms");
    p.shutdown();
    g.finish();
}

criterion_group!(benches, handoff, resnet18);
criterion_main!(benches);
