//! ONNX operators: shape inference and a reference evaluation for each.
//!
//! Every supported op type has a builder that reads the node's attributes
//! (and any inputs that must be constant, such as Reshape's shape) once at
//! load, and returns an [`Op`]. The importer uses [`Op::infer`] to fix
//! every tensor's shape, [`Op::eval`] to fold constants, and runs ops the
//! engine has no fast kernel for through `eval` too. Ops the engine does
//! have kernels for (convolutions, pools, dense layers, activations) are
//! recognised by the lowering through [`Op::as_any`].
//!
//! Inputs are positional, as in the node: `None` stands for an omitted
//! optional input (an empty name).

pub mod elementwise;
pub mod reduce;
pub mod shape;
pub mod spatial;
#[cfg(test)]
pub mod testing;
pub mod util;

use std::any::Any;
use std::fmt;

use super::attrs::Attrs;
use super::data::{Data, Fact};

/// One ONNX operator with its attributes resolved.
pub trait Op: Send + Sync + fmt::Debug {
    /// Type and shape of every output for inputs of these facts (values
    /// of constant inputs included). Output facts carry no value.
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String>;

    /// Computes the outputs. Inputs have the facts `infer` accepted.
    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String>;

    /// Floating-point operations of one evaluation (a rough count: one per
    /// output element unless the op says otherwise).
    fn flops(&self, _inputs: &[Option<&Fact>], outputs: &[Fact]) -> u64 {
        outputs.iter().map(|f| f.len() as u64).sum()
    }

    /// False for ops whose output must not be computed at load even when
    /// every input is constant.
    fn foldable(&self) -> bool {
        true
    }

    /// The op as `Any`, so the lowering can recognise ops it fuses or maps
    /// onto engine kernels.
    fn as_any(&self) -> &dyn Any;
}

/// What a builder sees of a node.
#[derive(Clone, Copy, Debug)]
pub struct Ctx<'a> {
    /// The op type (`Conv`, `Relu`, ...).
    pub op_type: &'a str,
    /// The model's ai.onnx opset.
    pub opset: i64,
    /// The node's attributes.
    pub attrs: Attrs<'a>,
    /// Facts of the node's inputs, positional (`None` for omitted ones).
    pub inputs: &'a [Option<&'a Fact>],
    /// Number of outputs the node declares.
    pub outputs: usize,
}

impl<'a> Ctx<'a> {
    /// Input `i`, if present.
    pub fn input(&self, i: usize) -> Option<&'a Fact> {
        self.inputs.get(i).copied().flatten()
    }

    /// Input `i`, which must be present.
    pub fn required(&self, i: usize) -> Result<&'a Fact, String> {
        self.input(i)
            .ok_or_else(|| format!("input {i} is required"))
    }

    /// The constant value of input `i`, if the input is present; an
    /// error if it is present but not constant.
    pub fn const_input(&self, i: usize) -> Result<Option<&'a Data>, String> {
        match self.input(i) {
            None => Ok(None),
            Some(f) => f.value.as_deref().map(Some).ok_or_else(|| {
                format!("input {i} must be a constant (an initializer or computable at load)")
            }),
        }
    }
}

/// Builds an op from a node.
pub type Builder = fn(&Ctx) -> Result<Box<dyn Op>, String>;

fn tables() -> [&'static [(&'static str, Builder)]; 4] {
    [elementwise::OPS, reduce::OPS, shape::OPS, spatial::OPS]
}

/// The builder for `op_type`, if odin supports it.
pub fn builder(op_type: &str) -> Option<Builder> {
    tables()
        .into_iter()
        .flatten()
        .find(|(name, _)| *name == op_type)
        .map(|(_, b)| *b)
}

/// Every supported op type, sorted.
pub fn supported() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = tables().into_iter().flatten().map(|(n, _)| *n).collect();
    names.sort_unstable();
    names
}

/// How many inputs and outputs a node of `op_type` may have in some
/// opset odin imports: `((fewest, most) inputs, (fewest, most) outputs)`.
pub fn arity(op_type: &str) -> Option<((usize, usize), (usize, usize))> {
    ARITY
        .iter()
        .find(|a| a.0 == op_type)
        .map(|&(_, a, b, c, d)| ((a, b), (c, d)))
}

