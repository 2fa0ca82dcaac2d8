//! Reading an ONNX file into a graph with every shape fixed and every
//! constant folded.
//!
//! Problem: an ONNX graph mixes the network's computation with shape
//! arithmetic (Shape -> Gather -> Concat -> Reshape), constants made by
//! nodes (Constant, ConstantOfShape, Cast of initializers) and dynamic
//! dimensions. odin runs a fixed input shape, so all of that is known at
//! load.
//!
//! Approach: sort the nodes topologically (refusing cycles and dangling
//! inputs), then walk them once. Each node's op is built from its
//! attributes and its inputs' facts, `infer` gives its outputs' types and
//! shapes, and a node whose inputs are all constant (or a `Shape`, whose
//! output depends only on a shape) is evaluated on the spot and becomes a
//! constant. What is left is the runtime graph: the nodes that depend on
//! the input, in topological order, pruned to those the first output needs.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use prost::Message;

use super::OnnxError;
use super::attrs::Attrs;
use super::data::{DType, Data, Fact, checked_len, decode, fmt_dims, is_external};
use super::ops::{self, Ctx, Op};
use super::proto::{self, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto};

/// Oldest and newest ai.onnx opsets odin imports.
pub const OPSETS: std::ops::RangeInclusive<i64> = 7..=21;

/// Oldest IR version odin imports.
pub const MIN_IR_VERSION: i64 = 3;

/// Largest model file odin reads (protobuf's own limit is 2 GiB).
pub const MAX_FILE_BYTES: u64 = 2 << 30;

/// Largest constant the importer computes at load, in elements; bigger
/// results stay runtime nodes.
const FOLD_BUDGET: usize = super::data::MAX_ELEMENTS;

/// Index of a tensor in [`Graph::tensors`].
pub type TensorId = usize;

/// A tensor of the graph.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    /// Its name in the file.
    pub name: String,
    /// Type, shape, and value for constants.
    pub fact: Fact,
}

/// A runtime node: one that depends on the graph's input.
#[derive(Debug)]
pub struct Node {
    /// The node's name (or `op_type#index` if it has none).
    pub name: String,
    /// ONNX op type.
    pub op_type: String,
    /// The op, built from the node.
    pub op: Arc<dyn Op>,
    /// The node's attributes as read from the file.
    pub attrs: Vec<proto::AttributeProto>,
    /// Inputs, positional; `None` for an omitted optional input.
    pub inputs: Vec<Option<TensorId>>,
    /// Outputs.
    pub outputs: Vec<TensorId>,
}

/// An ONNX model with shapes fixed and constants folded.
#[derive(Debug)]
pub struct Graph {
    /// Every tensor: runtime ones and constants.
    pub tensors: Vec<TensorInfo>,
    /// Runtime nodes in topological order.
    pub nodes: Vec<Node>,
    /// The graph's one runtime input.
    pub input: TensorId,
    /// The graph's first output.
    pub output: TensorId,
    /// About the file.
    pub meta: Meta,
}

/// What the file says about itself, and what the folding did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Meta {
    /// ONNX IR version.
    pub ir_version: i64,
    /// ai.onnx opset.
    pub opset: i64,
    /// Producer name and version.
    pub producer: String,
    /// The input as declared (`None` for a dynamic dimension).
    pub declared_input: Vec<Option<usize>>,
    /// Op counts of the file's graph.
    pub file_ops: BTreeMap<String, usize>,
    /// Nodes folded into constants at load.
    pub folded: usize,
    /// Names of outputs after the first, which odin does not compute.
    pub ignored_outputs: Vec<String>,
}

impl Graph {
    /// The fact of tensor `t`.
    pub fn fact(&self, t: TensorId) -> &Fact {
        &self.tensors[t].fact
    }

    /// The constant value of `t`, if it is one.
    pub fn konst(&self, t: TensorId) -> Option<&Arc<Data>> {
        self.tensors[t].fact.value.as_ref()
    }
}

