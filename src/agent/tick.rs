//! One monitor tick: observe, calibrate, detect, decide, apply, then the
//! cgroup hints' escalation step.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossbeam_channel::Receiver;

use super::daemon::Daemon;
use super::report::{TimedEvent, describe, event_line, event_summary};
use crate::agent::logging::say;
use crate::cgroup::escalation;
use crate::cgroup::hint;
use crate::cpulist::CpuSet;
use crate::monitor::observer::StageView;
use crate::pipeline::affinity::AffinityError;
use crate::pipeline::{Partition, Pipeline};
use crate::policy::cost;
use crate::policy::detector::Event;
use crate::policy::{Action, Observation, PeSignals, Placement};

/// Undisturbed run time after which the expectations are calibrated.
const CALIBRATION: Duration = Duration::from_secs(1);

/// How long calibration waits for a PE that is not time-shared.
const CALIBRATION_MAX: Duration = Duration::from_secs(5);

/// A decision whose effect is still to be measured.
pub(super) struct PendingEffect {
    pub(super) at: Instant,
    pub(super) placement: Placement,
    pub(super) predicted: Vec<f64>,
    pub(super) fps_before: Option<f64>,
}

/// How long a decision runs before its effect is logged.
const EFFECT_AFTER: Duration = Duration::from_secs(1);

impl Daemon {
    pub(super) fn on_tick(&mut self, now: Instant) {
        self.check_cpuset();
        self.engine.check_pinning();
        let views = self.engine.views();
        let (stages, pe_signals) = self.engine.observer.tick(&views, now);
        self.last_pes = pe_signals.clone();
        let frames = self.recorder.frames();
        let dt = now.saturating_duration_since(self.last_tick).as_secs_f64();
        let throughput = (dt > 0.0).then(|| frames.saturating_sub(self.last_frames) as f64 / dt);
        (self.last_frames, self.last_tick) = (frames, now);
        self.metrics
            .set_rejected(self.rejected_before + self.engine.pipeline.rejected());
        if !self.engine.observer.calibrated() {
            let waited = now.saturating_duration_since(self.engine.started);
            if waited >= CALIBRATION && views.iter().all(|v| v.service_ms.is_some()) {
                self.calibrate(&views, &pe_signals, waited);
            }
            self.publish_with(throughput);
            return;
        }
        let t = now.saturating_duration_since(self.start);
        let mut obs = Observation {
            t: t.as_secs_f64(),
            unit_ms: self.engine.observer.unit_ms(),
            pe_speed: self.engine.pe_speed.clone(),
            placement: self.engine.placement_of(&views),
            stages,
            pes: pe_signals,
            events: Vec::new(),
            frames_done: frames,
            throughput_fps: throughput,
            p99_latency_ms: self.recent_p99(),
            slo: self.cfg.slo,
            true_speed: None,
        };
        self.report_effect(now, &obs);
        let action = self.controller.step(&mut obs);
        for e in &obs.events {
            say!("{}", event_line(t, e, &self.engine.pes));
            self.events.push(TimedEvent {
                t: obs.t,
                event: e.clone(),
            });
        }
        if let Action::Apply(next) = action {
            self.apply_action(now, &obs, &next);
        }
        self.cgroup_step(&obs);
        self.publish_with(throughput);
    }

    /// Sets the expectations from the stages measured so far, leaving out
    /// those on a PE that is visibly time-shared (run-queue delay or foreign
    /// CPU use above the detector's `cpu_share`): a neighbour already there
    /// when odin starts must not become the baseline. Their units take the
    /// other stages' calibration, so the detector sees the slowdown. When
    /// every PE is shared, odin waits up to [`CALIBRATION_MAX`] for one to
    /// clear, then calibrates on what it has and says so.
    pub(super) fn calibrate(&mut self, views: &[StageView], pes: &[PeSignals], waited: Duration) {
        let share = self.cfg.policy.params.detector.cpu_share;
        let shared = |pe: usize| {
            pes.get(pe).is_some_and(|p| {
                p.run_delay_share.unwrap_or(0.0) >= share
                    || p.foreign_cpu_share.unwrap_or(0.0) >= share
            })
        };
        let quiet: Vec<StageView> = views.iter().filter(|v| !shared(v.pe)).cloned().collect();
        let busy: Vec<String> = views
            .iter()
            .filter(|v| shared(v.pe))
            .filter_map(|v| self.engine.pes.get(v.pe).map(CpuSet::to_string))
            .collect();
        if quiet.len() == views.len() {
            self.engine.observer.calibrate(views);
        } else if !quiet.is_empty() {
            tracing::warn!(
                "CPUs {} are time-shared with other programs at start: their stages' \
                 expectations come from the other PEs",
                busy.join(", ")
            );
            self.engine.observer.calibrate(&quiet);
        } else if waited >= CALIBRATION_MAX {
            tracing::warn!(
                "every PE was time-shared for the first {} s: calibrating on it, so a \
                 slowdown present since the start is not seen as interference",
                CALIBRATION_MAX.as_secs()
            );
            self.engine.observer.calibrate(views);
        }
    }

