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
//! Expected stage times come from the unit cost profile, calibrated by
//! [`Observer::calibrate`] while the pipeline runs undisturbed: each
//! stage's measured over modelled time scales the cost of its units. The
//! error of a cost profile lies in the units (a FLOP of an early, wide
//! layer is slower than one of a late, deep one), not in identical CPUs,
//! so a unit keeps its calibrated cost wherever a re-balance moves it; a
//! PE's nominal speed (its CPU count) divides it.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Instant;

use super::antagonists::{self, AntagonistFilter};
use super::derive::{self, thread_shares};
use super::perf::{CounterSource, CounterSupport, GroupHandle, GroupKind, Target};
use super::procfs::ProcReader;
use super::sample::{CounterValues, ProcStat, Schedstat, TaskSnapshot};
use crate::cpulist::CpuSet;
use crate::policy::{PeSignals, StageSignals};

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
    /// Measured over modelled time of each unit, once calibrated.
    unit_scale: Option<Vec<f64>>,
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
        Self {
            proc,
            counters,
            hardware: support.has_hardware(),
            groups: BTreeMap::new(),
            pes,
            unit_ms,
            unit_scale: None,
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

    /// Whether [`Observer::calibrate`] has run.
    pub fn calibrated(&self) -> bool {
        self.unit_scale.is_some()
    }

    /// Each unit's cost on one idle CPU of this machine, milliseconds: the
    /// profile's, calibrated when that has been done.
    pub fn unit_ms(&self) -> Vec<f64> {
        match &self.unit_scale {
            Some(scale) => self.unit_ms.iter().zip(scale).map(|(c, f)| c * f).collect(),
            None => self.unit_ms.clone(),
        }
    }

    /// The calibrated cost of `units` on PE `pe`, milliseconds.
    fn expected_ms(&self, units: &Range<usize>, pe: usize) -> Option<f64> {
        let scale = self.unit_scale.as_ref()?;
        let cost: f64 = units
            .clone()
            .filter_map(|u| Some(self.unit_ms.get(u)? * scale.get(u)?))
            .sum();
        Some(cost / self.speed(pe))
    }

    /// A PE's nominal speed: its CPU count.
    fn speed(&self, pe: usize) -> f64 {
        self.pes.get(pe).map_or(1.0, |p| p.len().max(1) as f64)
    }

    /// Scales each stage's units by its measured over modelled time: the
    /// expectation becomes "as fast as now". Call while nothing interferes
    /// (after warm-up). Units of a stage not measured yet keep the
    /// median factor of the others.
    pub fn calibrate(&mut self, stages: &[StageView]) {
        let mut scale = vec![None; self.unit_ms.len()];
        for s in stages {
            let model: f64 = self
                .unit_ms
                .get(s.units.clone())
                .map_or(0.0, |u| u.iter().sum());
            if let Some(ms) = s.service_ms
                && model > 0.0
                && ms > 0.0
            {
                let f = ms * self.speed(s.pe) / model;
                for slot in scale.get_mut(s.units.clone()).into_iter().flatten() {
                    *slot = Some(f);
                }
            }
        }
        let mut known: Vec<f64> = scale.iter().flatten().copied().collect();
        if known.is_empty() {
            return;
        }
        let fallback = crate::stats::median(&mut known);
        self.unit_scale = Some(scale.into_iter().map(|f| f.unwrap_or(fallback)).collect());
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
                // Not calibrated yet: no slowdown can be claimed.
                let expected = self
                    .expected_ms(&s.units, s.pe)
                    .unwrap_or_else(|| s.service_ms.unwrap_or(0.0));
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
                pes[i].antagonists = antagonists::find(prev, &walk.snapshot, dt, cpus, &filter);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::perf::FakeCounters;

    fn observer(pes: &[&str], unit_ms: Vec<f64>) -> Observer {
        let dir = std::env::temp_dir();
        Observer::new(
            ProcReader::with_root(dir),
            Box::new(FakeCounters::without_hardware()),
            &CounterSupport::SoftwareOnly {
                reason: "test".into(),
                fix: "none".into(),
            },
            pes.iter().map(|p| p.parse().unwrap()).collect(),
            unit_ms,
        )
    }

    fn view(pe: usize, units: Range<usize>, ms: Option<f64>) -> StageView {
        StageView {
            tid: 0,
            pe,
            units,
            service_ms: ms,
        }
    }

    #[test]
    fn calibration_scales_units_and_follows_them_to_another_pe() {
        let mut o = observer(&["0", "1-2"], vec![5.0, 5.0, 5.0, 5.0]);
        assert!(!o.calibrated());
        assert_eq!(o.expected_ms(&(0..2), 0), None, "nothing to expect yet");
        // Units 0..2 run twice as slow as modelled on one CPU; units 2..4
        // as modelled on a PE of two CPUs (5 ms of 10).
        o.calibrate(&[view(0, 0..2, Some(20.0)), view(1, 2..4, Some(5.0))]);
        assert!(o.calibrated());
        assert_eq!(o.unit_ms(), vec![10.0, 10.0, 5.0, 5.0]);
        assert_eq!(o.expected_ms(&(0..2), 0), Some(20.0));
        // A re-balance moves unit 1 to the two-CPU PE: it keeps its cost.
        assert_eq!(o.expected_ms(&(1..4), 1), Some(10.0));
        assert_eq!(o.expected_ms(&(0..1), 0), Some(10.0));
    }

    #[test]
    fn units_of_an_unmeasured_stage_take_the_median_factor() {
        let mut o = observer(&["0", "1", "2"], vec![1.0, 1.0, 1.0]);
        o.calibrate(&[
            view(0, 0..1, Some(2.0)),
            view(1, 1..2, Some(4.0)),
            view(2, 2..3, None),
        ]);
        assert_eq!(o.unit_ms(), vec![2.0, 4.0, 3.0]);
        let mut none = observer(&["0"], vec![1.0]);
        none.calibrate(&[view(0, 0..1, None)]);
        assert!(!none.calibrated(), "no measurement, no calibration");
    }
}
