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

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, after, never, select, tick};
use serde::Serialize;

use super::config::{Config, ConfigError, LoadMode, MetricsConfig, ServerConfig};
use super::cpuset::{self, CpusetWatch};
use super::http::Server;
use super::lock::{LockError, StateLock};
use super::metrics::{CgroupHintMetric, CgroupMetric};
use super::metrics::{Metrics, PeMetric, Snapshot, StageMetric};
use super::notify::Notifier;
use super::signals::{self, Control};
use crate::cgroup::escalation::slo_status;
use crate::cgroup::hint::{self, Hinter};
use crate::cgroup::systemd::{Systemd, UnitManager};
use crate::cpulist::CpuSet;
use crate::engine::open::{ModelIo, ModelSource};
use crate::engine::profile::CostProfile;
use crate::engine::{Model, Tensor};
use crate::monitor::observer::{Observer, StageView};
use crate::monitor::perf::{self, CounterSupport, PerfCounters};
use crate::monitor::procfs::ProcReader;
use crate::pipeline::affinity::{Affinity, AffinityError, SchedAffinity};
use crate::pipeline::frame::Completed;
use crate::pipeline::recorder::{Recent, Recorder, Summary, TimelineEntry};
use crate::pipeline::source::{Arrivals, Source};
use crate::pipeline::{Partition, Pipeline, PipelineConfig, StageStats};
use crate::policy::controller::Controller;
use crate::policy::cost::{self, CostModel};
use crate::policy::detector::Event;
use crate::policy::{Action, Observation, PeSignals, Placement};
use crate::server::admission::{Admission, Feeder, Refusal, Router};
use crate::server::image::Labels;
use crate::server::net::{Bounds, Listen, Net};
use crate::server::protocol::Limits;
use crate::server::service::{Answered, ServedModel, Service, Settings};
use crate::server::stats::ServingStats;

/// Undisturbed run time after which the expectations are calibrated.
const CALIBRATION: Duration = Duration::from_secs(1);

/// How long calibration waits for a PE that is not time-shared.
const CALIBRATION_MAX: Duration = Duration::from_secs(5);

/// FLOP rate assumed for the initial partition when no profile is given.
const NOMINAL_GFLOPS: f64 = 50.0;

/// Frames over which the SLO attainment and the p99 are computed.
const RECENT_FRAMES: usize = 256;

/// Completed frames taken at most per wake-up of the main loop, so ticks
/// and signals are still served when frames never stop coming.
const FRAME_BATCH: usize = 4096;

/// Detector events kept for the summary: the most recent ones.
const EVENTS_CAP: usize = 1024;

/// Set once stdout is gone (a closed pipe, `odin run | head`): the status
/// lines stop, the run goes on.
static STDOUT_GONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes one line to stdout; a write error (EPIPE) never panics: it ends
/// the lines, says so once on stderr, and the run goes on.
fn say_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        STDOUT_GONE.store(true, Ordering::Relaxed);
        tracing::warn!("stdout closed ({e}): no more status lines; the run goes on");
    }
}

/// `println!` that never panics: see [`say_line`].
macro_rules! say {
    ($($arg:tt)*) => {
        say_line(format_args!($($arg)*))
    };
}

/// A configuration that cannot run (as opposed to a failure while
/// running): the CLI maps it to exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Command-line flags that override the file, on start and on every
/// reload.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--model`: a built-in name or an ONNX file.
    pub model: Option<String>,
    /// `--input-shape`.
    pub input_shape: Option<Vec<usize>>,
    /// `--pes`, one CPU list per PE.
    pub pes: Option<Vec<String>>,
    /// `--rate`: open loop at this rate.
    pub rate: Option<f64>,
    /// `--policy`.
    pub policy: Option<String>,
    /// `--profile`.
    pub profile: Option<PathBuf>,
    /// `--seed`.
    pub seed: Option<u64>,
    /// `--http`: serve REST here.
    pub http: Option<SocketAddr>,
    /// `--grpc`: serve gRPC here.
    pub grpc: Option<SocketAddr>,
    /// `--state-dir`: the cgroup journal and the instance lock here.
    pub state_dir: Option<PathBuf>,
    /// `--follow-symlinks`: trust a configuration or cost profile reached
    /// through a symbolic link (the checks apply to the file it resolves
    /// to).
    pub follow_symlinks: bool,
}

