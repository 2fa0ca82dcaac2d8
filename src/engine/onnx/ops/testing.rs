//! Test helpers: build an op as the importer would, run it, and check that
//! `eval` gives what `infer` promised.

use std::sync::Arc;

use ndarray::{ArrayD, IxDyn};

use super::super::attrs::Attrs;
use super::super::data::{Data, Fact};
use super::super::proto::{AttributeProto, attribute_type as at};
use super::{Ctx, Op, builder};

/// An f32 value of `dims` over `values`.
pub fn f32s(dims: &[usize], values: Vec<f32>) -> Data {
    Data::F32(ArrayD::from_shape_vec(IxDyn(dims), values).expect("length matches dims"))
}

/// An i64 value of `dims` over `values`.
pub fn i64s(dims: &[usize], values: Vec<i64>) -> Data {
    Data::I64(ArrayD::from_shape_vec(IxDyn(dims), values).expect("length matches dims"))
}

/// An integer attribute.
pub fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(at::INT),
        i: Some(v),
        ..Default::default()
    }
}

/// A list-of-integers attribute.
pub fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(at::INTS),
        ints: v.to_vec(),
        ..Default::default()
    }
}

/// A float attribute.
pub fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(at::FLOAT),
        f: Some(v),
        ..Default::default()
    }
}

/// A list-of-floats attribute.
pub fn floats(name: &str, v: &[f32]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(at::FLOATS),
        floats: v.to_vec(),
        ..Default::default()
    }
}

/// A string attribute.
pub fn string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(at::STRING),
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}

/// How an input is given to [`run`].
pub enum In {
    /// A runtime input: the builder sees only its shape.
    Dynamic(Data),
    /// A constant: the builder sees its value.
    Const(Data),
    /// An omitted optional input.
    Absent,
}

/// Builds `op_type` (opset `opset`) over `inputs`, as the importer would.
pub fn build(
    op_type: &str,
    opset: i64,
    attrs: &[AttributeProto],
    inputs: &[In],
    outputs: usize,
) -> Result<Box<dyn Op>, String> {
    let facts = facts(inputs);
    let refs: Vec<Option<&Fact>> = facts.iter().map(Option::as_ref).collect();
    let b = builder(op_type).ok_or_else(|| format!("{op_type} is not registered"))?;
    b(&Ctx {
        op_type,
        opset,
        attrs: Attrs::new(attrs),
        inputs: &refs,
        outputs,
    })
}

fn facts(inputs: &[In]) -> Vec<Option<Fact>> {
    inputs
        .iter()
        .map(|i| match i {
            In::Dynamic(d) => Some(Fact::new(d.dtype(), d.dims().to_vec())),
            In::Const(d) => Some(Arc::new(d.clone()).fact()),
            In::Absent => None,
        })
        .collect()
}

/// Builds and evaluates `op_type`, checking the outputs have the types
/// and shapes `infer` gave.
pub fn run(
    op_type: &str,
    opset: i64,
    attrs: &[AttributeProto],
    inputs: &[In],
) -> Result<Vec<Data>, String> {
    run_n(op_type, opset, attrs, inputs, 1)
}

/// [`run`] for a node that declares `outputs` outputs.
pub fn run_n(
    op_type: &str,
    opset: i64,
    attrs: &[AttributeProto],
    inputs: &[In],
    outputs: usize,
) -> Result<Vec<Data>, String> {
    let op = build(op_type, opset, attrs, inputs, outputs)?;
    let facts = facts(inputs);
    let refs: Vec<Option<&Fact>> = facts.iter().map(Option::as_ref).collect();
    let want = op.infer(&refs)?;
    let data: Vec<Option<&Data>> = inputs
        .iter()
        .map(|i| match i {
            In::Dynamic(d) | In::Const(d) => Some(d),
            In::Absent => None,
        })
        .collect();
    let got = op.eval(&data)?;
    assert_eq!(
        got.len(),
        want.len(),
        "{op_type}: eval gave {} outputs, infer {}",
        got.len(),
        want.len()
    );
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(
            (g.dtype(), g.dims()),
            (w.dtype, &w.dims[..]),
            "{op_type}: eval and infer disagree"
        );
    }
    Ok(got)
}

/// The f32 values of `d` in order.
pub fn values(d: &Data) -> Vec<f32> {
    d.f32().expect("f32 output").iter().copied().collect()
}

/// Asserts `got` is within `tol` of `want`, element by element.
pub fn assert_close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "element {i}: got {g}, want {w}"
        );
    }
}
