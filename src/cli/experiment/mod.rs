//! `odin experiment`: the same workload on this machine once per policy,
//! with a real antagonist started and stopped at fixed times, and what
//! each policy made of it.
//!
//! ```text
//!  per policy:  spawn `odin run --policy P ... --json-summary F`
//!               (NOTIFY_SOCKET = a datagram socket bound here)
//!   READY=1 ->  t0: the agent's clock starts (within milliseconds)
//!   t0 + warmup + before  start the antagonist, pinned to its CPUs
//!   + during              SIGTERM its process group, SIGKILL, reap
//!   + after               SIGTERM the agent, read F
//!  then:        phase means, reaction times, table / JSON / CSV / SVG
//! ```
//!
//! Alignment: the agent's summary times are seconds since the instant it
//! took just before sending READY=1 (only a status line and a metrics
//! update lie between), so the antagonist's start and stop, measured
//! here from the arrival of READY=1, are on the agent's clock to within
//! a few milliseconds, well below the one-second windows of the timeline.
//!
//! Every child is stopped on every path: a guard stops it when dropped
//! (errors, Ctrl-C, which arrives here as a message), and the kernel
//! sends it SIGTERM if the experiment itself is killed.

mod analysis;
mod child;

use std::fmt::Write as _;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use clap::ValueEnum;
use clap::builder::PossibleValuesParser;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde::Serialize;

use super::UsageError;
use super::stress::Kind;
use analysis::{AgentSummary, Figures, Schedule, Window};
use child::{Child, Spawn};
use odin::agent::config::POLICY_NAMES;
use odin::agent::daemon::{self, Overrides};
use odin::cpulist::CpuSet;
use odin::engine::zoo;
use odin::plot;
use odin::topology;

/// How long the agent may take to build its model and send READY=1.
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the built-in antagonist may take to pin its workers.
const BANNER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the agent may take to drain and write its summary.
const AGENT_GRACE: Duration = Duration::from_secs(30);
/// How long the antagonist may take to exit on SIGTERM.
const ANTAGONIST_GRACE: Duration = Duration::from_secs(2);
/// How often the waits look at the children.
const POLL: Duration = Duration::from_millis(100);
/// Without `--slo-latency` or a configured SLO: this times the p99
/// before interference (median over the policies).
const DEFAULT_SLO_FACTOR: f64 = 1.5;

/// Runs the same model on this machine once per policy and starts a real
/// antagonist on one PE for a fixed window, then reports, per policy, the
/// throughput before, during and after, the p99 latency and SLO
/// attainment during, and how fast the policy detected, settled and
/// recovered.
///
/// Each policy gets a fresh agent (`odin run`, with `--config` passed on),
/// started and awaited through systemd's readiness protocol. Times are
/// seconds since that agent's start. Ctrl-C stops the children and exits
/// 130.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model to run (overrides the configuration's model).
    #[arg(long, default_value = "resnet50", value_parser = PossibleValuesParser::new(zoo::NAMES))]
    model: String,
    /// One CPU set per stage, separated by ';' (e.g. "0;1"). Default: the
    /// configuration's pes, or one PE per online CPU.
    #[arg(long, value_name = "SETS")]
    pes: Option<String>,
    /// Policies to compare, in the order they run.
    #[arg(long, value_delimiter = ',', default_value = "static,lls,odin,guided",
          value_parser = PossibleValuesParser::new(POLICY_NAMES))]
    policies: Vec<String>,
    /// Seconds after READY before the before-window (ignored by the means).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    warmup: f64,
    /// Seconds measured before the antagonist starts.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    before: f64,
    /// Seconds the antagonist runs.
    #[arg(long, value_name = "SECS", default_value_t = 20.0)]
    during: f64,
    /// Seconds measured after the antagonist stops.
    #[arg(long, value_name = "SECS", default_value_t = 15.0)]
    after: f64,
    /// Seconds after the antagonist starts and after it stops that the
    /// during- and after-means leave out (the windows that mix regimes and
    /// the policy's reaction, which is measured separately).
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    margin: f64,
    /// CPUs the antagonist is pinned to (external commands too: they and
    /// their children start with this affinity). Default: the last PE's.
    #[arg(long, value_name = "LIST")]
    antagonist_cpus: Option<String>,
    /// What the built-in antagonist (`odin stress`) does.
    #[arg(long, value_enum, default_value = "cpu", conflicts_with = "antagonist")]
    antagonist_kind: Kind,
    /// An external antagonist instead of `odin stress`, e.g.
    /// `--antagonist stress-ng --cpu 1 --taskset 1`. Must come last: every
    /// word after it belongs to the command. It must run at least
    /// `--during` seconds; it is stopped with SIGTERM to its process group,
    /// then SIGKILL.
    #[arg(long, num_args = 1.., allow_hyphen_values = true, value_name = "CMD")]
    antagonist: Vec<String>,
    /// Configuration for every agent (e.g. with cgroup enforce mode).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Latency SLO in ms for the SLO column. Default: the configuration's
    /// slo.latency_ms, else 1.5 x the p99 before interference.
    #[arg(long, value_name = "MS")]
    slo_latency: Option<f64>,
    /// Print the results as JSON on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// Also write the rows as CSV to this file.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Also plot throughput and p99 latency over time to this SVG file.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Keep every agent's summary and output, and the antagonists' output,
    /// here (default: a temporary directory, removed at the end).
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
}

