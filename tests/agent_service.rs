//! `odin run --config` as systemd runs it: the real binary, real signals,
//! a real NOTIFY_SOCKET and real scrapes of the metrics endpoint. Every
//! wait is on an output line or a datagram, never on a sleep; the read
//! timeouts are only there to fail instead of hanging.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crossbeam_channel::{Receiver, unbounded};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use odin::agent::config::Config;
use odin::cpulist::CpuSet;

/// Longest any single wait may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

fn odin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_odin"))
}

fn online() -> CpuSet {
    odin::topology::online_cpus(Path::new("/")).unwrap()
}

/// Writes a configuration the way an admin would: whole (rename), root's
/// mode.
fn write_config(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn lines(r: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = unbounded();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// Reads every datagram at once, as systemd does, into a channel.
fn datagrams(sock: UnixDatagram) -> Receiver<String> {
    let (tx, rx) = unbounded();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            if tx
                .send(String::from_utf8_lossy(&buf[..n]).to_string())
                .is_err()
            {
                break;
            }
        }
    });
    rx
}

/// A running `odin run --config` with its outputs and notification socket.
struct Agent {
    child: Child,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    notify: Receiver<String>,
    metrics: std::net::SocketAddr,
    summary: PathBuf,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn start(config: &str) -> Self {
        Self::start_in(config, None)
    }