impl Overrides {
    /// Writes the flags given into `cfg`.
    pub fn apply(&self, cfg: &mut Config) {
        if let Some(m) = &self.model {
            match ModelSource::parse(m) {
                Ok(ModelSource::File(p)) => cfg.model.path = Some(p),
                // An unknown name is refused by validation, naming it.
                _ => {
                    cfg.model.name = m.clone();
                    cfg.model.path = None;
                }
            }
        }
        if let Some(s) = &self.input_shape {
            cfg.model.input_shape = Some(s.clone());
        }
        if let Some(p) = &self.pes {
            cfg.pes = p.clone();
        }
        if let Some(r) = self.rate {
            cfg.load.mode = LoadMode::Open;
            cfg.load.rate = Some(r);
        }
        if let Some(p) = &self.policy {
            cfg.policy.name = p.clone();
        }
        if let Some(p) = &self.profile {
            cfg.model.profile = Some(p.clone());
        }
        if let Some(s) = self.seed {
            cfg.model.seed = s;
        }
        if let Some(a) = self.http {
            cfg.server.enabled = true;
            cfg.server.http = Some(a);
        }
        if let Some(a) = self.grpc {
            cfg.server.enabled = true;
            cfg.server.grpc = Some(a);
        }
        if let Some(d) = &self.state_dir {
            cfg.cgroup.state_dir = d.clone();
        }
    }
}

/// How `odin run` was asked to run.
#[derive(Debug, Default)]
pub struct Options {
    /// `--config`: re-read on SIGHUP.
    pub config_path: Option<PathBuf>,
    /// Flags that override the file.
    pub overrides: Overrides,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Write the summary here at exit.
    pub json_summary: Option<PathBuf>,
}

/// The configuration at `path` (the defaults without one) with the
/// overrides applied, validated against the online CPUs.
pub fn load_config(
    path: Option<&Path>,
    overrides: &Overrides,
    online: &CpuSet,
) -> Result<Config, ConfigError> {
    let (mut cfg, text, source) = match path {
        Some(p) => {
            // Read once: what is parsed is what the flags are checked against.
            let text = Config::read(p, overrides.follow_symlinks)?;
            let source = p.display().to_string();
            (Config::parse(&text, &source, online)?, text, source)
        }
        None => (Config::default(), String::new(), "<defaults>".to_string()),
    };
    overrides.apply(&mut cfg);
    cfg.revalidate(
        &text,
        &format!("{source} with the command-line flags"),
        online,
    )?;
    Ok(cfg)
}

// ---------------------------------------------------------------- logging

type LevelSetter =
    Box<dyn Fn(tracing::level_filters::LevelFilter) -> Result<(), String> + Send + Sync>;

static LOG_LEVEL: OnceLock<LevelSetter> = OnceLock::new();

/// Installs the process's tracing subscriber: one line per event on
/// stderr, at a level [`set_log_level`] can change while running.
pub fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (level, handle) =
        tracing_subscriber::reload::Layer::new(tracing::level_filters::LevelFilter::INFO);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    tracing_subscriber::registry().with(level).with(fmt).init();
    let _ = LOG_LEVEL.set(Box::new(move |l| {
        handle.modify(|f| *f = l).map_err(|e| e.to_string())
    }));
}

/// Sets the log level (`error` .. `trace`); without [`init_logging`]
/// (a library user with its own subscriber) it does nothing.
pub fn set_log_level(level: &str) {
    let Ok(l) = level.parse::<tracing::level_filters::LevelFilter>() else {
        tracing::warn!("log level {level:?} not understood");
        return;
    };
    if let Some(set) = LOG_LEVEL.get()
        && let Err(e) = set(l)
    {
        tracing::warn!("cannot change the log level: {e}");
    }
}

// ---------------------------------------------------------------- engine

/// Everything needed to start a pipeline, built before anything running
/// is touched.
struct Plan {
    model: Arc<Model>,
    /// Names and dimensions of its input and output.
    io: ModelIo,
    /// The model as the server presents it, when serving.
    served: Option<ServedModel>,
    /// The model file as it was when read.
    stamp: Option<FileStamp>,
    unit_ms: Vec<f64>,
    pes: Vec<CpuSet>,
    partition: Partition,
    load: Arrivals,
    seed: u64,
}