/// A progress line on stderr. A closed stderr (`2>&1 | head`) must not
/// abort the experiment and leave its children behind, so write errors
/// are ignored.
macro_rules! progress {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// A stop signal arrived: the children were stopped, exit 130.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by signal {0}")]
struct Interrupted(i32);

/// The antagonist to start.
#[derive(Clone, Debug)]
enum Antagonist {
    Builtin(Kind),
    External(Vec<String>),
}

/// The validated arguments.
#[derive(Debug)]
struct Plan {
    exe: PathBuf,
    model: String,
    pes: Vec<CpuSet>,
    policies: Vec<String>,
    warmup: f64,
    before: f64,
    during: f64,
    after: f64,
    margin: f64,
    antagonist: Antagonist,
    antagonist_cpus: CpuSet,
    /// The PEs the antagonist shares CPUs with.
    targets: Vec<usize>,
    config: Option<PathBuf>,
    /// The SLO and where it came from, when known before running.
    slo: Option<(f64, &'static str)>,
}

fn usage(msg: String) -> anyhow::Error {
    UsageError(msg).into()
}

fn check_secs(flag: &str, v: f64, zero_ok: bool) -> Result<()> {
    super::check_seconds(flag, v, zero_ok)?;
    Ok(())
}

/// Whether `program` names an executable file, directly or in `PATH`.
fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return executable(Path::new(program));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| executable(&d.join(program))))
}

