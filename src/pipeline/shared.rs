//! State the stage threads and the pipeline's owner share: the cut points,
//! the partition in force, each stage's PE, thread id and service times,
//! and the control messages a stage takes. [`super::runtime`] builds it and
//! [`super::stage`] reads it; neither is needed to read this.

use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::Sender;

use super::affinity::{Affinity, AffinityError};
use super::partition::Partition;
use crate::cpulist::CpuSet;
use crate::engine::Model;

/// A message to one stage thread.
pub(crate) enum StageControl {
    /// Re-pin to these CPUs and say how it went.
    Pin(CpuSet, Sender<Result<(), AffinityError>>),
}

/// State of one stage that other threads read.
pub(crate) struct StageShared {
    pub pe: Mutex<CpuSet>,
    pub pin_error: Mutex<Option<String>>,
    pub tid: AtomicI32,
    /// Smoothed per-frame service time, f64 seconds as bits.
    pub(super) ewma_bits: AtomicU64,
    pub(super) frames: AtomicU64,
    pub(super) busy_ns: AtomicU64,
}

impl StageShared {
    pub(super) fn new(pe: CpuSet) -> Self {
        Self {
            pe: Mutex::new(pe),
            pin_error: Mutex::new(None),
            tid: AtomicI32::new(0),
            ewma_bits: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
        }
    }

    /// Adds one frame's service time. Only the stage's own thread writes.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "a stage service time is far below 2^64 ns (584 years)"
    )]
    pub fn record(&self, service: Duration, alpha: f64) {
        let s = service.as_secs_f64();
        let old = f64::from_bits(self.ewma_bits.load(Ordering::Acquire));
        let frames = self.frames.load(Ordering::Acquire);
        let new = if frames == 0 {
            s
        } else {
            alpha * s + (1.0 - alpha) * old
        };
        self.ewma_bits.store(new.to_bits(), Ordering::Release);
        self.busy_ns
            .fetch_add(service.as_nanos() as u64, Ordering::AcqRel);
        self.frames.fetch_add(1, Ordering::AcqRel);
    }
}

/// State shared by the stage threads and the pipeline's owner.
pub(crate) struct Shared {
    pub model: Arc<Model>,
    /// `cuts[s]` is the end of stage `s` for every stage but the last.
    pub(super) cuts: Vec<AtomicUsize>,
    pub(super) partition: Mutex<Partition>,
    pub stages: Vec<StageShared>,
    pub affinity: Arc<dyn Affinity>,
    pub ewma_alpha: f64,
    pub ready: Sender<usize>,
    /// Why a stage stopped on its own (a panic), if one did.
    pub failure: Mutex<Option<String>>,
}

impl Shared {
    /// The unit at which stage `s` currently stops.
    pub fn stage_end(&self, s: usize) -> usize {
        match self.cuts.get(s) {
            Some(c) => c.load(Ordering::Acquire),
            None => self.model.len(),
        }
    }
}
