//! The Open Inference Protocol's data model and REST codec, as Triton
//! speaks it: model and server metadata, Triton's model configuration,
//! infer requests and responses with the binary tensor data and
//! classification extensions, and the error mapping.
//!
//! Nothing here touches a socket: a transport hands over the body and the
//! `Inference-Header-Content-Length` header and sends back what
//! [`encode_infer_response`] or [`ProtocolError::json`] produce.
//!
//! ```text
//! request body, binary tensor data extension:
//!
//!   | JSON header (Inference-Header-Content-Length bytes) | input 0 | input 1 | ... |
//!                                   each input's size is its parameters.binary_data_size
//!
//!   header length 0 (raw binary): the whole body is the model's one input
//!   no header length:             the whole body is JSON, data in "data"
//! ```
//!
//! **Problem.** A request declares sizes the client controls: shapes,
//! `binary_data_size`, the header length, BYTES element lengths. Taken at
//! their word they would allocate terabytes or read past the body.
//!
//! **Approach.** Every declared size is checked before anything sized by it
//! is allocated: the body against [`Limits::max_body_bytes`], a shape's
//! element count (overflow checked) against [`Limits::max_elements`], a
//! binary size against the shape times the element size and against the
//! bytes actually left in the body, a BYTES element's length against the
//! bytes left in its tensor. JSON `data` is flattened as it is read into one
//! list whose length is capped by [`Limits::max_elements`] as it grows, so
//! no buffer exceeds what the body holds or the limits allow.

use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::ser::{Serialize, Serializer};
use serde::{Deserialize, Serialize as DeriveSerialize};
use serde_json::{Map, Number, Value, json};

use super::image::{self, Labels};
use crate::engine::onnx::data::f16_to_f32;

/// The server's name in its metadata.
pub const SERVER_NAME: &str = "odin";

/// The protocol extensions odin supports, as `GET /v2` lists them.
/// `statistics` is left out on purpose: `perf_analyzer` polls the
/// statistics endpoint when a server lists it.
pub const EXTENSIONS: &[&str] = &[
    "binary_tensor_data",
    "classification",
    "model_configuration",
];

/// A tensor element type of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    /// `BOOL`: one byte, 0 or 1.
    Bool,
    /// `UINT8`.
    Uint8,
    /// `UINT16`.
    Uint16,
    /// `UINT32`.
    Uint32,
    /// `UINT64`.
    Uint64,
    /// `INT8`.
    Int8,
    /// `INT16`.
    Int16,
    /// `INT32`.
    Int32,
    /// `INT64`.
    Int64,
    /// `FP16`: IEEE 754 half precision.
    Fp16,
    /// `FP32`.
    Fp32,
    /// `FP64`.
    Fp64,
    /// `BYTES`: variable-length byte strings.
    Bytes,
    /// `BF16`: bfloat16 (a Triton addition).
    Bf16,
}

impl DataType {
    /// Every type, in the order of the protocol's table.
    pub const ALL: [DataType; 14] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
        DataType::Bf16,
    ];

    /// The protocol's name (`"FP32"`).
    pub fn name(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
            DataType::Bf16 => "BF16",
        }
    }

    /// The type named `name` (exact, upper case as the protocol spells it).
    pub fn parse(name: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Bytes per element; `None` for BYTES, whose elements vary.
    pub fn element_size(self) -> Option<usize> {
        match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => Some(1),
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 | DataType::Bf16 => Some(2),
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => Some(4),
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => Some(8),
            DataType::Bytes => None,
        }
    }

    /// The name in Triton's model configuration (`"TYPE_FP32"`; BYTES is
    /// `"TYPE_STRING"`).
    pub fn config_name(self) -> &'static str {
        match self {
            DataType::Bool => "TYPE_BOOL",
            DataType::Uint8 => "TYPE_UINT8",
            DataType::Uint16 => "TYPE_UINT16",
            DataType::Uint32 => "TYPE_UINT32",
            DataType::Uint64 => "TYPE_UINT64",
            DataType::Int8 => "TYPE_INT8",
            DataType::Int16 => "TYPE_INT16",
            DataType::Int32 => "TYPE_INT32",
            DataType::Int64 => "TYPE_INT64",
            DataType::Fp16 => "TYPE_FP16",
            DataType::Fp32 => "TYPE_FP32",
            DataType::Fp64 => "TYPE_FP64",
            DataType::Bytes => "TYPE_STRING",
            DataType::Bf16 => "TYPE_BF16",
        }
    }

    fn names() -> String {
        DataType::ALL.map(DataType::name).join(", ")
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DataType {
    type Err = ProtocolError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DataType::parse(s).ok_or_else(|| {
            ProtocolError::Invalid(format!(
                "unknown datatype {s:?}; the protocol has {}",
                DataType::names()
            ))
        })
    }
}

/// One input or output of a model as clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// Its name.
    pub name: String,
    /// Its element type.
    pub datatype: DataType,
    /// Its dimensions; -1 is a variable one (the batch dimension first when
    /// the model batches).
    pub shape: Vec<i64>,
}

impl TensorSpec {
    /// The protocol's `$metadata_tensor`.
    pub fn metadata_json(&self) -> Value {
        json!({"name": self.name, "datatype": self.datatype.name(), "shape": self.shape})
    }
}

/// A served model as clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelDescription {
    /// The model's name in URLs.
    pub name: String,
    /// Its version, if it has one.
    pub version: Option<String>,
    /// The platform string: `"odin_onnx"` for an ONNX file, `"odin"` for a
    /// built-in network.
    pub platform: String,
    /// Its inputs.
    pub inputs: Vec<TensorSpec>,
    /// Its outputs.
    pub outputs: Vec<TensorSpec>,
    /// The largest batch a request may carry; 0 when the model has no batch
    /// dimension. When above 0, every tensor's first dimension is the batch.
    pub max_batch_size: usize,
}

impl ModelDescription {
    /// Model metadata (`GET /v2/models/{m}`).
    pub fn metadata_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        if let Some(v) = &self.version {
            m.insert("versions".into(), json!([v]));
        }
        m.insert("platform".into(), json!(self.platform));
        m.insert(
            "inputs".into(),
            self.inputs.iter().map(TensorSpec::metadata_json).collect(),
        );
        m.insert(
            "outputs".into(),
            self.outputs.iter().map(TensorSpec::metadata_json).collect(),
        );
        Value::Object(m)
    }

    /// Model readiness (`GET /v2/models/{m}/ready`).
    pub fn ready_json(&self, ready: bool) -> Value {
        json!({"name": self.name, "ready": ready})
    }

    /// Triton's model configuration (`GET /v2/models/{m}/config`) with the
    /// fields of `model_config.proto` that `perf_analyzer` reads: `name`,
    /// `platform`, `max_batch_size`, and `input`/`output` with `name`,
    /// `data_type`, `dims` (without the batch dimension when
    /// `max_batch_size` > 0) and `is_shape_tensor`. No `dynamic_batching`
    /// section: requests are not merged into batches.
    pub fn config_json(&self) -> Value {
        let dims = |t: &TensorSpec| self.config_dims(t).to_vec();
        let inputs: Vec<Value> = self
            .inputs
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "data_type": t.datatype.config_name(),
                    "format": "FORMAT_NONE",
                    "dims": dims(t),
                    "is_shape_tensor": false,
                    "optional": false,
                })
            })
            .collect();
        let outputs: Vec<Value> = self
            .outputs
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "data_type": t.datatype.config_name(),
                    "dims": dims(t),
                    "is_shape_tensor": false,
                })
            })
            .collect();
        json!({
            "name": self.name,
            "platform": self.platform,
            "max_batch_size": self.max_batch_size,
            "input": inputs,
            "output": outputs,
        })
    }

    /// A tensor's dimensions as Triton's model configuration has them:
    /// without the batch dimension when the model batches.
    pub fn config_dims<'a>(&self, t: &'a TensorSpec) -> &'a [i64] {
        let skip = usize::from(self.max_batch_size > 0 && !t.shape.is_empty());
        &t.shape[skip..]
    }

    fn input(&self, name: &str) -> Option<&TensorSpec> {
        self.inputs.iter().find(|t| t.name == name)
    }
}

/// Server metadata (`GET /v2`): name, version and [`EXTENSIONS`].
pub fn server_metadata_json(version: &str) -> Value {
    json!({"name": SERVER_NAME, "version": version, "extensions": EXTENSIONS})
}

/// Server liveness (`GET /v2/health/live`).
pub fn server_live_json(live: bool) -> Value {
    json!({ "live": live })
}

/// Server readiness (`GET /v2/health/ready`).
pub fn server_ready_json(ready: bool) -> Value {
    json!({ "ready": ready })
}

/// Bounds on what one request may make odin allocate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Largest element count of any one tensor.
    pub max_elements: usize,
}

impl Default for Limits {
    /// 64 MiB bodies, 2^24 elements a tensor (a batch of 64 224x224 RGB
    /// images fits in both).
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 << 20,
            max_elements: 1 << 24,
        }
    }
}

/// Why a request could not be served, with the HTTP status and gRPC code
/// Triton gives each kind.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ProtocolError {
    /// The body is larger than [`Limits::max_body_bytes`].
    #[error("the request body has {size} bytes, more than the {max} allowed")]
    BodyTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// `Inference-Header-Content-Length` is larger than the body.
    #[error("Inference-Header-Content-Length is {header} but the body has only {body} bytes")]
    HeaderLength {
        /// The header's value.
        header: usize,
        /// The body's length.
        body: usize,
    },
    /// The JSON is malformed or does not have the protocol's form.
    #[error("malformed request JSON at line {line} column {column}{}: {message}",
        field.as_deref().map(|f| format!(" (in {f})")).unwrap_or_default())]
    Json {
        /// The field being read (`inputs[0].shape[1]`), if any.
        field: Option<String>,
        /// Line, from 1.
        line: usize,
        /// Column, from 1.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The request as a whole is invalid.
    #[error("{0}")]
    Invalid(String),
    /// An input is invalid.
    #[error("input {name:?}: {reason}")]
    Input {
        /// The input's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A requested output is invalid.
    #[error("output {name:?}: {reason}")]
    Output {
        /// The output's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// No model has this name (Triton's message).
    #[error("Request for unknown model: '{name}' is not found")]
    ModelNotFound {
        /// The name asked for.
        name: String,
    },
    /// The server cannot take the request now (queue full, shutting down).
    #[error("{0}")]
    Unavailable(String),
    /// The request's deadline passed before it ran.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The server failed.
    #[error("{0}")]
    Internal(String),
}

/// A gRPC status code, for the errors odin returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrpcCode {
    /// `INVALID_ARGUMENT` (3).
    InvalidArgument,
    /// `DEADLINE_EXCEEDED` (4).
    DeadlineExceeded,
    /// `NOT_FOUND` (5).
    NotFound,
    /// `INTERNAL` (13).
    Internal,
    /// `UNAVAILABLE` (14).
    Unavailable,
}

impl GrpcCode {
    /// The code's number in `google.rpc.Code`.
    pub fn code(self) -> i32 {
        match self {
            GrpcCode::InvalidArgument => 3,
            GrpcCode::DeadlineExceeded => 4,
            GrpcCode::NotFound => 5,
            GrpcCode::Internal => 13,
            GrpcCode::Unavailable => 14,
        }
    }
}

impl ProtocolError {
    /// The HTTP status, as Triton maps its error codes: invalid arguments
    /// 400, unknown model 404, unavailable 503 (an expired deadline too),
    /// internal 500.
    pub fn status(&self) -> u16 {
        match self.grpc_code() {
            GrpcCode::InvalidArgument => 400,
            GrpcCode::NotFound => 404,
            GrpcCode::Unavailable | GrpcCode::DeadlineExceeded => 503,
            GrpcCode::Internal => 500,
        }
    }

    /// The gRPC status code.
    pub fn grpc_code(&self) -> GrpcCode {
        match self {
            ProtocolError::BodyTooLarge { .. }
            | ProtocolError::HeaderLength { .. }
            | ProtocolError::Json { .. }
            | ProtocolError::Invalid(_)
            | ProtocolError::Input { .. }
            | ProtocolError::Output { .. } => GrpcCode::InvalidArgument,
            ProtocolError::ModelNotFound { .. } => GrpcCode::NotFound,
            ProtocolError::Unavailable(_) => GrpcCode::Unavailable,
            ProtocolError::DeadlineExceeded(_) => GrpcCode::DeadlineExceeded,
            ProtocolError::Internal(_) => GrpcCode::Internal,
        }
    }

    /// The error body, `{"error": "<message>"}`.
    pub fn json(&self) -> Value {
        json!({"error": self.to_string()})
    }
}

/// A tensor's elements, row-major, in their wire type.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// BOOL.
    Bool(Vec<bool>),
    /// UINT8.
    U8(Vec<u8>),
    /// UINT16.
    U16(Vec<u16>),
    /// UINT32.
    U32(Vec<u32>),
    /// UINT64.
    U64(Vec<u64>),
    /// INT8.
    I8(Vec<i8>),
    /// INT16.
    I16(Vec<i16>),
    /// INT32.
    I32(Vec<i32>),
    /// INT64.
    I64(Vec<i64>),
    /// FP16, as the raw bits.
    F16(Vec<u16>),
    /// FP32.
    F32(Vec<f32>),
    /// FP64.
    F64(Vec<f64>),
    /// BF16, as the raw bits.
    Bf16(Vec<u16>),
    /// BYTES: one byte string an element.
    Bytes(Vec<Vec<u8>>),
}