impl Plan {
    fn new(args: &Args) -> Result<Self> {
        let online = topology::online_cpus(Path::new("/"))?;
        check_secs("warmup", args.warmup, true)?;
        check_secs("before", args.before, false)?;
        check_secs("during", args.during, false)?;
        check_secs("after", args.after, false)?;
        check_secs("margin", args.margin, true)?;
        for (flag, phase) in [("during", args.during), ("after", args.after)] {
            if args.margin >= phase {
                return Err(usage(format!(
                    "--margin {}: must be shorter than --{flag} ({phase})",
                    args.margin
                )));
            }
        }
        super::check_slo_latency(args.slo_latency)?;
        let mut policies: Vec<String> = Vec::new();
        for p in &args.policies {
            if policies.contains(p) {
                return Err(usage(format!("--policies: {p} given twice")));
            }
            policies.push(p.clone());
        }
        if policies.is_empty() {
            return Err(usage("--policies: at least one policy".into()));
        }
        let pes = match &args.pes {
            Some(text) => parse_pes(text, &online)?,
            None => Vec::new(),
        };
        // Every agent's configuration is checked now, not after minutes.
        let mut config_pes = None;
        let mut config_slo = None;
        for policy in &policies {
            let overrides = Overrides {
                model: Some(args.model.clone()),
                pes: (!pes.is_empty()).then(|| pes.iter().map(CpuSet::to_string).collect()),
                policy: Some(policy.clone()),
                ..Overrides::default()
            };
            let cfg = daemon::load_config(args.config.as_deref(), &overrides, &online)
                .map_err(|e| usage(format!("{e}")))?;
            config_pes = cfg.pe_sets();
            config_slo = cfg.slo.latency_ms;
        }
        let pes = if pes.is_empty() {
            config_pes.unwrap_or_else(|| online.iter().map(CpuSet::single).collect())
        } else {
            pes
        };
        if pes.len() < 2 {
            return Err(usage(format!(
                "--pes: {} PE; a pipeline to re-balance needs at least 2",
                pes.len()
            )));
        }
        let antagonist_cpus = match &args.antagonist_cpus {
            Some(text) => {
                let set: CpuSet = text
                    .parse()
                    .map_err(|e| usage(format!("--antagonist-cpus {text:?}: {e}")))?;
                let offline = set.difference(&online);
                if !offline.is_empty() {
                    return Err(usage(format!(
                        "--antagonist-cpus: CPU {offline} not online (online: {online})"
                    )));
                }
                set
            }
            None => pes.last().expect("two PEs").clone(),
        };
        let targets = (0..pes.len())
            .filter(|&i| !pes[i].intersection(&antagonist_cpus).is_empty())
            .collect();
        let antagonist = if args.antagonist.is_empty() {
            Antagonist::Builtin(args.antagonist_kind)
        } else {
            let program = &args.antagonist[0];
            if !on_path(program) {
                return Err(usage(format!(
                    "--antagonist: {program}: no such executable (PATH searched)"
                )));
            }
            Antagonist::External(args.antagonist.clone())
        };
        let slo = match (args.slo_latency, config_slo) {
            (Some(s), _) => Some((s, "--slo-latency")),
            (None, Some(s)) => Some((s, "the configuration's slo.latency_ms")),
            (None, None) => None,
        };
        Ok(Self {
            exe: std::env::current_exe().context("finding the odin executable")?,
            model: args.model.clone(),
            pes,
            policies,
            warmup: args.warmup,
            before: args.before,
            during: args.during,
            after: args.after,
            margin: args.margin,
            antagonist,
            antagonist_cpus,
            targets,
            config: args.config.clone(),
            slo,
        })
    }

    fn pes_arg(&self) -> String {
        self.pes
            .iter()
            .map(CpuSet::to_string)
            .collect::<Vec<_>>()
            .join(";")
    }

    /// The antagonist's command line for a window of `during` seconds.
    fn antagonist_argv(&self) -> Vec<String> {
        match &self.antagonist {
            Antagonist::Builtin(kind) => vec![
                self.exe.display().to_string(),
                "stress".into(),
                "--kind".into(),
                kind_name(*kind),
                "--cpus".into(),
                self.antagonist_cpus.to_string(),
                // A safety net: it ends by itself should everything else fail.
                "--duration".into(),
                format!("{}", self.during + 60.0),
            ],
            Antagonist::External(argv) => argv.clone(),
        }
    }

    /// "odin stress --kind cpu --cpus 1", for people.
    fn antagonist_text(&self) -> String {
        match &self.antagonist {
            Antagonist::Builtin(kind) => format!(
                "odin stress --kind {} --cpus {}",
                kind_name(*kind),
                self.antagonist_cpus
            ),
            Antagonist::External(argv) => argv.join(" "),
        }
    }
}

fn kind_name(kind: Kind) -> String {
    kind.to_possible_value()
        .map_or_else(|| "cpu".into(), |v| v.get_name().to_string())
}

/// Parses `--pes` ("0;1", "0-1;2-3") and checks every CPU is online.
fn parse_pes(text: &str, online: &CpuSet) -> Result<Vec<CpuSet>> {
    text.split(';')
        .enumerate()
        .map(|(i, part)| {
            let set: CpuSet = part
                .parse()
                .map_err(|e| usage(format!("--pes: PE {i} ({part:?}): {e}")))?;
            let offline = set.difference(online);
            if !offline.is_empty() {
                return Err(usage(format!(
                    "--pes: PE {i}: CPU {offline} not online (online: {online})"
                )));
            }
            Ok(set)
        })
        .collect()
}

/// The experiment's files; a temporary directory is removed when dropped.
struct OutputDir {
    path: PathBuf,
    temporary: bool,
}

