//! The pipeline runtime with real threads pinned to real CPUs.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::Receiver;
use odin::cpulist::CpuSet;
use odin::pipeline::affinity::{Affinity, AffinityError, SchedAffinity};
use odin::pipeline::source::{Arrivals, Source, synthetic_input};
use odin::pipeline::{Partition, Pipeline, PipelineConfig, Rejected};
use odin::topology::online_cpus;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn online() -> Vec<usize> {
    online_cpus(Path::new("/")).unwrap().iter().collect()
}

/// PEs for `stages` stages over this machine's CPUs: one CPU each, wrapping
/// around when there are more stages than CPUs.
fn pes(stages: usize) -> Vec<CpuSet> {
    let cpus = online();
    (0..stages)
        .map(|s| CpuSet::single(cpus[s % cpus.len()]))
        .collect()
}

fn cpus_allowed(tid: i32) -> CpuSet {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn stages_are_pinned_to_their_pes_and_follow_remaps() {
    let cpus = online();
    if cpus.len() < 2 {
        common::skip(format!(
            "a remap between two CPUs needs 2 online CPUs, have {}",
            cpus.len()
        ));
        return;
    }
    let model = common::tiny_model();
    let pes: Vec<CpuSet> = vec![
        CpuSet::single(cpus[0]),
        CpuSet::single(*cpus.last().unwrap()),
    ];
    let p = Partition::even(model.len(), 2).unwrap();
    let pipe = Pipeline::start(
        model,
        PipelineConfig::new(pes.clone(), p),
        Arc::new(SchedAffinity),
    )
    .unwrap();
    for (st, pe) in pipe.stage_stats().iter().zip(&pes) {
        assert!(st.tid > 0);
        assert_eq!(
            &SchedAffinity.get(st.tid).unwrap(),
            pe,
            "sched_getaffinity of stage {}",
            st.stage
        );
        assert_eq!(
            &cpus_allowed(st.tid),
            pe,
            "Cpus_allowed_list of stage {}",
            st.stage
        );
        assert_eq!(st.pin_error, None);
    }
    // Move stage 0 onto the other CPU; the idle stage applies it at once.
    let target = pes[1].clone();
    assert_ne!(target, pes[0], "the remap changes CPU");
    pipe.remap(0, target.clone())
        .unwrap()
        .recv()
        .unwrap()
        .unwrap();
    let st = &pipe.stage_stats()[0];
    assert_eq!(SchedAffinity.get(st.tid).unwrap(), target);
    assert_eq!(cpus_allowed(st.tid), target);
    assert_eq!(st.pe, target);
    // A CPU the kernel refuses: the error comes back, the old pinning stays.
    let bad = CpuSet::single(4000);
    assert!(pipe.remap(0, bad).unwrap().recv().unwrap().is_err());
    assert_eq!(
        SchedAffinity.get(pipe.stage_stats()[0].tid).unwrap(),
        target
    );
    assert!(pipe.remap(5, target).is_err(), "no stage 5");
    assert!(pipe.shutdown().is_empty());
}

/// How a remap went, once the stage applied it.
type RemapOutcome = Receiver<Result<(), AffinityError>>;

/// Random repartitions (every fourth with empty stages) and remaps of a
/// running pipeline, with what was asked kept to check against.
struct Churn {
    rng: ChaCha8Rng,
    units: usize,
    stages: usize,
    cpus: Vec<usize>,
    partitions: usize,
    /// The last CPU asked of each stage.
    asked: Vec<Option<usize>>,
    /// The outcome of every remap, not waited for while frames flow.
    outcomes: Vec<(usize, usize, RemapOutcome)>,
}

impl Churn {
    fn new(units: usize, stages: usize, seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            units,
            stages,
            cpus: online(),
            partitions: 0,
            asked: vec![None; stages],
            outcomes: Vec::new(),
        }
    }

    /// One random partition; every third step also remaps a random stage
    /// to a random CPU.
    fn step(&mut self, pipe: &Pipeline) {
        let (n, stages) = (self.units, self.stages);
        // stages - 1 distinct cuts in 1..n; every fourth partition with
        // empty stages (repeated cuts, cuts at 0 or n).
        let mut cuts: Vec<usize> = Vec::new();
        let partition = if self.partitions % 4 == 3 {
            cuts.extend((0..stages - 1).map(|_| self.rng.random_range(0..=n)));
            cuts.sort();
            Partition::relaxed(n, cuts).unwrap()
        } else {
            while cuts.len() < stages - 1 {
                let c = self.rng.random_range(1..n);
                if !cuts.contains(&c) {
                    cuts.push(c);
                }
            }
            cuts.sort();
            Partition::new(n, cuts).unwrap()
        };
        pipe.set_partition(partition.clone()).unwrap();
        assert_eq!(pipe.partition(), partition);
        self.partitions += 1;
        if self.partitions.is_multiple_of(3) {
            let stage = self.rng.random_range(0..stages);
            let cpu = self.cpus[self.rng.random_range(0..self.cpus.len())];
            // The stage applies it between frames.
            let outcome = pipe.remap(stage, CpuSet::single(cpu)).unwrap();
            self.outcomes.push((stage, cpu, outcome));
            self.asked[stage] = Some(cpu);
        }
    }

    /// Every remap succeeded, and each stage ends on the last CPU asked of
    /// it, in the pipeline's figures and in the kernel's affinity.
    fn check_remaps(self, pipe: &Pipeline) -> usize {
        let remaps = self.outcomes.len();
        for (stage, cpu, outcome) in self.outcomes {
            if let Err(e) = outcome.recv().unwrap() {
                panic!("remap of stage {stage} to CPU {cpu}: {e}");
            }
        }
        for (st, asked) in pipe.stage_stats().iter().zip(&self.asked) {
            let Some(cpu) = asked else { continue };
            let want = CpuSet::single(*cpu);
            assert_eq!(st.pe, want, "stage {} PE", st.stage);
            assert_eq!(
                SchedAffinity.get(st.tid).unwrap(),
                want,
                "stage {}",
                st.stage
            );
            assert_eq!(cpus_allowed(st.tid), want, "stage {}", st.stage);
            assert_eq!(st.pin_error, None);
        }
        remaps
    }
}

