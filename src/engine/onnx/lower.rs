//! Lowering the folded graph onto engine kernels, fusing as it goes.
//!
//! Each runtime node becomes one step, except where a chain of nodes fuses
//! into one engine kernel:
//!
//! ```text
//! Conv -> (BatchNormalization | Mul/Add/Sub/Div by a per-channel constant)*
//!      -> (Relu | Clip(0, 6))?                  => engine Conv2d (folded, fused)
//! Gemm / MatMul by a constant -> (Add bias)? -> (BatchNormalization
//!      | per-output Mul/Add/Sub/Div)* -> (Relu | Clip(0, 6))?  => engine Dense
//! Add(a, b) of equal shapes -> Relu?            => in-place add + activation
//! Conv (identity activation, one reader) -> that Add
//!                                            => the conv with the add and
//!                                               activation in its store
//! MaxPool / AveragePool / GlobalAveragePool     => engine pools (when they fit)
//! BatchNormalization or Mul/Add by a per-channel constant, alone
//!      -> (more of those)* -> Relu?            => in-place per-channel affine
//! Identity, Dropout, Cast f32->f32              => removed
//! Reshape, Flatten, Squeeze, Unsqueeze          => relabel the dimensions
//! anything else                                 => the op's reference `eval`
//! ```
//!
//! A convolution the engine's kernels cannot take as is (unequal or
//! asymmetric padding) is preceded by an explicit zero pad; one with
//! dilations or unequal strides runs the reference convolution with the
//! folded weights.

use std::collections::HashMap;
use std::sync::Arc;

use ndarray::{Array2, Array4, ArrayD, IxDyn};

use super::data::{DType, Data};
use super::graph::{Graph, Node, TensorId};
use super::ops::{Op, elementwise as ew, reduce, spatial};
use crate::engine::ops::{
    Activation, AdaptiveAvgPool2d, AvgPool2d, Conv2d, Conv2dConfig, MaxPool2d, PoolConfig, conv2d,
    dense,
};
use crate::engine::{Cost, Layer, Sequential, Shape, f32_bytes};

/// Where a step reads an input from.
#[derive(Clone, Debug)]
pub enum Arg {
    /// A runtime tensor.
    Tensor(TensorId),
    /// A constant.
    Const(Arc<Data>),
    /// An omitted optional input.
    Absent,
}

impl Arg {
    /// The runtime tensor, if this is one.
    pub fn tensor(&self) -> Option<TensorId> {
        match self {
            Arg::Tensor(t) => Some(*t),
            _ => None,
        }
    }
}

/// What a step computes.
#[derive(Debug)]
pub enum Kernel {
    /// An engine layer over the 4-d view of input 0.
    Layer(Box<dyn Layer>),
    /// Zeros around the last two axes: top, left, bottom, right.
    ZeroPad([usize; 4]),
    /// `act(a + b)` of two tensors of one shape, in place.
    AddAct(Activation),
    /// `act(conv(x) + side)` with args `[x, side]`: a convolution (the
    /// layer is a `Conv2d`) whose store adds `side` and applies `act`.
    ConvAdd {
        /// The convolution, identity activation.
        layer: Box<dyn Layer>,
        /// The activation after the join.
        act: Activation,
    },
    /// An activation in place.
    Act(Activation),
    /// An element-wise function in place.
    Unary(ew::Unary),
    /// `act(x * scale[c] + shift[c])` along axis 1, in place.
    Affine {
        /// Per-channel factors.
        scale: Vec<f32>,
        /// Per-channel offsets.
        shift: Vec<f32>,
        /// The activation after.
        act: Activation,
    },
    /// The same values under the output's dimensions.
    Reshape,
    /// The op's reference evaluation.
    Generic(Arc<dyn Op>),
}

/// One step of a lowered graph.
#[derive(Debug)]
pub struct Step {
    /// Names of the nodes it covers, first to last.
    pub name: String,
    /// ONNX op types it covers.
    pub op_types: Vec<String>,
    /// Short kind name.
    pub kind: &'static str,
    /// The computation.
    pub kernel: Kernel,
    /// Inputs, positional.
    pub args: Vec<Arg>,
    /// Outputs (unused outputs included, for Split).
    pub outputs: Vec<TensorId>,
    /// Static cost.
    pub cost: Cost,
    /// Weights the step holds, in elements.
    pub params: usize,
}

/// A graph lowered to steps.
#[derive(Debug)]
pub struct Lowered {
    /// Steps in topological order.
    pub steps: Vec<Step>,
    /// Dimensions of every tensor id (graph tensors, then ones the
    /// lowering made).
    pub dims: Vec<Vec<usize>>,
    /// Element type of every tensor id.
    pub dtypes: Vec<DType>,
    /// The input tensor.
    pub input: TensorId,
    /// The output tensor.
    pub output: TensorId,
}