    /// Starts the agent, first moved into the cgroup whose `cgroup.procs`
    /// is `procs` when given (by a shell that then becomes odin).
    fn start_in(config: &str, procs: Option<&Path>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odin.yaml");
        write_config(&path, config);
        let sock = dir.path().join("notify");
        let notify = datagrams(UnixDatagram::bind(&sock).unwrap());
        let summary = dir.path().join("summary.json");
        let mut cmd = match procs {
            None => odin(),
            Some(procs) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg("echo $$ > \"$1\" && shift && exec \"$@\"")
                    .arg("sh")
                    .arg(procs)
                    .arg(env!("CARGO_BIN_EXE_odin"));
                sh
            }
        };
        let mut child = cmd
            .args(["run", "--config"])
            .arg(&path)
            .arg("--json-summary")
            .arg(&summary)
            .arg("--state-dir")
            .arg(path.with_file_name("state"))
            .env("NOTIFY_SOCKET", &sock)
            .env_remove("WATCHDOG_USEC")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        let header = stdout.recv_timeout(PATIENCE).unwrap();
        let addr = header
            .split("metrics on http://")
            .nth(1)
            .and_then(|r| r.strip_suffix("/metrics"))
            .unwrap_or_else(|| panic!("no metrics address in {header:?}"));
        let mut agent = Self {
            child,
            stdout,
            stderr,
            notify,
            metrics: addr.parse().unwrap(),
            summary,
            config: path,
            _dir: dir,
        };
        agent.wait_notify("READY=1");
        agent
    }

    fn signal(&self, s: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), s).unwrap();
    }

    /// Waits for a datagram starting with `what`, skipping STATUS= and
    /// others; returns it.
    fn wait_notify(&mut self, what: &str) -> String {
        loop {
            let msg = self
                .notify
                .recv_timeout(PATIENCE)
                .unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
            if msg.starts_with(what) {
                return msg;
            }
        }
    }

    fn wait_stdout(&self, pred: impl Fn(&str) -> bool) -> String {
        loop {
            let l = self.stdout.recv_timeout(PATIENCE).expect("stdout line");
            if pred(&l) {
                return l;
            }
        }
    }

    fn wait_stderr(&self, pred: impl Fn(&str) -> bool) -> String {
        loop {
            let l = self.stderr.recv_timeout(PATIENCE).expect("stderr line");
            if pred(&l) {
                return l;
            }
        }
    }

    fn wait_status_line(&self) -> String {
        self.wait_stdout(|l| l.starts_with("t=") && l.contains("frames/s"))
    }

    fn scrape(&self) -> String {
        let mut s = TcpStream::connect(self.metrics).unwrap();
        write!(s, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        body.to_string()
    }

    /// Waits, one status line at a time, until `odin_frames_total`
    /// exceeds `than`; returns it.
    fn frames_above(&self, than: f64) -> f64 {
        for _ in 0..30 {
            let n = sample(&self.scrape(), "odin_frames_total").unwrap();
            if n > than {
                return n;
            }
            self.wait_status_line();
        }
        panic!("odin_frames_total stayed at {than}");
    }

    /// SIGTERM, STOPPING=1, exit 0; returns the summary.
    fn stop(mut self) -> serde_json::Value {
        self.signal(Signal::SIGTERM);
        self.wait_notify("STOPPING=1");
        let done = self.wait_stdout(|l| l.starts_with("done: "));
        let status = self.child.wait().unwrap();
        let err: Vec<String> = self.stderr.try_iter().collect();
        assert_eq!(status.code(), Some(0), "{done}\n{}", err.join("\n"));
        serde_json::from_str(&std::fs::read_to_string(&self.summary).unwrap()).unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the sample `name` (with its labels, if any) in `body`.
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

const BASE: &str = "model:\n  name: mobilenet_v2\nmetrics:\n  listen: 127.0.0.1:0\n";

#[test]
fn reload_applies_a_valid_config_keeps_running_on_a_broken_one_and_stop_drains() {
    let mut agent = Agent::start(BASE);
    agent.wait_status_line();
    let body = agent.scrape();
    assert!(
        body.contains("odin_pipeline_info{model=\"mobilenet_v2\",policy=\"odin\"} 1"),
        "{body}"
    );
    let frames = agent.frames_above(0.0);

    // A valid change, visible in the metrics once READY=1 follows RELOADING=1.
    write_config(
        &agent.config,
        &format!("{BASE}policy:\n  name: lls\n  params:\n    detector:\n      onset_ticks: 4\n"),
    );
    agent.signal(Signal::SIGHUP);
    let reloading = agent.wait_notify("RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    agent.wait_notify("READY=1");
    let body = agent.scrape();
    assert!(
        body.contains("odin_pipeline_info{model=\"mobilenet_v2\",policy=\"lls\"} 1"),
        "{body}"
    );
    assert_eq!(
        sample(&body, "odin_config_reloads_total{outcome=\"applied\"}"),
        Some(1.0)
    );

    // A broken file: logged with field and line, the old config stays.
    write_config(
        &agent.config,
        "model:\n  name: mobilenet_v2\npolicy:\n  bogus: 1\n",
    );
    agent.signal(Signal::SIGHUP);
    agent.wait_notify("RELOADING=1");
    agent.wait_notify("READY=1");
    let err = agent.wait_stderr(|l| l.contains("reload rejected"));
    assert!(err.contains("bogus") && err.contains("line 4"), "{err}");
    let frames = agent.frames_above(frames);
    let body = agent.scrape();
    assert_eq!(
        sample(&body, "odin_config_reloads_total{outcome=\"rejected\"}"),
        Some(1.0)
    );
    assert!(
        body.contains("policy=\"lls\""),
        "still the last good config"
    );
    assert!(frames > 0.0);

    let v = agent.stop();
    assert_eq!(v["model"], "mobilenet_v2");
    assert_eq!(v["frames"], v["admitted"], "frames in = frames out: {v}");
    assert_eq!(v["reloads"], 1);
}

#[test]
fn odin_reload_finds_the_agent_by_its_state_directory_and_refuses_when_none_runs() {
    let mut agent = Agent::start(BASE);
    let state = agent.config.with_file_name("state");
    write_config(&agent.config, &format!("{BASE}policy:\n  name: static\n"));
    let out = odin()
        .arg("reload")
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("odin pid {}", agent.child.id())),
        "{stdout}"
    );
    agent.wait_notify("RELOADING=1");
    agent.wait_notify("READY=1");
    let line = agent.wait_stderr(|l| l.contains("reloaded "));
    assert!(line.contains("static"), "{line}");
    let v = agent.stop();
    assert_eq!(v["reloads"], 1);

    // A lock file an agent left behind, held by nobody; no directory.
    let dir = tempfile::tempdir().unwrap();
    let left = dir.path().join("state");
    drop(odin::agent::lock::StateLock::acquire(&left).unwrap());
    assert!(left.join("lock").exists());
    for dir in [left.clone(), dir.path().join("no-such-dir")] {
        let out = odin()
            .arg("reload")
            .arg("--state-dir")
            .arg(&dir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(&*dir.to_string_lossy()), "{err}");
    }
}

#[test]
fn a_burst_of_sighups_rebuilding_the_pipeline_loses_no_frame_and_ends_on_the_last_config() {
    let cpus: Vec<usize> = online().iter().take(2).collect();
    // Configurations that need different pipelines: two PEs and one (or,
    // on one CPU, two seeds), different policies, and each its own open-loop
    // rate, which the reload's log names.
    let (a, b) = if cpus.len() == 2 {
        (
            format!("{BASE}pes: [\"{}\", \"{}\"]\n", cpus[0], cpus[1]),
            format!(
                "{BASE}pes: [\"{}\"]\npolicy:\n  name: static\n",
                cpus.iter().copied().collect::<CpuSet>()
            ),
        )
    } else {
        (
            BASE.to_string(),
            BASE.replace("mobilenet_v2\n", "mobilenet_v2\n  seed: 7\n")
                + "policy:\n  name: static\n",
        )
    };
    let config = |i: usize| {
        let base = if i.is_multiple_of(2) { &b } else { &a };
        (
            format!("{base}load:\n  mode: open\n  rate: {}\n", 100 + i),
            format!("open loop at {} frames/s", 100 + i),
        )
    };
    let mut agent = Agent::start(&a);
    agent.wait_status_line();
    let sighups = 20;
    for i in 0..sighups {
        write_config(&agent.config, &config(i).0);
        agent.signal(Signal::SIGHUP);
    }
    // The burst is handled (the kernel may merge some): the last reload
    // that rebuilds the pipeline is the one that read the last file.
    let last = config(sighups - 1).1;
    let mut rebuilds = Vec::new();
    loop {
        let l = agent.wait_stderr(|l| l.contains("reload"));
        assert!(!l.contains("reload rejected"), "{l}");
        if l.contains("pipeline rebuilt") {
            rebuilds.push(l.clone());
            if l.contains(&last) {
                break;
            }
        }
    }
    let before = sample(&agent.scrape(), "odin_frames_total").unwrap();
    agent.frames_above(before);
    assert!(agent.child.try_wait().unwrap().is_none(), "still running");
    let body = agent.scrape();
    let applied = sample(&body, "odin_config_reloads_total{outcome=\"applied\"}").unwrap();
    assert!(
        applied > 0.0 && applied <= sighups as f64,
        "{applied} reloads"
    );
    assert!(
        applied >= rebuilds.len() as f64,
        "{applied} for {rebuilds:?}"
    );
    assert_eq!(
        sample(&body, "odin_config_reloads_total{outcome=\"rejected\"}"),
        Some(0.0)
    );
    // The last file's policy and PEs are the ones running.
    assert!(
        body.contains("odin_pipeline_info{model=\"mobilenet_v2\",policy=\"odin\"} 1"),
        "{body}"
    );
    let later: Vec<String> = agent
        .stderr
        .try_iter()
        .filter(|l| l.contains("pipeline rebuilt"))
        .collect();
    assert!(later.is_empty(), "rebuilt after the last file: {later:?}");
    let v = agent.stop();
    let frames = v["frames"].as_u64().unwrap();
    assert!(frames > 0);
    assert_eq!(
        v["admitted"].as_u64().unwrap(),
        frames,
        "frames in = frames out across rebuilds: {v}"
    );
    assert!(v["reloads"].as_f64().unwrap() >= applied, "{v}");
    let pes: Vec<&str> = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["pe"].as_str().unwrap())
        .collect();
    let want: Vec<String> = if cpus.len() == 2 {
        cpus.iter().map(|c| c.to_string()).collect()
    } else {
        vec![cpus[0].to_string()]
    };
    assert_eq!(pes, want, "the last file's PEs");
}

