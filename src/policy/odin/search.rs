//! The bounded local search, shared by `odin` and `guided`: propose the
//! bottleneck's best move, measure it on the running pipeline, keep it or
//! put the placement before it back (see the `odin` module docs).

use super::clock::Clock;
use super::moves::{Slowdowns, neighbour_move};
use crate::policy::config::PolicyConfig;
use crate::policy::cost::{measured_bottleneck, measured_times};
use crate::policy::{Action, Observation, Placement};

/// Parameters of the local search.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SearchConfig {
    /// Most candidates per search.
    pub alpha: u32,
    /// ... or this many per stage, when that is more.
    pub alpha_per_stage: f64,
    /// Frames to wait under a candidate before judging it.
    pub candidate_frames: u32,
    /// Smallest relative fall of the bottleneck to keep a candidate.
    pub improvement: f64,
}

impl From<&PolicyConfig> for SearchConfig {
    fn from(c: &PolicyConfig) -> Self {
        Self {
            alpha: c.alpha,
            alpha_per_stage: c.alpha_per_stage,
            candidate_frames: c.candidate_frames,
            improvement: c.improvement,
        }
    }
}

impl SearchConfig {
    /// Most candidates per search on a pipeline of `stages` stages.
    #[allow(clippy::cast_possible_truncation, reason = "clamped to u32::MAX above")]
    pub fn limit(&self, stages: usize) -> u32 {
        let scaled = (self.alpha_per_stage * stages as f64).ceil();
        if scaled.is_finite() && scaled > f64::from(self.alpha) {
            scaled.min(f64::from(u32::MAX)) as u32
        } else {
            self.alpha
        }
    }
}

/// Where a search stands.
#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    /// No search running.
    Idle,
    /// About to propose a candidate from the next observation.
    Ready,
    /// A candidate is in force and being measured.
    Measuring {
        /// The placement before the candidate.
        before: Placement,
        /// Its measured bottleneck, milliseconds.
        before_ms: f64,
        /// The candidate.
        candidate: Placement,
        /// Frames under the candidate since it was first seen in force.
        clock: Clock,
    },
    /// A rejected candidate was reverted; waiting for clean times.
    Settling {
        /// Frames under the reverted placement.
        clock: Clock,
    },
}

/// The bounded local search, reusable by `odin` and `guided`.
#[derive(Clone, Debug)]
pub struct LocalSearch {
    pub(super) cfg: SearchConfig,
    phase: Phase,
    steps: u32,
    /// Candidates this search measured and rejected: not proposed again.
    rejected: Vec<Placement>,
    /// Per PE: the slowdown last measured on it, for when none of our
    /// stages runs there.
    memory: Vec<Option<f64>>,
}

impl LocalSearch {
    /// An idle search.
    pub fn new(cfg: SearchConfig) -> Self {
        Self {
            cfg,
            phase: Phase::Idle,
            steps: 0,
            rejected: Vec::new(),
            memory: Vec::new(),
        }
    }

    /// Starts a search from the next observation (restarts the step count).
    pub fn start(&mut self) {
        self.phase = Phase::Ready;
        self.steps = 0;
        self.rejected.clear();
    }

    /// Whether a search (or its settling) is in progress.
    pub fn is_active(&self) -> bool {
        self.phase != Phase::Idle
    }

    /// Where the search stands.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Whether a candidate is in force and being measured.
    pub fn is_measuring(&self) -> bool {
        matches!(self.phase, Phase::Measuring { .. })
    }

    /// Candidates proposed in the current (or last) search.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// The slowdown remembered for PE `pe` (last measured while one of our
    /// stages ran there), if any.
    pub fn remembered(&self, pe: usize) -> Option<f64> {
        self.memory.get(pe).copied().flatten()
    }

    /// Forgets what was measured on PE `pe` (its interference is over).
    pub fn forget(&mut self, pe: usize) {
        if let Some(m) = self.memory.get_mut(pe) {
            *m = None;
        }
    }

