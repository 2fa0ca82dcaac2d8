//! What one policy's run shows, from the agent's summary and the measured
//! start and stop of the antagonist. Pure: no clock, no files.
//!
//! ```text
//!  0      warmup          start   start+margin        stop  stop+margin      end
//!  |-------|---- before ----|--------|---- during ----|--------|--- after ---|
//!   ignored                 ^ excluded: transition    ^ excluded: transition
//! ```
//!
//! Every time is in seconds since the agent's start. A timeline entry
//! covers the second before its `t` (from the previous entry's `t`); it
//! belongs to a phase when it lies wholly inside it. The margins leave
//! out the seconds right after each switch, whose windows mix both
//! regimes and the detector's reaction; the reaction itself is measured
//! separately (time to detect, settle and recover).

use serde::{Deserialize, Serialize};

use odin::stats::mean;

/// Throughput after the antagonist stops counts as recovered from this
/// share of the before-level on.
pub const RECOVERED: f64 = 0.95;

/// The part of `odin run --json-summary` the experiment reads.
#[derive(Clone, Debug, Deserialize)]
pub struct AgentSummary {
    /// Frames completed.
    pub frames: u64,
    /// One entry per second.
    pub timeline: Vec<Window>,
    /// Every placement in force, from the initial one at t = 0.
    pub partitions: Vec<Change>,
    /// Detector events.
    #[serde(default)]
    pub events: Vec<DetectorEvent>,
}

/// One second of the agent's timeline.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Window {
    /// End of the window.
    pub t: f64,
    /// Frames per second in the window.
    pub throughput_fps: f64,
    /// 99th-percentile latency in the window, ms.
    pub p99_ms: f64,
}

/// A placement change.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Change {
    /// When it came into force.
    pub t: f64,
}

/// A detector event.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct DetectorEvent {
    /// When it was reported.
    pub t: f64,
    /// `onset` or `offset`.
    pub event: String,
    /// The PE.
    pub pe: usize,
    /// Foreign tasks named at onset.
    #[serde(default)]
    pub antagonists: Vec<NamedTask>,
}

/// A foreign task the detector named.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct NamedTask {
    /// Process id.
    pub pid: i32,
}

/// When things happened in one run, seconds since the agent's start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// End of the warm-up: the before-phase starts here.
    pub warmup: f64,
    /// Seconds left out after each switch.
    pub margin: f64,
    /// The antagonist's load began.
    pub start: f64,
    /// The antagonist was gone.
    pub stop: f64,
    /// The agent was told to stop.
    pub end: f64,
}

/// The figures of one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Figures {
    /// Mean throughput before the antagonist, frames/s.
    pub before_fps: Option<f64>,
    /// Mean throughput while it runs, margin excluded.
    pub during_fps: Option<f64>,
    /// Mean throughput after it stopped, margin excluded.
    pub after_fps: Option<f64>,
    /// Mean of the per-second p99 latencies before, ms.
    pub p99_before_ms: Option<f64>,
    /// Mean of the per-second p99 latencies while it runs, margin
    /// excluded, ms.
    pub p99_during_ms: Option<f64>,
    /// Share of the one-second windows of the interference (midpoint in
    /// [start, stop], transition included) whose p99 met the SLO.
    pub slo_attainment: Option<f64>,
    /// First onset on an antagonist's PE after the start, minus the start.
    pub detect_s: Option<f64>,
    /// Whether the detector already reported interference (other load) on
    /// an antagonist's PE when it started: then it reports no new onset.
    pub already_interfered: bool,
    /// Last placement change during the interference, minus the start.
    pub settle_s: Option<f64>,
    /// From the stop to the first window from which throughput stays at
    /// or above 95% of the before-level.
    pub recover_s: Option<f64>,
    /// Placement changes during the interference.
    pub changes_during: usize,
    /// Onsets (any PE) during the interference.
    pub onsets_during: usize,
    /// Whether the detector named the antagonist's process at an onset.
    pub antagonist_named: bool,
}

/// Timeline entries with their window start.
fn windows(timeline: &[Window]) -> impl Iterator<Item = (f64, &Window)> {
    let starts = std::iter::once(0.0).chain(timeline.iter().map(|w| w.t));
    starts.zip(timeline)
}

/// Mean of `value` over the windows wholly inside `[from, to]`.
fn phase_mean(
    timeline: &[Window],
    from: f64,
    to: f64,
    value: impl Fn(&Window) -> f64,
) -> Option<f64> {
    mean(
        windows(timeline)
            .filter(|&(s, w)| s >= from && w.t <= to)
            .map(|(_, w)| value(w)),
    )
}

