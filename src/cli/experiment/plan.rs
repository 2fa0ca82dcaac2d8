//! The validated arguments of `odin experiment`: what runs, where and for
//! how long, checked before anything starts.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::ValueEnum;

use super::Args;
use crate::cli::UsageError;
use crate::cli::stress::Kind;
use odin::agent::daemon::{self, Overrides};
use odin::cpulist::CpuSet;
use odin::topology;

/// The program started as the antagonist.
#[derive(Clone, Debug)]
pub enum AntagonistProgram {
    /// `odin stress` doing this kind of work.
    Builtin(Kind),
    /// An external command line.
    External(Vec<String>),
}

/// The validated arguments.
#[derive(Debug)]
pub struct Plan {
    pub exe: PathBuf,
    pub model: String,
    pub pes: Vec<CpuSet>,
    pub policies: Vec<String>,
    pub warmup: f64,
    pub before: f64,
    pub during: f64,
    pub after: f64,
    pub margin: f64,
    pub antagonist: AntagonistProgram,
    pub antagonist_cpus: CpuSet,
    /// The PEs the antagonist shares CPUs with.
    pub targets: Vec<usize>,
    pub config: Option<PathBuf>,
    /// The SLO and where it came from, when known before running.
    pub slo: Option<(f64, &'static str)>,
}

fn usage(msg: String) -> anyhow::Error {
    UsageError(msg).into()
}

fn check_secs(flag: &str, v: f64, zero_ok: bool) -> Result<()> {
    crate::cli::check_seconds(flag, v, zero_ok)?;
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
    pub fn new(args: &Args) -> Result<Self> {
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
        crate::cli::check_slo_latency(args.slo_latency)?;
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
            Some(text) => crate::cli::parse_pes(text, &online)?,
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
            AntagonistProgram::Builtin(args.antagonist_kind)
        } else {
            let program = &args.antagonist[0];
            if !on_path(program) {
                return Err(usage(format!(
                    "--antagonist: {program}: no such executable (PATH searched)"
                )));
            }
            AntagonistProgram::External(args.antagonist.clone())
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

    pub fn pes_arg(&self) -> String {
        self.pes
            .iter()
            .map(CpuSet::to_string)
            .collect::<Vec<_>>()
            .join(";")
    }

    /// The antagonist's command line for a window of `during` seconds.
    pub fn antagonist_argv(&self) -> Vec<String> {
        match &self.antagonist {
            AntagonistProgram::Builtin(kind) => vec![
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
            AntagonistProgram::External(argv) => argv.clone(),
        }
    }

    /// "odin stress --kind cpu --cpus 1", for people.
    pub fn antagonist_text(&self) -> String {
        match &self.antagonist {
            AntagonistProgram::Builtin(kind) => format!(
                "odin stress --kind {} --cpus {}",
                kind_name(*kind),
                self.antagonist_cpus
            ),
            AntagonistProgram::External(argv) => argv.join(" "),
        }
    }
}

fn kind_name(kind: Kind) -> String {
    kind.to_possible_value()
        .map_or_else(|| "cpu".into(), |v| v.get_name().to_string())
}
