//! The CPUs odin's own cgroup allows, and what that leaves of the
//! configured PEs.
//!
//! An administrator (or a container runtime) can narrow the cpuset of the
//! cgroup odin runs in at any time; the kernel then rewrites the affinity
//! of every task in it, stage threads included. odin reads the cgroup's
//! effective CPUs each tick, and when they change it plans the pipeline
//! again on what is left of each PE.
//!
//! Where the file is:
//! - v1: the hierarchy carrying `cpuset` (`N:cpuset:/path` in
//!   `/proc/self/cgroup`), file `cpuset.effective_cpus`;
//! - v2: the `0::/path` line, file `cpuset.cpus.effective`, which exists
//!   only where the cpuset controller is enabled, so the nearest ancestor
//!   that has it answers.
//!
//! No cpuset controller, or no file anywhere up the tree, means no
//! constraint beyond the online CPUs.

use std::path::{Path, PathBuf};

use crate::cgroup::Layout;
use crate::cpulist::CpuSet;

/// Watches the effective cpuset of odin's cgroup.
#[derive(Debug)]
pub struct CpusetWatch {
    file: Option<PathBuf>,
    last: Option<CpuSet>,
}

/// A change of the allowed CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpusetChange {
    /// What was allowed before (`None`: unknown).
    pub from: Option<CpuSet>,
    /// What is allowed now.
    pub to: CpuSet,
}

impl CpusetWatch {
    /// Finds the cpuset file of process `pid` (`"self"` for odin) under
    /// `root` (`/` on a real system) and reads it once.
    pub fn locate(root: &Path, pid: &str) -> Self {
        let file = Layout::detect(root)
            .ok()
            .and_then(|layout| cpuset_file(root, &layout, pid));
        let mut watch = Self { file, last: None };
        watch.last = watch.read();
        watch
    }

    /// A watch that never reports a constraint.
    pub fn none() -> Self {
        Self {
            file: None,
            last: None,
        }
    }

    /// The file read, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The CPUs allowed at the last read.
    pub fn allowed(&self) -> Option<&CpuSet> {
        self.last.as_ref()
    }

    /// Reads the file; `None` when there is none or it cannot be read or
    /// parsed (an empty effective set means the same: no usable answer).
    pub fn read(&self) -> Option<CpuSet> {
        let text = std::fs::read_to_string(self.file.as_ref()?).ok()?;
        let set: CpuSet = text.trim().parse().ok()?;
        (!set.is_empty()).then_some(set)
    }

    /// Reads again and reports a change since the last read.
    pub fn poll(&mut self) -> Option<CpusetChange> {
        let now = self.read()?;
        if self.last.as_ref() == Some(&now) {
            return None;
        }
        let from = self.last.replace(now.clone());
        Some(CpusetChange { from, to: now })
    }
}

fn cpuset_file(root: &Path, layout: &Layout, pid: &str) -> Option<PathBuf> {
    let cpuset = layout.hierarchy("cpuset")?;
    let text = std::fs::read_to_string(root.join(format!("proc/{pid}/cgroup"))).ok()?;
    let name = if cpuset.v2 {
        "cpuset.cpus.effective"
    } else {
        "cpuset.effective_cpus"
    };
    let mount = &cpuset.mount;
    let mut dir = cpuset.dir(&cpuset.parse_cgroup(&text)?);
    loop {
        let file = dir.join(name);
        if file.is_file() {
            return Some(file);
        }
        if &dir == mount || !dir.pop() || !dir.starts_with(mount) {
            return None;
        }
    }
}

