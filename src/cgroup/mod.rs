//! cgroup hierarchies: which layout the machine has (v2, v1 or hybrid),
//! where each controller is mounted, read from `mountinfo` under a root.
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

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// Why the cgroup layout could not be read.
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

/// Which cgroup versions are mounted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
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
    pub fn version(&self) -> Version {
        match (self.v2.is_some(), !self.v1.is_empty()) {
            (true, false) => Version::V2,
            (false, true) => Version::V1,
            (true, true) => Version::Hybrid,
            (false, false) => Version::None,
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
        assert_eq!(l.version(), Version::Hybrid);
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
        assert_eq!(l.version(), Version::V2);
        assert_eq!(l.controller("cpu"), Some((mount.as_path(), true)));
    }

    #[test]
    fn no_cgroups_and_malformed_lines() {
        let d = tree("22 1 8:1 / / rw - ext4 /dev/vda rw\n");
        assert_eq!(Layout::detect(d.path()).unwrap().version(), Version::None);
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
        assert_ne!(l.version(), Version::None, "{l:?}");
    }
}
