//! The agent's metrics, rendered in the Prometheus text exposition format
//! (version 0.0.4) only when scraped.
//!
//! Frame counts and the latency histogram are atomics updated on the hot
//! path (once per completed frame); everything else is a snapshot the
//! control loop replaces once per tick. Every metric has HELP and TYPE
//! lines and follows the naming conventions: `odin_` prefix, base units
//! (`_seconds`), `_total` for counters, `_ratio` for fractions.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use crate::server::stats::ServingStats;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the latency histogram buckets, seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// One stage, as of the last tick.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StageMetric {
    /// CPUs of its PE.
    pub pe: String,
    /// Units `[start, end)`.
    pub units: [usize; 2],
    /// Smoothed service time, seconds.
    pub service_seconds: f64,
}

/// One PE, as of the last tick.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PeMetric {
    /// CPUs of the PE.
    pub cpus: String,
    /// Kind of interference the detector reports, if any.
    pub interference: Option<&'static str>,
    /// Instructions per cycle.
    pub ipc: Option<f64>,
    /// LLC misses per 1000 instructions.
    pub llc_mpki: Option<f64>,
    /// Share of wall time the stage threads waited to run.
    pub run_delay_ratio: Option<f64>,
}

/// What the control loop publishes each tick.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Model name.
    pub model: String,
    /// Policy name.
    pub policy: String,
    /// Completed frames per second over the last tick.
    pub throughput_fps: f64,
    /// The stages.
    pub stages: Vec<StageMetric>,
    /// The PEs.
    pub pes: Vec<PeMetric>,
    /// Share of frames within the latency SLO, if one is set.
    pub slo_attainment: Option<f64>,
    /// Signals that are missing, with the reason.
    pub unavailable: Vec<(String, String)>,
}

/// One process a cgroup hint names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CgroupHintMetric {
    /// Process id.
    pub pid: i32,
    /// Command name.
    pub comm: String,
    /// Its cgroup (in the `cpu` hierarchy).
    pub cgroup: String,
    /// Where the hint puts it.
    pub target: String,
    /// The limit there.
    pub limit: String,
}

/// The cgroup hints, as of the last tick.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CgroupMetric {
    /// The mode in force: off, advise or enforce.
    pub mode: String,
    /// Whether odin has escalated (hint or cap in force).
    pub escalated: bool,
    /// The processes the hint names.
    pub hints: Vec<CgroupHintMetric>,
    /// CPUs the pipeline's CPUs should get back, while escalated.
    pub expected_gain_cpus: Option<f64>,
    /// Caps applied since the start.
    pub enforcements: u64,
    /// Caps lifted since the start.
    pub lifts: u64,
    /// Processes in the best-effort cgroup now.
    pub capped_tasks: usize,
}

/// All of the agent's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    frames: AtomicU64,
    rejected: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_sum_us: AtomicU64,
    reconfigurations: Mutex<BTreeMap<(String, String), u64>>,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
    snapshot: Mutex<Snapshot>,
    cgroup: Mutex<CgroupMetric>,
    /// The inference server's figures, when serving.
    serving: Mutex<Option<Arc<ServingStats>>>,
}