    /// The slowdown model of `obs`, with this search's memory for the PEs
    /// it cannot measure, and `quiet` PEs taken as undisturbed; records
    /// what it measured. `None` without settled-enough times or unit costs
    /// that fit.
    fn model(&mut self, obs: &Observation, quiet: &[usize]) -> Option<Slowdowns> {
        let times: Vec<f64> = measured_times(obs).into_iter().collect::<Option<_>>()?;
        let mut m = Slowdowns::measure(obs, &times, &self.memory)?;
        self.memory.resize(m.slow.len(), None);
        for (p, &measured) in m.measured.iter().enumerate() {
            if measured {
                self.memory[p] = Some(m.slow[p]);
            }
        }
        for &p in quiet {
            if let Some(s) = m.slow.get_mut(p) {
                *s = 1.0;
            }
        }
        Some(m)
    }

    /// Predicted bottleneck of `q` from the measurements of `obs`, with the
    /// PEs in `quiet` taken as undisturbed (`None` if it cannot be told).
    pub fn predict(&mut self, obs: &Observation, q: &Placement, quiet: &[usize]) -> Option<f64> {
        self.model(obs, quiet)?.bottleneck_of(q)
    }

    /// One tick of the search.
    pub fn poll(&mut self, obs: &Observation) -> Action {
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Idle => Action::Keep,
            Phase::Ready => self.propose(obs),
            Phase::Measuring {
                before,
                before_ms,
                candidate,
                mut clock,
            } => {
                if obs.placement == before && !clock.started() {
                    // Not in force yet: keep waiting.
                    self.phase = Phase::Measuring {
                        before,
                        before_ms,
                        candidate,
                        clock,
                    };
                    return Action::Keep;
                }
                if obs.placement != candidate {
                    // Someone else changed the placement: this search is moot.
                    return Action::Keep;
                }
                let ready = clock.ready(obs, self.cfg.candidate_frames);
                match measured_bottleneck(obs) {
                    Some(ms) if ready => {
                        // The right baseline: what the placement before would take
                        // now, predicted from the slowdowns measured under the
                        // candidate (the interference may have grown or ended since
                        // `before_ms` was read); `before_ms` when that cannot be told.
                        let baseline = self.predict(obs, &before, &[]).unwrap_or(before_ms);
                        if ms <= baseline * (1.0 - self.cfg.improvement) {
                            if self.steps >= self.cfg.limit(obs.placement.stages()) {
                                Action::Keep
                            } else {
                                self.propose(obs)
                            }
                        } else {
                            self.rejected.push(candidate);
                            self.phase = Phase::Settling {
                                clock: Clock::default(),
                            };
                            Action::Apply(before)
                        }
                    }
                    _ => {
                        self.phase = Phase::Measuring {
                            before,
                            before_ms,
                            candidate,
                            clock,
                        };
                        Action::Keep
                    }
                }
            }
            Phase::Settling { mut clock } => {
                if !clock.ready(obs, self.cfg.candidate_frames) {
                    self.phase = Phase::Settling { clock };
                    return Action::Keep;
                }
                // Clean times again: the next-best untried move, while
                // steps are left.
                if self.steps < self.cfg.limit(obs.placement.stages()) {
                    self.propose(obs)
                } else {
                    Action::Keep
                }
            }
        }
    }

    /// Starts a search whose first candidate is `candidate` rather than a
    /// move: it is measured and kept or reverted like any other, and a
    /// kept one is refined by the usual moves. Whatever the search was
    /// doing is dropped. `Keep` (and no search) when `candidate` is the
    /// placement in force or the stages have no times yet.
    pub fn try_placement(&mut self, obs: &Observation, candidate: Placement) -> Action {
        self.phase = Phase::Idle;
        self.steps = 0;
        self.rejected.clear();
        let Some(before_ms) = measured_bottleneck(obs) else {
            return Action::Keep;
        };
        if candidate == obs.placement {
            return Action::Keep;
        }
        self.steps = 1;
        self.phase = Phase::Measuring {
            before: obs.placement.clone(),
            before_ms,
            candidate: candidate.clone(),
            clock: Clock::default(),
        };
        Action::Apply(candidate)
    }

    /// Proposes the next candidate from `obs`, or ends the search.
    fn propose(&mut self, obs: &Observation) -> Action {
        let times = measured_times(obs);
        if times.iter().any(Option::is_none) {
            // A stage has no time yet: try again next tick.
            self.phase = Phase::Ready;
            return Action::Keep;
        }
        let times: Vec<f64> = times.into_iter().flatten().collect();
        let before_ms = times.iter().copied().fold(0.0, f64::max);
        let step = match self.model(obs, &[]) {
            Some(model) => {
                // Frames queue ahead of the bottleneck when they complete at
                // its pace (or when the pace is unknown).
                let saturated = obs.throughput_fps.is_none_or(|f| f * before_ms >= 900.0);
                model.best_move(
                    &obs.placement,
                    &times,
                    self.cfg.improvement,
                    saturated,
                    &self.rejected,
                )
            }
            None => neighbour_move(&obs.placement, &times).filter(|q| !self.rejected.contains(q)),
        };
        let Some(candidate) = step else {
            return Action::Keep;
        };
        self.steps += 1;
        self.phase = Phase::Measuring {
            before: obs.placement.clone(),
            before_ms,
            candidate: candidate.clone(),
            clock: Clock::default(),
        };
        Action::Apply(candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use crate::policy::odin::Odin;
    use crate::policy::odin::testkit::{blind, drive_with};
    use crate::policy::testutil::{self, onset};

    #[test]
    fn the_step_limit_grows_with_the_stages() {
        let c = SearchConfig::from(&PolicyConfig::default());
        assert_eq!(
            (c.limit(4), c.limit(20), c.limit(21), c.limit(64)),
            (10, 10, 11, 32)
        );
        let c = SearchConfig {
            alpha_per_stage: 0.0,
            ..c
        };
        assert_eq!(c.limit(64), 10);
    }

    #[test]
    fn first_move_is_applied_on_onset_and_judged_after_the_frames() {
        let cfg = PolicyConfig::default();
        let mut odin = Odin::new(&cfg);
        let unit_ms = [1.0; 9];
        let p = testutil::placement(9, &[3, 6]);
        // PE 1 two times slower: bottleneck stage 1 (6 ms), neighbours 3 ms each. One
        // unit to either gives 4 ms; to stage 0, the bottleneck sits earlier in the
        // pipeline and fewer frames wait ahead of it.
        let mut o = testutil::obs(&unit_ms, &[1.0; 3], p.clone(), &[1.0, 2.0, 1.0], 100);
        assert_eq!(odin.decide(&o), Action::Keep, "no event, no search");
        o.events = vec![onset(1)];
        let Action::Apply(c) = odin.decide(&o) else {
            panic!()
        };
        assert_eq!(
            (c.cuts.as_slice(), c.mapping.as_slice()),
            (&[4, 6][..], &[0, 1, 2][..])
        );
        assert!(odin.search().is_measuring());
        // Under the candidate, before the frames are in: wait.
        let o = testutil::obs(&unit_ms, &[1.0; 3], c.clone(), &[1.0, 2.0, 1.0], 101);
        assert_eq!(odin.decide(&o), Action::Keep);
        let o = testutil::obs(&unit_ms, &[1.0; 3], c.clone(), &[1.0, 2.0, 1.0], 105);
        assert_eq!(odin.decide(&o), Action::Keep);
        assert!(odin.search().is_measuring());
        // After candidate_frames: 4 ms < 6 ms, kept; no further move is predicted to
        // help (stage 2 giving a unit back would make stage 1 6 ms again): done.
        let o = testutil::obs(&unit_ms, &[1.0; 3], c, &[1.0, 2.0, 1.0], 111);
        assert_eq!(odin.decide(&o), Action::Keep);
        assert!(!odin.search().is_active());
        assert_eq!(odin.search().steps(), 1);
    }

    #[test]
    fn a_candidate_that_does_not_improve_is_reverted_and_the_search_goes_on_without_it() {
        let cfg = PolicyConfig::default();
        let mut odin = Odin::new(&cfg);
        let unit_ms = [1.0; 9];
        let start = testutil::placement(9, &[3, 6]);
        // PE 1 slowed 2x: stage 1 gives a unit to stage 0 (4 ms each, predicted)...
        let mut o = testutil::obs(&unit_ms, &[1.0; 3], start.clone(), &[1.0, 2.0, 1.0], 0);
        o.events = vec![onset(1)];
        let Action::Apply(c) = odin.decide(&o) else {
            panic!()
        };
        assert_eq!(c.cuts, vec![4, 6]);
        // ...but PE 0 turns out three times slower under the candidate: 12 ms, worse
        // than the 9 ms the placement before would take now: reverted.
        let slow = [3.0, 2.0, 1.0];
        let mut applied = Vec::new();
        let mut cur = c.clone();
        for f in 1..40 {
            let o = testutil::obs(&unit_ms, &[1.0; 3], cur.clone(), &slow, f * 4);
            if let Action::Apply(p) = odin.decide(&o) {
                applied.push(p.clone());
                cur = p;
            }
        }
        assert_eq!(applied[0], start, "reverted to the placement before");
        // Once the times are clean again, the next-best move for what is
        // measured now (PE 0 the slowest): 6 ms a stage, and the rejected
        // candidate is not tried again.
        assert_eq!(applied[1].cuts, vec![2, 5], "{applied:?}");
        assert!(!applied.contains(&c), "{applied:?}");
        assert_eq!(applied.len(), 2, "{applied:?}");
        assert!(!odin.search().is_active(), "nothing better left: stopped");
        assert_eq!(odin.search().steps(), 2);
    }

    #[test]
    fn the_baseline_is_what_the_placement_before_would_take_now() {
        let mut odin = Odin::new(&PolicyConfig::default());
        let unit_ms = [1.0; 9];
        let start = testutil::placement(9, &[3, 6]);
        let mut o = testutil::obs(&unit_ms, &[1.0; 3], start.clone(), &[1.0, 2.0, 1.0], 0);
        o.events = vec![onset(1)];
        let Action::Apply(c) = odin.decide(&o) else {
            panic!()
        };
        // The interference ends while the candidate is measured: it reads 4 ms, below
        // the 6 ms measured before it, but the placement before now takes 3 ms.
        let mut last = Action::Keep;
        for f in 1..10 {
            let o = testutil::obs(&unit_ms, &[1.0; 3], c.clone(), &[1.0; 3], f * 4);
            last = odin.decide(&o);
            if last != Action::Keep {
                break;
            }
        }
        assert_eq!(last, Action::Apply(start));
    }

    #[test]
    fn waits_for_the_candidate_to_be_in_force_and_stops_when_overtaken() {
        let mut odin = Odin::new(&PolicyConfig::default());
        let unit_ms = [1.0; 9];
        let p = testutil::placement(9, &[3, 6]);
        let slow = [1.0, 2.0, 1.0];
        let mut o = testutil::obs(&unit_ms, &[1.0; 3], p.clone(), &slow, 0);
        o.events = vec![onset(1)];
        assert!(matches!(odin.decide(&o), Action::Apply(_)));
        // Still the old placement (applied late): the search waits.
        let o = testutil::obs(&unit_ms, &[1.0; 3], p.clone(), &slow, 50);
        assert_eq!(odin.decide(&o), Action::Keep);
        assert!(matches!(odin.search().phase(), Phase::Measuring { .. }));
        // Something else entirely: the search stops.
        let o = testutil::obs(
            &unit_ms,
            &[1.0; 3],
            testutil::placement(9, &[2, 4]),
            &slow,
            60,
        );
        assert_eq!(odin.decide(&o), Action::Keep);
        assert!(!odin.search().is_active());
    }

    #[test]
    fn at_most_alpha_candidates_per_search() {
        let cfg = PolicyConfig {
            alpha: 3,
            ..Default::default()
        };
        let mut odin = Odin::new(&cfg);
        // 30 units, PE 0 crippled, one unit per step (no unit costs to size the
        // step): every move right improves for a long time.
        let unit_ms = [1.0; 30];
        let start = testutil::placement(30, &[15]);
        let (_, applied) = drive_with(
            &mut odin,
            &unit_ms,
            start,
            &[4.0, 1.0],
            vec![onset(0)],
            60,
            blind,
        );
        assert_eq!(applied.len(), 3, "{applied:?}");
        assert_eq!(applied.last().unwrap().cuts, vec![12]);
    }
}
