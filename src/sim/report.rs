//! Per-policy summaries of simulated runs: the table, JSON and CSV.
//!
//! Throughput is measured from the first completion to the last,
//! `(frames - 1) / (t_last - t_first)`, so the pipeline's fill time does
//! not count against it; latency is admission to completion (queueing
//! included); SLO attainment is the share of frames within the latency
//! SLO.

use std::fmt::Write as _;

use serde::Serialize;

use super::Spec;
use super::scenario::{Interval, Timeline};
use super::world::{RunResult, TickRecord};
use crate::stats::percentile;

/// Summary figures of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyRun {
    /// Policy name.
    pub policy: String,
    /// Frames per second, first to last completion.
    pub throughput_fps: f64,
    /// Median latency, ms.
    pub p50_latency_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_latency_ms: f64,
    /// Share of frames within the SLO.
    pub slo_attainment: f64,
}

impl PolicyRun {
    /// Summarises `r` against a latency SLO of `slo_ms`.
    pub fn new(policy: &str, r: &RunResult, slo_ms: f64) -> Self {
        let n = r.completions.len();
        let throughput_fps = if n >= 2 {
            let span = r.completions[n - 1].0 - r.completions[0].0;
            if span > 0.0 {
                (n - 1) as f64 / span
            } else {
                0.0
            }
        } else {
            0.0
        };
        let mut lat: Vec<f64> = r.completions.iter().map(|c| c.1).collect();
        lat.sort_by(f64::total_cmp);
        let within = lat.partition_point(|&l| l <= slo_ms);
        Self {
            policy: policy.to_string(),
            throughput_fps,
            p50_latency_ms: percentile(&lat, 0.5),
            p99_latency_ms: percentile(&lat, 0.99),
            slo_attainment: if n > 0 { within as f64 / n as f64 } else { 0.0 },
        }
    }
}

/// One row of the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PolicyReport {
    /// Policy name.
    pub policy: String,
    /// Mean throughput, frames per second.
    pub throughput_fps: f64,
    /// Median latency, ms.
    pub p50_latency_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_latency_ms: f64,
    /// Share of frames within the latency SLO.
    pub slo_attainment: f64,
    /// Placements applied.
    pub reconfigurations: u64,
    /// Frames completed while a candidate was being measured.
    pub exploration_frames: u64,
    /// Throughput over the oracle's.
    pub oracle_ratio: f64,
    /// Mean wall time of one decision (detector + policy), ms.
    pub decision_ms: f64,
}

