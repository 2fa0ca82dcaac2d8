//! The interference detector.
//!
//! Problem: decide, tick by tick, which stages are being slowed by something
//! outside the pipeline, what kind of interference it is, and when it ends,
//! without reacting to one-tick noise.
//!
//! Approach: per stage, the slowdown `s = service / expected` (measured
//! smoothed service time over what its units take on an idle PE).
//!
//! ```text
//!             s > 1 + threshold for onset_ticks
//!   Normal ------------------------------------> Interfered(kind)
//!     ^                                              |
//!     +----------------------------------------------+
//!        s < 1 + offset_threshold for offset_ticks
//! ```
//!
//! The offset threshold is below the onset threshold (hysteresis), so a
//! stage hovering around the threshold does not flap. After an accepted
//! reconfiguration, [`Detector::rebase`] restarts the streaks and ignores
//! `settle_ticks` ticks, because smoothed service times still mix frames
//! run under the old partition. Kind comes from the PE's signals: run-queue
//! delay or foreign CPU use says CPU time-sharing; an IPC drop or an LLC MPKI
//! rise with little run delay says cache/memory; otherwise unknown. IPC and
//! MPKI baselines are learnt per PE while none of its stages is slow.
//! [`DetectorConfig::verdict`] applies the same thresholds to one tick's
//! signals of one PE, with no streaks: whether it is clear of interference
//! right now.
//!
//! Pure: no OS calls; the simulator runs this same code.

use serde::{Deserialize, Serialize};

use super::{Antagonist, PeSignals, StageSignals};

/// Detector parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    /// Onset when a stage is slower than expected by more than this fraction.
    pub threshold: f64,
    /// ... for this many consecutive ticks.
    pub onset_ticks: u32,
    /// Offset when the slowdown falls below this fraction (< threshold).
    pub offset_threshold: f64,
    /// ... for this many consecutive ticks.
    pub offset_ticks: u32,
    /// Ticks ignored after a re-base.
    pub settle_ticks: u32,
    /// Run-delay share or foreign CPU use (in CPUs) that says time-sharing.
    pub cpu_share: f64,
    /// Relative IPC drop from the PE's baseline that says cache/memory.
    pub ipc_drop: f64,
    /// Relative LLC MPKI rise from the PE's baseline that says cache/memory.
    pub mpki_rise: f64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            threshold: 0.15,
            onset_ticks: 3,
            offset_threshold: 0.075,
            offset_ticks: 3,
            settle_ticks: 2,
            cpu_share: 0.10,
            ipc_drop: 0.10,
            mpki_rise: 0.25,
        }
    }
}

impl DetectorConfig {
    /// Checks the parameters make sense; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.threshold > 0.0 && self.threshold.is_finite()) {
            return Err(format!(
                "threshold: {} must be a positive fraction",
                self.threshold
            ));
        }
        if !(self.offset_threshold >= 0.0 && self.offset_threshold < self.threshold) {
            return Err(format!(
                "offset_threshold: {} must be in [0, threshold = {})",
                self.offset_threshold, self.threshold
            ));
        }
        if self.onset_ticks == 0 || self.offset_ticks == 0 {
            return Err("onset_ticks and offset_ticks: must be at least 1".into());
        }
        for (name, v) in [
            ("cpu_share", self.cpu_share),
            ("ipc_drop", self.ipc_drop),
            ("mpki_rise", self.mpki_rise),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(format!("{name}: {v} must be a positive number"));
            }
        }
        Ok(())
    }

    /// Whether `now` is slower than `reference` by more than `threshold`
    /// (a stage's slowdown against 1 for an onset, or a bottleneck against
    /// the level it settled at).
    pub fn exceeds(&self, now: f64, reference: f64) -> bool {
        now > reference * (1.0 + self.threshold)
    }

    /// The instantaneous verdict on one PE from its signals `pe` of one
    /// tick, its nominal `speed`, and the IPC and LLC MPKI it reads
    /// undisturbed (`ipc_ref`, `mpki_ref`): no smoothing, no streaks.
    pub fn verdict(
        &self,
        pe: &PeSignals,
        speed: Option<f64>,
        ipc_ref: Option<f64>,
        mpki_ref: Option<f64>,
    ) -> PeVerdict {
        PeVerdict {
            cpu_clear: pe
                .foreign_cpu_share
                .zip(speed.filter(|v| *v > 0.0))
                .map(|(x, v)| x / v < self.cpu_share),
            ipc_clear: pe
                .ipc
                .zip(ipc_ref)
                .map(|(i, b)| i >= b * (1.0 - self.ipc_drop)),
            mpki_clear: pe
                .llc_mpki
                .zip(mpki_ref)
                .map(|(m, b)| m <= b * (1.0 + self.mpki_rise).max(b + 1e-9)),
        }
    }
}