impl TensorData {
    /// The element type.
    pub fn datatype(&self) -> DataType {
        match self {
            TensorData::Bool(_) => DataType::Bool,
            TensorData::U8(_) => DataType::Uint8,
            TensorData::U16(_) => DataType::Uint16,
            TensorData::U32(_) => DataType::Uint32,
            TensorData::U64(_) => DataType::Uint64,
            TensorData::I8(_) => DataType::Int8,
            TensorData::I16(_) => DataType::Int16,
            TensorData::I32(_) => DataType::Int32,
            TensorData::I64(_) => DataType::Int64,
            TensorData::F16(_) => DataType::Fp16,
            TensorData::F32(_) => DataType::Fp32,
            TensorData::F64(_) => DataType::Fp64,
            TensorData::Bf16(_) => DataType::Bf16,
            TensorData::Bytes(_) => DataType::Bytes,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::Bool(v) => v.len(),
            TensorData::U8(v) => v.len(),
            TensorData::U16(v) | TensorData::F16(v) | TensorData::Bf16(v) => v.len(),
            TensorData::U32(v) => v.len(),
            TensorData::U64(v) => v.len(),
            TensorData::I8(v) => v.len(),
            TensorData::I16(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::Bytes(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as f32 for the engine: FP16 and BF16 widened, integers
    /// and FP64 rounded to the nearest f32, BOOL as 0 or 1. BYTES has no
    /// numeric value and is an error.
    pub fn to_f32(&self) -> Result<Vec<f32>, ProtocolError> {
        Ok(match self {
            TensorData::F32(v) => v.clone(),
            other => return other.clone().into_f32(),
        })
    }

    /// [`TensorData::to_f32`], reusing the buffer when the data is FP32.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "FP64 inputs of an FP32 model are narrowed to f32"
    )]
    pub fn into_f32(self) -> Result<Vec<f32>, ProtocolError> {
        Ok(match self {
            TensorData::F32(v) => v,
            TensorData::Bool(v) => v.into_iter().map(|b| f32::from(u8::from(b))).collect(),
            TensorData::U8(v) => v.into_iter().map(f32::from).collect(),
            TensorData::U16(v) => v.into_iter().map(f32::from).collect(),
            TensorData::U32(v) => v.into_iter().map(|x| x as f32).collect(),
            TensorData::U64(v) => v.into_iter().map(|x| x as f32).collect(),
            TensorData::I8(v) => v.into_iter().map(f32::from).collect(),
            TensorData::I16(v) => v.into_iter().map(f32::from).collect(),
            TensorData::I32(v) => v.into_iter().map(|x| x as f32).collect(),
            TensorData::I64(v) => v.into_iter().map(|x| x as f32).collect(),
            TensorData::F16(v) => v.into_iter().map(f16_to_f32).collect(),
            TensorData::Bf16(v) => v
                .into_iter()
                .map(|b| f32::from_bits(u32::from(b) << 16))
                .collect(),
            TensorData::F64(v) => v.into_iter().map(|x| x as f32).collect(),
            TensorData::Bytes(_) => {
                return Err(ProtocolError::Invalid(
                    "BYTES data has no numeric value to convert to FP32".into(),
                ));
            }
        })
    }

    /// The binary tensor data encoding: little-endian elements, BOOL as one
    /// byte, BYTES elements as a 4-byte little-endian length and the bytes.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        fn le<T: Copy, const N: usize>(v: &[T], f: fn(T) -> [u8; N]) -> Vec<u8> {
            v.iter().flat_map(|&x| f(x)).collect()
        }
        match self {
            TensorData::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
            TensorData::U8(v) => v.clone(),
            TensorData::U16(v) | TensorData::F16(v) | TensorData::Bf16(v) => {
                le(v, u16::to_le_bytes)
            }
            TensorData::U32(v) => le(v, u32::to_le_bytes),
            TensorData::U64(v) => le(v, u64::to_le_bytes),
            TensorData::I8(v) => le(v, i8::to_le_bytes),
            TensorData::I16(v) => le(v, i16::to_le_bytes),
            TensorData::I32(v) => le(v, i32::to_le_bytes),
            TensorData::I64(v) => le(v, i64::to_le_bytes),
            TensorData::F32(v) => le(v, f32::to_le_bytes),
            TensorData::F64(v) => le(v, f64::to_le_bytes),
            TensorData::Bytes(v) => {
                let mut out = Vec::with_capacity(v.iter().map(|e| e.len() + 4).sum());
                for e in v {
                    // A tensor's elements come from odin or from a request
                    // body bounded by `Limits`, far below 4 GiB each.
                    let len = u32::try_from(e.len()).unwrap_or(u32::MAX);
                    out.extend_from_slice(&len.to_le_bytes());
                    out.extend_from_slice(e);
                }
                out
            }
        }
    }
}

/// One input of a request.
#[derive(Clone, Debug, PartialEq)]
pub struct InputTensor {
    /// Its name.
    pub name: String,
    /// Its dimensions.
    pub shape: Vec<usize>,
    /// Its elements (as many as the shape says).
    pub data: TensorData,
    /// Its parameters, less `binary_data_size`.
    pub parameters: Map<String, Value>,
}

impl InputTensor {
    /// [`TensorData::to_f32`], naming the input on error.
    pub fn to_f32(&self) -> Result<Vec<f32>, ProtocolError> {
        self.data.to_f32().map_err(|e| ProtocolError::Input {
            name: self.name.clone(),
            reason: e.to_string(),
        })
    }
}

/// An output a request asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestedOutput {
    /// Its name.
    pub name: String,
    /// `parameters.binary_data`: whether to return it as binary data;
    /// `None` when not given (the request's default applies).
    pub binary_data: Option<bool>,
    /// `parameters.classification`: return the top K classes instead of
    /// the tensor.
    pub classification: Option<usize>,
    /// Its other parameters.
    pub parameters: Map<String, Value>,
}

/// A parsed infer request.
#[derive(Clone, Debug, PartialEq)]
pub struct InferRequest {
    /// The request's `id`, echoed in the response.
    pub id: Option<String>,
    /// The inputs, in request order.
    pub inputs: Vec<InputTensor>,
    /// The outputs asked for; empty means all, as the model lists them.
    pub outputs: Vec<RequestedOutput>,
    /// The request-level `binary_data_output`: outputs are returned as
    /// binary unless their own `binary_data` says otherwise. True for a raw
    /// binary request.
    pub binary_output_default: bool,
    /// The `timeout` parameter (microseconds on the wire); 0 means none.
    pub timeout: Option<Duration>,
    /// The `priority` parameter.
    pub priority: Option<u64>,
    /// The other request-level parameters (`sequence_id`, custom ones).
    pub parameters: Map<String, Value>,
}

impl InferRequest {
    /// Whether the output `name` goes back as binary data: its own
    /// `binary_data` if it has one, else the request's
    /// `binary_data_output`.
    pub fn wants_binary(&self, name: &str) -> bool {
        self.outputs
            .iter()
            .find(|o| o.name == name)
            .and_then(|o| o.binary_data)
            .unwrap_or(self.binary_output_default)
    }

    /// Whether the output `name` is to be returned (all are when the
    /// request names none).
    pub fn selects(&self, name: &str) -> bool {
        self.outputs.is_empty() || self.outputs.iter().any(|o| o.name == name)
    }

    /// The top-K count asked for output `name`, if any.
    pub fn classification(&self, name: &str) -> Option<usize> {
        self.outputs
            .iter()
            .find(|o| o.name == name)
            .and_then(|o| o.classification)
    }

    /// The input `name`.
    pub fn input(&self, name: &str) -> Option<&InputTensor> {
        self.inputs.iter().find(|i| i.name == name)
    }

    /// The batch size: the first dimension of the inputs when the model
    /// batches, else 1. Meaningful after [`InferRequest::check`].
    pub fn batch_size(&self, model: &ModelDescription) -> usize {
        if model.max_batch_size == 0 {
            return 1;
        }
        self.inputs
            .first()
            .and_then(|i| i.shape.first().copied())
            .unwrap_or(1)
    }

    /// Checks the request against the model: every input known and
    /// present once, its datatype the model's (any numeric type is accepted
    /// where the model takes FP32, converted by [`TensorData::to_f32`]),
    /// its rank and fixed dimensions the model's, the batch dimension
    /// within 1..=`max_batch_size` and the same for every input, and every
    /// requested output known.
    pub fn check(&self, model: &ModelDescription) -> Result<(), ProtocolError> {
        let input_err = |name: &str, reason: String| ProtocolError::Input {
            name: name.to_string(),
            reason,
        };
        let mut batch: Option<(usize, &str)> = None;
        for input in &self.inputs {
            let spec = model.input(&input.name).ok_or_else(|| {
                input_err(
                    &input.name,
                    format!(
                        "model {:?} has no such input; it takes {}",
                        model.name,
                        names(model.inputs.iter().map(|t| &t.name))
                    ),
                )
            })?;
            let dt = input.data.datatype();
            let numeric_for_fp32 = spec.datatype == DataType::Fp32 && dt != DataType::Bytes;
            if dt != spec.datatype && !numeric_for_fp32 {
                return Err(input_err(
                    &input.name,
                    format!("datatype {dt} does not match the model's {}", spec.datatype),
                ));
            }
            let shape_err = || {
                input_err(
                    &input.name,
                    format!(
                        "shape {:?} does not match the model's {:?}",
                        input.shape, spec.shape
                    ),
                )
            };
            if input.shape.len() != spec.shape.len() {
                return Err(shape_err());
            }
            for (i, (&got, &want)) in input.shape.iter().zip(&spec.shape).enumerate() {
                if i == 0 && model.max_batch_size > 0 {
                    if got == 0 || got > model.max_batch_size {
                        return Err(input_err(
                            &input.name,
                            format!(
                                "batch size {got} is outside 1..={} for model {:?}",
                                model.max_batch_size, model.name
                            ),
                        ));
                    }
                    match batch {
                        Some((b, other)) if b != got => {
                            return Err(input_err(
                                &input.name,
                                format!("batch size {got} differs from input {other:?}'s {b}"),
                            ));
                        }
                        _ => batch = Some((got, &input.name)),
                    }
                } else if want >= 0 && usize::try_from(want).ok() != Some(got) {
                    return Err(shape_err());
                }
            }
        }
        for spec in &model.inputs {
            if self.input(&spec.name).is_none() {
                return Err(input_err(
                    &spec.name,
                    format!("missing; model {:?} needs it", model.name),
                ));
            }
        }
        for out in &self.outputs {
            if !model.outputs.iter().any(|t| t.name == out.name) {
                return Err(ProtocolError::Output {
                    name: out.name.clone(),
                    reason: format!(
                        "model {:?} has no such output; it has {}",
                        model.name,
                        names(model.outputs.iter().map(|t| &t.name))
                    ),
                });
            }
        }
        Ok(())
    }
}

fn names<'a>(it: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<String> = it.map(|n| format!("{n:?}")).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Parses an infer request body.
///
/// `header_length` is the `Inference-Header-Content-Length` header:
/// `None` when absent (the body is JSON only), `Some(n)` for a JSON header
/// of `n` bytes followed by the inputs' binary data in request order, and
/// `Some(0)` for a raw binary request, whose whole body is the one input of
/// `model` (as a batch of 1 when the model batches; all outputs returned as
/// binary). `model` is needed only for a raw binary request.
pub fn parse_infer_request(
    body: &[u8],
    header_length: Option<usize>,
    limits: &Limits,
    model: Option<&ModelDescription>,
) -> Result<InferRequest, ProtocolError> {
    if body.len() > limits.max_body_bytes {
        return Err(ProtocolError::BodyTooLarge {
            size: body.len(),
            max: limits.max_body_bytes,
        });
    }
    let (head, binary) = match header_length {
        Some(0) => return parse_raw(body, limits, model),
        Some(h) if h > body.len() => {
            return Err(ProtocolError::HeaderLength {
                header: h,
                body: body.len(),
            });
        }
        Some(h) => body.split_at(h),
        None => (body, &[][..]),
    };
    let json = parse_json(head, limits.max_elements)?;
    build_request(json, head.len(), binary, header_length.is_some(), limits)
}

/// The request JSON as it arrives; unknown fields are ignored.
#[derive(Deserialize)]
struct RequestJson {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    inputs: Vec<InputJson>,
    #[serde(default)]
    outputs: Option<Vec<OutputJson>>,
}

#[derive(Deserialize)]
struct InputJson {
    name: String,
    shape: Vec<u64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default)]
    data: Option<JsonData>,
}

