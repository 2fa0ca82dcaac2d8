//! What CPUs the machine has, read from sysfs under a root directory.
//!
//! Per online CPU `N`, [`read_topology`] reads
//! `<root>/sys/devices/system/cpu/cpuN/topology/{physical_package_id,core_id}`
//! and, of the caches in `cpuN/cache/index*/`, the `shared_cpu_list` of the
//! highest `level` (the last-level cache). Kernel quirks: `core_id` is only
//! unique within a package (two packages both have a core 0), ids are `-1`
//! where the architecture does not know them, and the cache directories are
//! absent on some architectures and in some VMs; unknown values are `None`.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use crate::cpulist::{CpuListError, CpuSet};

/// Why the CPU topology could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// A sysfs file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// A sysfs file holds something other than a CPU list.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parse failure.
        #[source]
        source: CpuListError,
    },
    /// A sysfs file holds something other than the number it should.
    #[error("{path}: not an integer: {text:?}")]
    NotANumber {
        /// The file.
        path: PathBuf,
        /// What it holds.
        text: String,
    },
}

/// The online CPUs listed in `<root>/sys/devices/system/cpu/online`.
pub fn online_cpus(root: &Path) -> Result<CpuSet, TopologyError> {
    let path = root.join("sys/devices/system/cpu/online");
    let text = std::fs::read_to_string(&path).map_err(|source| TopologyError::Io {
        path: path.clone(),
        source,
    })?;
    text.parse()
        .map_err(|source| TopologyError::Parse { path, source })
}

/// The CPU model name from `<root>/proc/cpuinfo`, if it names one.
pub fn cpu_model_name(root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(root.join("proc/cpuinfo")).ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix("model name")?
            .split_once(':')
            .map(|(_, v)| v.trim().to_string())
    })
}

/// Where one online CPU sits: its package, core and last-level cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuPlace {
    /// The CPU number.
    pub cpu: usize,
    /// `physical_package_id` (the socket); `None` if unknown.
    pub package: Option<u32>,
    /// `core_id`, unique only within the package; `None` if unknown.
    pub core: Option<u32>,
    /// The CPUs that share this CPU's last-level cache (itself included);
    /// `None` if sysfs has no cache information.
    pub llc: Option<CpuSet>,
}

/// The online CPUs and where each sits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topology {
    /// One entry per online CPU, ascending.
    pub cpus: Vec<CpuPlace>,
}

impl Topology {
    /// The online CPUs.
    pub fn online(&self) -> CpuSet {
        self.cpus.iter().map(|c| c.cpu).collect()
    }

    /// The distinct known packages.
    pub fn packages(&self) -> BTreeSet<u32> {
        self.cpus.iter().filter_map(|c| c.package).collect()
    }

