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
//!   Idle ------------> Ready  ---- measured service time) gives k >= 1
//!    ^                  ^  |       boundary units to a neighbour, both
//!    |        improved  |  |       chosen from the measured slowdowns
//!    |     (and steps   |  | Apply(candidate)   (none predicted to help:
//!    |      < alpha)    |  v                    the search ends)
//!    |                Measuring -- wait until candidate_frames frames
//!    |                     |       completed under the candidate and the
//!    |   not improved:     |       smoothed times settled, then compare
//!    |   Apply(before)     v       its bottleneck with before's, now
//!    +---------------- Settling -- wait as long again, so the next
//!                                  search measures clean times
//! ```
//!
//! The step: each stage's slowdown is its measured time over what its
//! units take on an idle PE; moving `k` units predicts the two stages'
//! times from those slowdowns, and the neighbour and `k` with the lowest
//! predicted bottleneck are tried (one unit to the faster neighbour when
//! the unit costs are unknown). A move not predicted to cut the bottleneck
//! by the `improvement` fraction is not tried: the search stops there.
//!
//! A candidate is kept when its measured bottleneck is at least the
//! `improvement` fraction below the right baseline: what the placement
//! before it would take *now*, predicted from the slowdowns measured under
//! the candidate (so interference that grew or ended during the
//! measurement does not decide), or its measured bottleneck when that
//! cannot be predicted. Otherwise the previous placement is applied again
//! and the search stops. Smoothed service times lag the placement, so a
//! candidate is judged only after `candidate_frames` frames, counted from
//! the first tick it is seen in force, and once the times drift by less
//! than 0.5% a frame (or after four times as many frames). Events that
//! arrive during a search are remembered and start one more search after
//! it. [`Odin`] adds what the instantaneous PE signals tell (see there):
//! an onset whose interference is already over starts nothing, and a
//! search whose interference ends mid-way is undone.
//!
//! Invariants: every stage of a candidate keeps at least one unit (so a
//! stage holding one unit is never the donor); at most `alpha` candidates
//! per search; only the cuts change, never the mapping; a search that is
//! overtaken (the placement in force is neither the candidate nor, before
//! the candidate was first seen, the placement it replaced) stops.
//!
//! Pure: no OS calls.

use super::config::PolicyConfig;
use super::cost::{CostModel, measured_bottleneck, measured_times};
use super::detector::Event;
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

/// Share of a stage's time its smoothed service time may still drift per
/// frame for the measurement to count as settled (the EWMA closes a share
/// 0.2 of the gap each frame, so 0.5% a frame means within about 2.5% of
/// the placement's real time).
const SETTLED_DRIFT: f64 = 0.005;

/// A candidate is judged after at most this many times `candidate_frames`
/// frames even if its times still drift.
const MAX_WAIT: u64 = 4;

/// Frames counted under a placement, and whether its smoothed times have
/// stopped drifting.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Clock {
    /// Frames done when the placement was first seen in force.
    since: Option<u64>,
    /// Frames done and stage times at the last look that saw a new frame.
    mark: Option<(u64, Vec<f64>)>,
    /// Whether the times drifted less than [`SETTLED_DRIFT`] a frame
    /// between the last two such looks.
    settled: bool,
}

impl Clock {
    /// Whether the placement has been seen in force yet.
    pub fn started(&self) -> bool {
        self.since.is_some()
    }

    /// Frames done under the placement at `obs`.
    fn waited(&self, obs: &Observation) -> u64 {
        self.since.map_or(0, |s| obs.frames_done.saturating_sub(s))
    }

