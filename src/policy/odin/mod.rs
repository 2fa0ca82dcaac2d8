//! `odin`: the paper's technique, an online local search over the placement.
//!
//! Problem: interference has made one stage slower; move work between
//! stages, measuring every step on the running pipeline, until the
//! bottleneck stops improving, and never leave the pipeline worse than
//! before the search.
//!
//! Approach: a state machine across ticks, started by a detector event
//! (an Onset, to cope, or an Offset, to win the throughput back), or by
//! the settled bottleneck getting worse with no event to say so.
//!
//! ```text
//!            event                 propose: the best local move of the
//!   Idle ------------> Ready  ---- bottleneck stage b (largest measured
//!    ^                  ^  |       service time), predicted from the
//!    |        improved  |  |       measured slowdowns (none predicted to
//!    |     (and steps   |  | Apply(candidate)   help: the search ends)
//!    |      < limit)    |  v
//!    |                Measuring -- wait until candidate_frames frames
//!    |                     |       completed under the candidate and the
//!    |   not improved:     |       smoothed times settled, then compare
//!    |   Apply(before)     v       its bottleneck with before's, now
//!    +---------------- Settling -- wait as long again, so the next
//!                                  search measures clean times
//! ```
//!
//! The moves. Each PE's slowdown is its stages' measured time over what
//! their units take on it when idle (our own time-sharing taken out); a
//! PE none of our stages runs on keeps the slowdown it was last measured
//! at, or reads `1 + foreign CPU use / speed` if that is worse. From those,
//! any placement's stage times can be predicted. The bottleneck stage `b`
//! may
//!
//! ```text
//!   shed work along the chain      stages i..=j around b re-cut (b's
//!   [ a ][  b  ][ c ][ d ]         neighbours take its boundary units and
//!   [ a  ][ b ][ c  ][ d ]         pass their own on: the cut move
//!                                  ripples as far as it must); a stage
//!                                  may be left empty, its PE unused
//!   trade PEs with a stage         b's units run on t's PE and t's on
//!   b@p, t@q  ->  b@q, t@p         b's: an idle PE (t empty) or a faster
//!                                  one; the cuts stay
//! ```
//!
//! Every window `i..=j` containing `b` is re-cut for the lowest predicted
//! time (never below the bottleneck outside the window, and otherwise as
//! close to the old cuts as that allows). Among the moves predicted within
//! half the `improvement` fraction of the best, the one that moves the
//! least work is tried (the most local step the measurements justify). A
//! best move not predicted to cut the bottleneck by `improvement` is not
//! tried: the search stops there. Without unit costs nothing can be
//! predicted: one boundary unit goes to the faster neighbour.
//!
//! A candidate is kept when its measured bottleneck is at least the
//! `improvement` fraction below the right baseline: what the placement
//! before it would take *now*, predicted from the slowdowns measured under
//! the candidate (so interference that grew or ended during the
//! measurement does not decide), or its measured bottleneck when that
//! cannot be predicted. Otherwise the previous placement is applied again
//! and, once its times are clean, the search goes on with the best move
//! it has not rejected yet (while steps are left). Smoothed service times lag the placement, so a
//! candidate is judged only after `candidate_frames` frames, counted from
//! the first tick it is seen in force, and once the times drift by less
//! than 0.5% a frame (or after four times as many frames). A search tries
//! at most `alpha` candidates, or `alpha_per_stage` per stage when that is
//! more (a long pipeline needs more steps). Events that arrive during a
//! search are remembered and start one more search after it. [`Odin`] adds
//! what the instantaneous PE signals tell (see there).
//!
//! Invariants: at most the step limit of candidates per search; a
//! candidate changes the cuts of one window, or swaps the PEs of two
//! stages, never both; a search that is overtaken (the placement in force
//! is neither the candidate nor, before the candidate was first seen, the
//! placement it replaced) stops.
//!
//! The parts: `clock` counts the frames under a placement and tells when
//! its times have settled, `moves` predicts stage times from the measured
//! slowdowns and generates the moves, `search` is the bounded local search
//! over them (shared with `guided`), and this module is the policy.
//!
//! Pure: no OS calls.

mod clock;
mod moves;
mod search;
#[cfg(test)]
mod testkit;

