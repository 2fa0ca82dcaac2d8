//! `odin inspect`, `odin infer`, `odin profile` and `odin run` on ONNX
//! files, as a user runs them: the real binary.

use std::path::PathBuf;
use std::process::{Command, Output};

use odin::engine::npy;

mod common;

fn odin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_odin"))
        .args(args)
        .output()
        .expect("odin runs")
}

fn fixture(rel: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/onnx")
        .join(rel)
        .to_string_lossy()
        .into_owned()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Each malformed file is refused with exit 2 and a message naming what is
/// wrong, never a panic.
#[test]
fn bad_files_are_clear_errors() {
    let cases: &[(&str, &[&str])] = &[
        ("truncated.onnx", &["not an ONNX model", "protobuf"]),
        ("random_bytes.onnx", &["not an ONNX model"]),
        ("empty.onnx", &["empty"]),
        ("text.onnx", &["not an ONNX model"]),
        ("cycle.onnx", &["cycle"]),
        (
            "missing_tensor.onnx",
            &["conv.weight", "no node, initializer or input provides"],
        ),
        (
            "unsupported_op_lstm.onnx",
            &["LSTM", "not supported", "odin supports", "Conv"],
        ),
        ("unknown_domain_op.onnx", &["Frobnicate", "domain"]),
        (
            "constantofshape_huge.onnx",
            &["ConstantOfShape", "elements"],
        ),
        ("dims_overflow.onnx", &["overflows"]),
        ("negative_dim.onnx", &["negative dimension"]),
        ("raw_data_size_mismatch.onnx", &["raw data is 8 bytes"]),
        ("external_traversal.onnx", &["leaves the model's directory"]),
        ("external_absolute.onnx", &["relative path"]),
        ("external_missing_file.onnx", &["does_not_exist.data"]),
        ("external_out_of_range.onnx", &["past its end"]),
    ];
    for (file, words) in cases {
        let path = fixture(&format!("bad/{file}"));
        let out = odin(&["inspect", &path]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {err}");
        assert!(!err.contains("panicked"), "{file}: {err}");
        for w in *words {
            assert!(err.contains(w), "{file}: {w:?} not in {err}");
        }
    }
}

#[test]
fn inspect_reports_units_and_ops() {
    let path = fixture("light/light_resnet50.onnx");
    let out = odin(&["inspect", &path, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["opset"], 9);
    assert_eq!(v["input"]["shape"], serde_json::json!([1, 3, 224, 224]));
    assert_eq!(v["output"]["shape"], serde_json::json!([1, 1000]));
    assert_eq!(v["file_ops"]["Conv"], 53);
    // Batch norms fold into the convolutions: none is left to run.
    assert!(v["kernels"].get("batchnorm").is_none(), "{}", v["kernels"]);
    let units = v["units"].as_array().unwrap();
    // Stem conv, pool, 16 bottlenecks, then the head: each block one unit.
    let residual = units.iter().filter(|u| u["kind"] == "residual").count();
    assert_eq!(residual, 16, "{units:?}");
    let flops: u64 = units.iter().map(|u| u["flops"].as_u64().unwrap()).sum();
    assert_eq!(flops, v["flops"].as_u64().unwrap());
    // The table names the same things.
    let out = odin(&["inspect", &path]);
    let t = text(&out.stdout);
    assert!(
        t.contains("opset 9") && t.contains("residual") && t.contains("Sum"),
        "{t}"
    );
}

#[test]
fn inspect_refuses_a_mismatched_input_shape() {
    let path = fixture("light/light_resnet50.onnx");
    let out = odin(&["inspect", &path, "--input-shape", "1,3,256,256"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("dimension 2 is 224"), "{err}");
}

#[test]
fn infer_writes_what_onnxruntime_computes() {
    let dir = tempfile::tempdir().unwrap();
    let outp = dir.path().join("out.npy");
    let out = odin(&[
        "infer",
        "--model",
        &fixture("light/light_squeezenet.onnx"),
        "--input",
        &fixture("light/light_squeezenet_input.npy"),
        "--output",
        outp.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("top-5"), "{stdout}");
    let got = npy::read(&outp).unwrap();
    let want = npy::read(std::path::Path::new(&fixture(
        "light/light_squeezenet_ort.npy",
    )))
    .unwrap();
    assert_eq!(got.dims, want.dims);
    let max = want.values.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (g, w) in got.values.iter().zip(&want.values) {
        assert!((g - w).abs() <= 1e-4 * max, "{g} vs {w}");
    }
}

#[test]
fn infer_refuses_wrong_inputs() {
    let dir = tempfile::tempdir().unwrap();
    // float64 data.
    let f64_path = dir.path().join("f64.npy");
    let mut f64s = npy::encode(&[1, 3, 224, 224], &[]);
    let at = f64s.windows(3).position(|w| w == b"<f4").unwrap();
    f64s[at..at + 3].copy_from_slice(b"<f8");
    f64s.extend(std::iter::repeat_n(0u8, 8 * 3 * 224 * 224));
    std::fs::write(&f64_path, f64s).unwrap();
    // The right dtype, the wrong shape.
    let shape_path = dir.path().join("shape.npy");
    npy::write(&shape_path, &[1, 3, 100, 100], &vec![0.0; 30000]).unwrap();
    let model = fixture("light/light_squeezenet.onnx");
    for (input, words) in [
        (&f64_path, &["float32"][..]),
        (&shape_path, &["dimension 2 is 224"][..]),
    ] {
        let out = odin(&[
            "infer",
            "--model",
            &model,
            "--input",
            input.to_str().unwrap(),
        ]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        for w in words {
            assert!(err.contains(w), "{w:?} not in {err}");
        }
    }
    // A built-in model takes exactly its input.
    let out = odin(&[
        "infer",
        "--model",
        "resnet18",
        "--input",
        shape_path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("resnet18 takes"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn profile_and_run_take_an_onnx_file() {
    let model = fixture("ops/residual_block.onnx");
    let out = odin(&[
        "profile", "--model", &model, "--json", "--runs", "3", "--warmup", "1",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["model"], "residual_block");
    assert!(!v["units"].as_array().unwrap().is_empty());

    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("s.json");
    let out = odin(&[
        "run",
        "--model",
        &fixture("light/light_squeezenet.onnx"),
        "--pes",
        "0;1",
        "--duration",
        "2",
        "--json-summary",
        summary.to_str().unwrap(),
        "--state-dir",
        dir.path().join("state").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(v["model"], "light_squeezenet");
    assert!(v["frames"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["stages"].as_array().unwrap().len(), 2);

    // The simulator takes the file's units and their measured costs.
    let profile = dir.path().join("profile.json");
    let squeezenet = fixture("light/light_squeezenet.onnx");
    let out = odin(&[
        "profile",
        "--model",
        &squeezenet,
        "--runs",
        "2",
        "--warmup",
        "0",
        "--output",
        profile.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = odin(&[
        "simulate",
        "--model",
        &squeezenet,
        "--pe-count",
        "3",
        "--scenario",
        "long-lived",
        "--frames",
        "300",
        "--profile",
        profile.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.to_string().contains("light_squeezenet"), "{v}");
    // A profile of another model does not fit.
    let other = fixture("ops/residual_block.onnx");
    let out = odin(&[
        "simulate",
        "--model",
        &other,
        "--pe-count",
        "2",
        "--scenario",
        "none",
        "--profile",
        profile.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    // A missing file is a usage error naming it.
    let out = odin(&["run", "--model", "/nonexistent/m.onnx", "--duration", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("/nonexistent/m.onnx"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn infer_takes_a_picture_through_the_same_path_as_a_tensor() {
    use odin::server::image::{PreprocessConfig, preprocess};
    let dir = tempfile::tempdir().unwrap();
    // A 300x260 gradient picture.
    let img = image::RgbImage::from_fn(300, 260, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    });
    let png = dir.path().join("pic.png");
    img.save(&png).unwrap();
    let labels = dir.path().join("labels.txt");
    std::fs::write(
        &labels,
        (0..1000).map(|i| format!("class{i}\n")).collect::<String>(),
    )
    .unwrap();
    let model = fixture("light/light_squeezenet.onnx");
    let from_image = dir.path().join("a.npy");
    let out = odin(&[
        "infer",
        "--model",
        &model,
        "--image",
        png.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--output",
        from_image.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Triton's classification strings: score:index:label.
    assert!(stdout.contains(":class"), "{stdout}");

    // The same picture preprocessed here and given as a tensor: the same output.
    let bytes = std::fs::read(&png).unwrap();
    let x = preprocess(&bytes, &PreprocessConfig::default(), [1, 3, 224, 224]).unwrap();
    let tensor = dir.path().join("x.npy");
    npy::write(&tensor, &[1, 3, 224, 224], &x).unwrap();
    let from_tensor = dir.path().join("b.npy");
    let out = odin(&[
        "infer",
        "--model",
        &model,
        "--input",
        tensor.to_str().unwrap(),
        "--output",
        from_tensor.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        npy::read(&from_image).unwrap(),
        npy::read(&from_tensor).unwrap()
    );

    // Not a picture: exit 2, saying so.
    let out = odin(&[
        "infer",
        "--model",
        &model,
        "--image",
        &fixture("light/light_squeezenet_input.npy"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--image"),
        "{}",
        text(&out.stderr)
    );
}

/// Every kernel family the CPU has (AVX-512, AVX2+FMA, portable: the last
/// two as a CPU without AVX-512 runs them, forced by `ODIN_ISA`) computes
/// what onnxruntime does on the peer graphs, which between them take every
/// convolution path (Winograd, the packed and the small-N GEMMs, grouped,
/// depthwise, strided) and both dense kernels.
#[test]
fn every_kernel_family_computes_what_onnxruntime_computes() {
    use odin::engine::isa::Isa;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let families: Vec<Isa> = Isa::ALL.into_iter().filter(|i| i.supported()).collect();
    assert!(families.contains(&Isa::Portable));
    for name in ["resnet18", "mobilenet_v2", "alexnet"] {
        let model = root.join(format!(".fixtures/peer/{name}.onnx"));
        if !model.is_file() {
            common::skip(format!(
                "{} is missing (`python3 scripts/fixtures.py peer` makes it; .ci/run does)",
                model.display()
            ));
            return;
        }
        let input = root.join(format!(".fixtures/peer/{name}_input.npy"));
        let want =
            npy::read(&root.join(format!("tests/fixtures/onnx/peer/{name}_ort.npy"))).unwrap();
        let max = want.values.iter().fold(0f32, |m, v| m.max(v.abs()));
        for isa in &families {
            let dir = tempfile::tempdir().unwrap();
            let outp = dir.path().join("out.npy");
            let out = Command::new(env!("CARGO_BIN_EXE_odin"))
                .env("ODIN_ISA", isa.name())
                .args(["infer", "--model", model.to_str().unwrap()])
                .args(["--input", input.to_str().unwrap()])
                .args(["--output", outp.to_str().unwrap()])
                .output()
                .expect("odin runs");
            let stdout = text(&out.stdout);
            assert!(out.status.success(), "{name} {isa}: {}", text(&out.stderr));
            assert!(
                stdout.contains(&format!("({isa} kernels, f32)")),
                "{name}: ODIN_ISA={isa} not in effect: {stdout}"
            );
            let got = npy::read(&outp).unwrap();
            assert_eq!(got.dims, want.dims, "{name} {isa}");
            let err = got
                .values
                .iter()
                .zip(&want.values)
                .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
            assert!(
                err <= 1e-4 * max,
                "{name} on {isa} kernels: max abs error {err:e} against onnxruntime (output max {max:e})"
            );
        }
    }
}
