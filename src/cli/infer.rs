//! `odin infer`: one tensor through a model on one CPU.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::UsageError;
use odin::cpulist::CpuSet;
use odin::engine::isa::Isa;
use odin::engine::open::ModelSource;
use odin::engine::{Precision, Shape, Tensor, Workspace, npy, onnx, zoo};
use odin::pipeline::affinity::pin_current_thread;
use odin::server::image::{Labels, PreprocessConfig, classify, preprocess};
use odin::topology;

/// Runs one input through the model on one CPU: an f32 `.npy` tensor (its
/// shape fixes the model's dynamic dimensions), or a JPEG or PNG picture
/// preprocessed with torchvision's ImageNet recipe (resize 256, centre crop
/// 224, ImageNet mean and std; NCHW or NHWC as the model's input is laid
/// out). Writes the first output as `.npy` and prints its shape and the
/// top-5 of each batch row (with `--labels`, as Triton's classification
/// strings `score:index:label`).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A built-in name or an ONNX file.
    #[arg(long, value_name = "NAME|FILE.onnx")]
    model: String,
    /// The input tensor, an f32 `.npy` file.
    #[arg(
        long,
        value_name = "IN.npy",
        required_unless_present = "image",
        conflicts_with = "image"
    )]
    input: Option<PathBuf>,
    /// A JPEG or PNG picture instead of a tensor.
    #[arg(long, value_name = "FILE")]
    image: Option<PathBuf>,
    /// Class labels, one per line, for the top-5 of a picture.
    #[arg(long, value_name = "FILE")]
    labels: Option<PathBuf>,
    /// Where to write the output tensor (`.npy`).
    #[arg(long, value_name = "OUT.npy")]
    output: Option<PathBuf>,
    /// CPU to run on (default: the last online CPU).
    #[arg(long)]
    cpu: Option<usize>,
    /// Seed of a built-in model's random weights.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Weights in f32 or bf16 (bf16 needs AVX512-BF16; without it the run
    /// is f32 and says why).
    #[arg(long, default_value = "f32", value_parser = super::parse_precision)]
    precision: Precision,
}

pub fn run(args: Args) -> Result<()> {
    let usage = |m: String| anyhow::Error::new(UsageError(m));
    let source = ModelSource::parse(&args.model).map_err(|e| usage(format!("--model: {e}")))?;
    let labels = args
        .labels
        .as_deref()
        .map(Labels::load)
        .transpose()
        .map_err(|e| usage(format!("--labels: {e}")))?;
    // A tensor fixes the model's dynamic dimensions; a picture takes the
    // model's input as it opens.
    let tensor = args
        .input
        .as_deref()
        .map(npy::read)
        .transpose()
        .map_err(|e| usage(format!("--input: {e}")))?;
    let (mut model, out_dims) = match &source {
        ModelSource::Builtin(name) => {
            if let (Some(t), Some(path)) = (&tensor, &args.input)
                && t.dims != zoo::INPUT.dims()
            {
                return Err(usage(format!(
                    "--input {}: shape {:?}, but {name} takes [1, 3, 224, 224]",
                    path.display(),
                    t.dims
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
                input_shape: tensor.as_ref().map(|t| t.dims.clone()),
            };
            let imp = onnx::load(path, &opts)
                .map_err(|e| usage(format!("--model {}: {e}", path.display())))?;
            (imp.model, imp.output.1)
        }
    };
    let input = match (tensor, &args.image) {
        (Some(t), _) => t,
        (None, Some(path)) => {
            picture(model.input(), path).map_err(|e| usage(format!("--image: {e}")))?
        }
        (None, None) => return Err(usage("give --input or --image".into())),
    };
    let report = model.set_precision(args.precision);
    if report.running != report.asked {
        eprintln!("odin infer: {}", report.reason);
    }
    let cpu = pick_cpu(args.cpu)?;
    pin_current_thread(&CpuSet::single(cpu)).with_context(|| format!("pinning to CPU {cpu}"))?;
    let shape: Shape = model.input();
    let x = Tensor::from_vec(shape, input.values);
    let start = std::time::Instant::now();
    let y = model.forward(&x, &mut Workspace::new());
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let values = y.into_vec();
    println!(
        "{}: output {} on CPU {cpu} in {ms:.2} ms ({} kernels, {})",
        model.name(),
        out_dims
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("x"),
        Isa::active(),
        model.precision()
    );
    let batch = out_dims.first().copied().unwrap_or(1).max(1);
    for (b, row) in values.chunks(values.len() / batch).enumerate() {
        let top: Vec<String> = match &labels {
            Some(l) => classify(row, 5, Some(l)),
            None => top_k(row, 5)
                .into_iter()
                .map(|(i, v)| format!("{i} ({v:.4})"))
                .collect(),
        };
        println!("  row {b}: top-5 {}", top.join(", "));
    }
    if let Some(path) = &args.output {
        npy::write(path, &out_dims, &values)?;
        println!("  wrote {}", path.display());
    }
    Ok(())
}

/// A picture as the model's input `shape`, which says NCHW or NHWC.
fn picture(shape: Shape, path: &Path) -> Result<npy::Npy> {
    let dims = shape.dims();
    let cfg = PreprocessConfig::for_input(dims);
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    let values = preprocess(&bytes, &cfg, dims)?;
    Ok(npy::Npy {
        dims: dims.to_vec(),
        values,
    })
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