impl OutputDir {
    /// `given`, or a new private directory under the temp dir: created by
    /// `mkdtemp` (a fresh name, mode 0700), never one that already exists,
    /// so nothing planted there (a symlink) is written through.
    fn new(given: Option<&Path>) -> Result<Self> {
        match given {
            Some(p) => {
                std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
                Ok(Self {
                    path: p.to_path_buf(),
                    temporary: false,
                })
            }
            None => {
                let template = std::env::temp_dir().join("odin-experiment-XXXXXX");
                let path = nix::unistd::mkdtemp(&template)
                    .with_context(|| format!("creating a directory like {}", template.display()))?;
                Ok(Self {
                    path,
                    temporary: true,
                })
            }
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP as messages.
fn stop_signals() -> Result<Receiver<i32>> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("installing signal handlers")?;
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("odin-exp-signals".into())
        .spawn(move || {
            for s in signals.forever() {
                if tx.send(s).is_err() {
                    break;
                }
            }
        })
        .context("starting the signal thread")?;
    Ok(rx)
}

/// Waits until `deadline`, failing if a child exits or a stop signal
/// arrives.
fn wait_until(deadline: Instant, stops: &Receiver<i32>, children: &mut [&mut Child]) -> Result<()> {
    loop {
        for c in children.iter_mut() {
            if c.has_exited() {
                return Err(c.died("during the experiment"));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        match stops.recv_timeout(left.min(POLL)) {
            Ok(s) => return Err(Interrupted(s).into()),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
        }
    }
}

/// Waits for READY=1 on `sock` from `agent`; returns when it arrived.
fn wait_ready(sock: &UnixDatagram, agent: &mut Child, stops: &Receiver<i32>) -> Result<Instant> {
    let deadline = Instant::now() + READY_TIMEOUT;
    sock.set_read_timeout(Some(POLL))?;
    let mut buf = [0u8; 4096];
    loop {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let at = Instant::now();
                if String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == "READY=1")
                {
                    return Ok(at);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e).context("reading the notification socket"),
        }
        if let Ok(s) = stops.try_recv() {
            return Err(Interrupted(s).into());
        }
        if agent.has_exited() {
            return Err(agent.died("before it was ready"));
        }
        if Instant::now() >= deadline {
            return Err(agent.failure(&format!(
                "sent no READY=1 within {} s",
                READY_TIMEOUT.as_secs()
            )));
        }
    }
}

/// What one policy's run produced.
struct Run {
    policy: String,
    summary: AgentSummary,
    schedule: Schedule,
    ready_after_spawn_s: f64,
    antagonist_pid: i32,
    antagonist_cpu_s: f64,
    antagonist_killed: bool,
}

fn run_policy(plan: &Plan, policy: &str, dir: &OutputDir, stops: &Receiver<i32>) -> Result<Run> {
    let summary_path = dir.file(&format!("{policy}.summary.json"));
    let _ = std::fs::remove_file(&summary_path);
    let name = format!("odin-experiment-{}-{policy}", std::process::id());
    let sock = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)
        .context("binding the notification socket")?;
    let total = plan.warmup + plan.before + plan.during + plan.after;
    // Each agent its own private state directory: it neither undoes nor
    // locks out the journal of an agent already running with the same
    // configuration (a service).
    let state = OutputDir::new(None)?;
    let mut argv = vec![
        plan.exe.display().to_string(),
        "run".into(),
        "--policy".into(),
        policy.into(),
        "--model".into(),
        plan.model.clone(),
        "--pes".into(),
        plan.pes_arg(),
        // A safety net: the agent is stopped with SIGTERM long before.
        "--duration".into(),
        format!("{}", total + 120.0),
        "--json-summary".into(),
        summary_path.display().to_string(),
        "--state-dir".into(),
        state.path.display().to_string(),
    ];
    if let Some(c) = &plan.config {
        argv.extend(["--config".into(), c.display().to_string()]);
    }
    let spawned = Instant::now();
    let mut agent = Child::spawn(Spawn {
        label: format!("the agent for policy {policy}"),
        argv,
        env: vec![("NOTIFY_SOCKET".into(), format!("@{name}"))],
        stdout: Some(&dir.file(&format!("{policy}.agent.out"))),
        stderr: &dir.file(&format!("{policy}.agent.err")),
        affinity: None,
        grace: AGENT_GRACE,
    })?;
    let t0 = wait_ready(&sock, &mut agent, stops)?;
    drop(sock);
    let since = |i: Instant| i.saturating_duration_since(t0).as_secs_f64();
    let ready_after_spawn_s = t0.duration_since(spawned).as_secs_f64();
    progress!(
        "odin experiment: {policy}: agent pid {} ready after {ready_after_spawn_s:.1} s",
        agent.pid()
    );

    wait_until(
        t0 + Duration::from_secs_f64(plan.warmup + plan.before),
        stops,
        &mut [&mut agent],
    )?;
    let argv = plan.antagonist_argv();
    let builtin = matches!(plan.antagonist, Antagonist::Builtin(_));
    let out = dir.file(&format!("{policy}.antagonist.out"));
    let mut antagonist = Child::spawn(Spawn {
        label: format!("the antagonist for policy {policy}"),
        argv,
        env: Vec::new(),
        stdout: (!builtin).then_some(out.as_path()),
        stderr: &dir.file(&format!("{policy}.antagonist.err")),
        affinity: Some(&plan.antagonist_cpus),
        grace: ANTAGONIST_GRACE,
    })?;
    let started = if builtin {
        wait_banner(&mut antagonist, &mut agent, stops)?
    } else {
        Instant::now()
    };
    let pid = antagonist.pid() as i32;
    progress!(
        "odin experiment: {policy}: antagonist pid {pid} on CPUs {} from t={:.1} s",
        plan.antagonist_cpus,
        since(started)
    );
    wait_until(
        started + Duration::from_secs_f64(plan.during),
        stops,
        &mut [&mut agent, &mut antagonist],
    )?;
    let proc = Path::new("/proc");
    let antagonist_cpu_s = child::group_cpu_seconds(proc, pid);
    let (_, antagonist_killed) = antagonist.stop()?;
    let stopped = Instant::now();
    drop(antagonist);
    // SIGKILL is final, but dying takes a moment.
    let gone_by = stopped + ANTAGONIST_GRACE;
    while !child::group_members(proc, pid).is_empty() {
        if Instant::now() >= gone_by {
            let left: Vec<i32> = child::group_members(proc, pid)
                .iter()
                .map(|s| s.pid)
                .collect();
            return Err(anyhow!(
                "the antagonist for policy {policy} left processes behind after SIGKILL: {left:?}"
            ));
        }
        wait_until(
            Instant::now() + Duration::from_millis(10),
            stops,
            &mut [&mut agent],
        )?;
    }
    progress!(
        "odin experiment: {policy}: antagonist stopped at t={:.1} s ({antagonist_cpu_s:.1} CPU s)",
        since(stopped)
    );
    wait_until(
        stopped + Duration::from_secs_f64(plan.after),
        stops,
        &mut [&mut agent],
    )?;
    let end = since(Instant::now());
    let (status, killed) = agent.stop()?;
    if killed {
        return Err(agent.failure(&format!(
            "did not stop within {} s of SIGTERM",
            AGENT_GRACE.as_secs()
        )));
    }
    if !status.success() {
        return Err(agent.failure(&child::describe_status(status)));
    }
    let text = std::fs::read_to_string(&summary_path)
        .map_err(|e| agent.failure(&format!("wrote no summary {}: {e}", summary_path.display())))?;
    let summary: AgentSummary = serde_json::from_str(&text)
        .with_context(|| format!("reading the summary {}", summary_path.display()))?;
    Ok(Run {
        policy: policy.to_string(),
        summary,
        schedule: Schedule {
            warmup: plan.warmup,
            margin: plan.margin,
            start: since(started),
            stop: since(stopped),
            end,
        },
        ready_after_spawn_s,
        antagonist_pid: pid,
        antagonist_cpu_s,
        antagonist_killed,
    })
}

/// Waits for `odin stress`'s banner, printed once its workers are pinned:
/// the load is on from then.
fn wait_banner(
    antagonist: &mut Child,
    agent: &mut Child,
    stops: &Receiver<i32>,
) -> Result<Instant> {
    let lines = antagonist
        .lines()
        .context("the antagonist's stdout is not a pipe")?;
    let deadline = Instant::now() + BANNER_TIMEOUT;
    loop {
        match lines.recv_timeout(POLL) {
            Ok(l) if l.starts_with("odin stress:") => return Ok(Instant::now()),
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(antagonist.died("before its workers were pinned"));
            }
        }
        if let Ok(s) = stops.try_recv() {
            return Err(Interrupted(s).into());
        }
        if agent.has_exited() {
            return Err(agent.died("during the experiment"));
        }
        if Instant::now() >= deadline {
            return Err(antagonist.failure(&format!(
                "did not pin its workers within {} s",
                BANNER_TIMEOUT.as_secs()
            )));
        }
    }
}

