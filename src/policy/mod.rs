//! Policies and the interference detector: pure functions and state
//! machines over an [`Observation`]. Nothing here touches the OS, so the
//! simulator runs exactly this code.

pub mod config;
pub mod controller;
pub mod cost;
pub mod detector;
pub mod fixed;
pub mod guided;
pub mod lls;
pub mod odin;
pub mod oracle;
#[cfg(test)]
pub(crate) mod testutil;

use serde::Serialize;

use config::PolicyConfig;
use detector::Event;

/// The policies [`build`] knows, in the order reports list them.
pub const NAMES: &[&str] = &["static", "lls", "odin", "guided", "oracle"];

/// The policy `name` (one of [`NAMES`]) with the parameters of `cfg`,
/// which are validated first; errors name the field or the policy.
pub fn build(name: &str, cfg: &PolicyConfig) -> Result<Box<dyn Policy>, String> {
    cfg.validate()?;
    Ok(match name {
        "static" => Box::new(fixed::Static),
        "lls" => Box::new(lls::Lls::new(cfg.lls.clone())),
        "odin" => Box::new(odin::Odin::new(cfg)),
        "guided" => Box::new(guided::Guided::new(cfg)),
        "oracle" => Box::new(oracle::Oracle::new(cfg.enumerate_orders)),
        _ => {
            return Err(format!(
                "unknown policy `{name}`: expected one of {}",
                NAMES.join(", ")
            ));
        }
    })
}

/// A task from outside the pipeline that used a PE's CPUs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Antagonist {
    /// Process id.
    pub pid: i32,
    /// The process's start time after boot, clock ticks: with `pid`, who
    /// it is (a later process with the same pid has another start).
    pub start: u64,
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

/// Service-level objective.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Slo {
    /// Largest acceptable end-to-end latency, milliseconds.
    pub latency_ms: Option<f64>,
    /// Smallest acceptable throughput, frames per second.
    pub throughput_fps: Option<f64>,
}

/// Where the units run: the cut points and, for each stage, its PE.
///
/// Unlike a pipeline [`Partition`](crate::pipeline::Partition) on its own, a placement may leave a
/// stage empty (two equal cuts): its PE then runs nothing, which is how a
/// policy leaves a crippled PE unused.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Placement {
    /// Units in the model.
    pub units: usize,
    /// S-1 non-decreasing cut points; stage `s` runs `[cut[s-1], cut[s])`.
    pub cuts: Vec<usize>,
    /// PE index of each stage (S entries).
    pub mapping: Vec<usize>,
}

impl Placement {
    /// Number of stages.
    pub fn stages(&self) -> usize {
        self.cuts.len() + 1
    }

    /// Units of stage `s` (possibly empty).
    pub fn range(&self, s: usize) -> std::ops::Range<usize> {
        let start = if s == 0 { 0 } else { self.cuts[s - 1] };
        let end = self.cuts.get(s).copied().unwrap_or(self.units);
        start..end
    }

    /// Whether the cuts are non-decreasing within `0..=units` and the
    /// mapping has one PE (below `pes`) per stage.
    pub fn is_valid(&self, pes: usize) -> bool {
        self.mapping.len() == self.stages()
            && self.mapping.iter().all(|&p| p < pes)
            && self.cuts.windows(2).all(|w| w[0] <= w[1])
            && self.cuts.iter().all(|&c| c <= self.units)
    }

    /// Time of each stage for unit costs `unit_ms` on PEs whose effective
    /// speeds are `speed` (time = cost / speed; stages sharing a PE share
    /// its speed).
    pub fn stage_times(&self, unit_ms: &[f64], speed: &[f64]) -> Vec<f64> {
        cost::CostModel::new(unit_ms).stage_times(self, speed)
    }
}

/// Everything a policy sees at one tick. The real agent and the simulator
/// fill it the same way.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Observation {
    /// Seconds since the start.
    pub t: f64,
    /// Cost profile: milliseconds of each unit on an idle reference PE.
    pub unit_ms: Vec<f64>,
    /// Nominal speed of each PE relative to the reference (its CPU count
    /// for identical CPUs; heterogeneous clusters differ).
    pub pe_speed: Vec<f64>,
    /// The placement in force.
    pub placement: Placement,
    /// Per stage: its PE, smoothed service time, expected time.
    pub stages: Vec<StageSignals>,
    /// Per PE: counters, scheduler signals, antagonists.
    pub pes: Vec<PeSignals>,
    /// What the detector reported this tick.
    pub events: Vec<Event>,
    /// Frames completed since the start.
    pub frames_done: u64,
    /// Completed frames per second over the last tick.
    pub throughput_fps: Option<f64>,
    /// 99th-percentile latency over the last tick, milliseconds.
    pub p99_latency_ms: Option<f64>,
    /// The objective.
    pub slo: Slo,
    /// The true effective speed of each PE (nominal speed divided by the
    /// interference slowdown), known only inside the simulator; the oracle
    /// policy needs it, every other policy must ignore it.
    pub true_speed: Option<Vec<f64>>,
}

/// What a policy asks for.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Action {
    /// Change nothing.
    Keep,
    /// Move to this placement (cuts and/or stage-to-PE mapping).
    Apply(Placement),
}

/// A placement policy: pure, Observation in, Action out.
pub trait Policy: Send {
    /// The policy's name (`static`, `lls`, `odin`, `guided`, `oracle`).
    fn name(&self) -> &'static str;
    /// One decision per tick.
    fn decide(&mut self, obs: &Observation) -> Action;
    /// Whether a placement the policy applied is in force and being
    /// measured to decide whether to keep it (what the simulator marks as
    /// exploring). Policies that do not measure their moves never are.
    fn exploring(&self) -> bool {
        false
    }
}
