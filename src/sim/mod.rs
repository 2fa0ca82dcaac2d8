//! The simulator: the same policies (detector included) on a simulated
//! pipeline under scripted interference, compared against the oracle.
//!
//! ```text
//!   scenario (YAML) --resolve--> Timeline (PE speeds, episodes in seconds)
//!   cost profile ----------------> unit_ms, memory intensity
//!                                      |
//!        for each policy: World (discrete events) <--Observation/Action--> Controller
//!                                      |
//!                                   RunResult --> Report (table, JSON, CSV, SVG)
//! ```
//!
//! A run starts from the oracle's placement for the nominal speeds (the
//! balanced partition every policy starts from, and what `static` keeps).
//! Scenario times are fractions of the *nominal run*: `frames x` the
//! nominal bottleneck. The default latency SLO is 1.5 x the p99 latency of
//! a no-interference run of that initial placement under the same load, so
//! it includes the queueing the load causes (closed loop keeps every queue
//! full).
//!
//! Pure and deterministic: no file or OS access (the CLI reads scenario
//! files and profiles); the same inputs give the same report, except the
//! wall-clock time of the decisions (`decision_ms`).

pub mod des;
pub mod plot;
pub mod report;
pub mod scenario;
pub mod world;

use crate::engine::profile::CostProfile;
use crate::pipeline::source::Arrivals;
use crate::policy::config::PolicyConfig;
use crate::policy::controller::Controller;
use crate::policy::{self, Action, Observation, Slo, oracle};
use report::{PolicyRun, Report};
use scenario::{Named, ScenarioError};
pub use world::{Driver, RunResult, World, WorldConfig};

/// Default SLO: this many times the no-interference p99 latency.
pub const SLO_FACTOR: f64 = 1.5;

/// Share of a cache/memory episode's excess slowdown that even the least
/// memory-intensive unit feels (shared caches slow everything a little).
pub const MEMORY_FLOOR: f64 = 0.2;

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The scenario is unreadable, invalid or does not fit.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// A policy could not be built, or an argument is out of range.
    #[error("{0}")]
    Invalid(String),
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Model name, for the report.
    pub model: String,
    /// Milliseconds of each unit at speed 1.
    pub unit_ms: Vec<f64>,
    /// Memory intensity of each unit in `[0, 1]` (see [`intensity`]).
    pub intensity: Vec<f64>,
    /// Number of PEs (one stage each).
    pub pes: usize,
    /// The scenario.
    pub scenario: Named,
    /// Policies to report, from [`policy::NAMES`].
    pub policies: Vec<String>,
    /// Frames per run.
    pub frames: u64,
    /// Latency SLO; default [`SLO_FACTOR`] x the no-interference p99.
    pub slo_latency_ms: Option<f64>,
    /// Seed of random episodes and arrivals.
    pub seed: u64,
    /// Closed or open loop.
    pub load: Arrivals,
    /// Policy tick, seconds of virtual time.
    pub tick_s: f64,
    /// Policy and detector parameters.
    pub policy: PolicyConfig,
}

/// Each unit's memory intensity from the profile: bytes moved (weights
/// and activations) per FLOP, relative to the model's most intensive unit,
/// mapped to `[MEMORY_FLOOR, 1]`.
pub fn intensity(profile: &CostProfile) -> Vec<f64> {
    let raw: Vec<f64> = profile
        .units
        .iter()
        .map(|u| (u.weight_bytes + u.activation_bytes) as f64 / u.flops.max(1) as f64)
        .collect();
    let max = raw.iter().copied().fold(0.0, f64::max);
    raw.iter()
        .map(|r| {
            if max > 0.0 {
                MEMORY_FLOOR + (1.0 - MEMORY_FLOOR) * r / max
            } else {
                1.0
            }
        })
        .collect()
}

/// The real controller (detector + policy) as a world driver.
struct ControllerDriver {
    controller: Controller,
}

