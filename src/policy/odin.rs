//! `odin`: the paper's technique, an online local search over the cuts.
//!
//! Problem: interference has made one stage slower; move units between
//! neighbouring stages, with no model of how slow each PE now is, until
//! the bottleneck stops improving, measuring every step on the running
//! pipeline, and never leave the pipeline worse than before the search.
//!
//! Approach: a state machine across ticks, started by a detector event
//! (an Onset, to cope, or an Offset, to win the throughput back).
//!
//! ```text
//!            event                 propose: bottleneck stage b (largest
//!   Idle ------------> Ready  ---- measured service time) gives its
//!    ^                  ^  |       boundary unit to its faster neighbour
//!    |        improved  |  | Apply(candidate)
//!    |     (and steps   |  v
//!    |      < alpha)  Measuring -- wait until candidate_frames frames
//!    |                     |       completed under the candidate, then
//!    |   not improved:     |       compare max service time with before
//!    |   Apply(before)     v
//!    +---------------- Settling -- wait candidate_frames frames again, so
//!                                  the next search measures clean times
//! ```
//!
//! A candidate is kept when the measured bottleneck fell by at least the
//! `improvement` fraction; otherwise the previous placement is applied
//! again and the search stops. Smoothed service times lag the placement,
//! so a candidate is judged only after `candidate_frames` frames, counted
//! from the first tick the candidate is seen in force. Events that arrive
//! during a search are remembered and start one more search after it.
//!
//! Invariants: every stage of a candidate keeps at least one unit (so a
//! stage holding one unit is never the donor); at most `alpha` candidates
//! per search; only the cuts change, never the mapping; a search that is
//! overtaken (the placement in force is neither the candidate nor, before
//! the candidate was first seen, the placement it replaced) stops.
//!
//! Pure: no OS calls.

use super::config::PolicyConfig;
use super::cost::{measured_bottleneck, measured_times};
use super::{Action, Observation, Placement, Policy};

/// Parameters of the local search.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SearchConfig {
    /// Most candidates per search.
    pub alpha: u32,
    /// Frames to wait under a candidate before judging it.
    pub candidate_frames: u32,
    /// Smallest relative fall of the bottleneck to keep a candidate.
    pub improvement: f64,
}

impl From<&PolicyConfig> for SearchConfig {
    fn from(c: &PolicyConfig) -> Self {
        Self {
            alpha: c.alpha,
            candidate_frames: c.candidate_frames,
            improvement: c.improvement,
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
        /// Frames done when the candidate was first seen in force.
        since: Option<u64>,
    },
    /// A rejected candidate was reverted; waiting for clean times.
    Settling {
        /// Frames done when the reverted placement was first seen.
        since: Option<u64>,
    },
}

/// The bounded local search, reusable by `odin` and `guided`.
#[derive(Clone, Debug)]
pub struct LocalSearch {
    cfg: SearchConfig,
    phase: Phase,
    steps: u32,
}

impl LocalSearch {
    /// An idle search.
    pub fn new(cfg: SearchConfig) -> Self {
        Self {
            cfg,
            phase: Phase::Idle,
            steps: 0,
        }
    }

