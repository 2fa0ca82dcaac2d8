//! ONNX import: a trained network from an `.onnx` file, lowered onto the
//! engine's kernels and cut into pipeline units.

pub mod attrs;
pub mod data;
pub mod ops;
pub mod proto;
