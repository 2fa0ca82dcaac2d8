//! `odin run` in cgroup enforce mode on this machine: the real binary caps
//! a real antagonist on the pipeline's CPU (v1: moved into odin's
//! best-effort cgroup; v2: its own cgroup's `cpu.max`, where it stays),
//! and the cap is undone by SIGTERM, and after `kill -9` by the next
//! start.
//!
//! The antagonist runs in a cgroup of its own, which the configuration's
//! `allow` list names, so odin caps nothing else on this shared machine.
//! Every wait polls a condition with a deadline. Needs root, two online
//! CPUs and a writable `cpu` controller; skips with the reason otherwise.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, unbounded};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use odin::cgroup::{Hierarchy, Layout};

/// Longest any wait may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// Both tests put a busy loop on CPU 1: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The cpu hierarchy, if this machine lets the tests use it.
fn cpu_hierarchy() -> Option<Hierarchy> {
    if !nix::unistd::Uid::effective().is_root() {
        common::skip("needs root to change cgroups");
        return None;
    }
    let online = odin::topology::online_cpus(Path::new("/")).unwrap();
    if !(online.contains(0) && online.contains(1)) {
        common::skip(format!("needs CPUs 0 and 1 online ({online})"));
        return None;
    }
    let Some(h) = Layout::detect(Path::new("/")).unwrap().hierarchy("cpu") else {
        common::skip("no cpu controller");
        return None;
    };
    if let Err(e) = h.writable() {
        common::skip(e);
        return None;
    }
    if h.v2 && !odin::cgroup::v2::subtree_has(&h.mount, "cpu").unwrap_or(false) {
        common::skip("the cgroup2 root does not enable cpu for its children");
        return None;
    }
    Some(h)
}

