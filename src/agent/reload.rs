//! Configuration changes: a SIGHUP reload and a change of the cpuset of
//! odin's cgroup, applied in place or by rebuilding the pipeline.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;

use super::config::Config;
use super::daemon::{Daemon, load_config, lock_state, set_log_level, start_metrics};
use super::engine::{Engine, FileStamp, Plan, counter_support, model_stamp};
use super::options::Refused;
use super::serving::{served_model, server_settings};
use crate::cpulist::CpuSet;
use crate::pipeline::affinity::SchedAffinity;
use crate::policy::controller::Controller;

/// What a new configuration changes: what is applied in place and what
/// is rebuilt, decided from the two configurations and the model file's
/// stamps alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Changes {
    /// Another state directory: its lock is taken first.
    pub(super) relock: bool,
    /// A new pipeline (model, PEs, load, or the model file replaced).
    pub(super) rebuild: bool,
    /// A new controller (a new pipeline, or the policy changed).
    pub(super) controller: bool,
    /// The objective.
    pub(super) slo: bool,
    /// The log level.
    pub(super) log_level: bool,
    /// The metrics endpoint, restarted.
    pub(super) metrics: bool,
    /// The server's settings, set in place.
    pub(super) server: bool,
    /// The served model's name or batch size, set in place (a rebuild sets
    /// the whole model).
    pub(super) served_model: bool,
    /// Naming antagonists.
    pub(super) naming: bool,
    /// The monitor tick.
    pub(super) retick: bool,
    /// The cgroup hints.
    pub(super) cgroup: bool,
}

impl Changes {
    /// From `old` to `new`; `old_stamp` and `new_stamp` identify the model
    /// file as running and as it is now.
    pub(super) fn between(
        old: &Config,
        new: &Config,
        old_stamp: Option<FileStamp>,
        new_stamp: Option<FileStamp>,
    ) -> Self {
        let rebuild = old.model != new.model
            || old.pes != new.pes
            || old.load != new.load
            || old_stamp != new_stamp;
        let server = old.server != new.server;
        Self {
            relock: new.cgroup.state_dir != old.cgroup.state_dir,
            rebuild,
            controller: rebuild || old.policy != new.policy,
            slo: old.slo != new.slo,
            log_level: old.log.level != new.log.level,
            metrics: old.metrics != new.metrics,
            server,
            served_model: server
                && !rebuild
                && (old.server.model_name != new.server.model_name
                    || old.server.max_batch_size != new.server.max_batch_size),
            naming: old.monitor.antagonists != new.monitor.antagonists,
            retick: old.monitor.tick_ms != new.monitor.tick_ms,
            cgroup: old.cgroup != new.cgroup,
        }
    }
}

