//! Serving requests over the Open Inference Protocol (KServe v2), the
//! protocol Triton, KServe and their clients (`tritonclient`,
//! `perf_analyzer`) speak.
//!
//! - [`protocol`]: the data model and the REST codec, with no transport:
//!   what a model looks like to a client, how an infer request body is
//!   parsed into tensors and a response written back, which HTTP status or
//!   gRPC code an error becomes.
//! - [`grpc`]: the gRPC messages and service, generated at build time from
//!   the vendored `proto/open_inference_grpc.proto` (no `protoc`).
//! - [`image`]: encoded JPEG and PNG inputs to model tensors, and Triton's
//!   classification strings.
//! - [`admission`]: the bounded queue between clients and the pipeline.
//! - [`service`]: the served model, shared by the transports: a request
//!   checked, turned into frames, queued, and its outputs joined.
//! - [`stats`]: the serving metrics, with Triton's meanings.
//! - [`rest`] and [`grpc`]: the two transports; [`net`]: the small runtime
//!   they run on, off the pipeline's CPUs when there are spare ones.

pub mod admission;
pub mod grpc;
pub mod image;
pub mod net;
pub mod protocol;
pub mod rest;
pub mod service;
pub mod stats;