/// The 4-d engine shape holding a tensor of rank up to 4 (trailing 1s).
pub fn shape4(dims: &[usize]) -> Option<Shape> {
    let d = |i: usize| dims.get(i).copied().unwrap_or(1);
    (dims.len() <= 4).then(|| Shape::new(d(0), d(1), d(2), d(3)))
}

struct Lowerer<'g> {
    g: &'g Graph,
    /// Runtime readers of each tensor (node indices).
    readers: HashMap<TensorId, Vec<usize>>,
    done: Vec<bool>,
    /// Tensors replaced by another (removed identities).
    alias: HashMap<TensorId, TensorId>,
    dims: Vec<Vec<usize>>,
    dtypes: Vec<DType>,
    steps: Vec<Step>,
}

fn f32_vec(d: &Data) -> Option<Vec<f32>> {
    d.f32().ok().map(|a| a.iter().copied().collect())
}

/// `c` as one value per channel of an `[N, C, ...]` output with `channels`
/// channels, if it broadcasts that way (`[C,1,1]`, `[1,C,1,1]`, a scalar...).
fn per_channel(c: &Data, out_rank: usize, channels: usize) -> Option<Vec<f32>> {
    let v = f32_vec(c)?;
    let dims = c.dims();
    if dims.len() > out_rank {
        return None;
    }
    let mut padded = vec![1; out_rank - dims.len()];
    padded.extend_from_slice(dims);
    let ok = padded
        .iter()
        .enumerate()
        .all(|(i, &d)| d == 1 || (i == 1 && d == channels));
    if !ok {
        return None;
    }
    Some(if v.len() == 1 {
        vec![v[0]; channels]
    } else {
        v
    })
}

impl<'g> Lowerer<'g> {
    fn new(g: &'g Graph) -> Self {
        let mut readers: HashMap<TensorId, Vec<usize>> = HashMap::new();
        for (i, n) in g.nodes.iter().enumerate() {
            for &t in n.inputs.iter().flatten() {
                if g.konst(t).is_none() {
                    readers.entry(t).or_default().push(i);
                }
            }
        }
        Self {
            g,
            readers,
            done: vec![false; g.nodes.len()],
            alias: HashMap::new(),
            dims: g.tensors.iter().map(|t| t.fact.dims.clone()).collect(),
            dtypes: g.tensors.iter().map(|t| t.fact.dtype).collect(),
            steps: Vec::new(),
        }
    }

    fn resolve(&self, mut t: TensorId) -> TensorId {
        while let Some(&a) = self.alias.get(&t) {
            t = a;
        }
        t
    }

    fn arg(&self, t: Option<TensorId>) -> Arg {
        match t {
            None => Arg::Absent,
            Some(t) => match self.g.konst(t) {
                Some(v) => Arg::Const(v.clone()),
                None => Arg::Tensor(self.resolve(t)),
            },
        }
    }

    /// The one node reading `t`, unless the graph's output is `t`.
    fn sole_reader(&self, t: TensorId) -> Option<usize> {
        let t = self.resolve(t);
        if t == self.resolve(self.g.output) {
            return None;
        }
        match self.readers.get(&t).map(Vec::as_slice) {
            Some([one]) if !self.done[*one] => Some(*one),
            _ => None,
        }
    }