impl Plan {
    /// The configured PEs (one per online CPU by default), narrowed to the
    /// CPUs odin's cgroup allows when that is known.
    fn new(cfg: &Config, online: &CpuSet, allowed: Option<&CpuSet>, follow: bool) -> Result<Self> {
        let mut pes = cfg
            .pe_sets()
            .unwrap_or_else(|| online.iter().map(CpuSet::single).collect());
        if let Some(allowed) = allowed {
            pes = cpuset::usable_pes(&pes, allowed);
        }
        let source = cfg.model.source();
        let stamp = model_stamp(&source);
        let (model, io) = source
            .open_with_io(cfg.model.seed, cfg.model.input_shape.as_deref())
            .map_err(|e| Refused(format!("model: {e}")))?;
        let model = Arc::new(model);
        let served = cfg
            .server
            .enabled
            .then(|| served_model(cfg, &source, &model, &io))
            .transpose()?;
        let profile = match &cfg.model.profile {
            Some(path) => {
                let p = CostProfile::load(path, follow)?;
                p.check_fits(&model)
                    .with_context(|| format!("profile {}", path.display()))?;
                p
            }
            None => CostProfile::nominal(&model, NOMINAL_GFLOPS),
        };
        if pes.len() > model.len() {
            return Err(Refused(format!(
                "pes: {} stages but {} has only {} units",
                pes.len(),
                model.name(),
                model.len()
            ))
            .into());
        }
        // A PE with more CPUs is proportionally faster.
        let speeds: Vec<f64> = pes.iter().map(|p| p.len() as f64).collect();
        let unit_ms = profile.unit_ms();
        let partition = Partition::optimal(&unit_ms, &speeds)?;
        let load = match (cfg.load.mode, cfg.load.rate) {
            (LoadMode::Open, Some(rate)) => Arrivals::Open { rate },
            _ => Arrivals::Closed,
        };
        Ok(Self {
            model,
            io,
            served,
            stamp,
            unit_ms,
            pes,
            partition,
            load,
            seed: cfg.model.seed,
        })
    }
}

/// The model as clients see it: named `server.model_name` or after the
/// model, batching up to `server.max_batch_size`, with `model.labels` and
/// `model.preprocess`.
fn served_model(
    cfg: &Config,
    source: &ModelSource,
    model: &Model,
    io: &ModelIo,
) -> Result<ServedModel, Refused> {
    let labels = cfg
        .model
        .labels
        .as_deref()
        .map(Labels::load)
        .transpose()
        .map_err(|e| Refused(format!("model.labels: {e}")))?;
    let platform = match source {
        ModelSource::Builtin(_) => "odin_builtin",
        ModelSource::File(_) => "odin_onnx",
    };
    let name = cfg
        .server
        .model_name
        .clone()
        .unwrap_or_else(|| source.name());
    Ok(ServedModel::new(
        &name,
        platform,
        model.input(),
        io,
        cfg.server.max_batch_size,
        cfg.model.preprocess.clone(),
        labels.map(Arc::new),
    ))
}

/// The server's settings a reload may change in place.
fn server_settings(s: &ServerConfig) -> Settings {
    Settings {
        limits: Limits {
            max_body_bytes: s.max_request_bytes,
            ..Limits::default()
        },
        timeout: s.timeout_ms.map(Duration::from_millis),
    }
}

/// A load in words.
fn describe_load(load: Arrivals) -> String {
    match load {
        Arrivals::Closed => "closed loop".to_string(),
        Arrivals::Open { rate } => format!("open loop at {rate} frames/s"),
    }
}

/// Whether `a` and `b` need different pipelines.
fn needs_rebuild(a: &Config, b: &Config) -> bool {
    a.model != b.model || a.pes != b.pes || a.load != b.load
}

/// What identifies a model file's contents without reading it: a reload
/// re-imports a file replaced under the same path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    modified: Option<std::time::SystemTime>,
    len: u64,
    inode: u64,
}

fn model_stamp(source: &ModelSource) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let ModelSource::File(path) = source else {
        return None;
    };
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
    })
}

/// A running pipeline with its source and observer.
struct Engine {
    model: Arc<Model>,
    io: ModelIo,
    /// The model file as it was when read.
    stamp: Option<FileStamp>,
    pes: Vec<CpuSet>,
    pe_speed: Vec<f64>,
    load: Arrivals,
    pipeline: Pipeline,
    /// The synthetic frames, when not serving.
    source: Option<Source>,
    /// Requests into the pipeline, when serving.
    feeder: Option<Feeder>,
    /// Completed frames back to their requests, when serving.
    router: Option<Arc<Router>>,
    observer: Observer,
    started: Instant,
    /// Per stage: a re-pin after drift, until the stage applies it.
    repin: Vec<Option<Receiver<Result<(), AffinityError>>>>,
}

/// What a drained engine leaves behind.
struct Drained {
    rest: Vec<Completed>,
    admitted: u64,
    rejected: u64,
    stats: Vec<StageStats>,
}

