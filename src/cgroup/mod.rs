//! cgroup hierarchies and odin's use of them.
//!
//! Layouts, as the kernel presents them in `/proc/self/mountinfo`:
//! - v2 (unified): one `cgroup2` mount, controllers listed in its
//!   `cgroup.controllers`.
//! - v1: one `cgroup` mount per controller (or co-mounted group such as
//!   `cpu,cpuacct`), the controllers named in the super options.
//! - hybrid: v1 controller mounts plus a `cgroup2` mount that holds the
//!   controllers not bound to v1 (often none but systemd's tracking).
//!
//! A missing controller is simply absent from the map, never an error.
//!
//! ```text
//!   Layout::detect(root) --> Hierarchy (cpu, cpuset) --> v1.rs | v2.rs (file names, values)
//!                                                            |
//!   hint::Hinter (advise | enforce) --> escalation (pure) ----+--> enforce::Enforcer
//!                                                                  journal.rs: record, then write;
//!                                                                  undo on lift, stop, reload, restart
//! ```
//!
//! Every path is under a root given as a parameter (`/` on a real
//! system): mountinfo, the mounts and `/proc/<pid>` are all read there, so
//! tests lay out a fake tree in a temporary directory.

pub mod enforce;
pub mod escalation;
pub mod hint;
pub mod journal;
pub mod systemd;
pub mod v1;
pub mod v2;
pub mod vet;

#[cfg(test)]
pub(crate) mod testutil;

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cpulist::CpuSet;
use crate::monitor::procfs::CgroupLine;
pub use crate::monitor::sample::CgroupVersion;

