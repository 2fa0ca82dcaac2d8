//! The live monitor: every tick, the pipeline's stage threads and PEs read
//! from `/proc` and the counters, turned into the detector's
//! [`StageSignals`] and [`PeSignals`].
//!
//! Per stage thread: `schedstat` (run-queue delay share) and, where the
//! machine has a PMU, a hardware counter group (IPC, LLC MPKI). Per PE:
//! busy ticks of its CPUs from `/proc/stat` minus what odin's own threads
//! ran there is the foreign CPU use; only when some PE shows foreign use
//! (or run delay) does the observer walk every task to name the
//! antagonists, since the walk is the expensive part of a tick.
//!
//! Expected stage times come from the unit cost profile scaled per PE by a
//! calibration factor (measured / modelled) taken by [`Observer::calibrate`]
//! while the pipeline runs undisturbed.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::time::Instant;

use super::antagonists::{self, AntagonistFilter};
use super::derive::{self, thread_shares};
use super::perf::{CounterSource, CounterSupport, GroupHandle, GroupKind, Target};
use super::procfs::ProcReader;
use super::sample::{CounterValues, ProcStat, Schedstat, TaskSnapshot};
use crate::cpulist::CpuSet;
use crate::policy::{Antagonist, PeSignals, StageSignals};

/// Foreign CPU use (in CPUs) or run-delay share above which the observer
/// names the antagonists.
const WALK_THRESHOLD: f64 = 0.05;

/// One stage as the observer needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct StageView {
    /// Kernel thread id of the stage thread.
    pub tid: i32,
    /// Index of the PE it runs on.
    pub pe: usize,
    /// Its units under the current partition.
    pub units: Range<usize>,
    /// Smoothed service time, milliseconds (`None` before any frame).
    pub service_ms: Option<f64>,
}

struct Previous {
    at: Instant,
    stat: Option<ProcStat>,
    sched: BTreeMap<i32, Schedstat>,
    own: BTreeMap<i32, (Schedstat, usize)>,
    counters: BTreeMap<i32, CounterValues>,
}

/// Samples the machine for the detector.
pub struct Observer {
    proc: ProcReader,
    counters: Box<dyn CounterSource>,
    hardware: bool,
    groups: BTreeMap<i32, Option<GroupHandle>>,
    pes: Vec<CpuSet>,
    unit_ms: Vec<f64>,
    calibration: Vec<Option<f64>>,
    own_pid: i32,
    prev: Option<Previous>,
    walk: Option<(Instant, TaskSnapshot)>,
    pressure: Option<f64>,
    naming: bool,
}

impl Observer {
    /// An observer of the PEs `pes` for a model whose units cost `unit_ms`
    /// (on a reference PE). `support` says whether hardware counters are
    /// worth opening.
    pub fn new(
        proc: ProcReader,
        counters: Box<dyn CounterSource>,
        support: &CounterSupport,
        pes: Vec<CpuSet>,
        unit_ms: Vec<f64>,
    ) -> Self {
        let n = pes.len();
        Self {
            proc,
            counters,
            hardware: support.has_hardware(),
            groups: BTreeMap::new(),
            pes,
            unit_ms,
            calibration: vec![None; n],
            own_pid: std::process::id() as i32,
            prev: None,
            walk: None,
            pressure: None,
            naming: true,
        }
    }

    /// Whether to walk every task to name the antagonists when a PE shows
    /// foreign use (on by default; the walk is the costly part of a tick).
    pub fn set_naming(&mut self, on: bool) {
        self.naming = on;
    }

    /// Machine-wide CPU pressure (PSI `some avg10`, percent), if the kernel has PSI.
    pub fn pressure(&self) -> Option<f64> {
        self.pressure
    }

    /// The calibration factor of each PE (measured / modelled time).
    pub fn calibration(&self) -> &[Option<f64>] {
        &self.calibration
    }

    fn model_ms(&self, units: &Range<usize>) -> f64 {
        self.unit_ms
            .get(units.clone())
            .map_or(0.0, |u| u.iter().sum())
    }

    /// Takes every PE's factor from the stages' current service times: the
    /// expectation becomes "as fast as now". Call while nothing interferes
    /// (after warm-up, and after an accepted reconfiguration when the
    /// detector reports no interference).
    pub fn calibrate(&mut self, stages: &[StageView]) {
        let mut per_pe: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
        for s in stages {
            let model = self.model_ms(&s.units);
            if let Some(ms) = s.service_ms
                && model > 0.0
                && ms > 0.0
            {
                per_pe.entry(s.pe).or_default().push(ms / model);
            }
        }
        for (pe, mut f) in per_pe {
            if let Some(slot) = self.calibration.get_mut(pe) {
                *slot = Some(crate::engine::profile::median(&mut f));
            }
        }
    }