/// (op type, fewest inputs, most inputs, fewest outputs, most outputs)
/// over ai.onnx opsets 7 to 21, from the ONNX schemas (onnx 1.23.2).
const ARITY: &[(&str, usize, usize, usize, usize)] = &[
    ("Abs", 1, 1, 1, 1),
    ("Add", 2, 2, 1, 1),
    ("And", 2, 2, 1, 1),
    ("AveragePool", 1, 1, 1, 1),
    ("BatchNormalization", 5, 5, 1, 5),
    ("Cast", 1, 1, 1, 1),
    ("CastLike", 2, 2, 1, 1),
    ("Ceil", 1, 1, 1, 1),
    ("Clip", 1, 3, 1, 1),
    ("Concat", 1, usize::MAX, 1, 1),
    ("Constant", 0, 0, 1, 1),
    ("ConstantOfShape", 1, 1, 1, 1),
    ("Conv", 2, 3, 1, 1),
    ("ConvTranspose", 2, 3, 1, 1),
    ("Div", 2, 2, 1, 1),
    ("Dropout", 1, 3, 1, 2),
    ("Elu", 1, 1, 1, 1),
    ("Equal", 2, 2, 1, 1),
    ("Erf", 1, 1, 1, 1),
    ("Exp", 1, 1, 1, 1),
    ("Expand", 2, 2, 1, 1),
    ("Flatten", 1, 1, 1, 1),
    ("Floor", 1, 1, 1, 1),
    ("Gather", 2, 2, 1, 1),
    ("GatherElements", 2, 2, 1, 1),
    ("Gelu", 1, 1, 1, 1),
    ("Gemm", 2, 3, 1, 1),
    ("GlobalAveragePool", 1, 1, 1, 1),
    ("GlobalMaxPool", 1, 1, 1, 1),
    ("Greater", 2, 2, 1, 1),
    ("GreaterOrEqual", 2, 2, 1, 1),
    ("HardSigmoid", 1, 1, 1, 1),
    ("HardSwish", 1, 1, 1, 1),
    ("Identity", 1, 1, 1, 1),
    ("InstanceNormalization", 3, 3, 1, 1),
    ("LRN", 1, 1, 1, 1),
    ("LayerNormalization", 2, 3, 1, 3),
    ("LeakyRelu", 1, 1, 1, 1),
    ("Less", 2, 2, 1, 1),
    ("LessOrEqual", 2, 2, 1, 1),
    ("Log", 1, 1, 1, 1),
    ("LogSoftmax", 1, 1, 1, 1),
    ("MatMul", 2, 2, 1, 1),
    ("Max", 1, usize::MAX, 1, 1),
    ("MaxPool", 1, 1, 1, 2),
    ("Mean", 1, usize::MAX, 1, 1),
    ("Min", 1, usize::MAX, 1, 1),
    ("Mul", 2, 2, 1, 1),
    ("Neg", 1, 1, 1, 1),
    ("Not", 1, 1, 1, 1),
    ("Or", 2, 2, 1, 1),
    ("PRelu", 2, 2, 1, 1),
    ("Pad", 1, 4, 1, 1),
    ("Pow", 2, 2, 1, 1),
    ("Range", 3, 3, 1, 1),
    ("Reciprocal", 1, 1, 1, 1),
    ("ReduceL1", 1, 2, 1, 1),
    ("ReduceL2", 1, 2, 1, 1),
    ("ReduceLogSum", 1, 2, 1, 1),
    ("ReduceLogSumExp", 1, 2, 1, 1),
    ("ReduceMax", 1, 2, 1, 1),
    ("ReduceMean", 1, 2, 1, 1),
    ("ReduceMin", 1, 2, 1, 1),
    ("ReduceProd", 1, 2, 1, 1),
    ("ReduceSum", 1, 2, 1, 1),
    ("ReduceSumSquare", 1, 2, 1, 1),
    ("Relu", 1, 1, 1, 1),
    ("Reshape", 2, 2, 1, 1),
    ("Resize", 1, 4, 1, 1),
    ("Selu", 1, 1, 1, 1),
    ("Shape", 1, 1, 1, 1),
    ("Sigmoid", 1, 1, 1, 1),
    ("Size", 1, 1, 1, 1),
    ("Slice", 1, 5, 1, 1),
    ("Softmax", 1, 1, 1, 1),
    ("Softplus", 1, 1, 1, 1),
    ("Split", 1, 2, 1, usize::MAX),
    ("Sqrt", 1, 1, 1, 1),
    ("Squeeze", 1, 2, 1, 1),
    ("Sub", 2, 2, 1, 1),
    ("Sum", 1, usize::MAX, 1, 1),
    ("Tanh", 1, 1, 1, 1),
    ("Tile", 2, 2, 1, 1),
    ("Transpose", 1, 1, 1, 1),
    ("Unsqueeze", 1, 2, 1, 1),
    ("Upsample", 1, 2, 1, 1),
    ("Where", 3, 3, 1, 1),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_has_an_arity() {
        for op in supported() {
            assert!(arity(op).is_some(), "{op} has no arity");
        }
    }

    #[test]
    fn op_types_are_unique() {
        let names = supported();
        let mut dedup = names.clone();
        dedup.dedup();
        assert_eq!(names, dedup, "an op type is registered twice");
    }
}
