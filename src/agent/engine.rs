//! The engine: a running pipeline with its frame source and observer,
//! and the plan it is started from.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use crossbeam_channel::Receiver;

use super::config::{Config, LoadMode};
use super::cpuset;
use super::options::Refused;
use super::serving::served_model;
use crate::cpulist::CpuSet;
use crate::engine::Model;
use crate::engine::open::{ModelIo, ModelSource};
use crate::engine::profile::CostProfile;
use crate::monitor::observer::{Observer, StageView};
use crate::monitor::perf::{CounterSupport, PerfCounters};
use crate::monitor::procfs::ProcReader;
use crate::pipeline::affinity::{Affinity, AffinityError};
use crate::pipeline::frame::Completed;
use crate::pipeline::source::{Arrivals, Feed, FrameSource, Synthetic};
use crate::pipeline::{Partition, Pipeline, PipelineConfig, StageStats};
use crate::policy::Placement;
use crate::server::admission::{Admission, Requests};
use crate::server::service::ServedModel;

/// FLOP rate assumed for the initial partition when no profile is given.
const NOMINAL_GFLOPS: f64 = 50.0;

/// Everything needed to start a pipeline, built before anything running
/// is touched.
pub(super) struct Plan {
    pub(super) model: Arc<Model>,
    /// Names and dimensions of its input and output.
    pub(super) io: ModelIo,
    /// The model as the server presents it, when serving.
    pub(super) served: Option<ServedModel>,
    /// The model file as it was when read.
    pub(super) stamp: Option<FileStamp>,
    pub(super) unit_ms: Vec<f64>,
    pub(super) pes: Vec<CpuSet>,
    pub(super) partition: Partition,
    pub(super) load: Arrivals,
    pub(super) seed: u64,
}

impl Plan {
    /// The configured PEs (one per online CPU by default), narrowed to the
    /// CPUs odin's cgroup allows when that is known.
    pub(super) fn new(
        cfg: &Config,
        online: &CpuSet,
        allowed: Option<&CpuSet>,
        follow: bool,
    ) -> Result<Self> {
        let mut pes = cfg
            .pe_sets()
            .unwrap_or_else(|| online.iter().map(CpuSet::single).collect());
        if let Some(allowed) = allowed {
            pes = cpuset::usable_pes(&pes, allowed);
        }
        let source = cfg.model.source();
        let stamp = model_stamp(&source);
        let (model, io) = source
            .open_with_io(cfg.model.seed, cfg.model.input_shape.as_deref())
            .map_err(|e| Refused(format!("model: {e}")))?;
        let mut model = model;
        let precision = model.set_precision(cfg.model.precision);
        if precision.running == precision.asked {
            tracing::info!(precision = %precision.running, "{}", precision.reason);
        } else {
            tracing::warn!(precision = %precision.running, "{}", precision.reason);
        }
        let model = Arc::new(model);
        let served = cfg
            .server
            .enabled
            .then(|| served_model(cfg, &source, &model, &io))
            .transpose()?;
        let profile = match &cfg.model.profile {
            Some(path) => {
                let p = CostProfile::load(path, follow)?;
                p.check_fits(&model)
                    .with_context(|| format!("profile {}", path.display()))?;
                p
            }
            None => CostProfile::nominal(&model, NOMINAL_GFLOPS),
        };
        if pes.len() > model.len() {
            return Err(Refused(format!(
                "pes: {} stages but {} has only {} units",
                pes.len(),
                model.name(),
                model.len()
            ))
            .into());
        }
        // A PE with more CPUs is proportionally faster.
        let speeds: Vec<f64> = pes.iter().map(|p| p.len() as f64).collect();
        let unit_ms = profile.unit_ms();
        let partition = Partition::optimal(&unit_ms, &speeds)?;
        let load = match (cfg.load.mode, cfg.load.rate) {
            (LoadMode::Open, Some(rate)) => Arrivals::Open { rate },
            _ => Arrivals::Closed,
        };
        Ok(Self {
            model,
            io,
            served,
            stamp,
            unit_ms,
            pes,
            partition,
            load,
            seed: cfg.model.seed,
        })
    }
}

/// What identifies a model file's contents without reading it: a reload
/// re-imports a file replaced under the same path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FileStamp {
    pub(super) modified: Option<std::time::SystemTime>,
    pub(super) len: u64,
    pub(super) inode: u64,
}

pub(super) fn model_stamp(source: &ModelSource) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let ModelSource::File(path) = source else {
        return None;
    };
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
    })
}