/// Reads and decodes `path`, bounded in size.
pub fn read_model(path: &Path) -> Result<ModelProto, OnnxError> {
    let io = |source| OnnxError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(OnnxError::File {
            path: path.to_path_buf(),
            reason: "not a regular file".into(),
        });
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(OnnxError::File {
            path: path.to_path_buf(),
            reason: format!(
                "{} bytes, larger than the {MAX_FILE_BYTES} a protobuf model can be",
                meta.len()
            ),
        });
    }
    let bytes = fs::read(path).map_err(io)?;
    decode_model(&bytes).map_err(|reason| OnnxError::File {
        path: path.to_path_buf(),
        reason,
    })
}

/// Decodes a model from bytes and checks it is an ONNX model odin reads.
pub fn decode_model(bytes: &[u8]) -> Result<ModelProto, String> {
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    let model = ModelProto::decode(bytes)
        .map_err(|e| format!("not an ONNX model (protobuf decoding failed: {e})"))?;
    let Some(graph) = &model.graph else {
        return Err("not an ONNX model (no graph)".into());
    };
    if graph.node.is_empty() {
        return Err("not an ONNX model, or an empty one (the graph has no nodes)".into());
    }
    let ir = model.ir_version.unwrap_or(0);
    if ir < MIN_IR_VERSION {
        return Err(format!(
            "ONNX IR version {ir}; odin imports IR {MIN_IR_VERSION} and later"
        ));
    }
    Ok(model)
}

/// The ai.onnx opset a model imports.
fn opset_of(model: &ModelProto) -> Result<i64, String> {
    let v = model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
        .and_then(|o| o.version)
        .ok_or("the model imports no ai.onnx opset")?;
    if !OPSETS.contains(&v) {
        return Err(format!(
            "ai.onnx opset {v}; odin imports opsets {} through {}",
            OPSETS.start(),
            OPSETS.end()
        ));
    }
    Ok(v)
}

/// Where external data of a tensor lives, checked to stay inside `dir`.
fn external_path(dir: &Path, location: &str) -> Result<PathBuf, String> {
    let rel = Path::new(location);
    if location.is_empty() || rel.is_absolute() {
        return Err(format!(
            "location {location:?} must be a relative path inside the model's directory"
        ));
    }
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "location {location:?} leaves the model's directory"
        ));
    }
    let path = dir.join(rel);
    // A symlink could still point elsewhere: compare the resolved paths.
    let real_dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let real = path
        .canonicalize()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !real.starts_with(&real_dir) {
        return Err(format!(
            "location {location:?} resolves to {}, outside the model's directory",
            real.display()
        ));
    }
    Ok(real)
}

/// Reads the bytes of an external-data tensor.
#[allow(
    clippy::cast_possible_truncation,
    reason = "length is at most MAX_FILE_BYTES, checked above"
)]
fn read_external(t: &TensorProto, dir: &Path) -> Result<Vec<u8>, String> {
    use std::io::{Read, Seek, SeekFrom};
    let key = |k: &str| {
        t.external_data
            .iter()
            .find(|e| e.key.as_deref() == Some(k))
            .and_then(|e| e.value.clone())
    };
    let location = key("location").ok_or("external data without a location")?;
    let parse = |k: &str| -> Result<Option<u64>, String> {
        key(k)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("external data {k} {v:?} is not a number"))
            })
            .transpose()
    };
    let offset = parse("offset")?.unwrap_or(0);
    let path = external_path(dir, &location)?;
    let mut f = fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let size = f
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    let length = parse("length")?.unwrap_or(size.saturating_sub(offset));
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(format!(
            "external data {}: offset {offset} + length {length} is past its end ({size} bytes)",
            path.display()
        ));
    }
    if length > MAX_FILE_BYTES {
        return Err(format!("external data of {length} bytes is too large"));
    }
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buf = vec![0; length as usize];
    f.read_exact(&mut buf)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(buf)
}

