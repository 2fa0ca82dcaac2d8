//! The gRPC messages and service of the Open Inference Protocol, as odin
//! serves them.
//!
//! Problem: odin must answer `tritonclient.grpc` and `perf_analyzer`, which
//! call `/inference.GRPCInferenceService/<Method>` with the protocol's
//! messages, and it must build on a machine without `protoc`.
//!
//! Approach: `build.rs` compiles the vendored `proto/open_inference_grpc.proto`
//! (KServe's Open Inference Protocol, Apache-2.0; see `proto/README.md`) with
//! `protox`, a protobuf compiler in Rust, and generates prost messages plus a
//! tonic server and client into [`pb`]. The package stays `inference`, so the
//! method paths are those the clients call. Two things odin adds to the
//! protocol:
//!
//! - Triton's `ModelConfig` RPC, with a subset of Triton's `ModelConfig`
//!   message under Triton's own field numbers: `perf_analyzer` will not
//!   start without it. The service therefore has seven RPCs: `ServerLive`,
//!   `ServerReady`, `ModelReady`, `ServerMetadata`, `ModelMetadata`,
//!   `ModelInfer`, `ModelConfig`. There are no default method bodies, so a
//!   server implementing [`pb::grpc_inference_service_server::GrpcInferenceService`]
//!   answers all of them.
//! - Every `bytes` field (`raw_input_contents`, `raw_output_contents`,
//!   `bytes_contents`) is a [`prost::bytes::Bytes`]: decoding slices tonic's
//!   receive buffer rather than copying each tensor out of it.
//!
//! tonic refuses a message above 4 MiB by default
//! (`Status::out_of_range`, before buffering it), which is less than one
//! 8-image 224x224 FP32 batch (4.8 MB); a server raises the limit with
//! `GrpcInferenceServiceServer::max_decoding_message_size`.

/// The generated messages (`ModelInferRequest`, `ModelConfig`, ...), the
/// server (`grpc_inference_service_server`) and the client
/// (`grpc_inference_service_client`, over any tonic channel).
#[allow(
    // Not every proto message or enum value carries a comment to become a doc.
    missing_docs,
    // Generated code is not held to the pedantic group (doc backticks, `# Errors`).
    clippy::pedantic
)]
pub mod pb {
    tonic::include_proto!("inference");
}

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::bytes::Bytes;
use serde_json::{Map, Value};
use tonic::{Request, Response, Status};

use super::protocol::{
    self, DataType, InferRequest, InputTensor, Limits, ModelDescription, ProtocolError,
    RequestedOutput, TensorData,
};
use super::service::Service;
use pb::infer_parameter::ParameterChoice;

/// The gRPC service over odin's [`Service`].
pub struct Inference {
    service: Arc<Service>,
}

impl Inference {
    /// Serves `service`.
    pub fn new(service: Arc<Service>) -> Self {
        Self { service }
    }

    /// The tonic service, decoding messages up to the request body limit.
    pub fn into_server(
        self,
    ) -> pb::grpc_inference_service_server::GrpcInferenceServiceServer<Self> {
        let limit = self.service.settings().limits.max_body_bytes;
        pb::grpc_inference_service_server::GrpcInferenceServiceServer::new(self)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(usize::MAX)
    }
}

/// The gRPC status of a protocol error.
pub fn status(e: &ProtocolError) -> Status {
    let code = match e.grpc_code() {
        protocol::GrpcCode::InvalidArgument => tonic::Code::InvalidArgument,
        protocol::GrpcCode::DeadlineExceeded => tonic::Code::DeadlineExceeded,
        protocol::GrpcCode::NotFound => tonic::Code::NotFound,
        protocol::GrpcCode::Internal => tonic::Code::Internal,
        protocol::GrpcCode::Unavailable => tonic::Code::Unavailable,
    };
    Status::new(code, e.to_string())
}

/// The `grpc-timeout` header: digits and a unit (`H`, `M`, `S`, `m`, `u`,
/// `n`), per the gRPC HTTP/2 protocol.
pub fn grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn tensor_metadata(t: &protocol::TensorSpec) -> pb::model_metadata_response::TensorMetadata {
    pb::model_metadata_response::TensorMetadata {
        name: t.name.clone(),
        datatype: t.datatype.name().to_string(),
        shape: t.shape.clone(),
    }
}

/// Triton's `ModelConfig` message of a model, as
/// [`ModelDescription::config_json`] has it.
pub fn model_config(d: &ModelDescription) -> pb::ModelConfig {
    let data_type = |dt: DataType| {
        pb::DataType::from_str_name(dt.config_name()).unwrap_or(pb::DataType::TypeInvalid) as i32
    };
    pb::ModelConfig {
        name: d.name.clone(),
        platform: d.platform.clone(),
        max_batch_size: i32::try_from(d.max_batch_size).unwrap_or(i32::MAX),
        input: d
            .inputs
            .iter()
            .map(|t| pb::ModelInput {
                name: t.name.clone(),
                data_type: data_type(t.datatype),
                format: pb::model_input::Format::None as i32,
                dims: d.config_dims(t).to_vec(),
                is_shape_tensor: false,
                optional: false,
            })
            .collect(),
        output: d
            .outputs
            .iter()
            .map(|t| pb::ModelOutput {
                name: t.name.clone(),
                data_type: data_type(t.datatype),
                dims: d.config_dims(t).to_vec(),
                is_shape_tensor: false,
            })
            .collect(),
        backend: "odin".into(),
    }
}

