//! When to escalate against antagonists, and when to stop: a pure state
//! machine over seconds, SLO status and whether antagonists are named.
//!
//! Problem: re-balancing is free for everyone else and comes first; a cap
//! costs the co-located programs, so it is only worth it when re-balancing
//! has had its chance and the objective is still missed because of tasks
//! odin can name. Once in force, a cap must not flap: lifting it brings
//! the interference back, which would escalate again a moment later.
//!
//! Approach:
//! ```text
//!            missed && named                  held for escalate_after
//!   Idle ----------------------> Pending ---------------------------> Escalated
//!    ^  <---------------------- (either stops)                          |
//!    |                                                                  |
//!    +---- calm for lift_after, and escalated for at least hold --------+
//!          calm = no antagonist named, or the SLO has slack
//! ```
//! Hysteresis is in the thresholds and in time: escalation needs the SLO
//! missed (latency above, throughput below the objective), lifting needs
//! slack (latency and throughput better than the objective by a margin)
//! or the antagonists gone, each for a while, and a cap stays at least
//! `hold`.

use crate::policy::Slo;

/// How far the pipeline is from its objective.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SloStatus {
    /// No objective, or nothing measured yet.
    Unknown,
    /// Latency above or throughput below the objective (measured or
    /// predicted).
    Missed,
    /// Within the objective, without the margin.
    Met,
    /// Within the objective by at least the margin.
    Slack,
}

/// The throughput stage times (ms) allow, one frame per bottleneck time;
/// `None` while a stage is unmeasured or the bottleneck takes no time.
pub fn predicted_fps(stage_ms: &[Option<f64>]) -> Option<f64> {
    stage_ms
        .iter()
        .copied()
        .collect::<Option<Vec<f64>>>()
        .and_then(|t| t.into_iter().reduce(f64::max))
        .filter(|&ms| ms > 0.0)
        .map(|ms| 1e3 / ms)
}

/// The throughput to judge the objective on: the last closed window's
/// (`window_fps`, 0 before the first), else the monitor tick's.
pub fn measured_fps(window_fps: f64, tick_fps: Option<f64>) -> Option<f64> {
    Some(window_fps).filter(|&f| f > 0.0).or(tick_fps)
}

/// The share of the `recent_ms` latencies within the latency objective
/// `slo_ms`; `None` without an objective or a latency.
pub fn attainment(slo_ms: Option<f64>, recent_ms: impl IntoIterator<Item = f64>) -> Option<f64> {
    let slo = slo_ms?;
    let (within, all) = recent_ms.into_iter().fold((0usize, 0usize), |(w, n), ms| {
        (w + usize::from(ms <= slo), n + 1)
    });
    (all > 0).then(|| within as f64 / all as f64)
}

/// The status of `slo` given the measured throughput and p99 latency and
/// the throughput predicted from the stage times; `margin` (0..1) is the
/// fraction by which both must beat the objective to count as slack.
pub fn slo_status(
    slo: &Slo,
    throughput_fps: Option<f64>,
    predicted_fps: Option<f64>,
    p99_ms: Option<f64>,
    margin: f64,
) -> SloStatus {
    let mut known = false;
    let mut slack = true;
    if let Some(limit) = slo.latency_ms {
        if let Some(p99) = p99_ms {
            known = true;
            if p99 > limit {
                return SloStatus::Missed;
            }
            slack &= p99 <= limit * (1.0 - margin);
        } else {
            slack = false;
        }
    }
    if let Some(target) = slo.throughput_fps {
        let low = [throughput_fps, predicted_fps]
            .into_iter()
            .flatten()
            .any(|fps| fps < target);
        if low {
            return SloStatus::Missed;
        }
        match throughput_fps {
            Some(fps) => {
                known = true;
                slack &= fps >= target * (1.0 + margin);
            }
            None => slack = false,
        }
    }
    match (known, slack) {
        (false, _) => SloStatus::Unknown,
        (true, true) => SloStatus::Slack,
        (true, false) => SloStatus::Met,
    }
}

/// The machine's timing, in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// How long the SLO must be missed with antagonists named before a
    /// cap (re-balancing's chance).
    pub escalate_after: f64,
    /// How long it must be calm before the cap is lifted.
    pub lift_after: f64,
    /// The least time a cap stays.
    pub hold: f64,
}

/// One tick's input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Input {
    /// Seconds since any fixed start.
    pub t: f64,
    /// The objective's status.
    pub slo: SloStatus,
    /// Antagonists named on the pipeline's CPUs (capped ones included).
    pub antagonists: bool,
}