/// A running pipeline with its source and observer.
pub(super) struct Engine {
    pub(super) model: Arc<Model>,
    pub(super) io: ModelIo,
    /// The model file as it was when read.
    pub(super) stamp: Option<FileStamp>,
    pub(super) pes: Vec<CpuSet>,
    pub(super) pe_speed: Vec<f64>,
    pub(super) pipeline: Pipeline,
    /// What feeds the pipeline: synthetic frames, or the server's requests.
    pub(super) feed: Box<dyn Feed>,
    pub(super) observer: Observer,
    /// Pins the stage threads, and reads their affinity back.
    pub(super) affinity: Arc<dyn Affinity>,
    pub(super) started: Instant,
    /// Per stage: a remap or a re-pin after drift, until the stage applies
    /// it.
    pub(super) repin: Vec<Option<Receiver<Result<(), AffinityError>>>>,
}

/// What a drained engine leaves behind.
pub(super) struct Drained {
    pub(super) rest: Vec<Completed>,
    pub(super) admitted: u64,
    pub(super) rejected: u64,
    pub(super) stats: Vec<StageStats>,
}

impl Engine {
    /// Starts `plan`'s pipeline, its stages pinned through `affinity`,
    /// fed by `admission`'s requests when serving, else by the synthetic
    /// source.
    pub(super) fn start(
        plan: Plan,
        support: &CounterSupport,
        name_antagonists: bool,
        admission: Option<&Arc<Admission>>,
        affinity: Arc<dyn Affinity>,
    ) -> Result<Self> {
        let pipeline = Pipeline::start(
            plan.model.clone(),
            PipelineConfig::new(plan.pes.clone(), plan.partition.clone()),
            affinity.clone(),
        )?;
        for s in pipeline.stage_stats() {
            if let Some(e) = &s.pin_error {
                tracing::warn!(stage = s.stage, "stage runs unpinned: {e}");
            }
        }
        let source: Box<dyn FrameSource> = match admission {
            Some(admission) => Box::new(Requests {
                admission: admission.clone(),
            }),
            None => Box::new(Synthetic {
                arrivals: plan.load,
                seed: plan.seed,
            }),
        };
        let feed = source.start(pipeline.admitter(), plan.model.input())?;
        let mut observer = Observer::new(
            ProcReader::new(),
            Box::new(PerfCounters::new()),
            support,
            plan.pes.clone(),
            plan.unit_ms,
        );
        observer.set_naming(name_antagonists);
        Ok(Self {
            pe_speed: plan.pes.iter().map(|p| p.len() as f64).collect(),
            repin: (0..plan.pes.len()).map(|_| None).collect(),
            stamp: plan.stamp,
            io: plan.io,
            model: plan.model,
            pes: plan.pes,
            pipeline,
            feed,
            observer,
            affinity,
            started: Instant::now(),
        })
    }

    /// Stops the source (or the feeder: queued requests stay queued) and
    /// lets every admitted frame finish; the requests they belong to are
    /// answered.
    pub(super) fn drain(mut self) -> Drained {
        self.feed.stop();
        let stats = self.pipeline.stage_stats();
        let rejected = self.pipeline.rejected();
        let admitted_before = self.pipeline.admitted();
        let rest = self.pipeline.shutdown();
        for c in &rest {
            self.feed.complete(c);
        }
        Drained {
            rest,
            admitted: admitted_before,
            rejected,
            stats,
        }
    }

    /// The stages as the observer sees them; a stage's PE is the
    /// configured PE it is pinned to.
    pub(super) fn views(&self) -> Vec<StageView> {
        let part = self.pipeline.partition();
        self.pipeline
            .stage_stats()
            .iter()
            .map(|s| StageView {
                tid: s.tid,
                pe: self
                    .pes
                    .iter()
                    .position(|pe| *pe == s.pe)
                    .unwrap_or(s.stage),
                units: part.range(s.stage),
                service_ms: (s.frames > 0).then_some(s.service_ms),
            })
            .collect()
    }

    /// The policy's view of the running pipeline: its cuts, and each
    /// stage's PE.
    pub(super) fn placement(&self) -> Placement {
        self.placement_of(&self.views())
    }

    /// [`Engine::placement`] with the stages' PEs from `views`, read once
    /// for the whole tick.
    pub(super) fn placement_of(&self, views: &[StageView]) -> Placement {
        let p = self.pipeline.partition();
        Placement {
            units: p.units(),
            cuts: p.cuts().to_vec(),
            mapping: views.iter().map(|v| v.pe).collect(),
        }
    }

    pub(super) fn describe_load(&self) -> String {
        self.feed.describe()
    }

