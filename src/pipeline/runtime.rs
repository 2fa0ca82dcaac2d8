//! The pipeline: stage threads pinned to PEs, bounded queues between them,
//! a partition that can change while frames are in flight.
//!
//! ```text
//!  admit --> [q0] --> stage 0 (PE 0) --> [q1] --> stage 1 (PE 1) --> done
//!              units cursor..cut[0]         units cursor..N
//! ```
//!
//! Invariants: every admitted frame comes out exactly once and in order
//! (queues are FIFO and each stage is one thread); the last stage always
//! ends at N, so every frame completes whatever the cuts do meanwhile; a
//! frame's units run exactly once each because the cursor only moves
//! forward. Cut points are read per unit, so a repartition takes effect at
//! the next unit boundary without stopping any stage.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded, unbounded};

use super::affinity::{Affinity, AffinityError};
use super::frame::{Completed, Frame};
use super::partition::{Partition, PartitionError};
use super::shared::{Shared, StageControl, StageShared};
use super::stage::{Downstream, Stage};
use crate::cpulist::CpuSet;
use crate::engine::{Model, Tensor};

/// How a pipeline is laid out.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// One processing element (CPU set) per stage.
    pub pes: Vec<CpuSet>,
    /// The initial partition; must have one stage per PE.
    pub partition: Partition,
    /// Frames the admission queue holds before admission blocks or rejects.
    pub admission_capacity: usize,
    /// Frames each queue between stages holds.
    pub queue_capacity: usize,
    /// Weight of the newest sample in the smoothed service times.
    pub ewma_alpha: f64,
}

impl PipelineConfig {
    /// Defaults for everything but the PEs and the partition.
    pub fn new(pes: Vec<CpuSet>, partition: Partition) -> Self {
        Self {
            pes,
            partition,
            admission_capacity: 2,
            queue_capacity: 1,
            ewma_alpha: 0.2,
        }
    }
}

/// Why a pipeline cannot start or take a change.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The partition does not fit the model or the PEs.
    #[error("partition {partition}: {reason}")]
    Partition {
        /// The partition.
        partition: String,
        /// What does not fit.
        reason: String,
    },
    /// A partition error.
    #[error(transparent)]
    Invalid(#[from] PartitionError),
    /// A PE is empty, or a stage index out of range.
    #[error("{0}")]
    Config(String),
    /// A stage thread could not be started.
    #[error("spawning stage {stage}: {source}")]
    Spawn {
        /// Stage index.
        stage: usize,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// A stage could not be pinned.
    #[error(transparent)]
    Affinity(#[from] AffinityError),
    /// A stage thread has gone.
    #[error("stage {0} is not running")]
    StageGone(usize),
}

/// What one stage is doing, read without stopping it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StageStats {
    /// Stage index.
    pub stage: usize,
    /// The CPUs it is pinned to (a CPU list in JSON).
    #[serde(serialize_with = "cpu_list")]
    pub pe: CpuSet,
    /// Units `[start, end)` under the current partition.
    pub units: [usize; 2],
    /// Smoothed per-frame service time, milliseconds (0 before the first frame).
    pub service_ms: f64,
    /// Frames for which it ran at least one unit.
    pub frames: u64,
    /// Total time spent running units, seconds.
    pub busy_s: f64,
    /// The stage thread's kernel thread id (0 before it started).
    pub tid: i32,
    /// Why the thread could not be pinned, if it could not.
    pub pin_error: Option<String>,
}

/// Serializes a CPU set as its CPU list, `"0-3,8"`.
fn cpu_list<S: serde::Serializer>(cpus: &CpuSet, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(cpus)
}

/// Hands frames to a pipeline. Cheap to clone; one per frame source.
///
/// All clones share one sender slot; [`Pipeline::shutdown`] empties it, so
/// the pipeline closes whatever admitters are still around.
#[derive(Clone)]
pub struct Admitter {
    tx: Arc<RwLock<Option<Sender<Frame>>>>,
    next_id: Arc<AtomicU64>,
    rejected: Arc<AtomicU64>,
    stages: usize,
}

/// Why a frame was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The admission queue is full (counted as rejected).
    #[error("admission queue full")]
    Full,
    /// The pipeline is shutting down.
    #[error("pipeline closing")]
    Closing,
}

impl Admitter {
    /// Admits the frame `input(id)`, waiting for room; its id on success.
    pub fn admit(&self, input: impl FnOnce(u64) -> Tensor) -> Result<u64, Rejected> {
        let slot = self.tx.read().expect("admission lock");
        let tx = slot.as_ref().ok_or(Rejected::Closing)?;
        let id = self.next_id.fetch_add(1, Ordering::AcqRel);
        tx.send(Frame::new(id, input(id), self.stages))
            .map(|()| id)
            .map_err(|_| Rejected::Closing)
    }