/// What one tick's signals say about one PE right now: for each sign of
/// interference, whether the PE is clear of it (`Some(true)`), shows it
/// (`Some(false)`), or the signals to tell are missing (`None`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeVerdict {
    /// Foreign CPU use per unit of the PE's speed below `cpu_share`.
    pub cpu_clear: Option<bool>,
    /// IPC no more than `ipc_drop` below the reference.
    pub ipc_clear: Option<bool>,
    /// LLC MPKI no more than `mpki_rise` above the reference.
    pub mpki_clear: Option<bool>,
}

/// What kind of interference a PE suffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Another task takes CPU time on the PE's CPUs.
    CpuTimeSharing,
    /// Another task thrashes shared caches or memory bandwidth.
    CacheMemory,
    /// Slower, cause not identified.
    Unknown,
}

impl Kind {
    /// Lower-case name, as in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::CpuTimeSharing => "cpu",
            Kind::CacheMemory => "cache_memory",
            Kind::Unknown => "unknown",
        }
    }
}

/// A change the detector reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Interference began on a stage's PE.
    Onset {
        /// The PE.
        pe: usize,
        /// The slowed stage.
        stage: usize,
        /// What kind.
        kind: Kind,
        /// Slowdown fraction: 0.5 means 50% slower than expected.
        severity: f64,
        /// Foreign tasks on the PE, most CPU first.
        antagonists: Vec<Antagonist>,
    },
    /// The interference on a stage's PE ended.
    Offset {
        /// The PE.
        pe: usize,
        /// The stage.
        stage: usize,
    },
}

#[derive(Clone, Debug, Default)]
struct StageState {
    pe: Option<usize>,
    interfered: Option<Kind>,
    slow: u32,
    fast: u32,
    settle: u32,
    slowdown: Option<f64>,
}

#[derive(Clone, Debug, Default)]
struct Baseline {
    ipc: Option<f64>,
    mpki: Option<f64>,
}

/// Weight of a new sample in the IPC/MPKI baselines.
const BASELINE_ALPHA: f64 = 0.2;

fn blend(old: Option<f64>, new: Option<f64>) -> Option<f64> {
    match (old, new) {
        (Some(o), Some(n)) => Some(o + BASELINE_ALPHA * (n - o)),
        (None, n) => n,
        (o, None) => o,
    }
}

/// The detector's state across ticks.
#[derive(Clone, Debug, Default)]
pub struct Detector {
    cfg: DetectorConfig,
    stages: Vec<StageState>,
    baselines: Vec<Baseline>,
    /// The interference each PE was last known to have: a stage moved
    /// there takes it on (interference belongs to the PE, not the stage).
    pe_state: Vec<Option<Kind>>,
}

impl Detector {
    /// A detector with `cfg`.
    pub fn new(cfg: DetectorConfig) -> Self {
        Self {
            cfg,
            stages: Vec::new(),
            baselines: Vec::new(),
            pe_state: Vec::new(),
        }
    }

    /// The parameters.
    pub fn config(&self) -> &DetectorConfig {
        &self.cfg
    }

    /// Replaces the parameters, keeping what has been learnt.
    pub fn set_config(&mut self, cfg: DetectorConfig) {
        self.cfg = cfg;
    }