impl Daemon {
    /// Follows a change of the CPUs odin's cgroup allows: the pipeline is
    /// planned again on what is left of each PE (and back on the
    /// configured PEs when they return), without losing a frame.
    pub(super) fn check_cpuset(&mut self) {
        let Some(change) = self.cpuset.poll() else {
            return;
        };
        let from = change
            .from
            .as_ref()
            .map_or_else(|| "unknown".to_string(), CpuSet::to_string);
        let file = self
            .cpuset
            .file()
            .map_or_else(String::new, |f| f.display().to_string());
        let plan = match Plan::new(
            &self.cfg,
            &self.online,
            Some(&change.to),
            self.opts.overrides.follow_symlinks,
        ) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(
                    "the cpuset of odin's cgroup changed ({file}: CPUs {from} -> {}), \
                     but no pipeline fits it, keeping the current one: {e:#}",
                    change.to
                );
                return;
            }
        };
        let pes = |p: &[CpuSet]| {
            p.iter()
                .map(CpuSet::to_string)
                .collect::<Vec<_>>()
                .join(";")
        };
        if plan.pes == self.engine.pes {
            tracing::warn!(
                "the cpuset of odin's cgroup changed ({file}: CPUs {from} -> {}); every PE keeps its CPUs",
                change.to
            );
            return;
        }
        tracing::warn!(
            "the cpuset of odin's cgroup changed ({file}: CPUs {from} -> {}); PEs {} -> {}: rebuilding the pipeline",
            change.to,
            pes(&self.engine.pes),
            pes(&plan.pes)
        );
        let controller = match Controller::build(&self.cfg.policy.name, &self.cfg.policy.params) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("rebuilding the controller: {e}");
                return;
            }
        };
        match self.rebuild(plan, &self.cfg.clone()) {
            Ok(()) => {
                self.controller = controller;
                self.metrics
                    .reconfigured(self.controller.policy_name(), "cpuset");
            }
            Err(e) => tracing::error!("rebuilding the pipeline for the new cpuset: {e:#}"),
        }
    }

    /// SIGHUP: re-read, validate, apply in place or rebuild; the old
    /// configuration stays on any error. Returns whether the monitor tick
    /// changed.
    pub(super) fn reload(&mut self) -> bool {
        self.notify(|n, _| n.reloading());
        let Some(path) = self.opts.config_path.clone() else {
            tracing::info!("SIGHUP: running without --config, nothing to reload");
            self.notify(|n, s| n.ready(s));
            return false;
        };
        let outcome = load_config(Some(&path), &self.opts.overrides, &self.online)
            .map_err(anyhow::Error::from)
            .and_then(|new| self.apply_config(new));
        let retick = match outcome {
            Ok((changes, retick)) => {
                self.metrics.reload(true);
                self.reloads += 1;
                tracing::info!(
                    "reloaded {}: {}",
                    path.display(),
                    if changes.is_empty() {
                        "no change".to_string()
                    } else {
                        changes.join(", ")
                    }
                );
                retick
            }
            Err(e) => {
                self.metrics.reload(false);
                tracing::error!("reload rejected, keeping the running configuration: {e:#}");
                false
            }
        };
        self.publish();
        self.notify(|n, s| n.ready(s));
        retick
    }

    /// Applies a validated configuration; what changed, and whether the
    /// tick did.
    pub(super) fn apply_config(&mut self, new: Config) -> Result<(Vec<String>, bool)> {
        let old = self.cfg.clone();
        let mut changes = Vec::new();
        let c = Changes::between(
            &old,
            &new,
            self.engine.stamp,
            model_stamp(&new.model.source()),
        );
        // Another state directory: this agent's before anything changes.
        let relocked = if c.relock {
            let lock = lock_state(&new.cgroup.state_dir)?;
            changes.push(format!(
                "state directory {} -> {}",
                old.cgroup.state_dir.display(),
                new.cgroup.state_dir.display()
            ));
            Some(lock)
        } else {
            None
        };
        // Everything that can fail comes first.
        let plan = if c.rebuild {
            Some(Plan::new(
                &new,
                &self.online,
                self.cpuset.allowed(),
                self.opts.overrides.follow_symlinks,
            )?)
        } else {
            None
        };
        let controller = if c.controller {
            Some(Controller::build(&new.policy.name, &new.policy.params).map_err(Refused)?)
        } else {
            None
        };
        // Nothing below fails without the old state being replaced whole.
        if let Some(plan) = plan {
            changes.push(format!(
                "pipeline rebuilt ({} on {} PEs, {})",
                plan.model.name(),
                plan.pes.len(),
                plan.load.describe()
            ));
            self.rebuild(plan, &new)?;
        }
        if let Some(controller) = controller {
            changes.push(format!(
                "controller rebuilt ({} -> {})",
                old.policy.name, new.policy.name
            ));
            self.controller = controller;
        }
        if c.slo {
            changes.push("slo".into());
        }
        if c.log_level {
            set_log_level(&new.log.level);
            changes.push(format!("log level {} -> {}", old.log.level, new.log.level));
        }
        if c.metrics {
            self.server = None;
            self.server = start_metrics(&new.metrics, &self.metrics);
            changes.push(match &self.server {
                Some(s) => format!("metrics on http://{}/metrics", s.addr()),
                None => "metrics off".into(),
            });
        }
        if c.server
            && let Some(s) = &self.serving
        {
            let restart = old.server.restart_fields(&new.server);
            if !restart.is_empty() {
                tracing::warn!(
                    "{} changed: applied at the next start; the server keeps {}",
                    restart.join(", "),
                    s.describe()
                );
            }
            s.service.set_settings(server_settings(&new.server));
            if c.served_model {
                s.service.set_model(served_model(
                    &new,
                    &new.model.source(),
                    &self.engine.model,
                    &self.engine.io,
                )?);
            }
            changes.push("server".into());
        }
        if c.naming {
            self.engine.observer.set_naming(new.monitor.antagonists);
            changes.push(format!(
                "naming antagonists {}",
                if new.monitor.antagonists { "on" } else { "off" }
            ));
        }
        let retick = c.retick;
        if retick {
            changes.push(format!(
                "monitor tick {} -> {} ms",
                old.monitor.tick_ms, new.monitor.tick_ms
            ));
        }
        if c.cgroup {
            changes.push(
                self.cgroup
                    .reconfigure(new.cgroup.settings())
                    .unwrap_or_else(|| "cgroup".into()),
            );
            self.publish_cgroup();
        }
        if let Some(lock) = relocked {
            self.state_lock = lock;
        }
        self.cfg = Arc::new(new);
        Ok((changes, retick))
    }

    /// Drains the running pipeline (every admitted frame completes) and
    /// starts `plan`, monitored as `cfg` says; the new partition is
    /// recorded.
    pub(super) fn rebuild(&mut self, mut plan: Plan, cfg: &Config) -> Result<()> {
        let partition = plan.partition.clone();
        let support = counter_support(cfg, &self.probed);
        let served = plan.served.take();
        let admission = self.serving.as_ref().map(|s| s.service.admission().clone());
        let next = Engine::start(
            plan,
            &support,
            cfg.monitor.antagonists,
            admission.as_ref(),
            Arc::new(SchedAffinity),
        )?;
        if let (Some(s), Some(m)) = (&self.serving, served) {
            s.service.set_model(m);
        }
        let old = std::mem::replace(&mut self.engine, next);
        // The old pipeline's router answered its requests; its frame ids
        // mean nothing to the new one's.
        let drained = old.drain();
        for c in &drained.rest {
            self.record_frame(c);
        }
        self.admitted_before += drained.admitted;
        self.rejected_before += drained.rejected;
        self.recorder.partition_changed(Instant::now(), &partition);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::config::LoadMode;

    fn stamp(len: u64) -> Option<FileStamp> {
        Some(FileStamp {
            modified: None,
            len,
            inode: 1,
        })
    }

    #[test]
    fn changes_between_configurations() {
        type Edit = fn(&mut Config);
        let none = Changes::default();
        let cases: [(&str, Edit, Changes); 12] = [
            ("nothing", |_| {}, none),
            (
                "model",
                |c| c.model.seed += 1,
                Changes {
                    rebuild: true,
                    controller: true,
                    ..none
                },
            ),
            (
                "pes",
                |c| c.pes = vec!["0".into()],
                Changes {
                    rebuild: true,
                    controller: true,
                    ..none
                },
            ),
            (
                "load",
                |c| c.load.mode = LoadMode::Open,
                Changes {
                    rebuild: true,
                    controller: true,
                    ..none
                },
            ),
            (
                "policy",
                |c| c.policy.name = "lls".into(),
                Changes {
                    controller: true,
                    ..none
                },
            ),
            (
                "slo",
                |c| c.slo.latency_ms = Some(50.0),
                Changes { slo: true, ..none },
            ),
            (
                "log level",
                |c| c.log.level = "debug".into(),
                Changes {
                    log_level: true,
                    ..none
                },
            ),
            (
                "metrics",
                |c| c.metrics.enabled = !c.metrics.enabled,
                Changes {
                    metrics: true,
                    ..none
                },
            ),
            (
                "served model",
                |c| c.server.model_name = Some("m".into()),
                Changes {
                    server: true,
                    served_model: true,
                    ..none
                },
            ),
            (
                "naming",
                |c| c.monitor.antagonists = !c.monitor.antagonists,
                Changes {
                    naming: true,
                    ..none
                },
            ),
            (
                "tick",
                |c| c.monitor.tick_ms += 1,
                Changes {
                    retick: true,
                    ..none
                },
            ),
            (
                "state directory",
                |c| c.cgroup.state_dir = "/elsewhere".into(),
                Changes {
                    relock: true,
                    cgroup: true,
                    ..none
                },
            ),
        ];
        for (what, edit, want) in cases {
            let old = Config::default();
            let mut new = old.clone();
            edit(&mut new);
            assert_eq!(Changes::between(&old, &new, None, None), want, "{what}");
        }
    }

    #[test]
    fn a_replaced_model_file_rebuilds_and_a_rebuild_sets_the_whole_served_model() {
        let old = Config::default();
        assert_eq!(
            Changes::between(&old, &old, stamp(1), stamp(2)),
            Changes {
                rebuild: true,
                controller: true,
                ..Changes::default()
            }
        );
        let mut new = old.clone();
        new.server.max_batch_size += 1;
        new.model.seed += 1;
        let c = Changes::between(&old, &new, None, None);
        assert!(c.server && c.rebuild && !c.served_model);
    }
}
