//! `odin profile`: per-unit cost profile of a model on one CPU.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::UsageError;
use std::sync::Arc;

use odin::engine::profile::{CostProfile, measure_in};
use odin::engine::{Precision, Workspace};
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
    #[arg(long, conflicts_with = "cpus")]
    cpu: Option<usize>,
    /// Run as one PE of several CPUs, e.g. 0-1: the layers split their work
    /// over one worker pinned to each (intra-op), as a pipeline stage does.
    #[arg(long, value_name = "LIST")]
    cpus: Option<CpuSet>,
    /// Weights in f32 or bf16 (bf16 needs AVX512-BF16; without it the run
    /// is f32 and says why).
    #[arg(long, default_value = "f32", value_parser = super::parse_precision)]
    precision: Precision,
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
    let pe = match &args.cpus {
        Some(set) => {
            if set.is_empty() || !set.iter().all(|c| online.contains(c)) {
                return Err(UsageError(format!(
                    "--cpus {set}: not a set of online CPUs (online: {online})"
                ))
                .into());
            }
            set.clone()
        }
        None => CpuSet::single(cpu),
    };
    let cpu = pe.iter().next().unwrap_or(cpu);
    pin_current_thread(&pe).with_context(|| format!("pinning to CPUs {pe}"))?;
    let mut model = super::open_model(
        &args.model,
        args.seed,
        args.input_shape.as_ref().map(|d| d.0.as_slice()),
    )?;
    let report = model.set_precision(args.precision);
    if report.running != report.asked {
        eprintln!("odin profile: {}", report.reason);
    }
    let cpu_name = topology::cpu_model_name(root).unwrap_or_else(|| "unknown".into());
    let profile = measure_in(
        &model,
        args.runs as usize,
        args.warmup as usize,
        Some(cpu),
        cpu_name,
        workspace(&pe)?,
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

/// One CPU: the calling thread alone. More: a pool of one worker pinned
/// to each CPU of `pe`, as a pipeline stage on that PE has.
fn workspace(pe: &CpuSet) -> Result<Workspace> {
    if pe.len() < 2 {
        return Ok(Workspace::new());
    }
    let cpus: Vec<usize> = pe.iter().collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cpus.len())
        .thread_name(|i| format!("odin-profile-w{i}"))
        .build()
        .context("starting the worker threads")?;
    let pinned: Vec<_> =
        pool.broadcast(|ctx| pin_current_thread(&CpuSet::single(cpus[ctx.index()])));
    for (cpu, r) in cpus.iter().zip(pinned) {
        r.with_context(|| format!("pinning a worker to CPU {cpu}"))?;
    }
    Ok(Workspace::with_pool(Arc::new(pool)))
}

fn print_table(p: &CostProfile) {
    println!(
        "{} on CPU {} ({}), median of {} runs, {} thread(s), {} kernels, {}",
        p.model,
        p.cpu_index.map_or("-".into(), |c| c.to_string()),
        p.cpu,
        p.runs,
        p.threads,
        p.isa,
        p.precision
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