/// A parameter as JSON, for the request's free-form parameters.
fn parameter_json(p: &pb::InferParameter) -> Value {
    match &p.parameter_choice {
        Some(ParameterChoice::BoolParam(b)) => Value::from(*b),
        Some(ParameterChoice::Int64Param(i)) => Value::from(*i),
        Some(ParameterChoice::StringParam(s)) => Value::from(s.clone()),
        Some(ParameterChoice::DoubleParam(d)) => Value::from(*d),
        Some(ParameterChoice::Uint64Param(u)) => Value::from(*u),
        None => Value::Null,
    }
}

/// A whole non-negative number parameter.
fn parameter_u64(p: &pb::InferParameter) -> Option<u64> {
    match p.parameter_choice {
        Some(ParameterChoice::Int64Param(i)) => u64::try_from(i).ok(),
        Some(ParameterChoice::Uint64Param(u)) => Some(u),
        _ => None,
    }
}

/// A `ModelInferRequest` as odin's request: every input's shape bounded by
/// `limits` and its data (raw or typed contents) checked against it.
pub fn infer_request(
    mut r: pb::ModelInferRequest,
    limits: &Limits,
) -> Result<InferRequest, ProtocolError> {
    let mut req = InferRequest {
        id: (!r.id.is_empty()).then(|| std::mem::take(&mut r.id)),
        inputs: Vec::with_capacity(r.inputs.len()),
        outputs: Vec::with_capacity(r.outputs.len()),
        binary_output_default: true,
        timeout: None,
        priority: None,
        parameters: Map::new(),
    };
    for (key, p) in &r.parameters {
        let bad = |what: &str| ProtocolError::Invalid(format!("parameter {key:?} must be {what}"));
        match key.as_str() {
            "timeout" => {
                let us = parameter_u64(p).ok_or_else(|| bad("a whole number of microseconds"))?;
                req.timeout = (us > 0).then(|| Duration::from_micros(us));
            }
            "priority" => {
                req.priority = Some(parameter_u64(p).ok_or_else(|| bad("a whole number"))?)
            }
            _ => {
                req.parameters.insert(key.clone(), parameter_json(p));
            }
        }
    }
    if r.inputs.is_empty() {
        return Err(ProtocolError::Invalid("the request has no inputs".into()));
    }
    let raw = std::mem::take(&mut r.raw_input_contents);
    if !raw.is_empty() && raw.len() != r.inputs.len() {
        return Err(ProtocolError::Invalid(format!(
            "raw_input_contents has {} entries for {} inputs; give one per input or none",
            raw.len(),
            r.inputs.len()
        )));
    }
    for (i, t) in r.inputs.into_iter().enumerate() {
        let err = |reason: String| ProtocolError::Input {
            name: t.name.clone(),
            reason,
        };
        let dt = DataType::parse(&t.datatype)
            .ok_or_else(|| err(format!("unknown datatype {:?}", t.datatype)))?;
        let shape = t
            .shape
            .iter()
            .map(|&d| {
                usize::try_from(d).map_err(|_| err(format!("dimension {d} in shape {:?}", t.shape)))
            })
            .collect::<Result<Vec<usize>, _>>()?;
        let data = match (raw.get(i), &t.contents) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "has both contents and raw_input_contents; send one".into()
                ));
            }
            (Some(bytes), None) => {
                protocol::decode_raw_tensor(bytes, dt, &shape, limits).map_err(err)?
            }
            (None, Some(c)) => typed_contents(c, dt, &shape, limits).map_err(err)?,
            (None, None) => return Err(err("has no data".into())),
        };
        let parameters = t
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), parameter_json(v)))
            .collect();
        req.inputs.push(InputTensor {
            name: t.name,
            shape,
            data,
            parameters,
        });
    }
    for o in r.outputs {
        let mut classification = None;
        let mut parameters = Map::new();
        for (k, v) in &o.parameters {
            match k.as_str() {
                "classification" => {
                    let k = parameter_u64(v).filter(|&k| k > 0).ok_or_else(|| {
                        ProtocolError::Output {
                            name: o.name.clone(),
                            reason: "parameter \"classification\" must be a positive whole number"
                                .into(),
                        }
                    })?;
                    classification = Some(usize::try_from(k).unwrap_or(usize::MAX));
                }
                _ => {
                    parameters.insert(k.clone(), parameter_json(v));
                }
            }
        }
        req.outputs.push(RequestedOutput {
            name: o.name,
            binary_data: Some(true),
            classification,
            parameters,
        });
    }
    Ok(req)
}