    fn node(&self, i: usize) -> &'g Node {
        &self.g.nodes[i]
    }

    fn is<T: 'static>(&self, i: usize) -> Option<&'g T> {
        self.g.nodes[i].op.as_any().downcast_ref::<T>()
    }

    /// The activation node reading `t`, if it fuses into a kernel.
    fn fused_act(&self, t: TensorId) -> Option<(usize, Activation)> {
        let j = self.sole_reader(t)?;
        if let Some(u) = self.is::<ew::UnaryOp>(j)
            && u.0 == ew::Unary::Relu
        {
            return Some((j, Activation::Relu));
        }
        let c = self.is::<ew::Clip>(j)?;
        match (c.min, c.max) {
            (lo, hi) if lo == 0.0 && hi == 6.0 => Some((j, Activation::Relu6)),
            (lo, hi) if lo == 0.0 && hi == f32::INFINITY => Some((j, Activation::Relu)),
            _ => None,
        }
    }

    /// The per-channel affine maps that follow `t` in a chain (each the
    /// sole reader of the last), composed into one `x * scale + shift`;
    /// with the nodes they cover and the tensor they end at.
    fn following_affines(
        &self,
        mut t: TensorId,
        rank: usize,
        channels: usize,
    ) -> (Vec<f32>, Vec<f32>, Vec<usize>, TensorId) {
        let (mut scale, mut shift) = (vec![1.0; channels], vec![0.0; channels]);
        let mut nodes = Vec::new();
        while let Some(j) = self.sole_reader(t)
            && let Some((s, sh)) = self.affine_after(j, t, rank, channels)
        {
            for c in 0..channels {
                scale[c] *= s[c];
                shift[c] = shift[c] * s[c] + sh[c];
            }
            nodes.push(j);
            t = self.node(j).outputs[0];
        }
        (scale, shift, nodes, t)
    }

    /// The activation node that fuses after `t`, its activation and output.
    fn following_act(&self, t: TensorId) -> Option<(usize, Activation, TensorId)> {
        self.fused_act(t)
            .map(|(j, a)| (j, a, self.node(j).outputs[0]))
    }

    fn fresh(&mut self, dims: Vec<usize>) -> TensorId {
        self.dims.push(dims);
        self.dtypes.push(DType::F32);
        self.dims.len() - 1
    }

    /// A step covering nodes `covered` (marked done), named after them.
    fn push(
        &mut self,
        covered: &[usize],
        kind: &'static str,
        kernel: Kernel,
        args: Vec<Arg>,
        outputs: Vec<TensorId>,
    ) {
        for &i in covered {
            self.done[i] = true;
        }
        let first = self.node(covered[0]);
        let last = self.node(*covered.last().expect("a step covers a node"));
        let name = if covered.len() == 1 {
            first.name.clone()
        } else {
            format!("{}..{}", first.name, last.name)
        };
        let op_types = covered
            .iter()
            .map(|&i| self.node(i).op_type.clone())
            .collect();
        self.push_step(name, op_types, kind, kernel, args, outputs);
    }

    fn push_step(
        &mut self,
        name: String,
        op_types: Vec<String>,
        kind: &'static str,
        kernel: Kernel,
        args: Vec<Arg>,
        outputs: Vec<TensorId>,
    ) {
        let in_dims: Vec<Vec<usize>> = args
            .iter()
            .map(|a| match a {
                Arg::Tensor(t) => self.dims[*t].clone(),
                Arg::Const(c) => c.dims().to_vec(),
                Arg::Absent => Vec::new(),
            })
            .collect();
        let out_elems: usize = outputs
            .iter()
            .map(|&o| self.dims[o].iter().product::<usize>())
            .sum();
        let in_elems: usize = args
            .iter()
            .zip(&in_dims)
            .filter(|(a, _)| matches!(a, Arg::Tensor(_)))
            .map(|(_, d)| d.iter().product::<usize>())
            .sum();
        let const_elems: usize = args
            .iter()
            .map(|a| match a {
                Arg::Const(c) => c.len(),
                _ => 0,
            })
            .sum();
        let (cost, params) = match &kernel {
            Kernel::Layer(l) | Kernel::ConvAdd { layer: l, .. } => {
                let s = shape4(&in_dims[0]).expect("engine layers take rank <= 4");
                (l.cost(s), l.params())
            }
            Kernel::Generic(op) => {
                let facts: Vec<Option<super::data::Fact>> = args
                    .iter()
                    .zip(&in_dims)
                    .map(|(a, d)| match a {
                        Arg::Absent => None,
                        Arg::Const(c) => Some(c.fact()),
                        Arg::Tensor(_) => Some(super::data::Fact::f32(d.clone())),
                    })
                    .collect();
                let refs: Vec<Option<&super::data::Fact>> =
                    facts.iter().map(Option::as_ref).collect();
                let outs: Vec<super::data::Fact> = outputs
                    .iter()
                    .map(|&o| super::data::Fact::f32(self.dims[o].clone()))
                    .collect();
                let flops = op.flops(&refs, &outs);
                let macs = if matches!(kind, "conv" | "convtranspose" | "gemm" | "matmul") {
                    flops / 2
                } else {
                    0
                };
                (
                    Cost {
                        macs,
                        flops,
                        weight_bytes: f32_bytes(const_elems),
                        activation_bytes: f32_bytes(in_elems + out_elems),
                    },
                    const_elems,
                )
            }
            Kernel::Affine { scale, .. } => (
                Cost {
                    macs: 0,
                    flops: 2 * out_elems as u64,
                    weight_bytes: f32_bytes(2 * scale.len()),
                    activation_bytes: f32_bytes(2 * out_elems),
                },
                2 * scale.len(),
            ),
            Kernel::Reshape => (Cost::default(), 0),
            Kernel::ZeroPad(_) | Kernel::AddAct(_) | Kernel::Act(_) | Kernel::Unary(_) => (
                Cost {
                    macs: 0,
                    flops: out_elems as u64,
                    weight_bytes: 0,
                    activation_bytes: f32_bytes(in_elems + out_elems),
                },
                0,
            ),
        };
        self.steps.push(Step {
            name,
            op_types,
            kind,
            kernel,
            args,
            outputs,
            cost,
            params,
        });
    }

    fn lower(mut self) -> Lowered {
        // Identities first, so fusions see through them.
        for i in 0..self.g.nodes.len() {
            self.try_alias(i);
        }
        for i in 0..self.g.nodes.len() {
            if self.done[i] {
                continue;
            }
            if self.try_conv(i)
                || self.try_dense(i)
                || self.try_pool(i)
                || self.try_add(i)
                || self.try_simple(i)
            {
                continue;
            }
            let n = self.node(i);
            let args = n.inputs.iter().map(|&t| self.arg(t)).collect();
            let kind = generic_kind(&n.op_type);
            self.push(
                &[i],
                kind,
                Kernel::Generic(n.op.clone()),
                args,
                n.outputs.clone(),
            );
        }
        let output = self.resolve(self.g.output);
        Lowered {
            steps: pair_pointwise_depthwise(fuse_conv_adds(self.steps, output), output),
            dims: self.dims,
            dtypes: self.dtypes,
            input: self.g.input,
            output,
        }
    }

    /// Identity, Dropout and f32-to-f32 Cast vanish.
    fn try_alias(&mut self, i: usize) -> bool {
        let n = self.node(i);
        let Some(Some(src)) = n.inputs.first() else {
            return false;
        };
        let same_type = self.g.fact(*src).dtype == self.g.fact(n.outputs[0]).dtype;
        let vanishes = match n.op_type.as_str() {
            "Identity" => true,
            "Dropout" => {
                n.outputs.len() == 1
                    || !self.readers.contains_key(&n.outputs[1]) && n.outputs[1] != self.g.output
            }
            "Cast" | "CastLike" => same_type,
            _ => false,
        };
        if !vanishes
            || self.g.konst(*src).is_some()
            || n.outputs[0] == self.g.output && self.resolve(*src) == self.g.input
        {
            return false;
        }
        self.alias.insert(n.outputs[0], *src);
        // Readers of the output now read the source.
        let moved = self.readers.remove(&n.outputs[0]).unwrap_or_default();
        let r = self.readers.entry(*src).or_default();
        r.retain(|&x| x != i);
        r.extend(moved);
        self.done[i] = true;
        true
    }

    fn try_conv(&mut self, i: usize) -> bool {
        let Some(conv) = self.is::<spatial::Conv>(i) else {
            return false;
        };
        let n = self.node(i);
        let (Some(Some(x)), Some(Some(w))) = (n.inputs.first(), n.inputs.get(1)) else {
            return false;
        };
        let Some(wv) = self.g.konst(*w).and_then(|w| w.f32().ok()) else {
            return false;
        };
        let bias = match n.inputs.get(2).copied().flatten() {
            None => None,
            Some(b) => match self.g.konst(b).and_then(|b| f32_vec(b)) {
                Some(b) => Some(b),
                None => return false,
            },
        };
        if conv.kernel.len() != 2 || self.g.konst(*x).is_some() {
            return false;
        }
        let wd = wv.shape().to_vec();
        let cout = wd[0];
        let mut weight: Vec<f32> = wv.iter().copied().collect();
        let mut b = bias.unwrap_or_else(|| vec![0.0; cout]);
        let mut covered = vec![i];
        let mut t = n.outputs[0];
        let out_rank = self.dims[t].len();
        // Fold per-channel affine maps that follow.
        let (s, sh, nodes, end) = self.following_affines(t, out_rank, cout);
        let per = weight.len() / cout;
        for o in 0..cout {
            weight[o * per..(o + 1) * per]
                .iter_mut()
                .for_each(|v| *v *= s[o]);
            b[o] = b[o] * s[o] + sh[o];
        }
        covered.extend(nodes);
        t = end;
        let mut act = Activation::Identity;
        let mut act_node = None;
        if let Some((j, a, after)) = self.following_act(t) {
            act = a;
            act_node = Some((j, t));
            t = after;
        }
        let x = self.resolve(*x);
        let fits = conv.dilations.iter().all(|&d| d == 1) && conv.strides[0] == conv.strides[1];
        if !fits {
            // The reference convolution, over the folded weights.
            let wdata = Arc::new(Data::F32(
                ArrayD::from_shape_vec(IxDyn(&wd), weight).expect("weight length"),
            ));
            let bdata = Arc::new(Data::F32(
                ArrayD::from_shape_vec(IxDyn(&[cout]), b).expect("bias length"),
            ));
            let conv_out = act_node.map_or(t, |(_, before)| before);
            let op = self.node(i).op.clone();
            let args = vec![Arg::Tensor(x), Arg::Const(wdata), Arg::Const(bdata)];
            self.push(&covered, "conv", Kernel::Generic(op), args, vec![conv_out]);
            if let Some((j, _)) = act_node {
                self.push(
                    &[j],
                    "relu",
                    Kernel::Act(act),
                    vec![Arg::Tensor(conv_out)],
                    vec![t],
                );
            }
            return true;
        }
        if let Some((j, _)) = act_node {
            covered.push(j);
        }
        let [pt, pl, pb, pr] = [conv.pads[0], conv.pads[1], conv.pads[2], conv.pads[3]];
        let mut src = x;
        let padding = if pt == pl && pt == pb && pt == pr {
            pt
        } else {
            let d = &self.dims[x];
            let padded = vec![d[0], d[1], d[2] + pt + pb, d[3] + pl + pr];
            let p = self.fresh(padded);
            let name = format!("{} (pad)", self.node(i).name);
            self.push_step(
                name,
                Vec::new(),
                "pad",
                Kernel::ZeroPad([pt, pl, pb, pr]),
                vec![Arg::Tensor(x)],
                vec![p],
            );
            src = p;
            0
        };
        let w4 =
            Array4::from_shape_vec((wd[0], wd[1], wd[2], wd[3]), weight).expect("weight length");
        let layer = conv2d(
            w4,
            Some(b),
            Conv2dConfig {
                stride: conv.strides[0],
                padding,
                groups: conv.group,
            },
        )
        .with_activation(act);
        let kind = if conv.group > 1 && conv.group == cout {
            "dwconv"
        } else {
            "conv"
        };
        self.push(
            &covered,
            kind,
            Kernel::Layer(Box::new(layer)),
            vec![Arg::Tensor(src)],
            vec![t],
        );
        true
    }

    /// A per-channel `x * s + t` that node `j` applies to `t`, if it is one.
    fn affine_after(
        &self,
        j: usize,
        t: TensorId,
        out_rank: usize,
        channels: usize,
    ) -> Option<(Vec<f32>, Vec<f32>)> {
        let n = self.node(j);
        if let Some(bn) = self.is::<reduce::BatchNorm>(j) {
            let p: Vec<Vec<f32>> = n.inputs[1..5.min(n.inputs.len())]
                .iter()
                .map(|t| t.and_then(|t| self.g.konst(t)).and_then(|d| f32_vec(d)))
                .collect::<Option<_>>()?;
            if p.len() != 4
                || p.iter().any(|v| v.len() != channels)
                || n.inputs[0].map(|x| self.resolve(x)) != Some(self.resolve(t))
            {
                return None;
            }
            return Some(bn.scale_shift(&p[0], &p[1], &p[2], &p[3]));
        }
        let b = self.is::<ew::Binary>(j)?;
        let (a0, a1) = (
            n.inputs.first().copied().flatten()?,
            n.inputs.get(1).copied().flatten()?,
        );
        let t = self.resolve(t);
        let (a0, a1) = (self.resolve(a0), self.resolve(a1));
        let (c, t_first) = match (a0 == t, a1 == t) {
            (true, false) => (self.g.konst(a1)?, true),
            (false, true) => (self.g.konst(a0)?, false),
            _ => return None,
        };
        if self.dims[n.outputs[0]] != self.dims[t] {
            return None;
        }
        let c = per_channel(c, out_rank, channels)?;
        let ones = vec![1.0; channels];
        let zeros = vec![0.0; channels];
        match (b.0, t_first) {
            (ew::BinaryKind::Mul, _) => Some((c, zeros)),
            (ew::BinaryKind::Add, _) => Some((ones, c)),
            (ew::BinaryKind::Sub, true) => Some((ones, c.iter().map(|v| -v).collect())),
            (ew::BinaryKind::Sub, false) => Some((vec![-1.0; channels], c)),
            (ew::BinaryKind::Div, true) => Some((c.iter().map(|v| 1.0 / v).collect(), zeros)),
            _ => None,
        }
    }

    /// Gemm or MatMul by a constant matrix on a `[N, K]` input.
    fn try_dense(&mut self, i: usize) -> bool {
        let n = self.node(i);
        let (Some(Some(a)), Some(Some(bt))) = (n.inputs.first(), n.inputs.get(1)) else {
            return false;
        };
        if self.g.konst(*a).is_some() || self.dims[*a].len() != 2 {
            return false;
        }
        let Some(bv) = self.g.konst(*bt).and_then(|b| b.f32().ok()) else {
            return false;
        };
        if bv.ndim() != 2 {
            return false;
        }
        let (k, m) = (self.dims[*a][1], self.dims[*a][0]);
        let (weight, outs, mut bias, alpha_beta) = if let Some(gm) = self.is::<spatial::Gemm>(i) {
            if gm.trans_a {
                return false;
            }
            let b2 = bv
                .view()
                .into_dimensionality::<ndarray::Ix2>()
                .expect("2-d");
            let w: Array2<f32> = if gm.trans_b {
                b2.to_owned()
            } else {
                b2.t().to_owned()
            };
            let outs = w.dim().0;
            let bias = match n.inputs.get(2).copied().flatten() {
                None => vec![0.0; outs],
                Some(c) => match self.g.konst(c).and_then(|c| row_bias(c, m, outs)) {
                    Some(b) => b,
                    None => return false,
                },
            };
            (w, outs, bias, (gm.alpha, gm.beta))
        } else if self.is::<spatial::MatMul>(i).is_some() {
            let b2 = bv
                .view()
                .into_dimensionality::<ndarray::Ix2>()
                .expect("2-d");
            let w = b2.t().to_owned();
            let outs = w.dim().0;
            (w, outs, vec![0.0; outs], (1.0, 1.0))
        } else {
            return false;
        };
        if weight.dim().1 != k {
            return false;
        }
        let weight = weight.mapv(|v| v * alpha_beta.0);
        bias.iter_mut().for_each(|v| *v *= alpha_beta.1);
        let mut covered = vec![i];
        let mut t = n.outputs[0];
        // A bias added after a MatMul.
        if let Some(j) = self.sole_reader(t)
            && let Some(b) = self.is::<ew::Binary>(j)
            && b.0 == ew::BinaryKind::Add
        {
            let nj = self.node(j);
            let other = nj
                .inputs
                .iter()
                .flatten()
                .copied()
                .find(|&x| self.resolve(x) != self.resolve(t));
            if let Some(c) = other
                .and_then(|o| self.g.konst(o))
                .and_then(|c| row_bias(c, m, outs))
                && self.dims[nj.outputs[0]] == self.dims[t]
            {
                bias.iter_mut().zip(c).for_each(|(v, c)| *v += c);
                covered.push(j);
                t = nj.outputs[0];
            }
        }
        // Per-output affine maps that follow (a batch norm after a Gemm).
        let mut weight = weight;
        let (s, sh, nodes, end) = self.following_affines(t, 2, outs);
        for (o, mut row) in weight.rows_mut().into_iter().enumerate() {
            row.iter_mut().for_each(|v| *v *= s[o]);
            bias[o] = bias[o] * s[o] + sh[o];
        }
        covered.extend(nodes);
        t = end;
        let mut act = Activation::Identity;
        if let Some((j, a, after)) = self.following_act(t) {
            act = a;
            covered.push(j);
            t = after;
        }
        let layer = dense(weight, bias).with_activation(act);
        let a = self.resolve(*a);
        self.push(
            &covered,
            "dense",
            Kernel::Layer(Box::new(layer)),
            vec![Arg::Tensor(a)],
            vec![t],
        );
        true
    }

    fn try_pool(&mut self, i: usize) -> bool {
        let n = self.node(i);
        let Some(Some(x)) = n.inputs.first() else {
            return false;
        };
        if self.dims[*x].len() != 4 || self.g.konst(*x).is_some() {
            return false;
        }
        let out = n.outputs[0];
        let x = self.resolve(*x);
        let want = shape4(&self.dims[out]);
        let in4 = shape4(&self.dims[x]).expect("4-d");
        if let Some(gp) = self.is::<spatial::GlobalPool>(i) {
            if gp.kind != spatial::PoolKind::Avg {
                return false;
            }
            self.push(
                &[i],
                "gap",
                Kernel::Layer(Box::new(AdaptiveAvgPool2d::global())),
                vec![Arg::Tensor(x)],
                vec![out],
            );
            return true;
        }
        let Some(p) = self.is::<spatial::Pool>(i) else {
            return false;
        };
        if n.outputs.len() > 1 || p.kernel.len() != 2 {
            return false;
        }
        let square = p.kernel[0] == p.kernel[1]
            && p.strides[0] == p.strides[1]
            && p.pads.iter().all(|&q| q == p.pads[0])
            && p.dilations.iter().all(|&d| d == 1);
        let cfg = PoolConfig {
            kernel: p.kernel[0],
            stride: p.strides[0],
            padding: p.pads[0],
            ceil: p.ceil_mode,
        };
        let layer: Box<dyn Layer> = match p.kind {
            spatial::PoolKind::Max => Box::new(MaxPool2d(cfg)),
            // The engine counts padding cells, so it fits without padding,
            // or with count_include_pad outside ceil mode.
            spatial::PoolKind::Avg if cfg.padding == 0 || p.count_include_pad && !p.ceil_mode => {
                Box::new(AvgPool2d(cfg))
            }
            spatial::PoolKind::Avg => return false,
        };
        if !square || layer.output_shape(in4).ok() != want {
            return false;
        }
        let kind = if p.kind == spatial::PoolKind::Max {
            "maxpool"
        } else {
            "avgpool"
        };
        self.push(
            &[i],
            kind,
            Kernel::Layer(layer),
            vec![Arg::Tensor(x)],
            vec![out],
        );
        true
    }

    /// A residual join: the sum of two runtime tensors of one shape.
    fn try_add(&mut self, i: usize) -> bool {
        let n = self.node(i);
        let is_add = self
            .is::<ew::Binary>(i)
            .is_some_and(|b| b.0 == ew::BinaryKind::Add)
            || self
                .is::<ew::Variadic>(i)
                .is_some_and(|b| b.0 == ew::BinaryKind::Add)
                && n.inputs.len() == 2;
        if !is_add {
            return false;
        }
        let (Some(Some(a)), Some(Some(b))) = (n.inputs.first(), n.inputs.get(1)) else {
            return false;
        };
        let out = n.outputs[0];
        if self.g.konst(*a).is_some()
            || self.g.konst(*b).is_some()
            || self.dims[*a] != self.dims[out]
            || self.dims[*b] != self.dims[out]
            || self.g.fact(out).dtype != DType::F32
        {
            return false;
        }
        let (a, b) = (self.resolve(*a), self.resolve(*b));
        let mut covered = vec![i];
        let mut t = out;
        let mut act = Activation::Identity;
        if let Some((j, f)) = self.fused_act(t) {
            act = f;
            covered.push(j);
            t = self.node(j).outputs[0];
        }
        self.push(
            &covered,
            "add",
            Kernel::AddAct(act),
            vec![Arg::Tensor(a), Arg::Tensor(b)],
            vec![t],
        );
        true
    }

    /// Activations, per-channel affine maps and reshapes of runtime f32
    /// tensors.
    fn try_simple(&mut self, i: usize) -> bool {
        let n = self.node(i);
        let Some(Some(x)) = n.inputs.first() else {
            return false;
        };
        if self.g.konst(*x).is_some()
            || self.g.fact(*x).dtype != DType::F32
            || self.g.fact(n.outputs[0]).dtype != DType::F32
        {
            return false;
        }
        let x = self.resolve(*x);
        let out = n.outputs[0];
        let (kind, kernel) = if let Some(u) = self.is::<ew::UnaryOp>(i) {
            match u.0 {
                ew::Unary::Relu => ("relu", Kernel::Act(Activation::Relu)),
                ew::Unary::Not => return false,
                other => (unary_kind(other), Kernel::Unary(other)),
            }
        } else if let Some(c) = self.is::<ew::Clip>(i) {
            match (c.min, c.max) {
                (lo, hi) if lo == 0.0 && hi == 6.0 => ("relu6", Kernel::Act(Activation::Relu6)),
                (lo, hi) if lo == 0.0 && hi == f32::INFINITY => {
                    ("relu", Kernel::Act(Activation::Relu))
                }
                _ => return false,
            }
        } else if let Some(d) = (self.dims[x].len() >= 2).then(|| self.dims[x].clone())
            && let Some((mut scale, mut shift)) = self.affine_after(i, x, d.len(), d[1])
        {
            // Per-channel affine maps in a row (a batch norm, or one
            // decomposed into Mul and Add), then an activation: one pass.
            let mut covered = vec![i];
            let (s2, t2, nodes, mut t) = self.following_affines(out, d.len(), d[1]);
            for c in 0..d[1] {
                scale[c] *= s2[c];
                shift[c] = shift[c] * s2[c] + t2[c];
            }
            covered.extend(nodes);
            let mut act = Activation::Identity;
            if let Some((j, a, after)) = self.following_act(t) {
                act = a;
                covered.push(j);
                t = after;
            }
            let kernel = Kernel::Affine { scale, shift, act };
            self.push(&covered, "affine", kernel, vec![Arg::Tensor(x)], vec![t]);
            return true;
        } else if matches!(
            n.op_type.as_str(),
            "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze"
        ) {
            ("reshape", Kernel::Reshape)
        } else {
            return false;
        };
        self.push(&[i], kind, kernel, vec![Arg::Tensor(x)], vec![out]);
        true
    }
}

