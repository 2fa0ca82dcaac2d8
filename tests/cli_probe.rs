//! `odin probe` as a user runs it: the real binary on this machine.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use odin::monitor::perf::{CounterSource, GroupKind, PerfCounters, Target};

const NAMES: &[&str] = &[
    "hw_counters",
    "sw_counters",
    "perf_permissions",
    "schedstat",
    "psi",
    "cgroup",
    "affinity",
    "cpus",
    "other_daemons",
];

fn odin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_odin"))
        .args(args)
        .output()
        .expect("run odin")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The checks by name, each present exactly once and well formed.
fn json_checks() -> BTreeMap<String, serde_json::Value> {
    let o = odin(&["probe", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("stdout is one JSON object");
    let mut by_name = BTreeMap::new();
    for c in v["checks"].as_array().expect("a checks array") {
        let name = c["name"].as_str().expect("a name").to_string();
        let status = c["status"].as_str().expect("a status");
        assert!(
            ["ok", "degraded", "missing"].contains(&status),
            "{name}: status {status}"
        );
        assert!(c["detail"].is_string(), "{c}");
        if status != "ok" {
            for field in ["reason", "fix"] {
                assert!(
                    c[field].as_str().is_some_and(|s| !s.trim().is_empty()),
                    "{name} is {status} without a {field}: {c}"
                );
            }
        }
        assert!(
            by_name.insert(name.clone(), c.clone()).is_none(),
            "{name} twice"
        );
    }
    for name in NAMES {
        assert!(by_name.contains_key(*name), "no {name} check");
    }
    by_name
}

fn status(checks: &BTreeMap<String, serde_json::Value>, name: &str) -> String {
    checks[name]["status"].as_str().unwrap().to_string()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn json_report_has_every_check_once_and_exits_0() {
    json_checks();
}

#[test]
fn json_report_agrees_with_this_machine() {
    let checks = json_checks();

    // Hardware counters: ok exactly when the library opens them here.
    let tid = odin::thread::gettid();
    let hw = PerfCounters::new().open(Target::Thread(tid), GroupKind::Hardware);
    let hw_status = status(&checks, "hw_counters");
    match &hw {
        Ok(opened) if opened.missing.is_empty() => assert_eq!(hw_status, "ok"),
        Ok(_) => assert_eq!(hw_status, "degraded"),
        Err(e) => {
            println!("hardware counters do not open here: {e}");
            assert_eq!(hw_status, "degraded", "{}", checks["hw_counters"]);
        }
    }

    if is_root() {
        assert_eq!(
            status(&checks, "sw_counters"),
            "ok",
            "{}",
            checks["sw_counters"]
        );
    } else {
        common::skip("sw_counters is only sure to be ok as root");
    }
    assert_eq!(status(&checks, "affinity"), "ok", "{}", checks["affinity"]);

    let online = odin::topology::online_cpus(Path::new("/")).unwrap();
    let detail = checks["cpus"]["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("{} CPU", online.len())) && detail.contains(&online.to_string()),
        "online {online}, cpus detail {detail:?}"
    );
}

#[test]
fn text_report_has_one_line_per_check() {
    let o = odin(&["probe"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), NAMES.len(), "{text}");
    for name in NAMES {
        let line = lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(*name))
            .unwrap_or_else(|| panic!("no line for {name}: {text}"));
        let status = line.split_whitespace().nth(1).unwrap();
        assert!(["ok", "degraded", "missing"].contains(&status), "{line}");
        if status != "ok" {
            assert!(
                line.contains("| reason: ") && line.contains("| fix: "),
                "{line}"
            );
        }
    }
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let o = odin(&["probe", "--root", "/tmp"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--json"), "{err}");
}
