//! The simulated world: the pipeline and its PEs under a [`Timeline`],
//! driven by the same [`Observation`] -> [`Action`] loop as the real agent.
//!
//! Problem: reproduce what the real runtime does with frames, closely
//! enough that a policy cannot tell the worlds apart, and fast enough for
//! thousands of frames on 64 PEs.
//!
//! Approach: a discrete-event simulation ([`Des`]) at unit granularity.
//!
//! ```text
//!   admission (cap 2)    queue (cap 1)           queue (cap 1)
//!  ----[ ][ ]--> stage 0 -----[ ]----> stage 1 -----[ ]----> stage 2 --> done
//!                  |  runs units cursor..end_cut(0), one unit at a time
//!                  v
//!                PE mapping[0]: processor sharing among its running stages
//! ```
//!
//! - Frames carry a cursor, as in the real runtime: a stage runs the
//!   frame's units from its cursor while the cursor is below the stage's
//!   *current* end cut, re-reading the cut at every unit boundary, then
//!   forwards the frame. A new placement therefore takes effect at the next
//!   unit boundary and never loses or repeats a unit; a stage with nothing
//!   to run (an empty stage, or a frame already past its end) forwards the
//!   frame at once. A stage reads its PE when it starts a unit, so a remap
//!   also takes effect at the next unit boundary.
//! - Queues are bounded as in the runtime: the admission queue holds 2
//!   frames, each queue between stages 1; a stage whose downstream queue is
//!   full holds the finished frame (blocked, as a thread in `send`) and
//!   takes no new one. Closed loop keeps the admission queue full; open
//!   loop admits Poisson arrivals and rejects those that find it full.
//! - A unit `u` on PE `p` is `unit_ms[u]` of work at speed 1. PE `p` does
//!   `speed[p] / factor(p, u)` work per unit of time, shared equally among
//!   the stages running a unit on it (processor sharing: with k of them,
//!   each progresses k times slower). `factor(p, u) = (1 + sum of (f - 1)
//!   over cpu episodes on p) x (1 + sum of (f - 1) over cache/memory
//!   episodes on p x intensity[u])`, re-evaluated whenever an episode
//!   starts or ends, so an episode that begins mid-unit slows the rest of
//!   that unit.
//! - Every `tick_s` of virtual time the policy driver gets an
//!   [`Observation`] filled as the real monitor fills it (see
//!   [`World::observe`]) and may return a placement.
//!
//! Invariants: frames admitted = frames completed at the end; every
//! completed frame ran each unit exactly once (checked, counted in
//! [`RunResult::units_run`]). Deterministic: no wall clock enters the
//! simulation (only the reported decision time), and random arrivals come
//! from a seeded generator.

use std::collections::VecDeque;
use std::time::Instant;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::des::Des;
use super::scenario::{Interval, Timeline};
use crate::pipeline::source::Arrivals;
use crate::policy::{Action, Antagonist, Observation, PeSignals, Placement, Slo, StageSignals};
use crate::stats::percentile;

/// IPC of a stage thread on an undisturbed PE (synthetic counters).
const BASE_IPC: f64 = 2.0;
/// LLC misses per 1000 instructions on an undisturbed PE.
const BASE_MPKI: f64 = 1.0;
/// Work (ms at speed 1) below which a unit counts as finished: absorbs
/// rounding of the virtual clock.
const DONE_EPS_MS: f64 = 1e-9;

/// What drives the placement: the controller (detector + policy) in the
/// real runs, anything in tests.
pub trait Driver {
    /// One decision; may fill `obs.events`.
    fn step(&mut self, obs: &mut Observation) -> Action;
    /// Whether a candidate placement is being measured right now (odin's
    /// and guided's local search).
    fn exploring(&self) -> bool {
        false
    }
}

/// A driver that never changes anything.
pub struct Keep;

