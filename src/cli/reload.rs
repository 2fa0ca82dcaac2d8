//! `odin reload`: SIGHUP to the agent that holds a state directory's lock,
//! where `systemctl reload odin` is not at hand (a container, a shell
//! without systemd). The lock file names the agent; the lock held proves
//! the pid is that agent's and alive.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use odin::agent::lock;

use super::UsageError;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The agent's state directory (its cgroup.state_dir or --state-dir).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/odin")]
    state_dir: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let holder = lock::holder(&args.state_dir).map_err(|e| UsageError(e.to_string()))?;
    let Some(pid) = holder else {
        return Err(UsageError(format!(
            "no odin agent holds the lock in {}: none runs with that state directory",
            args.state_dir.display()
        ))
        .into());
    };
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() != "odin" {
        bail!(
            "pid {pid}, which holds the lock in {}, is {:?}, not odin; no signal sent",
            args.state_dir.display(),
            comm.trim()
        );
    }
    kill(Pid::from_raw(pid), Signal::SIGHUP).with_context(|| format!("SIGHUP to pid {pid}"))?;
    println!("odin reload: SIGHUP sent to odin pid {pid}");
    Ok(())
}
