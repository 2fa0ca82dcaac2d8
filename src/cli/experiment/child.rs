//! The experiment's child processes: the agent and the antagonist.
//!
//! Every child runs in its own process group, so that stopping it stops
//! whatever it started too (an external antagonist such as `stress-ng`
//! forks workers), and so that a Ctrl-C in the terminal reaches only the
//! experiment, which then stops its children in order. A child also gets
//! SIGTERM from the kernel if the experiment dies without cleaning up
//! (`PR_SET_PDEATHSIG`).
//!
//! Stopping is SIGTERM to the group, a grace period, SIGKILL to the
//! group, then reaping. The leader is reaped last: until then it is a
//! zombie that keeps the group's id reserved, so the SIGKILL cannot reach
//! an unrelated group that reused the id.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use crossbeam_channel::Receiver;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;

use odin::cpulist::CpuSet;
use odin::monitor::procfs;
use odin::monitor::sample::TaskStat;
use odin::pipeline::affinity;

/// Lines of a failed child's stderr quoted in the error.
const TAIL_LINES: usize = 12;

/// A running child in its own process group; dropping it stops the group.
pub struct Child {
    /// What it is, for messages: "the agent for policy odin".
    label: String,
    /// Its command line, for messages.
    command: String,
    child: std::process::Child,
    stderr: PathBuf,
    /// How long SIGTERM may take before SIGKILL.
    grace: Duration,
    reaped: bool,
}

/// How to start a child.
pub struct Spawn<'a> {
    /// What it is, for messages.
    pub label: String,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Environment variables added to the experiment's.
    pub env: Vec<(String, String)>,
    /// Where its stdout goes; `None`: a pipe, read with [`Child::lines`].
    pub stdout: Option<&'a Path>,
    /// Where its stderr goes.
    pub stderr: &'a Path,
    /// CPUs it (and everything it starts) may run on.
    pub affinity: Option<&'a CpuSet>,
    /// How long SIGTERM may take before SIGKILL.
    pub grace: Duration,
}

impl Child {
    /// Starts `s.argv` in a new process group.
    pub fn spawn(s: Spawn<'_>) -> Result<Self> {
        let command = s.argv.join(" ");
        let (program, args) = s.argv.split_first().context("empty command")?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(s.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stderr(
                File::create(s.stderr)
                    .with_context(|| format!("creating {}", s.stderr.display()))?,
            )
            .process_group(0);
        match s.stdout {
            Some(p) => {
                cmd.stdout(File::create(p).with_context(|| format!("creating {}", p.display()))?)
            }
            None => cmd.stdout(Stdio::piped()),
        };
        let parent = std::process::id() as libc::pid_t;
        let mask = s.affinity.map(affinity::mask).transpose()?;
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe system calls (prctl, getppid,
        // sched_setaffinity) on values prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died before the prctl took effect.
                if libc::getppid() != parent {
                    return Err(io::Error::other("the experiment exited"));
                }
                if let Some(mask) = &mask {
                    nix::sched::sched_setaffinity(Pid::from_raw(0), mask)?;
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("{}: starting `{command}`", s.label))?;
        Ok(Self {
            label: s.label,
            command,
            child,
            stderr: s.stderr.to_path_buf(),
            grace: s.grace,
            reaped: false,
        })
    }

    /// Process id (also the process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its stdout, line by line, from a reader thread that ends when the
    /// pipe closes (when the child and everything it started are gone).
    pub fn lines(&mut self) -> Option<Receiver<String>> {
        let out = self.child.stdout.take()?;
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("odin-exp-stdout".into())
            .spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .ok()?;
        Some(rx)
    }

    /// Whether it has exited, without reaping it.
    pub fn has_exited(&self) -> bool {
        if self.reaped {
            return true;
        }
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        !matches!(
            waitid(Id::Pid(self.nix_pid()), flags),
            Ok(WaitStatus::StillAlive)
        )
    }

    /// The error for a child that exited when it should not have: its
    /// status and the tail of its stderr.
    pub fn died(&mut self, when: &str) -> anyhow::Error {
        let status = self.reap();
        self.failure(&format!(
            "{} {when}",
            status.map_or_else(|e| format!("(status unknown: {e})"), describe_status)
        ))
    }

    /// An error naming the child, its command and the tail of its stderr.
    pub fn failure(&self, what: &str) -> anyhow::Error {
        let tail = stderr_tail(&self.stderr, TAIL_LINES);
        anyhow!(
            "{} (`{}`) {what}{}",
            self.label,
            self.command,
            if tail.is_empty() {
                String::new()
            } else {
                format!("; its stderr ends with:\n{tail}")
            }
        )
    }

    /// SIGTERM to the group, SIGKILL after the grace period, then reaps
    /// the leader. Returns the leader's status and whether SIGKILL was
    /// needed.
    pub fn stop(&mut self) -> Result<(ExitStatus, bool)> {
        if self.reaped {
            return Err(anyhow!("{} was already reaped", self.label));
        }
        let group = self.nix_pid();
        let _ = killpg(group, Signal::SIGTERM);
        let exited = wait_exit(self.pid(), self.grace)?;
        // The rest of the group (or a leader that ignored SIGTERM).
        let _ = killpg(group, Signal::SIGKILL);
        let status = self.reap()?;
        Ok((status, !exited))
    }

    fn reap(&mut self) -> Result<ExitStatus> {
        let status = self
            .child
            .wait()
            .with_context(|| format!("waiting for {}", self.label))?;
        self.reaped = true;
        Ok(status)
    }

    fn nix_pid(&self) -> Pid {
        Pid::from_raw(self.pid() as i32)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.stop();
        }
    }
}

/// "exited with status 2", "was killed by SIGKILL".
pub fn describe_status(s: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(sig)) => format!(
            "was killed by {}",
            Signal::try_from(sig).map_or_else(|_| format!("signal {sig}"), |s| s.to_string())
        ),
        _ => format!("ended ({s})"),
    }
}

