//! Numbers out of range on the command line, in a configuration file and in
//! a scenario file: the real binary exits 2 with one line naming the flag
//! or field and the valid range, before doing any work.

use std::process::Command;

/// Runs odin with `args`; its exit code and standard error.
fn odin(args: &[&str]) -> (Option<i32>, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_odin"))
        .args(args)
        .output()
        .expect("run odin");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn refused(args: &[&str], needles: &[&str]) {
    let (code, err) = odin(args);
    assert_eq!(code, Some(2), "{args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: {err:?} lacks {n:?}");
    }
}

#[test]
fn flags_out_of_range_are_usage_errors_naming_the_flag_and_range() {
    // A small simulation, with `extra` flags given instead of its own.
    let sim = |extra: &[&'static str]| {
        let mut v = vec!["simulate", "--model", "alexnet", "--scenario", "none"];
        for (flag, value) in [("--pe-count", "2"), ("--frames", "20")] {
            if !extra.contains(&flag) {
                v.extend([flag, value]);
            }
        }
        v.extend_from_slice(extra);
        v
    };
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            sim(&["--pe-count", "1000000"]),
            vec!["--pe-count 1000000", "1 to 4096"],
        ),
        (
            sim(&["--frames", "18446744073709551615"]),
            vec!["--frames 18446744073709551615", "2 to 10000000"],
        ),
        (
            sim(&["--slo-latency", "NaN"]),
            vec!["--slo-latency NaN", "0.001 to 86400000"],
        ),
        (
            sim(&["--slo-latency=-5"]),
            vec!["--slo-latency -5", "0.001 to 86400000"],
        ),
        (
            sim(&["--tick-ms", "1e-300"]),
            vec!["--tick-ms", "0.1 to 60000"],
        ),
        (
            sim(&["--gflops", "inf"]),
            vec!["--gflops inf", "0.001 to 1000000"],
        ),
        (
            sim(&["--rate", "1e-300"]),
            vec!["--rate", "0.001 to 1000000"],
        ),
        (
            vec!["profile", "--model", "alexnet", "--warmup", "4000000000"],
            vec!["--warmup", "4000000000", "0..=100000"],
        ),
        (
            vec!["inspect", "--input-shape", "1,3,100000,100000", "m.onnx"],
            vec!["--input-shape", "268435456"],
        ),
        (
            vec!["experiment", "--slo-latency", "1e300"],
            vec!["--slo-latency", "86400000"],
        ),
    ];
    for (args, needles) in cases {
        refused(&args, &needles);
    }
}

#[test]
fn config_and_scenario_numbers_out_of_range_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("odin.yaml");
    for (text, needles) in [
        (
            "slo:\n  latency_ms: 1e300\n",
            ["slo.latency_ms", "86400000", "line 2"],
        ),
        (
            "policy:\n  params:\n    alpha: 4294967295\n",
            ["policy.params.alpha", "1 to 10000", "line 3"],
        ),
        (
            "slo:\n  throughput_fps: .nan\n",
            ["slo.throughput_fps", "0.001 to 1000000", "line 2"],
        ),
    ] {
        std::fs::write(&config, text).unwrap();
        let mut all = vec!["odin.yaml"];
        all.extend(needles);
        refused(&["check-config", config.to_str().unwrap()], &all);
    }
    let scenario = dir.path().join("burst.yaml");
    std::fs::write(
        &scenario,
        "interference:\n  - {pes: [0], start: 0, duration: 0.1, factor: 2, kind: cpu, every: 0.1, times: 0}\n",
    )
    .unwrap();
    refused(
        &[
            "simulate",
            "--model",
            "alexnet",
            "--pe-count",
            "2",
            "--scenario",
            scenario.to_str().unwrap(),
        ],
        &[
            "burst.yaml",
            "interference[0].times",
            "1 to 100000",
            "line 2",
        ],
    );
}