// ---------------------------------------------------------------- report

/// One policy's row.
#[derive(Debug, Serialize)]
struct Row {
    policy: String,
    #[serde(flatten)]
    figures: Figures,
    /// Throughput during over static's during.
    during_vs_static: Option<f64>,
    frames: u64,
    ready_after_spawn_s: f64,
    antagonist_pid: i32,
    antagonist_start_s: f64,
    antagonist_stop_s: f64,
    /// CPU time the antagonist's process group used.
    antagonist_cpu_s: f64,
    /// Whether it needed SIGKILL.
    antagonist_killed: bool,
    end_s: f64,
    /// Placement changes (seconds since the agent's start), the initial
    /// one excluded.
    changes_s: Vec<f64>,
    /// Onsets: (time, PE).
    onsets: Vec<(f64, usize)>,
    timeline: Vec<Window>,
}

#[derive(Debug, Serialize)]
struct Windows {
    warmup: f64,
    before: f64,
    during: f64,
    after: f64,
    margin: f64,
}

#[derive(Debug, Serialize)]
struct AntagonistInfo {
    command: String,
    cpus: String,
    pes: Vec<usize>,
}

/// The whole result, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Report {
    model: String,
    pes: Vec<String>,
    antagonist: AntagonistInfo,
    windows_s: Windows,
    slo_latency_ms: Option<f64>,
    slo_source: String,
    /// How `slo_attainment` is counted.
    slo_attainment_of: &'static str,
    rows: Vec<Row>,
}