/// A tensor sent in `InferTensorContents`: the field of its datatype, with
/// as many elements as the shape has.
fn typed_contents(
    c: &pb::InferTensorContents,
    dt: DataType,
    shape: &[usize],
    limits: &Limits,
) -> Result<TensorData, String> {
    let count = protocol::element_count(shape, limits.max_elements)?;
    /// The values converted to a narrower type, each checked to fit.
    fn fit<S: Copy + std::fmt::Display, T: TryFrom<S>>(
        v: &[S],
        dt: DataType,
    ) -> Result<Vec<T>, String> {
        v.iter()
            .map(|&x| T::try_from(x).map_err(|_| format!("{x} is not a {dt}")))
            .collect()
    }
    let data = match dt {
        DataType::Bool => TensorData::Bool(c.bool_contents.clone()),
        DataType::Int8 => TensorData::I8(fit(&c.int_contents, dt)?),
        DataType::Int16 => TensorData::I16(fit(&c.int_contents, dt)?),
        DataType::Int32 => TensorData::I32(c.int_contents.clone()),
        DataType::Int64 => TensorData::I64(c.int64_contents.clone()),
        DataType::Uint8 => TensorData::U8(fit(&c.uint_contents, dt)?),
        DataType::Uint16 => TensorData::U16(fit(&c.uint_contents, dt)?),
        DataType::Uint32 => TensorData::U32(c.uint_contents.clone()),
        DataType::Uint64 => TensorData::U64(c.uint64_contents.clone()),
        DataType::Fp32 => TensorData::F32(c.fp32_contents.clone()),
        DataType::Fp64 => TensorData::F64(c.fp64_contents.clone()),
        DataType::Bytes => TensorData::Bytes(c.bytes_contents.iter().map(|b| b.to_vec()).collect()),
        DataType::Fp16 | DataType::Bf16 => {
            return Err(format!("{dt} must be sent in raw_input_contents"));
        }
    };
    if data.len() != count {
        return Err(format!(
            "shape {shape:?} has {count} elements but the {dt} contents have {}",
            data.len()
        ));
    }
    Ok(data)
}

/// Odin's response as a `ModelInferResponse`, every output in
/// `raw_output_contents` (what `tritonclient.grpc` reads).
pub fn infer_response(r: protocol::InferResponse) -> pb::ModelInferResponse {
    let mut raw = Vec::with_capacity(r.outputs.len());
    let outputs = r
        .outputs
        .into_iter()
        .map(|o| {
            raw.push(Bytes::from(o.data.to_le_bytes()));
            pb::model_infer_response::InferOutputTensor {
                name: o.name,
                datatype: o.data.datatype().name().to_string(),
                shape: o.shape.iter().map(|&d| d as i64).collect(),
                parameters: HashMap::new(),
                contents: None,
            }
        })
        .collect();
    pb::ModelInferResponse {
        model_name: r.model_name,
        model_version: r.model_version.unwrap_or_default(),
        id: r.id.unwrap_or_default(),
        parameters: HashMap::new(),
        outputs,
        raw_output_contents: raw,
    }
}