#[derive(Deserialize)]
struct OutputJson {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

thread_local! {
    /// The element cap for the `data` array being read. The derived
    /// deserializers cannot carry it down to [`JsonData`], so
    /// [`parse_json`] sets it for the duration of one parse.
    static JSON_ELEMENT_CAP: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Restores the previous element cap when a parse ends.
struct CapGuard(usize);

impl CapGuard {
    fn set(cap: usize) -> CapGuard {
        CapGuard(JSON_ELEMENT_CAP.replace(cap))
    }
}

impl Drop for CapGuard {
    fn drop(&mut self) {
        JSON_ELEMENT_CAP.set(self.0);
    }
}

fn parse_json(head: &[u8], max_elements: usize) -> Result<RequestJson, ProtocolError> {
    let _cap = CapGuard::set(max_elements);
    let mut de = serde_json::Deserializer::from_slice(head);
    let req: RequestJson = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        json_error((field != ".").then_some(field), e.into_inner())
    })?;
    de.end().map_err(|e| json_error(None, e))?;
    Ok(req)
}

fn json_error(field: Option<String>, e: serde_json::Error) -> ProtocolError {
    let (line, column) = (e.line(), e.column());
    let text = e.to_string();
    let suffix = format!(" at line {line} column {column}");
    let message = text.strip_suffix(&suffix).unwrap_or(&text).to_string();
    ProtocolError::Json {
        field,
        line,
        column,
        message,
    }
}

/// A JSON `data` array, nested or flat, flattened in row-major order.
#[derive(Debug, Default)]
enum JsonData {
    #[default]
    Empty,
    Numbers(Vec<Number>),
    Bools(Vec<bool>),
    Strings(Vec<String>),
}

impl JsonData {
    fn len(&self) -> usize {
        match self {
            JsonData::Empty => 0,
            JsonData::Numbers(v) => v.len(),
            JsonData::Bools(v) => v.len(),
            JsonData::Strings(v) => v.len(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            JsonData::Empty => "nothing",
            JsonData::Numbers(_) => "numbers",
            JsonData::Bools(_) => "booleans",
            JsonData::Strings(_) => "strings",
        }
    }
}

/// Appends the elements of one JSON value (a scalar or a nested array) to
/// a [`JsonData`], refusing to grow past the cap.
struct Flatten<'a> {
    out: &'a mut JsonData,
    cap: usize,
}

impl Flatten<'_> {
    fn room<E: de::Error>(&self) -> Result<(), E> {
        if self.out.len() >= self.cap {
            return Err(E::custom(format!(
                "data has more than {} elements, the most a tensor may have",
                self.cap
            )));
        }
        Ok(())
    }

    fn mixed<E: de::Error>(&self, got: &str) -> E {
        E::custom(format!("data mixes {} and {got}", self.out.kind()))
    }

    fn number<E: de::Error>(self, n: Number) -> Result<(), E> {
        self.room()?;
        match self.out {
            JsonData::Empty => *self.out = JsonData::Numbers(vec![n]),
            JsonData::Numbers(v) => v.push(n),
            _ => return Err(self.mixed("numbers")),
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number, a boolean, a string or an array of them")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.number(Number::from(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.number(Number::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        let n = Number::from_f64(v).ok_or_else(|| E::custom("data holds a non-finite number"))?;
        self.number(n)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.room()?;
        match self.out {
            JsonData::Empty => *self.out = JsonData::Bools(vec![v]),
            JsonData::Bools(b) => b.push(v),
            _ => return Err(self.mixed("booleans")),
        }
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.room()?;
        match self.out {
            JsonData::Empty => *self.out = JsonData::Strings(vec![v.to_string()]),
            JsonData::Strings(s) => s.push(v.to_string()),
            _ => return Err(self.mixed("strings")),
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let cap = self.cap;
        while seq
            .next_element_seed(Flatten {
                out: &mut *self.out,
                cap,
            })?
            .is_some()
        {}
        Ok(())
    }
}

/// The top of `data`: an array (nested or flat).
struct DataVisitor;

impl<'de> Visitor<'de> for DataVisitor {
    type Value = JsonData;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of tensor elements")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<JsonData, A::Error> {
        let mut out = JsonData::Empty;
        let cap = JSON_ELEMENT_CAP.get();
        Flatten { out: &mut out, cap }.visit_seq(seq)?;
        Ok(out)
    }
}

impl<'de> Deserialize<'de> for JsonData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(DataVisitor)
    }
}

/// The element count of `shape`, checked for overflow and against the cap.
/// The element count of `shape`, refused when above `max` (or overflowing)
/// before anything is allocated for it.
pub fn element_count(shape: &[usize], max: usize) -> Result<usize, String> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= max)
        .ok_or_else(|| {
            format!("shape {shape:?} has more than {max} elements, the most a tensor may have")
        })
}

fn build_request(
    json: RequestJson,
    header_len: usize,
    binary: &[u8],
    has_header: bool,
    limits: &Limits,
) -> Result<InferRequest, ProtocolError> {
    let mut req = InferRequest {
        id: json.id,
        inputs: Vec::with_capacity(json.inputs.len()),
        outputs: Vec::new(),
        binary_output_default: false,
        timeout: None,
        priority: None,
        parameters: Map::new(),
    };
    for (key, value) in json.parameters.unwrap_or_default() {
        let bad = |what: &str| {
            ProtocolError::Invalid(format!("parameter {key:?} must be {what}, not {value}"))
        };
        match key.as_str() {
            "binary_data_output" => {
                req.binary_output_default = value.as_bool().ok_or_else(|| bad("a boolean"))?;
            }
            "timeout" => {
                let us = value
                    .as_u64()
                    .ok_or_else(|| bad("a whole number of microseconds"))?;
                req.timeout = (us > 0).then(|| Duration::from_micros(us));
            }
            "priority" => {
                req.priority = Some(value.as_u64().ok_or_else(|| bad("a whole number"))?);
            }
            _ => {
                req.parameters.insert(key, value);
            }
        }
    }
    if json.inputs.is_empty() {
        return Err(ProtocolError::Invalid("the request has no inputs".into()));
    }

    let mut seen = HashSet::new();
    let mut offset = 0usize;
    for input in json.inputs {
        let name = input.name;
        let err = |reason: String| ProtocolError::Input {
            name: name.clone(),
            reason,
        };
        if !seen.insert(name.clone()) {
            return Err(err("given twice".into()));
        }
        let dt = DataType::parse(&input.datatype).ok_or_else(|| {
            err(format!(
                "unknown datatype {:?}; the protocol has {}",
                input.datatype,
                DataType::names()
            ))
        })?;
        let shape: Vec<usize> = input
            .shape
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<_, _>>()
            .map_err(|_| err(format!("shape {:?} does not fit in memory", input.shape)))?;
        let count = element_count(&shape, limits.max_elements).map_err(&err)?;
        let mut parameters = input.parameters.unwrap_or_default();
        if parameters.contains_key("shared_memory_region") {
            return Err(err(
                "shared memory is not supported; send the data in the body".into(),
            ));
        }
        let binary_size = match parameters.remove("binary_data_size") {
            None => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                err(format!(
                    "parameter binary_data_size must be a whole number, not {v}"
                ))
            })?),
        };
        let data = match (binary_size, input.data) {
            (Some(_), Some(_)) => {
                return Err(err("has both data and binary_data_size; give one".into()));
            }
            (None, None) => {
                return Err(err(
                    "has no data: give data, or binary_data_size and the bytes after the JSON"
                        .into(),
                ));
            }
            (None, Some(d)) => from_json(d, dt, &shape, count).map_err(&err)?,
            (Some(size), None) => {
                if !has_header {
                    return Err(err(
                        "binary_data_size needs the Inference-Header-Content-Length header \
                         giving the JSON's length"
                            .into(),
                    ));
                }
                let left = binary.len() - offset;
                let size = usize::try_from(size)
                    .ok()
                    .filter(|&s| s <= left)
                    .ok_or_else(|| {
                        err(format!(
                            "binary_data_size {size} at byte {} runs past the end of the \
                             {}-byte body ({left} bytes left)",
                            header_len + offset,
                            header_len + binary.len()
                        ))
                    })?;
                let bytes = &binary[offset..offset + size];
                let data = from_binary(bytes, dt, &shape, count).map_err(&err)?;
                offset += size;
                data
            }
        };
        req.inputs.push(InputTensor {
            name,
            shape,
            data,
            parameters,
        });
    }
    if offset != binary.len() {
        return Err(ProtocolError::Invalid(format!(
            "{} bytes of binary data follow the last input's, from byte {}",
            binary.len() - offset,
            header_len + offset
        )));
    }

    let mut seen = HashSet::new();
    for output in json.outputs.unwrap_or_default() {
        let name = output.name;
        let err = |reason: String| ProtocolError::Output {
            name: name.clone(),
            reason,
        };
        if !seen.insert(name.clone()) {
            return Err(err("asked for twice".into()));
        }
        let mut parameters = output.parameters.unwrap_or_default();
        if parameters.contains_key("shared_memory_region") {
            return Err(err("shared memory is not supported".into()));
        }
        let binary_data =
            match parameters.remove("binary_data") {
                None => None,
                Some(v) => Some(v.as_bool().ok_or_else(|| {
                    err(format!("parameter binary_data must be a boolean, not {v}"))
                })?),
            };
        let classification = match parameters.remove("classification") {
            None => None,
            Some(v) => {
                let k = v.as_u64().and_then(|k| usize::try_from(k).ok());
                let k = k.ok_or_else(|| {
                    err(format!(
                        "parameter classification must be a whole number, not {v}"
                    ))
                })?;
                (k > 0).then_some(k)
            }
        };
        req.outputs.push(RequestedOutput {
            name,
            binary_data,
            classification,
            parameters,
        });
    }
    Ok(req)
}

/// Converts JSON elements to `dt`, checking their count against the shape.
#[allow(
    clippy::cast_possible_truncation,
    reason = "FP64 inputs of an FP32 model are narrowed to f32"
)]
fn from_json(
    data: JsonData,
    dt: DataType,
    shape: &[usize],
    count: usize,
) -> Result<TensorData, String> {
    if data.len() != count {
        return Err(format!(
            "shape {shape:?} has {count} elements but data has {}",
            data.len()
        ));
    }
    let wrong = |data: &JsonData| {
        format!(
            "datatype {dt} takes {} in JSON data, not {}",
            match dt {
                DataType::Bool => "booleans",
                DataType::Bytes => "strings",
                _ => "numbers",
            },
            data.kind()
        )
    };
    fn ints<T: TryFrom<u64> + TryFrom<i64>>(
        nums: &[Number],
        dt: DataType,
    ) -> Result<Vec<T>, String> {
        nums.iter()
            .enumerate()
            .map(|(i, n)| {
                let v = match (n.as_u64(), n.as_i64()) {
                    (Some(u), _) => T::try_from(u).ok(),
                    (None, Some(s)) => T::try_from(s).ok(),
                    (None, None) => None,
                };
                v.ok_or_else(|| format!("data element {i} ({n}) is not a {dt} value"))
            })
            .collect()
    }
    let nums = match data {
        JsonData::Empty => &[][..],
        JsonData::Numbers(ref v) => v.as_slice(),
        JsonData::Bools(b) if dt == DataType::Bool => return Ok(TensorData::Bool(b)),
        JsonData::Strings(s) if dt == DataType::Bytes => {
            return Ok(TensorData::Bytes(
                s.into_iter().map(String::into_bytes).collect(),
            ));
        }
        other => return Err(wrong(&other)),
    };
    let float = |n: &Number| n.as_f64().unwrap_or(f64::NAN);
    Ok(match dt {
        DataType::Bool => {
            if nums.is_empty() {
                TensorData::Bool(Vec::new())
            } else {
                return Err(wrong(&data));
            }
        }
        DataType::Bytes => {
            if nums.is_empty() {
                TensorData::Bytes(Vec::new())
            } else {
                return Err(wrong(&data));
            }
        }
        DataType::Uint8 => TensorData::U8(ints(nums, dt)?),
        DataType::Uint16 => TensorData::U16(ints(nums, dt)?),
        DataType::Uint32 => TensorData::U32(ints(nums, dt)?),
        DataType::Uint64 => TensorData::U64(ints(nums, dt)?),
        DataType::Int8 => TensorData::I8(ints(nums, dt)?),
        DataType::Int16 => TensorData::I16(ints(nums, dt)?),
        DataType::Int32 => TensorData::I32(ints(nums, dt)?),
        DataType::Int64 => TensorData::I64(ints(nums, dt)?),
        DataType::Fp32 => TensorData::F32(nums.iter().map(|n| float(n) as f32).collect()),
        DataType::Fp64 => TensorData::F64(nums.iter().map(float).collect()),
        DataType::Fp16 | DataType::Bf16 => {
            return Err(format!(
                "{dt} cannot be sent as JSON numbers; send it as binary data (binary_data_size)"
            ));
        }
    })
}