    /// Compares each stage thread's affinity (read through the engine's
    /// [`Affinity`]) with its PE and re-pins a stage whose affinity someone
    /// else changed.
    pub(super) fn check_pinning(&mut self) {
        for s in self.pipeline.stage_stats() {
            if s.pin_error.is_some() || s.tid <= 0 {
                continue;
            }
            if let Some(rx) = &self.repin[s.stage] {
                match rx.try_recv() {
                    Err(crossbeam_channel::TryRecvError::Empty) => continue,
                    Ok(Err(e)) => tracing::warn!(stage = s.stage, "pinning to its PE failed: {e}"),
                    _ => {}
                }
                self.repin[s.stage] = None;
            }
            let want = s.pe;
            let Ok(actual) = self.affinity.get(s.tid) else {
                continue;
            };
            if actual != want {
                tracing::warn!(
                    stage = s.stage,
                    tid = s.tid,
                    "pinning drift: stage thread may run on CPUs {actual}, its PE is {want}; re-pinning"
                );
                match self.pipeline.remap(s.stage, want) {
                    Ok(rx) => self.repin[s.stage] = Some(rx),
                    Err(e) => tracing::warn!(stage = s.stage, "re-pinning: {e}"),
                }
            }
        }
    }
}

/// The probe's verdict, or less when the configuration turns counters off.
pub(super) fn counter_support(cfg: &Config, probed: &CounterSupport) -> CounterSupport {
    if cfg.monitor.counters || !probed.has_hardware() {
        probed.clone()
    } else {
        CounterSupport::SoftwareOnly {
            reason: "monitor.counters is false in the configuration".into(),
            fix: "set monitor.counters: true".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::pipeline::affinity::FakeAffinity;

    /// Two single-CPU PEs under an open loop too slow to send a frame: the
    /// stage threads start and pin, and stay idle.
    fn idle_config() -> Config {
        let mut cfg = Config::default();
        cfg.model.name = "mobilenet_v2".into();
        cfg.pes = vec!["0".into(), "1".into()];
        cfg.load.mode = LoadMode::Open;
        cfg.load.rate = Some(1e-3);
        cfg
    }

    fn software() -> CounterSupport {
        CounterSupport::SoftwareOnly {
            reason: "a unit test".into(),
            fix: "none".into(),
        }
    }

    fn started(cfg: &Config, affinity: Arc<FakeAffinity>) -> Engine {
        let online = CpuSet::from_cpus([0, 1]);
        let plan = Plan::new(cfg, &online, None, false).unwrap();
        let e = Engine::start(plan, &software(), false, None, affinity.clone()).unwrap();
        let pinned = affinity.wait_sets(e.pes.len(), Duration::from_secs(10));
        assert!(
            pinned.len() >= e.pes.len(),
            "the stages never pinned: {pinned:?}"
        );
        e
    }

    #[test]
    fn check_pinning_repins_a_stage_whose_affinity_someone_else_changed() {
        let fake = Arc::new(FakeAffinity::new());
        let mut e = started(&idle_config(), fake.clone());
        let tids: Vec<i32> = e.pipeline.stage_stats().iter().map(|s| s.tid).collect();
        let mut pinned = fake.sets();
        pinned.sort();
        let mut want = vec![(tids[0], CpuSet::single(0)), (tids[1], CpuSet::single(1))];
        want.sort();
        assert_eq!(pinned, want, "each stage pinned once, on its PE");
        // In place: nothing to do.
        e.check_pinning();
        assert!(e.repin.iter().all(Option::is_none));
        assert_eq!(fake.sets().len(), 2);
        // Stage 1 moved onto both CPUs behind odin's back: pinned back.
        fake.force(tids[1], CpuSet::from_cpus([0, 1]));
        e.check_pinning();
        let rx = e.repin[1].as_ref().expect("a re-pin of stage 1");
        rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
        assert!(e.repin[0].is_none(), "stage 0 did not drift");
        assert_eq!(fake.get(tids[1]).unwrap(), CpuSet::single(1));
        assert_eq!(fake.sets().last(), Some(&(tids[1], CpuSet::single(1))));
        assert_eq!(fake.sets().len(), 3);
        // The outcome is taken on the next check, which finds it in place.
        e.check_pinning();
        assert!(e.repin[1].is_none());
        let drained = e.drain();
        assert!(drained.rest.is_empty());
    }

    #[test]
    fn apply_moves_the_cuts_and_remaps_only_the_stages_that_move() {
        let fake = Arc::new(FakeAffinity::new());
        let e = started(&idle_config(), fake.clone());
        let from = e.placement();
        assert_eq!(from.mapping, vec![0, 1]);
        let mut to = from.clone();
        to.cuts[0] += 1;
        to.mapping = vec![1, 0];
        let applied = super::super::tick::apply(&e.pipeline, &from, &to, &e.pes).unwrap();
        assert_eq!(applied.partition.cuts(), to.cuts.as_slice());
        assert_eq!(e.pipeline.partition().cuts(), to.cuts.as_slice());
        let moved: Vec<usize> = applied.remaps.iter().map(|(s, _)| *s).collect();
        assert_eq!(moved, vec![0, 1]);
        for (_, rx) in applied.remaps {
            rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
        }
        let tids: Vec<i32> = e.pipeline.stage_stats().iter().map(|s| s.tid).collect();
        assert_eq!(fake.get(tids[0]).unwrap(), CpuSet::single(1));
        assert_eq!(fake.get(tids[1]).unwrap(), CpuSet::single(0));
        assert_eq!(e.placement(), to, "the engine reads back what it applied");
        // The same placement again: nothing moves.
        let again = super::super::tick::apply(&e.pipeline, &to, &to, &e.pes).unwrap();
        assert!(again.remaps.is_empty());
        e.drain();
    }

    #[test]
    fn apply_refuses_a_placement_that_cannot_run_before_anything_moves() {
        let fake = Arc::new(FakeAffinity::new());
        let e = started(&idle_config(), fake.clone());
        let from = e.placement();
        let pinned = fake.sets().len();
        let mut to = from.clone();
        to.cuts[0] += 1;
        to.mapping = vec![0, 5];
        let err = super::super::tick::apply(&e.pipeline, &from, &to, &e.pes)
            .err()
            .expect("PE 5 does not exist");
        assert!(
            err.to_string().contains("stage 1: no PE 5 (there are 2)"),
            "{err}"
        );
        assert_eq!(
            e.pipeline.partition().cuts(),
            from.cuts.as_slice(),
            "cuts unmoved"
        );
        let mut past_the_end = from.clone();
        past_the_end.cuts[0] = from.units + 1;
        assert!(super::super::tick::apply(&e.pipeline, &from, &past_the_end, &e.pes).is_err());
        assert_eq!(e.pipeline.partition().cuts(), from.cuts.as_slice());
        assert_eq!(fake.sets().len(), pinned, "no stage remapped");
        e.drain();
    }

    #[test]
    fn a_plan_takes_one_pe_per_cpu_narrowed_to_what_odin_may_use() {
        let online = CpuSet::from_cpus([0, 1, 2, 3]);
        let mut cfg = Config::default();
        cfg.model.name = "mobilenet_v2".into();
        // Default: one PE per online CPU, closed loop, a stage per PE.
        let plan = Plan::new(&cfg, &online, None, false).unwrap();
        assert_eq!(plan.pes, (0..4).map(CpuSet::single).collect::<Vec<_>>());
        assert_eq!(plan.partition.stages(), 4);
        assert_eq!(plan.partition.units(), plan.model.len());
        assert_eq!(plan.unit_ms.len(), plan.model.len());
        assert_eq!(plan.load, Arrivals::Closed);
        // Configured PEs narrowed to the CPUs the cgroup allows; a PE left
        // with none is dropped.
        cfg.pes = vec!["0-1".into(), "2".into(), "3".into()];
        let allowed = CpuSet::from_cpus([1, 2]);
        let plan = Plan::new(&cfg, &online, Some(&allowed), false).unwrap();
        assert_eq!(plan.pes, vec![CpuSet::single(1), CpuSet::single(2)]);
        assert_eq!(plan.partition.stages(), 2);
        // Open loop only with a rate.
        cfg.load.mode = LoadMode::Open;
        cfg.load.rate = Some(12.5);
        let plan = Plan::new(&cfg, &online, None, false).unwrap();
        assert_eq!(plan.load, Arrivals::Open { rate: 12.5 });
        // A two-CPU PE is twice as fast: it gets more of the work.
        cfg.pes = vec!["0-1".into(), "2".into()];
        let plan = Plan::new(&cfg, &online, None, false).unwrap();
        let ms = |s: usize| {
            plan.partition
                .range(s)
                .map(|u| plan.unit_ms[u])
                .sum::<f64>()
        };
        assert!(ms(0) > ms(1), "{} vs {}", ms(0), ms(1));
    }

    #[test]
    fn a_plan_with_more_pes_than_units_is_refused() {
        let online = CpuSet::from_cpus(0..200);
        let mut cfg = Config::default();
        cfg.model.name = "alexnet".into();
        cfg.pes = (0..200).map(|c| c.to_string()).collect();
        let err = Plan::new(&cfg, &online, None, false).err().unwrap();
        let refused = err.downcast_ref::<Refused>().expect("a Refused");
        assert!(
            refused
                .0
                .starts_with("pes: 200 stages but alexnet has only"),
            "{refused}"
        );
    }
}
