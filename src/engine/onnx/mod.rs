//! ONNX import: a trained network from an `.onnx` file, lowered onto the
//! engine's kernels and cut into pipeline units.
//!
//! ```text
//! file --prost--> ModelProto --graph::build--> shapes fixed, constants folded
//!      --lower--> engine kernels, fused --unit::cut--> units --> Model
//! ```
//!
//! The result is an ordinary [`Model`]: the pipeline, the profiler and
//! the simulator treat it as they treat the built-in networks.

pub mod attrs;
pub mod data;
pub mod graph;
pub mod lower;
pub mod ops;
pub mod proto;
pub mod unit;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Model, ModelError};
use data::fmt_dims;
use lower::shape4;

/// Why a model could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The model file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The file is not an ONNX model odin reads.
    #[error("{}: {reason}", path.display())]
    File {
        /// The model file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The graph as a whole is malformed or unsupported.
    #[error("graph: {0}")]
    Graph(String),
    /// An initializer could not be read.
    #[error("initializer {name:?}: {reason}")]
    Initializer {
        /// Its name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The input shape is missing or does not fit the model.
    #[error("input shape: {0}")]
    InputShape(String),
    /// A node is malformed.
    #[error("node {node:?} ({op_type}, opset {opset}): {reason}")]
    Node {
        /// The node's name.
        node: String,
        /// Its op type.
        op_type: String,
        /// The model's opset.
        opset: i64,
        /// What is wrong.
        reason: String,
    },
    /// A node's op is not supported.
    #[error(
        "node {node:?}: op {op_type} (opset {opset}) is not supported: {why}; odin supports {supported}"
    )]
    Unsupported {
        /// The node's name.
        node: String,
        /// Its op type.
        op_type: String,
        /// The model's opset.
        opset: i64,
        /// Why.
        why: String,
        /// The supported op types.
        supported: String,
    },
    /// The lowered model could not be assembled.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// How to import a model.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Dimensions for the input, overriding dynamic ones (and checked
    /// against static ones).
    pub input_shape: Option<Vec<usize>>,
}

/// One unit of an imported model, for `odin inspect`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct UnitInfo {
    /// Index in the model.
    pub index: usize,
    /// Unit name (its first and last node).
    pub name: String,
    /// Kind.
    pub kind: String,
    /// The ONNX ops it runs, in order.
    pub ops: Vec<String>,
    /// Output dimensions as the graph has them.
    pub output: Vec<usize>,
    /// FLOPs of one run.
    pub flops: u64,
    /// Bytes of weights.
    pub weight_bytes: u64,
}

/// An imported model and what the import found.
#[derive(Debug)]
pub struct Imported {
    /// The model, ready to run.
    pub model: Model,
    /// About the file and its folding.
    pub meta: graph::Meta,
    /// Input name and dimensions as run.
    pub input: (String, Vec<usize>),
    /// Output name and dimensions.
    pub output: (String, Vec<usize>),
    /// Op counts of the runtime graph after folding (before fusion).
    pub folded_ops: BTreeMap<String, usize>,
    /// Kernel counts after fusion.
    pub kernels: BTreeMap<String, usize>,
    /// The units.
    pub units: Vec<UnitInfo>,
}

/// The model's name from its file: the stem.
pub fn model_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into())
}

/// Imports the ONNX model at `path`.
pub fn load(path: &Path, opts: &ImportOptions) -> Result<Imported, OnnxError> {
    let proto = graph::read_model(path)?;
    let dir = path.parent().map(|p| {
        if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        }
    });
    import(&proto, dir, &model_name(path), opts)
}

/// Imports a decoded model; external data is read relative to `dir`.
pub fn import(
    proto: &proto::ModelProto,
    dir: Option<&Path>,
    name: &str,
    opts: &ImportOptions,
) -> Result<Imported, OnnxError> {
    let g = graph::build(proto, dir, opts.input_shape.as_deref())?;
    let mut folded_ops = BTreeMap::new();
    for n in &g.nodes {
        *folded_ops.entry(n.op_type.clone()).or_default() += 1;
    }
    let input = (
        g.tensors[g.input].name.clone(),
        g.fact(g.input).dims.clone(),
    );
    let output = (
        g.tensors[g.output].name.clone(),
        g.fact(g.output).dims.clone(),
    );
    let in4 = shape4(&input.1).ok_or_else(|| {
        OnnxError::InputShape(format!(
            "input {} has rank {}; odin takes inputs of rank 1 to 4",
            fmt_dims(&input.1),
            input.1.len()
        ))
    })?;
    if shape4(&output.1).is_none() {
        return Err(OnnxError::Graph(format!(
            "output {} has rank {}; odin serves outputs of rank up to 4",
            fmt_dims(&output.1),
            output.1.len()
        )));
    }
    let mut lowered = lower::lower(&g);
    if lowered.steps.is_empty() {
        return Err(OnnxError::Graph(
            "the output is the input: the graph computes nothing".into(),
        ));
    }
    let mut kernels = BTreeMap::new();
    for s in &lowered.steps {
        *kernels.entry(s.kind.to_string()).or_default() += 1;
    }
    let ranges = unit::cut(&lowered);
    let mut model = Model::new(name, in4);
    let mut units = Vec::with_capacity(ranges.len());
    let mut at = lowered.input;
    for (index, (r, out)) in ranges.into_iter().enumerate() {
        let steps = &lowered.steps[r.clone()];
        let first = &steps[0].name;
        let last = &steps[steps.len() - 1].name;
        let uname = if steps.len() == 1 {
            first.clone()
        } else {
            format!("{first}..{last}")
        };
        let ops: Vec<String> = steps
            .iter()
            .flat_map(|s| s.op_types.iter().cloned())
            .collect();
        let u = unit::ImportedUnit::new(&mut lowered, r, at, out);
        let cost = crate::engine::Layer::cost(&u, in4);
        units.push(UnitInfo {
            index,
            name: uname.clone(),
            kind: crate::engine::Layer::kind(&u).to_string(),
            ops,
            output: u.output_dims().to_vec(),
            flops: cost.flops,
            weight_bytes: cost.weight_bytes,
        });
        model.push(uname, u)?;
        at = out;
    }
    Ok(Imported {
        model,
        meta: g.meta.clone(),
        input,
        output,
        folded_ops,
        kernels,
        units,
    })
}
