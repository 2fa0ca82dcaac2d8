//! The agent's memory stays flat while frames and ticks pile up: the real
//! binary on a tiny model (tens of thousands of frames per second) with a
//! 10 ms monitor tick, its resident set sampled after a warm-up and again
//! two minutes later.
//!
//! The bound is in bytes per frame and per second, so a slow machine only
//! runs fewer frames; it does not make the test fail. Keeping a latency per
//! frame costs 8 bytes a frame; the bound allows one, plus a fixed slack for
//! the allocator and a kilobyte per second for the one-second windows that
//! are kept (up to an hour of them).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Status lines (one a second) before the first sample.
const WARMUP_LINES: usize = 20;

/// Status lines between the two samples.
const MEASURE_LINES: usize = 120;

/// Growth allowed whatever the frame count: allocator arenas, the metrics
/// endpoint's connection threads, caches filled late.
const SLACK_BYTES: i64 = 4 << 20;

/// Growth allowed per frame completed between the samples.
const BYTES_PER_FRAME: i64 = 1;

/// Growth allowed per second between the samples.
const BYTES_PER_SECOND: i64 = 1024;

/// Kills the agent if the test fails before it stops it.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The resident set of `pid` in bytes, from `/proc/<pid>/status`.
fn rss_bytes(pid: u32) -> i64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"));
    let kb: i64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("VmRSS line {line:?}"));
    kb * 1024
}

/// `odin_frames_total` from the metrics endpoint at `addr`.
fn frames(addr: &str) -> i64 {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix("odin_frames_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no odin_frames_total in:\n{body}")) as i64
}

#[test]
fn rss_stays_flat_over_minutes_of_frames_and_ticks() {
    let dir = tempfile::tempdir().unwrap();
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/onnx/ops/maxpool_ceil.onnx"
    );
    let config = dir.path().join("odin.yaml");
    let summary = dir.path().join("summary.json");
    std::fs::write(
        &config,
        format!(
            "model:\n  path: {model}\npes: [\"0\"]\nmonitor:\n  tick_ms: 10\n\
             metrics:\n  enabled: true\n  listen: 127.0.0.1:0\n\
             cgroup:\n  state_dir: {}\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_odin"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--json-summary")
        .arg(&summary)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut agent = Agent(child);
    let pid = agent.0.id();
    let mut lines = BufReader::new(agent.0.stdout.take().unwrap()).lines();
    let header = lines.next().unwrap().unwrap();
    let addr = header
        .split("metrics on http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no metrics address in {header:?}"))
        .to_string();

    // Status lines are the clock: one a second, whatever the machine's speed.
    let mut status = 0;
    let mut next_status = || loop {
        let l = lines
            .next()
            .expect("the agent ended before the test stopped it")
            .unwrap();
        if l.starts_with("t=") && l.contains("frames/s") {
            status += 1;
            return status;
        }
    };
    while next_status() < WARMUP_LINES {}
    let (rss0, frames0) = (rss_bytes(pid), frames(&addr));
    while next_status() < WARMUP_LINES + MEASURE_LINES {}
    let (rss1, frames1) = (rss_bytes(pid), frames(&addr));

    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    for l in lines.by_ref() {
        l.unwrap();
    }
    let code = agent.0.wait().unwrap().code();
    assert_eq!(code, Some(0), "odin run exited with {code:?}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert!(v["frames"].as_i64().unwrap() >= frames1, "{}", v["frames"]);
    assert_eq!(v["frames"], v["admitted"]);
    assert_eq!(v["timeline_dropped"], 0, "a few minutes is below the cap");
    assert!(v["timeline"].as_array().unwrap().len() >= WARMUP_LINES + MEASURE_LINES);

    let frames = frames1 - frames0;
    let growth = rss1 - rss0;
    let bound = SLACK_BYTES + BYTES_PER_FRAME * frames + BYTES_PER_SECOND * MEASURE_LINES as i64;
    println!(
        "RSS {rss0} -> {rss1} bytes ({growth:+}) over {frames} frames and {MEASURE_LINES} s: \
         {:.2} bytes/frame; bound {bound}",
        growth as f64 / frames.max(1) as f64
    );
    assert!(frames > 0, "no frames between the samples");
    assert!(
        growth <= bound,
        "RSS grew {growth} bytes over {frames} frames ({:.2} bytes/frame), more than {bound}",
        growth as f64 / frames as f64
    );
}