impl Report {
    fn new(plan: &Plan, runs: Vec<Run>) -> Self {
        let analyse = |r: &Run, slo| {
            analysis::analyse(
                &r.summary,
                &r.schedule,
                &plan.targets,
                Some(r.antagonist_pid),
                slo,
            )
        };
        let (slo, source) = match plan.slo {
            Some((s, source)) => (Some(s), source.to_string()),
            None => {
                let mut before: Vec<f64> = runs
                    .iter()
                    .filter_map(|r| analyse(r, None).p99_before_ms)
                    .collect();
                before.sort_by(f64::total_cmp);
                let median = before.get(before.len() / 2).copied();
                (
                    median.map(|m| DEFAULT_SLO_FACTOR * m),
                    format!("{DEFAULT_SLO_FACTOR} x the median p99 before interference"),
                )
            }
        };
        let mut rows: Vec<Row> = runs
            .into_iter()
            .map(|r| {
                let figures = analyse(&r, slo);
                Row {
                    during_vs_static: None,
                    frames: r.summary.frames,
                    ready_after_spawn_s: r.ready_after_spawn_s,
                    antagonist_pid: r.antagonist_pid,
                    antagonist_start_s: r.schedule.start,
                    antagonist_stop_s: r.schedule.stop,
                    antagonist_cpu_s: r.antagonist_cpu_s,
                    antagonist_killed: r.antagonist_killed,
                    end_s: r.schedule.end,
                    changes_s: r.summary.partitions.iter().skip(1).map(|c| c.t).collect(),
                    onsets: r
                        .summary
                        .events
                        .iter()
                        .filter(|e| e.event == "onset")
                        .map(|e| (e.t, e.pe))
                        .collect(),
                    timeline: r.summary.timeline,
                    policy: r.policy,
                    figures,
                }
            })
            .collect();
        let static_during = rows
            .iter()
            .find(|r| r.policy == "static")
            .and_then(|r| r.figures.during_fps);
        for r in &mut rows {
            r.during_vs_static = match (r.figures.during_fps, static_during) {
                (Some(d), Some(s)) if s > 0.0 => Some(d / s),
                _ => None,
            };
        }
        Report {
            model: plan.model.clone(),
            pes: plan.pes.iter().map(CpuSet::to_string).collect(),
            antagonist: AntagonistInfo {
                command: plan.antagonist_text(),
                cpus: plan.antagonist_cpus.to_string(),
                pes: plan.targets.clone(),
            },
            windows_s: Windows {
                warmup: plan.warmup,
                before: plan.before,
                during: plan.during,
                after: plan.after,
                margin: plan.margin,
            },
            slo_latency_ms: slo,
            slo_source: source,
            slo_attainment_of: "one-second windows of the interference whose p99 met the SLO",
            rows,
        }
    }

    fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "odin experiment: {} on PEs {}; antagonist `{}` on CPUs {} for {} s after {} s; SLO p99 <= {}",
            self.model,
            self.pes.join(";"),
            self.antagonist.command,
            self.antagonist.cpus,
            self.windows_s.during,
            self.windows_s.warmup + self.windows_s.before,
            self.slo_latency_ms.map_or_else(
                || "? (no data)".into(),
                |v| format!("{v:.0} ms ({})", self.slo_source)
            ),
        );
        let _ = writeln!(
            s,
            "{:<8} {:>8} {:>8} {:>8} {:>10} {:>8} {:>7} {:>7} {:>8} {:>8}",
            "policy",
            "before",
            "during",
            "after",
            "p99 during",
            "SLO met",
            "detect",
            "settle",
            "recover",
            "during/"
        );
        let _ = writeln!(
            s,
            "{:<8} {:>8} {:>8} {:>8} {:>10} {:>8} {:>7} {:>7} {:>8} {:>8}",
            "", "fps", "fps", "fps", "ms", "", "s", "s", "s", "static"
        );
        let num =
            |v: Option<f64>, d: usize| v.map_or_else(|| "-".to_string(), |v| format!("{v:.d$}"));
        for r in &self.rows {
            let f = &r.figures;
            let _ = writeln!(
                s,
                "{:<8} {:>8} {:>8} {:>8} {:>10} {:>8} {:>7} {:>7} {:>8} {:>8}",
                r.policy,
                num(f.before_fps, 2),
                num(f.during_fps, 2),
                num(f.after_fps, 2),
                num(f.p99_during_ms, 0),
                f.slo_attainment
                    .map_or_else(|| "-".into(), |v| format!("{:.0}%", v * 100.0)),
                match (f.detect_s, f.already_interfered) {
                    (None, true) => "active".into(),
                    (d, _) => num(d, 1),
                },
                num(f.settle_s, 1),
                num(f.recover_s, 1),
                num(r.during_vs_static, 2),
            );
        }
        let _ = writeln!(
            s,
            "before/during/after: mean frames/s of the one-second windows in each phase; \
             during and after leave out {margin} s after each switch\n\
             p99 during: mean of the per-second p99 latencies of the same windows\n\
             SLO met: share of the interference's one-second windows whose p99 met the SLO\n\
             detect: first onset on the antagonist's PE after it started \
             (active: other load had that PE reported interfered already)\n\
             settle: last placement change during the interference, from its start\n\
             recover: from the stop until throughput ({span} s means) stays >= {recovered:.0}% of before\n\
             during/static: during over static's during; -: did not happen",
            margin = self.windows_s.margin,
            recovered = analysis::RECOVERED * 100.0,
            span = analysis::RECOVERY_SPAN,
        );
        s
    }

    fn csv(&self) -> String {
        let mut s = String::from(
            "policy,before_fps,during_fps,after_fps,p99_before_ms,p99_during_ms,slo_attainment,\
             detect_s,settle_s,recover_s,during_vs_static,changes_during,onsets_during,frames,\
             antagonist_start_s,antagonist_stop_s,antagonist_cpu_s\n",
        );
        let o = |v: Option<f64>| v.map_or_else(String::new, |v| format!("{v:.4}"));
        for r in &self.rows {
            let f = &r.figures;
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{:.3},{:.3},{:.3}",
                r.policy,
                o(f.before_fps),
                o(f.during_fps),
                o(f.after_fps),
                o(f.p99_before_ms),
                o(f.p99_during_ms),
                o(f.slo_attainment),
                o(f.detect_s),
                o(f.settle_s),
                o(f.recover_s),
                o(r.during_vs_static),
                f.changes_during,
                f.onsets_during,
                r.frames,
                r.antagonist_start_s,
                r.antagonist_stop_s,
                r.antagonist_cpu_s
            );
        }
        s
    }

    fn svg(&self) -> String {
        let n = self.rows.len().max(1) as f64;
        let start = self.rows.iter().map(|r| r.antagonist_start_s).sum::<f64>() / n;
        let stop = self.rows.iter().map(|r| r.antagonist_stop_s).sum::<f64>() / n;
        let end = self
            .rows
            .iter()
            .flat_map(|r| r.timeline.last().map(|w| w.t))
            .fold(start + 1.0, f64::max);
        // Each window's value is drawn at its middle.
        let series = |value: fn(&Window) -> f64| -> Vec<plot::Series> {
            self.rows
                .iter()
                .map(|r| {
                    let starts = std::iter::once(0.0).chain(r.timeline.iter().map(|w| w.t));
                    plot::Series {
                        name: r.policy.clone(),
                        points: starts
                            .zip(&r.timeline)
                            .map(|(s, w)| ((s + w.t) / 2.0, value(w)))
                            .collect(),
                    }
                })
                .collect()
        };
        let figure = plot::Figure {
            title: format!(
                "odin experiment: {} on PEs {}, antagonist on CPUs {} (shaded)",
                self.model,
                self.pes.join(";"),
                self.antagonist.cpus
            ),
            x_label: "seconds since the agent's start",
            x_end: end,
            bands: vec![plot::Band {
                from: start,
                to: stop,
                label: format!("antagonist: {}", self.antagonist.command),
                labelled: true,
            }],
            marks: vec![(self.windows_s.warmup, "warm-up ends".into())],
            panels: vec![
                plot::Panel {
                    id: "throughput",
                    title: "Throughput",
                    y_label: "frames/s",
                    series: series(|w| w.throughput_fps),
                    reference: None,
                },
                plot::Panel {
                    id: "p99",
                    title: "p99 latency (per second)",
                    y_label: "ms",
                    series: series(|w| w.p99_ms),
                    reference: self.slo_latency_ms.map(|v| (v, "SLO".to_string())),
                },
            ],
        };
        plot::svg(&figure)
    }
}