    /// Restarts every streak and ignores the next `settle_ticks` ticks:
    /// call after an accepted reconfiguration.
    pub fn rebase(&mut self) {
        for s in &mut self.stages {
            s.slow = 0;
            s.fast = 0;
            s.settle = self.cfg.settle_ticks;
        }
    }

    /// The kind of interference on stage `s`'s PE, if any.
    pub fn interfered(&self, stage: usize) -> Option<Kind> {
        self.stages.get(stage).and_then(|s| s.interfered)
    }

    /// The last measured slowdown (service / expected) of stage `s`.
    pub fn slowdown(&self, stage: usize) -> Option<f64> {
        self.stages.get(stage).and_then(|s| s.slowdown)
    }

    /// Whether any stage is interfered with.
    pub fn any_interfered(&self) -> bool {
        self.stages.iter().any(|s| s.interfered.is_some())
    }

    /// One tick: per-stage service times and per-PE signals in, events out.
    pub fn tick(&mut self, stages: &[StageSignals], pes: &[PeSignals]) -> Vec<Event> {
        if self.stages.len() != stages.len() {
            self.stages = vec![StageState::default(); stages.len()];
        }
        if self.baselines.len() < pes.len() {
            self.baselines.resize(pes.len(), Baseline::default());
        }
        if self.pe_state.len() < pes.len() {
            self.pe_state.resize(pes.len(), None);
        }
        let cfg = &self.cfg;
        let known = &mut self.pe_state;
        let mut events = Vec::new();
        let mut slow_pes = vec![false; pes.len()];
        for (i, (sig, st)) in stages.iter().zip(&mut self.stages).enumerate() {
            if st.pe.is_some_and(|p| p != sig.pe) {
                // Moved to another PE: its streaks say nothing about the
                // new one, which keeps whatever interference it had (no
                // event: a re-balance moves stages, not interference).
                st.slow = 0;
                st.fast = 0;
                st.settle = cfg.settle_ticks;
                st.interfered = known.get(sig.pe).copied().flatten();
            }
            st.pe = Some(sig.pe);
            let slowdown = match sig.service_ms {
                Some(ms) if sig.expected_ms > 0.0 && ms.is_finite() => ms / sig.expected_ms,
                _ => continue,
            };
            st.slowdown = Some(slowdown);
            if slowdown > 1.0 + cfg.offset_threshold
                && let Some(f) = slow_pes.get_mut(sig.pe)
            {
                *f = true;
            }
            if st.settle > 0 {
                st.settle -= 1;
                continue;
            }
            match st.interfered {
                None => {
                    st.slow = if cfg.exceeds(slowdown, 1.0) {
                        st.slow + 1
                    } else {
                        0
                    };
                    if st.slow >= cfg.onset_ticks {
                        let pe = pes.get(sig.pe).cloned().unwrap_or_default();
                        let base = self.baselines.get(sig.pe).cloned().unwrap_or_default();
                        let kind = classify(cfg, &pe, &base);
                        st.interfered = Some(kind);
                        if let Some(k) = known.get_mut(sig.pe) {
                            *k = Some(kind);
                        }
                        st.slow = 0;
                        events.push(Event::Onset {
                            pe: sig.pe,
                            stage: i,
                            kind,
                            severity: slowdown - 1.0,
                            antagonists: pe.antagonists,
                        });
                    }
                }
                Some(kind) => {
                    // Time-sharing is over once the PE shows neither run
                    // delay nor foreign CPU use, however the stage's time
                    // compares with its cost model (which a re-balance may
                    // have made less exact for the units it now runs).
                    let cause_gone = kind == Kind::CpuTimeSharing
                        && pes.get(sig.pe).is_some_and(|p| {
                            matches!(
                                (p.run_delay_share, p.foreign_cpu_share),
                                (Some(d), Some(f)) if d < cfg.cpu_share / 2.0 && f < cfg.cpu_share / 2.0
                            )
                        });
                    st.fast = if slowdown < 1.0 + cfg.offset_threshold || cause_gone {
                        st.fast + 1
                    } else {
                        0
                    };
                    if st.fast >= cfg.offset_ticks {
                        st.interfered = None;
                        if let Some(k) = known.get_mut(sig.pe) {
                            *k = None;
                        }
                        st.fast = 0;
                        events.push(Event::Offset {
                            pe: sig.pe,
                            stage: i,
                        });
                    }
                }
            }
        }
        // Learn IPC/MPKI baselines only on PEs where nothing is slow.
        for (p, sig) in pes.iter().enumerate() {
            let interfered = self
                .stages
                .iter()
                .any(|s| s.pe == Some(p) && s.interfered.is_some());
            if !slow_pes[p] && !interfered {
                let b = &mut self.baselines[p];
                b.ipc = blend(b.ipc, sig.ipc);
                b.mpki = blend(b.mpki, sig.llc_mpki);
            }
        }
        events
    }
}