/// Waits up to `timeout` for process `pid` (a child) to exit, without
/// reaping it. Returns whether it exited.
fn wait_exit(pid: u32, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    let exited = || {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        !matches!(
            waitid(Id::Pid(Pid::from_raw(pid as i32)), flags),
            Ok(WaitStatus::StillAlive)
        )
    };
    // SAFETY: pidfd_open takes a pid and flags and returns a new file
    // descriptor or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        // Kernels before 5.3: poll the status.
        while !exited() {
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        return Ok(true);
    }
    // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    loop {
        if exited() {
            return Ok(true);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e).context("poll on a pidfd");
            }
        }
    }
}

/// The last `n` non-empty lines of the file at `path`, indented.
pub fn stderr_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The live (not zombie) processes of group `pgrp`, read under `proc`.
pub fn group_members(proc: &Path, pgrp: i32) -> Vec<TaskStat> {
    let Ok(dir) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
        let path = e.path().join("stat");
        procfs::parse_task_stat(&path, pid, &std::fs::read(&path).ok()?).ok()
    })
    .filter(|s| s.pgrp == pgrp && s.state != 'Z')
    .collect()
}

/// CPU seconds used so far by group `pgrp` (its reaped descendants
/// included).
pub fn group_cpu_seconds(proc: &Path, pgrp: i32) -> f64 {
    group_members(proc, pgrp)
        .iter()
        .map(|s| (s.cpu_ticks() + s.children_ticks) as f64)
        .sum::<f64>()
        / procfs::user_hz() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_members_skip_zombies_and_other_groups() {
        let dir = tempfile::tempdir().unwrap();
        for (pid, pgrp, state) in [(10, 10, 'R'), (11, 10, 'Z'), (12, 99, 'R'), (13, 10, 'S')] {
            let d = dir.path().join(pid.to_string());
            std::fs::create_dir(&d).unwrap();
            std::fs::write(
                d.join("stat"),
                format!(
                    "{pid} (x) {state} 1 {pgrp} {pgrp} 0 -1 0 0 0 0 0 100 0 0 0 20 0 1 0 1 {}\n",
                    ["0"; 30].join(" ")
                ),
            )
            .unwrap();
        }
        std::fs::create_dir(dir.path().join("self")).unwrap();
        let mut pids: Vec<i32> = group_members(dir.path(), 10)
            .iter()
            .map(|s| s.pid)
            .collect();
        pids.sort();
        assert_eq!(pids, [10, 13]);
    }

    #[test]
    fn stopping_kills_the_whole_group_and_reaps() {
        let dir = tempfile::tempdir().unwrap();
        let err = dir.path().join("err");
        // A leader that ignores SIGTERM and a grandchild in its group.
        let mut c = Child::spawn(Spawn {
            label: "test child".into(),
            argv: ["sh", "-c", "trap '' TERM; sleep 300 & echo started; wait"]
                .map(String::from)
                .to_vec(),
            env: Vec::new(),
            stdout: None,
            stderr: &err,
            affinity: None,
            grace: Duration::from_millis(300),
        })
        .unwrap();
        let lines = c.lines().unwrap();
        assert_eq!(
            lines.recv_timeout(Duration::from_secs(10)).unwrap(),
            "started"
        );
        let pgrp = c.pid() as i32;
        assert_eq!(group_members(Path::new("/proc"), pgrp).len(), 2);
        let (status, killed) = c.stop().unwrap();
        assert!(killed, "SIGTERM was ignored: {status:?}");
        // The grandchild died with the group: the pipe it held is closed.
        assert!(lines.recv_timeout(Duration::from_secs(10)).is_err());
        // Closing its files comes just before a process turns zombie.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !group_members(Path::new("/proc"), pgrp).is_empty() {
            assert!(Instant::now() < deadline, "the group outlived SIGKILL");
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_failed_child_is_named_with_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let err = dir.path().join("err");
        let mut c = Child::spawn(Spawn {
            label: "the agent for policy odin".into(),
            argv: ["sh", "-c", "echo 'bad thing' >&2; exit 3"]
                .map(String::from)
                .to_vec(),
            env: Vec::new(),
            stdout: Some(&dir.path().join("out")),
            stderr: &err,
            affinity: None,
            grace: Duration::from_secs(1),
        })
        .unwrap();
        assert!(wait_exit(c.pid(), Duration::from_secs(10)).unwrap());
        assert!(c.has_exited());
        let msg = c.died("before READY").to_string();
        assert!(msg.contains("the agent for policy odin"), "{msg}");
        assert!(msg.contains("exited with status 3 before READY"), "{msg}");
        assert!(msg.contains("bad thing"), "{msg}");
    }
}
