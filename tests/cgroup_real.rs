//! A real cap on this machine's `cpu` controller: a busy child runs at
//! about a whole CPU, is capped to the quota through odin's best-effort
//! cgroup, and gets its CPU and its cgroup back when the cap is lifted.
//!
//! Needs root and a writable `cpu` controller (v2 or v1); skips with the
//! reason otherwise. Every cgroup it creates is removed, also when it
//! fails (the guard kills the child and undoes from the journal).

use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use odin::cgroup::enforce::{EnforceSettings, Enforcer, Target};
use odin::cgroup::{Kernel, ProcessInfo};

const QUOTA: f64 = 0.2;

/// Kills the child and undoes every change, whatever happened.
struct Guard {
    child: Child,
    enforcer: Option<Enforcer>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(e) = self.enforcer.as_mut() {
            match e.lift() {
                Ok(r) if r.failed.is_empty() => {}
                r => eprintln!("cleanup left something behind: {r:?}"),
            }
        }
    }
}

/// CPU time the process used over about a second, as a share of one CPU,
/// and the share of wall time it was runnable (running or waiting), both
/// from `/proc/<pid>/schedstat` (ns).
fn cpu_share(pid: u32) -> (f64, f64) {
    let read = || {
        let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).unwrap();
        let v: Vec<u64> = text
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        (v[0], v[1], Instant::now())
    };
    let (r0, w0, t0) = read();
    // Letting CPU time accumulate is the measurement itself.
    std::thread::sleep(Duration::from_secs(1));
    let (r1, w1, t1) = read();
    let wall = (t1 - t0).as_nanos() as f64;
    ((r1 - r0) as f64 / wall, (r1 + w1 - r0 - w0) as f64 / wall)
}

#[test]
fn a_real_busy_child_is_capped_to_the_quota_and_released() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root to change cgroups");
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let name = format!("odin-test-{}", std::process::id());
    let settings = EnforceSettings {
        root: "/".into(),
        name: name.clone(),
        quota: QUOTA,
        weight: 1000,
        narrow_cpuset: false,
        state_dir: state.path().to_path_buf(),
    };
    let child = Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut guard = Guard {
        child,
        enforcer: None,
    };
    let enforcer = match Enforcer::new(Arc::new(Kernel), settings, None, std::process::id() as i32)
    {
        Ok(e) => e,
        Err(reason) => {
            eprintln!("skipped: no writable cpu controller: {reason}");
            return;
        }
    };
    let cpu = enforcer.cpu().clone();
    let proc = Path::new("/proc");
    let origin = cpu.cgroup_of(proc, pid as i32).unwrap().unwrap();
    let info = ProcessInfo::read(proc, pid as i32).unwrap().unwrap();
    let guard_enforcer = guard.enforcer.insert(enforcer);

    let (before, demand_before) = cpu_share(pid);
    eprintln!("before: {before:.3} CPU (runnable {demand_before:.3})");
    // A loaded machine may not give it a whole CPU; it wants one.
    assert!(
        before > 0.6 || demand_before > 0.9,
        "the busy loop used {before:.3} CPU, runnable {demand_before:.3}"
    );

    let report = guard_enforcer
        .cap(
            &[Target {
                pid: pid as i32,
                start: info.start,
                comm: info.comm.clone(),
            }],
            &"0".parse().unwrap(),
        )
        .unwrap();
    assert_eq!(report.capped, vec![pid as i32], "{report:?}");
    let capped_in = cpu.cgroup_of(proc, pid as i32).unwrap().unwrap();
    assert_eq!(capped_in, format!("/{name}/besteffort"));
    let dir = cpu.dir(&capped_in);
    assert!(dir.is_dir());
    if cpu.v2 {
        assert_eq!(
            std::fs::read_to_string(dir.join("cpu.max")).unwrap().trim(),
            "20000 100000"
        );
    } else {
        assert_eq!(
            std::fs::read_to_string(dir.join("cpu.cfs_quota_us"))
                .unwrap()
                .trim(),
            "20000"
        );
    }
    let (capped, _) = cpu_share(pid);
    eprintln!("capped at {QUOTA}: {capped:.3} CPU");
    // A cap is an upper bound, whatever else runs.
    assert!(
        capped < QUOTA * 1.5 + 0.05,
        "capped at {QUOTA} but used {capped:.3} CPU"
    );

    let undo = guard_enforcer.lift().unwrap();
    assert!(undo.failed.is_empty(), "{undo:?}");
    assert_eq!(cpu.cgroup_of(proc, pid as i32).unwrap().unwrap(), origin);
    assert!(
        !cpu.dir(&format!("/{name}")).exists(),
        "odin's cgroups removed"
    );
    // Back to a whole CPU, unless other load on a shared machine takes it:
    // then the loop still wants one, and nothing limits its cgroup.
    let samples: Vec<(f64, f64)> = (0..5)
        .map(|_| cpu_share(pid))
        .take_while(|&(after, _)| after <= 0.6)
        .collect();
    eprintln!("after the lift, below 0.6 CPU: {samples:?}");
    if samples.len() == 5 {
        assert!(
            samples.iter().all(|&(_, demand)| demand > 0.9),
            "after the lift the loop stopped wanting a CPU: {samples:?}"
        );
        let limit = if cpu.v2 {
            "cpu.max"
        } else {
            "cpu.cfs_quota_us"
        };
        let quota = std::fs::read_to_string(cpu.dir(&origin).join(limit)).unwrap();
        assert!(
            quota.starts_with("max") || quota.trim() == "-1",
            "loaded machine, and {limit} of {origin} is {quota:?}"
        );
    }
    assert!(
        !state.path().join(odin::cgroup::journal::FILE).exists(),
        "journal clean"
    );
}