/// One bias per output from a Gemm's C (`[outs]`, `[1, outs]`, a scalar,
/// or `[m, outs]` with one row).
fn row_bias(c: &Data, m: usize, outs: usize) -> Option<Vec<f32>> {
    let v = f32_vec(c)?;
    match c.dims() {
        [] | [1] | [1, 1] => Some(vec![v[0]; outs]),
        [o] | [1, o] if *o == outs => Some(v),
        [r, o] if *r == m && m == 1 && *o == outs => Some(v),
        _ => None,
    }
}

fn unary_kind(u: ew::Unary) -> &'static str {
    use ew::Unary::*;
    match u {
        Relu => "relu",
        LeakyRelu(_) => "leakyrelu",
        Sigmoid => "sigmoid",
        HardSigmoid { .. } => "hardsigmoid",
        HardSwish => "hardswish",
        Tanh => "tanh",
        Erf => "erf",
        Gelu { .. } => "gelu",
        _ => "elementwise",
    }
}

fn generic_kind(op_type: &str) -> &'static str {
    match op_type {
        "Conv" => "conv",
        "ConvTranspose" => "convtranspose",
        "MaxPool" => "maxpool",
        "AveragePool" => "avgpool",
        "GlobalAveragePool" => "gap",
        "GlobalMaxPool" => "gmp",
        "Gemm" => "gemm",
        "MatMul" => "matmul",
        "Concat" => "concat",
        "Softmax" => "softmax",
        "LogSoftmax" => "logsoftmax",
        "Transpose" => "transpose",
        "LRN" => "lrn",
        "LayerNormalization" => "layernorm",
        "Resize" | "Upsample" => "resize",
        "Pad" => "pad",
        "Slice" | "Split" | "Gather" => "slice",
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" => "reduce",
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Sum" | "Max" | "Min" | "PRelu" => "elementwise",
        _ => "op",
    }
}