/// A whole simulation.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Model name.
    pub model: String,
    /// PEs.
    pub pes: usize,
    /// Scenario name.
    pub scenario: String,
    /// Frames per run.
    pub frames: u64,
    /// Seed.
    pub seed: u64,
    /// Latency SLO, ms.
    pub slo_latency_ms: f64,
    /// Whether the SLO is the default (1.5 x no-interference p99).
    pub slo_default: bool,
    /// Nominal bottleneck of the initial placement, ms.
    pub nominal_bottleneck_ms: f64,
    /// Nominal run length the scenario's fractions refer to, seconds.
    pub nominal_run_s: f64,
    /// No-interference throughput of the initial placement, frames/s.
    pub reference_fps: f64,
    /// Nominal PE speeds.
    pub pe_speed: Vec<f64>,
    /// Interference intervals of the run.
    pub intervals: Vec<Interval>,
    /// One row per requested policy.
    pub policies: Vec<PolicyReport>,
    /// Per policy (requested ones first, in order; then the oracle if it
    /// was run only for the ratio): the tick records, for plots and CSV.
    #[serde(skip)]
    pub timelines: Vec<(String, Vec<TickRecord>)>,
    /// Virtual end time of each run, seconds.
    #[serde(skip)]
    pub end_s: f64,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        spec: &Spec,
        timeline: &Timeline,
        bottleneck_ms: f64,
        run_s: f64,
        slo_ms: f64,
        slo_default: bool,
        reference: &PolicyRun,
        runs: Vec<(String, RunResult)>,
    ) -> Self {
        let summaries: Vec<PolicyRun> = runs
            .iter()
            .map(|(n, r)| PolicyRun::new(n, r, slo_ms))
            .collect();
        let oracle_fps = summaries
            .iter()
            .find(|s| s.policy == "oracle")
            .map_or(f64::NAN, |s| s.throughput_fps);
        let policies = runs
            .iter()
            .zip(&summaries)
            .filter(|((n, _), _)| spec.policies.contains(n))
            .map(|((_, r), s)| PolicyReport {
                policy: s.policy.clone(),
                throughput_fps: s.throughput_fps,
                p50_latency_ms: s.p50_latency_ms,
                p99_latency_ms: s.p99_latency_ms,
                slo_attainment: s.slo_attainment,
                reconfigurations: r.reconfigurations,
                exploration_frames: r.exploration_frames,
                oracle_ratio: s.throughput_fps / oracle_fps,
                decision_ms: if r.decisions > 0 {
                    r.decision_s * 1e3 / r.decisions as f64
                } else {
                    0.0
                },
            })
            .collect();
        let end_s = runs.iter().map(|(_, r)| r.end_s).fold(0.0, f64::max);
        Self {
            model: spec.model.clone(),
            pes: spec.pes,
            scenario: spec.scenario.name.clone(),
            frames: spec.frames,
            seed: spec.seed,
            slo_latency_ms: slo_ms,
            slo_default,
            nominal_bottleneck_ms: bottleneck_ms,
            nominal_run_s: run_s,
            reference_fps: reference.throughput_fps,
            pe_speed: timeline.pe_speed.clone(),
            intervals: timeline.intervals.clone(),
            policies,
            timelines: runs.into_iter().map(|(n, r)| (n, r.ticks)).collect(),
            end_s,
        }
    }

    /// The table `odin simulate` prints.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} on {} PEs, scenario {}, {} frames, latency SLO {:.1} ms{}, no-interference {:.2} frames/s",
            self.model,
            self.pes,
            self.scenario,
            self.frames,
            self.slo_latency_ms,
            if self.slo_default {
                " (1.5 x no-interference p99)"
            } else {
                ""
            },
            self.reference_fps,
        );
        let _ = writeln!(
            s,
            "{:<8} {:>10} {:>9} {:>9} {:>7} {:>8} {:>8} {:>7} {:>9}",
            "policy",
            "frames/s",
            "p50 ms",
            "p99 ms",
            "SLO %",
            "reconf",
            "explore",
            "/oracle",
            "decide ms"
        );
        for p in &self.policies {
            let _ = writeln!(
                s,
                "{:<8} {:>10.2} {:>9.1} {:>9.1} {:>7.1} {:>8} {:>8} {:>7.3} {:>9.4}",
                p.policy,
                p.throughput_fps,
                p.p50_latency_ms,
                p.p99_latency_ms,
                p.slo_attainment * 100.0,
                p.reconfigurations,
                p.exploration_frames,
                p.oracle_ratio,
                p.decision_ms
            );
        }
        s
    }

    /// One CSV row per policy tick: `policy,t_s,throughput_fps,
    /// p50_latency_ms,p99_latency_ms,frames_done,reconfigured,exploring,
    /// cuts,mapping` (cuts and mapping space-separated; empty latency when
    /// no frame completed in the tick).
    pub fn csv(&self) -> String {
        let mut s = String::from(
            "policy,t_s,throughput_fps,p50_latency_ms,p99_latency_ms,frames_done,reconfigured,exploring,cuts,mapping\n",
        );
        let opt = |v: Option<f64>| v.map_or_else(String::new, |v| format!("{v:.3}"));
        let join = |v: &[usize]| v.iter().map(usize::to_string).collect::<Vec<_>>().join(" ");
        for (name, ticks) in &self.timelines {
            for t in ticks {
                let _ = writeln!(
                    s,
                    "{name},{:.3},{:.3},{},{},{},{},{},{},{}",
                    t.t,
                    t.throughput_fps,
                    opt(t.p50_latency_ms),
                    opt(t.p99_latency_ms),
                    t.frames_done,
                    t.reconfigured,
                    t.exploring,
                    join(&t.cuts),
                    join(&t.mapping)
                );
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_skips_the_fill_and_attainment_counts_frames() {
        let r = RunResult {
            completions: vec![(1.0, 10.0), (1.5, 20.0), (2.0, 30.0), (2.5, 40.0)],
            ..RunResult::default()
        };
        let s = PolicyRun::new("x", &r, 25.0);
        assert_eq!(s.throughput_fps, 2.0);
        assert_eq!(s.slo_attainment, 0.5);
        assert_eq!(s.p50_latency_ms, 20.0);
        assert_eq!(s.p99_latency_ms, 40.0);
    }
}
