//! `odin profile`: per-unit cost profile of a model on one CPU.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::UsageError;
use odin::engine::profile::{CostProfile, measure};
use odin::pipeline::affinity::pin_current_thread;
use odin::{cpulist::CpuSet, topology};

/// Runs warm-up passes then K timed forward passes pinned to one CPU, and
/// prints per unit: index, kind, output shape, FLOPs, median ms, GFLOP/s;
/// then the total ms per image and images/s.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model to profile: a built-in name or an ONNX file.
    #[arg(long, value_name = "NAME|FILE.onnx")]
    model: String,
    /// Dimensions of an ONNX model's input, e.g. 1,3,224,224 (default: as
    /// the file declares, batch 1).
    #[arg(long, value_name = "DIMS", value_parser = super::parse_input_shape)]
    input_shape: Option<super::Dims>,
    /// CPU to pin to (default: the last online CPU).
    #[arg(long)]
    cpu: Option<usize>,
    /// Timed forward passes.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    runs: u32,
    /// Untimed forward passes first (at most 100000).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    warmup: u32,
    /// Seed of the model's random weights.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write the cost profile (JSON) to this file.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let root = Path::new("/");
    let online = topology::online_cpus(root)?;
    let cpu = match args.cpu {
        Some(c) if online.contains(c) => c,
        Some(c) => {
            return Err(UsageError(format!(
                "--cpu {c}: CPU {c} is not online (online: {online})"
            ))
            .into());
        }
        None => online.iter().last().context("no online CPU")?,
    };
    pin_current_thread(&CpuSet::single(cpu)).with_context(|| format!("pinning to CPU {cpu}"))?;
    let model = super::open_model(
        &args.model,
        args.seed,
        args.input_shape.as_ref().map(|d| d.0.as_slice()),
    )?;
    let cpu_name = topology::cpu_model_name(root).unwrap_or_else(|| "unknown".into());
    let profile = measure(
        &model,
        args.runs as usize,
        args.warmup as usize,
        Some(cpu),
        cpu_name,
    );
    if let Some(path) = &args.output {
        profile.save(path)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&profile)?);
    } else {
        print_table(&profile);
    }
    Ok(())
}

fn print_table(p: &CostProfile) {
    println!(
        "{} on CPU {} ({}), median of {} runs",
        p.model,
        p.cpu_index.map_or("-".into(), |c| c.to_string()),
        p.cpu,
        p.runs
    );
    println!(
        "{:>4}  {:<14} {:<11} {:<16} {:>9} {:>9} {:>8}",
        "unit", "name", "kind", "output", "MFLOP", "ms", "GFLOP/s"
    );
    for u in &p.units {
        println!(
            "{:>4}  {:<14} {:<11} {:<16} {:>9.1} {:>9.3} {:>8.1}",
            u.index,
            u.name,
            u.kind,
            u.output,
            u.flops as f64 / 1e6,
            u.median_ms,
            u.gflops()
        );
    }
    let flops: u64 = p.units.iter().map(|u| u.flops).sum();
    println!(
        "total {:.2} ms/image, {:.2} images/s, {:.2} GFLOP, {:.1} GFLOP/s",
        p.total_ms,
        p.images_per_s,
        flops as f64 / 1e9,
        flops as f64 / (p.total_ms * 1e6)
    );
}