/// What is left of each configured PE when only `allowed` may be used:
/// each PE narrowed to its allowed CPUs, PEs left with none dropped (PEs
/// that end up equal stay separate stages, time-sharing, as configured
/// PEs may). When no PE keeps a CPU, one PE over all the allowed CPUs.
pub fn usable_pes(configured: &[CpuSet], allowed: &CpuSet) -> Vec<CpuSet> {
    let mut pes: Vec<CpuSet> = configured
        .iter()
        .map(|pe| pe.intersection(allowed))
        .filter(|pe| !pe.is_empty())
        .collect();
    if pes.is_empty() {
        pes.push(allowed.clone());
    }
    pes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> CpuSet {
        s.parse().unwrap()
    }

    fn sets(s: &[&str]) -> Vec<CpuSet> {
        s.iter().map(|x| set(x)).collect()
    }

    /// A fake root with a mountinfo naming `mounts` (fstype, mount point,
    /// super options) and `/proc/self/cgroup` holding `cgroup`.
    fn fake_root(mounts: &[(&str, &str, &str)], cgroup: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let proc_self = dir.path().join("proc/self");
        std::fs::create_dir_all(&proc_self).unwrap();
        let info: String = mounts
            .iter()
            .enumerate()
            .map(|(i, (fs, at, opts))| {
                format!(
                    "{} 1 0:{i} / {at} rw,nosuid shared:{i} - {fs} {fs} {opts}\n",
                    30 + i
                )
            })
            .collect();
        std::fs::write(proc_self.join("mountinfo"), info).unwrap();
        std::fs::write(proc_self.join("cgroup"), cgroup).unwrap();
        dir
    }

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn v1_reads_the_cpuset_hierarchy_of_the_process() {
        let root = fake_root(
            &[
                ("cgroup", "/sys/fs/cgroup/cpuset", "rw,cpuset"),
                ("cgroup", "/sys/fs/cgroup/cpu,cpuacct", "rw,cpu,cpuacct"),
            ],
            "4:cpu,cpuacct:/other\n3:cpuset:/odin.slice\n0::/\n",
        );
        write(
            root.path(),
            "sys/fs/cgroup/cpuset/cpuset.effective_cpus",
            "0-3\n",
        );
        write(
            root.path(),
            "sys/fs/cgroup/cpuset/odin.slice/cpuset.effective_cpus",
            "0-1\n",
        );
        let mut w = CpusetWatch::locate(root.path(), "self");
        assert_eq!(
            w.file(),
            Some(
                root.path()
                    .join("sys/fs/cgroup/cpuset/odin.slice/cpuset.effective_cpus")
                    .as_path()
            )
        );
        assert_eq!(w.allowed(), Some(&set("0-1")));
        assert_eq!(w.poll(), None, "no change, no report");
        write(
            root.path(),
            "sys/fs/cgroup/cpuset/odin.slice/cpuset.effective_cpus",
            "1\n",
        );
        assert_eq!(
            w.poll(),
            Some(CpusetChange {
                from: Some(set("0-1")),
                to: set("1")
            })
        );
        assert_eq!(w.poll(), None);
    }

    #[test]
    fn v2_falls_back_to_the_nearest_ancestor_with_the_file() {
        let root = fake_root(
            &[("cgroup2", "/sys/fs/cgroup", "rw,nsdelegate")],
            "0::/system.slice/odin.service\n",
        );
        write(
            root.path(),
            "sys/fs/cgroup/cgroup.controllers",
            "cpuset cpu io\n",
        );
        write(
            root.path(),
            "sys/fs/cgroup/system.slice/cpuset.cpus.effective",
            "2-3\n",
        );
        std::fs::create_dir_all(root.path().join("sys/fs/cgroup/system.slice/odin.service"))
            .unwrap();
        let w = CpusetWatch::locate(root.path(), "self");
        assert_eq!(w.allowed(), Some(&set("2-3")));
        assert!(
            w.file()
                .unwrap()
                .ends_with("system.slice/cpuset.cpus.effective")
        );
    }

    #[test]
    fn no_cpuset_controller_means_no_constraint() {
        let root = fake_root(&[("cgroup2", "/sys/fs/cgroup", "rw")], "0::/\n");
        write(root.path(), "sys/fs/cgroup/cgroup.controllers", "cpu io\n");
        let mut w = CpusetWatch::locate(root.path(), "self");
        assert_eq!((w.file(), w.allowed()), (None, None));
        assert_eq!(w.poll(), None);
    }

    #[test]
    fn an_empty_or_garbled_file_is_no_answer() {
        let root = fake_root(&[("cgroup", "/cs", "rw,cpuset")], "3:cpuset:/\n");
        write(root.path(), "cs/cpuset.effective_cpus", "\n");
        let mut w = CpusetWatch::locate(root.path(), "self");
        assert_eq!(w.allowed(), None);
        write(root.path(), "cs/cpuset.effective_cpus", "zero\n");
        assert_eq!(w.poll(), None);
        write(root.path(), "cs/cpuset.effective_cpus", "0\n");
        assert_eq!(
            w.poll(),
            Some(CpusetChange {
                from: None,
                to: set("0")
            })
        );
    }

    #[test]
    fn usable_pes_narrow_drop_and_fall_back() {
        let pes = sets(&["0", "1", "2-3"]);
        assert_eq!(usable_pes(&pes, &set("0-3")), pes);
        assert_eq!(usable_pes(&pes, &set("0,3")), sets(&["0", "3"]));
        assert_eq!(usable_pes(&pes, &set("1")), sets(&["1"]));
        assert_eq!(usable_pes(&sets(&["0", "1"]), &set("4-5")), sets(&["4-5"]));
        // Two PEs narrowed to the same CPUs stay two stages.
        assert_eq!(
            usable_pes(&sets(&["0-1", "1-2"]), &set("1")),
            sets(&["1", "1"])
        );
        // Configured to share a CPU: unchanged.
        assert_eq!(
            usable_pes(&sets(&["0", "0"]), &set("0-1")),
            sets(&["0", "0"])
        );
    }
}