    /// Starts a search from the next observation (restarts the step count).
    pub fn start(&mut self) {
        self.phase = Phase::Ready;
        self.steps = 0;
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

    /// One tick of the search.
    pub fn poll(&mut self, obs: &Observation) -> Action {
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Idle => Action::Keep,
            Phase::Ready => self.propose(obs),
            Phase::Measuring {
                before,
                before_ms,
                candidate,
                since,
            } => {
                if obs.placement == before && since.is_none() {
                    // Not in force yet: keep waiting.
                    self.phase = Phase::Measuring {
                        before,
                        before_ms,
                        candidate,
                        since,
                    };
                    return Action::Keep;
                }
                if obs.placement != candidate {
                    // Someone else changed the placement: this search is moot.
                    return Action::Keep;
                }
                let since = since.unwrap_or(obs.frames_done);
                let waited = obs.frames_done.saturating_sub(since);
                let measured = measured_bottleneck(obs);
                match measured {
                    Some(ms) if waited >= u64::from(self.cfg.candidate_frames) => {
                        if ms <= before_ms * (1.0 - self.cfg.improvement) {
                            if self.steps >= self.cfg.alpha {
                                Action::Keep
                            } else {
                                self.propose(obs)
                            }
                        } else {
                            self.phase = Phase::Settling { since: None };
                            Action::Apply(before)
                        }
                    }
                    _ => {
                        self.phase = Phase::Measuring {
                            before,
                            before_ms,
                            candidate,
                            since: Some(since),
                        };
                        Action::Keep
                    }
                }
            }
            Phase::Settling { since } => {
                let since = since.unwrap_or(obs.frames_done);
                if obs.frames_done.saturating_sub(since) < u64::from(self.cfg.candidate_frames) {
                    self.phase = Phase::Settling { since: Some(since) };
                }
                Action::Keep
            }
        }
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
        let Some(candidate) = neighbour_move(&obs.placement, &times) else {
            return Action::Keep;
        };
        let before_ms = times.iter().copied().fold(0.0, f64::max);
        self.steps += 1;
        self.phase = Phase::Measuring {
            before: obs.placement.clone(),
            before_ms,
            candidate: candidate.clone(),
            since: None,
        };
        Action::Apply(candidate)
    }
}

/// The local-search move: the bottleneck stage (largest of `times`, one
/// per stage) gives its boundary unit to whichever neighbour has the
/// smaller time (ties go to the later stage). `None` when the bottleneck
/// holds a single unit or has no neighbour.
pub fn neighbour_move(p: &Placement, times: &[f64]) -> Option<Placement> {
    let b = (0..p.stages()).max_by(|&x, &y| times[x].total_cmp(&times[y]).then(y.cmp(&x)))?;
    if p.range(b).len() < 2 {
        return None;
    }
    let left = b.checked_sub(1).map(|s| (s, times[s]));
    let right = (b + 1 < p.stages()).then(|| (b + 1, times[b + 1]));
    let to = match (left, right) {
        (Some(l), Some(r)) => {
            if l.1 < r.1 {
                l.0
            } else {
                r.0
            }
        }
        (Some(l), None) => l.0,
        (None, Some(r)) => r.0,
        (None, None) => return None,
    };
    let mut q = p.clone();
    if to < b {
        q.cuts[b - 1] += 1;
    } else {
        q.cuts[b] -= 1;
    }
    Some(q)
}

/// The `odin` policy: a [`LocalSearch`] started by every detector event.
#[derive(Clone, Debug)]
pub struct Odin {
    search: LocalSearch,
    pending: bool,
}

impl Odin {
    /// `odin` with the search parameters of `cfg`.
    pub fn new(cfg: &PolicyConfig) -> Self {
        Self {
            search: LocalSearch::new(cfg.into()),
            pending: false,
        }
    }

    /// The search state.
    pub fn search(&self) -> &LocalSearch {
        &self.search
    }
}

impl Policy for Odin {
    fn name(&self) -> &'static str {
        "odin"
    }