/// A label value in the exposition format: backslash, quote and newline
/// escaped.
pub(crate) fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// A completed frame and its end-to-end latency.
    pub fn frame_done(&self, latency_seconds: f64) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| latency_seconds <= b) {
            self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        // A float-to-integer `as` saturates: a negative or NaN latency adds 0.
        #[allow(
            clippy::cast_possible_truncation,
            reason = "whole microseconds, saturating"
        )]
        let us = (latency_seconds * 1e6) as u64;
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Sets the rejected-frames count (the pipeline counts them).
    pub fn set_rejected(&self, n: u64) {
        self.rejected.store(n, Ordering::Relaxed);
    }

    /// A reconfiguration applied by `policy` for `reason`.
    pub fn reconfigured(&self, policy: &str, reason: &str) {
        *self
            .reconfigurations
            .lock()
            .expect("metrics lock")
            .entry((policy.to_string(), reason.to_string()))
            .or_default() += 1;
    }

    /// A configuration reload, accepted or not.
    pub fn reload(&self, accepted: bool) {
        if accepted {
            self.reloads.fetch_add(1, Ordering::Relaxed);
        } else {
            self.reload_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Replaces the per-tick snapshot.
    pub fn publish(&self, s: Snapshot) {
        *self.snapshot.lock().expect("metrics lock") = s;
    }

    /// Renders the inference server's figures too, from now on.
    pub fn set_serving(&self, s: Arc<ServingStats>) {
        *self.serving.lock().expect("metrics lock") = Some(s);
    }

    /// Replaces the cgroup hints' state.
    pub fn set_cgroup(&self, c: CgroupMetric) {
        *self.cgroup.lock().expect("metrics lock") = c;
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let snap = self.snapshot.lock().expect("metrics lock").clone();
        family(
            "odin_build_info",
            "gauge",
            "Version of the running odin.",
            &[(
                format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION")),
                1.0,
            )],
        );
        family(
            "odin_pipeline_info",
            "gauge",
            "The model and the policy running.",
            &[(
                format!(
                    "{{model=\"{}\",policy=\"{}\"}}",
                    escape(&snap.model),
                    escape(&snap.policy)
                ),
                1.0,
            )],
        );
        family(
            "odin_frames_total",
            "counter",
            "Frames that went through every unit.",
            &[(String::new(), self.frames.load(Ordering::Relaxed) as f64)],
        );
        family(
            "odin_frames_rejected_total",
            "counter",
            "Frames refused because the admission queue was full.",
            &[(String::new(), self.rejected.load(Ordering::Relaxed) as f64)],
        );
        family(
            "odin_throughput_frames_per_second",
            "gauge",
            "Completed frames per second over the last tick.",
            &[(String::new(), snap.throughput_fps)],
        );
        let mut cumulative = 0;
        let mut buckets: Vec<(String, f64)> = LATENCY_BUCKETS
            .iter()
            .zip(&self.latency_buckets)
            .map(|(b, n)| {
                cumulative += n.load(Ordering::Relaxed);
                (format!("_bucket{{le=\"{b}\"}}"), cumulative as f64)
            })
            .collect();
        let count = self.frames.load(Ordering::Relaxed);
        buckets.push(("_bucket{le=\"+Inf\"}".into(), count as f64));
        buckets.push((
            "_sum".into(),
            self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        ));
        buckets.push(("_count".into(), count as f64));
        // Histogram sample names carry their suffix in the "labels" slot.
        let _ = writeln!(
            out,
            "# HELP odin_frame_latency_seconds End-to-end latency of completed frames."
        );
        let _ = writeln!(out, "# TYPE odin_frame_latency_seconds histogram");
        for (suffix, v) in buckets {
            let _ = writeln!(out, "odin_frame_latency_seconds{suffix} {v}");
        }
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let stage_label =
            |i: usize, s: &StageMetric| format!("{{stage=\"{i}\",pe=\"{}\"}}", escape(&s.pe));
        family(
            "odin_stage_service_seconds",
            "gauge",
            "Smoothed per-frame service time of each stage.",
            &snap
                .stages
                .iter()
                .enumerate()
                .map(|(i, s)| (stage_label(i, s), s.service_seconds))
                .collect::<Vec<_>>(),
        );
        family(
            "odin_stage_units",
            "gauge",
            "Units each stage runs under the current partition.",
            &snap
                .stages
                .iter()
                .enumerate()
                .map(|(i, s)| (stage_label(i, s), (s.units[1] - s.units[0]) as f64))
                .collect::<Vec<_>>(),
        );
        family(
            "odin_stage_first_unit",
            "gauge",
            "Index of each stage's first unit (the partition's cut points).",
            &snap
                .stages
                .iter()
                .enumerate()
                .map(|(i, s)| (stage_label(i, s), s.units[0] as f64))
                .collect::<Vec<_>>(),
        );
        let reconfigs: Vec<(String, f64)> = self
            .reconfigurations
            .lock()
            .expect("metrics lock")
            .iter()
            .map(|((p, r), n)| {
                (
                    format!("{{policy=\"{}\",reason=\"{}\"}}", escape(p), escape(r)),
                    *n as f64,
                )
            })
            .collect();
        family(
            "odin_reconfigurations_total",
            "counter",
            "Placements applied, by policy and reason.",
            &reconfigs,
        );
        let pe_label =
            |i: usize, p: &PeMetric| format!("{{pe=\"{i}\",cpus=\"{}\"}}", escape(&p.cpus));
        let per_pe = |f: &dyn Fn(&PeMetric) -> Option<f64>| -> Vec<(String, f64)> {
            snap.pes
                .iter()
                .enumerate()
                .filter_map(|(i, p)| f(p).map(|v| (pe_label(i, p), v)))
                .collect()
        };
        family(
            "odin_pe_interference",
            "gauge",
            "1 while the detector reports interference on the PE, by kind.",
            &snap
                .pes
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    (
                        format!(
                            "{{pe=\"{i}\",cpus=\"{}\",kind=\"{}\"}}",
                            escape(&p.cpus),
                            p.interference.unwrap_or("none")
                        ),
                        if p.interference.is_some() { 1.0 } else { 0.0 },
                    )
                })
                .collect::<Vec<_>>(),
        );
        family(
            "odin_pe_ipc",
            "gauge",
            "Instructions per cycle of the pipeline's threads on the PE.",
            &per_pe(&|p| p.ipc),
        );
        family(
            "odin_pe_llc_mpki",
            "gauge",
            "Last-level-cache misses per 1000 instructions on the PE.",
            &per_pe(&|p| p.llc_mpki),
        );
        family(
            "odin_pe_run_delay_ratio",
            "gauge",
            "Share of wall time the PE's stage threads waited in the run queue.",
            &per_pe(&|p| p.run_delay_ratio),
        );
        family(
            "odin_slo_attainment_ratio",
            "gauge",
            "Share of recent frames within the latency objective.",
            &snap
                .slo_attainment
                .map(|v| vec![(String::new(), v)])
                .unwrap_or_default(),
        );
        family(
            "odin_signal_unavailable",
            "gauge",
            "1 for each monitor signal that is missing on this machine, with the reason.",
            &snap
                .unavailable
                .iter()
                .map(|(s, r)| {
                    (
                        format!("{{signal=\"{}\",reason=\"{}\"}}", escape(s), escape(r)),
                        1.0,
                    )
                })
                .collect::<Vec<_>>(),
        );
        family(
            "odin_config_reloads_total",
            "counter",
            "Configuration reloads, by outcome.",
            &[
                (
                    "{outcome=\"applied\"}".into(),
                    self.reloads.load(Ordering::Relaxed) as f64,
                ),
                (
                    "{outcome=\"rejected\"}".into(),
                    self.reload_failures.load(Ordering::Relaxed) as f64,
                ),
            ],
        );
        let cg = self.cgroup.lock().expect("metrics lock").clone();
        family(
            "odin_cgroup_mode",
            "gauge",
            "1 for the cgroup mode in force (advise when enforce cannot work here).",
            &["off", "advise", "enforce"]
                .iter()
                .map(|m| {
                    (
                        format!("{{mode=\"{m}\"}}"),
                        if cg.mode == *m { 1.0 } else { 0.0 },
                    )
                })
                .collect::<Vec<_>>(),
        );
        family(
            "odin_cgroup_escalated",
            "gauge",
            "1 while odin escalates against antagonists (hint or cap in force).",
            &[(String::new(), if cg.escalated { 1.0 } else { 0.0 })],
        );
        family(
            "odin_cgroup_hint_info",
            "gauge",
            "Processes the cgroup hint names: their cgroup, where to move them and the limit there.",
            &cg.hints
                .iter()
                .map(|h| {
                    (
                        format!(
                            "{{pid=\"{}\",comm=\"{}\",cgroup=\"{}\",target=\"{}\",limit=\"{}\"}}",
                            h.pid,
                            escape(&h.comm),
                            escape(&h.cgroup),
                            escape(&h.target),
                            escape(&h.limit)
                        ),
                        1.0,
                    )
                })
                .collect::<Vec<_>>(),
        );
        family(
            "odin_cgroup_hint_expected_gain_cpus",
            "gauge",
            "CPU time the hint should give back to the pipeline's CPUs, in CPUs.",
            &cg.expected_gain_cpus
                .map(|v| vec![(String::new(), v)])
                .unwrap_or_default(),
        );
        family(
            "odin_cgroup_enforcements_total",
            "counter",
            "Caps on antagonists applied in enforce mode.",
            &[(String::new(), cg.enforcements as f64)],
        );
        family(
            "odin_cgroup_lifts_total",
            "counter",
            "Caps on antagonists lifted.",
            &[(String::new(), cg.lifts as f64)],
        );
        family(
            "odin_cgroup_capped_tasks",
            "gauge",
            "Processes in odin's best-effort cgroup now.",
            &[(String::new(), cg.capped_tasks as f64)],
        );
        if let Some(s) = self.serving.lock().expect("metrics lock").as_ref() {
            s.render(&mut out);
        }
        out
    }
}

