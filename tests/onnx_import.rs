//! Imported ONNX models against onnxruntime, and the unit invariant.
//!
//! Every model under `tests/fixtures/onnx/{light,ops,external}` comes with
//! an input and onnxruntime's output for it (made by the scripts beside
//! them, which name the onnxruntime version in `manifest.json`). The six
//! peer graphs, open-nsfw and the PP-OCRv4 recogniser are too large to commit: `scripts/fixtures.py`
//! builds or fetches them into `.fixtures/` (CI runs it), and their
//! onnxruntime outputs are committed. Without `.fixtures/` these tests say
//! so and pass outside CI; under CI (`CI` set) they fail.

mod common;

use std::path::{Path, PathBuf};

use odin::engine::onnx::{self, ImportOptions};
use odin::engine::{Model, Tensor, Workspace, npy};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Case {
    name: String,
    model: PathBuf,
    input: PathBuf,
    ort: PathBuf,
}

/// Every `X.onnx` in `dir` with `X_input.npy` and `X_ort.npy` beside it.
fn cases_in(dir: &Path) -> Vec<Case> {
    let mut out: Vec<Case> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| {
            let p = e.ok()?.path();
            let stem = p.file_stem()?.to_str()?.to_string();
            (p.extension()? == "onnx").then_some(())?;
            let input = dir.join(format!("{stem}_input.npy"));
            let ort = dir.join(format!("{stem}_ort.npy"));
            (input.is_file() && ort.is_file()).then(|| Case {
                name: stem,
                model: p.clone(),
                input,
                ort,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// What a comparison found.
struct Outcome {
    units: usize,
    max_err: f32,
    max_abs: f32,
}

/// Imports `c`, runs its input, compares with onnxruntime (max abs error
/// within 1e-4 of the output's max abs, argmax of each row equal) and
/// checks that every split `0..k, k..N` gives the whole pass bit for bit.
fn check(c: &Case) -> Result<Outcome, String> {
    let input = npy::read(&c.input).map_err(|e| e.to_string())?;
    let want = npy::read(&c.ort).map_err(|e| e.to_string())?;
    let opts = ImportOptions {
        input_shape: Some(input.dims.clone()),
    };
    let imp = onnx::load(&c.model, &opts).map_err(|e| format!("import: {e}"))?;
    if imp.output.1 != want.dims {
        return Err(format!(
            "output dims {:?}, onnxruntime {:?}",
            imp.output.1, want.dims
        ));
    }
    let model = &imp.model;
    let x = Tensor::from_vec(model.input(), input.values);
    let outs = trace(model, &x);
    let got = outs.last().expect("a model has units").as_slice();
    let max_abs = want.values.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_err = got.iter().zip(&want.values).fold(0f32, |m, (a, b)| {
        if (a - b).abs().is_nan() {
            f32::INFINITY
        } else {
            m.max((a - b).abs())
        }
    });
    if max_err > 1e-4 * max_abs.max(1e-6) {
        return Err(format!(
            "max abs error {max_err:e} against onnxruntime, output max abs {max_abs:e}"
        ));
    }
    let batch = want.dims.first().copied().unwrap_or(1).max(1);
    let row = want.values.len() / batch;
    if row > 1 && want.dims.len() <= 2 {
        for (b, (g, w)) in got.chunks(row).zip(want.values.chunks(row)).enumerate() {
            if argmax(g) != argmax(w) {
                return Err(format!(
                    "row {b}: argmax {} but onnxruntime {}",
                    argmax(g),
                    argmax(w)
                ));
            }
        }
    }
    let whole = model.forward(&x, &mut Workspace::new());
    if whole.as_slice() != got {
        return Err("the whole forward pass differs from unit by unit".into());
    }
    let n = model.len();
    for k in 1..n {
        let tail = model.forward_range(k..n, &outs[k - 1], &mut Workspace::new());
        if tail != whole {
            return Err(format!(
                "units 0..{k} then {k}..{n} differ from the whole pass"
            ));
        }
    }
    Ok(Outcome {
        units: n,
        max_err,
        max_abs,
    })
}

fn trace(model: &Model, x: &Tensor) -> Vec<Tensor> {
    let mut ws = Workspace::new();
    let mut outs: Vec<Tensor> = Vec::with_capacity(model.len());
    for i in 0..model.len() {
        let y = model.forward_range(i..i + 1, outs.last().unwrap_or(x), &mut ws);
        assert_eq!(y.shape(), model.units()[i].output, "unit {i} output shape");
        outs.push(y);
    }
    outs
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| {
            if x > bv { (i, x) } else { (bi, bv) }
        })
        .0
}

/// Runs every case, prints a line each, and fails naming every case that
/// did not hold.
fn check_all(cases: &[Case]) {
    assert!(!cases.is_empty(), "no cases found");
    let mut failed = Vec::new();
    for c in cases {
        match check(c) {
            Ok(o) => println!(
                "{:<32} {:>4} units, max abs error {:.2e} (output max abs {:.3e})",
                c.name, o.units, o.max_err, o.max_abs
            ),
            Err(e) => {
                println!("{:<32} FAILED: {e}", c.name);
                failed.push(format!("{}: {e}", c.name));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} failed:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
}

/// The fetched fixture at `path`, or `None` (with a note) when it is
/// missing outside CI.
fn fetched(path: &Path) -> Option<()> {
    if path.is_file() {
        return Some(());
    }
    common::skip(format!(
        "{} is missing (run `python3 scripts/fixtures.py all` to fetch it; .ci/run does)",
        path.display()
    ));
    None
}

#[test]
fn model_zoo_topologies_match_onnxruntime_and_split_anywhere() {
    check_all(&cases_in(&root().join("tests/fixtures/onnx/light")));
}

#[test]
fn op_models_match_onnxruntime_and_split_anywhere() {
    let mut cases = cases_in(&root().join("tests/fixtures/onnx/ops"));
    cases.extend(cases_in(&root().join("tests/fixtures/onnx/external")));
    check_all(&cases);
}

#[test]
fn peer_graphs_match_onnxruntime_and_split_anywhere() {
    let dir = root().join(".fixtures/peer");
    let mut cases = Vec::new();
    for name in odin::engine::zoo::NAMES {
        let model = dir.join(format!("{name}.onnx"));
        if fetched(&model).is_none() {
            return;
        }
        cases.push(Case {
            name: name.to_string(),
            input: dir.join(format!("{name}_input.npy")),
            ort: root().join(format!("tests/fixtures/onnx/peer/{name}_ort.npy")),
            model,
        });
    }
    check_all(&cases);
}

#[test]
fn open_nsfw_with_trained_weights_matches_onnxruntime() {
    let model = root().join(".fixtures/opennsfw/open-nsfw.onnx");
    if fetched(&model).is_none() {
        return;
    }
    let dir = root().join("tests/fixtures/onnx/opennsfw");
    check_all(&[Case {
        name: "open-nsfw".into(),
        model,
        input: dir.join("open-nsfw_input.npy"),
        ort: dir.join("open-nsfw_ort.npy"),
    }]);
}

#[test]
fn ocr_recogniser_with_trained_weights_reads_the_line_as_onnxruntime_does() {
    let model = root().join(".fixtures/ocr/ch_PP-OCRv4_rec_infer.onnx");
    if fetched(&model).is_none() {
        return;
    }
    let dir = root().join("tests/fixtures/onnx/ocr");
    let case = Case {
        name: "ch_PP-OCRv4_rec_infer".into(),
        model,
        input: dir.join("ch_PP-OCRv4_rec_infer_input.npy"),
        ort: dir.join("ch_PP-OCRv4_rec_infer_ort.npy"),
    };
    check_all(std::slice::from_ref(&case));
    // Each of the 40 steps picks the same of the 6625 classes: the text
    // CTC decodes to is the same.
    let x = npy::read(&case.input).unwrap();
    let want = npy::read(&case.ort).unwrap();
    let imp = onnx::load(
        &case.model,
        &ImportOptions {
            input_shape: Some(x.dims.clone()),
        },
    )
    .unwrap();
    let got = imp.model.forward(
        &Tensor::from_vec(imp.model.input(), x.values),
        &mut Workspace::new(),
    );
    let classes = *want.dims.last().unwrap();
    assert_eq!(classes, 6625);
    let steps: Vec<(usize, usize)> = got
        .as_slice()
        .chunks(classes)
        .zip(want.values.chunks(classes))
        .map(|(g, w)| (argmax(g), argmax(w)))
        .collect();
    assert_eq!(steps.len(), 40);
    let differ: Vec<_> = steps
        .iter()
        .enumerate()
        .filter(|(_, (g, w))| g != w)
        .collect();
    assert!(differ.is_empty(), "steps whose class differs: {differ:?}");
    assert!(
        steps.iter().filter(|(_, w)| *w != 0).count() >= 10,
        "the line reads as mostly blank: {steps:?}"
    );
}

/// The kernels odin runs after fusion, by kind.
fn kernels(rel: &str) -> std::collections::BTreeMap<String, usize> {
    let path = root().join("tests/fixtures/onnx").join(rel);
    onnx::load(&path, &ImportOptions::default())
        .unwrap()
        .kernels
}

#[test]
fn fusion_maps_common_patterns_onto_engine_kernels() {
    let map = |pairs: &[(&str, usize)]| -> std::collections::BTreeMap<String, usize> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    };
    // Conv -> BatchNormalization -> Relu: one convolution.
    assert_eq!(kernels("ops/conv_bn_relu.onnx"), map(&[("conv", 1)]));
    // Gemm -> BN -> Relu and MatMul -> Mul -> Add: two dense layers.
    assert_eq!(kernels("ops/gemm_bn_relu.onnx"), map(&[("dense", 2)]));
    // Residual blocks: convolutions and in-place adds, nothing else; a
    // join after a convolution rides in its store.
    let k = kernels("ops/residual_block.onnx");
    assert!(
        k.keys()
            .all(|k| k == "conv" || k == "add" || k == "conv_add"),
        "{k:?}"
    );
    assert!(k.contains_key("conv_add"), "{k:?}");
    // DenseNet: BN after a conv folds into it; BN after a concat (as Mul,
    // Add and Relu) becomes one per-channel pass; nothing runs generically.
    let k = kernels("light/light_densenet121.onnx");
    assert_eq!(k.get("conv"), Some(&121), "{k:?}");
    assert_eq!(k.get("affine"), Some(&62), "{k:?}");
    for slow in ["elementwise", "batchnorm", "relu", "op"] {
        assert!(!k.contains_key(slow), "{slow} left in {k:?}");
    }
}

#[test]
fn dense_blocks_are_cut_between_layers() {
    let path = root().join("tests/fixtures/onnx/light/light_densenet121.onnx");
    let imp = onnx::load(&path, &ImportOptions::default()).unwrap();
    // 58 dense layers, each its own unit once the concatenations chain.
    let concat_units = imp
        .units
        .iter()
        .filter(|u| u.ops.contains(&"Concat".to_string()))
        .count();
    assert_eq!(
        concat_units,
        58,
        "{:?}",
        imp.units.iter().map(|u| &u.kind).collect::<Vec<_>>()
    );
    assert!(imp.units.len() > 60, "{} units", imp.units.len());
}