/// 250 random repartitions and about 80 remaps while frames flow: every
/// admitted frame comes out exactly once, in order, bit-identical to a
/// single-threaded forward of its input; each stage ends on the CPU last
/// asked of it; the pipeline's counters agree with what came out.
#[test]
fn repartitions_and_remaps_under_load_lose_nothing() {
    let model = common::tiny_model();
    let inputs = common::inputs(&model, 5);
    let expected = common::reference_outputs(&model, &inputs);
    let stages = 3;
    let cfg = PipelineConfig::new(pes(stages), Partition::even(model.len(), stages).unwrap());
    let pipe = Pipeline::start(model.clone(), cfg, Arc::new(SchedAffinity)).unwrap();
    let source = Source::spawn(pipe.admitter(), Arrivals::Closed, inputs.clone(), 1).unwrap();

    let mut churn = Churn::new(model.len(), stages, 42);
    let mut next_id = 0u64;
    while churn.partitions < 250 {
        let done = pipe.completed().recv().unwrap();
        assert_eq!(done.id, next_id, "frames come out in order");
        assert!(
            done.output == expected[(done.id % 5) as usize],
            "frame {} differs",
            done.id
        );
        next_id += 1;
        churn.step(&pipe);
    }
    let offered = source.stop();
    let remaps = churn.check_remaps(&pipe);
    assert!(remaps > 0, "the seed asks for remaps");
    let stats = pipe.stage_stats();
    let received = next_id;
    let admitted = pipe.admitted();
    assert_eq!(pipe.rejected(), 0, "a closed loop waits for room");
    assert!(offered >= admitted && admitted >= next_id);
    for done in pipe.shutdown() {
        assert_eq!(done.id, next_id, "drained frames in order");
        assert!(
            done.output == expected[(done.id % 5) as usize],
            "frame {} differs",
            done.id
        );
        next_id += 1;
    }
    assert_eq!(next_id, admitted, "frames in = frames out");
    // Each frame received had run on at least one stage, and no stage ran
    // more frames than were admitted.
    let per_stage: Vec<u64> = stats.iter().map(|s| s.frames).collect();
    assert!(per_stage.iter().all(|&f| f <= admitted), "{per_stage:?}");
    assert!(
        per_stage.iter().sum::<u64>() >= received,
        "{per_stage:?} for {received} frames received"
    );
}