    /// After the policy: the cgroup hints' escalation step, then their
    /// metrics.
    pub(super) fn cgroup_step(&mut self, obs: &Observation) {
        let mut antagonists: Vec<crate::policy::Antagonist> = obs
            .pes
            .iter()
            .flat_map(|p| p.antagonists.iter().cloned())
            .collect();
        for e in &obs.events {
            if let Event::Onset { antagonists: a, .. } = e {
                let new: Vec<_> = a
                    .iter()
                    .filter(|x| !antagonists.iter().any(|y| y.tid == x.tid))
                    .cloned()
                    .collect();
                antagonists.extend(new);
            }
        }
        let predicted_fps = escalation::predicted_fps(&cost::measured_times(obs));
        let measured_fps = escalation::measured_fps(self.last_fps, obs.throughput_fps);
        let slo = escalation::slo_status(
            &obs.slo,
            measured_fps,
            predicted_fps,
            obs.p99_latency_ms,
            self.cfg.cgroup.slack,
        );
        let cpus: CpuSet = self.engine.pes.iter().flat_map(|p| p.iter()).collect();
        self.cgroup.tick(&hint::Tick {
            t: obs.t,
            slo,
            antagonists: &antagonists,
            pipeline_cpus: &cpus,
        });
        self.publish_cgroup();
    }

    /// Once a decision has run for [`EFFECT_AFTER`] with every stage
    /// measured, logs what it did against what was predicted.
    pub(super) fn report_effect(&mut self, now: Instant, obs: &Observation) {
        let Some(p) = &self.pending_effect else {
            return;
        };
        if obs.placement != p.placement {
            // Replaced by another decision (or a rebuild) before it showed.
            self.pending_effect = None;
            return;
        }
        let measured = cost::measured_times(obs);
        if now.saturating_duration_since(p.at) < EFFECT_AFTER
            || measured.iter().any(Option::is_none)
        {
            return;
        }
        let list = |v: &mut dyn Iterator<Item = f64>| {
            format!(
                "[{}]",
                v.map(|t| format!("{t:.1}")).collect::<Vec<_>>().join(", ")
            )
        };
        let fps = |f: Option<f64>| f.map_or_else(|| "?".to_string(), |f| format!("{f:.1}"));
        tracing::info!(
            t = format!("{:.1}", obs.t),
            policy = self.controller.policy_name(),
            placement = describe(&p.placement, &self.engine.pes),
            predicted_ms = list(&mut p.predicted.iter().copied()),
            measured_ms = list(&mut measured.iter().flatten().copied()),
            fps_before = fps(p.fps_before),
            fps_after = fps(obs.throughput_fps),
            "effect"
        );
        self.pending_effect = None;
    }

    pub(super) fn apply_action(&mut self, now: Instant, obs: &Observation, next: &Placement) {
        let pes = &self.engine.pes;
        let policy = self.controller.policy_name();
        let measured: Vec<String> = cost::measured_times(obs)
            .iter()
            .map(|t| t.map_or_else(|| "?".into(), |t| format!("{t:.1}")))
            .collect();
        let predicted = cost::predict(obs, next);
        let events: Vec<String> = obs.events.iter().map(event_summary).collect();
        match apply(&self.engine.pipeline, &obs.placement, next, pes) {
            Ok(Applied {
                partition: p,
                remaps,
            }) => {
                // A stage on its way to its new PE is not drifting: the
                // pinning check waits for its outcome.
                for (stage, rx) in remaps {
                    self.engine.repin[stage] = Some(rx);
                }
                let reason = match obs.events.first() {
                    Some(Event::Onset { .. }) => "onset",
                    Some(Event::Offset { .. }) => "offset",
                    None => "search",
                };
                tracing::info!(
                    t = format!("{:.1}", obs.t),
                    policy,
                    reason,
                    events = format!("[{}]", events.join("; ")),
                    from = describe(&obs.placement, pes),
                    to = describe(next, pes),
                    measured_ms = format!("[{}]", measured.join(", ")),
                    predicted_ms = format!(
                        "[{}]",
                        predicted
                            .iter()
                            .map(|t| format!("{t:.1}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    "decision"
                );
                say!(
                    "t={:.1}s {policy}: {} -> {} (stage times {})",
                    obs.t,
                    describe(&obs.placement, pes),
                    describe(next, pes),
                    obs.stages
                        .iter()
                        .map(|s| format!("{:.1} ms", s.service_ms.unwrap_or(0.0)))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                self.metrics.reconfigured(policy, reason);
                self.recorder.partition_changed(now, &p);
                self.pending_effect = Some(PendingEffect {
                    at: now,
                    placement: next.clone(),
                    predicted,
                    fps_before: obs.throughput_fps,
                });
            }
            Err(e) => tracing::warn!("{policy} asked for an impossible placement: {e}"),
        }
    }
}

/// A placement in force: its partition, and the outcome of each stage's
/// remap, which arrives when the stage reaches a frame boundary (a failure
/// is also logged by the stage).
pub(super) struct Applied {
    pub(super) partition: Partition,
    pub(super) remaps: Vec<(usize, Receiver<Result<(), AffinityError>>)>,
}

/// Moves the pipeline from placement `from` to `to`: the cuts at once,
/// each remapped stage when it reaches a frame boundary. A placement that
/// cannot run (bad cuts, a PE that does not exist) is refused before
/// anything moves.
pub(super) fn apply(
    p: &Pipeline,
    from: &Placement,
    to: &Placement,
    pes: &[CpuSet],
) -> Result<Applied> {
    let partition = Partition::relaxed(to.units, to.cuts.clone())?;
    let moves: Vec<(usize, &CpuSet)> = from
        .mapping
        .iter()
        .zip(&to.mapping)
        .enumerate()
        .filter(|(_, (old, new))| old != new)
        .map(|(stage, (_, &new))| {
            pes.get(new)
                .map(|cpus| (stage, cpus))
                .with_context(|| format!("stage {stage}: no PE {new} (there are {})", pes.len()))
        })
        .collect::<Result<_>>()?;
    if to.cuts != from.cuts {
        p.set_partition(partition.clone())?;
    }
    let mut remaps = Vec::with_capacity(moves.len());
    for (stage, cpus) in moves {
        remaps.push((stage, p.remap(stage, cpus.clone())?));
    }
    Ok(Applied { partition, remaps })
}