pub use clock::Clock;
pub use moves::neighbour_move;
pub use search::{LocalSearch, Phase, SearchConfig};

use super::config::PolicyConfig;
use super::cost::{measured_bottleneck, sharing};
use super::detector::{DetectorConfig, Event, Kind};
use super::{Action, Observation, Placement, Policy};

/// The `odin` policy: a [`LocalSearch`] started by every detector event,
/// and by the settled bottleneck growing with no event to say so.
///
/// Onsets are remembered: the placement in force at the first one (the
/// origin) and the PEs they named, with the kind. Besides the detector's
/// smoothed view, each PE's instantaneous signals say whether interference
/// is present right now (foreign CPU use, IPC and LLC MPKI against the best
/// seen on the PE; on a PE none of our stages runs on, only foreign CPU use
/// can tell, so only CPU interference is seen to end there). An onset for a
/// PE that is already quiet again is dropped (the interference ended before
/// a candidate could be measured), and when every PE named by an onset is
/// quiet again, the first candidate of the search that wins the throughput
/// back is the origin itself, if the measurements predict it faster: the
/// search's moves undone in one step, measured, and kept or reverted like
/// any other candidate, without waiting for the smoothed times to show the
/// offset.
///
/// Between searches, the measured bottleneck is watched against the lowest
/// it settled at since: growing by the detector's threshold for its
/// `onset_ticks` ticks starts a search (interference that grew on a stage
/// the detector already counts as interfered, or that moved with no stage
/// to see it begin).
#[derive(Clone, Debug)]
pub struct Odin {
    search: LocalSearch,
    pending: bool,
    /// The placement in force at the first onset of the current spell.
    origin: Option<Placement>,
    /// Per PE: the kind of the onset that named it since `origin`.
    hot: Vec<Option<Kind>>,
    /// Per PE: the highest IPC and lowest LLC MPKI seen.
    best_ipc: Vec<Option<f64>>,
    best_mpki: Vec<Option<f64>>,
    /// Between searches: the settled bottleneck level and the ticks it
    /// has been exceeded by the threshold in a row.
    watch: Option<(f64, u32)>,
    /// The detector's parameters, for its instantaneous verdict on the PE
    /// signals and its onset rule on the bottleneck.
    detector: DetectorConfig,
}

/// Weight of a new measurement in the settled bottleneck level.
const WATCH_ALPHA: f64 = 0.1;

impl Odin {
    /// `odin` with the search parameters of `cfg`.
    pub fn new(cfg: &PolicyConfig) -> Self {
        Self {
            search: LocalSearch::new(cfg.into()),
            pending: false,
            origin: None,
            hot: Vec::new(),
            best_ipc: Vec::new(),
            best_mpki: Vec::new(),
            watch: None,
            detector: cfg.detector.clone(),
        }
    }

    /// The search state.
    pub fn search(&self) -> &LocalSearch {
        &self.search
    }

    /// Learns each PE's best IPC and MPKI.
    fn learn(&mut self, obs: &Observation) {
        let pes = obs.pes.len().max(obs.pe_speed.len());
        self.best_ipc.resize(pes, None);
        self.best_mpki.resize(pes, None);
        self.hot.resize(pes.max(self.hot.len()), None);
        for (p, g) in obs.pes.iter().enumerate() {
            if let Some(i) = g.ipc.filter(|v| v.is_finite() && *v > 0.0) {
                self.best_ipc[p] = Some(self.best_ipc[p].map_or(i, |b| b.max(i)));
            }
            if let Some(m) = g.llc_mpki.filter(|v| v.is_finite() && *v >= 0.0) {
                self.best_mpki[p] = Some(self.best_mpki[p].map_or(m, |b| b.min(m)));
            }
        }
    }