pub fn run(args: Args) -> Result<()> {
    let plan = Plan::new(&args)?;
    let stops = stop_signals()?;
    let dir = OutputDir::new(args.output_dir.as_deref())?;
    progress!(
        "odin experiment: {} policies x {:.0} s, files in {}",
        plan.policies.len(),
        plan.warmup + plan.before + plan.during + plan.after,
        dir.path.display()
    );
    let mut runs = Vec::new();
    for policy in &plan.policies {
        match run_policy(&plan, policy, &dir, &stops) {
            Ok(r) => runs.push(r),
            Err(e) => {
                if let Some(Interrupted(s)) = e.downcast_ref::<Interrupted>() {
                    // The children are stopped (their guards dropped).
                    progress!("odin experiment: signal {s}: stopped the agent and the antagonist");
                    drop(dir);
                    std::process::exit(128 + s);
                }
                return Err(e.context(format!("policy {policy}")));
            }
        }
    }
    let report = Report::new(&plan, runs);
    if let Some(path) = &args.csv {
        std::fs::write(path, report.csv())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, report.svg())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !dir.temporary {
        let path = dir.file("experiment.json");
        std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        // The table still reaches the person watching, next to the progress.
        progress!("{}", report.table().trim_end());
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

#[cfg(test)]
mod output_dir_tests {
    use super::OutputDir;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_temporary_directory_is_fresh_private_and_removed() {
        // An entry planted under the old predictable name is not used.
        let planted = std::env::temp_dir().join(format!("odin-experiment-{}", std::process::id()));
        let _ = std::os::unix::fs::symlink("/nonexistent-target", &planted);
        let a = OutputDir::new(None).unwrap();
        let b = OutputDir::new(None).unwrap();
        assert_ne!(a.path, b.path);
        assert_ne!(a.path, planted);
        let meta = std::fs::symlink_metadata(&a.path).unwrap();
        assert!(meta.is_dir() && !meta.file_type().is_symlink());
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        let path = a.path.clone();
        drop(a);
        assert!(!path.exists());
        let _ = std::fs::remove_file(&planted);
    }
}
