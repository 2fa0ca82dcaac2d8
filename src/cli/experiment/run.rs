//! One policy's run: the agent started and awaited through the readiness
//! protocol, the antagonist started and stopped on the schedule, and the
//! agent's summary read back.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::Interrupted;
use super::analysis::{AgentSummary, Schedule};
use super::child::{self, Child, Spawn};
use super::plan::{AntagonistProgram, Plan};

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

/// The experiment's files; a temporary directory is removed when dropped.
pub struct OutputDir {
    pub path: PathBuf,
    pub temporary: bool,
}

impl OutputDir {
    /// `given`, or a new private directory under the temp dir: created by
    /// `mkdtemp` (a fresh name, mode 0700), never one that already exists,
    /// so nothing planted there (a symlink) is written through.
    pub fn new(given: Option<&Path>) -> Result<Self> {
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

    pub fn file(&self, name: &str) -> PathBuf {
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
pub fn stop_signals() -> Result<Receiver<i32>> {
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
pub struct Run {
    pub policy: String,
    pub summary: AgentSummary,
    pub schedule: Schedule,
    pub ready_after_spawn_s: f64,
    pub antagonist_pid: i32,
    pub antagonist_cpu_s: f64,
    pub antagonist_killed: bool,
}

pub fn run_policy(
    plan: &Plan,
    policy: &str,
    dir: &OutputDir,
    stops: &Receiver<i32>,
) -> Result<Run> {
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
    let builtin = matches!(plan.antagonist, AntagonistProgram::Builtin(_));
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

#[cfg(test)]
mod tests {
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