    /// The number of distinct known physical cores (`(package, core)`
    /// pairs: SMT siblings count once).
    pub fn cores(&self) -> usize {
        self.cpus
            .iter()
            .filter_map(|c| Some((c.package?, c.core?)))
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// The distinct last-level-cache domains, restricted to online CPUs,
    /// ordered by their first CPU. Empty if no CPU has cache information.
    pub fn llc_domains(&self) -> Vec<CpuSet> {
        let online = self.online();
        let sets: BTreeSet<Vec<usize>> = self
            .cpus
            .iter()
            .filter_map(|c| c.llc.as_ref())
            .map(|l| l.iter().filter(|&c| online.contains(c)).collect())
            .collect();
        sets.into_iter().map(CpuSet::from_cpus).collect()
    }

    /// The online CPUs without cache information.
    pub fn without_llc(&self) -> CpuSet {
        self.cpus
            .iter()
            .filter(|c| c.llc.is_none())
            .map(|c| c.cpu)
            .collect()
    }
}

/// Reads the package, core and last-level cache of every online CPU under
/// `root`. Missing files leave `None`; unreadable or malformed ones are
/// errors naming the file.
pub fn read_topology(root: &Path) -> Result<Topology, TopologyError> {
    let base = root.join("sys/devices/system/cpu");
    let cpus = online_cpus(root)?
        .iter()
        .map(|cpu| {
            let dir = base.join(format!("cpu{cpu}"));
            Ok(CpuPlace {
                cpu,
                package: read_id(&dir.join("topology/physical_package_id"))?,
                core: read_id(&dir.join("topology/core_id"))?,
                llc: read_llc(&dir.join("cache"))?,
            })
        })
        .collect::<Result<_, TopologyError>>()?;
    Ok(Topology { cpus })
}

/// Reads a file, `None` if it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, TopologyError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TopologyError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A topology id; absent or `-1` (unknown to the architecture) is `None`.
fn read_id(path: &Path) -> Result<Option<u32>, TopologyError> {
    let Some(text) = read_optional(path)? else {
        return Ok(None);
    };
    let n: i64 = text.trim().parse().map_err(|_| TopologyError::NotANumber {
        path: path.to_path_buf(),
        text: text.trim().to_string(),
    })?;
    Ok(u32::try_from(n).ok())
}

/// The directory (`indexN`) of the highest-level cache under `cache_dir`.
fn llc_dir(cache_dir: &Path) -> Result<Option<PathBuf>, TopologyError> {
    let entries = match std::fs::read_dir(cache_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(TopologyError::Io {
                path: cache_dir.to_path_buf(),
                source,
            });
        }
    };
    let mut best: Option<(u32, PathBuf)> = None;
    for entry in entries {
        let entry = entry.map_err(|source| TopologyError::Io {
            path: cache_dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        if !name.to_str().is_some_and(|n| n.starts_with("index")) {
            continue;
        }
        let Some(level) = read_id(&entry.path().join("level"))? else {
            continue;
        };
        if best.as_ref().is_none_or(|(l, _)| level > *l) {
            best = Some((level, entry.path()));
        }
    }
    Ok(best.map(|(_, dir)| dir))
}

/// The `shared_cpu_list` of the highest-level cache under `cache_dir`.
fn read_llc(cache_dir: &Path) -> Result<Option<CpuSet>, TopologyError> {
    let Some(dir) = llc_dir(cache_dir)? else {
        return Ok(None);
    };
    let path = dir.join("shared_cpu_list");
    let Some(text) = read_optional(&path)? else {
        return Ok(None);
    };
    text.trim()
        .parse()
        .map(Some)
        .map_err(|source| TopologyError::Parse { path, source })
}

/// Size in bytes of CPU `cpu`'s last-level cache under `root` (sysfs
/// writes it as `32768K` or `32M`); `None` when unknown.
pub fn llc_bytes(root: &Path, cpu: usize) -> Option<usize> {
    let cache = root.join(format!("sys/devices/system/cpu/cpu{cpu}/cache"));
    let size = read_optional(&llc_dir(&cache).ok()??.join("size")).ok()??;
    let size = size.trim();
    match size.strip_suffix('K') {
        Some(k) => k.parse::<usize>().ok().map(|k| k << 10),
        None => match size.strip_suffix('M') {
            Some(m) => m.parse::<usize>().ok().map(|m| m << 20),
            None => size.parse().ok(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llc_bytes_is_the_size_of_the_highest_level() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("sys/devices/system/cpu/cpu0/cache");
        for (name, level, size) in [
            ("index0", "1", "48K"),
            ("index2", "2", "2048K"),
            ("index3", "3", "32M"),
        ] {
            std::fs::create_dir_all(cache.join(name)).unwrap();
            std::fs::write(cache.join(name).join("level"), level).unwrap();
            std::fs::write(cache.join(name).join("size"), size).unwrap();
        }
        std::fs::write(cache.join("uevent"), "").unwrap();
        assert_eq!(llc_bytes(dir.path(), 0), Some(32 << 20));
        assert_eq!(llc_bytes(dir.path(), 1), None);
        std::fs::write(cache.join("index3/size"), "1024K\n").unwrap();
        assert_eq!(llc_bytes(dir.path(), 0), Some(1 << 20));
    }

    fn tree(online: &str, cpuinfo: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sys/devices/system/cpu")).unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        std::fs::write(dir.path().join("sys/devices/system/cpu/online"), online).unwrap();
        std::fs::write(dir.path().join("proc/cpuinfo"), cpuinfo).unwrap();
        dir
    }

    #[test]
    fn reads_online_cpus_and_model() {
        let d = tree("0-3,6\n", "processor\t: 0\nmodel name\t: Test CPU @ 1GHz\n");
        assert_eq!(online_cpus(d.path()).unwrap(), "0-3,6".parse().unwrap());
        assert_eq!(cpu_model_name(d.path()).as_deref(), Some("Test CPU @ 1GHz"));
    }

    #[test]
    fn errors_name_the_file() {
        let d = tree("zero\n", "");
        let err = online_cpus(d.path()).unwrap_err().to_string();
        assert!(
            err.contains("sys/devices/system/cpu/online") && err.contains("zero"),
            "{err}"
        );
        assert_eq!(cpu_model_name(d.path()), None);
        let missing = online_cpus(&d.path().join("nowhere"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("nowhere"), "{missing}");
    }

    /// Writes `cpuN/topology` and `cpuN/cache/index*` for `(cpu, package,
    /// core, [(level, shared_cpu_list)])`.
    fn place(d: &Path, cpu: usize, package: &str, core: &str, caches: &[(&str, &str)]) {
        let dir = d.join(format!("sys/devices/system/cpu/cpu{cpu}"));
        std::fs::create_dir_all(dir.join("topology")).unwrap();
        std::fs::write(dir.join("topology/physical_package_id"), package).unwrap();
        std::fs::write(dir.join("topology/core_id"), core).unwrap();
        for (i, (level, shared)) in caches.iter().enumerate() {
            let idx = dir.join(format!("cache/index{i}"));
            std::fs::create_dir_all(&idx).unwrap();
            std::fs::write(idx.join("level"), level).unwrap();
            std::fs::write(idx.join("shared_cpu_list"), shared).unwrap();
        }
    }

    #[test]
    fn two_packages_with_smt_and_an_llc_each() {
        // CPUs 0-3 on package 0 (cores 0,1 with SMT siblings 0/2, 1/3),
        // CPUs 4-7 on package 1 (cores 0,1 again: core_id repeats).
        let d = tree("0-7\n", "");
        for cpu in 0..8 {
            let (pkg, llc) = if cpu < 4 {
                ("0\n", "0-3\n")
            } else {
                ("1\n", "4-7\n")
            };
            let core = format!("{}\n", cpu % 2);
            let l1 = cpu.to_string();
            // index order does not follow level order: the highest wins.
            place(
                d.path(),
                cpu,
                pkg,
                &core,
                &[("1", &l1), ("3", llc), ("2", &l1)],
            );
        }
        // A stray non-index entry is ignored.
        std::fs::write(
            d.path().join("sys/devices/system/cpu/cpu0/cache/uevent"),
            "",
        )
        .unwrap();
        let t = read_topology(d.path()).unwrap();
        assert_eq!(t.online(), "0-7".parse().unwrap());
        assert_eq!(t.packages(), BTreeSet::from([0, 1]));
        assert_eq!(t.cores(), 4);
        assert_eq!(
            t.llc_domains(),
            vec!["0-3".parse().unwrap(), "4-7".parse().unwrap()]
        );
        assert!(t.without_llc().is_empty());
        assert_eq!(t.cpus[5].package, Some(1));
        assert_eq!(t.cpus[5].core, Some(1));
    }

    #[test]
    fn offline_cpus_and_missing_caches() {
        // CPU 1 offline: not read, and dropped from CPU 0's LLC domain.
        let d = tree("0,2\n", "");
        place(d.path(), 0, "0", "0", &[("3", "0-2")]);
        place(d.path(), 1, "0", "1", &[("3", "0-2")]);
        place(d.path(), 2, "-1", "-1", &[]);
        let t = read_topology(d.path()).unwrap();
        assert_eq!(t.cpus.len(), 2);
        assert_eq!((t.cpus[1].package, t.cpus[1].core), (None, None));
        assert_eq!(t.packages(), BTreeSet::from([0]));
        assert_eq!(t.cores(), 1);
        assert_eq!(t.llc_domains(), vec!["0,2".parse().unwrap()]);
        assert_eq!(t.without_llc(), CpuSet::single(2));

        // No topology directory at all (some containers): all unknown.
        let d = tree("0\n", "");
        let t = read_topology(d.path()).unwrap();
        assert_eq!(
            t.cpus,
            vec![CpuPlace {
                cpu: 0,
                package: None,
                core: None,
                llc: None
            }]
        );
        assert!(t.llc_domains().is_empty() && t.cores() == 0);
    }

    #[test]
    fn malformed_topology_files_are_named() {
        let d = tree("0\n", "");
        place(d.path(), 0, "zero\n", "0", &[]);
        let err = read_topology(d.path()).unwrap_err().to_string();
        assert!(
            err.contains("cpu0/topology/physical_package_id") && err.contains("zero"),
            "{err}"
        );
        let d = tree("0\n", "");
        place(d.path(), 0, "0", "0", &[("3", "0-x")]);
        let err = read_topology(d.path()).unwrap_err().to_string();
        assert!(err.contains("cache/index0/shared_cpu_list"), "{err}");
    }

    #[test]
    fn this_machine_has_a_topology() {
        let root = Path::new("/");
        let t = read_topology(root).unwrap();
        assert_eq!(t.online(), online_cpus(root).unwrap());
        for domain in t.llc_domains() {
            assert!(!domain.is_empty());
        }
    }

    #[test]
    fn this_machine_has_an_online_cpu() {
        let cpus = online_cpus(Path::new("/")).unwrap();
        // SAFETY: sched_getcpu has no preconditions.
        let here = unsafe { libc::sched_getcpu() };
        assert!(here >= 0, "sched_getcpu failed");
        assert!(
            cpus.contains(here as usize),
            "running on CPU {here}, online {cpus}"
        );
    }
}