    /// Admits the frame `input(id)` if there is room now; a full queue
    /// counts a rejection.
    pub fn try_admit(&self, input: impl FnOnce(u64) -> Tensor) -> Result<u64, Rejected> {
        let slot = self.tx.read().expect("admission lock");
        let tx = slot.as_ref().ok_or(Rejected::Closing)?;
        // Ids are taken after the full-queue check so rejected frames leave no gaps.
        if tx.is_full() {
            self.rejected.fetch_add(1, Ordering::AcqRel);
            return Err(Rejected::Full);
        }
        let id = self.next_id.fetch_add(1, Ordering::AcqRel);
        match tx.try_send(Frame::new(id, input(id), self.stages)) {
            Ok(()) => Ok(id),
            // Another source filled the queue in between: wait for room
            // rather than leave a hole in the id sequence.
            Err(TrySendError::Full(f)) => tx.send(f).map(|()| id).map_err(|_| Rejected::Closing),
            Err(TrySendError::Disconnected(_)) => Err(Rejected::Closing),
        }
    }

    /// True once the pipeline has begun shutting down.
    pub fn is_closing(&self) -> bool {
        self.tx.read().expect("admission lock").is_none()
    }

    /// Closes admission: waits for admissions under way, then drops the sender.
    fn close(&self) {
        self.tx.write().expect("admission lock").take();
    }
}

/// A running pipeline.
pub struct Pipeline {
    shared: Arc<Shared>,
    admitter: Admitter,
    done: Receiver<Completed>,
    controls: Vec<Sender<StageControl>>,
    threads: Vec<JoinHandle<()>>,
}

impl Pipeline {
    /// Starts one pinned thread per stage and returns once all are running.
    pub fn start(
        model: Arc<Model>,
        cfg: PipelineConfig,
        affinity: Arc<dyn Affinity>,
    ) -> Result<Self, PipelineError> {
        let stages = cfg.pes.len();
        check_partition(&model, &cfg.partition, stages)?;
        if let Some(i) = cfg.pes.iter().position(CpuSet::is_empty) {
            return Err(PipelineError::Config(format!("PE {i} has no CPU")));
        }
        let (ready_tx, ready_rx) = unbounded();
        let shared = Arc::new(Shared {
            cuts: cfg
                .partition
                .cuts()
                .iter()
                .map(|&c| AtomicUsize::new(c))
                .collect(),
            partition: Mutex::new(cfg.partition.clone()),
            stages: cfg.pes.iter().cloned().map(StageShared::new).collect(),
            model,
            affinity,
            ewma_alpha: cfg.ewma_alpha,
            ready: ready_tx,
            failure: Mutex::new(None),
        });
        let (admit_tx, mut input) = bounded(cfg.admission_capacity.max(1));
        let (done_tx, done) = unbounded();
        let mut threads = Vec::with_capacity(stages);
        let mut controls = Vec::with_capacity(stages);
        for s in 0..stages {
            let (output, next_input) = if s + 1 == stages {
                (Downstream::Done(done_tx.clone()), None)
            } else {
                let (tx, rx) = bounded(cfg.queue_capacity.max(1));
                (Downstream::Stage(tx), Some(rx))
            };
            let (ctl_tx, ctl_rx) = unbounded();
            let stage = Stage {
                index: s,
                shared: shared.clone(),
                input: input.clone(),
                control: ctl_rx,
                output,
            };
            let handle = std::thread::Builder::new()
                .name(format!("odin-stage-{s}"))
                .spawn(move || stage.run())
                .map_err(|source| PipelineError::Spawn { stage: s, source })?;
            threads.push(handle);
            controls.push(ctl_tx);
            if let Some(rx) = next_input {
                input = rx;
            }
        }
        drop(done_tx);
        for _ in 0..stages {
            ready_rx.recv().map_err(|_| PipelineError::StageGone(0))?;
        }
        Ok(Self {
            admitter: Admitter {
                tx: Arc::new(RwLock::new(Some(admit_tx))),
                next_id: Arc::new(AtomicU64::new(0)),
                rejected: Arc::new(AtomicU64::new(0)),
                stages,
            },
            shared,
            done,
            controls,
            threads,
        })
    }

    /// A handle that admits frames.
    pub fn admitter(&self) -> Admitter {
        self.admitter.clone()
    }

