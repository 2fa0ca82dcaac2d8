//! What the daemon says: the startup and status lines, the event and
//! decision lines, and the summary written at exit.

use std::time::Duration;

use serde::Serialize;

use crate::cpulist::CpuSet;
use crate::pipeline::StageStats;
use crate::pipeline::recorder::{Recent, Summary, TimelineEntry};
use crate::policy::Placement;
use crate::policy::detector::Event;

/// The summary written at exit: the recorder's, plus the frames admitted
/// (equal to `frames`: none is lost, across reloads too).
#[derive(Serialize)]
pub(super) struct RunSummary<'a> {
    #[serde(flatten)]
    pub(super) summary: &'a Summary,
    pub(super) admitted: u64,
    pub(super) reloads: u64,
    /// The last `EVENTS_CAP` detector events, with their time in seconds
    /// since the start.
    pub(super) events: &'a Recent<TimedEvent>,
    /// Older events left out of `events`.
    pub(super) events_dropped: u64,
}

/// A detector event and when it was reported.
#[derive(Serialize)]
pub(super) struct TimedEvent {
    pub(super) t: f64,
    #[serde(flatten)]
    pub(super) event: Event,
}

/// `[0..6)@0 [6..12)@1`.
pub(super) fn describe(p: &Placement, pes: &[CpuSet]) -> String {
    (0..p.stages())
        .map(|s| {
            let r = p.range(s);
            let cpus = pes
                .get(p.mapping[s])
                .map_or_else(|| "?".into(), |c| c.to_string());
            format!("[{}..{})@{cpus}", r.start, r.end)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// An event, short, for the decision line.
pub(super) fn event_summary(e: &Event) -> String {
    match e {
        Event::Onset {
            pe,
            stage,
            kind,
            severity,
            ..
        } => format!(
            "onset pe {pe} stage {stage} {} +{:.0}%",
            kind.as_str(),
            severity * 100.0
        ),
        Event::Offset { pe, stage } => format!("offset pe {pe} stage {stage}"),
    }
}

pub(super) fn event_line(t: Duration, e: &Event, pes: &[CpuSet]) -> String {
    let cpus = |pe: usize| {
        pes.get(pe)
            .map_or_else(|| "?".to_string(), |c| c.to_string())
    };
    match e {
        Event::Onset {
            pe,
            stage,
            kind,
            severity,
            antagonists,
        } => {
            let names: Vec<String> = antagonists
                .iter()
                .take(3)
                .map(|a| format!("{} {} ({:.2} CPU)", a.pid, a.comm, a.cpu_share))
                .collect();
            format!(
                "t={:.1}s interference on PE {pe} (CPUs {}), stage {stage}: {}, {:.0}% slower; antagonists: {}",
                t.as_secs_f64(),
                cpus(*pe),
                kind.as_str(),
                severity * 100.0,
                if names.is_empty() {
                    "none named".to_string()
                } else {
                    names.join(", ")
                }
            )
        }
        Event::Offset { pe, stage } => format!(
            "t={:.1}s interference ended on PE {pe} (CPUs {}), stage {stage}",
            t.as_secs_f64(),
            cpus(*pe)
        ),
    }
}

pub(super) fn status_line(w: &TimelineEntry, stages: &[StageStats]) -> String {
    let stages: Vec<String> = stages
        .iter()
        .map(|s| {
            format!(
                "[{}..{}) {:.1} ms @{}",
                s.units[0], s.units[1], s.service_ms, s.pe
            )
        })
        .collect();
    format!(
        "t={:>4.0}s {:>7.2} frames/s  p50 {:>7.1} ms  p99 {:>7.1} ms | {}",
        w.t,
        w.throughput_fps,
        w.p50_ms,
        w.p99_ms,
        stages.join("  ")
    )
}