/// The figures of a run: `summary` under `schedule`, with the antagonist
/// on the PEs `targets` (process `antagonist_pid`), against a latency SLO
/// of `slo_ms` when known.
pub fn analyse(
    summary: &AgentSummary,
    schedule: &Schedule,
    targets: &[usize],
    antagonist_pid: Option<i32>,
    slo_ms: Option<f64>,
) -> Figures {
    let Schedule {
        warmup,
        margin,
        start,
        stop,
        end,
    } = *schedule;
    let tl = &summary.timeline;
    let before_fps = phase_mean(tl, warmup, start, |w| w.throughput_fps);
    let during = (start + margin, stop);
    let interference = |t: f64| t >= start && t <= stop;
    let onsets: Vec<&DetectorEvent> = summary
        .events
        .iter()
        .filter(|e| e.event == "onset" && interference(e.t))
        .collect();
    // The first entry is the initial placement.
    let changes: Vec<f64> = summary
        .partitions
        .iter()
        .skip(1)
        .map(|c| c.t)
        .filter(|&t| interference(t))
        .collect();
    Figures {
        before_fps,
        during_fps: phase_mean(tl, during.0, during.1, |w| w.throughput_fps),
        after_fps: phase_mean(tl, stop + margin, end, |w| w.throughput_fps),
        p99_before_ms: phase_mean(tl, warmup, start, |w| w.p99_ms),
        p99_during_ms: phase_mean(tl, during.0, during.1, |w| w.p99_ms),
        slo_attainment: slo_ms.and_then(|slo| {
            let hits: Vec<bool> = windows(tl)
                .filter(|&(s, w)| interference((s + w.t) / 2.0))
                .map(|(_, w)| w.p99_ms <= slo)
                .collect();
            mean(hits.iter().map(|&h| f64::from(u8::from(h))))
        }),
        detect_s: onsets
            .iter()
            .find(|e| targets.contains(&e.pe))
            .map(|e| e.t - start),
        already_interfered: targets.iter().any(|&pe| {
            let last = summary
                .events
                .iter()
                .filter(|e| e.pe == pe && e.t < start)
                .max_by(|a, b| a.t.total_cmp(&b.t));
            last.is_some_and(|e| e.event == "onset")
        }),
        settle_s: changes.last().map(|t| t - start),
        recover_s: before_fps.and_then(|level| recovery(tl, stop, level)),
        changes_during: changes.len(),
        onsets_during: onsets.len(),
        antagonist_named: antagonist_pid.is_some_and(|pid| {
            onsets
                .iter()
                .any(|e| e.antagonists.iter().any(|a| a.pid == pid))
        }),
    }
}

/// Windows averaged when judging recovery: a one-second window holds
/// only some tens of frames, so one frame more or less is a few percent.
pub const RECOVERY_SPAN: usize = 3;

