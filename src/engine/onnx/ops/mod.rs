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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_types_are_unique() {
        let names = supported();
        let mut dedup = names.clone();
        dedup.dedup();
        assert_eq!(names, dedup, "an op type is registered twice");
    }
}
