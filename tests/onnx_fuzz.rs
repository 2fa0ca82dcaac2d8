//! A deterministic mutation fuzzer for the ONNX loader: the committed
//! models (`tests/fixtures/onnx/{ops,bad}`) are the corpus; each round
//! mutates one (bit flips, overwritten bytes, truncation, spliced and
//! inserted bytes, varint-like runs), decodes it, imports it, and runs
//! the imported model once if it is small. Every outcome must be a value
//! or an error: a panic anywhere fails the test, naming the seed and round
//! so it can be replayed. `ODIN_FUZZ_ROUNDS` sets the number of rounds
//! (default: a CI-sized run) and `ODIN_FUZZ_SEED` the seed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use odin::engine::onnx::{self, ImportOptions, graph, ops, proto};
use odin::engine::{Tensor, Workspace};
use prost::Message;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn corpus() -> Vec<(PathBuf, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx");
    let mut out = Vec::new();
    for dir in ["ops", "bad", "external"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "onnx") {
                let bytes = std::fs::read(&p).unwrap();
                out.push((p, bytes));
            }
        }
    }
    out.sort();
    out
}

fn mutate(rng: &mut ChaCha8Rng, mut b: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.random_range(1..=4) {
        if b.is_empty() {
            b.push(rng.random());
            continue;
        }
        let at = rng.random_range(0..b.len());
        match rng.random_range(0..7) {
            0 => b[at] ^= 1 << rng.random_range(0..8),
            1 => b[at] = rng.random(),
            2 => b.truncate(at),
            3 => {
                let len = rng.random_range(1..=16).min(b.len() - at);
                let chunk = b[at..at + len].to_vec();
                let to = rng.random_range(0..b.len());
                b.splice(to..to, chunk);
            }
            4 => {
                let n = rng.random_range(1..=8);
                let junk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                b.splice(at..at, junk);
            }
            5 => {
                // A long varint: huge lengths and dimensions.
                let run = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
                let end = (at + run.len()).min(b.len());
                b.splice(at..end, run);
            }
            _ => {
                let end = (at + rng.random_range(1..=32)).min(b.len());
                b.drain(at..end);
            }
        }
    }
    b
}

/// Values that break arithmetic: zero, signs, extremes.
const INTERESTING: &[i64] = &[
    0,
    1,
    -1,
    2,
    -2,
    3,
    7,
    1 << 31,
    -(1 << 31),
    1 << 40,
    i64::MAX,
    i64::MIN,
];

