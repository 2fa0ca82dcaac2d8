//! `odin probe`: what this machine offers odin, one check per line.
//!
//! A report, not a gate: every check ends `ok`, `degraded` (odin runs, with
//! less to go on) or `missing` (a feature is unavailable), with the reason
//! and the fix when not `ok`, and the command exits 0 either way.
//!
//! The checks are computed by [`checks`] from a root directory and a
//! [`CounterSource`], so tests run them on fake `/proc` and `/sys` trees
//! with [`FakeCounters`](odin::monitor::perf::FakeCounters). Two checks act
//! on the real machine whatever the root: the counter opens (through the
//! source) and the affinity check (through an [`Affinity`]).

mod affinity;
mod cgroup;
mod counters;
mod cpus;
mod other_daemons;
mod perf_permissions;
mod psi;
mod schedstat;
#[cfg(test)]
mod tests;

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use odin::monitor::perf::CounterSource;
use odin::monitor::perf::Permissions;
use odin::pipeline::affinity::{Affinity, SchedAffinity};
use odin::thread::gettid;
use odin::topology;

/// Checks what this machine offers odin: performance counters and their
/// permissions, schedstat, PSI, cgroups, CPU affinity, the CPU topology and
/// other daemons that move threads or cgroups. Prints one line per check
/// with its status (ok, degraded, missing) and, when not ok, the reason and
/// the fix. Always exits 0: it is a report, not a gate.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print `{"checks": [{"name", "status", "detail", "reason", "fix"}, ...]}`
    /// instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let mut counters = odin::monitor::perf::PerfCounters::new();
    let checks = checks(Path::new("/"), &mut counters);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Report { checks: &checks })?
        );
    } else {
        for c in &checks {
            println!("{}", c.line());
        }
    }
    Ok(())
}

/// How far a check is from what odin wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Everything odin uses is there.
    Ok,
    /// odin runs, with less to go on.
    Degraded,
    /// The feature is unavailable.
    Missing,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Degraded => "degraded",
            Status::Missing => "missing",
        }
    }
}

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable identifier (`hw_counters`, `psi`, ...).
    pub name: &'static str,
    /// The verdict.
    pub status: Status,
    /// What was found, whatever the status.
    pub detail: String,
    /// Why it is not ok; `None` when ok.
    pub reason: Option<String>,
    /// What would make it ok; `None` when ok.
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Check {
            name,
            status: Status::Ok,
            detail: detail.into(),
            reason: None,
            fix: None,
        }
    }

    fn not_ok(
        name: &'static str,
        status: Status,
        detail: impl Into<String>,
        reason: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Check {
            name,
            status,
            detail: detail.into(),
            reason: Some(reason.into()),
            fix: Some(fix.into()),
        }
    }

    /// One line: name, status, detail, then reason and fix when not ok.
    fn line(&self) -> String {
        let mut line = format!(
            "{:<16} {:<8} {}",
            self.name,
            self.status.as_str(),
            self.detail
        );
        if let Some(reason) = &self.reason {
            line.push_str(&format!(" | reason: {reason}"));
        }
        if let Some(fix) = &self.fix {
            line.push_str(&format!(" | fix: {fix}"));
        }
        line
    }
}

#[derive(Serialize)]
struct Report<'a> {
    checks: &'a [Check],
}

/// Runs every check on the machine under `root`, opening counters through
/// `counters` and pinning threads with the kernel's affinity calls.
pub fn checks(root: &Path, counters: &mut dyn CounterSource) -> Vec<Check> {
    checks_with(root, counters, &SchedAffinity)
}

/// [`checks`] with the affinity calls behind `affinity`.
fn checks_with(
    root: &Path,
    counters: &mut dyn CounterSource,
    affinity: &dyn Affinity,
) -> Vec<Check> {
    let topo = topology::read_topology(root);
    let online = match &topo {
        Ok(t) => Some(t.online()),
        Err(_) => topology::online_cpus(root).ok(),
    };
    let perms = Permissions::read(root);
    let (hw, sw) = counters::check(counters, &perms);
    vec![
        cpus::check(&topo),
        hw,
        sw,
        perf_permissions::check(counters, &perms, online.as_ref()),
        schedstat::check(root),
        psi::check(root),
        cgroup::check(root),
        affinity::check(root, affinity, online.as_ref()),
        other_daemons::check(root),
    ]
}
