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

/// A progress line on stderr. A closed stderr (`2>&1 | head`) must not
/// abort the experiment and leave its children behind, so write errors
/// are ignored.
macro_rules! progress {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod analysis;
mod child;
mod plan;
mod report;
mod run;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::builder::PossibleValuesParser;

use super::stress::Kind;
use odin::agent::config::POLICY_NAMES;
use odin::engine::zoo;
use plan::Plan;
use report::Report;
use run::OutputDir;

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

/// A stop signal arrived: the children were stopped, exit 130.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by signal {0}")]
struct Interrupted(i32);

pub fn run(args: Args) -> Result<()> {
    let plan = Plan::new(&args)?;
    let stops = run::stop_signals()?;
    let dir = OutputDir::new(args.output_dir.as_deref())?;
    progress!(
        "odin experiment: {} policies x {:.0} s, files in {}",
        plan.policies.len(),
        plan.warmup + plan.before + plan.during + plan.after,
        dir.path.display()
    );
    let mut runs = Vec::new();
    for policy in &plan.policies {
        match run::run_policy(&plan, policy, &dir, &stops) {
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