/// Mutates the decoded model instead of its bytes: attributes, dimensions,
/// inputs and op types, so the ops see values their files never hold.
fn mutate_model(rng: &mut ChaCha8Rng, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut m = proto::ModelProto::decode(bytes).ok()?;
    let g = m.graph.as_mut()?;
    let supported = ops::supported();
    for _ in 0..rng.random_range(1..=3) {
        let pick = |rng: &mut ChaCha8Rng| INTERESTING[rng.random_range(0..INTERESTING.len())];
        match rng.random_range(0..6) {
            0 if !g.node.is_empty() => {
                let n = rng.random_range(0..g.node.len());
                let node = &mut g.node[n];
                if node.attribute.is_empty() {
                    continue;
                }
                let a = rng.random_range(0..node.attribute.len());
                let attr = &mut node.attribute[a];
                if attr.i.is_some() {
                    attr.i = Some(pick(rng));
                } else if !attr.ints.is_empty() {
                    let k = rng.random_range(0..attr.ints.len());
                    attr.ints[k] = pick(rng);
                    if rng.random_range(0..3) == 0 {
                        attr.ints.pop();
                    }
                } else if attr.f.is_some() {
                    attr.f =
                        Some([0.0, -1.0, f32::NAN, f32::INFINITY, 1e30][rng.random_range(0..5)]);
                }
            }
            1 if !g.initializer.is_empty() => {
                let t = rng.random_range(0..g.initializer.len());
                let dims = &mut g.initializer[t].dims;
                if dims.is_empty() {
                    dims.push(pick(rng));
                } else {
                    let k = rng.random_range(0..dims.len());
                    dims[k] = [0, 1, 2, -1, 1 << 40][rng.random_range(0..5)];
                }
            }
            2 if !g.node.is_empty() => {
                let n = rng.random_range(0..g.node.len());
                let names: Vec<String> = g.node.iter().flat_map(|n| n.output.clone()).collect();
                let node = &mut g.node[n];
                if node.input.is_empty() {
                    continue;
                }
                let k = rng.random_range(0..node.input.len());
                match rng.random_range(0..3) {
                    0 => node.input[k] = String::new(),
                    1 => node.input[k] = names[rng.random_range(0..names.len())].clone(),
                    _ => {
                        node.input.remove(k);
                    }
                }
            }
            3 if !g.node.is_empty() => {
                let n = rng.random_range(0..g.node.len());
                g.node[n].op_type =
                    Some(supported[rng.random_range(0..supported.len())].to_string());
            }
            4 => {
                let dims = g
                    .input
                    .first_mut()
                    .and_then(|i| i.r#type.as_mut())
                    .and_then(|t| t.tensor_type.as_mut())
                    .and_then(|t| t.shape.as_mut());
                if let Some(s) = dims
                    && !s.dim.is_empty()
                {
                    let k = rng.random_range(0..s.dim.len());
                    s.dim[k].dim_value = Some([0, 1, 2, 5, -3, 1 << 33][rng.random_range(0..6)]);
                }
            }
            _ => {
                if let Some(o) = m.opset_import.first_mut() {
                    o.version = Some(rng.random_range(6..=22));
                }
            }
        }
    }
    Some(m.encode_to_vec())
}

/// Decodes, imports and (if small) runs one mutated file.
fn exercise(bytes: &[u8], dir: &Path) -> &'static str {
    let Ok(proto) = graph::decode_model(bytes) else {
        return "refused by the decoder";
    };
    let Ok(imp) = onnx::import(&proto, Some(dir), "fuzz", &ImportOptions::default()) else {
        return "refused by the importer";
    };
    if imp.model.cost().flops < 50_000_000 {
        let x = Tensor::zeros(imp.model.input());
        let y = imp.model.forward(&x, &mut Workspace::new());
        assert_eq!(y.shape(), imp.model.output());
        return "imported and ran";
    }
    "imported"
}

#[test]
fn mutated_models_never_panic_the_loader() {
    let rounds: usize = std::env::var("ODIN_FUZZ_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let corpus = corpus();
    assert!(corpus.len() > 20, "the corpus is the committed fixtures");
    let seed = std::env::var("ODIN_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x0d1e);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut seen = std::collections::BTreeMap::<&str, usize>::new();
    // Panics are caught and reported below; keep their messages quiet.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failure = None;
    for round in 0..rounds {
        let (path, bytes) = &corpus[rng.random_range(0..corpus.len())];
        let mutated = if rng.random_range(0..2) == 0 {
            mutate(&mut rng, bytes.clone())
        } else {
            mutate_model(&mut rng, bytes).unwrap_or_else(|| mutate(&mut rng, bytes.clone()))
        };
        let dir = path.parent().unwrap();
        match catch_unwind(AssertUnwindSafe(|| exercise(&mutated, dir))) {
            Ok(what) => *seen.entry(what).or_default() += 1,
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let saved = std::env::temp_dir().join(format!("odin-fuzz-{seed:#x}-{round}.onnx"));
                let _ = std::fs::write(&saved, &mutated);
                failure = Some(format!(
                    "seed {seed:#x} round {round}: mutating {} panicked: {msg} (the input is saved as {})",
                    path.display(),
                    saved.display()
                ));
                break;
            }
        }
    }
    std::panic::set_hook(hook);
    println!("{rounds} rounds: {seen:?}");
    if let Some(f) = failure {
        panic!("{f}");
    }
    // The mutations reach past the decoder, not only into it.
    assert!(
        seen.get("imported and ran").copied().unwrap_or(0) > rounds / 20,
        "{seen:?}"
    );
}