impl ControllerDriver {
    fn build(name: &str, cfg: &PolicyConfig) -> Result<Self, String> {
        Ok(Self {
            controller: Controller::build(name, cfg)?,
        })
    }
}

impl Driver for ControllerDriver {
    fn step(&mut self, obs: &mut Observation) -> Action {
        self.controller.step(obs)
    }

    /// odin: its local search is measuring a candidate. guided: the same,
    /// or its one-step jump is being measured.
    fn exploring(&self) -> bool {
        self.controller.exploring()
    }
}

/// The initial placement: the oracle's for the nominal speeds.
pub fn initial_placement(
    unit_ms: &[f64],
    speed: &[f64],
    enumerate_orders: bool,
) -> oracle::OracleResult {
    oracle::optimal(unit_ms, speed, enumerate_orders)
}

fn check(spec: &Spec) -> Result<(), SimError> {
    let bad = |m: String| Err(SimError::Invalid(m));
    if spec.pes == 0 {
        return bad("--pe-count: at least 1 PE".into());
    }
    if spec.frames < 2 {
        return bad("--frames: at least 2 frames".into());
    }
    if !(spec.tick_s > 0.0 && spec.tick_s.is_finite()) {
        return bad(format!("tick {} s: must be positive", spec.tick_s));
    }
    if let Some(slo) = spec.slo_latency_ms
        && !(slo > 0.0 && slo.is_finite())
    {
        return bad(format!(
            "--slo-latency {slo}: must be a positive number of ms"
        ));
    }
    if spec.unit_ms.is_empty() || spec.unit_ms.iter().any(|c| !(c.is_finite() && *c >= 0.0)) {
        return bad("unit costs: need finite non-negative costs".into());
    }
    if spec.unit_ms.iter().sum::<f64>() <= 0.0 {
        return bad("unit costs: the model costs nothing".into());
    }
    if spec.intensity.len() != spec.unit_ms.len() {
        return bad("unit intensities: one per unit".into());
    }
    for p in &spec.policies {
        if !policy::NAMES.contains(&p.as_str()) {
            return bad(format!(
                "--policy {p}: unknown; valid: all, {}",
                policy::NAMES.join(", ")
            ));
        }
    }
    spec.policy.validate().map_err(SimError::Invalid)
}