    /// Whether PE `pe` shows no interference right now: little foreign
    /// CPU use, and IPC or MPKI at its best. `false` when the signals
    /// needed to tell are missing; on a PE none of our stages runs on
    /// (no IPC, no MPKI), cache interference cannot be seen, so only a
    /// PE named for CPU interference can be told quiet there.
    fn quiet(&self, obs: &Observation, pe: usize) -> bool {
        let Some(g) = obs.pes.get(pe) else {
            return false;
        };
        let v = self.detector.verdict(
            g,
            obs.pe_speed.get(pe).copied(),
            self.best_ipc[pe],
            self.best_mpki[pe],
        );
        let Some(cpu_quiet) = v.cpu_clear else {
            return false;
        };
        let (ipc, mpki) = (v.ipc_clear, v.mpki_clear);
        let used = sharing(&obs.placement, obs.pe_speed.len())
            .get(pe)
            .is_some_and(|&k| k > 0);
        let cache_quiet = match (ipc, mpki) {
            (None, None) if !used => self.hot.get(pe) == Some(&Some(Kind::CpuTimeSharing)),
            (None, None) => return false,
            (i, m) => i.unwrap_or(true) && m.unwrap_or(true),
        };
        cpu_quiet && cache_quiet
    }

    /// Watches the settled bottleneck between searches; true when it has
    /// grown enough, for long enough, to search again.
    fn worsened(&mut self, obs: &Observation) -> bool {
        if self.search.is_active() {
            self.watch = None;
            return false;
        }
        let Some(now) = measured_bottleneck(obs) else {
            return false;
        };
        let (level, over) = self.watch.unwrap_or((now, 0));
        if self.detector.exceeds(now, level) {
            if over + 1 >= self.detector.onset_ticks {
                self.watch = None;
                return true;
            }
            self.watch = Some((level, over + 1));
        } else {
            // The settled level is learnt slowly: the minimum of a noisy
            // series drifts ever lower, and then noise alone looks worse.
            self.watch = Some((level + WATCH_ALPHA * (now - level), 0));
        }
        false
    }
}

