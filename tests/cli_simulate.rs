//! `odin simulate` as a user runs it: the real binary, the real policies.

use std::process::{Command, Output};

use serde_json::Value;

fn odin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_odin"))
        .args(args)
        .output()
        .expect("run odin")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `odin simulate ... --json`, parsed.
fn simulate(args: &[&str]) -> Value {
    let mut all = vec!["simulate", "--json"];
    all.extend_from_slice(args);
    let o = odin(&all);
    assert!(o.status.success(), "{:?}: {}", args, stderr(&o));
    serde_json::from_slice(&o.stdout).expect("stdout is one JSON object")
}

fn row<'a>(v: &'a Value, policy: &str) -> &'a Value {
    v["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["policy"] == policy)
        .unwrap_or_else(|| panic!("no row for {policy}"))
}

fn fps(v: &Value, policy: &str) -> f64 {
    row(v, policy)["throughput_fps"].as_f64().unwrap()
}

/// The report without the wall-clock decision times.
fn deterministic(mut v: Value) -> Value {
    for p in v["policies"].as_array_mut().unwrap() {
        p.as_object_mut().unwrap().remove("decision_ms");
    }
    v
}

#[test]
fn json_has_the_documented_fields() {
    let v = simulate(&[
        "--model",
        "resnet18",
        "--pe-count",
        "4",
        "--scenario",
        "long-lived",
        "--frames",
        "300",
    ]);
    assert_eq!(v["model"], "resnet18");
    assert_eq!(v["pes"], 4);
    assert_eq!(v["scenario"], "long-lived");
    let rows = v["policies"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["policy"].as_str().unwrap()).collect();
    assert_eq!(names, ["static", "lls", "odin", "guided", "oracle"]);
    for r in rows {
        for k in [
            "throughput_fps",
            "p50_latency_ms",
            "p99_latency_ms",
            "slo_attainment",
            "reconfigurations",
            "exploration_frames",
            "oracle_ratio",
            "decision_ms",
        ] {
            assert!(r[k].is_number(), "{k} in {r}");
        }
    }
    assert_eq!(row(&v, "oracle")["oracle_ratio"], 1.0);
}

#[test]
fn same_seed_same_report() {
    let args = [
        "--model",
        "resnet50",
        "--pe-count",
        "4",
        "--scenario",
        "multi-pe",
        "--frames",
        "600",
        "--seed",
        "7",
    ];
    let a = deterministic(simulate(&args));
    let b = deterministic(simulate(&args));
    assert_eq!(a, b);
    let mut other = args;
    other[9] = "8";
    assert_ne!(
        a,
        deterministic(simulate(&other)),
        "the seed draws the episodes"
    );
}