#[test]
fn a_stage_thread_moved_by_someone_else_is_pinned_back() {
    let cpus: Vec<usize> = online().iter().take(2).collect();
    if cpus.len() < 2 {
        common::skip("needs two online CPUs");
        return;
    }
    let agent = Agent::start(&format!(
        "{BASE}pes: [\"{}\", \"{}\"]\npolicy:\n  name: static\n",
        cpus[0], cpus[1]
    ));
    let pid = agent.child.id();
    let tid: i32 = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            (comm.trim() == "odin-stage-0").then(|| e.file_name().to_str()?.parse().ok())?
        })
        .next()
        .expect("a thread named odin-stage-0");
    let mut other = nix::sched::CpuSet::new();
    other.set(cpus[1]).unwrap();
    nix::sched::sched_setaffinity(Pid::from_raw(tid), &other).unwrap();
    let warn = agent.wait_stderr(|l| l.contains("pinning drift"));
    assert!(warn.contains("stage=0"), "{warn}");
    // Re-pinned at the stage's next frame boundary.
    for _ in 0..30 {
        let mask = nix::sched::sched_getaffinity(Pid::from_raw(tid)).unwrap();
        if mask.is_set(cpus[0]).unwrap() && !mask.is_set(cpus[1]).unwrap() {
            let v = agent.stop();
            assert_eq!(v["frames"], v["admitted"]);
            return;
        }
        agent.wait_status_line();
    }
    panic!("stage 0 was not pinned back to CPU {}", cpus[0]);
}