impl Policy for Odin {
    fn name(&self) -> &'static str {
        "odin"
    }

    fn exploring(&self) -> bool {
        self.search.is_measuring()
    }

    fn decide(&mut self, obs: &Observation) -> Action {
        self.learn(obs);
        for e in &obs.events {
            match *e {
                Event::Onset { pe, kind, .. } => {
                    if self.quiet(obs, pe) {
                        // Over before anything could be measured: nothing to do.
                        continue;
                    }
                    if let Some(h) = self.hot.get_mut(pe) {
                        *h = Some(kind);
                    }
                    self.origin.get_or_insert_with(|| obs.placement.clone());
                    self.pending = true;
                }
                Event::Offset { pe, .. } => {
                    if let Some(h) = self.hot.get_mut(pe) {
                        *h = None;
                    }
                    self.search.forget(pe);
                    if self.hot.iter().all(Option::is_none) {
                        self.origin = None;
                    }
                    self.pending = true;
                }
            }
        }
        let hot: Vec<usize> = (0..self.hot.len())
            .filter(|&p| self.hot[p].is_some())
            .collect();
        if !hot.is_empty() && hot.iter().all(|&p| self.quiet(obs, p)) {
            // The interference that moved us is gone: undo the moves, if the
            // measurements (those PEs taken as quiet) say that is faster.
            self.hot.iter_mut().for_each(|h| *h = None);
            hot.iter().for_each(|&p| self.search.forget(p));
            self.pending = true;
            if let Some(origin) = self.origin.take()
                && origin.units == obs.placement.units
                && origin != obs.placement
                && let (Some(back), Some(now)) = (
                    self.search.predict(obs, &origin, &hot),
                    measured_bottleneck(obs),
                )
                && back <= now * (1.0 - self.search.cfg.improvement)
            {
                self.pending = false;
                return self.search.try_placement(obs, origin);
            }
        }
        if self.worsened(obs) {
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
    use super::testkit::{blind, drive, drive_with, signals};
    use super::*;
    use crate::policy::testutil::{self, onset};

    #[test]
    fn an_onset_that_is_already_over_starts_nothing() {
        let unit_ms = [1.0; 9];
        let p = testutil::placement(9, &[3, 6]);
        for (foreign, moves) in [(0.0, false), (0.5, true)] {
            let mut odin = Odin::new(&PolicyConfig::default());
            let mut o = testutil::obs(&unit_ms, &[1.0; 3], p.clone(), &[1.0, 2.0, 1.0], 0);
            o.pes = vec![signals(0.0); 3];
            assert_eq!(odin.decide(&o), Action::Keep);
            o.pes[1] = signals(foreign);
            o.events = vec![onset(1)];
            assert_eq!(
                matches!(odin.decide(&o), Action::Apply(_)),
                moves,
                "foreign {foreign}"
            );
        }
    }

    #[test]
    fn a_search_whose_interference_ends_is_undone() {
        let mut odin = Odin::new(&PolicyConfig::default());
        let unit_ms = [1.0; 9];
        let start = testutil::placement(9, &[3, 6]);
        let slow = [1.0, 2.0, 1.0];
        let mut o = testutil::obs(&unit_ms, &[1.0; 3], start.clone(), &slow, 0);
        o.pes = vec![signals(0.0), signals(0.5), signals(0.0)];
        o.events = vec![onset(1)];
        let Action::Apply(c) = odin.decide(&o) else {
            panic!()
        };
        let mut o = testutil::obs(&unit_ms, &[1.0; 3], c.clone(), &slow, 2);
        o.pes = vec![signals(0.0), signals(0.5), signals(0.0)];
        assert_eq!(odin.decide(&o), Action::Keep, "still interfered: measuring");
        // PE 1's antagonist is gone (its smoothed times do not show it yet): the
        // search's moves are undone, as a candidate measured like any other.
        let mut o = testutil::obs(&unit_ms, &[1.0; 3], c.clone(), &slow, 4);
        o.pes = vec![signals(0.0); 3];
        assert_eq!(odin.decide(&o), Action::Apply(start.clone()));
        match odin.search().phase() {
            Phase::Measuring {
                before, candidate, ..
            } => assert_eq!((before, candidate), (&c, &start)),
            p => panic!("{p:?}"),
        }
        // Quiet: the undone placement measures 3 ms against 4.5 ms predicted for the
        // candidate, so it is kept, and nothing else moves.
        let (end, applied) = drive_with(
            &mut odin,
            &unit_ms,
            start.clone(),
            &[1.0; 3],
            vec![],
            40,
            |o| o.pes = vec![signals(0.0); 3],
        );
        assert!(applied.is_empty(), "{applied:?}");
        assert_eq!(end, start);
        assert!(!odin.search().is_active());
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
        let obs = |p: &Placement, frames: u64| {
            let mut o = testutil::obs(&unit_ms, &speed, p.clone(), &slow, frames);
            blind(&mut o);
            o
        };
        let mut o = obs(&start, 0);
        o.events = vec![onset(0)];
        let Action::Apply(c1) = odin.decide(&o) else {
            panic!()
        };
        let mut o = obs(&c1, 1);
        o.events = vec![onset(1)];
        assert_eq!(odin.decide(&o), Action::Keep);
        // Kept, alpha reached: the search ends; the pending event starts the next.
        assert_eq!(odin.decide(&obs(&c1, 20)), Action::Keep);
        let Action::Apply(c2) = odin.decide(&obs(&c1, 21)) else {
            panic!()
        };
        assert_eq!(c2.cuts, vec![13]);
    }

    #[test]
    fn a_bottleneck_that_grows_without_an_event_starts_a_search() {
        let cfg = PolicyConfig::default();
        let mut odin = Odin::new(&cfg);
        let unit_ms = [1.0; 9];
        let p = testutil::placement(9, &[3, 6]);
        let (end, applied) = drive(&mut odin, &unit_ms, p.clone(), &[1.0; 3], vec![], 20);
        assert!(applied.is_empty() && end == p);
        // PE 1 three times slower, and no detector event (its stage was already
        // counted as interfered, say): after onset_ticks ticks over the threshold, odin
        // searches on its own.
        let mut actions = Vec::new();
        for t in 0..cfg.detector.onset_ticks {
            let o = testutil::obs(
                &unit_ms,
                &[1.0; 3],
                p.clone(),
                &[1.0, 3.0, 1.0],
                100 + u64::from(t),
            );
            actions.push(odin.decide(&o));
        }
        let last = actions.pop().unwrap();
        assert!(actions.iter().all(|a| *a == Action::Keep), "{actions:?}");
        let Action::Apply(c) = last else {
            panic!("{last:?}")
        };
        assert!(c.range(1).len() < 3, "stage 1 sheds work: {c:?}");
        // A bottleneck that stays where it settled starts nothing.
        let mut odin = Odin::new(&cfg);
        let (_, applied) = drive(&mut odin, &unit_ms, p, &[1.0, 1.2, 1.0], vec![], 30);
        assert!(applied.is_empty(), "{applied:?}");
    }
}
