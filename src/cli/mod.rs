//! `odin` subcommands, one file each.

mod check_config;
mod experiment;
mod infer;
mod inspect;
mod man_pages;
mod probe;
mod profile;
mod reload;
mod run;
mod simulate;
mod stress;

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};
use odin::cpulist::CpuSet;

/// odin keeps a CNN inference pipeline fast while other programs share its
/// machine: it runs the network as pinned pipeline stages, watches for
/// interference and re-balances the stages online.
#[derive(Debug, Parser)]
#[command(name = "odin", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the model as a pipeline of pinned stages on this machine.
    Run(run::Args),
    /// Run a built-in antagonist (busy loop, cache thrasher, memory streamer) on some CPUs.
    Stress(stress::Args),
    /// Measure each unit of a model on one CPU and print or save its cost profile.
    Profile(profile::Args),
    /// Compare the policies on a simulated pipeline under an interference scenario.
    Simulate(simulate::Args),
    /// Compare the policies on this machine under a real antagonist started and stopped on one PE.
    Experiment(experiment::Args),
    /// Report what this machine offers odin: counters, schedstat, PSI, cgroups, affinity, CPUs.
    Probe(probe::Args),
    /// Show what odin makes of an ONNX file: opset, input and output, ops, units.
    Inspect(inspect::Args),
    /// Run one .npy tensor through a model on one CPU and write the output as .npy.
    Infer(infer::Args),
    /// Validate a configuration file and print the effective configuration.
    CheckConfig(check_config::Args),
    /// Make the running agent re-read its configuration (SIGHUP), found by its state directory.
    Reload(reload::Args),
    /// Write the manual pages into a directory (for packaging).
    #[command(hide = true)]
    ManPages(man_pages::Args),
}

/// The dimensions `--input-shape` gives (one value, so clap does not take
/// a `Vec` for a list of values).
#[derive(Clone, Debug)]
pub(crate) struct Dims(pub Vec<usize>);

/// clap's parser for `--input-shape` (`1,3,224,224`): 1 to 4 positive
/// dimensions, at most [`odin::agent::config::MAX_INPUT_ELEMENTS`] values
/// in all.
pub(crate) fn parse_input_shape(text: &str) -> Result<Dims, String> {
    let dims = odin::engine::open::parse_shape(text)?;
    odin::agent::config::check_input_shape(&dims).map_err(|e| format!("{text:?}: {e}"))?;
    Ok(Dims(dims))
}

/// Parses a `--pes` value ("0;1", "0-1;2-3"): one CPU set per PE, each
/// CPU online.
pub(crate) fn parse_pes(text: &str, online: &CpuSet) -> Result<Vec<CpuSet>, UsageError> {
    text.split(';')
        .enumerate()
        .map(|(i, part)| {
            let set: CpuSet = part
                .parse()
                .map_err(|e| UsageError(format!("--pes: PE {i} ({part:?}): {e}")))?;
            let offline = set.difference(online);
            if !offline.is_empty() {
                return Err(UsageError(format!(
                    "--pes: PE {i}: CPU {offline} not online (online: {online})"
                )));
            }
            Ok(set)
        })
        .collect()
}

/// Opens the model a `--model` value names (a built-in name or an ONNX
/// file); a bad name or file is a usage error.
pub(crate) fn open_model(
    value: &str,
    seed: u64,
    input_shape: Option<&[usize]>,
) -> Result<odin::engine::Model, UsageError> {
    odin::engine::open::ModelSource::parse(value)
        .and_then(|s| s.open(seed, input_shape))
        .map_err(|e| UsageError(format!("--model: {e}")))
}

/// A `--precision` value.
pub(crate) fn parse_precision(s: &str) -> Result<odin::engine::Precision, String> {
    use odin::engine::Precision;
    [Precision::F32, Precision::Bf16]
        .into_iter()
        .find(|p| p.name() == s)
        .ok_or_else(|| format!("{s:?} is not f32 or bf16"))
}

/// An error in what the user asked for (exit code 2), as opposed to a
/// failure while doing it (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The longest time a flag may give: ten years, far beyond any run, well
/// inside what `Duration` holds.
pub const MAX_SECONDS: f64 = 315_360_000.0;