#[test]
fn check_config_prints_the_effective_yaml_or_names_field_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    write_config(&good, "policy:\n  name: guided\nslo:\n  latency_ms: 80\n");
    let out = odin().arg("check-config").arg(&good).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("alpha: 10"), "defaults filled in:\n{text}");
    let cfg = Config::parse(&text, "stdout", &online()).unwrap();
    assert_eq!(cfg.policy.name, "guided");
    assert_eq!(cfg.slo.latency_ms, Some(80.0));
    assert_eq!(
        Config {
            policy: cfg.policy.clone(),
            slo: cfg.slo,
            ..Config::default()
        },
        cfg
    );

    for (text, field, line) in [
        ("model:\n  name: resnet18\n  nmae: x\n", "nmae", "line 3"),
        ("monitor:\n  tick_ms: 5\n", "monitor.tick_ms", "line 2"),
        (
            "policy:\n  params:\n    alpha: 0\n",
            "policy.params.alpha",
            "line 3",
        ),
    ] {
        let bad = dir.path().join("bad.yaml");
        write_config(&bad, text);
        let out = odin().arg("check-config").arg(&bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{text:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(field) && err.contains(line) && err.contains("column"),
            "{text:?}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        // `odin run` refuses it the same way, before starting anything.
        let out = odin()
            .arg("run")
            .arg("--config")
            .arg(&bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{text:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(field));
    }

    // An ONNX model that does not import is refused, naming the file.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx");
    let onnx = dir.path().join("onnx.yaml");
    for (model, ok) in [("ops/residual_block.onnx", true), ("bad/cycle.onnx", false)] {
        write_config(
            &onnx,
            &format!("model:\n  path: {}\n", fixtures.join(model).display()),
        );
        let out = odin().arg("check-config").arg(&onnx).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), ok, "{model}: {err}");
        if !ok {
            assert_eq!(out.status.code(), Some(2));
            assert!(
                err.contains("model.path") && err.contains("cycle.onnx") && err.contains("cycle"),
                "{err}"
            );
        }
    }

    if !nix::unistd::Uid::effective().is_root() {
        common::skip("the mode 0666 case needs root");
        return;
    }
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = odin().arg("check-config").arg(&good).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("writable by group or others") && err.contains("chmod go-w"),
        "{err}"
    );
}