/// Seconds from `stop` to the start of the first window ending after it
/// from which the throughput, averaged over [`RECOVERY_SPAN`] windows (the
/// last ones where fewer remain), holds at least [`RECOVERED`] of `level`;
/// `None` when the last windows do not.
fn recovery(timeline: &[Window], stop: f64, level: f64) -> Option<f64> {
    let after: Vec<(f64, &Window)> = windows(timeline).filter(|&(_, w)| w.t > stop).collect();
    let n = after.len();
    let ok = |i: usize| {
        let from = i.min(n.saturating_sub(RECOVERY_SPAN));
        let to = (from + RECOVERY_SPAN).min(n);
        mean(after[from..to].iter().map(|(_, w)| w.throughput_fps))
            .is_some_and(|m| m >= RECOVERED * level)
    };
    let first_good = (0..n).rposition(|i| !ok(i)).map_or(0, |i| i + 1);
    after.get(first_good).map(|&(s, _)| (s - stop).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(fps: &[f64], p99: &[f64]) -> AgentSummary {
        AgentSummary {
            frames: 0,
            timeline: fps
                .iter()
                .zip(p99)
                .enumerate()
                .map(|(i, (&f, &p))| Window {
                    t: i as f64 + 1.0,
                    throughput_fps: f,
                    p99_ms: p,
                })
                .collect(),
            partitions: vec![Change { t: 0.0 }],
            events: Vec::new(),
        }
    }

    fn onset(t: f64, pe: usize, pid: i32) -> DetectorEvent {
        DetectorEvent {
            t,
            event: "onset".into(),
            pe,
            antagonists: vec![NamedTask { pid }],
        }
    }

    /// Warm-up 2 s, antagonist from 4 to 8 s, end at 12 s, margin 1 s.
    const SCHEDULE: Schedule = Schedule {
        warmup: 2.0,
        margin: 1.0,
        start: 4.0,
        stop: 8.0,
        end: 12.0,
    };

    #[test]
    fn phases_take_whole_windows_and_leave_out_the_margins() {
        //          warm-up    before     start..  during      stop..  after
        let fps = [
            1.0, 1.0, 10.0, 10.0, 99.0, 5.0, 5.0, 7.0, 99.0, 9.0, 10.0, 10.0,
        ];
        let p99 = [
            0.0, 0.0, 100.0, 100.0, 0.0, 300.0, 500.0, 100.0, 0.0, 0.0, 0.0, 0.0,
        ];
        let f = analyse(&summary(&fps, &p99), &SCHEDULE, &[1], None, Some(350.0));
        assert_eq!(f.before_fps, Some(10.0));
        assert_eq!(f.during_fps, Some(17.0 / 3.0));
        assert_eq!(f.after_fps, Some(29.0 / 3.0));
        assert_eq!(f.p99_before_ms, Some(100.0));
        assert_eq!(f.p99_during_ms, Some(300.0));
        // Windows with midpoints 4.5..7.5: p99 0, 300, 500, 100.
        assert_eq!(f.slo_attainment, Some(0.75));
        // Windows after the stop: 99, 9, 10, 10; over three windows each
        // holds 95% of 10.
        assert_eq!(f.recover_s, Some(0.0));
    }

    #[test]
    fn recovery_averages_over_a_few_windows() {
        let timeline = |fps: &[f64]| -> Vec<Window> {
            fps.iter()
                .enumerate()
                .map(|(i, &f)| Window {
                    t: i as f64 + 1.0,
                    throughput_fps: f,
                    p99_ms: 0.0,
                })
                .collect()
        };
        // Stop at 2 s: a slow window, then back, one frame short at the end.
        let tl = timeline(&[10.0, 10.0, 5.0, 10.0, 10.0, 9.0, 10.0, 9.6]);
        assert_eq!(recovery(&tl, 2.0, 10.0), Some(1.0));
        // Slow again at the end: not recovered.
        let tl = timeline(&[10.0, 10.0, 10.0, 10.0, 10.0, 9.0, 8.0, 9.0]);
        assert_eq!(recovery(&tl, 2.0, 10.0), None);
        // Never slowed: recovered at once.
        let tl = timeline(&[10.0; 6]);
        assert_eq!(recovery(&tl, 2.0, 10.0), Some(0.0));
    }

    #[test]
    fn reactions_count_only_inside_the_interference() {
        let mut s = summary(&[10.0; 12], &[0.0; 12]);
        s.events = vec![
            onset(3.0, 1, 7),
            onset(4.5, 0, 8),
            onset(5.2, 1, 9),
            onset(9.0, 1, 9),
        ];
        s.partitions = [0.0, 3.5, 4.6, 6.0, 9.0]
            .iter()
            .map(|&t| Change { t })
            .collect();
        let f = analyse(&s, &SCHEDULE, &[1], Some(9), None);
        assert!(f.already_interfered, "onset at 3 s, no offset before 4 s");
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);
        assert!(close(f.detect_s, 1.2), "{:?}", f.detect_s);
        assert!(close(f.settle_s, 2.0), "{:?}", f.settle_s);
        assert_eq!((f.changes_during, f.onsets_during), (2, 2));
        assert!(f.antagonist_named);
        assert_eq!(f.slo_attainment, None);
        assert_eq!(f.recover_s, Some(0.0));
        let f = analyse(&s, &SCHEDULE, &[1], Some(7), None);
        assert!(!f.antagonist_named, "named only before the start");
    }

    #[test]
    fn nothing_to_report_is_none_not_zero() {
        let s = summary(
            &[10.0, 10.0, 10.0, 10.0, 2.0, 2.0, 2.0, 2.0, 2.0],
            &[0.0; 9],
        );
        let f = analyse(&s, &SCHEDULE, &[1], None, Some(1.0));
        assert_eq!((f.detect_s, f.settle_s), (None, None));
        assert!(!f.already_interfered);
        assert_eq!(f.changes_during, 0);
        // The last window never came back.
        assert_eq!(f.recover_s, None);
        // No window lies wholly after stop + margin.
        assert_eq!(f.after_fps, None);
        let empty = analyse(&summary(&[], &[]), &SCHEDULE, &[1], None, Some(1.0));
        assert_eq!(empty, Figures::default());
    }
}