/// A `--flag` number of seconds: finite, above 0 (or 0 when `zero_ok`), at
/// most [`MAX_SECONDS`].
pub fn check_seconds(flag: &str, v: f64, zero_ok: bool) -> Result<(), UsageError> {
    if v.is_finite() && (v > 0.0 || (zero_ok && v == 0.0)) && v <= MAX_SECONDS {
        return Ok(());
    }
    let low = if zero_ok { "0" } else { "more than 0" };
    Err(UsageError(format!(
        "--{flag} {v}: must be a number of seconds from {low} to {MAX_SECONDS} (ten years)"
    )))
}

/// A `--flag` number: finite and within `min..=max`, in `unit`s.
pub fn check_number(flag: &str, v: f64, min: f64, max: f64, unit: &str) -> Result<(), UsageError> {
    if v.is_finite() && (min..=max).contains(&v) {
        return Ok(());
    }
    Err(UsageError(format!(
        "--{flag} {v}: must be a number of {unit} from {min} to {max}"
    )))
}

/// A `--flag` count within `min..=max`, in `unit`s.
pub fn check_count(flag: &str, v: u64, min: u64, max: u64, unit: &str) -> Result<(), UsageError> {
    if (min..=max).contains(&v) {
        return Ok(());
    }
    Err(UsageError(format!(
        "--{flag} {v}: must be from {min} to {max} {unit}"
    )))
}

/// The longest latency SLO a flag may give, milliseconds: a day.
pub const MAX_LATENCY_MS: f64 = 86_400_000.0;

/// The shortest latency SLO a flag may give, milliseconds: a microsecond.
pub const MIN_LATENCY_MS: f64 = 0.001;

/// Checks `--slo-latency`, when given: milliseconds from [`MIN_LATENCY_MS`]
/// to [`MAX_LATENCY_MS`].
pub fn check_slo_latency(slo: Option<f64>) -> Result<(), UsageError> {
    match slo {
        Some(v) => check_number(
            "slo-latency",
            v,
            MIN_LATENCY_MS,
            MAX_LATENCY_MS,
            "milliseconds",
        ),
        None => Ok(()),
    }
}

/// Parses the command line, runs the subcommand and maps errors to exit codes.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{}", one_line(&e));
            return ExitCode::from(2);
        }
    };
    // Same output as before; the level can change on a reload.
    odin::agent::daemon::init_logging();
    let result = match cli.command {
        Command::CheckConfig(args) => check_config::run(args),
        Command::Experiment(args) => experiment::run(args),
        Command::Infer(args) => infer::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::ManPages(args) => man_pages::run(args),
        Command::Probe(args) => probe::run(args),
        Command::Profile(args) => profile::run(args),
        Command::Reload(args) => reload::run(args),
        Command::Run(args) => run::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Stress(args) => stress::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("odin: {e:#}");
            if e.is::<UsageError>() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Folds a clap error into one line, naming the valid choices: the
/// possible values of a bad value, the flags of the subcommand for an
/// unknown flag.
fn one_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let mut parts: Vec<String> = rendered
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information")
        })
        .map(str::to_string)
        .collect();
    if matches!(
        e.kind(),
        ErrorKind::UnknownArgument
            | ErrorKind::MissingRequiredArgument
            | ErrorKind::InvalidSubcommand
    ) {
        parts.push(valid_choices());
    }
    let mut line = String::new();
    for p in parts {
        if !line.is_empty() {
            line.push_str(if line.ends_with(':') { " " } else { "; " });
        }
        line.push_str(&p);
    }
    line
}

/// The subcommands and their flags, on one line.
fn valid_choices() -> String {
    let cmd = Cli::command();
    let subs: Vec<String> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| {
            let flags: Vec<String> = s
                .get_arguments()
                .filter_map(|a| {
                    a.get_long()
                        .map(|l| format!("--{l}"))
                        .or_else(|| Some(format!("<{}>", a.get_id())))
                })
                .collect();
            format!("{} [{}]", s.get_name(), flags.join(" "))
        })
        .collect();
    format!("valid: {}", subs.join(", "))
}
