//! The daemon: the pipeline, the monitor and the controller in one loop
//! that waits on frames, ticks and signal messages.
//!
//! ```text
//!   signals thread --Control--+
//!   pipeline  --Completed-----+--> select! --> record, metrics
//!   monitor tick -------------+         |----> observe -> Controller::step -> apply
//!   status / watchdog ticks --+         |----> reload: validate, swap Arc<Config>
//! ```
//!
//! Invariants:
//! * Frames in = frames out. The pipeline is only ever rebuilt (new model,
//!   PE set or load) by stopping the source and draining it: every admitted
//!   frame completes and is recorded before the new pipeline starts.
//! * A configuration is applied whole or not at all: everything that can
//!   fail (parsing, validation, building the model and the controller)
//!   happens before anything running is touched. A rejected reload leaves
//!   the old configuration in force.
//! * systemd hears READY=1 once frames flow, RELOADING=1 .. READY=1 around
//!   every reload (accepted or not) and STOPPING=1 before the drain.
//!
//! The loop is here; its parts are its siblings: `options` (the flags and
//! the configuration they make), `logging`, `engine` (the pipeline with its
//! frame source and observer), `serving` (the inference server), `tick`
//! (one monitor tick: observe, decide, apply), `reload` (a configuration
//! or cpuset change) and `report` (the lines and the summary it writes).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, after, never, select, tick};

use super::config::{Config, LoadMode, MetricsConfig};
use super::cpuset::CpusetWatch;
use super::engine::{Engine, Plan, counter_support};
use super::http::Server;
use super::lock::{LockError, StateLock};
pub use super::logging::{init_logging, set_log_level};
use super::metrics::{CgroupHintMetric, CgroupMetric};
use super::metrics::{Metrics, PeMetric, Snapshot, StageMetric};
use super::notify::Notifier;
pub use super::options::{Options, Overrides, Refused, load_config};
use super::report::{RunSummary, TimedEvent, describe, status_line};
use super::serving::Serving;
use super::signals::{self, Control};
use super::tick::PendingEffect;
use crate::agent::logging::say;
use crate::cgroup::escalation;
use crate::cgroup::hint::Hinter;
use crate::cgroup::systemd::{Systemd, UnitManager};
use crate::cpulist::CpuSet;
use crate::monitor::perf::{self, CounterSupport, PerfCounters};
use crate::pipeline::affinity::SchedAffinity;
use crate::pipeline::frame::Completed;
use crate::pipeline::recorder::{Recent, Recorder};
use crate::policy::PeSignals;
use crate::policy::controller::Controller;
use crate::server::admission::Refusal;
use crate::server::service::Answered;

/// Frames over which the SLO attainment and the p99 are computed.
const RECENT_FRAMES: usize = 256;

/// Completed frames taken at most per wake-up of the main loop, so ticks
/// and signals are still served when frames never stop coming.
const FRAME_BATCH: usize = 4096;

/// Detector events kept for the summary: the most recent ones.
const EVENTS_CAP: usize = 1024;

/// The running agent: the engine, the controller and everything around
/// them the loop serves.
pub(super) struct Daemon {
    pub(super) cfg: Arc<Config>,
    pub(super) opts: Options,
    pub(super) online: CpuSet,
    /// The effective cpuset of odin's cgroup.
    pub(super) cpuset: CpusetWatch,
    pub(super) probed: CounterSupport,
    pub(super) engine: Engine,
    pub(super) controller: Controller,
    pub(super) recorder: Recorder,
    pub(super) metrics: Arc<Metrics>,
    pub(super) server: Option<Server>,
    /// The inference server, when serving.
    pub(super) serving: Option<Serving>,
    pub(super) notifier: Notifier,
    pub(super) start: Instant,
    /// Frames admitted and rejected by pipelines already drained.
    pub(super) admitted_before: u64,
    pub(super) rejected_before: u64,
    pub(super) reloads: u64,
    pub(super) recent_ms: VecDeque<f64>,
    pub(super) last_frames: u64,
    pub(super) last_tick: Instant,
    pub(super) last_fps: f64,
    pub(super) last_pes: Vec<PeSignals>,
    pub(super) events: Recent<TimedEvent>,
    /// The last decision, until its effect is measured.
    pub(super) pending_effect: Option<PendingEffect>,
    /// cgroup hints against antagonists (advise or enforce).
    pub(super) cgroup: Hinter,
    /// The exclusive lock on the state directory, while it can be had.
    pub(super) state_lock: Option<StateLock>,
}