/// Where the machine is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum State {
    /// Nothing to do.
    Idle,
    /// Missed with antagonists named since `since`.
    Pending {
        /// When it began.
        since: f64,
    },
    /// A cap (or, in advise mode, a hint) in force since `since`; calm
    /// since `calm` if it is.
    Escalated {
        /// When it began.
        since: f64,
        /// When the calm began.
        calm: Option<f64>,
    },
}

/// What to do this tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing new.
    Stay,
    /// Escalate now.
    Escalate,
    /// Lift the cap now.
    Lift,
}

/// The escalation state machine.
#[derive(Clone, Debug, PartialEq)]
pub struct Escalation {
    timing: Timing,
    state: State,
}

impl Escalation {
    /// Idle, with `timing`.
    pub fn new(timing: Timing) -> Self {
        Self {
            timing,
            state: State::Idle,
        }
    }

    /// Where it is.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether a cap (or hint) is in force.
    pub fn escalated(&self) -> bool {
        matches!(self.state, State::Escalated { .. })
    }

    /// New timing; the state stays.
    pub fn set_timing(&mut self, timing: Timing) {
        self.timing = timing;
    }

    /// Back to idle (the cap was undone by other means).
    pub fn reset(&mut self) {
        self.state = State::Idle;
    }

    /// One tick.
    pub fn step(&mut self, i: &Input) -> Step {
        let pressing = i.slo == SloStatus::Missed && i.antagonists;
        let calm = !i.antagonists || matches!(i.slo, SloStatus::Slack | SloStatus::Unknown);
        let (next, step) = match self.state {
            State::Idle | State::Pending { .. } if !pressing => (State::Idle, Step::Stay),
            State::Idle | State::Pending { .. } => {
                let since = match self.state {
                    State::Pending { since } => since,
                    _ => i.t,
                };
                if i.t - since >= self.timing.escalate_after {
                    let escalated = State::Escalated {
                        since: i.t,
                        calm: None,
                    };
                    (escalated, Step::Escalate)
                } else {
                    (State::Pending { since }, Step::Stay)
                }
            }
            State::Escalated { since, .. } if !calm => {
                (State::Escalated { since, calm: None }, Step::Stay)
            }
            State::Escalated { since, calm } => {
                let calm_since = calm.unwrap_or(i.t);
                if i.t - calm_since >= self.timing.lift_after && i.t - since >= self.timing.hold {
                    (State::Idle, Step::Lift)
                } else {
                    let calm = Some(calm_since);
                    (State::Escalated { since, calm }, Step::Stay)
                }
            }
        };
        self.state = next;
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: Timing = Timing {
        escalate_after: 2.0,
        lift_after: 3.0,
        hold: 10.0,
    };

    use SloStatus::{Met, Missed, Slack, Unknown};

    /// Runs ticks `(t, slo, antagonists)` and returns the steps that were
    /// not `Stay`, with their times.
    fn run(timing: Timing, ticks: &[(f64, SloStatus, bool)]) -> Vec<(f64, Step)> {
        let mut m = Escalation::new(timing);
        ticks
            .iter()
            .filter_map(|&(t, slo, antagonists)| {
                let s = m.step(&Input {
                    t,
                    slo,
                    antagonists,
                });
                (s != Step::Stay).then_some((t, s))
            })
            .collect()
    }

    /// Ticks every second from `from` to `to` (inclusive) with the same input.
    fn span(from: u32, to: u32, slo: SloStatus, ant: bool) -> Vec<(f64, SloStatus, bool)> {
        (from..=to).map(|t| (f64::from(t), slo, ant)).collect()
    }

    fn cat(parts: &[Vec<(f64, SloStatus, bool)>]) -> Vec<(f64, SloStatus, bool)> {
        parts.concat()
    }

    #[test]
    fn escalation_table() {
        use Step::{Escalate, Lift};
        type Ticks = Vec<(f64, SloStatus, bool)>;
        type Steps = Vec<(f64, Step)>;
        let cases: Vec<(&str, Ticks, Steps)> = vec![
            (
                "missed with antagonists for escalate_after escalates once",
                span(0, 20, Missed, true),
                vec![(2.0, Escalate)],
            ),
            (
                "missed without antagonists: re-balancing's problem, never a cap",
                span(0, 20, Missed, false),
                vec![],
            ),
            (
                "antagonists while the SLO is met: nothing",
                cat(&[span(0, 10, Met, true), span(11, 20, Slack, true)]),
                vec![],
            ),
            ("no objective: nothing", span(0, 20, Unknown, true), vec![]),
            (
                "re-balancing fixes it within the grace: no cap",
                cat(&[span(0, 1, Missed, true), span(2, 20, Met, true)]),
                vec![],
            ),
            (
                "an interruption restarts the grace",
                cat(&[
                    span(0, 1, Missed, true),
                    span(2, 2, Met, true),
                    span(3, 6, Missed, true),
                ]),
                vec![(5.0, Escalate)],
            ),
            (
                "interference ends: lifted after lift_after, but not before hold",
                cat(&[span(0, 3, Missed, true), span(4, 30, Missed, false)]),
                // Escalated at 2, calm from 4, lift_after reached at 7,
                // hold reached at 12.
                vec![(2.0, Escalate), (12.0, Lift)],
            ),
            (
                "slack returns after the hold: lifted after lift_after",
                cat(&[span(0, 13, Missed, true), span(14, 30, Slack, true)]),
                vec![(2.0, Escalate), (17.0, Lift)],
            ),
            (
                "met without margin is not slack: the cap stays (hysteresis)",
                cat(&[span(0, 3, Missed, true), span(4, 60, Met, true)]),
                vec![(2.0, Escalate)],
            ),
            (
                "calm interrupted restarts the lift timer",
                cat(&[
                    span(0, 13, Missed, true),
                    span(14, 15, Slack, true),
                    span(16, 16, Missed, true),
                    span(17, 30, Slack, true),
                ]),
                vec![(2.0, Escalate), (20.0, Lift)],
            ),
            (
                "after a lift, a new miss escalates again after the grace",
                cat(&[
                    span(0, 13, Missed, true),
                    span(14, 17, Slack, true),
                    span(18, 25, Missed, true),
                ]),
                vec![(2.0, Escalate), (17.0, Lift), (20.0, Escalate)],
            ),
        ];
        for (name, ticks, want) in cases {
            assert_eq!(run(TIMING, &ticks), want, "{name}");
        }
    }

    #[test]
    fn zero_delays_act_on_the_first_tick() {
        let t = Timing {
            escalate_after: 0.0,
            lift_after: 0.0,
            hold: 0.0,
        };
        let ticks = cat(&[span(0, 0, Missed, true), span(1, 1, Slack, false)]);
        assert_eq!(
            run(t, &ticks),
            vec![(0.0, Step::Escalate), (1.0, Step::Lift)]
        );
    }

    #[test]
    fn slo_status_table() {
        let lat = Slo {
            latency_ms: Some(100.0),
            throughput_fps: None,
        };
        let fps = Slo {
            latency_ms: None,
            throughput_fps: Some(10.0),
        };
        let both = Slo {
            latency_ms: Some(100.0),
            throughput_fps: Some(10.0),
        };
        let cases = [
            (Slo::default(), Some(5.0), None, Some(500.0), Unknown),
            (lat, None, None, None, Unknown),
            (lat, None, None, Some(101.0), Missed),
            (lat, None, None, Some(100.0), Met),
            (lat, None, None, Some(81.0), Met),
            (lat, None, None, Some(80.0), Slack),
            (fps, Some(9.9), None, None, Missed),
            (fps, Some(12.0), Some(9.0), None, Missed),
            (fps, Some(11.0), None, None, Met),
            (fps, Some(12.0), Some(20.0), None, Slack),
            (fps, None, None, None, Unknown),
            (both, Some(30.0), None, Some(120.0), Missed),
            (both, Some(30.0), None, Some(50.0), Slack),
            (both, Some(11.0), None, Some(50.0), Met),
            (both, Some(30.0), None, None, Met),
        ];
        for (slo, measured, predicted, p99, want) in cases {
            assert_eq!(
                slo_status(&slo, measured, predicted, p99, 0.2),
                want,
                "{slo:?} {measured:?} {predicted:?} {p99:?}"
            );
        }
    }

    #[test]
    fn predicted_fps_is_one_frame_per_bottleneck() {
        assert_eq!(
            predicted_fps(&[Some(10.0), Some(40.0), Some(20.0)]),
            Some(25.0)
        );
        assert_eq!(
            predicted_fps(&[Some(10.0), None]),
            None,
            "a stage unmeasured"
        );
        assert_eq!(predicted_fps(&[Some(0.0), Some(0.0)]), None, "no time");
        assert_eq!(predicted_fps(&[]), None, "no stage");
    }

    #[test]
    fn measured_fps_prefers_the_window() {
        assert_eq!(measured_fps(12.0, Some(9.0)), Some(12.0));
        assert_eq!(measured_fps(0.0, Some(9.0)), Some(9.0));
        assert_eq!(measured_fps(0.0, None), None);
    }

    #[test]
    fn attainment_counts_latencies_within_the_objective() {
        assert_eq!(attainment(None, [1.0, 2.0]), None, "no objective");
        assert_eq!(attainment(Some(10.0), []), None, "no latency");
        assert_eq!(attainment(Some(10.0), [5.0, 10.0, 11.0, 20.0]), Some(0.5));
        assert_eq!(attainment(Some(10.0), [1.0]), Some(1.0));
    }
}