impl Driver for Keep {
    fn step(&mut self, _: &mut Observation) -> Action {
        Action::Keep
    }
}

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct WorldConfig {
    /// Milliseconds of each unit at speed 1.
    pub unit_ms: Vec<f64>,
    /// Memory intensity of each unit in `[0, 1]` (1 = the most memory-bound
    /// unit of the model).
    pub intensity: Vec<f64>,
    /// PE speeds and interference.
    pub timeline: Timeline,
    /// Where the run starts.
    pub initial: Placement,
    /// Arrivals.
    pub load: Arrivals,
    /// Frames to run (closed loop: admitted; open loop: arrivals).
    pub frames: u64,
    /// Policy tick, seconds of virtual time.
    pub tick_s: f64,
    /// The objective passed to the policy.
    pub slo: Slo,
    /// Admission queue capacity.
    pub admission_capacity: usize,
    /// Capacity of each queue between stages.
    pub queue_capacity: usize,
    /// Weight of the newest frame in a stage's smoothed service time.
    pub ewma_alpha: f64,
    /// Seed of the arrivals.
    pub seed: u64,
}

impl WorldConfig {
    /// The runtime's defaults: closed loop, admission 2, queues 1, EWMA 0.2,
    /// ticks of 100 ms.
    pub fn new(unit_ms: Vec<f64>, timeline: Timeline, initial: Placement, frames: u64) -> Self {
        let n = unit_ms.len();
        Self {
            unit_ms,
            intensity: vec![0.0; n],
            timeline,
            initial,
            load: Arrivals::Closed,
            frames,
            tick_s: 0.1,
            slo: Slo::default(),
            admission_capacity: 2,
            queue_capacity: 1,
            ewma_alpha: 0.2,
            seed: 0,
        }
    }
}

/// One policy tick as recorded.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TickRecord {
    /// End of the tick, seconds.
    pub t: f64,
    /// Frames completed in the tick per second.
    pub throughput_fps: f64,
    /// Median latency of the frames completed in the tick (None if none).
    pub p50_latency_ms: Option<f64>,
    /// 99th percentile latency of the frames completed in the tick.
    pub p99_latency_ms: Option<f64>,
    /// Frames completed since the start.
    pub frames_done: u64,
    /// The placement changed at this tick.
    pub reconfigured: bool,
    /// A candidate was being measured after this tick's decision.
    pub exploring: bool,
    /// Cut points in force after the decision.
    pub cuts: Vec<usize>,
    /// Stage-to-PE mapping in force after the decision.
    pub mapping: Vec<usize>,
}

/// What one run produced.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RunResult {
    /// Completion time (s) and latency (ms) of each frame, in completion order.
    pub completions: Vec<(f64, f64)>,
    /// Frames admitted.
    pub admitted: u64,
    /// Arrivals rejected because the admission queue was full (open loop).
    pub rejected: u64,
    /// Units run over all frames.
    pub units_run: u64,
    /// Placements applied.
    pub reconfigurations: u64,
    /// Placements the driver asked for that did not fit the world.
    pub invalid_actions: u64,
    /// Frames completed while a candidate was being measured.
    pub exploration_frames: u64,
    /// Decisions taken.
    pub decisions: u64,
    /// Wall time spent in decisions, seconds.
    pub decision_s: f64,
    /// Per tick.
    pub ticks: Vec<TickRecord>,
    /// Virtual time at the end, seconds.
    pub end_s: f64,
}

#[derive(Clone, Debug)]
struct Frame {
    admitted: f64,
    cursor: usize,
    ran: usize,
}

#[derive(Debug)]
struct Busy {
    frame: Frame,
    started: f64,
    ran: usize,
}

#[derive(Debug, Default)]
struct Stage {
    queue: VecDeque<Frame>,
    busy: Option<Busy>,
    blocked: Option<Frame>,
    ewma_ms: Option<f64>,
}