/// How long a stop waits for the accepted requests to be served.
const SERVE_OUT: Duration = Duration::from_secs(120);

/// Runs `odin run` with the validated configuration `cfg` until the
/// duration ends or a stop signal arrives.
pub fn run(cfg: Config, opts: Options, online: CpuSet) -> Result<()> {
    // Handlers first: a SIGHUP during start-up must not kill the process.
    let controls = signals::spawn().context("installing signal handlers")?;
    let notifier = Notifier::from_env().unwrap_or_else(|e| {
        tracing::warn!("NOTIFY_SOCKET unusable, not notifying systemd: {e}");
        Notifier::disabled()
    });
    set_log_level(&cfg.log.level);
    let controller = Controller::build(&cfg.policy.name, &cfg.policy.params).map_err(Refused)?;
    let cpuset = CpusetWatch::locate(Path::new("/"), "self");
    let plan = Plan::new(
        &cfg,
        &online,
        cpuset.allowed(),
        opts.overrides.follow_symlinks,
    )?;
    let mut counters = PerfCounters::new();
    let probed = perf::probe(&mut counters, Path::new("/"));
    drop(counters);
    let support = counter_support(&cfg, &probed);
    if !support.has_hardware() {
        tracing::warn!("{support}; detection runs on stage times and scheduler signals");
    }
    let metrics = Arc::new(Metrics::default());
    let server = start_metrics(&cfg.metrics, &metrics);
    // This agent's state directory, then what a crashed run left there
    // undone, before anything else runs.
    let state_lock = lock_state(&cfg.cgroup.state_dir)?;
    // Whatever way the process ends, odin's cgroup changes go with it: a
    // forced exit (a third stop signal, or a hurried stop that hangs) and
    // a panic on this thread undo from the journal.
    let units = systemd_manager(&cfg.cgroup.root);
    let last_resort = LastResort {
        root: cfg.cgroup.root.clone(),
        state_dir: cfg.cgroup.state_dir.clone(),
        units: units.clone(),
    };
    {
        let l = last_resort.clone();
        signals::on_forced_exit(move || l.undo("a forced exit"));
    }
    let cgroup = Hinter::start(
        cfg.cgroup.settings(),
        Arc::new(crate::cgroup::Kernel),
        units,
        std::process::id() as i32,
    );
    let partition = plan.partition.clone();
    let mut plan = plan;
    let serving = match plan.served.take() {
        Some(model) => {
            let s = Serving::start(&cfg.server, model, &plan.pes, &online)?;
            metrics.set_serving(s.service.stats().clone());
            Some(s)
        }
        None => None,
    };
    if serving.is_some() && cfg.load.mode == LoadMode::Open {
        tracing::warn!("load.mode open is ignored while serving: requests are the load");
    }
    let admission = serving.as_ref().map(|s| s.service.admission().clone());
    let engine = Engine::start(
        plan,
        &support,
        cfg.monitor.antagonists,
        admission.as_ref(),
        Arc::new(SchedAffinity),
    )?;
    if let Some(s) = &serving {
        s.service.set_ready(true);
    }
    let start = Instant::now();
    let mut d = Daemon {
        recorder: Recorder::new(start, &partition),
        cfg: Arc::new(cfg),
        opts,
        online,
        cpuset,
        probed,
        engine,
        controller,
        metrics,
        server,
        serving,
        notifier,
        start,
        admitted_before: 0,
        rejected_before: 0,
        reloads: 0,
        recent_ms: VecDeque::with_capacity(RECENT_FRAMES),
        last_frames: 0,
        last_tick: start,
        last_fps: 0.0,
        last_pes: Vec::new(),
        events: Recent::new(EVENTS_CAP),
        pending_effect: None,
        cgroup,
        state_lock,
    };
    say!("{}", d.startup_line());
    d.publish();
    d.notify(|n, s| n.ready(s));
    d.run_loop(&controls);
    d.notify(|n, _| n.stopping());
    d.serve_out();
    d.finish()
}