/// Why a cgroup file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// A value could not be written.
    #[error("writing {data:?} to {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What was written.
        data: String,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// A cgroup could not be created.
    #[error("creating cgroup {path}: {source}")]
    Mkdir {
        /// The directory.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// A cgroup could not be removed.
    #[error("removing cgroup {path}: {source}")]
    Rmdir {
        /// The directory.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// A mountinfo line is not in the kernel's format.
    #[error("{path}:{line}: malformed mountinfo entry: {text:?}")]
    Mountinfo {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// systemd's manager refused or could not be asked.
    #[error("systemd unit {unit}: {message}")]
    Systemd {
        /// The unit.
        unit: String,
        /// What went wrong.
        message: String,
    },
    /// The journal could not be read, written or understood.
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
}

impl CgroupError {
    /// The OS error behind the failure, if any.
    pub fn os_error(&self) -> Option<i32> {
        match self {
            CgroupError::Io { source, .. }
            | CgroupError::Write { source, .. }
            | CgroupError::Mkdir { source, .. }
            | CgroupError::Rmdir { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Writes `data` to the cgroup file `path` in one `write(2)`, as the
/// kernel wants control files written; the error names the file and the
/// value.
pub fn write_file(path: &Path, data: &str) -> Result<(), CgroupError> {
    let err = |source| CgroupError::Write {
        path: path.to_path_buf(),
        data: data.to_string(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(err)?;
    // A control file takes the whole value in one write; a short write is
    // a failure, not something to continue.
    match f.write(data.as_bytes()) {
        Ok(n) if n == data.len() => Ok(()),
        Ok(n) => Err(err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write: {n} of {} bytes", data.len()),
        ))),
        Err(e) => Err(err(e)),
    }
}

/// The changes odin makes to a cgroup file system: the kernel's in
/// [`Kernel`], a recording fake in the tests. Reads go straight to the
/// files.
pub trait CgroupFs: std::fmt::Debug + Send + Sync {
    /// Writes `data` to the control file `path` ([`write_file`]).
    fn write(&self, path: &Path, data: &str) -> Result<(), CgroupError>;
    /// Creates the cgroup `path`; one that exists already is fine.
    fn mkdir(&self, path: &Path) -> Result<(), CgroupError>;
    /// Removes the (empty) cgroup `path`; one that is gone already is fine.
    fn rmdir(&self, path: &Path) -> Result<(), CgroupError>;
}

/// The real cgroup file systems.
#[derive(Clone, Copy, Debug, Default)]
pub struct Kernel;

impl CgroupFs for Kernel {
    fn write(&self, path: &Path, data: &str) -> Result<(), CgroupError> {
        write_file(path, data)
    }

    fn mkdir(&self, path: &Path) -> Result<(), CgroupError> {
        match std::fs::create_dir(path) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(CgroupError::Mkdir {
                path: path.to_path_buf(),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    fn rmdir(&self, path: &Path) -> Result<(), CgroupError> {
        // cgroupfs removes a cgroup with its control files; EBUSY means it
        // still has tasks or children.
        match std::fs::remove_dir(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(CgroupError::Rmdir {
                path: path.to_path_buf(),
                source: e,
            }),
            _ => Ok(()),
        }
    }
}

/// Reads a cgroup (or `/proc`) file whole; the error names it.
pub fn read_file(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The process ids listed in `<dir>/cgroup.procs` (empty if the file is
/// missing: the cgroup is gone).
pub fn procs(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let path = dir.join("cgroup.procs");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text
            .split_ascii_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(CgroupError::Io { path, source }),
    }
}

/// The processes in `dir` and in every cgroup below it (symbolic links
/// are not followed: cgroupfs has none, and a planted one is not a
/// cgroup).
pub fn subtree_procs(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let mut out = procs(dir)?;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(source) => {
            return Err(CgroupError::Io {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(subtree_procs(&entry.path())?);
        }
    }
    Ok(out)
}

/// The kernel's v1 controllers.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "blkio",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// Which cgroup versions a machine has mounted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mounted {
    /// Only the unified hierarchy.
    V2,
    /// Only per-controller v1 hierarchies.
    V1,
    /// v1 controllers and a unified hierarchy side by side.
    Hybrid,
    /// No cgroup file system mounted.
    None,
}

/// The cgroup mounts of a machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// Where the unified (v2) hierarchy is mounted, with its controllers.
    pub v2: Option<(PathBuf, Vec<String>)>,
    /// v1 controller name -> mount point.
    pub v1: BTreeMap<String, PathBuf>,
}

impl Layout {
    /// Reads the layout from `<root>/proc/self/mountinfo`; mount points are
    /// re-rooted under `root` and v2 controllers read from
    /// `<mount>/cgroup.controllers`.
    pub fn detect(root: &Path) -> Result<Self, CgroupError> {
        let path = root.join("proc/self/mountinfo");
        let text = std::fs::read_to_string(&path).map_err(|source| CgroupError::Io {
            path: path.clone(),
            source,
        })?;
        let mut layout = Layout::default();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = || CgroupError::Mountinfo {
                path: path.clone(),
                line: i + 1,
                text: line.to_string(),
            };
            let (left, right) = line.split_once(" - ").ok_or_else(bad)?;
            let mount_point = left.split(' ').nth(4).ok_or_else(bad)?;
            let mut right = right.split(' ');
            let fstype = right.next().ok_or_else(bad)?;
            let _source = right.next().ok_or_else(bad)?;
            let options = right.next().unwrap_or("");
            let mount = root.join(unescape(mount_point).trim_start_matches('/'));
            match fstype {
                "cgroup2" if layout.v2.is_none() => {
                    let controllers = std::fs::read_to_string(mount.join("cgroup.controllers"))
                        .map(|s| s.split_whitespace().map(str::to_string).collect())
                        .unwrap_or_default();
                    layout.v2 = Some((mount, controllers));
                }
                "cgroup" => {
                    // Super options mix controllers with mount flags (rw, xattr, name=...).
                    for opt in options.split(',').filter(|o| V1_CONTROLLERS.contains(o)) {
                        layout
                            .v1
                            .entry(opt.to_string())
                            .or_insert_with(|| mount.clone());
                    }
                }
                _ => {}
            }
        }
        Ok(layout)
    }

    /// Which versions are mounted.
    pub fn mounted(&self) -> Mounted {
        match (self.v2.is_some(), !self.v1.is_empty()) {
            (true, false) => Mounted::V2,
            (false, true) => Mounted::V1,
            (true, true) => Mounted::Hybrid,
            (false, false) => Mounted::None,
        }
    }

    /// Where `controller` can be used: `(mount, true)` for v2, `(mount,
    /// false)` for v1. v2 wins when a controller is enabled there.
    pub fn controller(&self, controller: &str) -> Option<(&Path, bool)> {
        if let Some((mount, ctrls)) = &self.v2
            && ctrls.iter().any(|c| c == controller)
        {
            return Some((mount, true));
        }
        self.v1.get(controller).map(|m| (m.as_path(), false))
    }
}

/// The control files of one cgroup version: which file caps, weighs and
/// confines a cgroup, and how the value is written. Every version-specific
/// write goes through here ([`v1`] or [`v2`]), never through a branch on
/// the version at the caller.
impl CgroupVersion {
    /// Caps `dir` at `quota_us` of CPU time per `period_us`.
    pub fn set_limit(
        self,
        fs: &dyn CgroupFs,
        dir: &Path,
        quota_us: u64,
        period_us: u64,
    ) -> Result<(), CgroupError> {
        match self {
            CgroupVersion::V1 => v1::set_limit(fs, dir, quota_us, period_us),
            CgroupVersion::V2 => v2::set_limit(fs, dir, quota_us, period_us),
        }
    }

    /// Sets `dir`'s CPU weight, given on the v2 scale (1..=10000, 100 the
    /// default).
    pub fn set_weight(self, fs: &dyn CgroupFs, dir: &Path, weight: u32) -> Result<(), CgroupError> {
        match self {
            CgroupVersion::V1 => v1::set_weight(fs, dir, weight),
            CgroupVersion::V2 => v2::set_weight(fs, dir, weight),
        }
    }

    /// Restricts `dir`'s tasks to `cpus`; `parent` is `dir`'s parent (a
    /// new v1 cpuset also needs its memory nodes).
    pub fn set_cpus(
        self,
        fs: &dyn CgroupFs,
        dir: &Path,
        parent: &Path,
        cpus: &CpuSet,
    ) -> Result<(), CgroupError> {
        match self {
            CgroupVersion::V1 => v1::set_cpus(fs, dir, parent, cpus),
            CgroupVersion::V2 => v2::set_cpus(fs, dir, cpus),
        }
    }

    /// The CPUs `dir`'s tasks may use.
    pub fn effective_cpus(self, dir: &Path) -> Result<Option<CpuSet>, CgroupError> {
        match self {
            CgroupVersion::V1 => v1::cpus(dir),
            CgroupVersion::V2 => v2::effective_cpus(dir),
        }
    }

    /// The limit, as the files say it: `cpu.max="20000 100000"` on v2,
    /// `cpu.cfs_quota_us=20000 cpu.cfs_period_us=100000` on v1.
    pub fn limit_text(self, quota_us: u64, period_us: u64) -> String {
        match self {
            CgroupVersion::V1 => format!(
                "{}={quota_us} {}={period_us}",
                v1::CFS_QUOTA,
                v1::CFS_PERIOD
            ),
            CgroupVersion::V2 => format!(
                "{}=\"{}\"",
                v2::CPU_MAX,
                v2::limit_value(quota_us, period_us)
            ),
        }
    }
}

impl Layout {
    /// The hierarchy that carries `controller`, v2 first (see
    /// [`Layout::controller`]).
    pub fn hierarchy(&self, controller: &str) -> Option<Hierarchy> {
        self.controller(controller).map(|(mount, v2)| Hierarchy {
            controller: controller.to_string(),
            mount: mount.to_path_buf(),
            v2,
        })
    }
}

/// One controller's hierarchy: where it is mounted and which version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hierarchy {
    /// The controller odin uses there (`cpu`, `cpuset`).
    pub controller: String,
    /// Its mount point (under the root).
    pub mount: PathBuf,
    /// The unified hierarchy (else v1).
    pub v2: bool,
}

impl Hierarchy {
    /// Its version, whose methods write its control files.
    pub fn version(&self) -> CgroupVersion {
        if self.v2 {
            CgroupVersion::V2
        } else {
            CgroupVersion::V1
        }
    }

    /// The directory of `cgroup` (a path as `/proc/<pid>/cgroup` shows it,
    /// `/` for the hierarchy's root).
    pub fn dir(&self, cgroup: &str) -> PathBuf {
        let rel = cgroup.trim_matches('/');
        if rel.is_empty() {
            self.mount.clone()
        } else {
            self.mount.join(rel)
        }
    }

    /// The directory of `cgroup`, checked: every component a plain name
    /// (no `.`, `..` or empty name that is not a repeated `/`), and no
    /// existing component below the mount a symbolic link. A path read
    /// from a file odin did not just get from the kernel goes through
    /// here before odin writes below it.
    pub fn checked_dir(&self, cgroup: &str) -> Result<PathBuf, String> {
        let mut dir = self.mount.clone();
        for part in cgroup.split('/').filter(|p| !p.is_empty()) {
            if part == "." || part == ".." || part.contains('\0') {
                return Err(format!(
                    "cgroup {cgroup:?} has a {part:?} component (outside {})",
                    self.mount.display()
                ));
            }
            dir.push(part);
            if dir
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink())
            {
                return Err(format!(
                    "{} is a symbolic link, not a cgroup",
                    dir.display()
                ));
            }
        }
        Ok(dir)
    }

    /// The cgroup (relative to the mount, `/`-led) of the absolute
    /// directory `path`, checked as [`Hierarchy::checked_dir`]: `Err` if
    /// it is not strictly below the mount.
    pub fn cgroup_at(&self, path: &Path) -> Result<String, String> {
        use std::path::Component;
        let rel = path.strip_prefix(&self.mount).map_err(|_| {
            format!(
                "{} is outside the {} hierarchy at {}",
                path.display(),
                self.controller,
                self.mount.display()
            )
        })?;
        let mut parts = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
                other => {
                    return Err(format!(
                        "{} has a {:?} component",
                        path.display(),
                        other.as_os_str()
                    ));
                }
            }
        }
        if parts.is_empty() {
            return Err(format!(
                "{} is the root of the {} hierarchy",
                path.display(),
                self.controller
            ));
        }
        let cgroup = format!("/{}", parts.join("/"));
        self.checked_dir(&cgroup)?;
        Ok(cgroup)
    }

    /// Whether odin may change this hierarchy: `Err` says why not (absent,
    /// read-only, not writable by this user).
    pub fn writable(&self) -> Result<(), String> {
        use nix::unistd::{AccessFlags, access};
        // On v2 odin writes only the antagonists' own cgroups, never the
        // root's files; a writable cgroup.procs says it is privileged here.
        let files = [self.mount.join("cgroup.procs")];
        for f in std::iter::once(&self.mount).chain(&files) {
            if let Err(e) = access(f.as_path(), AccessFlags::W_OK) {
                return Err(format!(
                    "{} is not writable: {}",
                    f.display(),
                    io::Error::from(e)
                ));
            }
        }
        Ok(())
    }

    /// The cgroup of process `pid` in this hierarchy, from
    /// `<proc>/<pid>/cgroup` (`proc` is the `/proc` directory under the
    /// root); `None` if the file has no line for it.
    pub fn cgroup_of(&self, proc: &Path, pid: i32) -> Result<Option<String>, CgroupError> {
        let path = proc.join(pid.to_string()).join("cgroup");
        let text = read_file(&path)?;
        Ok(self.parse_cgroup(&text))
    }

    /// The line of a `/proc/<pid>/cgroup` text that belongs to this
    /// hierarchy: `0::/path` on v2, `N:a,b:/path` naming the controller on v1.
    pub fn parse_cgroup(&self, text: &str) -> Option<String> {
        text.lines().find_map(|line| {
            let l = CgroupLine::parse(line)?;
            let mine = if self.v2 {
                l.is_v2()
            } else {
                l.has_controller(&self.controller)
            };
            // A removed v2 cgroup still shows, marked " (deleted)".
            mine.then(|| l.path.trim_end_matches(" (deleted)").to_string())
        })
    }

    /// Moves process `pid` (all its threads) into `cgroup`.
    pub fn move_process(
        &self,
        fs: &dyn CgroupFs,
        cgroup: &str,
        pid: i32,
    ) -> Result<(), CgroupError> {
        fs.write(&self.dir(cgroup).join("cgroup.procs"), &pid.to_string())
    }
}

/// What `/proc/<pid>/stat` says about who a process is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Process id.
    pub pid: i32,
    /// Command name.
    pub comm: String,
    /// Parent's process id (field 4).
    pub ppid: i32,
    /// `PF_*` flags (field 9).
    pub flags: u64,
    /// Start time after boot, clock ticks (field 22): tells a reused pid
    /// from the process that had it before.
    pub start: u64,
}

pub use crate::monitor::sample::PF_KTHREAD;

impl ProcessInfo {
    /// Reads `<proc>/<pid>/stat`; `None` if the process is gone.
    pub fn read(proc: &Path, pid: i32) -> Result<Option<Self>, CgroupError> {
        let path = proc.join(pid.to_string()).join("stat");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) =>
            {
                return Ok(None);
            }
            Err(source) => return Err(CgroupError::Io { path, source }),
        };
        // An unparsable line (a process torn down mid-read) says no more
        // than a missing one.
        Ok(crate::monitor::procfs::parse_task_stat(&path, pid, &bytes)
            .ok()
            .map(|st| Self {
                pid,
                comm: st.comm,
                ppid: st.ppid,
                flags: st.flags,
                start: st.starttime,
            }))
    }

    /// A kernel thread: `PF_KTHREAD`, kthreadd itself or one of its
    /// children.
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0 || self.pid == 2 || self.ppid == 2
    }
}