fn classify(cfg: &DetectorConfig, pe: &PeSignals, base: &Baseline) -> Kind {
    let delay = pe.run_delay_share.unwrap_or(0.0);
    let foreign = pe.foreign_cpu_share.unwrap_or(0.0);
    if delay >= cfg.cpu_share || foreign >= cfg.cpu_share {
        return Kind::CpuTimeSharing;
    }
    let ipc_down = matches!((base.ipc, pe.ipc), (Some(b), Some(now)) if b > 0.0 && now < b * (1.0 - cfg.ipc_drop));
    let mpki_up = matches!((base.mpki, pe.llc_mpki), (Some(b), Some(now)) if now > b * (1.0 + cfg.mpki_rise) && now > b + 0.1);
    if ipc_down || mpki_up {
        Kind::CacheMemory
    } else {
        Kind::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(pe: usize, service: f64) -> StageSignals {
        StageSignals {
            pe,
            service_ms: Some(service),
            expected_ms: 10.0,
        }
    }

    fn quiet() -> PeSignals {
        PeSignals {
            ipc: Some(2.0),
            llc_mpki: Some(1.0),
            run_delay_share: Some(0.0),
            foreign_cpu_share: Some(0.0),
            antagonists: vec![],
        }
    }

    fn busy_neighbour() -> PeSignals {
        PeSignals {
            run_delay_share: Some(0.45),
            foreign_cpu_share: Some(0.5),
            antagonists: vec![Antagonist {
                pid: 4242,
                start: 1,
                tid: 4242,
                comm: "stress".into(),
                cgroup: Some("/user.slice".into()),
                cpu_share: 0.5,
            }],
            ..quiet()
        }
    }

    /// Runs a trace of stage-1 service times (stage 0 stays at 10 ms) and
    /// returns the tick index of every event.
    fn run(
        d: &mut Detector,
        trace: &[f64],
        pe1: impl Fn(usize) -> PeSignals,
    ) -> Vec<(usize, Event)> {
        let mut out = Vec::new();
        for (t, &ms) in trace.iter().enumerate() {
            for e in d.tick(&[stage(0, 10.0), stage(1, ms)], &[quiet(), pe1(t)]) {
                out.push((t, e));
            }
        }
        out
    }

    #[test]
    fn a_step_up_is_detected_within_k_ticks() {
        let mut d = Detector::new(DetectorConfig::default());
        let mut trace = vec![10.0; 5];
        trace.extend([20.0; 5]);
        let ev = run(&mut d, &trace, |t| {
            if t >= 5 { busy_neighbour() } else { quiet() }
        });
        assert_eq!(ev.len(), 1, "{ev:?}");
        let (t, e) = &ev[0];
        assert_eq!(*t, 5 + 3 - 1, "onset on the k-th slow tick");
        match e {
            Event::Onset {
                pe,
                stage,
                kind,
                severity,
                antagonists,
            } => {
                assert_eq!((*pe, *stage, *kind), (1, 1, Kind::CpuTimeSharing));
                assert!((severity - 1.0).abs() < 1e-9);
                assert_eq!(antagonists[0].pid, 4242);
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(d.interfered(1), Some(Kind::CpuTimeSharing));
        assert_eq!(d.interfered(0), None);
    }

    #[test]
    fn time_sharing_ends_when_its_cause_is_gone_even_if_the_model_is_off() {
        // Onset with a busy neighbour; after it leaves the stage stays 30%
        // over its (inexact) expectation, with no run delay and no foreign
        // use: the interference is over.
        let mut d = Detector::new(DetectorConfig::default());
        let mut trace = vec![10.0; 3];
        trace.extend([20.0; 4]);
        trace.extend([13.0; 4]);
        let ev = run(&mut d, &trace, |t| {
            if (3..7).contains(&t) {
                busy_neighbour()
            } else {
                quiet()
            }
        });
        let kinds: Vec<(usize, bool)> = ev
            .iter()
            .map(|(t, e)| (*t, matches!(e, Event::Onset { .. })))
            .collect();
        assert_eq!(kinds, vec![(5, true), (9, false)], "{ev:?}");
        // Some other kind at the same 30% does not end without the time.
        let mut d = Detector::new(DetectorConfig::default());
        let ev = run(&mut d, &trace, |_| quiet());
        assert_eq!(ev.len(), 1, "onset only: {ev:?}");
        assert_eq!(d.interfered(1), Some(Kind::Unknown));
    }

    #[test]
    fn a_one_tick_spike_is_not_detected() {
        let mut d = Detector::new(DetectorConfig::default());
        let trace = [10.0, 10.0, 30.0, 10.0, 10.0, 30.0, 30.0, 10.0, 10.0];
        assert!(run(&mut d, &trace, |_| quiet()).is_empty());
        // Just below the threshold never fires.
        assert!(run(&mut d, &[11.4; 20], |_| quiet()).is_empty());
    }

    #[test]
    fn offset_needs_the_hysteresis() {
        let mut d = Detector::new(DetectorConfig::default());
        run(&mut d, &[20.0; 3], |_| busy_neighbour());
        assert!(d.any_interfered());
        // The neighbour lingers, lightly: its time-sharing is not over by
        // itself, the stage times decide.
        let lingering = || PeSignals {
            run_delay_share: Some(0.06),
            foreign_cpu_share: Some(0.06),
            ..quiet()
        };
        // 12% slower: below the onset threshold but above the offset one: still interfered.
        assert!(run(&mut d, &[11.2; 10], |_| lingering()).is_empty());
        // Two good ticks then a relapse restart the count.
        assert!(run(&mut d, &[10.0, 10.0, 11.0, 10.0, 10.0], |_| lingering()).is_empty());
        let ev = run(&mut d, &[10.0], |_| lingering());
        assert_eq!(ev, vec![(0, Event::Offset { pe: 1, stage: 1 })]);
        assert!(!d.any_interfered());
    }

    #[test]
    fn rebase_ignores_stale_ticks_then_detects_afresh() {
        let cfg = DetectorConfig::default();
        let mut d = Detector::new(cfg.clone());
        // Two slow ticks, then an accepted reconfiguration.
        assert!(run(&mut d, &[20.0, 20.0], |_| quiet()).is_empty());
        d.rebase();
        // The stale smoothed value lingers for settle_ticks: not counted.
        let ev = run(&mut d, &[20.0; 2], |_| quiet());
        assert!(ev.is_empty(), "{ev:?}");
        // Fresh slow ticks need the full k again.
        let ev = run(&mut d, &[20.0; 3], |_| quiet());
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].0, 2);
    }

    #[test]
    fn moving_a_stage_restarts_its_streak() {
        let mut d = Detector::new(DetectorConfig::default());
        for pe in [1, 1, 0, 0, 0, 0] {
            let ev = d.tick(&[stage(0, 10.0), stage(pe, 20.0)], &[quiet(), quiet()]);
            assert!(ev.is_empty());
        }
        let ev = d.tick(&[stage(0, 10.0), stage(0, 20.0)], &[quiet(), quiet()]);
        assert!(
            matches!(
                ev[0],
                Event::Onset {
                    pe: 0,
                    stage: 1,
                    ..
                }
            ),
            "{ev:?}"
        );
    }

    #[test]
    fn swapped_stages_take_the_interference_of_their_new_pe_without_events() {
        let mut d = Detector::new(DetectorConfig::default());
        let ev = run(&mut d, &[20.0; 3], |_| busy_neighbour());
        assert_eq!(ev.len(), 1, "onset on PE 1: {ev:?}");
        // A re-balance swaps the stages, each at its own frame boundary:
        // stage 1 reaches PE 0 first, then stage 0 the interfered PE 1.
        let ev = d.tick(
            &[stage(0, 10.0), stage(0, 20.0)],
            &[quiet(), busy_neighbour()],
        );
        assert!(ev.is_empty(), "{ev:?}");
        for _ in 0..6 {
            let ev = d.tick(
                &[stage(1, 20.0), stage(0, 10.0)],
                &[quiet(), busy_neighbour()],
            );
            assert!(ev.is_empty(), "{ev:?}");
        }
        assert_eq!(d.interfered(0), Some(Kind::CpuTimeSharing));
        assert_eq!(d.interfered(1), None);
        // When the neighbour leaves, the offset names the stage now there.
        let mut ev = Vec::new();
        for _ in 0..3 {
            ev.extend(d.tick(&[stage(1, 10.0), stage(0, 10.0)], &[quiet(), quiet()]));
        }
        assert_eq!(ev, vec![Event::Offset { pe: 1, stage: 0 }]);
    }

    #[test]
    fn kinds_follow_the_pe_signals() {
        let slow = [20.0; 3];
        // IPC falls from its learnt baseline with no run delay: cache/memory.
        let mut d = Detector::new(DetectorConfig::default());
        run(&mut d, &[10.0; 5], |_| quiet());
        let ev = run(&mut d, &slow, |_| PeSignals {
            ipc: Some(1.2),
            ..quiet()
        });
        assert!(
            matches!(
                ev[0].1,
                Event::Onset {
                    kind: Kind::CacheMemory,
                    ..
                }
            ),
            "{ev:?}"
        );
        // MPKI up alone also says cache/memory.
        let mut d = Detector::new(DetectorConfig::default());
        run(&mut d, &[10.0; 5], |_| quiet());
        let ev = run(&mut d, &slow, |_| PeSignals {
            llc_mpki: Some(5.0),
            ..quiet()
        });
        assert!(
            matches!(
                ev[0].1,
                Event::Onset {
                    kind: Kind::CacheMemory,
                    ..
                }
            ),
            "{ev:?}"
        );
        // No counters, no run delay: unknown.
        let mut d = Detector::new(DetectorConfig::default());
        let ev = run(&mut d, &slow, |_| PeSignals::default());
        assert!(
            matches!(
                ev[0].1,
                Event::Onset {
                    kind: Kind::Unknown,
                    ..
                }
            ),
            "{ev:?}"
        );
    }

    #[test]
    fn missing_service_times_are_skipped() {
        let mut d = Detector::new(DetectorConfig::default());
        for _ in 0..10 {
            let s = StageSignals {
                pe: 0,
                service_ms: None,
                expected_ms: 10.0,
            };
            assert!(d.tick(&[s], &[quiet()]).is_empty());
        }
        assert_eq!(d.slowdown(0), None);
    }

    #[test]
    fn config_validation_names_the_field() {
        let bad = DetectorConfig {
            offset_threshold: 0.2,
            ..DetectorConfig::default()
        };
        assert!(bad.validate().unwrap_err().starts_with("offset_threshold"));
        let bad = DetectorConfig {
            threshold: -1.0,
            ..DetectorConfig::default()
        };
        assert!(bad.validate().unwrap_err().starts_with("threshold"));
        DetectorConfig::default().validate().unwrap();
    }
}
