//! Policies and the interference detector: pure functions and state
//! machines over an [`Observation`]. Nothing here touches the OS, so the
//! simulator runs exactly this code.

pub mod detector;

use serde::Serialize;

/// A task from outside the pipeline that used a PE's CPUs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Antagonist {
    /// Process id.
    pub pid: i32,
    /// Thread id.
    pub tid: i32,
    /// Command name.
    pub comm: String,
    /// Its cgroup path, if known.
    pub cgroup: Option<String>,
    /// Share of one CPU it used over the last tick.
    pub cpu_share: f64,
}

/// What the monitor saw on one processing element over one tick. Every
/// signal is optional: a missing source (no PMU, no schedstat) is `None`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PeSignals {
    /// Instructions per cycle of the pipeline's threads on the PE.
    pub ipc: Option<f64>,
    /// Last-level-cache misses per 1000 instructions.
    pub llc_mpki: Option<f64>,
    /// Share of wall time the PE's stage threads waited in the run queue.
    pub run_delay_share: Option<f64>,
    /// CPU time used on the PE's CPUs by tasks outside the pipeline, in CPUs.
    pub foreign_cpu_share: Option<f64>,
    /// The foreign tasks, most CPU first.
    pub antagonists: Vec<Antagonist>,
}

/// One stage over one tick.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StageSignals {
    /// The PE the stage runs on.
    pub pe: usize,
    /// Smoothed per-frame service time, milliseconds (`None` before any frame).
    pub service_ms: Option<f64>,
    /// What the stage's units should take on an idle PE, milliseconds.
    pub expected_ms: f64,
}