/// Decodes a tensor of `shape` sent as little-endian bytes (BYTES elements
/// length-prefixed), as gRPC's `raw_input_contents` carry it; the shape is
/// bounded by `limits` before anything is allocated.
pub fn decode_raw_tensor(
    bytes: &[u8],
    dt: DataType,
    shape: &[usize],
    limits: &Limits,
) -> Result<TensorData, String> {
    let count = element_count(shape, limits.max_elements)?;
    from_binary(bytes, dt, shape, count)
}

/// Decodes one input's binary data, whose length the caller has checked
/// against the body; `count` is the shape's element count.
fn from_binary(
    bytes: &[u8],
    dt: DataType,
    shape: &[usize],
    count: usize,
) -> Result<TensorData, String> {
    let Some(size) = dt.element_size() else {
        return decode_bytes(bytes, count);
    };
    let expected = count.checked_mul(size);
    if expected != Some(bytes.len()) {
        return Err(format!(
            "shape {shape:?} of {dt} takes {} bytes but binary_data_size is {}",
            expected.map_or_else(|| "more than 2^64".to_string(), |e| e.to_string()),
            bytes.len()
        ));
    }
    decode_fixed(bytes, dt)
}

/// Decodes little-endian elements of a fixed-size type; `bytes` is a whole
/// number of elements.
fn decode_fixed(bytes: &[u8], dt: DataType) -> Result<TensorData, String> {
    fn le<T, const N: usize>(bytes: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
        bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                f(a)
            })
            .collect()
    }
    Ok(match dt {
        DataType::Bool => TensorData::Bool(
            bytes
                .iter()
                .enumerate()
                .map(|(i, &b)| match b {
                    0 => Ok(false),
                    1 => Ok(true),
                    _ => Err(format!("BOOL element {i} is byte {b}, not 0 or 1")),
                })
                .collect::<Result<_, _>>()?,
        ),
        DataType::Uint8 => TensorData::U8(bytes.to_vec()),
        DataType::Uint16 => TensorData::U16(le(bytes, u16::from_le_bytes)),
        DataType::Uint32 => TensorData::U32(le(bytes, u32::from_le_bytes)),
        DataType::Uint64 => TensorData::U64(le(bytes, u64::from_le_bytes)),
        DataType::Int8 => TensorData::I8(le(bytes, i8::from_le_bytes)),
        DataType::Int16 => TensorData::I16(le(bytes, i16::from_le_bytes)),
        DataType::Int32 => TensorData::I32(le(bytes, i32::from_le_bytes)),
        DataType::Int64 => TensorData::I64(le(bytes, i64::from_le_bytes)),
        DataType::Fp16 => TensorData::F16(le(bytes, u16::from_le_bytes)),
        DataType::Bf16 => TensorData::Bf16(le(bytes, u16::from_le_bytes)),
        DataType::Fp32 => TensorData::F32(le(bytes, f32::from_le_bytes)),
        DataType::Fp64 => TensorData::F64(le(bytes, f64::from_le_bytes)),
        DataType::Bytes => return decode_bytes(bytes, bytes.len()),
    })
}

/// Decodes `count` BYTES elements, each a 4-byte little-endian length and
/// that many bytes, which must fill `bytes` exactly.
fn decode_bytes(bytes: &[u8], count: usize) -> Result<TensorData, String> {
    if count > bytes.len() / 4 {
        return Err(format!(
            "{count} BYTES elements need at least {} bytes, binary_data_size is {}",
            count.saturating_mul(4),
            bytes.len()
        ));
    }
    let mut out = Vec::with_capacity(count);
    let mut at = 0usize;
    for i in 0..count {
        let Some(len) = bytes.get(at..at + 4) else {
            return Err(format!(
                "BYTES element {i} has no 4-byte length at byte {at} of the tensor"
            ));
        };
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let start = at + 4;
        let left = bytes.len() - start;
        if len > left {
            return Err(format!(
                "BYTES element {i} declares {len} bytes at byte {at} of the tensor; {left} are left"
            ));
        }
        out.push(bytes[start..start + len].to_vec());
        at = start + len;
    }
    if at != bytes.len() {
        return Err(format!(
            "the {count} BYTES elements take {at} bytes but binary_data_size is {}",
            bytes.len()
        ));
    }
    Ok(TensorData::Bytes(out))
}

/// A raw binary request: the body is the model's only input.
fn parse_raw(
    body: &[u8],
    limits: &Limits,
    model: Option<&ModelDescription>,
) -> Result<InferRequest, ProtocolError> {
    let model = model.ok_or_else(|| {
        ProtocolError::Invalid(
            "a raw binary request (Inference-Header-Content-Length: 0) needs the model's \
             description"
                .into(),
        )
    })?;
    let [spec] = model.inputs.as_slice() else {
        return Err(ProtocolError::Invalid(format!(
            "a raw binary request (Inference-Header-Content-Length: 0) is for a model with \
             one input; {:?} has {}",
            model.name,
            model.inputs.len()
        )));
    };
    let err = |reason: String| ProtocolError::Input {
        name: spec.name.clone(),
        reason,
    };
    // The batch dimension is 1; other variable dimensions are unknown.
    let dims: Vec<Option<usize>> = spec
        .shape
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            if i == 0 && model.max_batch_size > 0 {
                Some(1)
            } else {
                usize::try_from(d).ok()
            }
        })
        .collect();
    let (shape, data) = if spec.datatype == DataType::Bytes {
        if dims.iter().any(|d| d.is_some_and(|d| d != 1)) {
            return Err(err(format!(
                "a raw binary request for BYTES needs shape [1]; the model's is {:?}",
                spec.shape
            )));
        }
        (vec![1; dims.len()], TensorData::Bytes(vec![body.to_vec()]))
    } else {
        let variable = dims.iter().filter(|d| d.is_none()).count();
        if variable > 1 {
            return Err(err(format!(
                "a raw binary request needs at most one variable dimension; the model's shape \
                 is {:?}",
                spec.shape
            )));
        }
        let size = spec.datatype.element_size().unwrap_or(1);
        let fixed: Vec<usize> = dims.iter().flatten().copied().collect();
        let per = element_count(&fixed, limits.max_elements)
            .ok()
            .and_then(|n| n.checked_mul(size))
            .ok_or_else(|| err(format!("shape {:?} is too large", spec.shape)))?;
        let var = match (variable, per) {
            (0, _) if body.len() == per => 0,
            (1, 0) if body.is_empty() => 0,
            (1, p) if p > 0 && body.len().is_multiple_of(p) => body.len() / p,
            _ => {
                return Err(err(format!(
                    "a raw binary body of {} bytes does not fill shape {:?} of {}",
                    body.len(),
                    spec.shape,
                    spec.datatype
                )));
            }
        };
        let shape: Vec<usize> = dims.iter().map(|d| d.unwrap_or(var)).collect();
        element_count(&shape, limits.max_elements).map_err(&err)?;
        (shape, decode_fixed(body, spec.datatype).map_err(&err)?)
    };
    Ok(InferRequest {
        id: None,
        inputs: vec![InputTensor {
            name: spec.name.clone(),
            shape,
            data,
            parameters: Map::new(),
        }],
        outputs: Vec::new(),
        binary_output_default: true,
        timeout: None,
        priority: None,
        parameters: Map::new(),
    })
}

/// One output of a response.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputTensor {
    /// Its name.
    pub name: String,
    /// Its dimensions.
    pub shape: Vec<usize>,
    /// Its elements.
    pub data: TensorData,
}

/// An infer response.
#[derive(Clone, Debug, PartialEq)]
pub struct InferResponse {
    /// The model that answered.
    pub model_name: String,
    /// Its version, if it has one.
    pub model_version: Option<String>,
    /// The request's `id`, if it had one.
    pub id: Option<String>,
    /// The outputs, in the order they are written.
    pub outputs: Vec<OutputTensor>,
}

#[derive(DeriveSerialize)]
struct ResponseHeader<'a> {
    model_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<OutputHeader<'a>>,
}

#[derive(DeriveSerialize)]
struct OutputHeader<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<JsonElements<'a>>,
}

#[derive(DeriveSerialize)]
struct BinarySize {
    binary_data_size: usize,
}

/// A tensor's elements as a flat JSON array: f32 in their shortest exact
/// form (non-finite values, which JSON lacks, as `null`), FP16 and BF16 as
/// their f32 values, BYTES as strings (invalid UTF-8 replaced).
struct JsonElements<'a>(&'a TensorData);

impl Serialize for JsonElements<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            TensorData::Bool(v) => s.collect_seq(v),
            TensorData::U8(v) => s.collect_seq(v),
            TensorData::U16(v) => s.collect_seq(v),
            TensorData::U32(v) => s.collect_seq(v),
            TensorData::U64(v) => s.collect_seq(v),
            TensorData::I8(v) => s.collect_seq(v),
            TensorData::I16(v) => s.collect_seq(v),
            TensorData::I32(v) => s.collect_seq(v),
            TensorData::I64(v) => s.collect_seq(v),
            TensorData::F32(v) => s.collect_seq(v),
            TensorData::F64(v) => s.collect_seq(v),
            TensorData::F16(v) => s.collect_seq(v.iter().map(|&h| f16_to_f32(h))),
            TensorData::Bf16(v) => {
                s.collect_seq(v.iter().map(|&b| f32::from_bits(u32::from(b) << 16)))
            }
            TensorData::Bytes(v) => s.collect_seq(v.iter().map(|e| String::from_utf8_lossy(e))),
        }
    }
}

/// Encodes a response body. `binary(name)` says whether output `name` goes
/// as binary data (see [`InferRequest::wants_binary`]); such an output has
/// `parameters.binary_data_size` in the JSON and its bytes after it, in
/// output order. Returns the body and, when any output is binary, the JSON
/// header's length for `Inference-Header-Content-Length`.
pub fn encode_infer_response(
    resp: &InferResponse,
    binary: &dyn Fn(&str) -> bool,
) -> (Vec<u8>, Option<usize>) {
    let mut tail = Vec::new();
    let mut any_binary = false;
    let outputs = resp
        .outputs
        .iter()
        .map(|o| {
            let (parameters, data) = if binary(&o.name) {
                any_binary = true;
                let bytes = o.data.to_le_bytes();
                let size = bytes.len();
                tail.extend_from_slice(&bytes);
                (
                    Some(BinarySize {
                        binary_data_size: size,
                    }),
                    None,
                )
            } else {
                (None, Some(JsonElements(&o.data)))
            };
            OutputHeader {
                name: &o.name,
                datatype: o.data.datatype().name(),
                shape: &o.shape,
                parameters,
                data,
            }
        })
        .collect();
    let header = ResponseHeader {
        model_name: &resp.model_name,
        model_version: resp.model_version.as_deref(),
        id: resp.id.as_deref(),
        outputs,
    };
    let mut body = serde_json::to_vec(&header).unwrap_or_else(|e| {
        // Serializing these plain structs into memory cannot fail; keep a
        // valid body should it ever.
        serde_json::to_vec(&ProtocolError::Internal(e.to_string()).json()).unwrap_or_default()
    });
    if !any_binary {
        return (body, None);
    }
    let len = body.len();
    body.extend_from_slice(&tail);
    (body, Some(len))
}