impl Engine {
    /// Starts `plan`'s pipeline, fed by `admission`'s requests when
    /// serving, else by the synthetic source.
    fn start(
        plan: Plan,
        support: &CounterSupport,
        name_antagonists: bool,
        admission: Option<&Arc<Admission>>,
    ) -> Result<Self> {
        let pipeline = Pipeline::start(
            plan.model.clone(),
            PipelineConfig::new(plan.pes.clone(), plan.partition.clone()),
            Arc::new(SchedAffinity),
        )?;
        for s in pipeline.stage_stats() {
            if let Some(e) = &s.pin_error {
                tracing::warn!(stage = s.stage, "stage runs unpinned: {e}");
            }
        }
        let (source, feeder, router) = match admission {
            Some(admission) => {
                let router = Router::new();
                let feeder = Feeder::spawn(
                    admission.clone(),
                    pipeline.admitter(),
                    plan.model.input(),
                    router.clone(),
                )?;
                (None, Some(feeder), Some(router))
            }
            None => {
                let inputs: Vec<Tensor> = (0..4)
                    .map(|i| Tensor::random(plan.model.input(), 100 + i))
                    .collect();
                let source = Source::spawn(pipeline.admitter(), plan.load, inputs, plan.seed)?;
                (Some(source), None, None)
            }
        };
        let mut observer = Observer::new(
            ProcReader::new(),
            Box::new(PerfCounters::new()),
            support,
            plan.pes.clone(),
            plan.unit_ms,
        );
        observer.set_naming(name_antagonists);
        Ok(Self {
            pe_speed: plan.pes.iter().map(|p| p.len() as f64).collect(),
            repin: (0..plan.pes.len()).map(|_| None).collect(),
            stamp: plan.stamp,
            io: plan.io,
            model: plan.model,
            pes: plan.pes,
            load: plan.load,
            pipeline,
            source,
            feeder,
            router,
            observer,
            started: Instant::now(),
        })
    }

    /// Stops the source (or the feeder: queued requests stay queued) and
    /// lets every admitted frame finish; the requests they belong to are
    /// answered.
    fn drain(mut self) -> Drained {
        if let Some(s) = self.source.take() {
            s.stop();
        }
        if let Some(f) = self.feeder.take() {
            f.stop();
        }
        let stats = self.pipeline.stage_stats();
        let rejected = self.pipeline.rejected();
        let admitted_before = self.pipeline.admitted();
        let rest = self.pipeline.shutdown();
        if let Some(r) = &self.router {
            for c in &rest {
                r.complete(c);
            }
        }
        Drained {
            rest,
            admitted: admitted_before,
            rejected,
            stats,
        }
    }

    /// The stages as the observer sees them; a stage's PE is the
    /// configured PE it is pinned to.
    fn views(&self) -> Vec<StageView> {
        let part = self.pipeline.partition();
        self.pipeline
            .stage_stats()
            .iter()
            .map(|s| StageView {
                tid: s.tid,
                pe: self
                    .pes
                    .iter()
                    .position(|pe| pe.to_string() == s.pe)
                    .unwrap_or(s.stage),
                units: part.range(s.stage),
                service_ms: (s.frames > 0).then_some(s.service_ms),
            })
            .collect()
    }

    fn describe_load(&self) -> String {
        if self.feeder.is_some() {
            "requests as the load".to_string()
        } else {
            describe_load(self.load)
        }
    }

    /// Compares each stage thread's affinity with its PE and re-pins a
    /// stage whose affinity someone else changed.
    fn check_pinning(&mut self) {
        for s in self.pipeline.stage_stats() {
            if s.pin_error.is_some() || s.tid <= 0 {
                continue;
            }
            if let Some(rx) = &self.repin[s.stage] {
                match rx.try_recv() {
                    Err(crossbeam_channel::TryRecvError::Empty) => continue,
                    Ok(Err(e)) => tracing::warn!(stage = s.stage, "re-pinning failed: {e}"),
                    _ => {}
                }
                self.repin[s.stage] = None;
            }
            let Ok(want) = s.pe.parse::<CpuSet>() else {
                continue;
            };
            let Ok(actual) = SchedAffinity.get(s.tid) else {
                continue;
            };
            if actual != want {
                tracing::warn!(
                    stage = s.stage,
                    tid = s.tid,
                    "pinning drift: stage thread may run on CPUs {actual}, its PE is {want}; re-pinning"
                );
                match self.pipeline.remap(s.stage, want) {
                    Ok(rx) => self.repin[s.stage] = Some(rx),
                    Err(e) => tracing::warn!(stage = s.stage, "re-pinning: {e}"),
                }
            }
        }
    }
}

/// The probe's verdict, or less when the configuration turns counters off.
fn counter_support(cfg: &Config, probed: &CounterSupport) -> CounterSupport {
    if cfg.monitor.counters || !probed.has_hardware() {
        probed.clone()
    } else {
        CounterSupport::SoftwareOnly {
            reason: "monitor.counters is false in the configuration".into(),
            fix: "set monitor.counters: true".into(),
        }
    }
}

