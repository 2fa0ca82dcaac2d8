//! A fake machine for the cgroup tests: a temporary directory laid out
//! like `/proc` and cgroupfs, and a [`CgroupFs`] that records every change
//! and keeps the tree as the kernel would (a write to `cgroup.procs` moves
//! the process: its `/proc/<pid>/cgroup` line and the `cgroup.procs`
//! lists change; `rmdir` refuses a cgroup with tasks or children).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::systemd::UnitManager;
use super::{CgroupError, CgroupFs, Hierarchy, Layout};

/// A recording systemd manager: units' runtime CPU quotas in a map, every
/// change recorded.
#[derive(Debug, Default)]
pub struct FakeUnits {
    pub quotas: Mutex<BTreeMap<String, Option<u64>>>,
    pub calls: Mutex<Vec<(String, Option<u64>)>>,
}

impl FakeUnits {
    /// Takes the recorded changes.
    pub fn take(&self) -> Vec<(String, Option<u64>)> {
        std::mem::take(&mut self.calls.lock().unwrap())
    }

    pub fn quota(&self, unit: &str) -> Option<u64> {
        self.quotas.lock().unwrap().get(unit).copied().flatten()
    }
}

impl UnitManager for FakeUnits {
    fn cpu_quota(&self, unit: &str) -> Result<Option<u64>, CgroupError> {
        Ok(self.quota(unit))
    }

    fn set_cpu_quota(&self, unit: &str, usec_per_sec: Option<u64>) -> Result<(), CgroupError> {
        self.calls
            .lock()
            .unwrap()
            .push((unit.to_string(), usec_per_sec));
        self.quotas
            .lock()
            .unwrap()
            .insert(unit.to_string(), usec_per_sec);
        Ok(())
    }
}

/// One recorded change, paths relative to the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Write(String, String),
    Mkdir(String),
    Rmdir(String),
}

#[derive(Debug)]
pub struct FakeFs {
    root: PathBuf,
    pub ops: Mutex<Vec<Op>>,
}

impl FakeFs {
    fn rel(&self, p: &Path) -> String {
        p.strip_prefix(&self.root)
            .unwrap_or(p)
            .display()
            .to_string()
    }

    fn hierarchies(&self) -> Vec<Hierarchy> {
        let l = Layout::detect(&self.root).unwrap();
        let mut out: Vec<Hierarchy> = ["cpu", "cpuset"]
            .iter()
            .filter_map(|c| l.hierarchy(c))
            .collect();
        out.dedup_by(|a, b| a.mount == b.mount);
        out
    }

    /// Takes the recorded changes.
    pub fn take(&self) -> Vec<Op> {
        std::mem::take(&mut self.ops.lock().unwrap())
    }
}

fn os(code: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(code)
}