/// How many step arguments read each tensor, and which step makes it.
fn readers_and_producers(steps: &[Step]) -> (HashMap<TensorId, usize>, HashMap<TensorId, usize>) {
    let mut readers: HashMap<TensorId, usize> = HashMap::new();
    let mut producer: HashMap<TensorId, usize> = HashMap::new();
    for (i, s) in steps.iter().enumerate() {
        for t in s.args.iter().filter_map(Arg::tensor) {
            *readers.entry(t).or_default() += 1;
        }
        for &o in &s.outputs {
            producer.insert(o, i);
        }
    }
    (readers, producer)
}

/// Residual joins into the convolutions before them: an `AddAct` one of
/// whose operands is the only output of a (not depthwise) convolution step
/// with the identity activation, read by nothing else, becomes one
/// `ConvAdd` step in the add's place, over the convolution's input and the
/// other operand. Both were computed before the add, so the order stays
/// topological; the cost is the two steps' together.
fn fuse_conv_adds(steps: Vec<Step>, output: TensorId) -> Vec<Step> {
    let (readers, producer) = readers_and_producers(&steps);
    let fusable = |s: &Step| {
        s.outputs.len() == 1
            && matches!(&s.kernel, Kernel::Layer(l) if l.kind() == "conv"
                && l.as_conv().is_some_and(|c| c.activation() == Activation::Identity))
    };
    let mut steps: Vec<Option<Step>> = steps.into_iter().map(Some).collect();
    for j in 0..steps.len() {
        let Some(Step {
            kernel: Kernel::AddAct(act),
            args,
            ..
        }) = &steps[j]
        else {
            continue;
        };
        let act = *act;
        let (Some(a), Some(b)) = (args[0].tensor(), args[1].tensor()) else {
            continue;
        };
        let pick = [(a, b), (b, a)].into_iter().find(|&(c, side)| {
            c != side
                && c != output
                && readers.get(&c) == Some(&1)
                && producer
                    .get(&c)
                    .is_some_and(|&p| steps[p].as_ref().is_some_and(fusable))
        });
        let Some((c, side)) = pick else {
            continue;
        };
        let conv = steps[producer[&c]].take().expect("a producing step");
        let add = steps[j].take().expect("the add");
        let Kernel::Layer(layer) = conv.kernel else {
            unreachable!("fusable steps are layers")
        };
        let mut op_types = conv.op_types;
        op_types.extend(add.op_types);
        steps[j] = Some(Step {
            name: format!("{} + {}", conv.name, add.name),
            op_types,
            kind: "conv_add",
            kernel: Kernel::ConvAdd { layer, act },
            args: vec![conv.args[0].clone(), Arg::Tensor(side)],
            outputs: add.outputs,
            cost: conv.cost + add.cost,
            params: conv.params + add.params,
        });
    }
    steps.into_iter().flatten().collect()
}