#[test]
fn flags_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odin.yaml");
    write_config(
        &path,
        "model:\n  name: resnet50\npolicy:\n  name: lls\nmetrics:\n  enabled: false\n",
    );
    let out = odin()
        .args(["run", "--config"])
        .arg(&path)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args([
            "--model",
            "mobilenet_v2",
            "--policy",
            "static",
            "--duration",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header = String::from_utf8(out.stdout).unwrap();
    let header = header.lines().next().unwrap();
    assert!(
        header.contains("mobilenet_v2") && header.contains("policy static"),
        "{header}"
    );
    assert!(
        !header.contains("metrics on"),
        "metrics off in the file: {header}"
    );
}

/// A cpuset cgroup of the test's own under the machine's cpuset
/// hierarchy, removed when dropped.
struct CpusetGroup {
    dir: PathBuf,
}

impl CpusetGroup {
    /// `None` when the machine has no writable cpuset controller (or the
    /// test does not run as root).
    fn create(cpus: &str) -> Option<Self> {
        if !nix::unistd::Uid::effective().is_root() {
            return None;
        }
        let layout = odin::cgroup::Layout::detect(Path::new("/")).ok()?;
        let (mount, _) = layout.controller("cpuset")?;
        let dir = mount.join(format!("odin-test-cpuset-{}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        let group = Self { dir };
        if !group.dir.join("cpuset.cpus").is_file() {
            return None;
        }
        // v1 starts a child with no memory nodes; v2 inherits them.
        let mems = group.dir.join("cpuset.mems");
        if std::fs::read_to_string(&mems).ok()?.trim().is_empty() {
            let parent = std::fs::read_to_string(mount.join("cpuset.mems")).ok()?;
            std::fs::write(&mems, parent.trim()).ok()?;
        }
        group.set_cpus(cpus);
        Some(group)
    }

    fn set_cpus(&self, cpus: &str) {
        std::fs::write(self.dir.join("cpuset.cpus"), cpus).unwrap();
    }

    fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }
}

impl Drop for CpusetGroup {
    fn drop(&mut self) {
        // The agent is dropped (killed and reaped) first; an exiting task
        // may linger in the group for a moment.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("could not remove {}", self.dir.display());
    }
}

#[test]
fn a_narrowed_cpuset_moves_the_pipeline_onto_what_is_left_and_back() {
    let cpus: Vec<usize> = online().iter().take(2).collect();
    if cpus.len() < 2 {
        common::skip("needs two online CPUs");
        return;
    }
    let (a, b) = (cpus[0], cpus[1]);
    let Some(group) = CpusetGroup::create(&format!("{a},{b}")) else {
        common::skip("needs root and a writable cpuset controller");
        return;
    };
    let agent = Agent::start_in(
        &format!("{BASE}pes: [\"{a}\", \"{b}\"]\npolicy:\n  name: static\n"),
        Some(&group.procs()),
    );
    let pid = agent.child.id().to_string();
    let members = std::fs::read_to_string(group.procs()).unwrap();
    assert!(members.lines().any(|l| l == pid), "{pid} not in {members}");
    agent.wait_status_line();

    group.set_cpus(&a.to_string());
    let warn = agent.wait_stderr(|l| l.contains("cpuset of odin's cgroup changed"));
    assert!(warn.contains(&format!("PEs {a};{b} -> {a}")), "{warn}");
    // One stage now, on the CPU that is left.
    let line = agent.wait_stdout(|l| l.starts_with("t=") && !l.contains(&format!("@{b}")));
    assert_eq!(line.matches(" ms @").count(), 1, "{line}");

    group.set_cpus(&format!("{a},{b}"));
    let warn = agent.wait_stderr(|l| l.contains("cpuset of odin's cgroup changed"));
    assert!(warn.contains(&format!("PEs {a} -> {a};{b}")), "{warn}");
    let line = agent.wait_stdout(|l| l.starts_with("t=") && l.matches(" ms @").count() == 2);
    assert!(line.contains(&format!("@{b}")), "{line}");

    let v = agent.stop();
    assert_eq!(
        v["frames"], v["admitted"],
        "frames lost across the rebuilds"
    );
    let cuts: Vec<usize> = v["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["cuts"].as_array().unwrap().len())
        .collect();
    assert_eq!(cuts, [1, 0, 1], "partitions in force: {}", v["partitions"]);
}

#[test]
fn reload_reimports_a_replaced_onnx_file_and_keeps_the_last_good_one() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx");
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("net.onnx");
    // Replaced as a deployment would: a new file renamed over the old.
    let replace = |from: &str| {
        let tmp = dir.path().join("incoming.onnx");
        std::fs::copy(fixtures.join(from), &tmp).unwrap();
        std::fs::rename(&tmp, &model).unwrap();
    };
    replace("light/light_squeezenet.onnx");
    let config = format!(
        "model:\n  path: {}\nmetrics:\n  listen: 127.0.0.1:0\n",
        model.display()
    );
    let mut agent = Agent::start(&config);
    agent.wait_status_line();
    let body = agent.scrape();
    assert!(body.contains("odin_pipeline_info{model=\"net\""), "{body}");
    let frames = agent.frames_above(0.0);

    // The same configuration, another network in the file: re-imported.
    replace("ops/residual_block.onnx");
    agent.signal(Signal::SIGHUP);
    agent.wait_notify("RELOADING=1");
    agent.wait_notify("READY=1");
    let line = agent.wait_stderr(|l| l.contains("reloaded"));
    assert!(line.contains("pipeline rebuilt (net"), "{line}");
    let frames = agent.frames_above(frames);

    // A broken file is refused naming it; the running model stays.
    replace("bad/truncated.onnx");
    agent.signal(Signal::SIGHUP);
    agent.wait_notify("RELOADING=1");
    agent.wait_notify("READY=1");
    let err = agent.wait_stderr(|l| l.contains("reload rejected"));
    assert!(
        err.contains("net.onnx") && err.contains("not an ONNX model"),
        "{err}"
    );
    agent.frames_above(frames);

    let v = agent.stop();
    assert_eq!(v["model"], "net");
    assert_eq!(v["frames"], v["admitted"], "frames in = frames out: {v}");
    assert_eq!(v["reloads"], 1);
}
