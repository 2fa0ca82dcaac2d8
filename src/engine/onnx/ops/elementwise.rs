//! placeholder (interface stub)
#![allow(missing_docs, dead_code)]
use super::Builder;
pub(super) const OPS: &[(&str, Builder)] = &[];
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary { Relu, LeakyRelu(f32), Sigmoid, HardSigmoid { alpha: f32, beta: f32 }, HardSwish, Tanh, Erf, Sqrt, Exp, Log, Neg, Abs, Reciprocal, Floor, Ceil, Elu(f32), Softplus, Selu { alpha: f32, gamma: f32 }, Gelu { tanh: bool }, Not }
impl Unary { pub fn apply_slice(&self, _v: &mut [f32]) { unimplemented!() } }
#[derive(Debug)] pub struct UnaryOp(pub Unary);
#[derive(Debug)] pub struct Clip { pub min: f32, pub max: f32 }
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryKind { Add, Sub, Mul, Div, Pow, Max, Min, Equal, Less, Greater, LessOrEqual, GreaterOrEqual, And, Or }
#[derive(Debug)] pub struct Binary(pub BinaryKind);
#[derive(Debug)] pub struct Variadic(pub BinaryKind);
