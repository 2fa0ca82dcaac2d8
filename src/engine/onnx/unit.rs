//! Cutting the lowered graph into pipeline units, and running a unit.
//!
//! Problem: the pipeline moves units between stages and a frame carries
//! exactly one tensor between them, but an imported network is a DAG.
//!
//! Approach: walk the steps in topological order keeping, for every
//! tensor, how many of its readers are still to run. After step `i` the
//! live set is the tensors produced so far with readers still ahead (the
//! output counts as read at the end). Wherever that set is exactly one
//! f32 tensor of rank at most 4, the graph can be cut: everything after
//! depends on the past only through that tensor. Consecutive cuts bound
//! the units, so a residual block, an inception module or a shuffle unit
//! is one unit, and a chain of plain layers gives one unit per layer.
//!
//! Invariants: unit `k`'s input is unit `k - 1`'s output; running units
//! `0..k` then `k..N` is the same computation as `0..N`, since each unit
//! runs exactly its steps on exactly that tensor.

use std::collections::HashMap;

use ndarray::{ArrayD, IxDyn};

use super::data::{DType, Data};
use super::lower::{Arg, Kernel, Lowered, Step, shape4};
use crate::engine::ops::Activation;
use crate::engine::{Cost, Layer, Precision, Shape, ShapeError, Tensor, Workspace};

/// The units of `l`: maximal runs of steps between cuts, each with the one
/// tensor it hands on (the graph's output for the last).
pub fn cut(l: &Lowered) -> Vec<(std::ops::Range<usize>, usize)> {
    let mut remaining: HashMap<usize, usize> = HashMap::new();
    for s in &l.steps {
        for t in s.args.iter().filter_map(Arg::tensor) {
            *remaining.entry(t).or_default() += 1;
        }
    }
    *remaining.entry(l.output).or_default() += 1;
    let mut live: Vec<usize> = vec![l.input];
    let mut ranges = Vec::new();
    let mut start = 0;
    for (i, s) in l.steps.iter().enumerate() {
        for t in s.args.iter().filter_map(Arg::tensor) {
            let r = remaining.get_mut(&t).expect("counted");
            *r -= 1;
            if *r == 0 {
                live.retain(|&x| x != t);
            }
        }
        for &o in &s.outputs {
            if remaining.get(&o).copied().unwrap_or(0) > 0 && !live.contains(&o) {
                live.push(o);
            }
        }
        let last = i + 1 == l.steps.len();
        if let [one] = live.as_slice()
            && l.dims[*one].len() <= 4
            && l.dtypes[*one] == DType::F32
            && !last
        {
            ranges.push((start..i + 1, *one));
            start = i + 1;
        }
    }
    if start < l.steps.len() {
        ranges.push((start..l.steps.len(), l.output));
    }
    ranges
}

/// Where a step of a unit finds a value.
#[derive(Debug, Clone)]
enum Src {
    Slot(usize),
    Const(std::sync::Arc<Data>),
    Absent,
}

#[derive(Debug)]
struct UnitStep {
    kernel: Kernel,
    args: Vec<Src>,
    outputs: Vec<usize>,
    out_dims: Vec<Vec<usize>>,
    /// Slots whose last reader this step is.
    frees: Vec<usize>,
}

/// One unit of an imported network: a sub-graph from one tensor to one
/// tensor, run step by step over numbered slots (slot 0 is the input).
#[derive(Debug)]
pub struct ImportedUnit {
    kind: &'static str,
    steps: Vec<UnitStep>,
    slots: usize,
    input_dims: Vec<usize>,
    output_dims: Vec<usize>,
    output_slot: usize,
    /// True when some step needs the input as an owned value.
    input_owned: bool,
    cost: Cost,
    params: usize,
}

