//! `odin run` as a user runs it: the real binary, real signals.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn odin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_odin"))
}

fn check_summary(v: &serde_json::Value, model: &str) {
    assert_eq!(v["model"], model);
    assert!(v["frames"].as_u64().unwrap() > 0, "{v}");
    assert!(v["rejected"].is_u64());
    assert!(v["throughput_fps"].as_f64().unwrap() > 0.0);
    let (p50, p99) = (
        v["latency_ms"]["p50"].as_f64().unwrap(),
        v["latency_ms"]["p99"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p99 >= p50, "{p50} {p99}");
    let stages = v["stages"].as_array().unwrap();
    let mut end = 0;
    for s in stages {
        let units = s["units"].as_array().unwrap();
        assert_eq!(units[0].as_u64().unwrap(), end, "stages are contiguous");
        end = units[1].as_u64().unwrap();
        assert!(s["pe"].is_string() && s["service_ms"].is_f64());
    }
    let parts = v["partitions"].as_array().unwrap();
    assert_eq!(parts[0]["t"], 0.0);
    assert_eq!(parts[0]["cuts"].as_array().unwrap().len(), stages.len() - 1);
    for e in v["timeline"].as_array().unwrap() {
        for k in ["t", "throughput_fps", "p50_ms", "p99_ms", "cuts"] {
            assert!(!e[k].is_null(), "timeline entry lacks {k}: {e}");
        }
    }
}

#[test]
fn sigint_drains_writes_the_summary_and_exits_0() {
    stop_with(Signal::SIGINT);
}

#[test]
fn sigterm_drains_writes_the_summary_and_exits_0() {
    stop_with(Signal::SIGTERM);
}

fn stop_with(signal: Signal) {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.json");
    let mut child = odin()
        .args([
            "run",
            "--model",
            "mobilenet_v2",
            "--json-summary",
            summary.to_str().unwrap(),
        ])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let header = lines.next().unwrap().unwrap();
    assert!(
        header.contains("mobilenet_v2") && header.contains("closed loop"),
        "{header}"
    );
    // The first status line proves frames flow; then interrupt.
    let status = lines.next().unwrap().unwrap();
    assert!(
        status.starts_with("t=") && status.contains("frames/s") && status.contains("p99"),
        "{status}"
    );
    kill(Pid::from_raw(child.id() as i32), signal).unwrap();
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(rest.last().unwrap().starts_with("done: "), "{rest:?}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    check_summary(&v, "mobilenet_v2");
    assert!(!v["timeline"].as_array().unwrap().is_empty());
}

#[test]
fn open_loop_run_for_a_duration() {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("s.json");
    let cpus = odin::topology::online_cpus(std::path::Path::new("/")).unwrap();
    let pes = cpus
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(";");
    let out = odin()
        .args([
            "run",
            "--model",
            "alexnet",
            "--rate",
            "5",
            "--duration",
            "2.5",
            "--pes",
            &pes,
        ])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--json-summary", summary.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    check_summary(&v, "alexnet");
    assert_eq!(v["stages"].as_array().unwrap().len(), cpus.len());
    let header = String::from_utf8(out.stdout).unwrap();
    assert!(header.contains("open loop at 5 frames/s"), "{header}");
}

#[test]
fn bad_pes_and_values_exit_2_naming_the_problem() {
    for (args, needle) in [
        (vec!["--pes", "0;4095"], "4095 not online"),
        (vec!["--pes", "0;x"], "PE 1"),
        (vec!["--rate", "-3"], "--rate"),
        (vec!["--duration", "0"], "--duration"),
        // These two panicked (exit 101) before the bounds.
        (
            vec!["--duration", "1e20"],
            "--duration 100000000000000000000: must be a number of seconds from more than 0 to 315360000",
        ),
        (vec!["--rate", "1e-300"], "from 0.001 to 1000000"),
        (vec!["--model", "resnet51"], "valid: alexnet"),
    ] {
        let out = odin().arg("run").args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}

#[test]
fn a_measured_profile_sets_the_initial_partition() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("alexnet.json");
    let out = odin()
        .args([
            "profile", "--model", "alexnet", "--runs", "1", "--warmup", "0", "--output",
        ])
        .arg(&profile)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = odin()
        .args([
            "run",
            "--model",
            "alexnet",
            "--duration",
            "1",
            "--pes",
            "0;0",
            "--profile",
        ])
        .arg(&profile)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The partition printed is the optimal one for the profiled costs.
    let p: odin::engine::profile::CostProfile =
        odin::engine::profile::CostProfile::load(&profile, false).unwrap();
    let want = odin::pipeline::Partition::optimal(&p.unit_ms(), &[1.0, 1.0]).unwrap();
    let header = String::from_utf8(out.stdout).unwrap();
    assert!(
        header.contains(&format!("partition {want}")),
        "{want} not in {header}"
    );

    let out = odin()
        .args([
            "run",
            "--model",
            "mobilenet_v2",
            "--duration",
            "1",
            "--profile",
        ])
        .arg(&profile)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("profile is for alexnet") && err.contains("alexnet.json"),
        "{err}"
    );
}

/// `odin run | head -n 2`: the pipe closes under the status lines; odin
/// stops printing, runs to the end and writes its summary, exit 0.
#[test]
fn a_closed_stdout_ends_the_status_lines_not_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.json");
    let mut child = odin()
        .args([
            "run",
            "--model",
            "resnet18",
            "--duration",
            "4",
            "--json-summary",
        ])
        .arg(&summary)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    for _ in 0..2 {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(!line.is_empty());
    }
    drop(out);
    let done = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("stdout closed"), "{stderr}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    check_summary(&v, "resnet18");
}

/// Two agents on one state directory would undo each other's cgroup
/// changes: the second exits 2 naming the first one's pid; after the
/// first is killed (-9, no clean-up), the kernel has dropped its lock and
/// the next one starts.
#[test]
fn a_second_agent_on_the_same_state_dir_is_refused_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let start = |duration: &str| {
        let mut cmd = odin();
        cmd.args(["run", "--model", "alexnet", "--duration", duration])
            .arg("--state-dir")
            .arg(&state);
        cmd
    };
    let mut first = start("600")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(first.stdout.take().unwrap()).lines();
    // The header comes after the lock is taken.
    let header = lines.next().unwrap().unwrap();
    assert!(header.starts_with("odin run: alexnet"), "{header}");

    let out = start("1").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("in use by odin pid {}", first.id()))
            && err.contains(&state.display().to_string()),
        "{err}"
    );

    kill(Pid::from_raw(first.id() as i32), Signal::SIGKILL).unwrap();
    first.wait().unwrap();
    let out = start("1").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A configuration someone else could change, or one swapped in through
/// a symbolic link, is refused before anything starts (exit 2, naming
/// the file and the fix); the operator may allow the link explicitly.
#[test]
fn an_untrusted_configuration_is_refused_and_a_link_needs_the_flag() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("odin.yaml");
    std::fs::write(&config, "metrics:\n  enabled: false\n").unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o646)).unwrap();
    let run = |path: &std::path::Path, extra: &[&str]| {
        odin()
            .args(["run", "--model", "alexnet", "--duration", "1", "--config"])
            .arg(path)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&config, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("refusing configuration") && err.contains("chmod go-w"),
        "{err}"
    );
    let out = odin().arg("check-config").arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(2));

    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let link = dir.path().join("current.yaml");
    std::os::unix::fs::symlink(&config, &link).unwrap();
    let out = run(&link, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("symbolic link") && err.contains("--follow-symlinks"),
        "{err}"
    );
    let out = run(&link, &["--follow-symlinks"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