/// Decodes an initializer, reading external data relative to `dir`.
fn initializer(t: &TensorProto, dir: Option<&Path>) -> Result<Data, String> {
    if is_external(t) {
        let dir = dir.ok_or("external data, but the model was not read from a file")?;
        let raw = read_external(t, dir)?;
        decode(t, Some(&raw))
    } else {
        decode(t, t.raw_data.as_deref())
    }
}

/// Fixes the input's dimensions: static ones as declared, dynamic ones
/// from `input_shape` (batch 1 when only the batch is dynamic).
fn input_dims(
    vi: &ValueInfoProto,
    input_shape: Option<&[usize]>,
) -> Result<(Vec<usize>, Vec<Option<usize>>), String> {
    let name = vi.name.as_deref().unwrap_or("");
    let tt = vi
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .ok_or_else(|| format!("input {name:?} is not a tensor"))?;
    let elem = tt.elem_type.unwrap_or(0);
    if DType::from_onnx(elem) != Some(DType::F32) {
        return Err(format!(
            "input {name:?} is {}; odin's models take a floating-point input",
            proto::data_type::name(elem)
        ));
    }
    let declared: Option<Vec<Option<usize>>> = tt.shape.as_ref().map(|s| {
        s.dim
            .iter()
            .map(|d| {
                d.dim_value
                    .and_then(|v| usize::try_from(v).ok())
                    .filter(|&v| v > 0)
            })
            .collect()
    });
    let dims = match (declared.as_ref(), input_shape) {
        (Some(decl), Some(given)) => {
            if decl.len() != given.len() {
                return Err(format!(
                    "input shape {} has {} dimensions, the model's input {name:?} has {} ({})",
                    fmt_dims(given),
                    given.len(),
                    decl.len(),
                    fmt_declared(decl)
                ));
            }
            for (i, (d, g)) in decl.iter().zip(given).enumerate() {
                if let Some(d) = d
                    && d != g
                {
                    return Err(format!(
                        "input shape {} does not match the model's input {name:?} {}: dimension {i} is {d}",
                        fmt_dims(given),
                        fmt_declared(decl)
                    ));
                }
            }
            given.to_vec()
        }
        (None, Some(given)) => given.to_vec(),
        (Some(decl), None) => {
            let mut out = Vec::with_capacity(decl.len());
            for (i, d) in decl.iter().enumerate() {
                match (d, i) {
                    (Some(d), _) => out.push(*d),
                    (None, 0) => out.push(1),
                    (None, _) => {
                        return Err(format!(
                            "dimension {i} of input {name:?} {} is dynamic; give the shape with --input-shape (or model.input_shape)",
                            fmt_declared(decl)
                        ));
                    }
                }
            }
            out
        }
        (None, None) => {
            return Err(format!(
                "input {name:?} declares no shape; give it with --input-shape (or model.input_shape)"
            ));
        }
    };
    if dims.contains(&0) {
        return Err(format!(
            "input shape {} has a zero dimension",
            fmt_dims(&dims)
        ));
    }
    checked_len(&dims)?;
    Ok((dims, declared.unwrap_or_default()))
}