#[derive(Clone, Copy, Debug)]
struct Job {
    stage: usize,
    unit: usize,
    remaining_ms: f64,
}

#[derive(Debug, Default)]
struct Pe {
    speed: f64,
    cpu_excess: f64,
    mem_excess: f64,
    active: Vec<usize>,
    jobs: Vec<Job>,
    last: f64,
    version: u64,
}

impl Pe {
    fn factor(&self, intensity: f64) -> f64 {
        (1.0 + self.cpu_excess) * (1.0 + self.mem_excess * intensity)
    }

    /// Work (ms at speed 1) per second of virtual time for a job on `unit`.
    fn rate(&self, intensity: f64) -> f64 {
        1e3 * self.speed / (self.jobs.len() as f64 * self.factor(intensity))
    }
}

#[derive(Clone, Copy, Debug)]
enum Ev {
    UnitDone { pe: usize, version: u64 },
    Episode { interval: usize, start: bool },
    Tick,
    Arrival,
}

/// The simulated pipeline and PEs.
pub struct World {
    cfg: WorldConfig,
    des: Des<Ev>,
    placement: Placement,
    stages: Vec<Stage>,
    pes: Vec<Pe>,
    rng: ChaCha8Rng,
    arrivals: u64,
    mem_weight: f64,
    exploring: bool,
    tick_start: usize,
    out: RunResult,
}

impl World {
    /// A world at time 0 with the initial placement and empty queues.
    pub fn new(cfg: WorldConfig) -> Self {
        let n_pes = cfg.timeline.pe_speed.len();
        assert_eq!(
            cfg.intensity.len(),
            cfg.unit_ms.len(),
            "one intensity per unit"
        );
        assert!(
            cfg.initial.is_valid(n_pes) && cfg.initial.units == cfg.unit_ms.len(),
            "initial placement fits"
        );
        let total: f64 = cfg.unit_ms.iter().sum();
        let mem_weight = if total > 0.0 {
            cfg.unit_ms
                .iter()
                .zip(&cfg.intensity)
                .map(|(c, i)| c * i)
                .sum::<f64>()
                / total
        } else {
            0.0
        };
        let pes = cfg
            .timeline
            .pe_speed
            .iter()
            .map(|&speed| Pe {
                speed,
                ..Pe::default()
            })
            .collect();
        let stages = (0..cfg.initial.stages())
            .map(|_| Stage::default())
            .collect();
        Self {
            placement: cfg.initial.clone(),
            rng: ChaCha8Rng::seed_from_u64(cfg.seed ^ 0xa221_7a15),
            des: Des::new(),
            stages,
            pes,
            arrivals: 0,
            mem_weight,
            exploring: false,
            tick_start: 0,
            out: RunResult::default(),
            cfg,
        }
    }

    /// Runs every frame through under `driver` and returns the record.
    pub fn run(mut self, driver: &mut dyn Driver) -> RunResult {
        for (i, iv) in self.cfg.timeline.intervals.iter().enumerate() {
            self.des.at(
                iv.start_s,
                Ev::Episode {
                    interval: i,
                    start: true,
                },
            );
            self.des.at(
                iv.end_s,
                Ev::Episode {
                    interval: i,
                    start: false,
                },
            );
        }
        self.des.at(self.cfg.tick_s, Ev::Tick);
        if let Arrivals::Open { rate } = self.cfg.load {
            let gap = self.exp_gap(rate);
            self.des.at(gap, Ev::Arrival);
        }
        self.settle();
        while !self.finished() {
            let Some(ev) = self.des.pop() else {
                break;
            };
            match ev {
                Ev::UnitDone { pe, version } => {
                    if self.pes[pe].version == version {
                        self.unit_done(pe);
                    }
                }
                Ev::Episode { interval, start } => self.episode(interval, start),
                Ev::Tick => {
                    self.tick(driver);
                    let next = self.des.now() + self.cfg.tick_s;
                    self.des.at(next, Ev::Tick);
                }
                Ev::Arrival => {
                    self.arrivals += 1;
                    if self.stages[0].queue.len() < self.cfg.admission_capacity.max(1) {
                        self.admit();
                    } else {
                        self.out.rejected += 1;
                    }
                    if self.arrivals < self.cfg.frames
                        && let Arrivals::Open { rate } = self.cfg.load
                    {
                        let at = self.des.now() + self.exp_gap(rate);
                        self.des.at(at, Ev::Arrival);
                    }
                }
            }
            self.settle();
        }
        self.out.end_s = self.des.now();
        self.out
    }

