//! What one monitor tick costs: every signal for 8 stage threads.
//!
//! `cargo bench --bench monitor`. At a 100 ms tick, 1 ms per tick is 1% of
//! one CPU.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use odin::cpulist::CpuSet;
use odin::monitor::observer::{Observer, StageView};
use odin::monitor::perf::{self, PerfCounters};
use odin::monitor::procfs::ProcReader;

const STAGES: usize = 8;

fn monitor(c: &mut Criterion) {
    let cpus: Vec<usize> = odin::topology::online_cpus(Path::new("/"))
        .unwrap()
        .iter()
        .collect();
    // Eight real threads standing in for stage threads, parked on a channel.
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let (tid_tx, tid_rx) = crossbeam_channel::unbounded();
    let threads: Vec<_> = (0..STAGES)
        .map(|_| {
            let (stop, tids) = (stop_rx.clone(), tid_tx.clone());
            std::thread::spawn(move || {
                tids.send(odin::thread::gettid()).unwrap();
                let _ = stop.recv();
            })
        })
        .collect();
    let views: Vec<StageView> = (0..STAGES)
        .map(|s| StageView {
            tid: tid_rx.recv().unwrap(),
            pe: s,
            units: s..s + 1,
            service_ms: Some(10.0),
        })
        .collect();
    let pes: Vec<CpuSet> = (0..STAGES)
        .map(|s| CpuSet::single(cpus[s % cpus.len()]))
        .collect();
    let mut counters = PerfCounters::new();
    let support = perf::probe(&mut counters, Path::new("/"));
    let mut observer = Observer::new(
        ProcReader::new(),
        Box::new(counters),
        &support,
        pes,
        vec![10.0; STAGES],
    );
    observer.calibrate(&views);

    let mut g = c.benchmark_group("monitor");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("tick_8_stages", |b| {
        b.iter(|| observer.tick(&views, Instant::now()))
    });
    let reader = ProcReader::new();
    g.bench_function("task_walk", |b| b.iter(|| reader.walk_tasks().unwrap()));
    g.bench_function("schedstat_8_threads", |b| {
        b.iter(|| {
            for v in &views {
                reader.schedstat(std::process::id() as i32, v.tid).unwrap();
            }
        })
    });
    g.finish();
    drop(stop_tx);
    for t in threads {
        t.join().unwrap();
    }
}

criterion_group!(benches, monitor);
criterion_main!(benches);