/// Passes its input on and logs `(frame, unit)`: the frame's id is the
/// input's first value.
#[derive(Debug)]
struct Trace {
    unit: usize,
    log: Arc<Mutex<Vec<(u64, usize)>>>,
}

impl odin::engine::Layer for Trace {
    fn kind(&self) -> &'static str {
        "trace"
    }
    fn output_shape(
        &self,
        input: odin::engine::Shape,
    ) -> Result<odin::engine::Shape, odin::engine::ShapeError> {
        Ok(input)
    }
    fn forward(
        &self,
        x: &odin::engine::Tensor,
        _ws: &mut odin::engine::Workspace,
    ) -> odin::engine::Tensor {
        self.log
            .lock()
            .unwrap()
            .push((x.as_slice()[0] as u64, self.unit));
        x.clone()
    }
    fn cost(&self, _input: odin::engine::Shape) -> odin::engine::Cost {
        odin::engine::Cost::default()
    }
    fn params(&self) -> usize {
        0
    }
}

/// Under the same churn, every frame runs every unit exactly once and in
/// the model's order, whichever stages the cuts give them to.
#[test]
fn every_frame_runs_every_unit_once_in_order_under_churn() {
    use odin::engine::{Model, Shape, Tensor};
    let units = 12;
    let frames = 300u64;
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut m = Model::new("trace", Shape::new(1, 1, 1, 1));
    for unit in 0..units {
        let layer = Trace {
            unit,
            log: log.clone(),
        };
        m.push(format!("t{unit}"), layer).unwrap();
    }
    let stages = 3;
    let cfg = PipelineConfig::new(pes(stages), Partition::even(units, stages).unwrap());
    let pipe = Pipeline::start(Arc::new(m), cfg, Arc::new(SchedAffinity)).unwrap();
    let admitter = pipe.admitter();
    let feeder = std::thread::spawn(move || {
        for _ in 0..frames {
            admitter
                .admit(|id| Tensor::from_vec(Shape::new(1, 1, 1, 1), vec![id as f32]))
                .unwrap();
        }
    });
    let mut churn = Churn::new(units, stages, 7);
    for id in 0..frames {
        let done = pipe.completed().recv().unwrap();
        assert_eq!(done.id, id, "frames come out in order");
        assert_eq!(done.output.as_slice(), &[id as f32]);
        churn.step(&pipe);
    }
    feeder.join().unwrap();
    churn.check_remaps(&pipe);
    assert_eq!(pipe.admitted(), frames);
    assert!(pipe.shutdown().is_empty(), "every frame was received");
    let mut ran: Vec<Vec<usize>> = vec![Vec::new(); frames as usize];
    for (frame, unit) in log.lock().unwrap().iter() {
        ran[*frame as usize].push(*unit);
    }
    let all: Vec<usize> = (0..units).collect();
    for (frame, units) in ran.iter().enumerate() {
        assert_eq!(units, &all, "units frame {frame} ran");
    }
}

#[test]
fn service_times_and_frames_are_readable_while_running() {
    let model = common::tiny_model();
    let inputs = common::inputs(&model, 2);
    let cfg = PipelineConfig::new(pes(2), Partition::even(model.len(), 2).unwrap());
    let pipe = Pipeline::start(model, cfg, Arc::new(SchedAffinity)).unwrap();
    let source = Source::spawn(pipe.admitter(), Arrivals::Closed, inputs, 1).unwrap();
    let mut last = None;
    for _ in 0..50 {
        last = Some(pipe.completed().recv().unwrap());
    }
    let stats = pipe.stage_stats();
    for s in &stats {
        assert!(
            s.frames >= 49 && s.service_ms > 0.0 && s.busy_s > 0.0,
            "{s:?}"
        );
    }
    let last = last.unwrap();
    let service: f64 = last.service.iter().map(|d| d.as_secs_f64()).sum();
    let wait: f64 = last.wait.iter().map(|d| d.as_secs_f64()).sum();
    assert!(
        last.latency.as_secs_f64() >= service + wait - 1e-6,
        "latency covers service and queue wait"
    );
    assert!(last.service.iter().all(|d| !d.is_zero()));
    source.stop();
    pipe.shutdown();
}

