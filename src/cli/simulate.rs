//! `odin simulate`: every policy on a simulated pipeline under a scenario.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::UsageError;
use odin::agent::config::RATES;
use odin::engine::profile::CostProfile;
use odin::pipeline::source::Arrivals;
use odin::policy::{self, config::PolicyConfig};
use odin::sim::scenario::{MAX_PES, Scenario, ScenarioError};
use odin::sim::{self, SimError, Spec};

/// Simulates the model as a pipeline on N PEs under an interference
/// scenario, once per policy (same frames, same interference), and prints
/// one row per policy: throughput (first to last completion), p50/p99
/// latency (admission to completion), SLO attainment, reconfigurations,
/// frames completed while a candidate was measured, throughput over the
/// oracle's, and mean wall time per decision. Deterministic for a seed,
/// except the decision time. Scenario format: configs/scenarios/README.md.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model to simulate: a built-in name or an ONNX file (give its
    /// measured costs with --profile).
    #[arg(long, value_name = "NAME|FILE.onnx")]
    model: String,
    /// Dimensions of an ONNX model's input, e.g. 1,3,224,224.
    #[arg(long, value_name = "DIMS", value_parser = super::parse_input_shape)]
    input_shape: Option<super::Dims>,
    /// Number of simulated PEs (one pipeline stage each), 1 to 4096.
    #[arg(long, value_name = "N", alias = "pes")]
    pe_count: usize,
    /// A shipped scenario (none, long-lived, short-bursts, periodic,
    /// multi-pe, heterogeneous) or a YAML file.
    #[arg(long, value_name = "NAME|FILE")]
    scenario: String,
    /// Policies to compare: `all`, or a comma-separated list of static,
    /// lls, odin, guided, oracle. The oracle always runs, for the ratio.
    #[arg(long, value_name = "all|LIST", default_value = "all", alias = "policy")]
    policies: String,
    /// Frames per policy run, 2 to 10000000.
    #[arg(long, value_name = "K", default_value_t = 2000)]
    frames: u64,
    /// Latency SLO in ms (default: 1.5 x the p99 latency of the initial
    /// placement without interference, under the same load).
    #[arg(long, value_name = "MS")]
    slo_latency: Option<f64>,
    /// Print the report as JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Write one CSV row per policy tick (throughput, latency, placement).
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Write throughput and latency over time as an SVG plot.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Seed of random interference and arrivals.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Unit costs from `odin profile --output` (default: FLOPs at --gflops).
    #[arg(long, value_name = "FILE")]
    profile: Option<PathBuf>,
    /// FLOP rate of a speed-1 PE when no profile is given, GFLOP/s.
    #[arg(long, value_name = "RATE", default_value_t = 100.0)]
    gflops: f64,
    /// Open loop: Poisson arrivals at this many frames per second
    /// (default: closed loop, keeping the pipeline full).
    #[arg(long, value_name = "FPS")]
    rate: Option<f64>,
    /// Policy tick in ms of virtual time, 0.1 to 60000.
    #[arg(long, value_name = "MS", default_value_t = 100.0)]
    tick_ms: f64,
}

/// The most frames one policy run may simulate: minutes of wall time per
/// policy at the simulator's speed, far beyond any experiment.
pub const MAX_FRAMES: u64 = 10_000_000;

fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

fn policies(text: &str) -> Result<Vec<String>> {
    if text == "all" {
        return Ok(policy::NAMES.iter().map(|s| s.to_string()).collect());
    }
    let mut out: Vec<String> = Vec::new();
    for p in text.split(',').map(str::trim) {
        if !policy::NAMES.contains(&p) {
            return Err(usage(format!(
                "--policies {p:?}: unknown policy; valid: all, {}",
                policy::NAMES.join(", ")
            )));
        }
        if !out.iter().any(|o| o == p) {
            out.push(p.to_string());
        }
    }
    Ok(out)
}

pub fn run(args: Args) -> Result<()> {
    let policies = policies(&args.policies)?;
    super::check_count("pe-count", args.pe_count as u64, 1, MAX_PES as u64, "PEs")?;
    super::check_count("frames", args.frames, 2, MAX_FRAMES, "frames")?;
    super::check_number("gflops", args.gflops, 0.001, 1e6, "GFLOP/s")?;
    super::check_number("tick-ms", args.tick_ms, 0.1, 60_000.0, "milliseconds")?;
    super::check_slo_latency(args.slo_latency)?;
    if let Some(plot) = &args.plot {
        let ext = plot.extension().map(|e| e.to_string_lossy().to_lowercase());
        if ext.as_deref() != Some("svg") {
            return Err(usage(format!(
                "--plot {}: only .svg is supported (convert with e.g. rsvg-convert for PNG)",
                plot.display()
            )));
        }
    }
    let load = match args.rate {
        None => Arrivals::Closed,
        Some(r) => {
            super::check_number("rate", r, *RATES.start(), *RATES.end(), "frames per second")?;
            Arrivals::Open { rate: r }
        }
    };
    let scenario =
        Scenario::find(&args.scenario, |p| std::fs::read_to_string(p)).map_err(|e| match e {
            ScenarioError::Io { .. } => anyhow::Error::new(e),
            e => usage(format!("--scenario: {e}")),
        })?;
    let model = super::open_model(
        &args.model,
        1,
        args.input_shape.as_ref().map(|d| d.0.as_slice()),
    )?;
    let profile = match &args.profile {
        Some(path) => {
            let p = CostProfile::load(path, true).map_err(|e| usage(format!("--profile: {e}")))?;
            p.check_fits(&model)
                .map_err(|e| usage(format!("--profile {}: {e}", path.display())))?;
            p
        }
        None => CostProfile::nominal(&model, args.gflops),
    };
    let spec = Spec {
        model: args.model.clone(),
        unit_ms: profile.unit_ms(),
        intensity: sim::intensity(&profile),
        pes: args.pe_count,
        scenario,
        policies,
        frames: args.frames,
        slo_latency_ms: args.slo_latency,
        seed: args.seed,
        load,
        tick_s: args.tick_ms / 1e3,
        policy: PolicyConfig::default(),
    };
    let report = sim::simulate(&spec).map_err(|e| match e {
        SimError::Scenario(ScenarioError::Io { .. }) => anyhow::Error::new(e),
        e => usage(e.to_string()),
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    if let Some(path) = &args.csv {
        std::fs::write(path, report.csv())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, sim::plot::svg(&report))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