fn fmt_declared(d: &[Option<usize>]) -> String {
    let parts: Vec<String> = d
        .iter()
        .map(|d| d.map_or("?".to_string(), |v| v.to_string()))
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Node name for messages.
fn node_name(n: &NodeProto, i: usize) -> String {
    match n.name.as_deref() {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => format!("{}#{i}", n.op_type.as_deref().unwrap_or("?")),
    }
}

/// Orders the nodes so each comes after the producers of its inputs.
fn topo_order(g: &GraphProto, known: &HashMap<&str, ()>) -> Result<Vec<usize>, OnnxError> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            if producer.insert(o.as_str(), i).is_some() || known.contains_key(o.as_str()) {
                return Err(OnnxError::Graph(format!(
                    "tensor {o:?} is produced twice (again by node {:?})",
                    node_name(n, i)
                )));
            }
        }
    }
    let mut pending = vec![0usize; g.node.len()];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); g.node.len()];
    for (i, n) in g.node.iter().enumerate() {
        for inp in n.input.iter().filter(|s| !s.is_empty()) {
            match producer.get(inp.as_str()) {
                Some(&p) => {
                    pending[i] += 1;
                    users[p].push(i);
                }
                None if known.contains_key(inp.as_str()) => {}
                None => {
                    return Err(OnnxError::Graph(format!(
                        "node {:?} ({}) reads tensor {inp:?}, which no node, initializer or input provides",
                        node_name(n, i),
                        n.op_type.as_deref().unwrap_or("?")
                    )));
                }
            }
        }
    }
    let mut ready: VecDeque<usize> = (0..g.node.len()).filter(|&i| pending[i] == 0).collect();
    let mut order = Vec::with_capacity(g.node.len());
    while let Some(i) = ready.pop_front() {
        order.push(i);
        for &u in &users[i] {
            pending[u] -= 1;
            if pending[u] == 0 {
                ready.push_back(u);
            }
        }
    }
    if order.len() < g.node.len() {
        let stuck = (0..g.node.len())
            .find(|&i| pending[i] > 0)
            .expect("a node is left");
        return Err(OnnxError::Graph(format!(
            "the graph has a cycle through node {:?} ({})",
            node_name(&g.node[stuck], stuck),
            g.node[stuck].op_type.as_deref().unwrap_or("?")
        )));
    }
    Ok(order)
}