    fn decide(&mut self, obs: &Observation) -> Action {
        if !obs.events.is_empty() {
            self.pending = true;
        }
        if self.pending && !self.search.is_active() {
            self.pending = false;
            self.search.start();
        }
        self.search.poll(obs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::detector::{Event, Kind};
    use crate::policy::testutil;

    fn onset(stage: usize) -> Event {
        Event::Onset {
            pe: stage,
            stage,
            kind: Kind::Unknown,
            severity: 1.0,
            antagonists: vec![],
        }
    }

    /// Drives `policy` like the controller and simulator would, with exact
    /// settled service times for `slowdown`; returns every placement applied.
    fn drive(
        policy: &mut dyn Policy,
        unit_ms: &[f64],
        start: Placement,
        slowdown: &[f64],
        events: Vec<Event>,
        ticks: usize,
    ) -> (Placement, Vec<Placement>) {
        let speed = vec![1.0; slowdown.len()];
        let mut cur = start;
        let mut applied = Vec::new();
        let mut events = Some(events);
        for t in 0..ticks {
            let mut o = testutil::obs(unit_ms, &speed, cur.clone(), slowdown, t as u64 * 4);
            o.events = events.take().unwrap_or_default();
            if let Action::Apply(p) = policy.decide(&o) {
                assert!(p.is_valid(speed.len()));
                for s in 0..p.stages() {
                    assert!(!p.range(s).is_empty(), "odin never empties a stage: {p:?}");
                }
                assert_eq!(p.mapping, cur.mapping, "odin only moves cuts");
                applied.push(p.clone());
                cur = p;
            }
        }
        (cur, applied)
    }

    #[test]
    fn the_move_goes_from_the_bottleneck_to_the_faster_neighbour() {
        let p = testutil::placement(9, &[3, 6]);
        // Middle stage slowest, right neighbour faster: its last unit goes right.
        assert_eq!(
            neighbour_move(&p, &[4.0, 9.0, 3.0]).unwrap().cuts,
            vec![3, 5]
        );
        // Left neighbour faster: its first unit goes left.
        assert_eq!(
            neighbour_move(&p, &[2.0, 9.0, 3.0]).unwrap().cuts,
            vec![4, 6]
        );
        // Ends have one neighbour.
        assert_eq!(
            neighbour_move(&p, &[9.0, 1.0, 3.0]).unwrap().cuts,
            vec![2, 6]
        );
        assert_eq!(
            neighbour_move(&p, &[1.0, 2.0, 9.0]).unwrap().cuts,
            vec![3, 7]
        );
        // A one-unit bottleneck cannot give anything.
        let p = testutil::placement(5, &[1, 3]);
        assert_eq!(neighbour_move(&p, &[9.0, 1.0, 1.0]), None);
        assert_eq!(neighbour_move(&testutil::placement(4, &[]), &[4.0]), None);
    }

    #[test]
    fn first_move_is_applied_on_onset_and_judged_after_the_frames() {
        let cfg = PolicyConfig::default();
        let mut odin = Odin::new(&cfg);
        let unit_ms = [1.0; 9];
        let p = testutil::placement(9, &[3, 6]);
        // PE 1 two times slower: bottleneck stage 1 (6 ms), neighbours 3 ms each: ties go right.
        let mut o = testutil::obs(&unit_ms, &[1.0; 3], p.clone(), &[1.0, 2.0, 1.0], 100);
        assert_eq!(odin.decide(&o), Action::Keep, "no event, no search");
        o.events = vec![onset(1)];
        let Action::Apply(c) = odin.decide(&o) else {
            panic!()
        };
        assert_eq!(c.cuts, vec![3, 5]);
        assert!(odin.search().is_measuring());
        assert!(odin.search().is_measuring());
        // Under the candidate, before the frames are in: wait.
        let o = testutil::obs(&unit_ms, &[1.0; 3], c.clone(), &[1.0, 2.0, 1.0], 101);
        assert_eq!(odin.decide(&o), Action::Keep);
        let o = testutil::obs(&unit_ms, &[1.0; 3], c.clone(), &[1.0, 2.0, 1.0], 105);
        assert_eq!(odin.decide(&o), Action::Keep);
        // After candidate_frames: 4 ms < 6 ms, kept; the next step goes on (stage 1 still slowest at 4 ms vs 4 ms).
        let o = testutil::obs(&unit_ms, &[1.0; 3], c, &[1.0, 2.0, 1.0], 111);
        assert!(matches!(odin.decide(&o), Action::Apply(_)));
        assert_eq!(odin.search().steps(), 2);
    }

    #[test]
    fn a_candidate_that_does_not_improve_is_reverted_and_the_search_stops() {
        let cfg = PolicyConfig::default();
        let mut odin = Odin::new(&cfg);
        let unit_ms = [1.0; 9];
        let start = testutil::placement(9, &[3, 6]);
        // PE 1 slowed 1.5x: 4.5 ms; moving a unit right makes stage 2 4 ms and stage 1 3 ms: improves;
        // moving another makes stage 2 5 ms: worse, reverted.
        let (end, applied) = drive(
            &mut odin,
            &unit_ms,
            start,
            &[1.0, 1.5, 1.0],
            vec![onset(1)],
            40,
        );
        assert_eq!(applied[0].cuts, vec![3, 5]);
        let (b, _) =
            crate::policy::cost::CostModel::new(&unit_ms).score(&end, &[1.0, 1.0 / 1.5, 1.0]);
        assert!(b <= 4.0 + 1e-12, "{end:?}");
        // The last Apply is a revert to the best placement, and nothing moves after it.
        let last = applied.last().unwrap();
        assert_eq!(last, &end);
        assert_eq!(
            applied[applied.len() - 1],
            applied[applied.len() - 3],
            "reverted to the placement before the bad candidate"
        );
        assert!(!odin.search().is_active());
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
        // 30 units, PE 0 crippled: every move right improves for a long time.
        let unit_ms = [1.0; 30];
        let start = testutil::placement(30, &[15]);
        let (_, applied) = drive(&mut odin, &unit_ms, start, &[4.0, 1.0], vec![onset(0)], 60);
        assert_eq!(applied.len(), 3, "{applied:?}");
        assert_eq!(applied.last().unwrap().cuts, vec![12]);
    }

    #[test]
    fn it_reacts_to_offset_to_win_the_throughput_back() {
        let cfg = PolicyConfig::default();
        let mut odin = Odin::new(&cfg);
        let unit_ms = [1.0; 12];
        // A placement tuned for a slowed PE 0 (3 units there), now quiet again.
        let start = testutil::placement(12, &[3, 8]);
        let (end, applied) = drive(&mut odin, &unit_ms, start.clone(), &[1.0; 3], vec![], 30);
        assert!(applied.is_empty(), "no event, no search");
        assert_eq!(end, start);
        let (end, applied) = drive(
            &mut odin,
            &unit_ms,
            start,
            &[1.0; 3],
            vec![Event::Offset { pe: 0, stage: 0 }],
            60,
        );
        assert_eq!(
            applied[0].cuts,
            vec![4, 8],
            "stage 1 (5 units) gives its first unit to stage 0"
        );
        let (b, _) = crate::policy::cost::CostModel::new(&unit_ms).score(&end, &[1.0; 3]);
        assert_eq!(b, 4.0, "{end:?}");
    }

    #[test]
    fn events_during_a_search_start_another_one_afterwards() {
        let cfg = PolicyConfig {
            alpha: 1,
            ..Default::default()
        };
        let mut odin = Odin::new(&cfg);
        let unit_ms = [1.0; 30];
        let start = testutil::placement(30, &[15]);
        let speed = [1.0, 1.0];
        let slow = [4.0, 1.0];
        let mut o = testutil::obs(&unit_ms, &speed, start, &slow, 0);
        o.events = vec![onset(0)];
        let Action::Apply(c1) = odin.decide(&o) else {
            panic!()
        };
        let mut o = testutil::obs(&unit_ms, &speed, c1.clone(), &slow, 1);
        o.events = vec![onset(1)];
        assert_eq!(odin.decide(&o), Action::Keep);
        let o = testutil::obs(&unit_ms, &speed, c1.clone(), &slow, 20);
        // Kept, alpha reached: the search ends; the pending event starts the next.
        assert_eq!(odin.decide(&o), Action::Keep);
        let o = testutil::obs(&unit_ms, &speed, c1, &slow, 21);
        let Action::Apply(c2) = odin.decide(&o) else {
            panic!()
        };
        assert_eq!(c2.cuts, vec![13]);
    }
}
