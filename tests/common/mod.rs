//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use ndarray::{Array2, Array4};
use odin::engine::ops::{
    Activation, AdaptiveAvgPool2d, Conv2dConfig, MaxPool2d, PoolConfig, Residual, conv2d, dense,
};
use odin::engine::{Layer, Model, Shape, Tensor, Workspace};

fn weights(len: usize, seed: u64) -> Vec<f32> {
    Tensor::random(Shape::new(1, 1, 1, len), seed)
        .into_vec()
        .into_iter()
        .map(|v| v * 0.3)
        .collect()
}

fn conv(
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    groups: usize,
    seed: u64,
) -> odin::engine::ops::Conv2d {
    let w = Array4::from_shape_vec(
        (cout, cin / groups, k, k),
        weights(cout * cin / groups * k * k, seed),
    )
    .unwrap();
    let cfg = Conv2dConfig {
        stride,
        padding: k / 2,
        groups,
    };
    conv2d(w, Some(weights(cout, seed + 1)), cfg).with_activation(Activation::Relu)
}

/// A small real CNN (12 units on 3x32x32) so tests can push many frames.
pub fn tiny_model() -> Arc<Model> {
    let mut m = Model::new("tiny", Shape::new(1, 3, 32, 32));
    m.push("conv1", conv(3, 16, 3, 1, 1, 1)).unwrap();
    m.push("pool1", MaxPool2d(PoolConfig::new(2, 2))).unwrap();
    for i in 0..3 {
        let body: Vec<Box<dyn Layer>> = vec![
            Box::new(conv(16, 16, 3, 1, 1, 10 + i)),
            Box::new(conv(16, 16, 3, 1, 16, 20 + i)),
        ];
        m.push(
            format!("block{i}"),
            Residual::new("basic", body, None, Activation::Relu),
        )
        .unwrap();
    }
    m.push("conv2", conv(16, 32, 3, 2, 1, 3)).unwrap();
    m.push("conv3", conv(32, 32, 1, 1, 1, 4)).unwrap();
    m.push("conv4", conv(32, 32, 3, 1, 2, 5)).unwrap();
    m.push("conv5", conv(32, 64, 3, 2, 1, 6)).unwrap();
    m.push("conv6", conv(64, 64, 1, 1, 1, 7)).unwrap();
    m.push("gap", AdaptiveAvgPool2d::global()).unwrap();
    let fc = dense(
        Array2::from_shape_vec((10, 64), weights(640, 8)).unwrap(),
        weights(10, 9),
    );
    m.push("fc", fc).unwrap();
    Arc::new(m)
}

/// A few seeded inputs for `model`.
pub fn inputs(model: &Model, count: usize) -> Vec<Tensor> {
    (0..count as u64)
        .map(|i| Tensor::random(model.input(), 1000 + i))
        .collect()
}

/// The single-threaded forward of every input.
pub fn reference_outputs(model: &Model, inputs: &[Tensor]) -> Vec<Tensor> {
    let mut ws = Workspace::new();
    inputs.iter().map(|x| model.forward(x, &mut ws)).collect()
}

/// Whether the tests run under CI (`CI` set, and not empty or `false`),
/// where the machine is prepared for every test and `.ci/run` runs them
/// as root.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// Reports that a test cannot run here and why: writes `SKIP: reason` to
/// the terminal (past the harness's capture, so a skip shows in a plain
/// `cargo test` run instead of passing silently), and panics under CI
/// ([`in_ci`]), so a CI run fails instead of passing a test that did not
/// run. The caller then returns, or leaves out the part that needed it.
pub fn skip(reason: impl std::fmt::Display) {
    use std::io::Write;
    // Not eprintln!: the harness captures that for a test that passes.
    let _ = writeln!(std::io::stderr(), "SKIP: {reason}");
    assert!(!in_ci(), "skipped under CI: {reason}");
}

/// The Python that can import `modules` (a comma-separated list, as an
/// `import` statement takes it): `ODIN_TEST_PYTHON`, else the virtualenv
/// `.ci/run` makes (`.venv`). `None`, through [`skip`], when neither can;
/// `install` says what `.ci/run` installs for them.
pub fn python_with(modules: &str, install: &str) -> Option<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates: Vec<std::path::PathBuf> = std::env::var_os("ODIN_TEST_PYTHON")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain([root.join(".venv/bin/python")])
        .collect();
    for p in &candidates {
        let ok = std::process::Command::new(p)
            .args(["-c", &format!("import {modules}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(p.clone());
        }
    }
    skip(format!(
        "no Python with {modules} in {candidates:?} (run .ci/run, which installs {install} \
         into .venv, or set ODIN_TEST_PYTHON)"
    ));
    None
}
