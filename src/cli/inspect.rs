//! `odin inspect`: what odin makes of an ONNX file.

use std::path::PathBuf;

use anyhow::Result;

use super::UsageError;
use odin::engine::onnx::{self, ImportOptions, Imported};

/// Imports an ONNX file as `odin run` would and prints its opset, input
/// and output, the op counts of the file and of the folded graph, the
/// kernels after fusion, and the pipeline units (index, ops, output shape,
/// FLOPs, weight bytes). An unsupported or malformed file is an error
/// naming the node or field (exit 2).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ONNX file.
    model: PathBuf,
    /// Dimensions of the input, e.g. 1,3,224,224 (default: as the file
    /// declares, batch 1).
    #[arg(long, value_name = "DIMS", value_parser = super::parse_input_shape)]
    input_shape: Option<super::Dims>,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct Report<'a> {
    model: String,
    file: &'a std::path::Path,
    ir_version: i64,
    opset: i64,
    producer: &'a str,
    input: Io<'a>,
    output: Io<'a>,
    ignored_outputs: &'a [String],
    file_ops: &'a std::collections::BTreeMap<String, usize>,
    folded_nodes: usize,
    graph_ops: &'a std::collections::BTreeMap<String, usize>,
    kernels: &'a std::collections::BTreeMap<String, usize>,
    params: usize,
    flops: u64,
    units: &'a [onnx::UnitInfo],
}

#[derive(serde::Serialize)]
struct Io<'a> {
    name: &'a str,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    declared: Option<Vec<Option<usize>>>,
}

pub fn run(args: Args) -> Result<()> {
    let opts = ImportOptions {
        input_shape: args.input_shape.as_ref().map(|d| d.0.clone()),
    };
    let imp = onnx::load(&args.model, &opts)
        .map_err(|e| UsageError(format!("{}: {e}", args.model.display())))?;
    let report = report(&args, &imp);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print(&report);
    }
    Ok(())
}

fn report<'a>(args: &'a Args, imp: &'a Imported) -> Report<'a> {
    Report {
        model: imp.model.name().to_string(),
        file: &args.model,
        ir_version: imp.meta.ir_version,
        opset: imp.meta.opset,
        producer: &imp.meta.producer,
        input: Io {
            name: &imp.input.0,
            shape: &imp.input.1,
            declared: Some(imp.meta.declared_input.clone()),
        },
        output: Io {
            name: &imp.output.0,
            shape: &imp.output.1,
            declared: None,
        },
        ignored_outputs: &imp.meta.ignored_outputs,
        file_ops: &imp.meta.file_ops,
        folded_nodes: imp.meta.folded,
        graph_ops: &imp.folded_ops,
        kernels: &imp.kernels,
        params: imp.model.params(),
        flops: imp.model.cost().flops,
        units: &imp.units,
    }
}

fn counts(m: &std::collections::BTreeMap<String, usize>) -> String {
    let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v}")).collect();
    parts.join(", ")
}

fn dims(d: &[usize]) -> String {
    let parts: Vec<String> = d.iter().map(usize::to_string).collect();
    parts.join("x")
}

fn print(r: &Report) {
    println!("{} ({})", r.model, r.file.display());
    println!(
        "  ONNX IR {}, opset {}, produced by {}",
        r.ir_version, r.opset, r.producer
    );
    let declared: Vec<String> = r
        .input
        .declared
        .iter()
        .flatten()
        .map(|d| d.map_or("?".into(), |v| v.to_string()))
        .collect();
    println!(
        "  input  {:?}: {} (declared {})",
        r.input.name,
        dims(r.input.shape),
        declared.join("x")
    );
    println!("  output {:?}: {}", r.output.name, dims(r.output.shape));
    if !r.ignored_outputs.is_empty() {
        println!(
            "  other outputs, not computed: {}",
            r.ignored_outputs.join(", ")
        );
    }
    println!("  file ops: {}", counts(r.file_ops));
    println!(
        "  folded at load: {} nodes; graph ops left: {}",
        r.folded_nodes,
        counts(r.graph_ops)
    );
    println!("  kernels after fusion: {}", counts(r.kernels));
    println!(
        "  {} parameters, {:.3} GFLOP per run, {} units:",
        r.params,
        r.flops as f64 / 1e9,
        r.units.len()
    );
    println!(
        "{:>5}  {:<13} {:<16} {:>10} {:>10}  ops",
        "unit", "kind", "output", "MFLOP", "weight KB"
    );
    for u in r.units {
        println!(
            "{:>5}  {:<13} {:<16} {:>10.2} {:>10.1}  {}",
            u.index,
            u.kind,
            dims(&u.output),
            u.flops as f64 / 1e6,
            u.weight_bytes as f64 / 1024.0,
            summarize(&u.ops)
        );
    }
}

/// `Conv x3, Add, Relu` from a list of op types.
fn summarize(ops: &[String]) -> String {
    let mut out: Vec<(String, usize)> = Vec::new();
    for op in ops {
        match out.last_mut() {
            Some((last, n)) if last == op => *n += 1,
            _ => out.push((op.clone(), 1)),
        }
    }
    let parts: Vec<String> = out
        .into_iter()
        .map(|(op, n)| if n == 1 { op } else { format!("{op} x{n}") })
        .collect();
    parts.join(", ")
}