impl CgroupFs for FakeFs {
    fn write(&self, path: &Path, data: &str) -> Result<(), CgroupError> {
        self.ops
            .lock()
            .unwrap()
            .push(Op::Write(self.rel(path), data.to_string()));
        let err = |source| CgroupError::Write {
            path: path.to_path_buf(),
            data: data.to_string(),
            source,
        };
        if path.file_name().unwrap() == "cgroup.subtree_control" {
            // "+cpu" enables, "-cpu" disables; the file lists what is on.
            let mut on: Vec<String> = std::fs::read_to_string(path)
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect();
            let (sign, ctrl) = data.split_at(1);
            on.retain(|c| c != ctrl);
            if sign == "+" {
                on.push(ctrl.to_string());
            }
            return std::fs::write(path, on.join(" ")).map_err(err);
        }
        if path.file_name().unwrap() != "cgroup.procs" {
            return std::fs::write(path, data).map_err(err);
        }
        let dir = path.parent().unwrap();
        if !dir.is_dir() {
            return Err(err(os(libc::ENOENT)));
        }
        let pid: i32 = data.parse().map_err(|_| err(os(libc::EINVAL)))?;
        let cgfile = self.root.join(format!("proc/{pid}/cgroup"));
        let Ok(text) = std::fs::read_to_string(&cgfile) else {
            return Err(err(os(libc::ESRCH)));
        };
        let h = self
            .hierarchies()
            .into_iter()
            .find(|h| dir.starts_with(&h.mount))
            .unwrap();
        let from = h.parse_cgroup(&text).unwrap();
        let to = format!("/{}", dir.strip_prefix(&h.mount).unwrap().display());
        let to = if to == "/" {
            to
        } else {
            to.trim_end_matches('/').to_string()
        };
        // The process leaves its old cgroup's list and joins the new one.
        let old = h.dir(&from).join("cgroup.procs");
        let left: String = std::fs::read_to_string(&old)
            .unwrap_or_default()
            .split_whitespace()
            .filter(|p| *p != data)
            .map(|p| format!("{p}\n"))
            .collect();
        std::fs::write(&old, left).unwrap();
        let mut joined = std::fs::read_to_string(path).unwrap_or_default();
        joined.push_str(&format!("{pid}\n"));
        std::fs::write(path, joined).unwrap();
        let lines: String = text
            .lines()
            .map(|l| {
                if h.parse_cgroup(l).is_some() {
                    let (head, _) = l.rsplit_once(':').unwrap();
                    format!("{head}:{to}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(cgfile, lines).unwrap();
        Ok(())
    }

    fn mkdir(&self, path: &Path) -> Result<(), CgroupError> {
        self.ops.lock().unwrap().push(Op::Mkdir(self.rel(path)));
        if !path.exists() {
            std::fs::create_dir(path).map_err(|source| CgroupError::Mkdir {
                path: path.to_path_buf(),
                source,
            })?;
        }
        Ok(())
    }

    fn rmdir(&self, path: &Path) -> Result<(), CgroupError> {
        self.ops.lock().unwrap().push(Op::Rmdir(self.rel(path)));
        let busy = |code| CgroupError::Rmdir {
            path: path.to_path_buf(),
            source: os(code),
        };
        if !path.exists() {
            return Ok(());
        }
        let procs = std::fs::read_to_string(path.join("cgroup.procs")).unwrap_or_default();
        let children = std::fs::read_dir(path)
            .unwrap()
            .any(|e| e.unwrap().path().is_dir());
        if !procs.trim().is_empty() || children {
            return Err(busy(libc::EBUSY));
        }
        std::fs::remove_dir_all(path).unwrap();
        Ok(())
    }
}

/// A fake machine.
pub struct FakeTree {
    pub dir: tempfile::TempDir,
    pub fs: Arc<FakeFs>,
}

impl FakeTree {
    fn new(mountinfo: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let fs = Arc::new(FakeFs {
            root: dir.path().to_path_buf(),
            ops: Mutex::new(Vec::new()),
        });
        let t = Self { dir, fs };
        t.write("proc/self/mountinfo", mountinfo);
        t
    }

    /// cgroup v2 at /sys/fs/cgroup with `controllers`, of which
    /// `subtree` are enabled for the root's children; CPUs 0-3.
    pub fn v2(controllers: &str, subtree: &str) -> Self {
        let t = Self::new("25 1 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        t.write("sys/fs/cgroup/cgroup.controllers", controllers);
        t.write("sys/fs/cgroup/cgroup.subtree_control", subtree);
        t.write("sys/fs/cgroup/cgroup.procs", "");
        t.write("sys/fs/cgroup/cpuset.cpus.effective", "0-3\n");
        t
    }

    /// The hybrid layout of this machine: v1 `cpu,cpuacct` and `cpuset`,
    /// an empty cgroup2 at unified; CPUs 0-3, memory node 0.
    pub fn v1() -> Self {
        let t = Self::new(
            "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
             32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
             34 31 0:31 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset\n\
             41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
        );
        t.write("sys/fs/cgroup/unified/cgroup.controllers", "");
        t.write("sys/fs/cgroup/cpu,cpuacct/cgroup.procs", "");
        t.write("sys/fs/cgroup/cpuset/cgroup.procs", "");
        t.write("sys/fs/cgroup/cpuset/cpuset.cpus", "0-3\n");
        t.write("sys/fs/cgroup/cpuset/cpuset.mems", "0\n");
        t
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    /// A process `pid` (child of `ppid`, with `flags`) in `cgroup` of
    /// every hierarchy, started at `start`.
    pub fn process(&self, pid: i32, ppid: i32, comm: &str, flags: u64, cgroup: &str) {
        self.write(
            &format!("proc/{pid}/stat"),
            &format!(
                "{pid} ({comm}) R {ppid} {pid} {pid} 0 -1 {flags} 0 0 0 0 10 5 0 0 20 0 1 0 {} {}\n",
                1000 + pid,
                // Fields 23..=52, as on a current kernel.
                ["0"; 30].join(" ")
            ),
        );
        let mut lines = String::new();
        for h in self.fs.hierarchies() {
            lines += &if h.v2 {
                format!("0::{cgroup}\n")
            } else {
                format!(
                    "3:{}:{cgroup}\n",
                    if h.controller == "cpu" {
                        "cpu,cpuacct"
                    } else {
                        "cpuset"
                    }
                )
            };
            let dir = h.dir(cgroup);
            std::fs::create_dir_all(&dir).unwrap();
            if h.v2 {
                self.v2_files(&h, &dir);
            }
            let mut procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            procs.push_str(&format!("{pid}\n"));
            std::fs::write(dir.join("cgroup.procs"), procs).unwrap();
        }
        self.write(&format!("proc/{pid}/cgroup"), &lines);
    }

    /// The control files the kernel gives the v2 cgroups from `dir` up to
    /// the mount: `cpu.max` and `cpuset.cpus` where the parent enables
    /// `cpu` and `cpuset`, and `cgroup.subtree_control` (initially empty).
    fn v2_files(&self, h: &Hierarchy, dir: &Path) {
        let mut d = dir.to_path_buf();
        while d != h.mount {
            let parent = d.parent().unwrap().to_path_buf();
            let on =
                std::fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
            let on: Vec<&str> = on.split_whitespace().collect();
            let init = |f: &str, v: &str| {
                let p = d.join(f);
                if !p.exists() {
                    std::fs::write(p, v).unwrap();
                }
            };
            init("cgroup.subtree_control", "");
            if on.contains(&"cpu") {
                init("cpu.max", "max 100000\n");
            }
            if on.contains(&"cpuset") {
                init("cpuset.cpus", "\n");
            }
            d = parent;
        }
    }

    /// Enables `controllers` for the children of `cgroup` (which must not
    /// have any yet), as the cgroup's owner would.
    pub fn enable(&self, cgroup: &str, controllers: &str) {
        let h = self.fs.hierarchies().into_iter().find(|h| h.v2).unwrap();
        let dir = h.dir(cgroup);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cgroup.subtree_control"), controllers).unwrap();
    }

    /// The cgroup of `pid` in the hierarchy of `controller`.
    pub fn cgroup_of(&self, pid: i32, controller: &str) -> String {
        let h = Layout::detect(self.dir.path())
            .unwrap()
            .hierarchy(controller)
            .unwrap();
        h.cgroup_of(&self.path("proc"), pid).unwrap().unwrap()
    }
}
