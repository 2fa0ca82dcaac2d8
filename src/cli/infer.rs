//! `odin infer`: one tensor through a model on one CPU.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::UsageError;
use odin::cpulist::CpuSet;
use odin::engine::open::ModelSource;
use odin::engine::{Shape, Tensor, Workspace, npy, onnx, zoo};
use odin::pipeline::affinity::pin_current_thread;
use odin::topology;

/// Runs one input tensor (an f32 `.npy` file; its shape fixes the model's
/// dynamic dimensions) through the model on one CPU, writes the first
/// output as `.npy`, and prints its shape and the top-5 indices of each
/// batch row.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A built-in name or an ONNX file.
    #[arg(long, value_name = "NAME|FILE.onnx")]
    model: String,
    /// The input tensor, an f32 `.npy` file.
    #[arg(long, value_name = "IN.npy")]
    input: PathBuf,
    /// Where to write the output tensor (`.npy`).
    #[arg(long, value_name = "OUT.npy")]
    output: Option<PathBuf>,
    /// CPU to run on (default: the last online CPU).
    #[arg(long)]
    cpu: Option<usize>,
    /// Seed of a built-in model's random weights.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub fn run(args: Args) -> Result<()> {
    let usage = |m: String| anyhow::Error::new(UsageError(m));
    let input = npy::read(&args.input).map_err(|e| usage(format!("--input: {e}")))?;
    let source = ModelSource::parse(&args.model).map_err(|e| usage(format!("--model: {e}")))?;
    let (model, out_dims) = match &source {
        ModelSource::Builtin(name) => {
            if input.dims != zoo::INPUT.dims() {
                return Err(usage(format!(
                    "--input {}: shape {:?}, but {name} takes [1, 3, 224, 224]",
                    args.input.display(),
                    input.dims
                )));
            }
            let m = zoo::build(name, args.seed)?;
            let o = m.output();
            let dims = if (o.h, o.w) == (1, 1) {
                vec![o.n, o.c]
            } else {
                o.dims().to_vec()
            };
            (m, dims)
        }
        ModelSource::File(path) => {
            let opts = onnx::ImportOptions {
                input_shape: Some(input.dims.clone()),
            };
            let imp = onnx::load(path, &opts)
                .map_err(|e| usage(format!("--model {}: {e}", path.display())))?;
            (imp.model, imp.output.1)
        }
    };
    let cpu = pick_cpu(args.cpu)?;
    pin_current_thread(&CpuSet::single(cpu)).with_context(|| format!("pinning to CPU {cpu}"))?;
    let shape: Shape = model.input();
    let x = Tensor::from_vec(shape, input.values);
    let start = std::time::Instant::now();
    let y = model.forward(&x, &mut Workspace::new());
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let values = y.into_vec();
    println!(
        "{}: output {} on CPU {cpu} in {ms:.2} ms",
        model.name(),
        out_dims
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("x")
    );
    let batch = out_dims.first().copied().unwrap_or(1).max(1);
    for (b, row) in values.chunks(values.len() / batch).enumerate() {
        let top: Vec<String> = top_k(row, 5)
            .into_iter()
            .map(|(i, v)| format!("{i} ({v:.4})"))
            .collect();
        println!("  row {b}: top-5 {}", top.join(", "));
    }
    if let Some(path) = &args.output {
        npy::write(path, &out_dims, &values)?;
        println!("  wrote {}", path.display());
    }
    Ok(())
}

fn pick_cpu(want: Option<usize>) -> Result<usize> {
    let online = topology::online_cpus(Path::new("/"))?;
    match want {
        Some(c) if online.contains(c) => Ok(c),
        Some(c) => Err(UsageError(format!(
            "--cpu {c}: CPU {c} is not online (online: {online})"
        ))
        .into()),
        None => online.iter().last().context("no online CPU"),
    }
}

/// The `k` largest values with their indices, largest first (NaN last).
pub fn top_k(values: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<(usize, f32)> = values.iter().copied().enumerate().collect();
    idx.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    idx.retain(|(_, v)| !v.is_nan());
    idx.truncate(k);
    idx
}