    /// Looks at `obs` (taken under the placement); true once `frames`
    /// frames are done and the times have settled, or `MAX_WAIT` times
    /// that many are done.
    fn ready(&mut self, obs: &Observation, frames: u32) -> bool {
        self.since.get_or_insert(obs.frames_done);
        let times: Option<Vec<f64>> = measured_times(obs).into_iter().collect();
        if let Some(t) = times {
            match &self.mark {
                Some((f, prev)) if obs.frames_done > *f && prev.len() == t.len() => {
                    let n = (obs.frames_done - f) as f64;
                    let drift = t
                        .iter()
                        .zip(prev)
                        .filter(|(a, _)| **a > 0.0)
                        .map(|(a, b)| (a - b).abs() / n / a)
                        .fold(0.0, f64::max);
                    self.settled = drift <= SETTLED_DRIFT;
                    self.mark = Some((obs.frames_done, t));
                }
                Some(_) => {}
                None => self.mark = Some((obs.frames_done, t)),
            }
        }
        let waited = self.waited(obs);
        let frames = u64::from(frames);
        waited >= frames && (self.settled || waited >= MAX_WAIT * frames)
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
                        let baseline = measured_times(obs)
                            .into_iter()
                            .collect::<Option<Vec<f64>>>()
                            .and_then(|t| Slowdowns::measure(obs, &t))
                            .and_then(|m| m.bottleneck_of(&before))
                            .unwrap_or(before_ms);
                        if ms <= baseline * (1.0 - self.cfg.improvement) {
                            if self.steps >= self.cfg.alpha {
                                Action::Keep
                            } else {
                                self.propose(obs)
                            }
                        } else {
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
                }
                Action::Keep
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
        let step = match Slowdowns::measure(obs, &times) {
            Some(model) => model.sized_move(&obs.placement, &times, self.cfg.improvement),
            None => neighbour_move(&obs.placement, &times),
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

/// The local-search move: the bottleneck stage (largest of `times`, one
/// per stage) gives its boundary unit to whichever neighbour has the
/// smaller time (ties go to the later stage). `None` when the bottleneck
/// holds a single unit or has no neighbour.
pub fn neighbour_move(p: &Placement, times: &[f64]) -> Option<Placement> {
    let b = bottleneck_stage(&times[..p.stages()])?;
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

/// What the measurements say about each stage of the placement in force:
/// its slowdown (measured over idle-PE time, our own time-sharing
/// included), so the time of any other range of units on the same stage
/// can be predicted.
#[derive(Clone, Debug)]
struct Slowdowns {
    cost: CostModel,
    /// The placement's stage-to-PE mapping.
    mapping: Vec<usize>,
    /// Per stage: the PE's nominal speed.
    speed: Vec<f64>,
    /// Per stage: measured over expected time.
    factor: Vec<f64>,
}

impl Slowdowns {
    /// The slowdowns of `obs.placement` from the measured `times` (one per
    /// stage); `None` when the unit costs or speeds do not fit it. An empty
    /// stage has no measurement: its PE's foreign CPU use stands in (a
    /// quiet PE reads 1).
    fn measure(obs: &Observation, times: &[f64]) -> Option<Self> {
        let p = &obs.placement;
        if obs.unit_ms.len() != p.units || times.len() != p.stages() {
            return None;
        }
        let cost = CostModel::new(&obs.unit_ms);
        let mut speed = Vec::with_capacity(p.stages());
        let mut factor = Vec::with_capacity(p.stages());
        for (s, &t) in times.iter().enumerate() {
            let pe = p.mapping[s];
            let v = obs
                .pe_speed
                .get(pe)
                .copied()
                .filter(|v| *v > 0.0 && v.is_finite())?;
            let expected = cost.range_ms(p.range(s)) / v;
            let f = if expected > 0.0 {
                t / expected
            } else {
                let foreign = obs.pes.get(pe).and_then(|g| g.foreign_cpu_share);
                1.0 + foreign
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .unwrap_or(0.0)
                    / v
            };
            if !(f.is_finite() && f > 0.0) {
                return None;
            }
            speed.push(v);
            factor.push(f);
        }
        Some(Self {
            cost,
            mapping: p.mapping.clone(),
            speed,
            factor,
        })
    }

    /// Predicted time of units `r` on stage `s`.
    fn predict(&self, s: usize, r: std::ops::Range<usize>) -> f64 {
        self.cost.range_ms(r) / self.speed[s] * self.factor[s]
    }

    /// Predicted bottleneck of `q`, a placement with the same stages on
    /// the same PEs but other cuts (`None` otherwise).
    fn bottleneck_of(&self, q: &Placement) -> Option<f64> {
        if q.mapping != self.mapping || q.units != self.cost.units() {
            return None;
        }
        Some(
            (0..q.stages())
                .map(|s| self.predict(s, q.range(s)))
                .fold(0.0, f64::max),
        )
    }

    /// The local-search move, sized: the bottleneck stage gives `k >= 1`
    /// of its boundary units to one neighbour, the neighbour and `k` that
    /// minimise the predicted bottleneck (ties: fewer units, then the
    /// neighbour [`neighbour_move`] would pick). `None` when
    /// no such move is predicted to cut the bottleneck by `improvement`.
    fn sized_move(&self, p: &Placement, times: &[f64], improvement: f64) -> Option<Placement> {
        let b = bottleneck_stage(times)?;
        let now = times[b];
        let r = p.range(b);
        let mut best: Option<(f64, Placement)> = None;
        // The faster neighbour first (ties: the later one), so it wins ties.
        let mut sides = [b.checked_sub(1), (b + 1 < p.stages()).then_some(b + 1)];
        if let [Some(l), Some(r)] = sides
            && times[l] >= times[r]
        {
            sides.swap(0, 1);
        }
        for to in sides.into_iter().flatten() {
            let others = times
                .iter()
                .enumerate()
                .filter(|&(s, _)| s != b && s != to)
                .fold(0.0, |m, (_, &t)| f64::max(m, t));
            let n = p.range(to);
            for k in 1..r.len() {
                let (keep, got) = if to < b {
                    (r.start + k..r.end, n.start..r.start + k)
                } else {
                    (r.start..r.end - k, r.end - k..n.end)
                };
                let predicted = others.max(self.predict(b, keep)).max(self.predict(to, got));
                if best.as_ref().is_none_or(|(m, _)| predicted < *m) {
                    let mut q = p.clone();
                    if to < b {
                        q.cuts[b - 1] += k;
                    } else {
                        q.cuts[b] -= k;
                    }
                    best = Some((predicted, q));
                }
            }
        }
        best.filter(|(m, _)| *m <= now * (1.0 - improvement))
            .map(|(_, q)| q)
    }
}

/// The stage with the largest of `times` (ties go to the later stage).
fn bottleneck_stage(times: &[f64]) -> Option<usize> {
    (0..times.len()).max_by(|&x, &y| times[x].total_cmp(&times[y]).then(y.cmp(&x)))
}

/// The `odin` policy: a [`LocalSearch`] started by every detector event.
///
/// Onsets are remembered: the placement in force at the first one (the
/// origin) and the PEs they named. Besides the detector's smoothed view,
/// each PE's instantaneous signals say whether interference is present
/// right now (foreign CPU use, IPC and LLC MPKI against the best seen on
/// the PE). An onset for a PE that is already quiet again is dropped (the
/// interference ended before a candidate could be measured), and when
/// every PE named by an onset is quiet again, the first candidate of the
/// search that wins the throughput back is the origin itself: the search's
/// moves undone in one step, measured, and kept or reverted like any other
/// candidate, without waiting for the smoothed times to show the offset.
#[derive(Clone, Debug)]
pub struct Odin {
    search: LocalSearch,
    pending: bool,
    /// The placement in force at the first onset of the current spell.
    origin: Option<Placement>,
    /// PEs named by an onset since `origin`.
    hot: Vec<bool>,
    /// Per PE: the highest IPC and lowest LLC MPKI seen.
    best_ipc: Vec<Option<f64>>,
    best_mpki: Vec<Option<f64>>,
    /// The detector's thresholds, reused for the instantaneous signals.
    cpu_share: f64,
    ipc_drop: f64,
    mpki_rise: f64,
}

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
            cpu_share: cfg.detector.cpu_share,
            ipc_drop: cfg.detector.ipc_drop,
            mpki_rise: cfg.detector.mpki_rise,
        }
    }

    /// The search state.
    pub fn search(&self) -> &LocalSearch {
        &self.search
    }

    /// Learns each PE's best IPC and MPKI.
    fn learn(&mut self, obs: &Observation) {
        let pes = obs.pes.len();
        self.best_ipc.resize(pes, None);
        self.best_mpki.resize(pes, None);
        self.hot.resize(pes.max(self.hot.len()), false);
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
    /// needed to tell are missing.
    fn quiet(&self, obs: &Observation, pe: usize) -> bool {
        let Some(g) = obs.pes.get(pe) else {
            return false;
        };
        let speed = obs.pe_speed.get(pe).copied().filter(|v| *v > 0.0);
        let cpu_quiet = match (g.foreign_cpu_share, speed) {
            (Some(x), Some(v)) => x / v < self.cpu_share,
            _ => return false,
        };
        let ipc = g
            .ipc
            .zip(self.best_ipc[pe])
            .map(|(i, b)| i >= b * (1.0 - self.ipc_drop));
        let mpki = g
            .llc_mpki
            .zip(self.best_mpki[pe])
            .map(|(m, b)| m <= b * (1.0 + self.mpki_rise).max(b + 1e-9));
        let cache_quiet = match (ipc, mpki) {
            (None, None) => return false,
            (i, m) => i.unwrap_or(true) && m.unwrap_or(true),
        };
        cpu_quiet && cache_quiet
    }
}

impl Policy for Odin {
    fn name(&self) -> &'static str {
        "odin"
    }

    fn decide(&mut self, obs: &Observation) -> Action {
        self.learn(obs);
        for e in &obs.events {
            match *e {
                Event::Onset { pe, .. } => {
                    if self.quiet(obs, pe) {
                        // Over before anything could be measured: nothing to do.
                        continue;
                    }
                    if pe < self.hot.len() {
                        self.hot[pe] = true;
                    }
                    self.origin.get_or_insert_with(|| obs.placement.clone());
                    self.pending = true;
                }
                Event::Offset { pe, .. } => {
                    if let Some(h) = self.hot.get_mut(pe) {
                        *h = false;
                    }
                    if !self.hot.contains(&true) {
                        self.origin = None;
                    }
                    self.pending = true;
                }
            }
        }
        if self.hot.contains(&true)
            && (0..self.hot.len())
                .filter(|&p| self.hot[p])
                .all(|p| self.quiet(obs, p))
        {
            // The interference that moved us is gone: undo the moves.
            self.hot.iter_mut().for_each(|h| *h = false);
            if let Some(origin) = self.origin.take()
                && self.search.is_active()
                && origin.units == obs.placement.units
                && origin.mapping == obs.placement.mapping
                && origin != obs.placement
            {
                self.pending = false;
                return self.search.try_placement(obs, origin);
            }
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
    use crate::policy::detector::Event;
    use crate::policy::testutil;

    use testutil::onset;

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
        drive_with(policy, unit_ms, start, slowdown, events, ticks, |_| {})
    }

    /// [`drive`], with `edit` applied to every observation.
    fn drive_with(
        policy: &mut dyn Policy,
        unit_ms: &[f64],
        start: Placement,
        slowdown: &[f64],
        events: Vec<Event>,
        ticks: usize,
        edit: impl Fn(&mut Observation),
    ) -> (Placement, Vec<Placement>) {
        let speed = vec![1.0; slowdown.len()];
        let mut cur = start;
        let mut applied = Vec::new();
        let mut events = Some(events);
        for t in 0..ticks {
            let mut o = testutil::obs(unit_ms, &speed, cur.clone(), slowdown, t as u64 * 4);
            o.events = events.take().unwrap_or_default();
            edit(&mut o);
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

    /// Without unit costs the step cannot be predicted: one unit at a time.
    fn blind(o: &mut Observation) {
        o.unit_ms.clear();
    }

    /// PE signals of an interfered (`foreign` CPUs used by others) or
    /// quiet (`foreign` 0) PE with our stage on it.
    fn signals(foreign: f64) -> crate::policy::PeSignals {
        crate::policy::PeSignals {
            ipc: Some(2.0),
            llc_mpki: Some(1.0),
            foreign_cpu_share: Some(foreign),
            ..Default::default()
        }
    }

    #[test]
    fn the_step_is_sized_and_directed_by_the_measured_slowdowns() {
        let cfg = PolicyConfig::default();
        // 30 equal units, PE 0 four times slower: 60 ms against 15 ms. Nine units
        // balance it (6 x 4 = 24 = 15 + 9), in one step.
        let unit_ms = [1.0; 30];
        let p = testutil::placement(30, &[15]);
        let mut o = testutil::obs(&unit_ms, &[1.0; 2], p.clone(), &[4.0, 1.0], 0);
        o.events = vec![onset(0)];
        let Action::Apply(c) = Odin::new(&cfg).decide(&o) else {
            panic!()
        };
        assert_eq!(c.cuts, vec![6]);
        // Stage 0 (2 units, PE 0 2.4x slower) measures 4.8 ms, less than stage 2 (3
        // units, PE 2 1.7x: 5.1 ms), so the unit-by-unit move gives stage 1's unit to
        // stage 0 (7.2 ms); the slowdowns say stage 2 takes it better (6.8 ms).
        let unit_ms = [1.0; 9];
        let p = testutil::placement(9, &[2, 6]);
        let slow = [2.4, 2.0, 1.7];
        let mut o = testutil::obs(&unit_ms, &[1.0; 3], p.clone(), &slow, 0);
        let times: Vec<f64> = measured_times(&o).into_iter().flatten().collect();
        assert_eq!(neighbour_move(&p, &times).unwrap().cuts, vec![3, 6]);
        o.events = vec![onset(1)];
        let Action::Apply(c) = Odin::new(&cfg).decide(&o) else {
            panic!()
        };
        assert_eq!(c.cuts, vec![2, 5]);
        // No move is predicted to help (stage 1 holds one unit, its neighbours would
        // be slower than it is): nothing is tried and the search ends.
        let p = testutil::placement(9, &[4, 5]);
        let mut o = testutil::obs(&unit_ms, &[1.0; 3], p, &[1.0, 3.0, 1.0], 0);
        o.events = vec![onset(1)];
        let mut odin = Odin::new(&cfg);
        assert_eq!(odin.decide(&o), Action::Keep);
        assert!(!odin.search().is_active());
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
    fn a_candidate_is_judged_only_once_its_times_have_settled() {
        let mut odin = Odin::new(&PolicyConfig::default());
        let unit_ms = [1.0; 9];
        let slow = [1.0, 2.0, 1.0];
        let mut o = testutil::obs(
            &unit_ms,
            &[1.0; 3],
            testutil::placement(9, &[3, 6]),
            &slow,
            0,
        );
        o.events = vec![onset(1)];
        let Action::Apply(c) = odin.decide(&o) else {
            panic!()
        };
        let under = |frames: u64, stage2: f64| {
            let mut o = testutil::obs(&unit_ms, &[1.0; 3], c.clone(), &slow, frames);
            o.stages[2].service_ms = Some(stage2);
            o
        };
        // Stage 2's smoothed time still climbs over 1% a frame after candidate_frames:
        // not judged until it stops drifting (at 4 ms, from frame 21).
        let mut judged = None;
        for f in (1..=41).step_by(2) {
            let a = odin.decide(&under(f, (3.0 + 0.05 * f as f64).min(4.0)));
            assert_eq!(a, Action::Keep, "{f}");
            if !odin.search().is_measuring() {
                judged = Some(f);
                break;
            }
        }
        assert_eq!(judged, Some(23), "kept, and no further move helps");
        assert!(!odin.search().is_active());
        // And never later than MAX_WAIT x candidate_frames.
        let mut odin = Odin::new(&PolicyConfig::default());
        let mut o = testutil::obs(
            &unit_ms,
            &[1.0; 3],
            testutil::placement(9, &[3, 6]),
            &slow,
            0,
        );
        o.events = vec![onset(1)];
        odin.decide(&o);
        let mut judged = None;
        for f in 1..=50u64 {
            odin.decide(&under(f, 3.0 + f as f64 * 0.1));
            if !odin.search().is_measuring() {
                judged = Some(f);
                break;
            }
        }
        assert_eq!(judged, Some(1 + MAX_WAIT * 10));
    }

    #[test]
    fn a_candidate_that_does_not_improve_is_reverted_and_the_search_stops() {
        let cfg = PolicyConfig::default();
        let mut odin = Odin::new(&cfg);
        let unit_ms = [1.0; 9];
        let start = testutil::placement(9, &[3, 6]);
        // PE 1 slowed 2x: stage 1 gives a unit to stage 2 (4 ms each, predicted)...
        let mut o = testutil::obs(&unit_ms, &[1.0; 3], start.clone(), &[1.0, 2.0, 1.0], 0);
        o.events = vec![onset(1)];
        let Action::Apply(c) = odin.decide(&o) else {
            panic!()
        };
        assert_eq!(c.cuts, vec![3, 5]);
        // ...but PE 2 turns out three times slower under the candidate: 12 ms, worse
        // than the 9 ms the placement before would take now: reverted.
        let slow = [1.0, 2.0, 3.0];
        let mut applied = Vec::new();
        let mut cur = c;
        for f in 1..20 {
            let o = testutil::obs(&unit_ms, &[1.0; 3], cur.clone(), &slow, f * 4);
            if let Action::Apply(p) = odin.decide(&o) {
                applied.push(p.clone());
                cur = p;
            }
        }
        assert_eq!(applied, vec![start], "reverted to the placement before");
        assert!(!odin.search().is_active(), "and the search stopped");
        assert_eq!(odin.search().steps(), 1);
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
}
