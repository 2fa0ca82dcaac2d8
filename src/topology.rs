//! What CPUs the machine has, read from sysfs under a root directory.

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

#[cfg(test)]
mod tests {
    use super::*;

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