/// Runs `promtool check metrics` on `body` and fails on any finding;
/// skips (saying so) where promtool is not installed (`.ci/run` installs
/// Debian's prometheus).
#[cfg(test)]
pub(crate) fn lint_clean(body: &str) {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let Ok(version) = Command::new("promtool").arg("--version").output() else {
        eprintln!("skipped the lint: promtool is not installed");
        return;
    };
    assert!(version.status.success());
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && findings.trim().is_empty(),
        "promtool: {findings}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_hints_render_as_lint_clean_families() {
        let m = Metrics::default();
        m.set_cgroup(CgroupMetric {
            mode: "enforce".into(),
            escalated: true,
            hints: vec![CgroupHintMetric {
                pid: 700,
                comm: "st\"ress".into(),
                cgroup: "/user.slice".into(),
                target: "/odin/besteffort".into(),
                limit: "cpu.max=\"20000 100000\"".into(),
            }],
            expected_gain_cpus: Some(0.7),
            enforcements: 1,
            lifts: 0,
            capped_tasks: 1,
        });
        let body = m.render();
        for line in [
            "odin_cgroup_mode{mode=\"enforce\"} 1",
            "odin_cgroup_mode{mode=\"advise\"} 0",
            "odin_cgroup_escalated 1",
            "odin_cgroup_hint_info{pid=\"700\",comm=\"st\\\"ress\",cgroup=\"/user.slice\",target=\"/odin/besteffort\",limit=\"cpu.max=\\\"20000 100000\\\"\"} 1",
            "odin_cgroup_hint_expected_gain_cpus 0.7",
            "odin_cgroup_enforcements_total 1",
            "odin_cgroup_lifts_total 0",
            "odin_cgroup_capped_tasks 1",
        ] {
            assert!(
                body.lines().any(|l| l == line),
                "missing {line:?} in\n{body}"
            );
        }
        lint_clean(&body);
    }
}