/// Undoes odin's cgroup changes from the journal when the daemon cannot
/// (a forced exit, a panic): the same undo as at the next start.
#[derive(Clone, Debug)]
struct LastResort {
    root: PathBuf,
    state_dir: PathBuf,
    units: Option<Arc<dyn UnitManager>>,
}

impl LastResort {
    pub(super) fn undo(&self, why: &str) {
        match crate::cgroup::enforce::restore(
            &crate::cgroup::Kernel,
            &self.root,
            &self.state_dir,
            self.units.as_deref(),
        ) {
            Ok(r) if r.is_empty() => {}
            Ok(r) => eprintln!(
                "odin: {why}: undid {} cgroup changes ({} failed)",
                r.done.len(),
                r.failed.len()
            ),
            Err(e) => eprintln!("odin: {why}: cgroup changes not undone: {e}"),
        }
    }
}

impl Drop for LastResort {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.undo("a panic");
        }
    }
}

/// systemd's manager, when systemd runs the machine under `root`: a
/// v2 antagonist whose cgroup is a unit is then capped through it, and a
/// unit quota in the journal restored through it.
fn systemd_manager(root: &Path) -> Option<Arc<dyn UnitManager>> {
    match Systemd::connect_under(root) {
        Ok(s) => {
            tracing::info!(
                "systemd's manager is on the system bus: a unit is capped with a runtime CPUQuota"
            );
            Some(Arc::new(s))
        }
        Err(e) => {
            tracing::debug!("no systemd manager ({e}): cgroups are capped through their files");
            None
        }
    }
}

/// Takes the lock on the state directory `dir`: refused (exit 2) when
/// another agent holds it; `None`, with a warning, when the directory is
/// not usable (the journal then refuses it too, and enforce acts as
/// advise).
pub(super) fn lock_state(dir: &Path) -> Result<Option<StateLock>> {
    match StateLock::acquire(dir) {
        Ok(l) => Ok(Some(l)),
        Err(e @ LockError::Held { .. }) => Err(Refused(e.to_string()).into()),
        Err(e) => {
            tracing::warn!("{e}; cgroup changes can be neither journalled nor undone");
            Ok(None)
        }
    }
}

pub(super) fn start_metrics(cfg: &MetricsConfig, metrics: &Arc<Metrics>) -> Option<Server> {
    if !cfg.enabled {
        return None;
    }
    if !cfg.listen.ip().is_loopback() {
        tracing::warn!(
            "metrics listen on {}, not a loopback address: anyone who reaches it sees the pipeline's state",
            cfg.listen
        );
    }
    let started =
        std::net::TcpListener::bind(cfg.listen).and_then(|l| Server::start(l, metrics.clone()));
    match started {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("metrics endpoint on {} not started: {e}", cfg.listen);
            None
        }
    }
}

impl Daemon {
    pub(super) fn startup_line(&self) -> String {
        let e = &self.engine;
        format!(
            "odin run: {} ({} units) on {} stages, partition {}, {}, policy {}{}",
            e.model.name(),
            e.model.len(),
            e.pes.len(),
            e.pipeline.partition(),
            e.describe_load(),
            self.controller.policy_name(),
            match &self.server {
                Some(s) => format!(", metrics on http://{}/metrics", s.addr()),
                None => String::new(),
            }
        ) + &match &self.serving {
            Some(s) => format!(", {}", s.describe()),
            None => String::new(),
        }
    }

    pub(super) fn notify(&self, f: impl FnOnce(&Notifier, &str) -> std::io::Result<()>) {
        let status = format!(
            "{:.1} frames/s, partition {}, policy {}",
            self.last_fps,
            describe(&self.engine.placement(), &self.engine.pes),
            self.controller.policy_name()
        );
        if let Err(e) = f(&self.notifier, &status) {
            tracing::debug!("sd_notify: {e}");
        }
    }

