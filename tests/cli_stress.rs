//! `odin stress`: a real antagonist process.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the child when dropped, also when an assertion fails.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(args: &[&str]) -> Guard {
    let mut child = Command::new(env!("CARGO_BIN_EXE_odin"))
        .arg("stress")
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The banner is printed once the arguments are accepted.
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("odin stress: "), "{line}");
    Guard(child)
}

/// The worker thread's run time plus run-queue wait (ns: the time it
/// wanted a CPU, whether or not it got one) and its voluntary context
/// switches (the times it went to sleep).
fn worker_counts(pid: u32) -> (u64, u64) {
    let (mut demand, mut sleeps) = (0, 0);
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.starts_with("odin-stress-") {
            let stat = std::fs::read_to_string(path.join("schedstat")).unwrap();
            let f: Vec<u64> = stat
                .split_whitespace()
                .map(|v| v.parse().unwrap())
                .collect();
            demand += f[0] + f[1];
            let status = std::fs::read_to_string(path.join("status")).unwrap();
            sleeps += status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap();
        }
    }
    (demand, sleeps)
}

/// Over about a second: the share of time the worker was runnable, and
/// how often it slept. Neither depends on what else the machine runs, as
/// the CPU time it got would.
fn behaviour(pid: u32) -> (f64, u64) {
    let (t0, (d0, s0)) = (Instant::now(), worker_counts(pid));
    std::thread::sleep(Duration::from_millis(1000));
    let (t1, (d1, s1)) = (Instant::now(), worker_counts(pid));
    ((d1 - d0) as f64 / 1e9 / (t1 - t0).as_secs_f64(), s1 - s0)
}

fn last_cpu() -> String {
    let online = odin::topology::online_cpus(std::path::Path::new("/")).unwrap();
    online.iter().last().unwrap().to_string()
}

#[test]
fn cpu_stress_is_pinned_and_busy_and_duty_limits_it() {
    let cpu = last_cpu();
    let busy = start(&["--kind", "cpu", "--cpus", &cpu]);
    let pid = busy.0.id();
    // Every worker thread is pinned to the CPU asked for.
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .collect();
    let mut workers = 0;
    for t in tasks {
        let status = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap();
        if status.contains("odin-stress-") {
            workers += 1;
            let allowed = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .unwrap();
            assert_eq!(allowed.trim(), cpu);
        }
    }
    assert_eq!(workers, 1);
    let (busy_demand, busy_sleeps) = behaviour(pid);
    drop(busy);

    let light = start(&["--kind", "cpu", "--cpus", &cpu, "--duty", "20"]);
    let (light_demand, light_sleeps) = behaviour(light.0.id());
    drop(light);
    assert!(
        busy_demand > 0.8,
        "a busy loop always wants its CPU: {busy_demand}"
    );
    assert!(busy_sleeps < 10, "a busy loop never sleeps: {busy_sleeps}");
    // One sleep per 10 ms period.
    assert!(
        light_sleeps >= 50,
        "a 20% duty cycle sleeps every period: {light_sleeps}"
    );
    assert!(
        light_demand < busy_demand,
        "{light_demand} vs {busy_demand}"
    );
}

#[test]
fn stress_ends_after_its_duration_and_rejects_bad_cpus() {
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_odin"))
        .args([
            "stress",
            "--kind",
            "membw",
            "--cpus",
            &last_cpu(),
            "--duration",
            "0.5",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(t0.elapsed() >= Duration::from_millis(500));
    let out = Command::new(env!("CARGO_BIN_EXE_odin"))
        .args(["stress", "--kind", "cpu", "--cpus", "4095"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("4095 not online"));
    let out = Command::new(env!("CARGO_BIN_EXE_odin"))
        .args(["stress", "--kind", "gpu", "--cpus", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cpu") && err.contains("cache") && err.contains("membw"),
        "{err}"
    );
}