#[test]
fn open_loop_overload_rejects_and_counts_never_loses() {
    let model = common::tiny_model();
    let inputs = common::inputs(&model, 2);
    let mut cfg = PipelineConfig::new(pes(1), Partition::single(model.len()).unwrap());
    cfg.admission_capacity = 1;
    let pipe = Pipeline::start(model, cfg, Arc::new(SchedAffinity)).unwrap();
    // Far more arrivals than one stage can serve.
    let source = Source::spawn(pipe.admitter(), Arrivals::Open { rate: 1e6 }, inputs, 7).unwrap();
    let mut received = 0u64;
    while pipe.rejected() < 100 {
        // A hang guard only: a frame completes every few milliseconds.
        pipe.completed()
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| {
                panic!(
                    "no completion in 60 s ({e}): admitted {}, rejected {}",
                    pipe.admitted(),
                    pipe.rejected()
                )
            });
        received += 1;
    }
    let offered = source.stop();
    let admitted = pipe.admitted();
    let rejected = pipe.rejected();
    received += pipe.shutdown().len() as u64;
    assert_eq!(
        offered,
        admitted + rejected,
        "every offered frame is admitted or counted"
    );
    assert_eq!(received, admitted, "every admitted frame completes");
}

#[test]
fn shutdown_drains_admitted_frames_and_refuses_new_ones() {
    let model = common::tiny_model();
    let inputs = common::inputs(&model, 1);
    let mut cfg = PipelineConfig::new(pes(2), Partition::even(model.len(), 2).unwrap());
    cfg.admission_capacity = 8;
    let pipe = Pipeline::start(model, cfg, Arc::new(SchedAffinity)).unwrap();
    let admitter = pipe.admitter();
    for _ in 0..8 {
        admitter.admit(|id| synthetic_input(&inputs, id)).unwrap();
    }
    let drained = pipe.shutdown();
    assert_eq!(
        drained.iter().map(|c| c.id).collect::<Vec<_>>(),
        (0..8).collect::<Vec<_>>()
    );
    assert_eq!(
        admitter.admit(|id| synthetic_input(&inputs, id)),
        Err(Rejected::Closing)
    );
}

#[test]
fn partitions_that_do_not_fit_are_refused() {
    let model = common::tiny_model();
    let n = model.len();
    let bad_stages = PipelineConfig::new(pes(2), Partition::even(n, 3).unwrap());
    let err = Pipeline::start(model.clone(), bad_stages, Arc::new(SchedAffinity))
        .err()
        .unwrap();
    assert!(err.to_string().contains("3 stages for 2 PEs"), "{err}");
    let cfg = PipelineConfig::new(pes(2), Partition::even(n, 2).unwrap());
    let pipe = Pipeline::start(model, cfg, Arc::new(SchedAffinity)).unwrap();
    let err = pipe
        .set_partition(Partition::even(n + 1, 2).unwrap())
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!("covers {} units", n + 1)),
        "{err}"
    );
    assert_eq!(
        pipe.partition(),
        Partition::even(n, 2).unwrap(),
        "the old partition stays"
    );
    pipe.shutdown();
}