    /// Completed frames, in admission order.
    pub fn completed(&self) -> &Receiver<Completed> {
        &self.done
    }

    /// The model the pipeline runs.
    pub fn model(&self) -> &Arc<Model> {
        &self.shared.model
    }

    /// Number of stages.
    pub fn stages(&self) -> usize {
        self.shared.stages.len()
    }

    /// The partition in force.
    pub fn partition(&self) -> Partition {
        self.shared
            .partition
            .lock()
            .expect("partition lock")
            .clone()
    }

    /// Frames admitted so far.
    pub fn admitted(&self) -> u64 {
        self.admitter.next_id.load(Ordering::Acquire)
    }

    /// Frames rejected because the admission queue was full.
    pub fn rejected(&self) -> u64 {
        self.admitter.rejected.load(Ordering::Acquire)
    }

    /// Why a stage stopped on its own, if one did: the pipeline then winds
    /// down, and frames in flight are lost (admitted minus completed).
    pub fn failure(&self) -> Option<String> {
        self.shared.failure.lock().expect("failure lock").clone()
    }

    /// Moves the cut points. Frames in flight finish under the new cuts
    /// from their next unit on; nothing stops.
    pub fn set_partition(&self, p: Partition) -> Result<(), PipelineError> {
        check_partition(&self.shared.model, &p, self.stages())?;
        let mut current = self.shared.partition.lock().expect("partition lock");
        for (slot, &c) in self.shared.cuts.iter().zip(p.cuts()) {
            slot.store(c, Ordering::Release);
        }
        *current = p;
        Ok(())
    }

    /// Moves stage `stage` to the CPUs `cpus`. The stage applies it before
    /// its next frame (at once when idle); the receiver gets the outcome.
    pub fn remap(
        &self,
        stage: usize,
        cpus: CpuSet,
    ) -> Result<Receiver<Result<(), AffinityError>>, PipelineError> {
        if cpus.is_empty() {
            return Err(PipelineError::Config(format!(
                "stage {stage}: empty CPU set"
            )));
        }
        let ctl = self.controls.get(stage).ok_or_else(|| {
            PipelineError::Config(format!("no stage {stage} (pipeline has {})", self.stages()))
        })?;
        let (tx, rx) = bounded(1);
        ctl.send(StageControl::Pin(cpus, tx))
            .map_err(|_| PipelineError::StageGone(stage))?;
        Ok(rx)
    }

    /// Every stage's current figures.
    pub fn stage_stats(&self) -> Vec<StageStats> {
        let p = self.partition();
        self.shared
            .stages
            .iter()
            .enumerate()
            .map(|(s, st)| {
                let r = p.range(s);
                // An empty stage runs nothing: its old service time is no longer true.
                let service = if r.is_empty() {
                    0.0
                } else {
                    f64::from_bits(st.ewma_bits.load(Ordering::Acquire))
                };
                StageStats {
                    stage: s,
                    pe: st.pe.lock().expect("pe lock").clone(),
                    units: [r.start, r.end],
                    service_ms: service * 1e3,
                    frames: st.frames.load(Ordering::Acquire),
                    busy_s: st.busy_ns.load(Ordering::Acquire) as f64 / 1e9,
                    tid: st.tid.load(Ordering::Acquire),
                    pin_error: st.pin_error.lock().expect("pin error lock").clone(),
                }
            })
            .collect()
    }

    /// Stops admitting (admitters still around see [`Rejected::Closing`]),
    /// lets every admitted frame finish, joins the stage threads and returns
    /// the frames completed but not yet received.
    pub fn shutdown(self) -> Vec<Completed> {
        self.admitter.close();
        let Pipeline {
            admitter,
            done,
            controls,
            threads,
            ..
        } = self;
        drop(admitter);
        drop(controls);
        // The done queue closes when the last stage exits, which it does
        // once every stage before it has drained.
        let rest: Vec<Completed> = done.iter().collect();
        for t in threads {
            if t.join().is_err() {
                tracing::error!("a stage thread panicked");
            }
        }
        rest
    }
}

fn check_partition(model: &Model, p: &Partition, stages: usize) -> Result<(), PipelineError> {
    let reason = if p.units() != model.len() {
        format!(
            "covers {} units, model {} has {}",
            p.units(),
            model.name(),
            model.len()
        )
    } else if p.stages() != stages {
        format!("has {} stages for {} PEs", p.stages(), stages)
    } else {
        return Ok(());
    };
    Err(PipelineError::Partition {
        partition: p.to_string(),
        reason,
    })
}
