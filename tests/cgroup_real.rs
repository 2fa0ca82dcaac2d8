//! A real cap on this machine's `cpu` controller: a busy child runs at
//! about a whole CPU, is capped to the quota (on v1 through odin's
//! best-effort cgroup, on v2 in a cgroup of its own, where it stays), and
//! gets its CPU and its cgroup back when the cap is lifted. On the cgroup2
//! mount, whatever its controllers: what odin refuses to cap, and a
//! journal whose paths leave the mount.
//!
//! Needs root and a writable `cpu` controller (v2 or v1); skips with the
//! reason otherwise. Every cgroup it creates is removed, also when it
//! fails (the guard kills the child and undoes from the journal).

mod common;

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
    /// v2: the child's own cgroup.
    leaf: Option<std::path::PathBuf>,
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
        if let Some(leaf) = &self.leaf {
            let _ = std::fs::remove_dir(leaf);
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
        common::skip("needs root to change cgroups");
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
        leaf: None,
    };
    let enforcer = match Enforcer::new(Arc::new(Kernel), settings, None, std::process::id() as i32)
    {
        Ok(e) => e,
        Err(reason) => {
            common::skip(format!("no writable cpu controller: {reason}"));
            return;
        }
    };
    let cpu = enforcer.cpu().clone();
    if cpu.v2 {
        // On v2 odin caps a cgroup only where the child is alone, below a
        // parent that enables cpu: give it one.
        let subtree = std::fs::read_to_string(cpu.mount.join("cgroup.subtree_control")).unwrap();
        if !subtree.split_whitespace().any(|c| c == "cpu") {
            common::skip("the cgroup2 root does not enable cpu for its children");
            return;
        }
        let leaf = cpu.dir(&format!("/{name}-leaf"));
        std::fs::create_dir(&leaf).unwrap();
        guard.leaf = Some(leaf.clone());
        std::fs::write(leaf.join("cgroup.procs"), pid.to_string()).unwrap();
    }
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
    if cpu.v2 {
        assert_eq!(capped_in, origin, "on v2 nobody moves");
    } else {
        assert_eq!(capped_in, format!("/{name}/besteffort"));
    }
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

/// Removes the test's v2 cgroup (its processes moved back to the root
/// first) and kills its children, whatever happened.
struct V2Guard {
    dir: std::path::PathBuf,
    mount: std::path::PathBuf,
    children: Vec<Child>,
}

impl Drop for V2Guard {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Ok(text) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in text.split_whitespace() {
                let _ = std::fs::write(self.mount.join("cgroup.procs"), pid);
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// On this kernel's cgroup2 mount: a real process alone in a cgroup whose
/// parent does not enable `cpu` is advised only (nothing written, the
/// parent's `cgroup.subtree_control` untouched); an innocent process
/// joining it is named as the reason; and a journal naming that cgroup and
/// paths outside the mount is undone only for the cgroup.
#[test]
fn on_the_real_cgroup2_mount_odin_caps_nothing_it_may_not_and_trusts_no_journal_path() {
    use odin::cgroup::enforce::{Cap, plan, restore};
    use odin::cgroup::journal::{Entry, Journal};
    use odin::cgroup::{Hierarchy, Layout};
    if !nix::unistd::Uid::effective().is_root() {
        common::skip("needs root to create a cgroup");
        return;
    }
    let layout = Layout::detect(Path::new("/")).unwrap();
    let Some((mount, controllers)) = layout.v2.clone() else {
        common::skip("no cgroup2 mount");
        return;
    };
    eprintln!(
        "cgroup2 at {} with controllers {controllers:?}",
        mount.display()
    );
    let subtree_before = std::fs::read_to_string(mount.join("cgroup.subtree_control")).unwrap();
    let cgroup = format!("/odin-test-{}-v2", std::process::id());
    let dir = mount.join(cgroup.trim_start_matches('/'));
    std::fs::create_dir(&dir).unwrap();
    let mut guard = V2Guard {
        dir: dir.clone(),
        mount: mount.clone(),
        children: Vec::new(),
    };
    let spawn = |guard: &mut V2Guard| {
        let c = Command::new("sleep").arg("600").spawn().unwrap();
        let pid = c.id() as i32;
        std::fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap();
        guard.children.push(c);
        let info = ProcessInfo::read(Path::new("/proc"), pid).unwrap().unwrap();
        Target {
            pid,
            start: info.start,
            comm: info.comm,
        }
    };
    let hog = spawn(&mut guard);
    // The cpu controller as the unified hierarchy would carry it.
    let h = Hierarchy {
        controller: "cpu".into(),
        mount: mount.clone(),
        v2: true,
    };
    let proc = Path::new("/proc");
    let root_has_cpu = subtree_before.split_whitespace().any(|c| c == "cpu");
    let planned = plan(
        &h,
        proc,
        &cgroup,
        std::slice::from_ref(&hog),
        "/unused",
        false,
    );
    if root_has_cpu {
        assert_eq!(
            planned,
            Ok(Cap::CpuMax {
                cgroup: cgroup.clone()
            })
        );
    } else {
        let why = planned.unwrap_err();
        assert!(
            why.contains("does not enable cpu for its children"),
            "{why}"
        );
    }
    // A reused pid: the process in the cgroup is not the one seen.
    let mut stale = hog.clone();
    stale.start += 1;
    let why = plan(&h, proc, &cgroup, &[stale], "/unused", false).unwrap_err();
    assert!(why.contains("pid reused"), "{why}");
    // An innocent joins.
    let innocent = spawn(&mut guard);
    let why = plan(
        &h,
        proc,
        &cgroup,
        std::slice::from_ref(&hog),
        "/unused",
        false,
    )
    .unwrap_err();
    assert!(
        why.contains(&format!("also holds pid {} (sleep)", innocent.pid)),
        "{why}"
    );
    assert_eq!(
        std::fs::read_to_string(mount.join("cgroup.subtree_control")).unwrap(),
        subtree_before,
        "odin never writes a subtree_control it did not create"
    );

    // A journal naming the test cgroup, a directory outside the mount and
    // a path that climbs out of it: only the cgroup is removed.
    let Some(hierarchy) = controllers.first().and_then(|c| layout.hierarchy(c)) else {
        common::skip("the journal part: the cgroup2 mount has no controller to name");
        return;
    };
    if !hierarchy.v2 {
        common::skip(format!(
            "the journal part: {} is bound to v1",
            hierarchy.controller
        ));
        return;
    }
    let victim = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut j = Journal::open(state.path()).unwrap();
    for path in [
        dir.clone(),
        victim.path().to_path_buf(),
        dir.join("../..")
            .join(victim.path().strip_prefix("/").unwrap()),
    ] {
        j.record(Entry::Mkdir {
            hierarchy: hierarchy.clone(),
            path,
        })
        .unwrap();
    }
    drop(j);
    // The processes go to the root when their cgroup is removed.
    let r = restore(&Kernel, Path::new("/"), state.path(), None).unwrap();
    assert!(r.failed.is_empty(), "{r:?}");
    assert_eq!(r.refused.len(), 2, "{r:?}");
    assert!(r.done[0].contains("removed"), "{r:?}");
    assert!(!dir.exists(), "the test cgroup is removed");
    assert!(
        victim.path().is_dir(),
        "nothing outside the mount is removed"
    );
    assert_eq!(
        h.cgroup_of(proc, hog.pid).unwrap().as_deref(),
        Some("/"),
        "evacuated to the root"
    );
}