/// Runs every requested policy (and the oracle, for the ratio) on the
/// scenario and reports.
pub fn simulate(spec: &Spec) -> Result<Report, SimError> {
    check(spec)?;
    let nominal = spec.scenario.scenario.speeds(spec.pes);
    let start = initial_placement(&spec.unit_ms, &nominal, spec.policy.enumerate_orders);
    let bottleneck_ms = start.bottleneck_ms;
    if !(bottleneck_ms.is_finite() && bottleneck_ms > 0.0) {
        return Err(SimError::Invalid(format!(
            "no usable placement (bottleneck {bottleneck_ms} ms)"
        )));
    }
    let run_s = spec.frames as f64 * bottleneck_ms / 1e3;
    let timeline =
        spec.scenario
            .scenario
            .resolve(&spec.scenario.name, spec.pes, run_s, spec.seed)?;
    let base = |timeline: scenario::Timeline, slo: Slo| {
        let mut cfg = WorldConfig::new(
            spec.unit_ms.clone(),
            timeline,
            start.placement.clone(),
            spec.frames,
        );
        cfg.intensity = spec.intensity.clone();
        cfg.load = spec.load;
        cfg.tick_s = spec.tick_s;
        cfg.slo = slo;
        cfg.seed = spec.seed;
        cfg
    };
    // The no-interference reference: the initial placement, undisturbed.
    let quiet = scenario::Timeline {
        pe_speed: nominal.clone(),
        intervals: Vec::new(),
    };
    let reference = World::new(base(quiet, Slo::default())).run(&mut world::Keep);
    let reference = PolicyRun::new("reference", &reference, f64::INFINITY);
    let slo_default = spec.slo_latency_ms.is_none();
    let slo_ms = spec
        .slo_latency_ms
        .unwrap_or(SLO_FACTOR * reference.p99_latency_ms);
    let slo = Slo {
        latency_ms: Some(slo_ms),
        throughput_fps: None,
    };
    let mut names: Vec<String> = spec.policies.clone();
    if !names.iter().any(|n| n == "oracle") {
        names.push("oracle".into());
    }
    let mut drivers = Vec::with_capacity(names.len());
    for n in &names {
        drivers.push(ControllerDriver::build(n, &spec.policy).map_err(SimError::Invalid)?);
    }
    let cfg = base(timeline.clone(), slo);
    let results: Vec<RunResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = drivers
            .into_iter()
            .map(|mut d| {
                let cfg = cfg.clone();
                scope.spawn(move || World::new(cfg).run(&mut d))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a simulation thread panicked"))
            .collect()
    });
    let runs: Vec<(String, RunResult)> = names.into_iter().zip(results).collect();
    Ok(Report::new(
        spec,
        &timeline,
        bottleneck_ms,
        run_s,
        slo_ms,
        slo_default,
        &reference,
        runs,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::zoo;

    fn spec(model: &str, pes: usize, scenario: &str, frames: u64) -> Spec {
        let m = zoo::build(model, 1).unwrap();
        let profile = CostProfile::nominal(&m, 100.0);
        Spec {
            model: model.into(),
            unit_ms: profile.unit_ms(),
            intensity: intensity(&profile),
            pes,
            scenario: scenario::Scenario::find(scenario, |_| unreachable!("shipped")).unwrap(),
            policies: policy::NAMES.iter().map(|s| s.to_string()).collect(),
            frames,
            slo_latency_ms: None,
            seed: 1,
            load: Arrivals::Closed,
            tick_s: 0.1,
            policy: PolicyConfig::default(),
        }
    }

    fn row<'a>(r: &'a Report, name: &str) -> &'a report::PolicyReport {
        r.policies.iter().find(|p| p.policy == name).unwrap()
    }

    #[test]
    fn no_interference_runs_at_the_static_bottleneck_and_nobody_loses() {
        let s = spec("resnet18", 4, "none", 1500);
        let r = simulate(&s).unwrap();
        let ideal = 1e3 / r.nominal_bottleneck_ms;
        let st = row(&r, "static").throughput_fps;
        assert!((st - ideal).abs() / ideal < 0.01, "static {st} vs {ideal}");
        for p in ["lls", "odin", "guided", "oracle"] {
            let t = row(&r, p).throughput_fps;
            assert!((t - st).abs() / st < 0.02, "{p}: {t} vs static {st}");
        }
    }

    #[test]
    fn oracle_bounds_everyone_and_odin_beats_static_on_long_lived() {
        let s = spec("resnet50", 4, "long-lived", 1500);
        let r = simulate(&s).unwrap();
        let oracle = row(&r, "oracle").throughput_fps;
        for p in ["static", "odin", "guided"] {
            let t = row(&r, p).throughput_fps;
            assert!(oracle >= t * 0.999, "oracle {oracle} < {p} {t}");
        }
        assert!(
            row(&r, "odin").throughput_fps > 1.05 * row(&r, "static").throughput_fps,
            "{:?}",
            r.policies
        );
    }

    #[test]
    fn intensity_is_in_range_and_fc_layers_are_memory_bound() {
        let m = zoo::build("vgg16", 1).unwrap();
        let p = CostProfile::nominal(&m, 100.0);
        let i = intensity(&p);
        assert!(i.iter().all(|v| (MEMORY_FLOOR..=1.0).contains(v)));
        let first_conv = p
            .units
            .iter()
            .position(|u| u.kind.contains("conv"))
            .unwrap();
        let last = p.units.len() - 1;
        assert!(i[last] > i[first_conv], "{i:?}");
    }
}