    pub(super) fn run_loop(&mut self, controls: &Receiver<Control>) {
        let status = tick(Duration::from_secs(1));
        let mut monitor = tick(Duration::from_millis(self.cfg.monitor.tick_ms));
        let watchdog = self
            .notifier
            .watchdog_interval()
            .map_or_else(never, |d| tick(d / 2));
        let deadline = self.opts.duration.map_or_else(never, after);
        let answered = self
            .serving
            .as_ref()
            .map_or_else(never, |s| s.answered.clone());
        loop {
            let done = self.engine.pipeline.completed().clone();
            let mut retick = false;
            select! {
                recv(answered) -> a => if let Ok(a) = a {
                    self.request_answered(a);
                },
                recv(done) -> c => match c {
                    Ok(c) => self.on_frame(&c),
                    Err(_) => {
                        tracing::error!("the pipeline stopped on its own");
                        break;
                    }
                },
                recv(status) -> _ => self.each_second(),
                recv(monitor) -> now => self.on_tick(now.unwrap_or_else(|_| Instant::now())),
                recv(watchdog) -> _ => self.notify(|n, _| n.watchdog()),
                recv(deadline) -> _ => break,
                recv(controls) -> c => match c {
                    Ok(Control::Reload) => retick = self.reload(),
                    Ok(Control::Dump) => self.dump(),
                    Ok(Control::Stop(s)) => {
                        tracing::info!("signal {s}: draining");
                        break;
                    }
                    Err(_) => break,
                },
            }
            if retick {
                monitor = tick(Duration::from_millis(self.cfg.monitor.tick_ms));
            }
        }
    }

    /// A frame of the running pipeline: recorded, then (when serving)
    /// routed to its request; a client that sees the answer sees the frame
    /// in the metrics.
    pub(super) fn on_frame(&mut self, c: &Completed) {
        self.complete_frame(c);
        // What else has completed is taken now, not one wake-up of the loop
        // each: the completion queue is unbounded, and a tiny model
        // completes frames faster than the loop turns.
        let done = self.engine.pipeline.completed().clone();
        for c in done.try_iter().take(FRAME_BATCH) {
            self.complete_frame(&c);
        }
    }

    pub(super) fn complete_frame(&mut self, c: &Completed) {
        self.record_frame(c);
        self.engine.feed.complete(c);
    }

    pub(super) fn record_frame(&mut self, c: &Completed) {
        self.recorder.record(c);
        let secs = c.latency.as_secs_f64();
        self.metrics.frame_done(secs);
        if self.serving.is_none() {
            self.recent_latency(secs * 1e3);
        }
    }

    /// When serving, the latency objective is on what clients see: each
    /// request's arrival to its response.
    pub(super) fn request_answered(&mut self, a: Answered) {
        self.recent_latency(a.latency.as_secs_f64() * 1e3);
    }

    pub(super) fn recent_latency(&mut self, ms: f64) {
        if self.recent_ms.len() == RECENT_FRAMES {
            self.recent_ms.pop_front();
        }
        self.recent_ms.push_back(ms);
    }

    pub(super) fn each_second(&mut self) {
        let now = Instant::now();
        let entry = self
            .recorder
            .close_window(now, self.engine.pipeline.partition().cuts());
        self.last_fps = entry.throughput_fps;
        say!(
            "{}",
            status_line(&entry, &self.engine.pipeline.stage_stats())
        );
        self.notify(|n, s| n.status(s));
    }

    pub(super) fn recent_p99(&self) -> Option<f64> {
        if self.recent_ms.is_empty() {
            return None;
        }
        let mut v: Vec<f64> = self.recent_ms.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        Some(crate::stats::percentile(&v, 0.99))
    }