/// Builds the folded runtime graph of `model`, reading external data from
/// `dir`.
pub fn build(
    model: &ModelProto,
    dir: Option<&Path>,
    input_shape: Option<&[usize]>,
) -> Result<Graph, OnnxError> {
    let opset = opset_of(model).map_err(OnnxError::Graph)?;
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| OnnxError::Graph("no graph".into()))?;
    let mut meta = Meta {
        ir_version: model.ir_version.unwrap_or(0),
        opset,
        producer: format!(
            "{} {}",
            model.producer_name.as_deref().unwrap_or("unknown"),
            model.producer_version.as_deref().unwrap_or("")
        )
        .trim()
        .to_string(),
        ..Meta::default()
    };
    for n in &g.node {
        *meta
            .file_ops
            .entry(n.op_type.clone().unwrap_or_default())
            .or_default() += 1;
    }

    let mut tensors: Vec<TensorInfo> = Vec::new();
    let mut ids: HashMap<String, TensorId> = HashMap::new();
    fn add(
        tensors: &mut Vec<TensorInfo>,
        ids: &mut HashMap<String, TensorId>,
        name: &str,
        fact: Fact,
    ) -> TensorId {
        tensors.push(TensorInfo {
            name: name.to_string(),
            fact,
        });
        ids.insert(name.to_string(), tensors.len() - 1);
        tensors.len() - 1
    }
    for t in &g.initializer {
        let name = t.name.clone().unwrap_or_default();
        let data = initializer(t, dir).map_err(|reason| OnnxError::Initializer {
            name: name.clone(),
            reason,
        })?;
        add(&mut tensors, &mut ids, &name, Arc::new(data).fact());
    }
    if !g.sparse_initializer.is_empty() {
        return Err(OnnxError::Graph(
            "sparse initializers are not supported".into(),
        ));
    }
    let runtime_inputs: Vec<&ValueInfoProto> = g
        .input
        .iter()
        .filter(|vi| !ids.contains_key(vi.name.as_deref().unwrap_or("")))
        .collect();
    let vi = match runtime_inputs.as_slice() {
        [one] => *one,
        [] => {
            return Err(OnnxError::Graph(
                "the graph has no input (every input is an initializer)".into(),
            ));
        }
        many => {
            let names: Vec<&str> = many
                .iter()
                .map(|v| v.name.as_deref().unwrap_or(""))
                .collect();
            return Err(OnnxError::Graph(format!(
                "the graph has {} inputs ({}); odin runs models with one input",
                names.len(),
                names.join(", ")
            )));
        }
    };
    let (dims, declared) = input_dims(vi, input_shape).map_err(OnnxError::InputShape)?;
    meta.declared_input = declared;
    let input = add(
        &mut tensors,
        &mut ids,
        vi.name.as_deref().unwrap_or(""),
        Fact::f32(dims),
    );

    let known: HashMap<&str, ()> = ids.keys().map(|k| (k.as_str(), ())).collect();
    let order = topo_order(g, &known)?;
    let supported = || ops::supported().join(", ");
    let mut nodes = Vec::new();
    for &i in &order {
        let n = &g.node[i];
        let name = node_name(n, i);
        let op_type = n.op_type.clone().unwrap_or_default();
        let domain = n.domain.as_deref().unwrap_or("");
        let node_err = |reason: String| OnnxError::Node {
            node: name.clone(),
            op_type: op_type.clone(),
            opset,
            reason,
        };
        let unsupported = |why: String| OnnxError::Unsupported {
            node: name.clone(),
            op_type: op_type.clone(),
            opset,
            why,
            supported: supported(),
        };
        if !matches!(domain, "" | "ai.onnx") {
            return Err(unsupported(format!("domain {domain:?} is not ai.onnx")));
        }
        let attrs = Attrs::new(&n.attribute);
        if attrs.has_graph() {
            return Err(unsupported(
                "control flow (graph attributes) is not supported".into(),
            ));
        }
        let builder = ops::builder(&op_type)
            .ok_or_else(|| unsupported("this op type is not supported".into()))?;
        if let Some(((imin, imax), (omin, omax))) = ops::arity(&op_type) {
            let (ni, no) = (n.input.len(), n.output.len());
            if ni < imin || ni > imax || no < omin || no > omax {
                return Err(node_err(format!(
                    "has {ni} inputs and {no} outputs; {op_type} takes {imin} to {imax} inputs and {omin} to {omax} outputs"
                )));
            }
        }
        let inputs: Vec<Option<TensorId>> = n
            .input
            .iter()
            .map(|s| (!s.is_empty()).then(|| ids[s.as_str()]))
            .collect();
        let facts: Vec<Option<&Fact>> =
            inputs.iter().map(|t| t.map(|t| &tensors[t].fact)).collect();
        let outputs = n.output.len();
        let op: Arc<dyn Op> = Arc::from(
            builder(&Ctx {
                op_type: &op_type,
                opset,
                attrs,
                inputs: &facts,
                outputs,
            })
            .map_err(&node_err)?,
        );
        let out_facts = op.infer(&facts).map_err(&node_err)?;
        if out_facts.len() < n.output.iter().filter(|o| !o.is_empty()).count() {
            return Err(node_err(format!(
                "declares {} outputs, the op gives {}",
                n.output.len(),
                out_facts.len()
            )));
        }
        for f in &out_facts {
            checked_len(&f.dims).map_err(&node_err)?;
        }
        let all_const = facts.iter().flatten().all(|f| f.value.is_some());
        let shape_of = op.as_any().downcast_ref::<ops::shape::ShapeOp>();
        let small = out_facts.iter().all(|f| f.len() <= FOLD_BUDGET);
        let values: Option<Vec<Data>> = if let Some(s) = shape_of {
            let f = facts
                .first()
                .copied()
                .flatten()
                .ok_or_else(|| node_err("input 0 is required".into()))?;
            Some(vec![s.of_dims(&f.dims)])
        } else if all_const && op.foldable() && small {
            let data: Vec<Option<&Data>> = facts
                .iter()
                .map(|f| f.and_then(|f| f.value.as_deref()))
                .collect();
            Some(op.eval(&data).map_err(&node_err)?)
        } else {
            None
        };
        let mut out_ids = Vec::with_capacity(outputs);
        for (k, (oname, mut fact)) in n.output.iter().zip(out_facts).enumerate() {
            if let Some(v) = values.as_ref().and_then(|v| v.get(k)) {
                fact.value = Some(Arc::new(v.clone()));
            }
            out_ids.push(add(&mut tensors, &mut ids, oname, fact));
        }
        if values.is_some() {
            meta.folded += 1;
            continue;
        }
        nodes.push(Node {
            name,
            op_type,
            op,
            attrs: n.attribute.clone(),
            inputs,
            outputs: out_ids,
        });
    }
    let out_name = g
        .output
        .first()
        .and_then(|o| o.name.clone())
        .ok_or_else(|| OnnxError::Graph("the graph has no output".into()))?;
    meta.ignored_outputs = g
        .output
        .iter()
        .skip(1)
        .filter_map(|o| o.name.clone())
        .collect();
    let output = *ids
        .get(&out_name)
        .ok_or_else(|| OnnxError::Graph(format!("output {out_name:?} is produced by no node")))?;
    if tensors[output].fact.value.is_some() {
        return Err(OnnxError::Graph(format!(
            "output {out_name:?} does not depend on the input"
        )));
    }
    if tensors[output].fact.dtype != DType::F32 {
        return Err(OnnxError::Graph(format!(
            "output {out_name:?} is an integer tensor; odin serves float outputs"
        )));
    }
    let mut graph = Graph {
        tensors,
        nodes,
        input,
        output,
        meta,
    };
    prune(&mut graph);
    reassociate_concats(&mut graph).map_err(OnnxError::Graph)?;
    prune(&mut graph);
    Ok(graph)
}