/// A stage on a PE of several CPUs runs one worker per CPU, each pinned to
/// its CPU, and its output stays bit-identical.
#[test]
fn a_multi_cpu_pe_uses_every_cpu() {
    let cpus = online();
    if cpus.len() < 2 {
        common::skip(format!("needs 2 online CPUs, have {}", cpus.len()));
        return;
    }
    let model = common::tiny_model();
    let inputs = common::inputs(&model, 3);
    let expected = common::reference_outputs(&model, &inputs);
    let pe: CpuSet = cpus.iter().copied().collect();
    let cfg = PipelineConfig::new(vec![pe.clone()], Partition::single(model.len()).unwrap());
    let pipe = Pipeline::start(model, cfg, Arc::new(SchedAffinity)).unwrap();
    let stage_tid = pipe.stage_stats()[0].tid;
    assert_eq!(cpus_allowed(stage_tid), pe);
    let mut workers = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.starts_with("odin-stage-0-w") {
            let tid: i32 = path.file_name().unwrap().to_str().unwrap().parse().unwrap();
            workers.push(cpus_allowed(tid));
        }
    }
    workers.sort();
    let want: Vec<CpuSet> = cpus.iter().map(|&c| CpuSet::single(c)).collect();
    assert_eq!(workers, want, "one worker pinned to each CPU of the PE");
    let admitter = pipe.admitter();
    for _ in 0..30 {
        admitter.admit(|id| synthetic_input(&inputs, id)).unwrap();
        let done = pipe.completed().recv().unwrap();
        assert!(
            done.output == expected[(done.id % 3) as usize],
            "frame {}",
            done.id
        );
    }
    // Remapped to one CPU, the stage drops its workers and still computes the same.
    pipe.remap(0, CpuSet::single(cpus[0]))
        .unwrap()
        .recv()
        .unwrap()
        .unwrap();
    admitter.admit(|id| synthetic_input(&inputs, id)).unwrap();
    let done = pipe.completed().recv().unwrap();
    assert!(done.output == expected[(done.id % 3) as usize]);
    pipe.shutdown();
}

/// Fails on an input whose first value is exactly 7: a layer with a bug.
#[derive(Debug)]
struct PanicsOnSeven;

impl odin::engine::Layer for PanicsOnSeven {
    fn kind(&self) -> &'static str {
        "panics"
    }
    fn output_shape(
        &self,
        input: odin::engine::Shape,
    ) -> Result<odin::engine::Shape, odin::engine::ShapeError> {
        Ok(input)
    }
    fn forward(
        &self,
        x: &odin::engine::Tensor,
        _ws: &mut odin::engine::Workspace,
    ) -> odin::engine::Tensor {
        assert!(x.as_slice()[0] != 7.0, "seven is not a valid input");
        x.clone()
    }
    fn cost(&self, _input: odin::engine::Shape) -> odin::engine::Cost {
        odin::engine::Cost::default()
    }
    fn params(&self) -> usize {
        0
    }
}

/// A stage that panics stops the pipeline without hanging it, and the
/// pipeline says which stage, on which frame, and why.
#[test]
fn a_panicking_stage_is_reported_and_the_pipeline_winds_down() {
    use odin::engine::{Model, Shape, Tensor};
    let mut m = Model::new("fragile", Shape::new(1, 1, 1, 4));
    m.push("a", odin::engine::ops::Flatten).unwrap();
    m.push("b", PanicsOnSeven).unwrap();
    let model = Arc::new(m);
    let cfg = PipelineConfig::new(pes(2), Partition::new(2, vec![1]).unwrap());
    let pipe = Pipeline::start(model, cfg, Arc::new(SchedAffinity)).unwrap();
    let admitter = pipe.admitter();
    let fine = Tensor::from_vec(Shape::new(1, 1, 1, 4), vec![1.0; 4]);
    let seven = Tensor::from_vec(Shape::new(1, 1, 1, 4), vec![7.0; 4]);
    for _ in 0..3 {
        admitter.admit(|_| fine.clone()).unwrap();
        pipe.completed().recv().unwrap();
    }
    assert_eq!(pipe.failure(), None);
    admitter.admit(|_| seven.clone()).unwrap();
    // The last stage dies, so the completion queue closes.
    assert!(pipe.completed().recv().is_err());
    let failure = pipe.failure().unwrap();
    assert!(
        failure.contains("stage 1 panicked on frame 3")
            && failure.contains("seven is not a valid input"),
        "{failure}"
    );
    assert!(pipe.shutdown().is_empty());
}
