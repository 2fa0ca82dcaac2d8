//! `odin experiment` with the real binary: real agents, a real antagonist,
//! real signals. Nothing here asserts a throughput: the machine is shared,
//! so only what holds on a noisy machine is checked (the antagonist ran
//! in its window and is gone, the detector saw it, static never moved,
//! the outputs are complete).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Tests that run agents take turns: two pipelines on the same CPUs would
/// be each other's antagonist.
static MACHINE: Mutex<()> = Mutex::new(());

fn machine() -> MutexGuard<'static, ()> {
    MACHINE.lock().unwrap_or_else(|e| e.into_inner())
}

fn odin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_odin"))
}

/// Short windows: 2 s warm-up, 4 s before, 8 s during, 4 s after.
const SHORT: &[&str] = &[
    "--model", "resnet18", "--warmup", "2", "--before", "4", "--during", "8", "--after", "4",
    "--margin", "1",
];

/// Whether a live process of group `pgrp` exists (zombies aside).
fn group_alive(pgrp: i64) -> bool {
    std::fs::read_dir("/proc").unwrap().any(|e| {
        let Ok(stat) = std::fs::read_to_string(e.unwrap().path().join("stat")) else {
            return false;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        f.len() > 2 && f[0] != "Z" && f[2].parse::<i64>().ok() == Some(pgrp)
    })
}

/// Threads named like `odin stress`'s workers in process `pid`.
fn stress_threads(pid: i64) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter(|t| {
            let comm = std::fs::read_to_string(t.as_ref().unwrap().path().join("comm"));
            comm.is_ok_and(|c| c.starts_with("odin-stress-"))
        })
        .count()
}

fn f64_of(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("{k} is not a number: {v}"))
}

/// The lock on the default state directory, /var/lib/odin, as a service
/// would hold it; the directory is removed again when this made it, so the
/// test leaves the machine as it found it.
struct DefaultStateHeld {
    lock: Option<odin::agent::lock::StateLock>,
    made: bool,
}

impl DefaultStateHeld {
    const DIR: &str = "/var/lib/odin";

    fn acquire() -> Self {
        let made = !Path::new(Self::DIR).exists();
        let lock = match odin::agent::lock::StateLock::acquire(Path::new(Self::DIR)) {
            Ok(l) => Some(l),
            Err(e) => {
                common::skip(format!("holding the default state directory: {e}"));
                None
            }
        };
        Self { lock, made }
    }
}

impl Drop for DefaultStateHeld {
    fn drop(&mut self) {
        drop(self.lock.take());
        if self.made {
            let _ = std::fs::remove_dir_all(Self::DIR);
        }
    }
}

