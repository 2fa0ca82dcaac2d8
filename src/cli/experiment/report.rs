//! What the runs made: per-policy rows, and the table, JSON, CSV and SVG
//! that show them.

use std::fmt::Write as _;

use serde::Serialize;

use super::analysis::{self, Figures, Window};
use super::plan::Plan;
use super::run::Run;
use odin::cpulist::CpuSet;
use odin::plot;

/// Without `--slo-latency` or a configured SLO: this times the p99
/// before interference (median over the policies).
const DEFAULT_SLO_FACTOR: f64 = 1.5;

/// One policy's row.
#[derive(Debug, Serialize)]
struct Row {
    policy: String,
    #[serde(flatten)]
    figures: Figures,
    /// Throughput during over static's during.
    during_vs_static: Option<f64>,
    frames: u64,
    ready_after_spawn_s: f64,
    antagonist_pid: i32,
    antagonist_start_s: f64,
    antagonist_stop_s: f64,
    /// CPU time the antagonist's process group used.
    antagonist_cpu_s: f64,
    /// Whether it needed SIGKILL.
    antagonist_killed: bool,
    end_s: f64,
    /// Placement changes (seconds since the agent's start), the initial
    /// one excluded.
    changes_s: Vec<f64>,
    /// Onsets: (time, PE).
    onsets: Vec<(f64, usize)>,
    timeline: Vec<Window>,
}

#[derive(Debug, Serialize)]
struct Windows {
    warmup: f64,
    before: f64,
    during: f64,
    after: f64,
    margin: f64,
}

/// Where and how the antagonist ran: its command, its CPUs and the PEs
/// that share them.
#[derive(Debug, Serialize)]
struct AntagonistSetup {
    command: String,
    cpus: String,
    pes: Vec<usize>,
}

/// The whole result, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct Report {
    model: String,
    pes: Vec<String>,
    antagonist: AntagonistSetup,
    windows_s: Windows,
    slo_latency_ms: Option<f64>,
    slo_source: String,
    /// How `slo_attainment` is counted.
    slo_attainment_of: &'static str,
    rows: Vec<Row>,
}

