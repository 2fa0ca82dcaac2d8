//! `odin profile` as a user runs it: the real binary, real flags.

use std::process::{Command, Output};

fn odin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_odin"))
        .args(args)
        .output()
        .expect("run odin")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn json_profile_has_the_documented_fields_and_is_saved() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mobilenet.json");
    let o = odin(&[
        "profile",
        "--model",
        "mobilenet_v2",
        "--runs",
        "2",
        "--warmup",
        "0",
        "--json",
        "--cpu",
        "0",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("stdout is one JSON object");
    assert_eq!(v["model"], "mobilenet_v2");
    assert_eq!(v["cpu_index"], 0);
    assert!(v["cpu"].as_str().is_some_and(|s| !s.is_empty()));
    let units = v["units"].as_array().unwrap();
    assert_eq!(units.len(), 21, "conv, 17 blocks, conv, pool, classifier");
    for (i, u) in units.iter().enumerate() {
        assert_eq!(u["index"], i);
        assert!(u["kind"].is_string());
        assert!(u["flops"].as_u64().unwrap() > 0);
        assert!(u["median_ms"].as_f64().unwrap() > 0.0);
    }
    let total = v["total_ms"].as_f64().unwrap();
    assert!((v["images_per_s"].as_f64().unwrap() - 1000.0 / total).abs() < 1e-6 * 1000.0 / total);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(saved, v);
}

#[test]
fn table_lists_every_unit_and_the_total() {
    let o = odin(&[
        "profile", "--model", "alexnet", "--runs", "1", "--warmup", "0",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    for name in ["features.0", "features.12", "avgpool", "classifier.6"] {
        assert!(out.contains(name), "{name} missing from\n{out}");
    }
    assert!(
        out.lines().last().unwrap().starts_with("total ") && out.contains("images/s"),
        "{out}"
    );
}

#[test]
fn unknown_model_is_one_line_listing_the_models_exit_2() {
    let o = odin(&["profile", "--model", "resnet51"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    for m in ["resnet51", "alexnet", "vgg16", "resnet50", "mobilenet_v2"] {
        assert!(err.contains(m), "{m} not in {err}");
    }
}

#[test]
fn bad_flags_are_one_line_naming_the_valid_ones_exit_2() {
    let o = odin(&["profile", "--model", "alexnet", "--frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("--frobnicate") && err.contains("--runs") && err.contains("--json"),
        "{err}"
    );

    let o = odin(&["profile", "--model", "alexnet", "--runs", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o).trim_end().lines().count(), 1, "{}", stderr(&o));

    let o = odin(&["profile", "--model", "alexnet", "--cpu", "4095"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("4095") && err.contains("not online"), "{err}");
}
