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
//! Pure: no OS calls.

use super::config::PolicyConfig;
use super::cost::{
    CostModel, foreign_slowdown, measured_bottleneck, measured_times, pe_slowdown, sharing,
};
use super::detector::{DetectorConfig, Event, Kind};
use super::{Action, Observation, Placement, Policy};

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
    pub fn limit(&self, stages: usize) -> u32 {
        let scaled = (self.alpha_per_stage * stages as f64).ceil();
        if scaled.is_finite() && scaled > f64::from(self.alpha) {
            scaled.min(f64::from(u32::MAX)) as u32
        } else {
            self.alpha
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

/// The local-search move without unit costs: the bottleneck stage (largest
/// of `times`, one per stage) gives its boundary unit to whichever
/// neighbour has the smaller time (ties go to the later stage). `None` when
/// the bottleneck holds a single unit or has no neighbour.
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

/// What the measurements say about each PE: how much slower our stages
/// run there than on an idle PE of its speed, so the stage times of any
/// placement can be predicted.
#[derive(Clone, Debug)]
struct Slowdowns {
    cost: CostModel,
    /// Per PE: nominal speed.
    speed: Vec<f64>,
    /// Per PE: slowdown (1 = undisturbed).
    slow: Vec<f64>,
    /// Per PE: whether `slow` was measured on it now.
    measured: Vec<bool>,
}

impl Slowdowns {
    /// The slowdowns under `obs.placement` from the measured `times` (one
    /// per stage): per PE, its stages' time over their idle time, our own
    /// time-sharing taken out. A PE with no measurable stage keeps what
    /// `memory` says, or `1 + foreign CPU use / speed` when that is worse.
    /// `None` when the unit costs or speeds do not fit.
    fn measure(obs: &Observation, times: &[f64], memory: &[Option<f64>]) -> Option<Self> {
        let p = &obs.placement;
        let pes = obs.pe_speed.len();
        if obs.unit_ms.len() != p.units || times.len() != p.stages() || !p.is_valid(pes) {
            return None;
        }
        if obs.pe_speed.iter().any(|v| !(*v > 0.0 && v.is_finite())) {
            return None;
        }
        let cost = CostModel::new(&obs.unit_ms);
        let samples = times.iter().enumerate().map(|(s, &t)| {
            let pe = p.mapping[s];
            (pe, t, cost.range_ms(p.range(s)) / obs.pe_speed[pe])
        });
        let mut slow = Vec::with_capacity(pes);
        let mut measured = Vec::with_capacity(pes);
        for (pe, f) in pe_slowdown(p, pes, samples).into_iter().enumerate() {
            if let Some(f) = f {
                if !(f.is_finite() && f > 0.0) {
                    return None;
                }
                slow.push(f);
                measured.push(true);
            } else {
                let seen = foreign_slowdown(obs, pe).unwrap_or(1.0);
                slow.push(memory.get(pe).copied().flatten().unwrap_or(1.0).max(seen));
                measured.push(false);
            }
        }
        Some(Self {
            cost,
            speed: obs.pe_speed.clone(),
            slow,
            measured,
        })
    }

    /// Milliseconds per millisecond of idle-reference cost on PE `pe`
    /// shared by `k` of our stages.
    fn weight(&self, pe: usize, k: usize) -> f64 {
        self.slow[pe] * k.max(1) as f64 / self.speed[pe]
    }

    /// Predicted stage times of `q`.
    fn stage_times(&self, q: &Placement) -> Vec<f64> {
        let shared = sharing(q, self.speed.len());
        (0..q.stages())
            .map(|s| {
                let pe = q.mapping[s];
                self.cost.range_ms(q.range(s)) * self.weight(pe, shared[pe])
            })
            .collect()
    }

    /// Predicted bottleneck of `q` (`None` if it does not fit).
    fn bottleneck_of(&self, q: &Placement) -> Option<f64> {
        if q.units != self.cost.units() || !q.is_valid(self.speed.len()) {
            return None;
        }
        Some(self.stage_times(q).into_iter().fold(0.0, f64::max))
    }

    /// The step: the bottleneck stage's best local move (see the module
    /// doc), `None` when none is predicted to cut the bottleneck by
    /// `improvement`. `saturated`: frames queue up ahead of the bottleneck
    /// (see [`latency`]).
    fn best_move(
        &self,
        p: &Placement,
        times: &[f64],
        improvement: f64,
        saturated: bool,
        rejected: &[Placement],
    ) -> Option<Placement> {
        let b = bottleneck_stage(times)?;
        let now = times[b];
        let n = p.stages();
        // (predicted bottleneck, predicted latency, work moved, placement)
        let mut moves: Vec<(f64, f64, f64, Placement)> = Vec::new();
        let mut consider = |q: Placement, moved: f64| {
            if rejected.contains(&q) {
                return;
            }
            let t = self.stage_times(&q);
            let worst = t.iter().copied().fold(0.0, f64::max);
            moves.push((worst, latency(&t, saturated), moved, q));
        };
        // Shed work along the chain: re-cut each window i..=j around b.
        for i in 0..=b {
            for j in b.max(i + 1)..n {
                if let Some((q, moved)) = self.recut_window(p, i, j) {
                    consider(q, moved);
                }
            }
        }
        // Trade PEs with another stage (an idle PE when that stage is empty),
        // alone or with the stages between the two re-cut for their new PEs.
        for t in (0..n).filter(|&t| t != b && p.mapping[t] != p.mapping[b]) {
            let mut q = p.clone();
            q.mapping.swap(b, t);
            let moved = self.cost.range_ms(p.range(b)) + self.cost.range_ms(p.range(t));
            if let Some((r, more)) = self.recut_window(&q, b.min(t), b.max(t)) {
                consider(r, moved + more);
            }
            consider(q, moved);
        }
        let best = moves.iter().map(|m| m.0).fold(f64::INFINITY, f64::min);
        if best.is_nan() || best > now * (1.0 - improvement) {
            return None;
        }
        // Within half the improvement of the best bottleneck, the lowest
        // latency (within as much), then the least work moved.
        moves
            .into_iter()
            .filter(|m| m.0 <= best * (1.0 + improvement / 2.0))
            .min_by(|x, y| {
                x.2.total_cmp(&y.2)
                    .then(x.1.total_cmp(&y.1))
                    .then(x.0.total_cmp(&y.0))
            })
            .map(|m| m.3)
    }

    /// `p` with stages `i..=j` re-cut for the lowest predicted time (see
    /// [`recut`]), and the reference cost of the units that changed stage;
    /// `None` when the cuts stay.
    fn recut_window(&self, p: &Placement, i: usize, j: usize) -> Option<(Placement, f64)> {
        let shared = sharing(p, self.speed.len());
        let current = self.stage_times(p);
        let outside = (0..p.stages())
            .filter(|s| !(i..=j).contains(s))
            .map(|s| current[s])
            .fold(0.0, f64::max);
        let w: Vec<f64> = (i..=j)
            .map(|s| self.weight(p.mapping[s], shared[p.mapping[s]]))
            .collect();
        let (lo, hi) = (p.range(i).start, p.range(j).end);
        let cuts = recut(&self.cost, &w, lo, hi, &p.cuts[i..j], outside);
        if cuts[..] == p.cuts[i..j] {
            return None;
        }
        let moved = cuts
            .iter()
            .zip(&p.cuts[i..j])
            .map(|(&a, &o)| self.cost.range_ms(a.min(o)..a.max(o)))
            .sum();
        let mut q = p.clone();
        q.cuts[i..j].copy_from_slice(&cuts);
        Some((q, moved))
    }
}

/// Predicted latency of a pipeline with stage times `times`: their sum,
/// plus, when `saturated` (frames arrive as fast as the bottleneck takes
/// them), the frames waiting ahead of the bottleneck, two per stage before
/// it (one in service, blocked, and one in its queue), each a bottleneck
/// time: the earlier the bottleneck, the shorter the wait.
fn latency(times: &[f64], saturated: bool) -> f64 {
    let sum: f64 = times.iter().sum();
    if !saturated {
        return sum;
    }
    let worst = times.iter().copied().fold(0.0, f64::max);
    let k = times
        .iter()
        .rposition(|&t| t >= worst * (1.0 - 1e-6))
        .unwrap_or(0);
    sum + 2.0 * k as f64 * worst
}

/// Re-cuts units `lo..hi` over the stages of a window, whose times are
/// `w[s]` times their units' reference cost, for the lowest largest stage
/// time (but never below `floor`, the bottleneck outside the window),
/// choosing among the cuts that achieve it those closest to `old` (the
/// window's `w.len() - 1` cuts in force). Stages may end up empty.
fn recut(
    cost: &CostModel,
    w: &[f64],
    lo: usize,
    hi: usize,
    old: &[usize],
    floor: f64,
) -> Vec<usize> {
    // Furthest end `e` from `start` with units start..e within `limit` on weight `ws`.
    let reach = |start: usize, ws: f64, limit: f64| {
        let mut e = start;
        while e < hi && cost.range_ms(start..e + 1) * ws <= limit {
            e += 1;
        }
        e
    };
    let fits = |limit: f64| w.iter().fold(lo, |pos, &ws| reach(pos, ws, limit)) >= hi;
    let max_w = w.iter().copied().fold(0.0, f64::max);
    let (mut below, mut above) = (0.0, cost.range_ms(lo..hi) * max_w);
    for _ in 0..60 {
        let mid = 0.5 * (below + above);
        if fits(mid) {
            above = mid;
        } else {
            below = mid;
        }
    }
    let limit = above.max(floor) * (1.0 + 1e-9);
    // Earliest each cut may sit for the rest of the window to fit after it.
    let mut earliest = vec![lo; old.len()];
    let mut pos = hi;
    for k in (1..w.len()).rev() {
        let mut s = pos;
        while s > lo && cost.range_ms(s - 1..pos) * w[k] <= limit {
            s -= 1;
        }
        pos = s;
        earliest[k - 1] = pos;
    }
    let mut cuts = Vec::with_capacity(old.len());
    let mut prev = lo;
    for (k, &o) in old.iter().enumerate() {
        let latest = reach(prev, w[k], limit);
        let c = o.clamp(earliest[k].max(prev).min(latest), latest);
        cuts.push(c);
        prev = c;
    }
    cuts
}

/// The stage with the largest of `times` (ties go to the later stage).
fn bottleneck_stage(times: &[f64]) -> Option<usize> {
    (0..times.len()).max_by(|&x, &y| times[x].total_cmp(&times[y]).then(y.cmp(&x)))
}

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

    #[test]
    fn work_ripples_along_the_chain_and_a_crippled_pe_is_left_unused() {
        // PE 2 four times slower: 2, 2, 8 ms. Stage 2 giving one unit to stage 1 gives
        // 4 ms; the chain shifting (stage 1 passing a unit on to stage 0) and stage 2
        // left empty gives 3 ms, in one step.
        let unit_ms = [1.0; 6];
        let p = testutil::placement(6, &[2, 4]);
        let mut o = testutil::obs(&unit_ms, &[1.0; 3], p, &[1.0, 1.0, 4.0], 0);
        o.events = vec![onset(2)];
        let mut odin = Odin::new(&PolicyConfig::default());
        let Action::Apply(c) = odin.decide(&o) else {
            panic!()
        };
        assert_eq!(c.cuts, vec![3, 6]);
        assert_eq!(c.mapping, vec![0, 1, 2]);
        assert!(c.range(2).is_empty(), "{c:?}");
        // Kept: 3 ms against 8. PE 2 runs nothing now; what was measured on it is
        // remembered, so nothing is moved back onto it.
        let (end, applied) = drive(&mut odin, &unit_ms, c.clone(), &[1.0, 1.0, 4.0], vec![], 40);
        assert!(applied.is_empty(), "{applied:?}");
        assert_eq!(end, c);
        assert_eq!(odin.search().remembered(2), Some(4.0));
    }

    #[test]
    fn a_slowed_stage_moves_whole_to_an_idle_pe() {
        // Three stages on PEs 0..3, PE 3 idle (an empty fourth stage); PE 1 slowed 3x.
        let unit_ms = [1.0; 12];
        let p = testutil::placement(12, &[4, 8, 12]);
        let mut o = testutil::obs(&unit_ms, &[1.0; 4], p, &[1.0, 3.0, 1.0, 1.0], 0);
        o.events = vec![onset(1)];
        let Action::Apply(c) = Odin::new(&PolicyConfig::default()).decide(&o) else {
            panic!()
        };
        assert_eq!(c.cuts, vec![4, 8, 12], "the cuts stay");
        assert_eq!(
            c.mapping,
            vec![0, 3, 2, 1],
            "stage 1 trades PEs with the idle stage"
        );
        // An idle PE that a CPU hog uses is no refuge: the chain sheds work instead.
        let p = testutil::placement(12, &[4, 8, 12]);
        let mut o = testutil::obs(&unit_ms, &[1.0; 4], p, &[1.0, 3.0, 1.0, 1.0], 0);
        o.pes[3].foreign_cpu_share = Some(4.0);
        o.events = vec![onset(1)];
        let Action::Apply(c) = Odin::new(&PolicyConfig::default()).decide(&o) else {
            panic!()
        };
        assert_eq!(c.mapping, vec![0, 1, 2, 3], "{c:?}");
        assert_ne!(c.cuts, vec![4, 8, 12]);
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
    fn recut_balances_the_window_and_keeps_close_to_the_old_cuts() {
        let cost = CostModel::new(&[1.0; 8]);
        // Two stages, the first twice as slow: 3 units there (6), 5 on the second (5).
        assert_eq!(recut(&cost, &[2.0, 1.0], 0, 8, &[4], 0.0), vec![3]);
        // Never balanced below the bottleneck outside the window: with 7 ms elsewhere,
        // the old cut (4: 8 and 4 ms) moves only as far as it must (3: 6 and 5 ms).
        assert_eq!(recut(&cost, &[2.0, 1.0], 0, 8, &[4], 7.0), vec![3]);
        // Equal stages, floor 6: cuts anywhere in 2..=6 fit; the old one stays.
        assert_eq!(recut(&cost, &[1.0, 1.0], 0, 8, &[5], 6.0), vec![5]);
        // A stage too slow for even one unit is left empty.
        assert_eq!(
            recut(&cost, &[1.0, 9.0, 1.0], 0, 8, &[3, 5], 0.0),
            vec![4, 4]
        );
    }
}