/// Whether `cgroup` is `entry` or below it; both are paths relative to a
/// hierarchy's root, with or without a leading `/`.
pub fn is_within(cgroup: &str, entry: &str) -> bool {
    let c: Vec<&str> = cgroup.split('/').filter(|p| !p.is_empty()).collect();
    let e: Vec<&str> = entry.split('/').filter(|p| !p.is_empty()).collect();
    c.len() >= e.len() && c[..e.len()] == e[..]
}

/// Mount points escape space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            match u8::from_str_radix(&code, 8) {
                Ok(b) => out.push(b as char),
                Err(_) => {
                    out.push('\\');
                    out.push_str(&code);
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(mountinfo: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("proc/self")).unwrap();
        std::fs::write(d.path().join("proc/self/mountinfo"), mountinfo).unwrap();
        d
    }

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn hybrid_layout() {
        let d = tree(HYBRID);
        std::fs::create_dir_all(d.path().join("sys/fs/cgroup/unified")).unwrap();
        std::fs::write(
            d.path().join("sys/fs/cgroup/unified/cgroup.controllers"),
            "hugetlb\n",
        )
        .unwrap();
        let l = Layout::detect(d.path()).unwrap();
        assert_eq!(l.mounted(), Mounted::Hybrid);
        let (cpu, v2) = l.controller("cpu").unwrap();
        assert_eq!(
            (cpu, v2),
            (d.path().join("sys/fs/cgroup/cpu,cpuacct").as_path(), false)
        );
        assert_eq!(l.controller("cpuacct").unwrap().0, cpu);
        assert!(l.controller("hugetlb").unwrap().1);
        assert!(l.controller("memory").is_none());
        assert!(!l.v1.contains_key("xattr") && !l.v1.contains_key("name=systemd"));
    }

    #[test]
    fn unified_layout_with_escaped_mount_point() {
        let d = tree("25 1 0:22 / /sys/fs/my\\040cgroup rw - cgroup2 cgroup2 rw\n");
        let mount = d.path().join("sys/fs/my cgroup");
        std::fs::create_dir_all(&mount).unwrap();
        std::fs::write(
            mount.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        let l = Layout::detect(d.path()).unwrap();
        assert_eq!(l.mounted(), Mounted::V2);
        assert_eq!(l.controller("cpu"), Some((mount.as_path(), true)));
    }

    #[test]
    fn no_cgroups_and_malformed_lines() {
        let d = tree("22 1 8:1 / / rw - ext4 /dev/vda rw\n");
        assert_eq!(Layout::detect(d.path()).unwrap().mounted(), Mounted::None);
        let d = tree("22 1 8:1 / / rw ext4 /dev/vda rw\n");
        let err = Layout::detect(d.path()).unwrap_err().to_string();
        assert!(err.contains("mountinfo:1"), "{err}");
        let err = Layout::detect(&d.path().join("nowhere"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nowhere"), "{err}");
    }

    #[test]
    fn this_machine_has_a_layout() {
        let l = Layout::detect(Path::new("/")).unwrap();
        assert_ne!(l.mounted(), Mounted::None, "{l:?}");
    }
}