impl Report {
    pub fn new(plan: &Plan, runs: Vec<Run>) -> Self {
        let analyse = |r: &Run, slo| {
            analysis::analyse(
                &r.summary,
                &r.schedule,
                &plan.targets,
                Some(r.antagonist_pid),
                slo,
            )
        };
        let (slo, source) = match plan.slo {
            Some((s, source)) => (Some(s), source.to_string()),
            None => {
                let mut before: Vec<f64> = runs
                    .iter()
                    .filter_map(|r| analyse(r, None).p99_before_ms)
                    .collect();
                before.sort_by(f64::total_cmp);
                let median = before.get(before.len() / 2).copied();
                (
                    median.map(|m| DEFAULT_SLO_FACTOR * m),
                    format!("{DEFAULT_SLO_FACTOR} x the median p99 before interference"),
                )
            }
        };
        let mut rows: Vec<Row> = runs
            .into_iter()
            .map(|r| {
                let figures = analyse(&r, slo);
                Row {
                    during_vs_static: None,
                    frames: r.summary.frames,
                    ready_after_spawn_s: r.ready_after_spawn_s,
                    antagonist_pid: r.antagonist_pid,
                    antagonist_start_s: r.schedule.start,
                    antagonist_stop_s: r.schedule.stop,
                    antagonist_cpu_s: r.antagonist_cpu_s,
                    antagonist_killed: r.antagonist_killed,
                    end_s: r.schedule.end,
                    changes_s: r.summary.partitions.iter().skip(1).map(|c| c.t).collect(),
                    onsets: r
                        .summary
                        .events
                        .iter()
                        .filter(|e| e.event == "onset")
                        .map(|e| (e.t, e.pe))
                        .collect(),
                    timeline: r.summary.timeline,
                    policy: r.policy,
                    figures,
                }
            })
            .collect();
        let static_during = rows
            .iter()
            .find(|r| r.policy == "static")
            .and_then(|r| r.figures.during_fps);
        for r in &mut rows {
            r.during_vs_static = match (r.figures.during_fps, static_during) {
                (Some(d), Some(s)) if s > 0.0 => Some(d / s),
                _ => None,
            };
        }
        Report {
            model: plan.model.clone(),
            pes: plan.pes.iter().map(CpuSet::to_string).collect(),
            antagonist: AntagonistSetup {
                command: plan.antagonist_text(),
                cpus: plan.antagonist_cpus.to_string(),
                pes: plan.targets.clone(),
            },
            windows_s: Windows {
                warmup: plan.warmup,
                before: plan.before,
                during: plan.during,
                after: plan.after,
                margin: plan.margin,
            },
            slo_latency_ms: slo,
            slo_source: source,
            slo_attainment_of: "one-second windows of the interference whose p99 met the SLO",
            rows,
        }
    }

    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "odin experiment: {} on PEs {}; antagonist `{}` on CPUs {} for {} s after {} s; SLO p99 <= {}",
            self.model,
            self.pes.join(";"),
            self.antagonist.command,
            self.antagonist.cpus,
            self.windows_s.during,
            self.windows_s.warmup + self.windows_s.before,
            self.slo_latency_ms.map_or_else(
                || "? (no data)".into(),
                |v| format!("{v:.0} ms ({})", self.slo_source)
            ),
        );
        let _ = writeln!(
            s,
            "{:<8} {:>8} {:>8} {:>8} {:>10} {:>8} {:>7} {:>7} {:>8} {:>8}",
            "policy",
            "before",
            "during",
            "after",
            "p99 during",
            "SLO met",
            "detect",
            "settle",
            "recover",
            "during/"
        );
        let _ = writeln!(
            s,
            "{:<8} {:>8} {:>8} {:>8} {:>10} {:>8} {:>7} {:>7} {:>8} {:>8}",
            "", "fps", "fps", "fps", "ms", "", "s", "s", "s", "static"
        );
        let num =
            |v: Option<f64>, d: usize| v.map_or_else(|| "-".to_string(), |v| format!("{v:.d$}"));
        for r in &self.rows {
            let f = &r.figures;
            let _ = writeln!(
                s,
                "{:<8} {:>8} {:>8} {:>8} {:>10} {:>8} {:>7} {:>7} {:>8} {:>8}",
                r.policy,
                num(f.before_fps, 2),
                num(f.during_fps, 2),
                num(f.after_fps, 2),
                num(f.p99_during_ms, 0),
                f.slo_attainment
                    .map_or_else(|| "-".into(), |v| format!("{:.0}%", v * 100.0)),
                match (f.detect_s, f.already_interfered) {
                    (None, true) => "active".into(),
                    (d, _) => num(d, 1),
                },
                num(f.settle_s, 1),
                num(f.recover_s, 1),
                num(r.during_vs_static, 2),
            );
        }
        let _ = writeln!(
            s,
            "before/during/after: mean frames/s of the one-second windows in each phase; \
             during and after leave out {margin} s after each switch\n\
             p99 during: mean of the per-second p99 latencies of the same windows\n\
             SLO met: share of the interference's one-second windows whose p99 met the SLO\n\
             detect: first onset on the antagonist's PE after it started \
             (active: other load had that PE reported interfered already)\n\
             settle: last placement change during the interference, from its start\n\
             recover: from the stop until throughput ({span} s means) stays >= {recovered:.0}% of before\n\
             during/static: during over static's during; -: did not happen",
            margin = self.windows_s.margin,
            recovered = analysis::RECOVERED * 100.0,
            span = analysis::RECOVERY_SPAN,
        );
        s
    }

    pub fn csv(&self) -> String {
        let mut s = String::from(
            "policy,before_fps,during_fps,after_fps,p99_before_ms,p99_during_ms,slo_attainment,\
             detect_s,settle_s,recover_s,during_vs_static,changes_during,onsets_during,frames,\
             antagonist_start_s,antagonist_stop_s,antagonist_cpu_s\n",
        );
        let o = |v: Option<f64>| v.map_or_else(String::new, |v| format!("{v:.4}"));
        for r in &self.rows {
            let f = &r.figures;
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{:.3},{:.3},{:.3}",
                r.policy,
                o(f.before_fps),
                o(f.during_fps),
                o(f.after_fps),
                o(f.p99_before_ms),
                o(f.p99_during_ms),
                o(f.slo_attainment),
                o(f.detect_s),
                o(f.settle_s),
                o(f.recover_s),
                o(r.during_vs_static),
                f.changes_during,
                f.onsets_during,
                r.frames,
                r.antagonist_start_s,
                r.antagonist_stop_s,
                r.antagonist_cpu_s
            );
        }
        s
    }

    pub fn svg(&self) -> String {
        let n = self.rows.len().max(1) as f64;
        let start = self.rows.iter().map(|r| r.antagonist_start_s).sum::<f64>() / n;
        let stop = self.rows.iter().map(|r| r.antagonist_stop_s).sum::<f64>() / n;
        let end = self
            .rows
            .iter()
            .flat_map(|r| r.timeline.last().map(|w| w.t))
            .fold(start + 1.0, f64::max);
        // Each window's value is drawn at its middle.
        let series = |value: fn(&Window) -> f64| -> Vec<plot::Series> {
            self.rows
                .iter()
                .map(|r| {
                    let starts = std::iter::once(0.0).chain(r.timeline.iter().map(|w| w.t));
                    plot::Series {
                        name: r.policy.clone(),
                        points: starts
                            .zip(&r.timeline)
                            .map(|(s, w)| ((s + w.t) / 2.0, value(w)))
                            .collect(),
                    }
                })
                .collect()
        };
        let figure = plot::Figure {
            title: format!(
                "odin experiment: {} on PEs {}, antagonist on CPUs {} (shaded)",
                self.model,
                self.pes.join(";"),
                self.antagonist.cpus
            ),
            x_label: "seconds since the agent's start",
            x_end: end,
            bands: vec![plot::Band {
                from: start,
                to: stop,
                label: format!("antagonist: {}", self.antagonist.command),
                labelled: true,
            }],
            marks: vec![(self.windows_s.warmup, "warm-up ends".into())],
            panels: vec![
                plot::Panel {
                    id: "throughput",
                    title: "Throughput",
                    y_label: "frames/s",
                    series: series(|w| w.throughput_fps),
                    reference: None,
                },
                plot::Panel {
                    id: "p99",
                    title: "p99 latency (per second)",
                    y_label: "ms",
                    series: series(|w| w.p99_ms),
                    reference: self.slo_latency_ms.map(|v| (v, "SLO".to_string())),
                },
            ],
        };
        plot::svg(&figure)
    }
}