#[test]
fn a_short_experiment_runs_the_antagonist_in_its_window_and_reports_every_policy() {
    let _turn = machine();
    // An agent (the service) holds the default state directory: the
    // experiment's agents each have their own, so they neither undo its
    // journal nor are refused by its lock.
    let _service = DefaultStateHeld::acquire();
    let dir = tempfile::tempdir().unwrap();
    let (svg, csv, out) = (
        dir.path().join("exp.svg"),
        dir.path().join("exp.csv"),
        dir.path().join("out"),
    );
    let output = odin()
        .arg("experiment")
        .args(SHORT)
        .args(["--policies", "static,odin", "--json"])
        .arg("--plot")
        .arg(&svg)
        .arg("--csv")
        .arg(&csv)
        .arg("--output-dir")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(v["model"], "resnet18");
    let rows = v["rows"].as_array().unwrap();
    let policies: Vec<&str> = rows.iter().map(|r| r["policy"].as_str().unwrap()).collect();
    assert_eq!(policies, ["static", "odin"]);
    assert!(f64_of(&v, "slo_latency_ms") > 0.0, "{v}");

    for r in rows {
        for k in [
            "before_fps",
            "during_fps",
            "after_fps",
            "p99_during_ms",
            "slo_attainment",
            "during_vs_static",
            "antagonist_start_s",
            "antagonist_stop_s",
            "antagonist_cpu_s",
        ] {
            f64_of(r, k);
        }
        for k in ["detect_s", "settle_s", "recover_s"] {
            assert!(r[k].is_null() || r[k].is_f64(), "{k}: {r}");
        }
        let slo = f64_of(r, "slo_attainment");
        assert!((0.0..=1.0).contains(&slo), "{r}");
        assert!(!r["timeline"].as_array().unwrap().is_empty());

        // The antagonist started after warm-up + before, ran for the
        // window and used CPU time in it.
        let (start, stop) = (
            f64_of(r, "antagonist_start_s"),
            f64_of(r, "antagonist_stop_s"),
        );
        assert!((6.0..9.0).contains(&start), "start {start}: {r}");
        assert!(
            (8.0..12.0).contains(&(stop - start)),
            "{start}..{stop}: {r}"
        );
        let cpu = f64_of(r, "antagonist_cpu_s");
        assert!(cpu > 0.1 * 8.0, "the busy loop barely ran: {cpu} CPU s");
        assert!(cpu < stop - start + 0.5, "one worker: {cpu} CPU s");
        // And it is gone, with its whole process group.
        let pid = r["antagonist_pid"].as_i64().unwrap();
        assert!(!group_alive(pid), "antagonist group {pid} still alive");
        assert_eq!(stress_threads(pid), 0);
    }
    let (stat, odin_row) = (&rows[0], &rows[1]);
    assert_eq!(stat["changes_during"], 0, "{stat}");
    assert!(stat["changes_s"].as_array().unwrap().is_empty(), "{stat}");
    assert!(stat["settle_s"].is_null());
    assert_eq!(f64_of(stat, "during_vs_static"), 1.0);
    // The detector reported onset on the antagonist's PE in the window,
    // unless other programs on this shared machine had it reported
    // interfered already.
    match odin_row["detect_s"].as_f64() {
        Some(detect) => assert!((0.0..=8.0).contains(&detect), "{odin_row}"),
        None => assert_eq!(odin_row["already_interfered"], true, "no onset: {odin_row}"),
    }

    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.contains(r#"class="band""#), "no shaded window");
    let throughput = svg
        .split(r#"<g class="panel""#)
        .find(|p| p.contains(r#"data-panel="throughput""#))
        .unwrap();
    for p in ["static", "odin"] {
        let path = format!(r#"<path class="series" data-series="{p}""#);
        assert_eq!(throughput.matches(&path).count(), 1, "{p}");
    }
    let csv = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[0].starts_with("policy,before_fps,during_fps,after_fps"));
    for f in [
        "static.summary.json",
        "odin.summary.json",
        "experiment.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing in --output-dir");
    }
}

#[test]
fn bad_arguments_exit_2_naming_the_flag() {
    for (args, flag) in [
        (vec!["--policies", "static,bogus"], "--policies"),
        (vec!["--policies", "odin,odin"], "--policies"),
        (vec!["--during", "0"], "--during"),
        (vec!["--before", "-3"], "--before"),
        (vec!["--margin", "5", "--after", "4"], "--margin"),
        (vec!["--pes", "0;99"], "--pes"),
        (vec!["--antagonist-cpus", "99"], "--antagonist-cpus"),
        (vec!["--slo-latency", "0"], "--slo-latency"),
        (vec!["--model", "nonet"], "--model"),
        (
            vec!["--antagonist", "/no/such/antagonist", "--cpu", "1"],
            "--antagonist",
        ),
        (vec!["--bogus"], "--bogus"),
    ] {
        let out = odin().arg("experiment").args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains(flag),
            "{args:?} should name {flag}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn an_external_antagonist_gets_the_remaining_words_and_its_failure_is_reported() {
    let _turn = machine();
    let out = odin()
        .arg("experiment")
        .args(["--model", "resnet18", "--policies", "lls", "--warmup", "0"])
        .args(["--before", "1", "--during", "5", "--after", "3"])
        .args([
            "--antagonist",
            "sh",
            "-c",
            "echo 'antagonist says no' >&2; exit 4",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the antagonist for policy lls"),
        "names the child: {stderr}"
    );
    assert!(stderr.contains("exited with status 4"), "{stderr}");
    assert!(
        stderr.contains("antagonist says no"),
        "quotes its stderr: {stderr}"
    );
}

#[test]
fn ctrl_c_stops_the_agent_and_the_antagonist() {
    let _turn = machine();
    let mut child = odin()
        .arg("experiment")
        .args(["--model", "resnet18", "--policies", "odin", "--warmup", "0"])
        .args(["--before", "1", "--during", "60", "--after", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read on until the end: a closed pipe must not be what stops it.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let (mut agent, mut antagonist) = (None, None);
    let mut seen = Vec::new();
    for line in stderr.by_ref().lines() {
        let line = line.unwrap();
        let pid_after = |key: &str| -> Option<i64> {
            let rest = line.split(key).nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        };
        if let Some(p) = pid_after("agent pid ") {
            agent = Some(p);
        }
        if let Some(p) = pid_after("antagonist pid ") {
            antagonist = Some(p);
            break;
        }
        seen.push(line);
    }
    let (agent, antagonist) = (
        agent.unwrap_or_else(|| panic!("no agent pid: {seen:?}")),
        antagonist.unwrap_or_else(|| panic!("no antagonist pid: {seen:?}")),
    );
    assert!(group_alive(agent) && group_alive(antagonist));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(
        rest.contains("stopped the agent and the antagonist"),
        "{rest}"
    );
    assert_eq!(status.code(), Some(130));
    assert!(!group_alive(agent), "agent {agent} left running");
    assert!(
        !group_alive(antagonist),
        "antagonist {antagonist} left running"
    );
    assert!(
        !Path::new(&format!("/proc/{antagonist}/task")).exists() || stress_threads(antagonist) == 0
    );
}

#[test]
fn an_external_antagonist_runs_pinned_in_its_own_group_and_is_stopped() {
    let _turn = machine();
    let dir = tempfile::tempdir().unwrap();
    let online = odin::topology::online_cpus(Path::new("/")).unwrap();
    let last = online.iter().last().unwrap().to_string();
    // A shell that reports its affinity, then a busy child in its group.
    let script = "grep Cpus_allowed_list /proc/self/status; \
                  sh -c 'while :; do :; done' & wait";
    let out = odin()
        .arg("experiment")
        .args(["--model", "resnet18", "--policies", "static", "--json"])
        .args(["--warmup", "0", "--before", "2", "--during", "3"])
        .args(["--after", "3", "--antagonist-cpus", &last])
        .arg("--output-dir")
        .arg(dir.path())
        .args(["--antagonist", "sh", "-c", script])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["antagonist"]["command"].as_str().unwrap(),
        format!("sh -c {script}")
    );
    let row = &v["rows"][0];
    assert!(f64_of(row, "antagonist_cpu_s") > 0.1 * 3.0, "{row}");
    assert!(!group_alive(row["antagonist_pid"].as_i64().unwrap()));
    let said = std::fs::read_to_string(dir.path().join("static.antagonist.out")).unwrap();
    let allowed = said.split_whitespace().nth(1).unwrap();
    assert_eq!(
        allowed, last,
        "the antagonist starts with --antagonist-cpus"
    );
}