impl ImportedUnit {
    /// The unit of `l.steps[range]`, from `input` to `output`.
    pub fn new(
        l: &mut Lowered,
        range: std::ops::Range<usize>,
        input: usize,
        output: usize,
    ) -> Self {
        let steps: Vec<Step> = l.steps[range]
            .iter_mut()
            .map(|s| std::mem::replace(s, placeholder()))
            .collect();
        let mut slot_of: HashMap<usize, usize> = HashMap::from([(input, 0)]);
        let mut last_use: HashMap<usize, usize> = HashMap::new();
        for (i, s) in steps.iter().enumerate() {
            for t in s.args.iter().filter_map(Arg::tensor) {
                last_use.insert(t, i);
            }
            for &o in &s.outputs {
                let n = slot_of.len();
                slot_of.entry(o).or_insert(n);
            }
        }
        let kind = match steps.as_slice() {
            [one] => one.kind,
            many if many
                .iter()
                .any(|s| matches!(s.kernel, Kernel::AddAct(_) | Kernel::ConvAdd { .. })) =>
            {
                "residual"
            }
            many if many.iter().any(|s| s.kind == "concat") => "concat_block",
            _ => "block",
        };
        let cost = steps.iter().map(|s| s.cost).sum::<Cost>();
        let params = steps.iter().map(|s| s.params).sum();
        let input_owned = steps.iter().any(|s| {
            !matches!(
                s.kernel,
                Kernel::Layer(_) | Kernel::AddAct(_) | Kernel::ConvAdd { .. }
            ) && s.args.iter().any(|a| a.tensor() == Some(input))
        });
        let output_slot = slot_of[&output];
        let unit_steps = steps
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let args = s
                    .args
                    .iter()
                    .map(|a| match a {
                        Arg::Tensor(t) => Src::Slot(slot_of[t]),
                        Arg::Const(c) => Src::Const(c.clone()),
                        Arg::Absent => Src::Absent,
                    })
                    .collect();
                let mut frees: Vec<usize> = s
                    .args
                    .iter()
                    .filter_map(Arg::tensor)
                    .filter(|t| last_use[t] == i && *t != output)
                    .map(|t| slot_of[&t])
                    .collect();
                frees.sort_unstable();
                frees.dedup();
                UnitStep {
                    out_dims: s.outputs.iter().map(|&o| l.dims[o].clone()).collect(),
                    outputs: s.outputs.iter().map(|o| slot_of[o]).collect(),
                    kernel: s.kernel,
                    args,
                    frees,
                }
            })
            .collect();
        Self {
            kind,
            steps: unit_steps,
            slots: slot_of.len(),
            input_dims: l.dims[input].clone(),
            output_dims: l.dims[output].clone(),
            output_slot,
            input_owned,
            cost,
            params,
        }
    }

    /// The unit's output dimensions as the graph has them.
    pub fn output_dims(&self) -> &[usize] {
        &self.output_dims
    }
}

fn placeholder() -> Step {
    Step {
        name: String::new(),
        op_types: Vec::new(),
        kind: "",
        kernel: Kernel::Reshape,
        args: Vec::new(),
        outputs: Vec::new(),
        cost: Cost::default(),
        params: 0,
    }
}

fn to_tensor(d: Data) -> Tensor {
    let Data::F32(a) = d else {
        unreachable!("runtime values are f32")
    };
    let shape = shape4(a.shape()).expect("values between kernels have rank <= 4");
    Tensor::from_vec(shape, standard(a).into_raw_vec_and_offset().0)
}

fn from_tensor(t: Tensor, dims: &[usize]) -> Data {
    Data::F32(ArrayD::from_shape_vec(IxDyn(dims), t.into_vec()).expect("same element count"))
}

fn standard(a: ArrayD<f32>) -> ArrayD<f32> {
    if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    }
}

fn slice(d: &Data) -> &[f32] {
    match d {
        Data::F32(a) => a.as_slice().expect("runtime values are in standard layout"),
        Data::I64(_) => unreachable!("runtime values are f32"),
    }
}

fn slice_mut(d: &mut Data) -> &mut [f32] {
    match d {
        Data::F32(a) => a
            .as_slice_mut()
            .expect("runtime values are in standard layout"),
        Data::I64(_) => unreachable!("runtime values are f32"),
    }
}

/// The values of one run of a unit.
struct Env<'a> {
    input: &'a Tensor,
    slots: Vec<Option<Data>>,
}