#[test]
fn the_old_flag_spellings_still_work() {
    let args = |pes: &'static str, policies: &'static str| {
        [
            "--model",
            "alexnet",
            pes,
            "2",
            "--scenario",
            "long-lived",
            policies,
            "static,odin",
            "--frames",
            "200",
        ]
    };
    let new = deterministic(simulate(&args("--pe-count", "--policies")));
    let old = deterministic(simulate(&args("--pes", "--policy")));
    assert_eq!(new, old);
    let names: Vec<&str> = new["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["policy"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["static", "odin"]);
}

#[test]
fn no_interference_runs_at_the_bottleneck_and_no_policy_loses() {
    for model in ["resnet50", "vgg16"] {
        let v = simulate(&[
            "--model",
            model,
            "--pe-count",
            "4",
            "--scenario",
            "none",
            "--frames",
            "1500",
        ]);
        let ideal = 1e3 / v["nominal_bottleneck_ms"].as_f64().unwrap();
        let st = fps(&v, "static");
        assert!(
            (st - ideal).abs() / ideal < 0.01,
            "{model}: static {st} vs 1/bottleneck {ideal}"
        );
        for p in ["lls", "odin", "guided", "oracle"] {
            let t = fps(&v, p);
            assert!(
                (t - st).abs() / st < 0.02,
                "{model}: {p} {t} vs static {st}"
            );
        }
    }
}

#[test]
fn oracle_bounds_the_others_and_odin_beats_static_under_long_lived_interference() {
    for model in ["resnet50", "vgg16"] {
        let v = simulate(&[
            "--model",
            model,
            "--pe-count",
            "4",
            "--scenario",
            "long-lived",
            "--frames",
            "2000",
        ]);
        let oracle = fps(&v, "oracle");
        for p in ["static", "odin", "guided"] {
            // The oracle is optimal in the cost model; the simulated run
            // may differ by rounding and queueing, never by more than 1%.
            assert!(
                oracle >= 0.99 * fps(&v, p),
                "{model}: oracle {oracle} < {p}"
            );
        }
        let (odin, st) = (fps(&v, "odin"), fps(&v, "static"));
        assert!(odin > 1.05 * st, "{model}: odin {odin} vs static {st}");
        assert!(row(&v, "odin")["exploration_frames"].as_u64().unwrap() > 0);
    }
}

#[test]
fn table_csv_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("t.csv");
    let svg = dir.path().join("t.svg");
    let o = odin(&[
        "simulate",
        "--model",
        "resnet18",
        "--pe-count",
        "4",
        "--scenario",
        "periodic",
        "--frames",
        "400",
        "--policies",
        "static,odin",
        "--csv",
        csv.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("frames/s") && table.contains("static") && table.contains("odin"));
    assert!(
        !table.contains("\nlls"),
        "only the requested policies: {table}"
    );
    let csv = std::fs::read_to_string(csv).unwrap();
    assert!(csv.starts_with("policy,t_s,throughput_fps"));
    assert!(csv.lines().any(|l| l.starts_with("odin,")));
    let svg = std::fs::read_to_string(svg).unwrap();
    assert!(
        svg.starts_with("<svg")
            && svg.contains(r#"<path class="series""#)
            && svg.contains("fill-opacity")
    );
    assert!(svg.contains("virtual time (s)") && svg.contains(">odin<"));
}

#[test]
fn bad_scenario_file_names_field_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.yaml");
    std::fs::write(
        &f,
        "description: bad\ninterference:\n  - pes: [1]\n    start: 0.1\n    duration: 0.5\n    factor: 0.5\n    kind: cpu\n",
    )
    .unwrap();
    let o = odin(&[
        "simulate",
        "--model",
        "resnet18",
        "--pe-count",
        "4",
        "--scenario",
        f.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("interference[0].factor") && e.contains("line 6"),
        "{e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "one line: {e}");

    std::fs::write(&f, "interference:\n  - pes: [1]\n    begin: 0.1\n").unwrap();
    let o = odin(&[
        "simulate",
        "--model",
        "resnet18",
        "--pe-count",
        "4",
        "--scenario",
        f.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown field `begin`") && stderr(&o).contains("line 3"));
}

#[test]
fn usage_errors_exit_2_and_list_the_choices() {
    let o = odin(&[
        "simulate",
        "--model",
        "resnet18",
        "--pe-count",
        "4",
        "--scenario",
        "nope",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("long-lived") && stderr(&o).contains("heterogeneous"));
    let o = odin(&[
        "simulate",
        "--model",
        "resnet18",
        "--pe-count",
        "4",
        "--scenario",
        "none",
        "--plot",
        "x.png",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("only .svg"));
    let o = odin(&[
        "simulate",
        "--model",
        "resnet18",
        "--pe-count",
        "4",
        "--scenario",
        "none",
        "--policies",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("oracle"));
    // PE 1 does not exist on one PE.
    let o = odin(&[
        "simulate",
        "--model",
        "resnet18",
        "--pe-count",
        "1",
        "--scenario",
        "long-lived",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("interference[0].pes"), "{}", stderr(&o));
}

/// The run's time is measured by `cargo bench --bench simulate`.
#[test]
fn large_networks_on_many_pes() {
    let v = simulate(&[
        "--model",
        "resnet152",
        "--pe-count",
        "64",
        "--scenario",
        "multi-pe",
        "--frames",
        "1000",
    ]);
    assert_eq!(v["pes"], 64);
    assert!(fps(&v, "oracle") >= 0.99 * fps(&v, "static"));
}