/// Rewrites `Concat(t0, .., tk)` as `Concat(C, tk)` where an earlier
/// `Concat(t0, .., tk-1)` on the same axis made `C`, so a DenseNet block
/// (each layer concatenating all features so far) becomes a chain in
/// which one tensor crosses between layers, instead of one giant unit.
/// Concatenation is associative and lays out memory identically, so the
/// values are the same.
fn reassociate_concats(g: &mut Graph) -> Result<(), String> {
    let axis_of = |n: &Node| Attrs::new(&n.attrs).int("axis").ok().flatten();
    // (axis, runtime inputs) -> output, for the concats seen so far.
    let mut seen: HashMap<(i64, Vec<Option<TensorId>>), TensorId> = HashMap::new();
    let opset = g.meta.opset;
    for i in 0..g.nodes.len() {
        if g.nodes[i].op_type != "Concat" {
            continue;
        }
        let Some(axis) = axis_of(&g.nodes[i]) else {
            continue;
        };
        let inputs = g.nodes[i].inputs.clone();
        // The longest earlier prefix, of at least two tensors.
        let hit = (2..inputs.len())
            .rev()
            .find_map(|k| seen.get(&(axis, inputs[..k].to_vec())).map(|&c| (k, c)));
        if let Some((k, c)) = hit {
            let mut new_inputs = vec![Some(c)];
            new_inputs.extend_from_slice(&inputs[k..]);
            let facts: Vec<Option<&Fact>> = new_inputs
                .iter()
                .map(|t| t.map(|t| &g.tensors[t].fact))
                .collect();
            let builder = ops::builder("Concat").ok_or("Concat is not registered")?;
            let attrs = g.nodes[i].attrs.clone();
            let op = builder(&Ctx {
                op_type: "Concat",
                opset,
                attrs: Attrs::new(&attrs),
                inputs: &facts,
                outputs: 1,
            })?;
            let out = op.infer(&facts)?;
            if out.first().map(|f| &f.dims) != Some(&g.tensors[g.nodes[i].outputs[0]].fact.dims) {
                continue;
            }
            g.nodes[i].op = Arc::from(op);
            g.nodes[i].inputs = new_inputs;
        }
        seen.insert((axis, inputs), g.nodes[i].outputs[0]);
    }
    Ok(())
}

/// Drops runtime nodes the output does not need.
pub fn prune(g: &mut Graph) {
    let mut needed = vec![false; g.tensors.len()];
    needed[g.output] = true;
    let mut keep = vec![false; g.nodes.len()];
    for (i, n) in g.nodes.iter().enumerate().rev() {
        if n.outputs.iter().any(|&o| needed[o]) {
            keep[i] = true;
            for &t in n.inputs.iter().flatten() {
                needed[t] = true;
            }
        }
    }
    let mut k = keep.into_iter();
    g.nodes.retain(|_| k.next().unwrap_or(false));
}