    pub(super) fn publish_cgroup(&self) {
        let st = self.cgroup.status();
        let hint = st.hint.as_ref();
        self.metrics.set_cgroup(CgroupMetric {
            mode: st.effective.as_str().to_string(),
            escalated: st.escalated,
            hints: hint.map_or_else(Vec::new, |h| {
                h.tasks
                    .iter()
                    .map(|t| CgroupHintMetric {
                        pid: t.pid,
                        comm: t.comm.clone(),
                        cgroup: t.cgroup.clone(),
                        target: t.target.clone(),
                        limit: t.limit.clone(),
                    })
                    .collect()
            }),
            expected_gain_cpus: hint.map(|h| h.expected_gain_cpus),
            enforcements: st.enforcements,
            lifts: st.lifts,
            capped_tasks: st.capped_tasks,
        });
    }

    pub(super) fn publish(&self) {
        self.publish_with(Some(self.last_fps));
    }

    pub(super) fn publish_with(&self, throughput: Option<f64>) {
        let e = &self.engine;
        let stats = e.pipeline.stage_stats();
        let views = e.views();
        let detector = self.controller.detector();
        let pes = e
            .pes
            .iter()
            .enumerate()
            .map(|(i, cpus)| {
                let sig = self.last_pes.get(i);
                PeMetric {
                    cpus: cpus.to_string(),
                    interference: views
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| v.pe == i)
                        .find_map(|(s, _)| detector.interfered(s))
                        .map(|k| k.as_str()),
                    ipc: sig.and_then(|s| s.ipc),
                    llc_mpki: sig.and_then(|s| s.llc_mpki),
                    run_delay_ratio: sig.and_then(|s| s.run_delay_share),
                }
            })
            .collect();
        let mut unavailable = Vec::new();
        let support = counter_support(&self.cfg, &self.probed);
        match &support {
            CounterSupport::Hardware => {}
            CounterSupport::SoftwareOnly { reason, .. } => {
                unavailable.push(("hw_counters".to_string(), reason.clone()));
            }
            CounterSupport::None { reason, .. } => {
                unavailable.push(("hw_counters".to_string(), reason.clone()));
                unavailable.push(("sw_counters".to_string(), reason.clone()));
            }
        }
        if !self.last_pes.is_empty() && e.observer.pressure().is_none() {
            unavailable.push((
                "psi".to_string(),
                "/proc/pressure/cpu is not readable (kernel without PSI?)".to_string(),
            ));
        }
        if let Some(reason) = self.cgroup.degraded() {
            unavailable.push(("cgroup_enforce".to_string(), reason.to_string()));
        }
        let slo_attainment =
            escalation::attainment(self.cfg.slo.latency_ms, self.recent_ms.iter().copied());
        self.metrics.publish(Snapshot {
            model: e.model.name().to_string(),
            policy: self.controller.policy_name().to_string(),
            throughput_fps: throughput.unwrap_or(self.last_fps),
            stages: stats
                .iter()
                .map(|s| StageMetric {
                    pe: s.pe.to_string(),
                    units: s.units,
                    service_seconds: s.service_ms / 1e3,
                })
                .collect(),
            pes,
            slo_attainment,
            unavailable,
        });
    }

    /// SIGUSR1: the whole state in one log line.
    pub(super) fn dump(&self) {
        let stats = self.engine.pipeline.stage_stats();
        tracing::info!(
            config = serde_json::to_string(&*self.cfg).unwrap_or_default(),
            partition = %self.engine.pipeline.partition(),
            placement = describe(&self.engine.placement(), &self.engine.pes),
            stages = ?stats,
            controller = ?self.controller,
            unit_ms = ?self.engine.observer.unit_ms(),
            calibrated = self.engine.observer.calibrated(),
            pes = ?self.last_pes,
            frames = self.recorder.frames(),
            admitted = self.admitted_before + self.engine.pipeline.admitted(),
            rejected = self.rejected_before + self.engine.pipeline.rejected(),
            reloads = self.reloads,
            "state dump"
        );
    }

    /// Stopping while serving: readiness goes false and new requests are
    /// refused (503), while every accepted request is still served by the
    /// running pipeline.
    pub(super) fn serve_out(&mut self) {
        let Some(s) = &self.serving else {
            return;
        };
        let service = s.service.clone();
        service.set_ready(false);
        service.admission().close();
        let started = Instant::now();
        let done = self.engine.pipeline.completed().clone();
        while service.admission().pending() > 0 || self.engine.feed.owed() > 0 {
            if signals::hurried() {
                tracing::warn!(
                    "stop cut short: {} queued requests refused, {} in the pipeline",
                    service.admission().pending(),
                    self.engine.feed.owed()
                );
                break;
            }
            if started.elapsed() > SERVE_OUT {
                tracing::error!(
                    "requests still unanswered {} s after the stop: {} queued, {} in the pipeline",
                    SERVE_OUT.as_secs(),
                    service.admission().pending(),
                    self.engine.feed.owed()
                );
                break;
            }
            match done.recv_timeout(Duration::from_millis(100)) {
                Ok(c) => self.on_frame(&c),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    pub(super) fn finish(self) -> Result<()> {
        let Daemon {
            engine,
            mut recorder,
            metrics,
            serving,
            opts,
            admitted_before,
            rejected_before,
            reloads,
            events,
            mut cgroup,
            ..
        } = self;
        let model = engine.model.name().to_string();
        let failure = engine.pipeline.failure();
        let drained = engine.drain();
        if let Some(s) = serving {
            // Whatever is still queued will not run: answered now.
            let refused = s.service.admission().refuse_queued(Refusal::ShuttingDown);
            if refused > 0 {
                tracing::warn!("{refused} queued requests refused at the stop");
            }
            // The last responses are written before the listeners close.
            s.net.shutdown();
            let st = s.service.stats();
            let name = s.service.model().desc.name.clone();
            say!(
                "served {name:?}: {} requests answered, {} refused or failed",
                st.successes(&name),
                st.failures_total(&name)
            );
        }
        // The pipeline kept its weight while draining; now the cap goes.
        cgroup.finish();
        for c in &drained.rest {
            recorder.record(c);
            metrics.frame_done(c.latency.as_secs_f64());
        }
        let admitted = admitted_before + drained.admitted;
        let rejected = rejected_before + drained.rejected;
        metrics.set_rejected(rejected);
        let summary = recorder.into_summary(&model, rejected, &drained.stats, Instant::now());
        say!(
            "done: {} frames in {:.1} s, {:.2} frames/s, p50 {:.1} ms, p99 {:.1} ms, {} rejected",
            summary.frames,
            summary.duration_s,
            summary.throughput_fps,
            summary.latency_ms.p50,
            summary.latency_ms.p99,
            summary.rejected
        );
        if summary.frames != admitted {
            tracing::error!(
                "frames lost: {admitted} admitted, {} completed",
                summary.frames
            );
        }
        if let Some(path) = &opts.json_summary {
            let text = serde_json::to_string_pretty(&RunSummary {
                summary: &summary,
                admitted,
                reloads,
                events: &events,
                events_dropped: events.dropped(),
            })?;
            std::fs::write(path, text + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
        match failure {
            Some(f) => anyhow::bail!(
                "{f}; {} of {admitted} admitted frames did not complete",
                admitted.saturating_sub(summary.frames)
            ),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::journal::{Entry, Journal};
    use crate::cgroup::testutil::FakeTree;

    /// A panic on the daemon's thread still removes the cgroup the journal
    /// says odin created.
    #[test]
    pub(super) fn a_panic_undoes_the_journal() {
        let t = FakeTree::v1();
        let cpu = crate::cgroup::Layout::detect(t.dir.path())
            .unwrap()
            .hierarchy("cpu")
            .unwrap();
        let made = cpu.dir("/odin");
        std::fs::create_dir(&made).unwrap();
        let state = t.path("var/lib/odin");
        Journal::open(&state)
            .unwrap()
            .record(Entry::Mkdir {
                hierarchy: cpu,
                path: made.clone(),
            })
            .unwrap();
        let guard = LastResort {
            root: t.dir.path().to_path_buf(),
            state_dir: state.clone(),
            units: None,
        };
        // Dropped normally: nothing happens.
        drop(guard.clone());
        assert!(made.is_dir());
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _guard = guard;
            panic!("a bug in the daemon");
        }));
        assert!(unwound.is_err());
        assert!(!made.exists(), "the cgroup outlived the panic");
        assert!(!state.join(crate::cgroup::journal::FILE).exists());
    }
}