/// Triton's classification extension: replaces a numeric output by its
/// top `k` classes, a BYTES tensor of [`image::classify`]'s
/// `"value:index[:label]"` strings, best first. When `batched`, the first
/// dimension is the batch and the result has shape
/// `[batch, min(k, classes)]`, else `[min(k, classes)]`.
pub fn classify(
    output: &OutputTensor,
    k: usize,
    batched: bool,
    labels: Option<&Labels>,
) -> Result<OutputTensor, ProtocolError> {
    let values = output.data.to_f32().map_err(|e| ProtocolError::Output {
        name: output.name.clone(),
        reason: e.to_string(),
    })?;
    let (batch, dims) = match output.shape.split_first() {
        Some((&b, rest)) if batched => (Some(b), rest),
        _ => (None, &output.shape[..]),
    };
    let row: usize = dims.iter().product();
    let rows = batch.unwrap_or(1);
    if rows.checked_mul(row) != Some(values.len()) {
        return Err(ProtocolError::Internal(format!(
            "output {:?}: shape {:?} does not match its {} elements",
            output.name,
            output.shape,
            values.len()
        )));
    }
    let take = k.min(row);
    let mut strings = Vec::with_capacity(rows * take);
    for r in 0..rows {
        let scores = &values[r * row..(r + 1) * row];
        strings.extend(
            image::classify(scores, k, labels)
                .into_iter()
                .map(String::into_bytes),
        );
    }
    let shape = match batch {
        Some(b) => vec![b, take],
        None => vec![take],
    };
    Ok(OutputTensor {
        name: output.name.clone(),
        shape,
        data: TensorData::Bytes(strings),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> Limits {
        Limits::default()
    }

    fn parse(body: &[u8], header: Option<usize>) -> Result<InferRequest, ProtocolError> {
        parse_infer_request(body, header, &limits(), None)
    }

    fn reason(e: &ProtocolError) -> String {
        e.to_string()
    }

    // Golden bodies built by tritonclient.http 2.41.0 (InferInput,
    // InferRequestedOutput, _utils._get_inference_request), e.g.:
    //
    //   a = InferInput("input", [1, 3], "FP32")
    //   a.set_data_from_numpy(np.array([[1.5, -2.0, 0.25]], dtype=np.float32))
    //   _get_inference_request([a], "7",
    //       [InferRequestedOutput("output", binary_data=True, class_count=2)],
    //       0, False, False, 0, None, None)
    //
    // The returned (body, json_size) are GOLDEN_* and the header length.

    /// FP32 [1,3] as binary; output "output" binary, top-2 classes; id "7".
    const GOLDEN_FP32_BINARY: &[u8] = b"{\"id\":\"7\",\"inputs\":[{\"name\":\"input\",\"shape\":[1,3],\"datatype\":\"FP32\",\"parameters\":{\"binary_data_size\":12}}],\"outputs\":[{\"name\":\"output\",\"parameters\":{\"classification\":2,\"binary_data\":true}}]}\x00\x00\xc0?\x00\x00\x00\xc0\x00\x00\x80>";
    const GOLDEN_FP32_BINARY_HEADER: usize = 190;

    /// FP32 [2,2] as JSON (`binary_data=False`); output "output" as JSON.
    const GOLDEN_FP32_JSON: &[u8] = b"{\"inputs\":[{\"name\":\"input\",\"shape\":[2,2],\"datatype\":\"FP32\",\"data\":[1.0,2.0,3.0,4.5]}],\"outputs\":[{\"name\":\"output\",\"parameters\":{\"binary_data\":false}}]}";

    /// BYTES [2] `[b"ab", b"xyz"]` as binary; no outputs named, so
    /// `binary_data_output: true`.
    const GOLDEN_BYTES_BINARY: &[u8] = b"{\"inputs\":[{\"name\":\"img\",\"shape\":[2],\"datatype\":\"BYTES\",\"parameters\":{\"binary_data_size\":13}}],\"parameters\":{\"binary_data_output\":true}}\x02\x00\x00\x00ab\x03\x00\x00\x00xyz";
    const GOLDEN_BYTES_BINARY_HEADER: usize = 136;

    /// UINT8 [1,4] `[0,1,128,255]` and FP16 [3] `[1,-2,0.5]` as binary;
    /// id "r1", priority 3, timeout 2500, custom parameter foo="bar".
    const GOLDEN_U8_F16: &[u8] = b"{\"id\":\"r1\",\"inputs\":[{\"name\":\"u8\",\"shape\":[1,4],\"datatype\":\"UINT8\",\"parameters\":{\"binary_data_size\":4}},{\"name\":\"h\",\"shape\":[3],\"datatype\":\"FP16\",\"parameters\":{\"binary_data_size\":6}}],\"parameters\":{\"priority\":3,\"timeout\":2500,\"binary_data_output\":true,\"foo\":\"bar\"}}\x00\x01\x80\xff\x00<\x00\xc0\x008";
    const GOLDEN_U8_F16_HEADER: usize = 265;

    fn goldens() -> [(&'static [u8], Option<usize>); 4] {
        [
            (GOLDEN_FP32_BINARY, Some(GOLDEN_FP32_BINARY_HEADER)),
            (GOLDEN_FP32_JSON, None),
            (GOLDEN_BYTES_BINARY, Some(GOLDEN_BYTES_BINARY_HEADER)),
            (GOLDEN_U8_F16, Some(GOLDEN_U8_F16_HEADER)),
        ]
    }

    fn model(inputs: Vec<TensorSpec>, max_batch_size: usize) -> ModelDescription {
        ModelDescription {
            name: "resnet50".into(),
            version: None,
            platform: "odin_onnx".into(),
            inputs,
            outputs: vec![TensorSpec {
                name: "logits".into(),
                datatype: DataType::Fp32,
                shape: vec![-1, 1000],
            }],
            max_batch_size,
        }
    }

    fn spec(name: &str, datatype: DataType, shape: &[i64]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            datatype,
            shape: shape.to_vec(),
        }
    }

    /// An input as `tritonclient.http` sends it: `(tensor JSON, bytes)`.
    fn client_input(
        name: &str,
        shape: &[usize],
        data: &TensorData,
        binary: bool,
    ) -> (Value, Vec<u8>) {
        let mut t = json!({"name": name, "shape": shape, "datatype": data.datatype().name()});
        if binary {
            let bytes = data.to_le_bytes();
            t["parameters"] = json!({"binary_data_size": bytes.len()});
            (t, bytes)
        } else {
            t["data"] = serde_json::to_value(JsonElements(data)).unwrap();
            (t, Vec::new())
        }
    }

    /// A body as `_utils._get_inference_request` lays it out: the JSON,
    /// then the binary inputs concatenated; the JSON length when any
    /// binary input is present.
    fn client_body(
        inputs: &[(Value, Vec<u8>)],
        request: Map<String, Value>,
    ) -> (Vec<u8>, Option<usize>) {
        let mut req = request;
        req.insert(
            "inputs".into(),
            inputs.iter().map(|(t, _)| t.clone()).collect(),
        );
        let mut body = serde_json::to_vec(&req).unwrap();
        let tail: Vec<u8> = inputs.iter().flat_map(|(_, b)| b.clone()).collect();
        if inputs.iter().any(|(t, _)| t.get("parameters").is_some()) {
            let n = body.len();
            body.extend_from_slice(&tail);
            (body, Some(n))
        } else {
            (body, None)
        }
    }

    /// An output as read back: name, shape, datatype, binary bytes.
    type Decoded = (String, Vec<usize>, Value, Option<Vec<u8>>);

    /// Reads a response as `tritonclient.http.InferResult` does: the header
    /// JSON, then each binary output's bytes in order.
    fn client_decode(body: &[u8], header: Option<usize>) -> Vec<Decoded> {
        let n = header.unwrap_or(body.len());
        let json: Value = serde_json::from_slice(&body[..n]).unwrap();
        let mut at = n;
        let mut out = Vec::new();
        for o in json["outputs"].as_array().unwrap() {
            let shape = o["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let bytes = o
                .get("parameters")
                .and_then(|p| p.get("binary_data_size"))
                .map(|s| {
                    let s = s.as_u64().unwrap() as usize;
                    let b = body[at..at + s].to_vec();
                    at += s;
                    b
                });
            out.push((
                o["name"].as_str().unwrap().to_string(),
                shape,
                o["datatype"].clone(),
                bytes,
            ));
        }
        assert_eq!(
            at,
            body.len(),
            "every byte of the body belongs to an output"
        );
        out
    }

    #[test]
    fn datatype_names_parse_back_and_have_sizes() {
        for t in DataType::ALL {
            assert_eq!(DataType::parse(t.name()), Some(t));
            assert_eq!(t.name().parse::<DataType>().unwrap(), t);
            assert_eq!(t.to_string(), t.name());
            assert!(t.config_name().starts_with("TYPE_"));
        }
        assert_eq!(DataType::parse("fp32"), None);
        assert!(reason(&"FP99".parse::<DataType>().unwrap_err()).contains("FP99"));
        assert_eq!(DataType::Fp32.element_size(), Some(4));
        assert_eq!(DataType::Fp16.element_size(), Some(2));
        assert_eq!(DataType::Bf16.element_size(), Some(2));
        assert_eq!(DataType::Bool.element_size(), Some(1));
        assert_eq!(DataType::Int64.element_size(), Some(8));
        assert_eq!(DataType::Bytes.element_size(), None);
        assert_eq!(DataType::Bytes.config_name(), "TYPE_STRING");
        assert_eq!(DataType::Fp32.config_name(), "TYPE_FP32");
    }

    #[test]
    fn golden_fp32_binary_with_classification() {
        let r = parse(GOLDEN_FP32_BINARY, Some(GOLDEN_FP32_BINARY_HEADER)).unwrap();
        assert_eq!(r.id.as_deref(), Some("7"));
        assert_eq!(r.inputs.len(), 1);
        assert_eq!(r.inputs[0].name, "input");
        assert_eq!(r.inputs[0].shape, vec![1, 3]);
        assert_eq!(r.inputs[0].data, TensorData::F32(vec![1.5, -2.0, 0.25]));
        assert!(
            r.inputs[0].parameters.is_empty(),
            "binary_data_size is consumed"
        );
        assert_eq!(r.outputs.len(), 1);
        assert_eq!(r.outputs[0].binary_data, Some(true));
        assert_eq!(r.outputs[0].classification, Some(2));
        assert_eq!(r.classification("output"), Some(2));
        assert!(r.wants_binary("output"));
        assert!(r.selects("output") && !r.selects("other"));
        assert!(!r.binary_output_default);
        assert_eq!(r.timeout, None);
    }

    #[test]
    fn golden_fp32_json() {
        let r = parse(GOLDEN_FP32_JSON, None).unwrap();
        assert_eq!(r.inputs[0].shape, vec![2, 2]);
        assert_eq!(r.inputs[0].data, TensorData::F32(vec![1.0, 2.0, 3.0, 4.5]));
        assert_eq!(r.outputs[0].binary_data, Some(false));
        assert!(!r.wants_binary("output"));
        assert_eq!(r.id, None);
    }

    #[test]
    fn golden_bytes_binary() {
        let r = parse(GOLDEN_BYTES_BINARY, Some(GOLDEN_BYTES_BINARY_HEADER)).unwrap();
        assert_eq!(
            r.inputs[0].data,
            TensorData::Bytes(vec![b"ab".to_vec(), b"xyz".to_vec()])
        );
        assert!(r.binary_output_default);
        assert!(r.outputs.is_empty());
        assert!(r.wants_binary("anything") && r.selects("anything"));
        assert!(
            r.inputs[0]
                .to_f32()
                .unwrap_err()
                .to_string()
                .contains("\"img\"")
        );
    }

    #[test]
    fn golden_uint8_fp16_with_parameters() {
        let r = parse(GOLDEN_U8_F16, Some(GOLDEN_U8_F16_HEADER)).unwrap();
        assert_eq!(r.id.as_deref(), Some("r1"));
        assert_eq!(r.inputs[0].data, TensorData::U8(vec![0, 1, 128, 255]));
        assert_eq!(r.inputs[0].to_f32().unwrap(), vec![0.0, 1.0, 128.0, 255.0]);
        assert_eq!(r.inputs[1].data.datatype(), DataType::Fp16);
        assert_eq!(r.inputs[1].to_f32().unwrap(), vec![1.0, -2.0, 0.5]);
        assert_eq!(r.timeout, Some(Duration::from_micros(2500)));
        assert_eq!(r.priority, Some(3));
        assert_eq!(r.parameters.get("foo"), Some(&json!("bar")));
        assert!(!r.parameters.contains_key("timeout"));
        assert!(r.binary_output_default);
    }

    #[test]
    fn nested_and_flat_json_data_agree() {
        let body = |data: &str| {
            format!(
                r#"{{"inputs":[{{"name":"x","shape":[2,3],"datatype":"INT32","data":{data}}}]}}"#
            )
        };
        let flat = parse(body("[1,2,3,4,5,-6]").as_bytes(), None).unwrap();
        let nested = parse(body("[[1,2,3],[4,5,-6]]").as_bytes(), None).unwrap();
        let deep = parse(body("[[[1],[2],[3]],[[4],[5],[-6]]]").as_bytes(), None).unwrap();
        assert_eq!(
            flat.inputs[0].data,
            TensorData::I32(vec![1, 2, 3, 4, 5, -6])
        );
        assert_eq!(flat, nested);
        assert_eq!(flat, deep);
    }

    #[test]
    fn json_data_of_every_json_type() {
        let one = |dt: &str, data: &str| {
            let b = format!(
                r#"{{"inputs":[{{"name":"x","shape":[2],"datatype":"{dt}","data":{data}}}]}}"#
            );
            parse(b.as_bytes(), None).map(|r| r.inputs[0].data.clone())
        };
        assert_eq!(
            one("BOOL", "[true,false]").unwrap(),
            TensorData::Bool(vec![true, false])
        );
        assert_eq!(
            one("BYTES", r#"["a","\u00e9"]"#).unwrap(),
            TensorData::Bytes(vec![b"a".to_vec(), "é".as_bytes().to_vec()])
        );
        assert_eq!(
            one("UINT64", "[0,18446744073709551615]").unwrap(),
            TensorData::U64(vec![0, u64::MAX])
        );
        assert_eq!(
            one("INT8", "[-128,127]").unwrap(),
            TensorData::I8(vec![-128, 127])
        );
        assert_eq!(
            one("FP64", "[1e300,-0.5]").unwrap(),
            TensorData::F64(vec![1e300, -0.5])
        );
        assert_eq!(
            one("FP32", "[1,2.5]").unwrap(),
            TensorData::F32(vec![1.0, 2.5])
        );
        // Zero elements.
        let b = r#"{"inputs":[{"name":"x","shape":[0,3],"datatype":"FP32","data":[]}]}"#;
        assert_eq!(
            parse(b.as_bytes(), None).unwrap().inputs[0].data,
            TensorData::F32(vec![])
        );
    }

    #[test]
    fn every_numeric_type_converts_to_f32() {
        let cases = [
            (TensorData::Bool(vec![true, false]), vec![1.0, 0.0]),
            (TensorData::U8(vec![0, 255]), vec![0.0, 255.0]),
            (TensorData::U16(vec![65535]), vec![65535.0]),
            (TensorData::U32(vec![7]), vec![7.0]),
            (TensorData::U64(vec![1 << 40]), vec![(1u64 << 40) as f32]),
            (TensorData::I8(vec![-128]), vec![-128.0]),
            (TensorData::I16(vec![-300]), vec![-300.0]),
            (TensorData::I32(vec![-5]), vec![-5.0]),
            (
                TensorData::I64(vec![-(1 << 40)]),
                vec![-((1u64 << 40) as f32)],
            ),
            // 1.0, -2.0, 65504, smallest subnormal.
            (
                TensorData::F16(vec![0x3c00, 0xc000, 0x7bff, 0x0001]),
                vec![1.0, -2.0, 65504.0, 2f32.powi(-24)],
            ),
            (TensorData::Bf16(vec![0x3f80, 0xc040]), vec![1.0, -3.0]),
            (TensorData::F64(vec![0.5, -1e10]), vec![0.5, -1e10]),
            (TensorData::F32(vec![0.1]), vec![0.1]),
        ];
        for (data, want) in cases {
            assert_eq!(data.to_f32().unwrap(), want, "{:?}", data.datatype());
            assert_eq!(data.clone().into_f32().unwrap(), want);
        }
        assert!(TensorData::Bytes(vec![b"x".to_vec()]).to_f32().is_err());
    }

    #[test]
    fn binary_inputs_of_every_fixed_type_round_trip() {
        let cases = [
            TensorData::Bool(vec![true, false, true]),
            TensorData::U8(vec![1, 2, 3]),
            TensorData::U16(vec![1, 65535, 3]),
            TensorData::U32(vec![1, u32::MAX, 3]),
            TensorData::U64(vec![1, u64::MAX, 3]),
            TensorData::I8(vec![-1, 2, -3]),
            TensorData::I16(vec![-1, 2, -3]),
            TensorData::I32(vec![-1, i32::MIN, 3]),
            TensorData::I64(vec![-1, i64::MIN, 3]),
            TensorData::F16(vec![0x3c00, 0x0000, 0xfc00]),
            TensorData::F32(vec![1.5, f32::MIN_POSITIVE, -0.0]),
            TensorData::F64(vec![1.5, f64::MAX, -0.0]),
            TensorData::Bf16(vec![0x3f80, 0, 1]),
            TensorData::Bytes(vec![vec![], b"a".to_vec(), vec![0, 255]]),
        ];
        for data in cases {
            let (body, header) = client_body(&[client_input("x", &[3], &data, true)], Map::new());
            let r = parse(&body, header).unwrap();
            assert_eq!(r.inputs[0].data, data);
            assert_eq!(r.inputs[0].shape, vec![3]);
        }
    }

    #[test]
    fn malformed_json_names_the_position() {
        let text =
            r#"{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2,]}]}"#;
        let e = parse(text.as_bytes(), None).unwrap_err();
        let ProtocolError::Json { line, column, .. } = &e else {
            panic!("{e:?}")
        };
        // The column (from 1) of the `]` after the trailing comma.
        let at = text.find(",]").unwrap() + 2;
        assert_eq!((*line, *column), (1, at));
        assert!(reason(&e).contains(&format!("line 1 column {at}")), "{e}");
        assert_eq!(e.status(), 400);

        let e = parse(
            b"{\n  \"inputs\": [{\"name\": \"x\",\n  \"shape\": [2, \"a\"]}]}",
            None,
        )
        .unwrap_err();
        let ProtocolError::Json { field, line, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(field.as_deref(), Some("inputs[0].shape[1]"));
        assert_eq!(*line, 3);
        assert!(reason(&e).contains("inputs[0].shape[1]"), "{e}");

        let e = parse(br#"{"inputs": []} trailing"#, None).unwrap_err();
        assert!(matches!(e, ProtocolError::Json { .. }), "{e:?}");
        let e = parse(br#"{"outputs": []}"#, None).unwrap_err();
        assert!(reason(&e).contains("inputs"), "{e}");
        let e = parse(b"\xff\xfe", None).unwrap_err();
        assert!(matches!(e, ProtocolError::Json { .. }), "{e:?}");
    }

    #[test]
    fn wrong_datatypes_are_named() {
        let body = |dt: &str, data: &str| {
            format!(r#"{{"inputs":[{{"name":"x","shape":[2],"datatype":"{dt}","data":{data}}}]}}"#)
        };
        let err =
            |dt: &str, data: &str| reason(&parse(body(dt, data).as_bytes(), None).unwrap_err());
        assert!(err("FP99", "[1,2]").contains("unknown datatype \"FP99\""));
        assert!(err("UINT8", "[1,300]").contains("data element 1 (300) is not a UINT8"));
        assert!(err("UINT8", "[1,-1]").contains("data element 1 (-1) is not a UINT8"));
        assert!(err("INT32", "[1,2.5]").contains("(2.5) is not a INT32"));
        assert!(
            err("FP32", r#"["a","b"]"#).contains("FP32 takes numbers in JSON data, not strings")
        );
        assert!(err("BYTES", "[1,2]").contains("BYTES takes strings"));
        assert!(err("BOOL", "[1,0]").contains("BOOL takes booleans"));
        assert!(err("FP16", "[1,2]").contains("binary"));
        assert!(err("FP32", r#"[1,"a"]"#).contains("mixes numbers and strings"));
        assert!(err("FP32", "[1,null]").contains("inputs[0].data"));
        assert!(err("FP32", "3").contains("array"));
        let e = parse(body("FP32", "[1,2]").replace("\"x\"", "5").as_bytes(), None).unwrap_err();
        assert!(reason(&e).contains("inputs[0].name"), "{e}");
    }

    #[test]
    fn shape_and_data_must_agree() {
        let e = parse(
            br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3]}]}"#,
            None,
        )
        .unwrap_err();
        assert_eq!(
            reason(&e),
            "input \"x\": shape [2, 2] has 4 elements but data has 3"
        );

        let data = TensorData::F32(vec![1.0, 2.0, 3.0]);
        let (mut t, bytes) = client_input("x", &[3], &data, true);
        t["shape"] = json!([4]);
        let (body, header) = client_body(&[(t, bytes)], Map::new());
        let e = parse(&body, header).unwrap_err();
        assert!(
            reason(&e).contains("shape [4] of FP32 takes 16 bytes but binary_data_size is 12"),
            "{e}"
        );
    }

    #[test]
    fn header_length_beyond_the_body() {
        let e = parse(GOLDEN_FP32_BINARY, Some(GOLDEN_FP32_BINARY.len() + 1)).unwrap_err();
        assert_eq!(
            e,
            ProtocolError::HeaderLength {
                header: GOLDEN_FP32_BINARY.len() + 1,
                body: GOLDEN_FP32_BINARY.len()
            }
        );
        assert_eq!(e.status(), 400);
        // A header length that cuts the JSON short is malformed JSON.
        let e = parse(GOLDEN_FP32_BINARY, Some(GOLDEN_FP32_BINARY_HEADER - 1)).unwrap_err();
        assert!(matches!(e, ProtocolError::Json { .. }), "{e:?}");
        // One that takes in binary bytes too.
        let e = parse(GOLDEN_FP32_BINARY, Some(GOLDEN_FP32_BINARY_HEADER + 1)).unwrap_err();
        assert!(matches!(e, ProtocolError::Json { .. }), "{e:?}");
    }

    #[test]
    fn binary_data_size_beyond_the_body() {
        let body = &GOLDEN_FP32_BINARY[..GOLDEN_FP32_BINARY.len() - 1];
        let e = parse(body, Some(GOLDEN_FP32_BINARY_HEADER)).unwrap_err();
        assert_eq!(
            reason(&e),
            "input \"input\": binary_data_size 12 at byte 190 runs past the end of the 201-byte \
             body (11 bytes left)"
        );
        let b = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":18446744073709551615}}]}"#;
        let e = parse(b, Some(b.len())).unwrap_err();
        assert!(reason(&e).contains("runs past the end"), "{e}");
        let b = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":-4}}]}"#;
        let e = parse(b, Some(b.len())).unwrap_err();
        assert!(
            reason(&e).contains("binary_data_size must be a whole number"),
            "{e}"
        );
    }

    /// With no element cap, only the comparison of declared sizes with the
    /// bytes present stands between these requests and a terabyte
    /// allocation: were anything sized by the shape first, the test would
    /// abort.
    #[test]
    fn huge_declared_shapes_allocate_nothing() {
        let open = Limits {
            max_body_bytes: usize::MAX,
            max_elements: usize::MAX,
        };
        for dt in ["FP32", "BYTES", "UINT8", "BOOL"] {
            let json = format!(
                r#"{{"inputs":[{{"name":"x","shape":[1099511627776],"datatype":"{dt}","parameters":{{"binary_data_size":16}}}}]}}"#
            );
            let mut body = json.clone().into_bytes();
            body.extend_from_slice(&[0u8; 16]);
            for lim in [open, limits()] {
                let e = parse_infer_request(&body, Some(json.len()), &lim, None).unwrap_err();
                assert!(matches!(e, ProtocolError::Input { .. }), "{dt}: {e:?}");
            }
            let e = parse(&body, Some(json.len())).unwrap_err();
            assert!(reason(&e).contains("more than 16777216 elements"), "{e}");
        }
        // JSON data: the data's length, not the shape, sizes the buffer.
        let b = br#"{"inputs":[{"name":"x","shape":[1099511627776],"datatype":"FP32","data":[1,2,3,4]}]}"#;
        let e = parse_infer_request(b, None, &open, None).unwrap_err();
        assert!(
            reason(&e).contains("has 1099511627776 elements but data has 4"),
            "{e}"
        );
        // Overflowing shapes.
        let b = br#"{"inputs":[{"name":"x","shape":[4294967296,4294967296,16],"datatype":"FP32","data":[1]}]}"#;
        let e = parse_infer_request(b, None, &open, None).unwrap_err();
        assert!(reason(&e).contains("more than"), "{e}");
        // A BYTES element declaring 4 GiB in a 9-byte tensor.
        let json = r#"{"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":9}}]}"#;
        let mut body = json.as_bytes().to_vec();
        body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5]);
        let e = parse_infer_request(&body, Some(json.len()), &open, None).unwrap_err();
        assert!(
            reason(&e).contains("declares 4294967295 bytes at byte 0 of the tensor; 5 are left"),
            "{e}"
        );
    }

    #[test]
    fn deeply_nested_data_is_an_error_not_a_stack_overflow() {
        let depth = 100_000;
        let b = format!(
            r#"{{"inputs":[{{"name":"x","shape":[1],"datatype":"FP32","data":{}1{}}}]}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let e = parse(b.as_bytes(), None).unwrap_err();
        assert!(reason(&e).contains("recursion limit"), "{e}");
    }

    #[test]
    fn json_data_is_capped_while_read() {
        let lim = Limits {
            max_body_bytes: 1 << 20,
            max_elements: 3,
        };
        let b =
            br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[[1,2],[3,4],[5]]}]}"#;
        let e = parse_infer_request(b, None, &lim, None).unwrap_err();
        assert!(reason(&e).contains("more than 3 elements"), "{e}");
        assert!(reason(&e).contains("inputs[0].data"), "{e}");
        // The cap does not outlive the parse.
        assert_eq!(JSON_ELEMENT_CAP.get(), usize::MAX);
    }

    #[test]
    fn body_limit() {
        let lim = Limits {
            max_body_bytes: 10,
            max_elements: 10,
        };
        let e = parse_infer_request(GOLDEN_FP32_JSON, None, &lim, None).unwrap_err();
        assert_eq!(
            e,
            ProtocolError::BodyTooLarge {
                size: GOLDEN_FP32_JSON.len(),
                max: 10
            }
        );
    }

    #[test]
    fn unknown_fields_are_tolerated() {
        let b = br#"{"model_name":"m","id":"1","extra":{"a":[1]},
            "inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1],"foo":3,
                       "parameters":{"custom":"v"}}],
            "outputs":[{"name":"y","bar":null,"parameters":{"other":1}}]}"#;
        let r = parse(b, None).unwrap();
        assert_eq!(r.inputs[0].parameters.get("custom"), Some(&json!("v")));
        assert_eq!(r.outputs[0].parameters.get("other"), Some(&json!(1)));
        assert_eq!(r.outputs[0].binary_data, None);
        assert_eq!(r.outputs[0].classification, None);
        assert!(!r.wants_binary("y"));
    }

    #[test]
    fn binary_layout_errors() {
        // Bytes after the last input.
        let mut body = GOLDEN_FP32_BINARY.to_vec();
        body.push(0);
        let e = parse(&body, Some(GOLDEN_FP32_BINARY_HEADER)).unwrap_err();
        assert_eq!(
            reason(&e),
            "1 bytes of binary data follow the last input's, from byte 202"
        );
        // binary_data_size without the header.
        let e = parse(&GOLDEN_FP32_BINARY[..GOLDEN_FP32_BINARY_HEADER], None).unwrap_err();
        assert!(
            reason(&e).contains("Inference-Header-Content-Length"),
            "{e}"
        );
        // Both data and binary_data_size; neither.
        let b = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1],"parameters":{"binary_data_size":4}}]}"#;
        assert!(reason(&parse(b, Some(b.len())).unwrap_err()).contains("both"));
        let b = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32"}]}"#;
        assert!(reason(&parse(b, None).unwrap_err()).contains("has no data"));
        // The same input twice.
        let b = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]},{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}"#;
        assert!(reason(&parse(b, None).unwrap_err()).contains("given twice"));
        // No inputs.
        assert!(reason(&parse(br#"{"inputs":[]}"#, None).unwrap_err()).contains("no inputs"));
        // BOOL bytes other than 0 and 1.
        let data = TensorData::U8(vec![0, 2]);
        let (mut t, bytes) = client_input("b", &[2], &data, true);
        t["datatype"] = json!("BOOL");
        let (body, header) = client_body(&[(t, bytes)], Map::new());
        assert!(reason(&parse(&body, header).unwrap_err()).contains("BOOL element 1 is byte 2"));
        // BYTES: too few bytes for the element count; bytes left over.
        let bytes_input = |shape: usize, tail: &[u8]| {
            let json = format!(
                r#"{{"inputs":[{{"name":"s","shape":[{shape}],"datatype":"BYTES","parameters":{{"binary_data_size":{}}}}}]}}"#,
                tail.len()
            );
            let mut body = json.clone().into_bytes();
            body.extend_from_slice(tail);
            parse(&body, Some(json.len()))
        };
        assert!(
            reason(&bytes_input(3, &[0; 8]).unwrap_err())
                .contains("3 BYTES elements need at least 12 bytes")
        );
        assert!(
            reason(&bytes_input(1, &[1, 0, 0, 0, 9, 9]).unwrap_err())
                .contains("take 5 bytes but binary_data_size is 6")
        );
        assert_eq!(
            bytes_input(2, &[0; 8]).unwrap().inputs[0].data,
            TensorData::Bytes(vec![vec![], vec![]])
        );
        // Shared memory.
        let b = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","parameters":{"shared_memory_region":"r","shared_memory_byte_size":4}}]}"#;
        assert!(reason(&parse(b, None).unwrap_err()).contains("shared memory is not supported"));
    }

    #[test]
    fn request_parameters_are_typed() {
        let with = |params: &str| {
            let b = format!(
                r#"{{"parameters":{params},"inputs":[{{"name":"x","shape":[1],"datatype":"FP32","data":[1]}}],"outputs":[{{"name":"y"}},{{"name":"z","parameters":{{"binary_data":false,"classification":0}}}}]}}"#
            );
            parse(b.as_bytes(), None)
        };
        let r = with(r#"{"binary_data_output":true,"timeout":0,"sequence_id":5}"#).unwrap();
        assert!(r.wants_binary("y"), "the request default applies");
        assert!(!r.wants_binary("z"), "the output's own choice wins");
        assert_eq!(
            r.classification("z"),
            None,
            "classification 0 asks for none"
        );
        assert_eq!(r.timeout, None, "timeout 0 is no timeout");
        assert_eq!(r.parameters.get("sequence_id"), Some(&json!(5)));
        for (params, what) in [
            (r#"{"binary_data_output":1}"#, "binary_data_output"),
            (r#"{"timeout":"10ms"}"#, "timeout"),
            (r#"{"timeout":-1}"#, "timeout"),
            (r#"{"priority":1.5}"#, "priority"),
        ] {
            let e = with(params).unwrap_err();
            assert!(reason(&e).contains(what), "{e}");
        }
        let b = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],"outputs":[{"name":"y","parameters":{"binary_data":"yes"}}]}"#;
        assert!(
            reason(&parse(b, None).unwrap_err()).contains("output \"y\": parameter binary_data")
        );
        let b = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],"outputs":[{"name":"y","parameters":{"classification":-2}}]}"#;
        assert!(
            reason(&parse(b, None).unwrap_err()).contains("classification must be a whole number")
        );
        let b = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],"outputs":[{"name":"y"},{"name":"y"}]}"#;
        assert!(reason(&parse(b, None).unwrap_err()).contains("asked for twice"));
    }

    #[test]
    fn raw_binary_requests() {
        let batched = model(vec![spec("input", DataType::Fp32, &[-1, 3])], 8);
        let body: Vec<u8> = [1.0f32, 2.0, 3.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let r = parse_infer_request(&body, Some(0), &limits(), Some(&batched)).unwrap();
        assert_eq!(r.inputs[0].name, "input");
        assert_eq!(r.inputs[0].shape, vec![1, 3]);
        assert_eq!(r.inputs[0].data, TensorData::F32(vec![1.0, 2.0, 3.0]));
        assert!(r.binary_output_default && r.outputs.is_empty());
        r.check(&batched).unwrap();
        // The batch is 1: 6 values do not fit [1, 3].
        let e = parse_infer_request(
            &[body.clone(), body.clone()].concat(),
            Some(0),
            &limits(),
            Some(&batched),
        )
        .unwrap_err();
        assert!(reason(&e).contains("does not fill shape"), "{e}");
        // One variable dimension takes the rest.
        let open = model(vec![spec("input", DataType::Uint8, &[2, -1])], 0);
        let r = parse_infer_request(&[1, 2, 3, 4, 5, 6], Some(0), &limits(), Some(&open)).unwrap();
        assert_eq!(r.inputs[0].shape, vec![2, 3]);
        let e = parse_infer_request(&[1, 2, 3], Some(0), &limits(), Some(&open)).unwrap_err();
        assert!(reason(&e).contains("3 bytes does not fill"), "{e}");
        // Two variable dimensions are ambiguous.
        let two = model(vec![spec("input", DataType::Fp32, &[-1, -1])], 0);
        assert!(parse_infer_request(&body, Some(0), &limits(), Some(&two)).is_err());
        // BYTES: the body is the one element.
        let bytes = model(vec![spec("image", DataType::Bytes, &[-1, 1])], 4);
        let r = parse_infer_request(b"\xff\xd8jpeg", Some(0), &limits(), Some(&bytes)).unwrap();
        assert_eq!(r.inputs[0].shape, vec![1, 1]);
        assert_eq!(
            r.inputs[0].data,
            TensorData::Bytes(vec![b"\xff\xd8jpeg".to_vec()])
        );
        let wide = model(vec![spec("image", DataType::Bytes, &[2])], 0);
        assert!(parse_infer_request(b"x", Some(0), &limits(), Some(&wide)).is_err());
        // The model is needed, with one input.
        let e = parse_infer_request(&body, Some(0), &limits(), None).unwrap_err();
        assert!(reason(&e).contains("needs the model's description"), "{e}");
        let pair = model(
            vec![
                spec("a", DataType::Fp32, &[3]),
                spec("b", DataType::Fp32, &[3]),
            ],
            0,
        );
        let e = parse_infer_request(&body, Some(0), &limits(), Some(&pair)).unwrap_err();
        assert!(reason(&e).contains("has 2"), "{e}");
        // A shape too large for the limits.
        let big = model(vec![spec("input", DataType::Fp32, &[1 << 40, -1])], 0);
        assert!(parse_infer_request(&body, Some(0), &limits(), Some(&big)).is_err());
    }

    #[test]
    fn error_statuses_and_bodies_follow_triton() {
        let cases = [
            (
                ProtocolError::Invalid("x".into()),
                400,
                GrpcCode::InvalidArgument,
            ),
            (
                ProtocolError::HeaderLength { header: 2, body: 1 },
                400,
                GrpcCode::InvalidArgument,
            ),
            (
                ProtocolError::BodyTooLarge { size: 2, max: 1 },
                400,
                GrpcCode::InvalidArgument,
            ),
            (
                ProtocolError::Input {
                    name: "i".into(),
                    reason: "r".into(),
                },
                400,
                GrpcCode::InvalidArgument,
            ),
            (
                ProtocolError::ModelNotFound { name: "m".into() },
                404,
                GrpcCode::NotFound,
            ),
            (
                ProtocolError::Unavailable("Exceeds maximum queue size".into()),
                503,
                GrpcCode::Unavailable,
            ),
            (
                ProtocolError::DeadlineExceeded("Request timeout expired".into()),
                503,
                GrpcCode::DeadlineExceeded,
            ),
            (
                ProtocolError::Internal("boom".into()),
                500,
                GrpcCode::Internal,
            ),
        ];
        for (e, status, code) in cases {
            assert_eq!(e.status(), status, "{e:?}");
            assert_eq!(e.grpc_code(), code, "{e:?}");
            assert_eq!(e.json(), json!({"error": e.to_string()}));
        }
        assert_eq!(
            ProtocolError::ModelNotFound { name: "m".into() }.json(),
            json!({"error": "Request for unknown model: 'm' is not found"})
        );
        let codes: Vec<i32> = [
            GrpcCode::InvalidArgument,
            GrpcCode::DeadlineExceeded,
            GrpcCode::NotFound,
            GrpcCode::Internal,
            GrpcCode::Unavailable,
        ]
        .map(GrpcCode::code)
        .to_vec();
        assert_eq!(codes, vec![3, 4, 5, 13, 14]);
    }

    #[test]
    fn metadata_documents() {
        assert_eq!(
            server_metadata_json("0.1.0"),
            json!({"name": "odin", "version": "0.1.0",
                   "extensions": ["binary_tensor_data", "classification", "model_configuration"]})
        );
        assert!(!EXTENSIONS.contains(&"statistics"));
        assert_eq!(server_live_json(true), json!({"live": true}));
        assert_eq!(server_ready_json(false), json!({"ready": false}));

        let mut m = model(vec![spec("input", DataType::Fp32, &[-1, 3, 224, 224])], 8);
        assert_eq!(
            m.ready_json(true),
            json!({"name": "resnet50", "ready": true})
        );
        assert_eq!(
            m.metadata_json(),
            json!({"name": "resnet50", "platform": "odin_onnx",
                   "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 224, 224]}],
                   "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 1000]}]})
        );
        assert_eq!(
            m.config_json(),
            json!({"name": "resnet50", "platform": "odin_onnx", "max_batch_size": 8,
                   "input": [{"name": "input", "data_type": "TYPE_FP32", "format": "FORMAT_NONE",
                              "dims": [3, 224, 224], "is_shape_tensor": false, "optional": false}],
                   "output": [{"name": "logits", "data_type": "TYPE_FP32", "dims": [1000],
                               "is_shape_tensor": false}]})
        );
        // Without batching the dims are the whole shape; a version is listed.
        m.max_batch_size = 0;
        m.version = Some("1".into());
        m.platform = "odin".into();
        m.inputs[0].shape = vec![1, 3, 224, 224];
        let config = m.config_json();
        assert_eq!(config["max_batch_size"], json!(0));
        assert_eq!(config["input"][0]["dims"], json!([1, 3, 224, 224]));
        assert_eq!(config["output"][0]["dims"], json!([-1, 1000]));
        assert_eq!(m.metadata_json()["versions"], json!(["1"]));
        assert_eq!(m.metadata_json()["platform"], json!("odin"));
    }

    fn one_input(name: &str, shape: &[usize], data: TensorData) -> InferRequest {
        InferRequest {
            id: None,
            inputs: vec![InputTensor {
                name: name.into(),
                shape: shape.to_vec(),
                data,
                parameters: Map::new(),
            }],
            outputs: Vec::new(),
            binary_output_default: false,
            timeout: None,
            priority: None,
            parameters: Map::new(),
        }
    }

    #[test]
    fn requests_are_checked_against_the_model() {
        let m = model(vec![spec("input", DataType::Fp32, &[-1, 3])], 4);
        let f32s = |n| TensorData::F32(vec![0.0; n]);
        let ok = one_input("input", &[2, 3], f32s(6));
        ok.check(&m).unwrap();
        assert_eq!(ok.batch_size(&m), 2);
        // UINT8 converts; BYTES does not.
        one_input("input", &[1, 3], TensorData::U8(vec![0; 3]))
            .check(&m)
            .unwrap();
        let e = one_input("input", &[1, 1], TensorData::Bytes(vec![vec![]]))
            .check(&m)
            .unwrap_err();
        assert!(
            reason(&e).contains("datatype BYTES does not match the model's FP32"),
            "{e}"
        );
        let err = |r: InferRequest| reason(&r.check(&m).unwrap_err());
        assert!(
            err(one_input("other", &[1, 3], f32s(3)))
                .contains("has no such input; it takes \"input\"")
        );
        assert!(
            err(one_input("input", &[5, 3], f32s(15))).contains("batch size 5 is outside 1..=4")
        );
        assert!(err(one_input("input", &[0, 3], f32s(0))).contains("batch size 0"));
        assert!(
            err(one_input("input", &[1, 4], f32s(4)))
                .contains("shape [1, 4] does not match the model's [-1, 3]")
        );
        assert!(err(one_input("input", &[3], f32s(3))).contains("does not match"));
        let mut r = ok.clone();
        r.outputs.push(RequestedOutput {
            name: "nope".into(),
            binary_data: None,
            classification: None,
            parameters: Map::new(),
        });
        assert!(
            err(r).contains(
                "output \"nope\": model \"resnet50\" has no such output; it has \"logits\""
            )
        );
        // Missing inputs, and batches that disagree.
        let two = model(
            vec![
                spec("a", DataType::Fp32, &[-1, 1]),
                spec("b", DataType::Fp32, &[-1, 1]),
            ],
            4,
        );
        let e = one_input("a", &[1, 1], f32s(1)).check(&two).unwrap_err();
        assert!(reason(&e).contains("input \"b\": missing"), "{e}");
        let mut r = one_input("a", &[1, 1], f32s(1));
        r.inputs.push(InputTensor {
            name: "b".into(),
            shape: vec![2, 1],
            data: f32s(2),
            parameters: Map::new(),
        });
        assert!(
            reason(&r.check(&two).unwrap_err())
                .contains("batch size 2 differs from input \"a\"'s 1")
        );
        // Without batching, -1 is any size.
        let open = model(vec![spec("input", DataType::Fp32, &[-1, 3])], 0);
        one_input("input", &[7, 3], f32s(21)).check(&open).unwrap();
        assert_eq!(one_input("input", &[7, 3], f32s(21)).batch_size(&open), 1);
    }

    fn response(outputs: Vec<OutputTensor>) -> InferResponse {
        InferResponse {
            model_name: "m".into(),
            model_version: Some("1".into()),
            id: Some("42".into()),
            outputs,
        }
    }

    #[test]
    fn json_responses() {
        let resp = response(vec![OutputTensor {
            name: "y".into(),
            shape: vec![1, 3],
            data: TensorData::F32(vec![0.1, -2.0, f32::NAN]),
        }]);
        let (body, header) = encode_infer_response(&resp, &|_| false);
        assert_eq!(header, None);
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"model_name":"m","model_version":"1","id":"42","outputs":[{"name":"y","datatype":"FP32","shape":[1,3],"data":[0.1,-2.0,null]}]}"#
        );
        let resp = InferResponse {
            model_version: None,
            id: None,
            ..response(vec![])
        };
        let (body, _) = encode_infer_response(&resp, &|_| true);
        assert_eq!(body, br#"{"model_name":"m","outputs":[]}"#.to_vec());
    }

    #[test]
    fn binary_and_mixed_responses_decode_as_tritonclient_reads_them() {
        let y = OutputTensor {
            name: "y".into(),
            shape: vec![2],
            data: TensorData::F32(vec![1.5, -0.25]),
        };
        let z = OutputTensor {
            name: "z".into(),
            shape: vec![1],
            data: TensorData::I64(vec![-7]),
        };
        let w = OutputTensor {
            name: "w".into(),
            shape: vec![3],
            data: TensorData::F32(vec![1.0, 2.0, 3.0]),
        };
        let resp = response(vec![y.clone(), z, w]);
        let (body, header) = encode_infer_response(&resp, &|n| n != "z");
        let h = header.unwrap();
        let json: Value = serde_json::from_slice(&body[..h]).unwrap();
        assert_eq!(
            json["outputs"][0]["parameters"],
            json!({"binary_data_size": 8})
        );
        assert_eq!(json["outputs"][1]["data"], json!([-7]));
        assert!(json["outputs"][1].get("parameters").is_none());
        let decoded = client_decode(&body, header);
        assert_eq!(decoded[0].3.as_deref(), Some(&y.data.to_le_bytes()[..]));
        assert_eq!(decoded[1].3, None);
        assert_eq!(decoded[2].1, vec![3]);
        assert_eq!(
            decoded[2].3.as_deref(),
            Some(&TensorData::F32(vec![1.0, 2.0, 3.0]).to_le_bytes()[..])
        );
        assert_eq!(body.len(), h + 8 + 12);
    }

    #[test]
    fn classification_follows_tritons_extension() {
        // The extension's own example: [1.1, 3.3, 0.5, 2.4], top 2.
        let out = OutputTensor {
            name: "output0".into(),
            shape: vec![4],
            data: TensorData::F32(vec![1.1, 3.3, 0.5, 2.4]),
        };
        let c = classify(&out, 2, false, None).unwrap();
        assert_eq!(c.shape, vec![2]);
        assert_eq!(
            c.data,
            TensorData::Bytes(vec![b"3.300000:1".to_vec(), b"2.400000:3".to_vec()])
        );
        let labels = Labels::parse("a\nb\nc\nd\n");
        let c = classify(&out, 9, false, Some(&labels)).unwrap();
        assert_eq!(c.shape, vec![4], "K is capped by the classes");
        let TensorData::Bytes(s) = &c.data else {
            panic!()
        };
        assert_eq!(s[0], b"3.300000:1:b");
        assert_eq!(s[3], b"0.500000:2:c");
        // Batched: one row a batch entry; ties by index; NaN last.
        let out = OutputTensor {
            name: "p".into(),
            shape: vec![2, 3],
            data: TensorData::F32(vec![f32::NAN, 1.0, 1.0, 0.0, -1.0, 5.0]),
        };
        let c = classify(&out, 3, true, None).unwrap();
        assert_eq!(c.shape, vec![2, 3]);
        let TensorData::Bytes(s) = &c.data else {
            panic!()
        };
        let s: Vec<&str> = s.iter().map(|b| std::str::from_utf8(b).unwrap()).collect();
        assert_eq!(
            s,
            [
                "1.000000:1",
                "1.000000:2",
                "nan:0",
                "5.000000:2",
                "0.000000:0",
                "-1.000000:1"
            ]
        );
        // A shape that does not match the data is the server's fault.
        let bad = OutputTensor {
            shape: vec![4, 3],
            ..out
        };
        assert_eq!(classify(&bad, 1, true, None).unwrap_err().status(), 500);

        // In a response: 4-byte length prefixes in binary, strings in JSON.
        let c = classify(
            &OutputTensor {
                name: "output0".into(),
                shape: vec![4],
                data: TensorData::F32(vec![1.1, 3.3, 0.5, 2.4]),
            },
            2,
            false,
            None,
        )
        .unwrap();
        let resp = response(vec![c]);
        let (body, header) = encode_infer_response(&resp, &|_| true);
        let decoded = client_decode(&body, header);
        assert_eq!(decoded[0].2, json!("BYTES"));
        assert_eq!(
            decoded[0].3.as_deref().unwrap(),
            b"\x0a\x00\x00\x003.300000:1\x0a\x00\x00\x002.400000:3"
        );
        let (body, _) = encode_infer_response(&resp, &|_| false);
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json["outputs"][0]["data"],
            json!(["3.300000:1", "2.400000:3"])
        );
        assert_eq!(json["outputs"][0]["shape"], json!([2]));
    }

    fn tensor(dt: DataType, n: usize, seed: u64) -> TensorData {
        let v = |i: usize| {
            seed.wrapping_mul(6364136223846793005)
                .wrapping_add((i as u64).wrapping_mul(1442695040888963407))
                >> 11
        };
        let vals: Vec<u64> = (0..n).map(v).collect();
        match dt {
            DataType::Bool => TensorData::Bool(vals.iter().map(|x| x & 1 == 1).collect()),
            DataType::Uint8 => TensorData::U8(vals.iter().map(|&x| x as u8).collect()),
            DataType::Uint16 => TensorData::U16(vals.iter().map(|&x| x as u16).collect()),
            DataType::Uint32 => TensorData::U32(vals.iter().map(|&x| x as u32).collect()),
            DataType::Uint64 => TensorData::U64(vals),
            DataType::Int8 => TensorData::I8(vals.iter().map(|&x| x as i8).collect()),
            DataType::Int16 => TensorData::I16(vals.iter().map(|&x| x as i16).collect()),
            DataType::Int32 => TensorData::I32(vals.iter().map(|&x| x as i32).collect()),
            DataType::Int64 => TensorData::I64(vals.iter().map(|&x| x as i64).collect()),
            DataType::Fp16 => TensorData::F16(vals.iter().map(|&x| (x as u16) & 0x7bff).collect()),
            DataType::Bf16 => TensorData::Bf16(vals.iter().map(|&x| (x as u16) & 0x7f7f).collect()),
            DataType::Fp32 => {
                TensorData::F32(vals.iter().map(|&x| (x as i32) as f32 / 977.0).collect())
            }
            DataType::Fp64 => {
                TensorData::F64(vals.iter().map(|&x| (x as i64) as f64 / 3.0).collect())
            }
            // JSON carries BYTES as UTF-8 strings, so these stay ASCII.
            DataType::Bytes => TensorData::Bytes(
                vals.iter()
                    .map(|&x| vec![b'a' + (x % 26) as u8; (x % 5) as usize])
                    .collect(),
            ),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Requests built the way tritonclient builds them parse back to
        /// the tensors sent, binary or JSON, nested or not.
        #[test]
        fn client_requests_round_trip(
            specs in proptest::collection::vec(
                (0usize..DataType::ALL.len(), proptest::collection::vec(0usize..4, 0..4), any::<bool>(), any::<u64>()),
                1..4),
            binary_output in any::<bool>(),
            timeout in 0u64..10_000_000,
        ) {
            let mut inputs = Vec::new();
            let mut want = Vec::new();
            for (i, (t, shape, binary, seed)) in specs.iter().enumerate() {
                let dt = DataType::ALL[*t];
                // FP16 and BF16 go as binary only, as the clients send them.
                let binary = *binary || matches!(dt, DataType::Fp16 | DataType::Bf16);
                let n = shape.iter().product();
                let data = tensor(dt, n, *seed);
                inputs.push(client_input(&format!("in{i}"), shape, &data, binary));
                want.push((shape.clone(), data));
            }
            let mut params = Map::new();
            params.insert("parameters".into(), json!({"binary_data_output": binary_output, "timeout": timeout}));
            let (body, header) = client_body(&inputs, params);
            let r = parse(&body, header).unwrap();
            prop_assert_eq!(r.inputs.len(), want.len());
            for (got, (shape, data)) in r.inputs.iter().zip(&want) {
                prop_assert_eq!(&got.shape, shape);
                prop_assert_eq!(&got.data, data);
            }
            prop_assert_eq!(r.binary_output_default, binary_output);
            prop_assert_eq!(r.timeout, (timeout > 0).then(|| Duration::from_micros(timeout)));
        }

        /// Responses read back, as tritonclient reads them, to the tensors
        /// written.
        #[test]
        fn responses_round_trip(
            outs in proptest::collection::vec((0usize..DataType::ALL.len(), 0usize..6, any::<bool>(), any::<u64>()), 0..4),
        ) {
            let outputs: Vec<OutputTensor> = outs.iter().enumerate().map(|(i, (t, n, _, seed))| OutputTensor {
                name: format!("out{i}"),
                shape: vec![*n],
                data: tensor(DataType::ALL[*t], *n, *seed),
            }).collect();
            let resp = response(outputs.clone());
            let binary: Vec<bool> = outs.iter().map(|o| o.2).collect();
            let (body, header) = encode_infer_response(&resp, &|n| {
                binary[n.trim_start_matches("out").parse::<usize>().unwrap()]
            });
            prop_assert_eq!(header.is_some(), binary.iter().any(|&b| b));
            let decoded = client_decode(&body, header);
            for ((name, shape, dt, bytes), o) in decoded.iter().zip(&outputs) {
                prop_assert_eq!(name, &o.name);
                prop_assert_eq!(shape, &o.shape);
                prop_assert_eq!(dt, &json!(o.data.datatype().name()));
                if let Some(bytes) = bytes {
                    prop_assert_eq!(bytes, &o.data.to_le_bytes());
                }
            }
        }

        /// Random bodies with any header length never panic.
        #[test]
        fn random_bytes_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..512),
            header in proptest::option::of(0usize..600),
        ) {
            let m = model(vec![spec("input", DataType::Fp32, &[-1, 3])], 8);
            let _ = parse_infer_request(&body, header, &limits(), Some(&m));
            let _ = parse_infer_request(&body, header, &limits(), None);
        }

        /// Random JSON-ish bodies (the golden ones with bytes replaced)
        /// never panic.
        #[test]
        fn mutated_goldens_never_panic(
            which in 0usize..4,
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let (golden, header) = goldens()[which];
            let mut body = golden.to_vec();
            for (at, b) in edits {
                let i = at.index(body.len());
                body[i] = b;
            }
            let _ = parse(&body, header);
        }
    }

    /// Every strict prefix of a valid body, with its header length or with
    /// the prefix's own length as the header, is an error, never a panic.
    #[test]
    fn truncated_bodies_are_errors() {
        for (golden, header) in goldens() {
            parse(golden, header).unwrap();
            for n in 0..golden.len() {
                let body = &golden[..n];
                assert!(
                    parse(body, header).is_err(),
                    "prefix {n} of {}",
                    golden.len()
                );
                let _ = parse(body, Some(n));
                let _ = parse(body, None);
            }
        }
    }
}