impl Env<'_> {
    /// A copy of (or, at its last read, the value in) `slot`, as owned data.
    fn take(&mut self, slot: usize, last: bool, dims0: &[usize]) -> Data {
        if slot == 0 && self.slots[0].is_none() {
            return from_tensor(self.input.clone(), dims0);
        }
        if last {
            self.slots[slot].take().expect("slot is set")
        } else {
            self.slots[slot].clone().expect("slot is set")
        }
    }

    fn get(&self, slot: usize) -> &Data {
        self.slots[slot].as_ref().expect("slot is set")
    }

    fn values(&self, slot: usize) -> &[f32] {
        match (slot, &self.slots[slot]) {
            (0, None) => self.input.as_slice(),
            (_, Some(d)) => slice(d),
            (_, None) => unreachable!("slot {slot} is set before it is read"),
        }
    }
}

impl Layer for ImportedUnit {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn output_shape(&self, input: Shape) -> Result<Shape, ShapeError> {
        let want = shape4(&self.input_dims).expect("unit inputs have rank <= 4");
        if input != want {
            return Err(ShapeError::new(
                self.kind,
                input,
                format!("the unit takes {want}"),
            ));
        }
        Ok(shape4(&self.output_dims).expect("unit outputs have rank <= 4"))
    }

    fn forward(&self, x: &Tensor, ws: &mut Workspace) -> Tensor {
        let mut env = Env {
            input: x,
            slots: vec![None; self.slots],
        };
        if self.input_owned {
            env.slots[0] = Some(from_tensor(x.clone(), &self.input_dims));
        }
        for s in &self.steps {
            let last = |slot: usize| s.frees.contains(&slot);
            let arg_slot = |i: usize| match s.args[i] {
                Src::Slot(k) => k,
                _ => unreachable!("kernel inputs are runtime values"),
            };
            let out: Vec<Data> = match &s.kernel {
                Kernel::Layer(layer) => {
                    let k = arg_slot(0);
                    let y = if k == 0 && env.slots[0].is_none() {
                        layer.forward(env.input, ws)
                    } else {
                        let dims = env.get(k).dims().to_vec();
                        let t = to_tensor(env.take(k, true, &self.input_dims));
                        let y = layer.forward(&t, ws);
                        if !last(k) {
                            env.slots[k] = Some(from_tensor(t, &dims));
                        }
                        y
                    };
                    vec![from_tensor(y, &s.out_dims[0])]
                }
                Kernel::ConvAdd { layer, act } => {
                    let conv = layer.as_conv().expect("a ConvAdd step holds a convolution");
                    let (k, side) = (arg_slot(0), arg_slot(1));
                    let y = if k == 0 && env.slots[0].is_none() {
                        conv.forward_add(env.input, env.values(side), *act, ws)
                    } else {
                        let dims = env.get(k).dims().to_vec();
                        let t = to_tensor(env.take(k, true, &self.input_dims));
                        let y = if side == k {
                            conv.forward_add(&t, t.as_slice(), *act, ws)
                        } else {
                            conv.forward_add(&t, env.values(side), *act, ws)
                        };
                        if !last(k) {
                            env.slots[k] = Some(from_tensor(t, &dims));
                        }
                        y
                    };
                    vec![from_tensor(y, &s.out_dims[0])]
                }
                Kernel::ZeroPad([t, l, b, r]) => {
                    let k = arg_slot(0);
                    let src = env.values(k);
                    let d = &s.out_dims[0];
                    let (h, w) = (d[2] - t - b, d[3] - l - r);
                    let mut y = vec![0.0f32; d.iter().product()];
                    for (p, yp) in src.chunks_exact(h * w).zip(y.chunks_exact_mut(d[2] * d[3])) {
                        for (row, yrow) in
                            p.chunks_exact(w).zip(yp[t * d[3]..].chunks_exact_mut(d[3]))
                        {
                            yrow[*l..*l + w].copy_from_slice(row);
                        }
                    }
                    vec![Data::F32(
                        ArrayD::from_shape_vec(IxDyn(d), y).expect("padded length"),
                    )]
                }
                Kernel::AddAct(act) => {
                    let (a, b) = (arg_slot(0), arg_slot(1));
                    // Add into whichever operand dies here, the other read.
                    let (own, other, moves) = if a == b {
                        (a, b, false)
                    } else if a != 0 && last(a) {
                        (a, b, true)
                    } else if b != 0 && last(b) {
                        (b, a, true)
                    } else {
                        (a, b, false)
                    };
                    let mut y = env.take(own, moves, &self.input_dims);
                    add_act(slice_mut(&mut y), env.values(other), *act);
                    vec![y]
                }
                Kernel::Act(act) => {
                    let k = arg_slot(0);
                    let mut y = env.take(k, last(k), &self.input_dims);
                    act.apply(slice_mut(&mut y));
                    vec![y]
                }
                Kernel::Unary(u) => {
                    let k = arg_slot(0);
                    let mut y = env.take(k, last(k), &self.input_dims);
                    u.apply_slice(slice_mut(&mut y));
                    vec![y]
                }
                Kernel::Affine { scale, shift, act } => {
                    let k = arg_slot(0);
                    let mut y = env.take(k, last(k), &self.input_dims);
                    let d = y.dims().to_vec();
                    let plane: usize = d[2..].iter().product();
                    let c = d[1];
                    for (i, p) in slice_mut(&mut y).chunks_exact_mut(plane).enumerate() {
                        let (sc, sh) = (scale[i % c], shift[i % c]);
                        match act {
                            Activation::Identity => p.iter_mut().for_each(|v| *v = *v * sc + sh),
                            Activation::Relu => {
                                p.iter_mut().for_each(|v| *v = (*v * sc + sh).max(0.0))
                            }
                            Activation::Relu6 => p
                                .iter_mut()
                                .for_each(|v| *v = (*v * sc + sh).clamp(0.0, 6.0)),
                        }
                    }
                    vec![y]
                }
                Kernel::Reshape => {
                    let k = arg_slot(0);
                    let Data::F32(a) = env.take(k, last(k), &self.input_dims) else {
                        unreachable!("runtime values are f32")
                    };
                    let v = standard(a).into_raw_vec_and_offset().0;
                    vec![Data::F32(
                        ArrayD::from_shape_vec(IxDyn(&s.out_dims[0]), v)
                            .expect("same element count"),
                    )]
                }
                Kernel::Generic(op) => {
                    let args: Vec<Option<&Data>> = s
                        .args
                        .iter()
                        .map(|a| match a {
                            Src::Slot(k) => Some(env.get(*k)),
                            Src::Const(c) => Some(&**c),
                            Src::Absent => None,
                        })
                        .collect();
                    op.eval(&args)
                        .unwrap_or_else(|e| {
                            panic!("an op failed on inputs its load-time checks accepted: {e}")
                        })
                        .into_iter()
                        .map(|d| match d {
                            Data::F32(a) => Data::F32(standard(a)),
                            i => i,
                        })
                        .collect()
                }
            };
            for &f in &s.frees {
                env.slots[f] = None;
            }
            for (slot, v) in s.outputs.iter().zip(out) {
                env.slots[*slot] = Some(v);
            }
        }
        match env.slots[self.output_slot].take() {
            Some(y) => to_tensor(y),
            // A unit whose steps leave its input as its output.
            None => x.clone(),
        }
    }

    fn cost(&self, _input: Shape) -> Cost {
        self.cost
    }

    fn params(&self) -> usize {
        self.params
    }

    fn set_precision(&mut self, precision: Precision) -> usize {
        self.steps
            .iter_mut()
            .map(|s| match &mut s.kernel {
                Kernel::Layer(l) | Kernel::ConvAdd { layer: l, .. } => l.set_precision(precision),
                _ => 0,
            })
            .sum()
    }
}

/// `y = act(y + side)`, as the engine's residual blocks do it.
fn add_act(y: &mut [f32], side: &[f32], act: Activation) {
    let pairs = y.iter_mut().zip(side);
    match act {
        Activation::Identity => pairs.for_each(|(a, b)| *a += b),
        Activation::Relu => pairs.for_each(|(a, b)| *a = (*a + b).max(0.0)),
        Activation::Relu6 => pairs.for_each(|(a, b)| *a = (*a + b).clamp(0.0, 6.0)),
    }
}