    /// One tick: reads everything, returns the signals. Failures of single
    /// sources leave their signals `None`; they never fail the tick.
    pub fn tick(
        &mut self,
        stages: &[StageView],
        now: Instant,
    ) -> (Vec<StageSignals>, Vec<PeSignals>) {
        let stat = self.proc.stat().ok();
        self.pressure = self
            .proc
            .cpu_pressure()
            .ok()
            .flatten()
            .map(|p| p.some.avg10);
        let mut sched = BTreeMap::new();
        let mut counters = BTreeMap::new();
        for s in stages {
            if let Ok(v) = self.proc.schedstat(self.own_pid, s.tid) {
                sched.insert(s.tid, v);
            }
            if let Some(c) = self.read_counters(s.tid) {
                counters.insert(s.tid, c);
            }
        }
        let own = self.own_threads();
        let mut pes = vec![PeSignals::default(); self.pes.len()];
        let stage_signals = stages
            .iter()
            .map(|s| {
                let expected = match self.calibration.get(s.pe).copied().flatten() {
                    Some(f) => self.model_ms(&s.units) * f,
                    // Not calibrated yet: no slowdown can be claimed.
                    None => s.service_ms.unwrap_or(0.0),
                };
                StageSignals {
                    pe: s.pe,
                    service_ms: s.service_ms,
                    expected_ms: expected,
                }
            })
            .collect();
        let mut walk_wanted = false;
        if let Some(prev) = &self.prev {
            let dt = now.saturating_duration_since(prev.at);
            for s in stages {
                let Some(pe) = pes.get_mut(s.pe) else {
                    continue;
                };
                if let (Some(a), Some(b)) = (prev.sched.get(&s.tid), sched.get(&s.tid))
                    && let Some(sh) = thread_shares(a, b, dt)
                {
                    pe.run_delay_share = Some(pe.run_delay_share.unwrap_or(0.0).max(sh.run_delay));
                }
                if let (Some(a), Some(b)) = (prev.counters.get(&s.tid), counters.get(&s.tid)) {
                    pe.ipc = derive::ipc(a, b).or(pe.ipc);
                    pe.llc_mpki = derive::llc_mpki(a, b).or(pe.llc_mpki);
                }
            }
            if let (Some(a), Some(b)) = (&prev.stat, &stat) {
                for (i, cpus) in self.pes.iter().enumerate() {
                    let Some(busy) = derive::pe_cpu_shares(a, b, cpus) else {
                        continue;
                    };
                    let busy_cpus = busy.busy * cpus.len() as f64;
                    let ours: f64 = own
                        .iter()
                        .filter(|(_, (_, cpu))| cpus.contains(*cpu))
                        .filter_map(|(tid, (cur, _))| {
                            let (old, _) = prev.own.get(tid)?;
                            thread_shares(old, cur, dt).map(|s| s.cpu)
                        })
                        .sum();
                    pes[i].foreign_cpu_share = Some((busy_cpus - ours).max(0.0));
                }
            }
            walk_wanted = pes.iter().any(|p| {
                p.foreign_cpu_share.unwrap_or(0.0) >= WALK_THRESHOLD
                    || p.run_delay_share.unwrap_or(0.0) >= WALK_THRESHOLD
            });
        }
        if walk_wanted && self.naming {
            self.name_antagonists(&mut pes, now);
        } else {
            // A stale snapshot would average a new antagonist over a long gap.
            self.walk = None;
        }
        self.prev = Some(Previous {
            at: now,
            stat,
            sched,
            own,
            counters,
        });
        (stage_signals, pes)
    }

    fn name_antagonists(&mut self, pes: &mut [PeSignals], now: Instant) {
        let Ok(walk) = self.proc.walk_tasks() else {
            return;
        };
        if let Some((at, prev)) = &self.walk {
            let dt = now.saturating_duration_since(*at);
            let filter = AntagonistFilter::new(self.own_pid);
            for (i, cpus) in self.pes.iter().enumerate() {
                pes[i].antagonists = antagonists::find(prev, &walk.snapshot, dt, cpus, &filter)
                    .into_iter()
                    .map(|a| Antagonist {
                        pid: a.pid,
                        tid: a.tid,
                        comm: a.comm,
                        cgroup: a.cgroup.map(|c| c.path),
                        cpu_share: a.share,
                    })
                    .collect();
            }
        }
        self.walk = Some((now, walk.snapshot));
    }

    /// odin's own threads: schedstat and the CPU each last ran on.
    fn own_threads(&self) -> BTreeMap<i32, (Schedstat, usize)> {
        let mut out = BTreeMap::new();
        for tid in self.proc.tids(self.own_pid).unwrap_or_default() {
            if let (Ok(s), Ok(st)) = (
                self.proc.schedstat(self.own_pid, tid),
                self.proc.task_stat(self.own_pid, tid),
            ) {
                out.insert(tid, (s, st.last_cpu));
            }
        }
        out
    }

    fn read_counters(&mut self, tid: i32) -> Option<CounterValues> {
        if !self.hardware {
            return None;
        }
        let counters = &mut self.counters;
        let handle = *self.groups.entry(tid).or_insert_with(|| {
            counters
                .open(Target::Thread(tid), GroupKind::Hardware)
                .map(|o| o.handle)
                .ok()
        });
        let sample = self.counters.read(handle?).ok()?;
        Some(CounterValues::from(&sample))
    }

    /// Stops counting threads that are no longer stages.
    pub fn forget_threads_except(&mut self, keep: &BTreeSet<i32>) {
        let gone: Vec<i32> = self
            .groups
            .keys()
            .filter(|t| !keep.contains(t))
            .copied()
            .collect();
        for tid in gone {
            if let Some(Some(h)) = self.groups.remove(&tid) {
                self.counters.close(h);
            }
        }
    }
}
