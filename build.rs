//! Generates the gRPC messages and service of the Open Inference Protocol
//! from `proto/open_inference_grpc.proto`.
//!
//! The proto is parsed by `protox`, a protobuf compiler written in Rust, so a
//! machine without `protoc` builds odin; `tonic-prost-build` turns the
//! resulting descriptor set into prost messages and the tonic service (server
//! and client), written to `OUT_DIR/inference.rs` for
//! `src/server/grpc.rs` to include.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto/");
    println!("cargo:rerun-if-changed=build.rs");

    let fds = protox::compile(["open_inference_grpc.proto"], ["proto"])?;
    tonic_prost_build::configure()
        // The tests, and any Rust caller, speak through the generated client.
        .build_client(true)
        .build_server(true)
        // No `connect` helper: it needs tonic's client transport, which only
        // the tests enable; a caller hands the client its own channel.
        .build_transport(false)
        // Tensor payloads (`raw_input_contents`, `raw_output_contents`,
        // `bytes_contents`) as `Bytes`: decoding slices tonic's receive
        // buffer instead of copying each tensor out of it.
        .bytes(".inference")
        .compile_fds(fds)?;
    Ok(())
}