#[tonic::async_trait]
impl pb::grpc_inference_service_server::GrpcInferenceService for Inference {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse {
            ready: self.service.is_ready(),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let r = request.get_ref();
        let ready = self.service.lookup(&r.name, &r.version).is_ok() && self.service.is_ready();
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: protocol::SERVER_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: protocol::EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let r = request.get_ref();
        let m = self
            .service
            .lookup(&r.name, &r.version)
            .map_err(|e| status(&e))?;
        let d = &m.desc;
        Ok(Response::new(pb::ModelMetadataResponse {
            name: d.name.clone(),
            versions: d.version.iter().cloned().collect(),
            platform: d.platform.clone(),
            inputs: d.inputs.iter().map(tensor_metadata).collect(),
            outputs: d.outputs.iter().map(tensor_metadata).collect(),
            properties: HashMap::new(),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let arrived = Instant::now();
        let deadline = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(grpc_timeout)
            .map(|t| arrived + t);
        let r = request.into_inner();
        let s = &self.service;
        let model = match s.lookup(&r.model_name, &r.model_version) {
            Ok(m) => m,
            Err(e) => {
                s.refused(&r.model_name, &e);
                return Err(status(&e));
            }
        };
        let name = model.desc.name.clone();
        let req = match infer_request(r, &s.settings().limits) {
            Ok(req) => req,
            Err(e) => {
                s.refused(&name, &e);
                return Err(status(&e));
            }
        };
        if !s.is_ready() {
            let e = ProtocolError::Unavailable("the server is shutting down".into());
            s.refused(&name, &e);
            return Err(status(&e));
        }
        match s.infer(&model, req, arrived, deadline).await {
            Ok(resp) => Ok(Response::new(infer_response(resp))),
            Err(e) => Err(status(&e)),
        }
    }

    async fn model_config(
        &self,
        request: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        let r = request.get_ref();
        let m = self
            .service
            .lookup(&r.name, &r.version)
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::ModelConfigResponse {
            config: Some(model_config(&m.desc)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::pb;
    use super::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
    use super::pb::grpc_inference_service_server::{
        GrpcInferenceService, GrpcInferenceServiceServer,
    };
    use proptest::prelude::*;
    use prost::Message;
    use prost::bytes::Bytes;
    use std::net::SocketAddr;
    use tonic::transport::Channel;
    use tonic::transport::server::TcpIncoming;
    use tonic::{Code, Request, Response, Status};

    mod conversion {
        use super::super::{grpc_timeout, infer_request, infer_response, model_config};
        use super::pb;
        use crate::server::protocol::{
            DataType, InferResponse, Limits, ModelDescription, OutputTensor, TensorData, TensorSpec,
        };
        use prost::bytes::Bytes;
        use std::time::Duration;

        fn param(c: pb::infer_parameter::ParameterChoice) -> pb::InferParameter {
            pb::InferParameter {
                parameter_choice: Some(c),
            }
        }

        fn tensor(shape: &[i64], datatype: &str) -> pb::model_infer_request::InferInputTensor {
            pb::model_infer_request::InferInputTensor {
                name: "input".into(),
                datatype: datatype.into(),
                shape: shape.to_vec(),
                parameters: Default::default(),
                contents: None,
            }
        }

        fn request(
            inputs: Vec<pb::model_infer_request::InferInputTensor>,
            raw: Vec<Vec<u8>>,
        ) -> pb::ModelInferRequest {
            pb::ModelInferRequest {
                model_name: "m".into(),
                model_version: String::new(),
                id: "r".into(),
                parameters: Default::default(),
                inputs,
                outputs: vec![],
                raw_input_contents: raw.into_iter().map(Bytes::from).collect(),
            }
        }

        fn fails(r: pb::ModelInferRequest, needle: &str) {
            let limits = Limits {
                max_body_bytes: 1 << 20,
                max_elements: 1 << 16,
            };
            match infer_request(r, &limits) {
                Err(e) => {
                    assert_eq!(e.status(), 400, "{e}");
                    assert!(
                        e.to_string().contains(needle),
                        "{e} should mention {needle:?}"
                    );
                }
                Ok(r) => panic!("accepted {r:?}"),
            }
        }

        #[test]
        fn raw_and_typed_inputs_and_parameters_become_odins_request() {
            use pb::infer_parameter::ParameterChoice::{Int64Param, StringParam, Uint64Param};
            let mut r = request(
                vec![tensor(&[1, 2], "FP32")],
                vec![[1.5f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat()],
            );
            r.parameters
                .insert("timeout".into(), param(Int64Param(2500)));
            r.parameters
                .insert("priority".into(), param(Uint64Param(3)));
            r.parameters
                .insert("tag".into(), param(StringParam("x".into())));
            r.outputs
                .push(pb::model_infer_request::InferRequestedOutputTensor {
                    name: "out".into(),
                    parameters: [("classification".to_string(), param(Int64Param(5)))].into(),
                });
            let q = infer_request(r, &Limits::default()).unwrap();
            assert_eq!(q.id.as_deref(), Some("r"));
            assert_eq!(q.timeout, Some(Duration::from_micros(2500)));
            assert_eq!(q.priority, Some(3));
            assert_eq!(q.parameters["tag"], "x");
            assert_eq!(q.inputs[0].shape, vec![1, 2]);
            assert_eq!(q.inputs[0].data, TensorData::F32(vec![1.5, -2.0]));
            assert_eq!(q.classification("out"), Some(5));

            let mut typed = tensor(&[3], "UINT8");
            typed.contents = Some(pb::InferTensorContents {
                uint_contents: vec![0, 7, 255],
                ..Default::default()
            });
            let q = infer_request(request(vec![typed], vec![]), &Limits::default()).unwrap();
            assert_eq!(q.inputs[0].data, TensorData::U8(vec![0, 7, 255]));
        }

        #[test]
        fn malformed_requests_are_invalid_arguments_naming_what_is_wrong() {
            fails(request(vec![], vec![]), "no inputs");
            fails(
                request(
                    vec![tensor(&[1], "FP32"), tensor(&[1], "FP32")],
                    vec![vec![0; 4]],
                ),
                "raw_input_contents has 1 entries for 2 inputs",
            );
            fails(
                request(vec![tensor(&[1, -3], "FP32")], vec![vec![0; 12]]),
                "dimension -3",
            );
            fails(
                request(vec![tensor(&[1], "FP99")], vec![vec![0; 4]]),
                "FP99",
            );
            // A shape far beyond the bound is refused before allocating.
            fails(
                request(vec![tensor(&[1 << 20, 1 << 20], "FP32")], vec![vec![0; 16]]),
                "elements",
            );
            fails(
                request(vec![tensor(&[2, 2], "FP32")], vec![vec![0; 12]]),
                "takes 16 bytes",
            );
            let mut both = tensor(&[1], "FP32");
            both.contents = Some(pb::InferTensorContents {
                fp32_contents: vec![1.0],
                ..Default::default()
            });
            fails(
                request(vec![both.clone()], vec![vec![0; 4]]),
                "both contents and raw",
            );
            both.shape = vec![2];
            fails(
                request(vec![both], vec![]),
                "has 2 elements but the FP32 contents have 1",
            );
            let mut half = tensor(&[1], "FP16");
            half.contents = Some(Default::default());
            fails(request(vec![half], vec![]), "raw_input_contents");
            let mut big = tensor(&[1], "UINT8");
            big.contents = Some(pb::InferTensorContents {
                uint_contents: vec![300],
                ..Default::default()
            });
            fails(request(vec![big], vec![]), "300 is not a UINT8");
            fails(request(vec![tensor(&[1], "FP32")], vec![]), "has no data");
        }

        #[test]
        fn grpc_timeout_header_has_the_units_of_the_grpc_protocol() {
            assert_eq!(grpc_timeout("5S"), Some(Duration::from_secs(5)));
            assert_eq!(grpc_timeout("250m"), Some(Duration::from_millis(250)));
            assert_eq!(grpc_timeout("7u"), Some(Duration::from_micros(7)));
            assert_eq!(grpc_timeout("1H"), Some(Duration::from_secs(3600)));
            assert_eq!(grpc_timeout("2M"), Some(Duration::from_secs(120)));
            assert_eq!(grpc_timeout("9n"), Some(Duration::from_nanos(9)));
            for bad in ["", "S", "5", "5s", "-5S", "123456789S", "1.5S"] {
                assert_eq!(grpc_timeout(bad), None, "{bad:?}");
            }
        }

        #[test]
        fn responses_are_raw_and_the_config_skips_the_batch_dimension() {
            let r = infer_response(InferResponse {
                model_name: "m".into(),
                model_version: Some("1".into()),
                id: None,
                outputs: vec![OutputTensor {
                    name: "out".into(),
                    shape: vec![1, 2],
                    data: TensorData::F32(vec![0.5, 2.0]),
                }],
            });
            assert_eq!(r.outputs[0].shape, vec![1, 2]);
            assert!(r.outputs[0].contents.is_none());
            assert_eq!(
                r.raw_output_contents[0].as_ref(),
                [0.5f32.to_le_bytes(), 2.0f32.to_le_bytes()].concat()
            );
            let d = ModelDescription {
                name: "m".into(),
                version: Some("1".into()),
                platform: "odin_onnx".into(),
                inputs: vec![TensorSpec {
                    name: "x".into(),
                    datatype: DataType::Fp32,
                    shape: vec![-1, 3, 8, 8],
                }],
                outputs: vec![TensorSpec {
                    name: "y".into(),
                    datatype: DataType::Fp32,
                    shape: vec![-1, 10],
                }],
                max_batch_size: 4,
            };
            let c = model_config(&d);
            assert_eq!(c.max_batch_size, 4);
            assert_eq!(c.input[0].dims, vec![3, 8, 8]);
            assert_eq!(c.output[0].dims, vec![10]);
            assert_eq!(c.input[0].data_type, pb::DataType::TypeFp32 as i32);
            let json = d.config_json();
            assert_eq!(json["input"][0]["dims"], serde_json::json!([3, 8, 8]));
        }
    }

    /// The decoding limit odin's server uses: a whole batch fits.
    const LARGE_LIMIT: usize = 64 << 20;

    /// tonic's default decoding limit.
    const DEFAULT_LIMIT: usize = 4 << 20;

    /// A server with one model, `resnet50`, that answers fixed values and
    /// echoes `ModelInfer` inputs back as outputs.
    struct Fixed;

    const MODEL: &str = "resnet50";

    fn known(name: &str) -> Result<(), Status> {
        if name == MODEL {
            Ok(())
        } else {
            Err(Status::not_found(format!("unknown model: {name:?}")))
        }
    }

    fn fixed_config() -> pb::ModelConfig {
        pb::ModelConfig {
            name: MODEL.into(),
            platform: "odin_onnx".into(),
            max_batch_size: 8,
            input: vec![pb::ModelInput {
                name: "input".into(),
                data_type: pb::DataType::TypeFp32.into(),
                format: pb::model_input::Format::Nchw.into(),
                dims: vec![3, 224, 224],
                is_shape_tensor: false,
                optional: false,
            }],
            output: vec![pb::ModelOutput {
                name: "output".into(),
                data_type: pb::DataType::TypeFp32.into(),
                dims: vec![1000],
                is_shape_tensor: false,
            }],
            backend: "odin".into(),
        }
    }

    #[tonic::async_trait]
    impl GrpcInferenceService for Fixed {
        async fn server_live(
            &self,
            _: Request<pb::ServerLiveRequest>,
        ) -> Result<Response<pb::ServerLiveResponse>, Status> {
            Ok(Response::new(pb::ServerLiveResponse { live: true }))
        }

        async fn server_ready(
            &self,
            _: Request<pb::ServerReadyRequest>,
        ) -> Result<Response<pb::ServerReadyResponse>, Status> {
            Ok(Response::new(pb::ServerReadyResponse { ready: true }))
        }

        async fn model_ready(
            &self,
            request: Request<pb::ModelReadyRequest>,
        ) -> Result<Response<pb::ModelReadyResponse>, Status> {
            let ready = request.get_ref().name == MODEL;
            Ok(Response::new(pb::ModelReadyResponse { ready }))
        }

        async fn server_metadata(
            &self,
            _: Request<pb::ServerMetadataRequest>,
        ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
            Ok(Response::new(pb::ServerMetadataResponse {
                name: "odin".into(),
                version: "0.1.0".into(),
                extensions: vec!["binary_tensor_data".into(), "model_configuration".into()],
            }))
        }

        async fn model_metadata(
            &self,
            request: Request<pb::ModelMetadataRequest>,
        ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
            known(&request.get_ref().name)?;
            let tensor = |name: &str, shape: &[i64]| pb::model_metadata_response::TensorMetadata {
                name: name.into(),
                datatype: "FP32".into(),
                shape: shape.to_vec(),
            };
            Ok(Response::new(pb::ModelMetadataResponse {
                name: MODEL.into(),
                versions: vec!["1".into()],
                platform: "odin_onnx".into(),
                inputs: vec![tensor("input", &[-1, 3, 224, 224])],
                outputs: vec![tensor("output", &[-1, 1000])],
                properties: Default::default(),
            }))
        }

        async fn model_infer(
            &self,
            request: Request<pb::ModelInferRequest>,
        ) -> Result<Response<pb::ModelInferResponse>, Status> {
            let request = request.into_inner();
            known(&request.model_name)?;
            let outputs = request
                .inputs
                .iter()
                .map(|input| pb::model_infer_response::InferOutputTensor {
                    name: format!("echo_{}", input.name),
                    datatype: input.datatype.clone(),
                    shape: input.shape.clone(),
                    parameters: Default::default(),
                    contents: None,
                })
                .collect();
            Ok(Response::new(pb::ModelInferResponse {
                model_name: request.model_name,
                model_version: "1".into(),
                id: request.id,
                parameters: Default::default(),
                outputs,
                raw_output_contents: request.raw_input_contents,
            }))
        }

        async fn model_config(
            &self,
            request: Request<pb::ModelConfigRequest>,
        ) -> Result<Response<pb::ModelConfigResponse>, Status> {
            known(&request.get_ref().name)?;
            Ok(Response::new(pb::ModelConfigResponse {
                config: Some(fixed_config()),
            }))
        }
    }

    /// An FP32 input `[1, n]` named `input` with its raw bytes, `n * 4`
    /// bytes of a pattern that differs from element to element.
    fn infer_request(id: &str, n: usize) -> pb::ModelInferRequest {
        let raw: Vec<u8> = (0..n * 4).map(|i| (i * 31 + i / 251) as u8).collect();
        pb::ModelInferRequest {
            model_name: MODEL.into(),
            model_version: String::new(),
            id: id.into(),
            parameters: [(
                "timeout".to_string(),
                pb::InferParameter {
                    parameter_choice: Some(pb::infer_parameter::ParameterChoice::Int64Param(
                        1_000_000,
                    )),
                },
            )]
            .into(),
            inputs: vec![pb::model_infer_request::InferInputTensor {
                name: "input".into(),
                datatype: "FP32".into(),
                shape: vec![1, n as i64],
                parameters: Default::default(),
                contents: None,
            }],
            outputs: vec![],
            raw_input_contents: vec![Bytes::from(raw)],
        }
    }

    /// Serves [`Fixed`] on an ephemeral loopback port, the server decoding
    /// messages up to `limit` bytes (`None`: tonic's default). Must run
    /// inside a runtime; the server task ends with the runtime.
    fn serve(limit: Option<usize>) -> SocketAddr {
        let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = incoming.local_addr().unwrap();
        let mut service = GrpcInferenceServiceServer::new(Fixed);
        if let Some(limit) = limit {
            service = service.max_decoding_message_size(limit);
        }
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .serve_with_incoming(service, incoming)
                .await
                .unwrap();
        });
        addr
    }

    async fn channel(addr: SocketAddr) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn client(addr: SocketAddr) -> GrpcInferenceServiceClient<Channel> {
        GrpcInferenceServiceClient::new(channel(addr).await)
            .max_decoding_message_size(LARGE_LIMIT)
            .max_encoding_message_size(LARGE_LIMIT)
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn infer_request_with_raw_contents_round_trips() {
        let request = infer_request("req-1", 1000);
        let wire = request.encode_to_vec();
        let decoded = pb::ModelInferRequest::decode(wire.as_slice()).unwrap();
        assert_eq!(decoded, request);
        assert_eq!(decoded.raw_input_contents[0].len(), 4000);
        // Decoding from a `Bytes` buffer shares it instead of copying the
        // tensor.
        let wire = Bytes::from(wire);
        let decoded = pb::ModelInferRequest::decode(wire.clone()).unwrap();
        let raw = &decoded.raw_input_contents[0];
        let start = raw.as_ptr() as usize - wire.as_ptr() as usize;
        assert!(start < wire.len());
        assert_eq!(&wire[start..start + raw.len()], &raw[..]);
    }

    #[test]
    fn triton_field_numbers_and_enum_values() {
        // Triton's model_config.proto: DataType numbering.
        let types = [
            (pb::DataType::TypeInvalid, 0),
            (pb::DataType::TypeBool, 1),
            (pb::DataType::TypeUint8, 2),
            (pb::DataType::TypeUint16, 3),
            (pb::DataType::TypeUint32, 4),
            (pb::DataType::TypeUint64, 5),
            (pb::DataType::TypeInt8, 6),
            (pb::DataType::TypeInt16, 7),
            (pb::DataType::TypeInt32, 8),
            (pb::DataType::TypeInt64, 9),
            (pb::DataType::TypeFp16, 10),
            (pb::DataType::TypeFp32, 11),
            (pb::DataType::TypeFp64, 12),
            (pb::DataType::TypeString, 13),
            (pb::DataType::TypeBf16, 14),
        ];
        for (ty, number) in types {
            assert_eq!(ty as i32, number, "{}", ty.as_str_name());
        }
        assert_eq!(pb::DataType::TypeFp32.as_str_name(), "TYPE_FP32");
        assert_eq!(pb::model_input::Format::None as i32, 0);
        assert_eq!(pb::model_input::Format::Nhwc as i32, 1);
        assert_eq!(pb::model_input::Format::Nchw as i32, 2);
        assert_eq!(pb::model_input::Format::Nchw.as_str_name(), "FORMAT_NCHW");

        // One field at a time, the key byte(s) are (number << 3) | wire type.
        let config = |c: pb::ModelConfig| c.encode_to_vec();
        let base = pb::ModelConfig::default();
        assert_eq!(
            config(pb::ModelConfig {
                name: "m".into(),
                ..base.clone()
            }),
            [0x0a, 1, b'm']
        );
        assert_eq!(
            config(pb::ModelConfig {
                platform: "p".into(),
                ..base.clone()
            }),
            [0x12, 1, b'p']
        );
        assert_eq!(
            config(pb::ModelConfig {
                max_batch_size: 8,
                ..base.clone()
            }),
            [0x20, 8]
        );
        assert_eq!(
            config(pb::ModelConfig {
                input: vec![Default::default()],
                ..base.clone()
            }),
            [0x2a, 0]
        );
        assert_eq!(
            config(pb::ModelConfig {
                output: vec![Default::default()],
                ..base.clone()
            }),
            [0x32, 0]
        );
        assert_eq!(
            config(pb::ModelConfig {
                backend: "b".into(),
                ..base
            }),
            [0x8a, 0x01, 1, b'b'] // 17 << 3 | 2 = 138, a two-byte varint
        );

        let input = pb::ModelInput {
            name: "i".into(),
            data_type: pb::DataType::TypeFp32.into(),
            format: pb::model_input::Format::Nchw.into(),
            dims: vec![3],
            is_shape_tensor: true,
            optional: true,
        };
        assert_eq!(
            input.encode_to_vec(),
            [
                0x0a, 1, b'i', 0x10, 11, 0x18, 2, 0x22, 1, 3, 0x30, 1, 0x40, 1
            ]
        );
        let output = pb::ModelOutput {
            name: "o".into(),
            data_type: pb::DataType::TypeString.into(),
            dims: vec![5],
            is_shape_tensor: true,
        };
        assert_eq!(
            output.encode_to_vec(),
            [0x0a, 1, b'o', 0x10, 13, 0x1a, 1, 5, 0x30, 1]
        );
        let request = pb::ModelConfigRequest {
            name: "m".into(),
            version: "2".into(),
        };
        assert_eq!(request.encode_to_vec(), [0x0a, 1, b'm', 0x12, 1, b'2']);
        let response = pb::ModelConfigResponse {
            config: Some(base_with_batch(1)),
        };
        assert_eq!(response.encode_to_vec(), [0x0a, 2, 0x20, 1]);
    }

    fn base_with_batch(max_batch_size: i32) -> pb::ModelConfig {
        pb::ModelConfig {
            max_batch_size,
            ..Default::default()
        }
    }

    #[test]
    fn service_has_the_seven_rpcs_and_answers_them() {
        runtime().block_on(async {
            let addr = serve(Some(LARGE_LIMIT));
            let mut client = client(addr).await;

            let live = client.server_live(pb::ServerLiveRequest {}).await.unwrap();
            assert!(live.into_inner().live);
            let ready = client
                .server_ready(pb::ServerReadyRequest {})
                .await
                .unwrap();
            assert!(ready.into_inner().ready);

            let model_ready = |name: &str| pb::ModelReadyRequest {
                name: name.into(),
                version: String::new(),
            };
            let ready = client.model_ready(model_ready(MODEL)).await.unwrap();
            assert!(ready.into_inner().ready);
            let ready = client.model_ready(model_ready("other")).await.unwrap();
            assert!(!ready.into_inner().ready);

            let meta = client
                .server_metadata(pb::ServerMetadataRequest {})
                .await
                .unwrap()
                .into_inner();
            assert_eq!(meta.name, "odin");
            assert_eq!(
                meta.extensions,
                ["binary_tensor_data", "model_configuration"]
            );

            let meta = client
                .model_metadata(pb::ModelMetadataRequest {
                    name: MODEL.into(),
                    version: String::new(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(meta.inputs.len(), 1);
            assert_eq!(meta.inputs[0].name, "input");
            assert_eq!(meta.inputs[0].datatype, "FP32");
            assert_eq!(meta.inputs[0].shape, [-1, 3, 224, 224]);
            assert_eq!(meta.outputs[0].shape, [-1, 1000]);

            let err = client
                .model_metadata(pb::ModelMetadataRequest {
                    name: "other".into(),
                    version: String::new(),
                })
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::NotFound);
            assert!(err.message().contains("\"other\""), "{}", err.message());

            let request = infer_request("small", 16);
            let response = client
                .model_infer(request.clone())
                .await
                .unwrap()
                .into_inner();
            assert_eq!(response.id, "small");
            assert_eq!(response.model_name, MODEL);
            assert_eq!(response.outputs.len(), 1);
            assert_eq!(response.outputs[0].name, "echo_input");
            assert_eq!(response.outputs[0].shape, [1, 16]);
            assert_eq!(response.raw_output_contents, request.raw_input_contents);

            let config = client
                .model_config(pb::ModelConfigRequest {
                    name: MODEL.into(),
                    version: String::new(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(config.config, Some(fixed_config()));
            let err = client
                .model_config(pb::ModelConfigRequest {
                    name: "other".into(),
                    version: String::new(),
                })
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::NotFound);
        });
    }

    /// Calls `path` with a hand-written path string, as a client built from
    /// another copy of the proto (tritonclient, perf_analyzer) does.
    async fn call_path<Req, Resp>(channel: Channel, path: &'static str, request: Req) -> Resp
    where
        Req: Message + Send + Sync + 'static,
        Resp: Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        let uri_path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
        grpc.unary(Request::new(request), uri_path, codec)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .into_inner()
    }

    #[test]
    fn method_paths_are_the_ones_triton_clients_call() {
        use tonic::server::NamedService;
        assert_eq!(
            <GrpcInferenceServiceServer<Fixed> as NamedService>::NAME,
            "inference.GRPCInferenceService"
        );
        runtime().block_on(async {
            let ch = channel(serve(None)).await;
            let live: pb::ServerLiveResponse = call_path(
                ch.clone(),
                "/inference.GRPCInferenceService/ServerLive",
                pb::ServerLiveRequest {},
            )
            .await;
            assert!(live.live);
            let ready: pb::ServerReadyResponse = call_path(
                ch.clone(),
                "/inference.GRPCInferenceService/ServerReady",
                pb::ServerReadyRequest {},
            )
            .await;
            assert!(ready.ready);
            let ready: pb::ModelReadyResponse = call_path(
                ch.clone(),
                "/inference.GRPCInferenceService/ModelReady",
                pb::ModelReadyRequest {
                    name: MODEL.into(),
                    version: String::new(),
                },
            )
            .await;
            assert!(ready.ready);
            let meta: pb::ServerMetadataResponse = call_path(
                ch.clone(),
                "/inference.GRPCInferenceService/ServerMetadata",
                pb::ServerMetadataRequest {},
            )
            .await;
            assert_eq!(meta.name, "odin");
            let meta: pb::ModelMetadataResponse = call_path(
                ch.clone(),
                "/inference.GRPCInferenceService/ModelMetadata",
                pb::ModelMetadataRequest {
                    name: MODEL.into(),
                    version: String::new(),
                },
            )
            .await;
            assert_eq!(meta.name, MODEL);
            let infer: pb::ModelInferResponse = call_path(
                ch.clone(),
                "/inference.GRPCInferenceService/ModelInfer",
                infer_request("path", 4),
            )
            .await;
            assert_eq!(infer.id, "path");
            let config: pb::ModelConfigResponse = call_path(
                ch.clone(),
                "/inference.GRPCInferenceService/ModelConfig",
                pb::ModelConfigRequest {
                    name: MODEL.into(),
                    version: String::new(),
                },
            )
            .await;
            assert_eq!(config.config.map(|c| c.max_batch_size), Some(8));

            // A method the service does not have.
            let mut grpc = tonic::client::Grpc::new(ch);
            grpc.ready().await.unwrap();
            let codec =
                tonic_prost::ProstCodec::<pb::ServerLiveRequest, pb::ServerLiveResponse>::default();
            let path = tonic::codegen::http::uri::PathAndQuery::from_static(
                "/inference.GRPCInferenceService/ModelStatistics",
            );
            let err = grpc
                .unary(Request::new(pb::ServerLiveRequest {}), path, codec)
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::Unimplemented);
        });
    }

    #[test]
    fn five_megabyte_infer_needs_the_raised_limit() {
        // 1_250_000 FP32 values: 5_000_000 bytes, over tonic's 4 MiB default.
        let n = 1_250_000;
        let request = infer_request("big", n);
        assert!(request.encoded_len() > DEFAULT_LIMIT);
        runtime().block_on(async {
            let mut raised = client(serve(Some(LARGE_LIMIT))).await;
            let response = raised
                .model_infer(request.clone())
                .await
                .unwrap()
                .into_inner();
            assert_eq!(response.id, "big");
            assert_eq!(response.outputs[0].shape, [1, n as i64]);
            assert_eq!(response.raw_output_contents.len(), 1);
            assert_eq!(response.raw_output_contents[0].len(), n * 4);
            assert_eq!(response.raw_output_contents, request.raw_input_contents);

            let mut default = client(serve(None)).await;
            let err = default.model_infer(request.clone()).await.unwrap_err();
            assert_eq!(err.code(), Code::OutOfRange, "{err}");
            assert!(
                err.message().contains(&DEFAULT_LIMIT.to_string()),
                "{}",
                err.message()
            );
            // The same server takes a request under the limit.
            let small = default
                .model_infer(infer_request("small", 1000))
                .await
                .unwrap();
            assert_eq!(small.into_inner().id, "small");
        });
    }

    proptest! {
        #[test]
        fn infer_request_round_trips(
            id in ".{0,16}",
            raws in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..256), 0..4),
            shape in proptest::collection::vec(-1i64..1 << 40, 0..5),
            int64 in any::<i64>(),
        ) {
            let request = pb::ModelInferRequest {
                model_name: MODEL.into(),
                id,
                parameters: [(
                    "k".to_string(),
                    pb::InferParameter {
                        parameter_choice: Some(pb::infer_parameter::ParameterChoice::Int64Param(int64)),
                    },
                )]
                .into(),
                inputs: raws
                    .iter()
                    .enumerate()
                    .map(|(i, _)| pb::model_infer_request::InferInputTensor {
                        name: format!("in{i}"),
                        datatype: "UINT8".into(),
                        shape: shape.clone(),
                        ..Default::default()
                    })
                    .collect(),
                raw_input_contents: raws.into_iter().map(Bytes::from).collect(),
                ..Default::default()
            };
            let wire = request.encode_to_vec();
            prop_assert_eq!(wire.len(), request.encoded_len());
            let decoded = pb::ModelInferRequest::decode(wire.as_slice()).unwrap();
            prop_assert_eq!(decoded, request);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = pb::ModelInferRequest::decode(bytes.as_slice());
            let _ = pb::ModelInferResponse::decode(bytes.as_slice());
            let _ = pb::ModelConfigResponse::decode(bytes.as_slice());
            let _ = pb::ModelMetadataResponse::decode(bytes.as_slice());
        }

        #[test]
        fn truncations_are_errors_or_lose_fields(n in 0usize..64, cut in any::<prop::sample::Index>()) {
            let request = infer_request("t", n);
            let wire = request.encode_to_vec();
            let cut = cut.index(wire.len());
            // A prefix cut inside a field is an error; one cut on a field
            // boundary decodes to a message without the fields after it
            // (prost writes no field at its default, so none is lost unseen).
            if let Ok(partial) = pb::ModelInferRequest::decode(&wire[..cut]) {
                prop_assert_ne!(partial, request);
            }
        }
    }
}