/// A pointwise convolution and the depthwise convolution that is the only
/// reader of its output become one step holding both as a `Sequential`,
/// which runs them fused where the shapes call for it (MobileNetV2's
/// expand + depthwise; `Conv2d::fuses_with`) and one after the other
/// otherwise. The depthwise step follows its input's producer, so putting
/// the pair in its place keeps the order topological.
fn pair_pointwise_depthwise(steps: Vec<Step>, output: TensorId) -> Vec<Step> {
    let (readers, producer) = readers_and_producers(&steps);
    // The convolution of a one-input layer step of `kind`.
    fn conv_of<'s>(s: &'s Step, kind: &str) -> Option<&'s Conv2d> {
        match &s.kernel {
            Kernel::Layer(l) if l.kind() == kind && s.args.len() == 1 => l.as_conv(),
            _ => None,
        }
    }
    let pointwise =
        |s: &Step| s.outputs.len() == 1 && conv_of(s, "conv").is_some_and(Conv2d::is_pointwise);
    let mut steps: Vec<Option<Step>> = steps.into_iter().map(Some).collect();
    for j in 0..steps.len() {
        let Some(dw) = &steps[j] else { continue };
        if conv_of(dw, "dwconv").is_none() {
            continue;
        }
        let Some(c) = dw.args[0].tensor() else {
            continue;
        };
        let Some(&p) = producer.get(&c) else { continue };
        if c == output || readers.get(&c) != Some(&1) || !steps[p].as_ref().is_some_and(pointwise) {
            continue;
        }
        let pw = steps[p].take().expect("a producing step");
        let dw = steps[j].take().expect("the depthwise step");
        let (Kernel::Layer(a), Kernel::Layer(b)) = (pw.kernel, dw.kernel) else {
            unreachable!("both are layers")
        };
        let mut op_types = pw.op_types;
        op_types.extend(dw.op_types);
        steps[j] = Some(Step {
            name: format!("{} + {}", pw.name, dw.name),
            op_types,
            kind: "conv_dwconv",
            kernel: Kernel::Layer(Box::new(Sequential::new("conv_dwconv", vec![a, b]))),
            args: pw.args,
            outputs: dw.outputs,
            cost: pw.cost + dw.cost,
            params: pw.params + dw.params,
        });
    }
    steps.into_iter().flatten().collect()
}

/// Lowers `g` to steps.
pub fn lower(g: &Graph) -> Lowered {
    Lowerer::new(g).lower()
}