    fn exp_gap(&mut self, rate: f64) -> f64 {
        let u: f64 = self.rng.random_range(f64::EPSILON..1.0);
        -u.ln() / rate
    }

    fn finished(&self) -> bool {
        let arrived = match self.cfg.load {
            Arrivals::Closed => self.out.admitted >= self.cfg.frames,
            Arrivals::Open { .. } => self.arrivals >= self.cfg.frames,
        };
        arrived && self.out.completions.len() as u64 == self.out.admitted
    }

    fn admit(&mut self) {
        self.out.admitted += 1;
        self.stages[0].queue.push_back(Frame {
            admitted: self.des.now(),
            cursor: 0,
            ran: 0,
        });
    }

    fn end_of(&self, s: usize) -> usize {
        self.placement.range(s).end
    }

    fn capacity(&self, s: usize) -> usize {
        if s == 0 {
            self.cfg.admission_capacity.max(1)
        } else {
            self.cfg.queue_capacity.max(1)
        }
    }

    /// Moves frames until nothing can move: blocked frames into freed
    /// queues, idle stages onto queued frames, admissions into the first
    /// queue.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            for s in (0..self.stages.len()).rev() {
                if let Some(f) = self.stages[s].blocked.take() {
                    if s + 1 < self.stages.len()
                        && self.stages[s + 1].queue.len() < self.capacity(s + 1)
                    {
                        self.stages[s + 1].queue.push_back(f);
                        moved = true;
                    } else {
                        self.stages[s].blocked = Some(f);
                    }
                }
                while self.stages[s].busy.is_none() && self.stages[s].blocked.is_none() {
                    let Some(f) = self.stages[s].queue.pop_front() else {
                        break;
                    };
                    moved = true;
                    self.begin(s, f);
                }
            }
            if self.cfg.load == Arrivals::Closed {
                while self.out.admitted < self.cfg.frames
                    && self.stages[0].queue.len() < self.capacity(0)
                {
                    self.admit();
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
    }

    /// Stage `s` takes `f`: runs its next unit, or forwards it if the
    /// stage has nothing to run for it.
    fn begin(&mut self, s: usize, f: Frame) {
        if f.cursor >= self.end_of(s) {
            self.forward(s, f);
            return;
        }
        let now = self.des.now();
        let unit = f.cursor;
        self.stages[s].busy = Some(Busy {
            frame: f,
            started: now,
            ran: 0,
        });
        self.start_unit(s, unit);
    }

    fn start_unit(&mut self, s: usize, unit: usize) {
        let pe = self.placement.mapping[s];
        self.advance(pe);
        self.pes[pe].jobs.push(Job {
            stage: s,
            unit,
            remaining_ms: self.cfg.unit_ms[unit],
        });
        self.reschedule(pe);
    }

    /// Frame `f` leaves stage `s`.
    fn forward(&mut self, s: usize, f: Frame) {
        if s + 1 == self.stages.len() {
            assert_eq!(f.cursor, self.cfg.unit_ms.len(), "a frame left unfinished");
            assert_eq!(f.ran, self.cfg.unit_ms.len(), "a unit lost or repeated");
            let now = self.des.now();
            self.out.units_run += f.ran as u64;
            self.out.completions.push((now, (now - f.admitted) * 1e3));
            if self.exploring {
                self.out.exploration_frames += 1;
            }
        } else if self.stages[s + 1].queue.len() < self.capacity(s + 1) {
            self.stages[s + 1].queue.push_back(f);
        } else {
            self.stages[s].blocked = Some(f);
        }
    }

    /// Brings PE `pe`'s jobs up to now.
    fn advance(&mut self, pe: usize) {
        let now = self.des.now();
        let p = &mut self.pes[pe];
        let dt = now - p.last;
        p.last = now;
        if dt <= 0.0 || p.jobs.is_empty() {
            return;
        }
        let rates: Vec<f64> = p
            .jobs
            .iter()
            .map(|j| p.rate(self.cfg.intensity[j.unit]))
            .collect();
        for (j, r) in p.jobs.iter_mut().zip(rates) {
            j.remaining_ms -= dt * r;
        }
    }

    /// Schedules PE `pe`'s next unit completion (after any change).
    fn reschedule(&mut self, pe: usize) {
        let p = &mut self.pes[pe];
        p.version += 1;
        let next = p
            .jobs
            .iter()
            .map(|j| j.remaining_ms.max(0.0) / p.rate(self.cfg.intensity[j.unit]))
            .fold(f64::INFINITY, f64::min);
        if next.is_finite() {
            let (at, version) = (self.des.now() + next, p.version);
            self.des.at(at, Ev::UnitDone { pe, version });
        }
    }

    fn unit_done(&mut self, pe: usize) {
        self.advance(pe);
        let mut done = Vec::new();
        let p = &mut self.pes[pe];
        // The job the event was scheduled for, and any that finish with it.
        let min = p
            .jobs
            .iter()
            .map(|j| j.remaining_ms)
            .fold(f64::INFINITY, f64::min);
        p.jobs.retain(|j| {
            let finished = j.remaining_ms <= DONE_EPS_MS.max(min);
            if finished {
                done.push(j.stage);
            }
            !finished
        });
        self.reschedule(pe);
        for s in done {
            let end = self.end_of(s);
            let now = self.des.now();
            let busy = self.stages[s].busy.as_mut().expect("a running stage");
            busy.frame.cursor += 1;
            busy.frame.ran += 1;
            busy.ran += 1;
            if busy.frame.cursor < end {
                let unit = busy.frame.cursor;
                self.start_unit(s, unit);
                continue;
            }
            let busy = self.stages[s].busy.take().expect("a running stage");
            let ms = (now - busy.started) * 1e3;
            let st = &mut self.stages[s];
            st.ewma_ms = Some(match st.ewma_ms {
                None => ms,
                Some(old) => self.cfg.ewma_alpha * ms + (1.0 - self.cfg.ewma_alpha) * old,
            });
            self.forward(s, busy.frame);
        }
    }

    fn episode(&mut self, interval: usize, start: bool) {
        let pe = self.cfg.timeline.intervals[interval].pe;
        self.advance(pe);
        let p = &mut self.pes[pe];
        if start {
            p.active.push(interval);
        } else {
            p.active.retain(|&i| i != interval);
        }
        let (mut cpu, mut mem) = (0.0, 0.0);
        for &i in &p.active {
            let iv: &Interval = &self.cfg.timeline.intervals[i];
            if iv.kind.is_memory_bound() {
                mem += iv.factor - 1.0;
            } else {
                cpu += iv.factor - 1.0;
            }
        }
        p.cpu_excess = cpu;
        p.mem_excess = mem;
        self.reschedule(pe);
    }

    /// Each PE's true effective speed: nominal over the current slowdown,
    /// cache/memory slowdown weighted by the model's cost-weighted mean
    /// intensity.
    fn true_speed(&self) -> Vec<f64> {
        self.pes
            .iter()
            .map(|p| p.speed / p.factor(self.mem_weight))
            .collect()
    }

    /// The observation the real monitor would produce now.
    ///
    /// - stages: PE, smoothed service time (EWMA over frames, kept while a
    ///   stage runs nothing, as the runtime does), expected time = the
    ///   stage's units at the PE's nominal speed.
    /// - PEs, from the episodes in force and the stages sharing the PE:
    ///   run-delay share `1 - 1/(f_cpu x k)` for k non-empty stages on it
    ///   (None when no stage runs there: no thread to read), foreign CPU
    ///   share `(1 - 1/f_cpu) x speed` CPUs, IPC `2 / f_mem` and LLC MPKI
    ///   `1 x f_mem` for stage threads on it; one synthetic antagonist per
    ///   CPU episode (cache/memory antagonists run on other CPUs of the
    ///   LLC, so the PE's CPUs show none).
    /// - frames done, throughput and p99 over the last tick, the SLO, the
    ///   placement, unit costs, nominal and true speeds.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "a synthetic pid per scenario interval, at most 100000 of them"
    )]
    pub fn observe(&self) -> Observation {
        let now = self.des.now();
        let mut sharing = vec![0usize; self.pes.len()];
        let stages = (0..self.placement.stages())
            .map(|s| {
                let r = self.placement.range(s);
                let pe = self.placement.mapping[s];
                if !r.is_empty() {
                    sharing[pe] += 1;
                }
                StageSignals {
                    pe,
                    service_ms: self.stages[s].ewma_ms,
                    expected_ms: self.cfg.unit_ms[r].iter().sum::<f64>() / self.pes[pe].speed,
                }
            })
            .collect();
        let pes = self
            .pes
            .iter()
            .zip(&sharing)
            .map(|(p, &k)| {
                let f_cpu = 1.0 + p.cpu_excess;
                let f_mem = 1.0 + p.mem_excess;
                let ours = k > 0;
                PeSignals {
                    ipc: ours.then_some(BASE_IPC / f_mem),
                    llc_mpki: ours.then_some(BASE_MPKI * f_mem),
                    run_delay_share: ours.then(|| 1.0 - 1.0 / (f_cpu * k as f64)),
                    foreign_cpu_share: Some((1.0 - 1.0 / f_cpu) * p.speed),
                    antagonists: p
                        .active
                        .iter()
                        .filter_map(|&i| {
                            let iv = &self.cfg.timeline.intervals[i];
                            (!iv.kind.is_memory_bound()).then(|| Antagonist {
                                pid: 100_000 + i as i32,
                                start: 0,
                                tid: 100_000 + i as i32,
                                comm: format!("sim-{}-hog", iv.kind),
                                cgroup: Some(format!("/sim.slice/antagonist-{i}.scope")),
                                cpu_share: 1.0 - 1.0 / iv.factor,
                            })
                        })
                        .collect(),
                }
            })
            .collect();
        let window = &self.out.completions[self.tick_start..];
        let mut lat: Vec<f64> = window.iter().map(|c| c.1).collect();
        lat.sort_by(f64::total_cmp);
        Observation {
            t: now,
            unit_ms: self.cfg.unit_ms.clone(),
            pe_speed: self.cfg.timeline.pe_speed.clone(),
            placement: self.placement.clone(),
            stages,
            pes,
            events: Vec::new(),
            frames_done: self.out.completions.len() as u64,
            throughput_fps: Some(window.len() as f64 / self.cfg.tick_s),
            p99_latency_ms: (!lat.is_empty()).then(|| percentile(&lat, 0.99)),
            slo: self.cfg.slo,
            true_speed: Some(self.true_speed()),
        }
    }

    fn tick(&mut self, driver: &mut dyn Driver) {
        let mut obs = self.observe();
        let window = &self.out.completions[self.tick_start..];
        let mut lat: Vec<f64> = window.iter().map(|c| c.1).collect();
        lat.sort_by(f64::total_cmp);
        let throughput_fps = window.len() as f64 / self.cfg.tick_s;
        let started = Instant::now();
        let action = driver.step(&mut obs);
        self.out.decision_s += started.elapsed().as_secs_f64();
        self.out.decisions += 1;
        self.exploring = driver.exploring();
        let mut reconfigured = false;
        if let Action::Apply(p) = action
            && p != self.placement
        {
            if p.units == self.cfg.unit_ms.len()
                && p.stages() == self.stages.len()
                && p.is_valid(self.pes.len())
            {
                self.placement = p;
                self.out.reconfigurations += 1;
                reconfigured = true;
            } else {
                self.out.invalid_actions += 1;
            }
        }
        self.out.ticks.push(TickRecord {
            t: self.des.now(),
            throughput_fps,
            p50_latency_ms: (!lat.is_empty()).then(|| percentile(&lat, 0.5)),
            p99_latency_ms: (!lat.is_empty()).then(|| percentile(&lat, 0.99)),
            frames_done: self.out.completions.len() as u64,
            reconfigured,
            exploring: self.exploring,
            cuts: self.placement.cuts.clone(),
            mapping: self.placement.mapping.clone(),
        });
        self.tick_start = self.out.completions.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::scenario::Kind;

    fn even(units: usize, stages: usize) -> Placement {
        Placement {
            units,
            cuts: (1..stages).map(|s| s * units / stages).collect(),
            mapping: (0..stages).collect(),
        }
    }

    fn timeline(speeds: Vec<f64>, intervals: Vec<Interval>) -> Timeline {
        Timeline {
            pe_speed: speeds,
            intervals,
        }
    }

    /// Cycles through placements, one per tick.
    struct Churn {
        placements: Vec<Placement>,
        i: usize,
    }

    impl Driver for Churn {
        fn step(&mut self, _: &mut Observation) -> Action {
            self.i += 1;
            Action::Apply(self.placements[self.i % self.placements.len()].clone())
        }
    }

    #[test]
    fn balanced_pipeline_runs_at_one_over_the_bottleneck() {
        let unit_ms = vec![5.0; 8];
        let cfg = WorldConfig::new(unit_ms, timeline(vec![1.0; 4], vec![]), even(8, 4), 500);
        let r = World::new(cfg).run(&mut Keep);
        assert_eq!(r.completions.len(), 500);
        let (t0, t1) = (r.completions[0].0, r.completions[499].0);
        let fps = 499.0 / (t1 - t0);
        assert!((fps - 100.0).abs() < 0.01, "{fps}");
        assert_eq!(r.units_run, 500 * 8);
    }

    #[test]
    fn frames_in_equal_frames_out_under_repeated_repartitions() {
        let units = 12;
        let unit_ms: Vec<f64> = (0..units).map(|u| 1.0 + (u % 5) as f64).collect();
        let placements = vec![
            even(units, 4),
            Placement {
                units,
                cuts: vec![1, 2, 11],
                mapping: vec![3, 2, 1, 0],
            },
            Placement {
                units,
                cuts: vec![6, 6, 6],
                mapping: vec![0, 1, 1, 2],
            },
            Placement {
                units,
                cuts: vec![0, 0, 12],
                mapping: vec![0, 0, 0, 0],
            },
            Placement {
                units,
                cuts: vec![3, 9, 10],
                mapping: vec![1, 1, 2, 2],
            },
        ];
        for load in [Arrivals::Closed, Arrivals::Open { rate: 50.0 }] {
            let mut cfg = WorldConfig::new(
                unit_ms.clone(),
                timeline(
                    vec![1.0, 2.0, 1.0, 0.5],
                    vec![Interval {
                        pe: 1,
                        start_s: 0.5,
                        end_s: 3.0,
                        factor: 3.0,
                        kind: Kind::Cpu,
                    }],
                ),
                even(units, 4),
                400,
            );
            cfg.load = load;
            cfg.tick_s = 0.013;
            cfg.intensity = (0..units).map(|u| u as f64 / units as f64).collect();
            let r = World::new(cfg).run(&mut Churn {
                placements: placements.clone(),
                i: 0,
            });
            assert_eq!(r.completions.len() as u64, r.admitted, "{load:?}");
            assert_eq!(r.units_run, r.admitted * units as u64, "{load:?}");
            assert!(r.reconfigurations > 50, "{}", r.reconfigurations);
            assert_eq!(r.invalid_actions, 0);
            if load == Arrivals::Closed {
                assert_eq!(r.admitted, 400);
            } else {
                assert_eq!(r.admitted + r.rejected, 400);
            }
        }
    }

    #[test]
    fn cpu_interference_slows_the_bottleneck_by_its_factor() {
        let unit_ms = vec![5.0; 8];
        let iv = Interval {
            pe: 2,
            start_s: 0.0,
            end_s: 1e9,
            factor: 2.0,
            kind: Kind::Cpu,
        };
        let cfg = WorldConfig::new(unit_ms, timeline(vec![1.0; 4], vec![iv]), even(8, 4), 300);
        let r = World::new(cfg).run(&mut Keep);
        let fps = 299.0 / (r.completions[299].0 - r.completions[0].0);
        assert!((fps - 50.0).abs() < 0.01, "{fps}");
    }

    #[test]
    fn cache_interference_scales_with_intensity_and_sharing_halves_speed() {
        // Two stages on one PE, one of them memory-bound: the PE alternates.
        let unit_ms = vec![10.0, 10.0];
        let iv = Interval {
            pe: 0,
            start_s: 0.0,
            end_s: 1e9,
            factor: 3.0,
            kind: Kind::Cache,
        };
        let mut cfg = WorldConfig::new(
            unit_ms,
            timeline(vec![1.0, 1.0], vec![iv]),
            Placement {
                units: 2,
                cuts: vec![1],
                mapping: vec![0, 0],
            },
            200,
        );
        cfg.intensity = vec![0.0, 0.5];
        let r = World::new(cfg).run(&mut Keep);
        // Unit 0: 10 ms of work, unit 1: 20 ms; one PE runs both per frame,
        // always busy. (First-to-last completion is exact within a frame.)
        let fps = 199.0 / (r.completions[199].0 - r.completions[0].0);
        assert!((fps - 1000.0 / 30.0).abs() < 0.2, "{fps}");
        // The second PE never ran anything.
        assert_eq!(r.units_run, 400);
    }

    #[test]
    fn observation_matches_the_world() {
        let unit_ms = vec![5.0; 8];
        let iv = Interval {
            pe: 1,
            start_s: 0.0,
            end_s: 1e9,
            factor: 4.0,
            kind: Kind::Cpu,
        };
        let mut cfg = WorldConfig::new(unit_ms, timeline(vec![1.0; 4], vec![iv]), even(8, 4), 100);
        cfg.tick_s = 0.5;
        struct Look(Vec<Observation>);
        impl Driver for Look {
            fn step(&mut self, obs: &mut Observation) -> Action {
                self.0.push(obs.clone());
                Action::Keep
            }
        }
        let mut look = Look(Vec::new());
        World::new(cfg).run(&mut look);
        let obs = look.0.last().unwrap();
        assert_eq!(obs.stages[1].expected_ms, 10.0);
        assert!((obs.stages[1].service_ms.unwrap() - 40.0).abs() < 1e-6);
        assert!((obs.pes[1].run_delay_share.unwrap() - 0.75).abs() < 1e-9);
        assert_eq!(obs.pes[0].run_delay_share, Some(0.0));
        assert_eq!(obs.pes[1].antagonists.len(), 1);
        assert_eq!(obs.true_speed.as_ref().unwrap()[1], 0.25);
        assert!((obs.throughput_fps.unwrap() - 25.0).abs() < 2.1);
    }
}
