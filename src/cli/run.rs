//! `odin run`: the pipeline on this machine as a service, with a status
//! line per second. The loop itself is `odin::agent::daemon`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::builder::PossibleValuesParser;

use super::UsageError;
use super::parse_input_shape;
use odin::agent::config::{POLICY_NAMES, RATES};
use odin::agent::daemon::{self, Options, Overrides, Refused};
use odin::cpulist::CpuSet;
use odin::topology;

/// Runs the model as a pipeline of pinned stages and prints frames/s, p50
/// and p99 latency, per-stage service times and the partition every second.
///
/// The configuration comes from `--config` (see configs/odin.yaml; without
/// it, the defaults); every flag given overrides the file. SIGHUP re-reads
/// the file and applies it if valid (an invalid one is logged and the old
/// one kept); SIGUSR1 logs a state dump; SIGINT or SIGTERM drains the
/// pipeline, writes the summary and exits 0 (a second one exits at once).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// YAML configuration, re-read on SIGHUP (default: built-in defaults).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Model to run: a built-in name (alexnet, vgg16, resnet18, resnet50,
    /// resnet152, mobilenet_v2) or an ONNX file (default: model.path or
    /// model.name, resnet18).
    #[arg(long, value_name = "NAME|FILE.onnx")]
    model: Option<String>,
    /// Dimensions of an ONNX model's input, e.g. 1,3,224,224 (default:
    /// model.input_shape, or as the file declares with batch 1).
    #[arg(long, value_name = "DIMS", value_parser = parse_input_shape)]
    input_shape: Option<super::Dims>,
    /// One CPU set per stage, separated by ';' (e.g. "0;1" or "0-1;2-3").
    /// Default: pes, or one stage per online CPU.
    #[arg(long, value_name = "SETS")]
    pes: Option<String>,
    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Open loop: Poisson arrivals at this many frames per second
    /// (default: load, a closed loop keeping the pipeline full).
    #[arg(long, value_name = "FPS")]
    rate: Option<f64>,
    /// Cost profile from `odin profile --output` for the initial partition
    /// (default: model.profile, or FLOP-based costs).
    #[arg(long, value_name = "FILE")]
    profile: Option<PathBuf>,
    /// Write the run's summary as JSON to this file at exit.
    #[arg(long, value_name = "FILE")]
    json_summary: Option<PathBuf>,
    /// Seed of the model's random weights (default: model.seed, 1).
    #[arg(long)]
    seed: Option<u64>,
    /// How to re-balance under interference: odin (local search), guided
    /// (estimate slowdowns, jump to the best placement, refine), lls (move
    /// the stage to the least-loaded PE) or static (never change).
    /// Default: policy.name, odin.
    #[arg(long, value_parser = PossibleValuesParser::new(POLICY_NAMES))]
    policy: Option<String>,
    /// Serve the model over the Open Inference Protocol's REST API at this
    /// address (e.g. 127.0.0.1:8000); requests become the load instead of
    /// synthetic frames. Default: server.http when server.enabled.
    #[arg(long, value_name = "ADDR")]
    http: Option<std::net::SocketAddr>,
    /// Serve the model over the Open Inference Protocol's gRPC API at this
    /// address (e.g. 127.0.0.1:8001). Default: server.grpc when
    /// server.enabled.
    #[arg(long, value_name = "ADDR")]
    grpc: Option<std::net::SocketAddr>,
    /// The model's name in the server's URLs (/v2/models/NAME), e.g. the
    /// name KServe gives an InferenceService. Default: server.model_name,
    /// else the built-in name or the ONNX file's stem.
    #[arg(long, value_name = "NAME")]
    model_name: Option<String>,
    /// Keep the cgroup journal and the instance lock in this directory
    /// (default: cgroup.state_dir, /var/lib/odin). One agent per state
    /// directory: a second one exits 2 naming the first.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Accept a configuration or cost profile reached through a symbolic
    /// link (e.g. a Kubernetes ConfigMap volume); the owner and mode checks
    /// apply to the file it resolves to and its directories.
    #[arg(long)]
    follow_symlinks: bool,
}

pub fn run(args: Args) -> Result<()> {
    let online = topology::online_cpus(Path::new("/"))?;
    let pes = args
        .pes
        .as_deref()
        .map(|t| super::parse_pes(t, &online))
        .transpose()?
        .map(|sets| sets.iter().map(CpuSet::to_string).collect());
    if let Some(d) = args.duration {
        super::check_seconds("duration", d, false)?;
    }
    if let Some(r) = args.rate
        && !RATES.contains(&r)
    {
        return Err(UsageError(format!(
            "--rate {r}: must be a number of frames per second from {} to {}",
            RATES.start(),
            RATES.end()
        ))
        .into());
    }
    let overrides = Overrides {
        model: args.model,
        input_shape: args.input_shape.map(|d| d.0),
        pes,
        rate: args.rate,
        policy: args.policy,
        profile: args.profile,
        seed: args.seed,
        http: args.http,
        grpc: args.grpc,
        model_name: args.model_name,
        state_dir: args
            .state_dir
            .map(|d| std::path::absolute(&d))
            .transpose()
            .context("--state-dir")?,
        follow_symlinks: args.follow_symlinks,
    };
    let cfg = daemon::load_config(args.config.as_deref(), &overrides, &online)
        .map_err(|e| UsageError(e.to_string()))?;
    let opts = Options {
        config_path: args.config,
        overrides,
        duration: args.duration.map(Duration::from_secs_f64),
        json_summary: args.json_summary,
    };
    daemon::run(cfg, opts, online).map_err(|e| {
        if e.is::<Refused>() {
            UsageError(e.to_string()).into()
        } else {
            e
        }
    })
}