// ---------------------------------------------------------------- daemon

/// The summary written at exit: the recorder's, plus the frames admitted
/// (equal to `frames`: none is lost, across reloads too).
#[derive(Serialize)]
struct RunSummary<'a> {
    #[serde(flatten)]
    summary: &'a Summary,
    admitted: u64,
    reloads: u64,
    /// The last [`EVENTS_CAP`] detector events, with their time in seconds
    /// since the start.
    events: &'a Recent<TimedEvent>,
    /// Older events left out of `events`.
    events_dropped: u64,
}

/// A detector event and when it was reported.
#[derive(Serialize)]
struct TimedEvent {
    t: f64,
    #[serde(flatten)]
    event: Event,
}

struct Daemon {
    cfg: Arc<Config>,
    opts: Options,
    online: CpuSet,
    /// The effective cpuset of odin's cgroup.
    cpuset: CpusetWatch,
    probed: CounterSupport,
    engine: Engine,
    controller: Controller,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    server: Option<Server>,
    /// The inference server, when serving.
    serving: Option<Serving>,
    notifier: Notifier,
    start: Instant,
    /// Frames admitted and rejected by pipelines already drained.
    admitted_before: u64,
    rejected_before: u64,
    reloads: u64,
    recent_ms: VecDeque<f64>,
    last_frames: u64,
    last_tick: Instant,
    last_fps: f64,
    last_pes: Vec<PeSignals>,
    events: Recent<TimedEvent>,
    /// The last decision, until its effect is measured.
    pending_effect: Option<PendingEffect>,
    /// cgroup hints against antagonists (advise or enforce).
    cgroup: Hinter,
    /// The exclusive lock on the state directory, while it can be had.
    state_lock: Option<StateLock>,
}

/// The inference server: the service the transports share, and the
/// transports.
struct Serving {
    service: Arc<Service>,
    net: Net,
    answered: Receiver<Answered>,
}

impl Serving {
    /// Starts the listeners `cfg` names for `model`.
    fn start(
        cfg: &ServerConfig,
        model: ServedModel,
        pes: &[CpuSet],
        online: &CpuSet,
    ) -> Result<Self> {
        for (what, addr) in [("server.http", cfg.http), ("server.grpc", cfg.grpc)] {
            if let Some(a) = addr
                && !a.ip().is_loopback()
            {
                tracing::warn!(
                    "{what} is {a}, not a loopback address: anyone who reaches it can run the model; \
                     put a proxy with TLS and authentication in front"
                );
            }
        }
        let (tx, answered) = crossbeam_channel::bounded(4096);
        let service = Service::new(
            model,
            Admission::new(cfg.max_queue),
            server_settings(cfg),
            Arc::new(ServingStats::default()),
            tx,
        );
        let used: CpuSet = pes.iter().flat_map(|p| p.iter()).collect();
        let spare = online.difference(&used);
        let listen = Listen {
            http: cfg.http,
            grpc: cfg.grpc,
            threads: cfg.threads,
            cpus: (!spare.is_empty()).then_some(spare),
            bounds: Bounds {
                max_connections: cfg.max_connections,
                read_timeout: Duration::from_millis(cfg.read_timeout_ms),
                keepalive: Duration::from_millis(cfg.keepalive_ms),
                max_header_bytes: cfg.max_header_bytes,
                max_streams: cfg.max_streams,
            },
        };
        let net = Net::start(service.clone(), &listen).map_err(|e| Refused(e.to_string()))?;
        Ok(Self {
            service,
            net,
            answered,
        })
    }

    fn describe(&self) -> String {
        let mut v = Vec::new();
        if let Some(a) = self.net.http_addr() {
            v.push(format!("REST on http://{a}"));
        }
        if let Some(a) = self.net.grpc_addr() {
            v.push(format!("gRPC on {a}"));
        }
        format!(
            "serving {:?} ({})",
            self.service.model().desc.name,
            v.join(", ")
        )
    }
}

/// A decision whose effect is still to be measured.
struct PendingEffect {
    at: Instant,
    placement: Placement,
    predicted: Vec<f64>,
    fps_before: Option<f64>,
}

/// How long a stop waits for the accepted requests to be served.
const SERVE_OUT: Duration = Duration::from_secs(120);