fn lines(r: impl std::io::Read + Send + 'static) -> Receiver<String> {
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

/// The world of one test: the antagonist in its own cgroup, odin's
/// cgroup name and state directory. Dropping it kills every process and
/// removes every cgroup left.
struct World {
    cpu: Hierarchy,
    name: String,
    antag_cgroup: String,
    antag: Child,
    odin: Vec<Child>,
    dir: tempfile::TempDir,
}

impl World {
    fn new(cpu: Hierarchy, tag: &str) -> Self {
        let id = std::process::id();
        let name = format!("odin-it-{id}-{tag}");
        let antag_cgroup = format!("/odin-it-{id}-{tag}-antagonist");
        std::fs::create_dir(cpu.dir(&antag_cgroup)).unwrap();
        let antag = Command::new(env!("CARGO_BIN_EXE_odin"))
            .args(["stress", "--kind", "cpu", "--cpus", "1"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let w = Self {
            cpu,
            name,
            antag_cgroup,
            antag,
            odin: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::write(
            w.cpu.dir(&w.antag_cgroup).join("cgroup.procs"),
            w.antag.id().to_string(),
        )
        .unwrap();
        assert_eq!(w.antag_in(), w.antag_cgroup);
        w
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn journal(&self) -> PathBuf {
        self.state_dir().join(odin::cgroup::journal::FILE)
    }

    fn config(&self, mode: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{mode}.yaml"));
        std::fs::write(
            &path,
            format!(
                "model:\n  name: mobilenet_v2\npes: [\"0\", \"1\"]\nslo:\n  latency_ms: 0.01\n\
                 metrics:\n  enabled: false\npolicy:\n  name: static\n\
                 cgroup:\n  mode: {mode}\n  escalate_after_ms: 300\n  lift_after_ms: 1000\n  \
                 hold_ms: 600000\n  allow: [\"{}\"]\n  name: {}\n  root: /\n  state_dir: {}\n",
                self.antag_cgroup,
                self.name,
                self.state_dir().display()
            ),
        )
        .unwrap();
        path
    }

    /// Starts `odin run` and waits for its start-up line (after which
    /// leftovers of a previous run are undone); returns its index and
    /// stderr.
    fn start_odin(&mut self, mode: &str) -> (usize, Receiver<String>) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_odin"))
            .args(["run", "--config"])
            .arg(self.config(mode))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = lines(child.stdout.take().unwrap());
        let err = lines(child.stderr.take().unwrap());
        let header = out.recv_timeout(PATIENCE).expect("odin's start-up line");
        assert!(header.starts_with("odin run:"), "{header}");
        // Keep stdout drained.
        std::thread::spawn(move || for _ in out {});
        self.odin.push(child);
        (self.odin.len() - 1, err)
    }

    fn antag_in(&self) -> String {
        self.cpu
            .cgroup_of(Path::new("/proc"), self.antag.id() as i32)
            .unwrap()
            .unwrap()
    }

    fn besteffort(&self) -> String {
        format!("/{}/besteffort", self.name)
    }

    /// Where the cap is: odin's best-effort cgroup (v1), or the
    /// antagonist's own (v2).
    fn capped_cgroup(&self) -> String {
        if self.cpu.v2 {
            self.antag_cgroup.clone()
        } else {
            self.besteffort()
        }
    }

    /// The antagonist's cgroup has odin's limit: moved into the
    /// best-effort cgroup (v1), or its own `cpu.max` set (v2).
    fn is_capped(&self) -> bool {
        if self.cpu.v2 {
            std::fs::read_to_string(self.cpu.dir(&self.antag_cgroup).join("cpu.max"))
                .is_ok_and(|q| q.starts_with("20000 "))
        } else {
            self.antag_in() == self.besteffort()
        }
    }

    /// Waits until odin capped the antagonist.
    fn wait_capped(&mut self, odin: usize) {
        let target = self.capped_cgroup();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let last = self.antag_in();
            if self.is_capped() {
                break;
            }
            if let Some(status) = self.odin[odin].try_wait().unwrap() {
                panic!("odin exited ({status}) before capping");
            }
            assert!(
                Instant::now() < deadline,
                "antagonist still in {last}, not {target}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let journal = std::fs::read_to_string(self.journal()).unwrap();
        let named = if self.cpu.v2 {
            journal.contains("\"op\":\"set\"")
        } else {
            journal.contains(&format!("\"pid\":{}", self.antag.id()))
        };
        assert!(named && journal.contains(&target), "{journal}");
        if self.cpu.v2 {
            assert_eq!(self.antag_in(), self.antag_cgroup, "on v2 nobody moves");
        }
        let quota = if self.cpu.v2 {
            "cpu.max"
        } else {
            "cpu.cfs_quota_us"
        };
        let q = std::fs::read_to_string(self.cpu.dir(&target).join(quota)).unwrap();
        assert!(q.starts_with("20000"), "{quota}: {q}");
    }

    /// The antagonist is back, odin's cgroups are gone, the journal is clean.
    fn assert_undone(&self) {
        assert_eq!(self.antag_in(), self.antag_cgroup);
        assert!(!self.is_capped(), "the antagonist is still capped");
        assert!(
            !self.cpu.dir(&format!("/{}", self.name)).exists(),
            "odin's cgroups are left"
        );
        assert!(!self.journal().exists(), "the journal is not clean");
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for c in self.odin.iter_mut().chain(std::iter::once(&mut self.antag)) {
            let _ = c.kill();
            let _ = c.wait();
        }
        for cg in [
            self.besteffort(),
            format!("/{}/pipeline", self.name),
            format!("/{}", self.name),
            self.antag_cgroup.clone(),
        ] {
            let dir = self.cpu.dir(&cg);
            // A test that failed may leave this test process in one of them.
            for pid in odin::cgroup::procs(&dir).unwrap_or_default() {
                let _ = std::fs::write(self.cpu.mount.join("cgroup.procs"), pid.to_string());
            }
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

#[test]
fn kill_9_leaves_a_cap_that_the_next_start_undoes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(cpu) = cpu_hierarchy() else { return };
    let mut w = World::new(cpu, "crash");
    let (first, _err) = w.start_odin("enforce");
    w.wait_capped(first);
    let odin_pid = w.odin[first].id() as i32;
    kill(Pid::from_raw(odin_pid), Signal::SIGKILL).unwrap();
    w.odin[first].wait().unwrap();
    // The cap outlives the crash.
    assert!(w.is_capped());
    assert!(w.journal().exists());

    // The next start (here in advise mode, so it does not cap again)
    // undoes what the journal names before it runs the pipeline.
    let (second, err) = w.start_odin("advise");
    let undid = loop {
        let l = err
            .recv_timeout(PATIENCE)
            .expect("a log line about the undo");
        if l.contains("undid") || l.contains("not undone") || l.contains("undoing") {
            break l;
        }
    };
    let undone = if w.cpu.v2 {
        format!("restored cpu.max of {}", w.antag_cgroup)
    } else {
        format!(
            "moved pid {} (odin) back to {}",
            w.antag.id(),
            w.antag_cgroup
        )
    };
    assert!(
        undid.contains("cgroup changes left by a previous run") && undid.contains(&undone),
        "{undid}"
    );
    w.assert_undone();
    kill(Pid::from_raw(w.odin[second].id() as i32), Signal::SIGTERM).unwrap();
    assert_eq!(w.odin[second].wait().unwrap().code(), Some(0));
}

#[test]
fn sigterm_undoes_the_cap() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(cpu) = cpu_hierarchy() else { return };
    let mut w = World::new(cpu, "term");
    let (odin, err) = w.start_odin("enforce");
    w.wait_capped(odin);
    kill(Pid::from_raw(w.odin[odin].id() as i32), Signal::SIGTERM).unwrap();
    let status = w.odin[odin].wait().unwrap();
    let log: Vec<String> = err.try_iter().collect();
    assert_eq!(status.code(), Some(0), "{}", log.join("\n"));
    assert!(
        log.iter()
            .any(|l| l.contains("cgroup cap lifted (odin is stopping)")),
        "{}",
        log.join("\n")
    );
    w.assert_undone();
}

/// A second SIGTERM right after the first cuts the stop short but still
/// lifts the cap: nothing of odin's is left behind.
#[test]
fn a_second_sigterm_still_undoes_the_cap() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(cpu) = cpu_hierarchy() else { return };
    let mut w = World::new(cpu, "term2");
    let (odin, err) = w.start_odin("enforce");
    w.wait_capped(odin);
    let pid = Pid::from_raw(w.odin[odin].id() as i32);
    kill(pid, Signal::SIGTERM).unwrap();
    // The second after the first is taken (two at once merge into one).
    let mut log = Vec::new();
    loop {
        let l = err.recv_timeout(PATIENCE).expect("odin logs the drain");
        log.push(l);
        if log.last().unwrap().contains("draining") {
            break;
        }
    }
    kill(pid, Signal::SIGTERM).unwrap();
    let status = w.odin[odin].wait().unwrap();
    log.extend(err.try_iter());
    assert_eq!(status.code(), Some(0), "{}", log.join("\n"));
    w.assert_undone();
    assert!(!w.journal().exists(), "{}", log.join("\n"));
}
