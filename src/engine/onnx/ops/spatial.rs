//! placeholder (interface stub)
#![allow(missing_docs, dead_code)]
use super::Builder;
pub(super) const OPS: &[(&str, Builder)] = &[];
#[derive(Debug)] pub struct Conv { pub kernel: Vec<usize>, pub strides: Vec<usize>, pub dilations: Vec<usize>, pub pads: Vec<usize>, pub group: usize }
#[derive(Clone, Copy, Debug, PartialEq, Eq)] pub enum PoolKind { Max, Avg }
#[derive(Debug)] pub struct Pool { pub kind: PoolKind, pub kernel: Vec<usize>, pub strides: Vec<usize>, pub pads: Vec<usize>, pub dilations: Vec<usize>, pub ceil_mode: bool, pub count_include_pad: bool }
#[derive(Debug)] pub struct GlobalPool { pub kind: PoolKind }
#[derive(Debug)] pub struct Gemm { pub alpha: f32, pub beta: f32, pub trans_a: bool, pub trans_b: bool }
#[derive(Debug)] pub struct MatMul;