/// How long a decision runs before its effect is logged.
const EFFECT_AFTER: Duration = Duration::from_secs(1);

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
    let engine = Engine::start(plan, &support, cfg.monitor.antagonists, admission.as_ref())?;
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
    fn undo(&self, why: &str) {
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
fn lock_state(dir: &Path) -> Result<Option<StateLock>> {
    match StateLock::acquire(dir) {
        Ok(l) => Ok(Some(l)),
        Err(e @ LockError::Held { .. }) => Err(Refused(e.to_string()).into()),
        Err(e) => {
            tracing::warn!("{e}; cgroup changes can be neither journalled nor undone");
            Ok(None)
        }
    }
}

fn start_metrics(cfg: &MetricsConfig, metrics: &Arc<Metrics>) -> Option<Server> {
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
    fn startup_line(&self) -> String {
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

    fn notify(&self, f: impl FnOnce(&Notifier, &str) -> std::io::Result<()>) {
        let status = format!(
            "{:.1} frames/s, partition {}, policy {}",
            self.last_fps,
            describe(&self.placement(), &self.engine.pes),
            self.controller.policy_name()
        );
        if let Err(e) = f(&self.notifier, &status) {
            tracing::debug!("sd_notify: {e}");
        }
    }

    fn placement(&self) -> Placement {
        let p = self.engine.pipeline.partition();
        Placement {
            units: p.units(),
            cuts: p.cuts().to_vec(),
            mapping: self.engine.views().iter().map(|v| v.pe).collect(),
        }
    }

    fn run_loop(&mut self, controls: &Receiver<Control>) {
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
    fn on_frame(&mut self, c: &Completed) {
        self.complete_frame(c);
        // What else has completed is taken now, not one wake-up of the loop
        // each: the completion queue is unbounded, and a tiny model
        // completes frames faster than the loop turns.
        let done = self.engine.pipeline.completed().clone();
        for c in done.try_iter().take(FRAME_BATCH) {
            self.complete_frame(&c);
        }
    }

    fn complete_frame(&mut self, c: &Completed) {
        self.record_frame(c);
        if let Some(r) = &self.engine.router {
            r.complete(c);
        }
    }

    fn record_frame(&mut self, c: &Completed) {
        self.recorder.record(c);
        let secs = c.latency.as_secs_f64();
        self.metrics.frame_done(secs);
        if self.serving.is_none() {
            self.recent_latency(secs * 1e3);
        }
    }

    /// When serving, the latency objective is on what clients see: each
    /// request's arrival to its response.
    fn request_answered(&mut self, a: Answered) {
        self.recent_latency(a.latency.as_secs_f64() * 1e3);
    }

    fn recent_latency(&mut self, ms: f64) {
        if self.recent_ms.len() == RECENT_FRAMES {
            self.recent_ms.pop_front();
        }
        self.recent_ms.push_back(ms);
    }

    fn each_second(&mut self) {
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

    fn recent_p99(&self) -> Option<f64> {
        if self.recent_ms.is_empty() {
            return None;
        }
        let mut v: Vec<f64> = self.recent_ms.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        Some(crate::pipeline::recorder::percentile(&v, 0.99))
    }

    fn on_tick(&mut self, now: Instant) {
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
        let partition = self.engine.pipeline.partition();
        let t = now.saturating_duration_since(self.start);
        let mut obs = Observation {
            t: t.as_secs_f64(),
            unit_ms: self.engine.observer.unit_ms(),
            pe_speed: self.engine.pe_speed.clone(),
            placement: Placement {
                units: partition.units(),
                cuts: partition.cuts().to_vec(),
                mapping: views.iter().map(|v| v.pe).collect(),
            },
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
    fn calibrate(&mut self, views: &[StageView], pes: &[PeSignals], waited: Duration) {
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
    fn cgroup_step(&mut self, obs: &Observation) {
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
        let predicted_fps = cost::measured_times(obs)
            .into_iter()
            .collect::<Option<Vec<f64>>>()
            .and_then(|t| t.into_iter().reduce(f64::max))
            .filter(|&ms| ms > 0.0)
            .map(|ms| 1e3 / ms);
        let measured_fps = Some(self.last_fps)
            .filter(|&f| f > 0.0)
            .or(obs.throughput_fps);
        let slo = slo_status(
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

    fn publish_cgroup(&self) {
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

    /// Once a decision has run for [`EFFECT_AFTER`] with every stage
    /// measured, logs what it did against what was predicted.
    fn report_effect(&mut self, now: Instant, obs: &Observation) {
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

    fn apply_action(&mut self, now: Instant, obs: &Observation, next: &Placement) {
        let pes = &self.engine.pes;
        let policy = self.controller.policy_name();
        let measured: Vec<String> = cost::measured_times(obs)
            .iter()
            .map(|t| t.map_or_else(|| "?".into(), |t| format!("{t:.1}")))
            .collect();
        let predicted = predict(obs, next);
        let events: Vec<String> = obs.events.iter().map(event_summary).collect();
        match apply(&self.engine.pipeline, &obs.placement, next, pes) {
            Ok(p) => {
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

    fn publish(&self) {
        self.publish_with(Some(self.last_fps));
    }

    fn publish_with(&self, throughput: Option<f64>) {
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
        let slo_attainment = self.cfg.slo.latency_ms.and_then(|slo| {
            (!self.recent_ms.is_empty()).then(|| {
                self.recent_ms.iter().filter(|&&ms| ms <= slo).count() as f64
                    / self.recent_ms.len() as f64
            })
        });
        self.metrics.publish(Snapshot {
            model: e.model.name().to_string(),
            policy: self.controller.policy_name().to_string(),
            throughput_fps: throughput.unwrap_or(self.last_fps),
            stages: stats
                .iter()
                .map(|s| StageMetric {
                    pe: s.pe.clone(),
                    units: s.units,
                    service_seconds: s.service_ms / 1e3,
                })
                .collect(),
            pes,
            slo_attainment,
            unavailable,
        });
    }

    /// Follows a change of the CPUs odin's cgroup allows: the pipeline is
    /// planned again on what is left of each PE (and back on the
    /// configured PEs when they return), without losing a frame.
    fn check_cpuset(&mut self) {
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
    fn reload(&mut self) -> bool {
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
    fn apply_config(&mut self, new: Config) -> Result<(Vec<String>, bool)> {
        let old = self.cfg.clone();
        let mut changes = Vec::new();
        // Another state directory: this agent's before anything changes.
        let relocked = if new.cgroup.state_dir != old.cgroup.state_dir {
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
        let rebuild =
            needs_rebuild(&old, &new) || self.engine.stamp != model_stamp(&new.model.source());
        // Everything that can fail comes first.
        let plan = if rebuild {
            Some(Plan::new(
                &new,
                &self.online,
                self.cpuset.allowed(),
                self.opts.overrides.follow_symlinks,
            )?)
        } else {
            None
        };
        let controller = if rebuild || old.policy != new.policy {
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
                describe_load(plan.load)
            ));
            self.rebuild(plan, &new)?;
        }
        if let Some(c) = controller {
            changes.push(format!(
                "controller rebuilt ({} -> {})",
                old.policy.name, new.policy.name
            ));
            self.controller = c;
        }
        if old.slo != new.slo {
            changes.push("slo".into());
        }
        if old.log.level != new.log.level {
            set_log_level(&new.log.level);
            changes.push(format!("log level {} -> {}", old.log.level, new.log.level));
        }
        if old.metrics != new.metrics {
            self.server = None;
            self.server = start_metrics(&new.metrics, &self.metrics);
            changes.push(match &self.server {
                Some(s) => format!("metrics on http://{}/metrics", s.addr()),
                None => "metrics off".into(),
            });
        }
        if old.server != new.server
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
            if !rebuild
                && (old.server.model_name != new.server.model_name
                    || old.server.max_batch_size != new.server.max_batch_size)
            {
                s.service.set_model(served_model(
                    &new,
                    &new.model.source(),
                    &self.engine.model,
                    &self.engine.io,
                )?);
            }
            changes.push("server".into());
        }
        if old.monitor.antagonists != new.monitor.antagonists {
            self.engine.observer.set_naming(new.monitor.antagonists);
            changes.push(format!(
                "naming antagonists {}",
                if new.monitor.antagonists { "on" } else { "off" }
            ));
        }
        let retick = old.monitor.tick_ms != new.monitor.tick_ms;
        if retick {
            changes.push(format!(
                "monitor tick {} -> {} ms",
                old.monitor.tick_ms, new.monitor.tick_ms
            ));
        }
        if old.cgroup != new.cgroup {
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
    fn rebuild(&mut self, mut plan: Plan, cfg: &Config) -> Result<()> {
        let partition = plan.partition.clone();
        let support = counter_support(cfg, &self.probed);
        let served = plan.served.take();
        let admission = self.serving.as_ref().map(|s| s.service.admission().clone());
        let next = Engine::start(plan, &support, cfg.monitor.antagonists, admission.as_ref())?;
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

    /// SIGUSR1: the whole state in one log line.
    fn dump(&self) {
        let stats = self.engine.pipeline.stage_stats();
        tracing::info!(
            config = serde_json::to_string(&*self.cfg).unwrap_or_default(),
            partition = %self.engine.pipeline.partition(),
            placement = describe(&self.placement(), &self.engine.pes),
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
    fn serve_out(&mut self) {
        let Some(s) = &self.serving else {
            return;
        };
        let service = s.service.clone();
        service.set_ready(false);
        service.admission().close();
        let Some(router) = self.engine.router.clone() else {
            return;
        };
        let started = Instant::now();
        let done = self.engine.pipeline.completed().clone();
        while service.admission().pending() > 0 || router.requests() > 0 {
            if signals::hurried() {
                tracing::warn!(
                    "stop cut short: {} queued requests refused, {} in the pipeline",
                    service.admission().pending(),
                    router.requests()
                );
                break;
            }
            if started.elapsed() > SERVE_OUT {
                tracing::error!(
                    "requests still unanswered {} s after the stop: {} queued, {} in the pipeline",
                    SERVE_OUT.as_secs(),
                    service.admission().pending(),
                    router.requests()
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

    fn finish(self) -> Result<()> {
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

/// Predicted stage times (ms) of `next` from the calibrated unit costs,
/// each PE's nominal speed divided by its current slowdown.
fn predict(obs: &Observation, next: &Placement) -> Vec<f64> {
    let slowdown = cost::slowdown(obs);
    let speed: Vec<f64> = (0..obs.pe_speed.len())
        .map(|p| obs.pe_speed[p] / slowdown.get(p).copied().unwrap_or(1.0).max(1e-9))
        .collect();
    CostModel::new(&obs.unit_ms).stage_times(next, &speed)
}

/// Moves the pipeline from placement `from` to `to`: the cuts at once,
/// each remapped stage when it reaches a frame boundary.
fn apply(p: &Pipeline, from: &Placement, to: &Placement, pes: &[CpuSet]) -> Result<Partition> {
    let partition = Partition::relaxed(to.units, to.cuts.clone())?;
    if to.cuts != from.cuts {
        p.set_partition(partition.clone())?;
    }
    for (stage, (&old, &new)) in from.mapping.iter().zip(&to.mapping).enumerate() {
        if old != new {
            let cpus = pes.get(new).with_context(|| format!("no PE {new}"))?;
            // The outcome arrives between frames; a failure is logged by the stage.
            drop(p.remap(stage, cpus.clone())?);
        }
    }
    Ok(partition)
}

/// `[0..6)@0 [6..12)@1`.
fn describe(p: &Placement, pes: &[CpuSet]) -> String {
    (0..p.stages())
        .map(|s| {
            let r = p.range(s);
            let cpus = pes
                .get(p.mapping[s])
                .map_or_else(|| "?".into(), |c| c.to_string());
            format!("[{}..{})@{cpus}", r.start, r.end)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// An event, short, for the decision line.
fn event_summary(e: &Event) -> String {
    match e {
        Event::Onset {
            pe,
            stage,
            kind,
            severity,
            ..
        } => format!(
            "onset pe {pe} stage {stage} {} +{:.0}%",
            kind.as_str(),
            severity * 100.0
        ),
        Event::Offset { pe, stage } => format!("offset pe {pe} stage {stage}"),
    }
}

fn event_line(t: Duration, e: &Event, pes: &[CpuSet]) -> String {
    let cpus = |pe: usize| {
        pes.get(pe)
            .map_or_else(|| "?".to_string(), |c| c.to_string())
    };
    match e {
        Event::Onset {
            pe,
            stage,
            kind,
            severity,
            antagonists,
        } => {
            let names: Vec<String> = antagonists
                .iter()
                .take(3)
                .map(|a| format!("{} {} ({:.2} CPU)", a.pid, a.comm, a.cpu_share))
                .collect();
            format!(
                "t={:.1}s interference on PE {pe} (CPUs {}), stage {stage}: {}, {:.0}% slower; antagonists: {}",
                t.as_secs_f64(),
                cpus(*pe),
                kind.as_str(),
                severity * 100.0,
                if names.is_empty() {
                    "none named".to_string()
                } else {
                    names.join(", ")
                }
            )
        }
        Event::Offset { pe, stage } => format!(
            "t={:.1}s interference ended on PE {pe} (CPUs {}), stage {stage}",
            t.as_secs_f64(),
            cpus(*pe)
        ),
    }
}

fn status_line(w: &TimelineEntry, stages: &[StageStats]) -> String {
    let stages: Vec<String> = stages
        .iter()
        .map(|s| {
            format!(
                "[{}..{}) {:.1} ms @{}",
                s.units[0], s.units[1], s.service_ms, s.pe
            )
        })
        .collect();
    format!(
        "t={:>4.0}s {:>7.2} frames/s  p50 {:>7.1} ms  p99 {:>7.1} ms | {}",
        w.t,
        w.throughput_fps,
        w.p50_ms,
        w.p99_ms,
        stages.join("  ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::journal::{Entry, Journal};
    use crate::cgroup::testutil::FakeTree;

    /// A panic on the daemon's thread still removes the cgroup the journal
    /// says odin created.
    #[test]
    fn a_panic_undoes_the_journal() {
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
