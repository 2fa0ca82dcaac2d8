//! placeholder (interface stub)
#![allow(missing_docs, dead_code)]
use super::Builder;
pub(super) const OPS: &[(&str, Builder)] = &[];
#[derive(Debug)] pub struct BatchNorm { pub epsilon: f32 }
impl BatchNorm { pub fn scale_shift(&self, _scale: &[f32], _bias: &[f32], _mean: &[f32], _var: &[f32]) -> (Vec<f32>, Vec<f32>) { unimplemented!() } }
