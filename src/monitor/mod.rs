//! What the machine is doing to the pipeline: raw samples from `/proc` (and,
//! in `perf`, hardware counters) and the pure signals derived from them.
//!
//! ```text
//!   procfs::ProcReader{root} ──► sample::* (raw, cumulative, Option) ─┐
//!                                                                     ├─► derive::* (pure: prev, cur, dt)
//!   perf (counters)          ──► sample::CounterValues ───────────────┘        │
//!                                                                              ▼
//!                                              antagonists::find (who used the PE's CPUs)
//! ```
//!
//! Readers only read; [`derive`](mod@derive) and [`antagonists`] only
//! compute (no `std::fs`, `libc` or `nix`), so the simulator and the tests
//! can feed them synthetic samples.
//!
//! # Kernel quirks the readers and the derivation handle
//!
//! * **Units.** `/proc/<pid>/task/<tid>/schedstat` is in **nanoseconds**
//!   (`sum_exec_runtime`, `run_delay`, `pcount`). `/proc/stat` and the
//!   `utime`/`stime` fields of `/proc/<pid>/task/<tid>/stat` are in
//!   **USER_HZ clock ticks** (`sysconf(_SC_CLK_TCK)`, 100 on every common
//!   architecture, independent of the kernel's `CONFIG_HZ`). PSI `total=` is
//!   in **microseconds**; its `avgN=` values are percentages.
//! * **Old kernels.** `/proc/stat` CPU lines grew over time (iowait, irq,
//!   softirq in 2.6; steal in 2.6.11; guest in 2.6.24; guest_nice in 2.6.33);
//!   missing trailing fields are `None`. `/proc/pressure/cpu` exists only from
//!   4.20 with `CONFIG_PSI` (and not with `psi=0`); its `full` line only from
//!   5.13. Absent PSI is `None`, not an error. `schedstat` prints `0 0 0`
//!   when scheduler statistics are compiled out.
//! * **comm.** The second field of `stat` is the thread name in parentheses,
//!   written raw: it may contain spaces, `(`, `)` and even non-UTF-8 bytes
//!   (`prctl(PR_SET_NAME)` accepts anything). The name runs from the first
//!   `(` to the **last** `)`; the fields after the last `)` are fixed format.
//! * **Races.** Tasks come and go while `/proc` is walked: a directory that
//!   was listed may be gone (`ENOENT`) or its task reaped mid-read (`ESRCH`).
//!   Those tasks are skipped silently; every other failure is reported with
//!   the path.
//! * **Last CPU is a snapshot.** `stat` field 39 is the CPU the task last ran
//!   on when it was read. CPU time between two snapshots is attributed to
//!   that CPU, so a task migrating between CPUs is counted where it was last
//!   seen. For pinned antagonists (the common, harmful case) it is exact.

pub mod antagonists;
pub mod derive;
pub mod observer;
pub mod procfs;
pub mod sample;

use std::io;
use std::path::{Path, PathBuf};

/// Why a `/proc` file could not be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// A file or directory could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// A file holds something other than what the kernel documents.
    #[error("{path}: {at}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where in the file: `line 3`, `field 39 (processor)`, ...
        at: String,
        /// What is wrong.
        reason: String,
    },
}

impl ProcError {
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        ProcError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn parse(path: &Path, at: impl Into<String>, reason: impl Into<String>) -> Self {
        ProcError::Parse {
            path: path.to_path_buf(),
            at: at.into(),
            reason: reason.into(),
        }
    }

    /// True when the error says the task went away while it was being read
    /// (`ENOENT` or `ESRCH`): a normal race, not a fault.
    pub fn is_gone(&self) -> bool {
        match self {
            ProcError::Io { source, .. } => {
                source.kind() == io::ErrorKind::NotFound
                    || source.raw_os_error() == Some(libc::ESRCH)
            }
            ProcError::Parse { .. } => false,
        }
    }
}

/// Fake `/proc` trees for tests.
#[cfg(test)]
pub(crate) mod testutil {
    use std::path::Path;

    use tempfile::TempDir;

    /// A temporary root with files written under it.
    pub(crate) struct FakeRoot {
        dir: TempDir,
    }

    impl FakeRoot {
        /// An empty root with an empty `proc/`.
        pub(crate) fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("proc")).unwrap();
            Self { dir }
        }

        /// The root directory.
        pub(crate) fn path(&self) -> &Path {
            self.dir.path()
        }

        /// Writes `content` to `rel` (relative to the root), creating parents.
        pub(crate) fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> &Self {
            let path = self.dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
            self
        }

        /// A `stat` line for thread `tid` named `comm` in `state`, with
        /// `flags`, `utime`/`stime` ticks, `starttime` and last CPU `cpu`
        /// (all 52 fields, as on a current kernel).
        #[allow(clippy::too_many_arguments)]
        pub(crate) fn stat_line(
            tid: i32,
            comm: &str,
            state: char,
            flags: u64,
            utime: u64,
            stime: u64,
            starttime: u64,
            cpu: usize,
        ) -> String {
            // Fields 1..=52; index i holds field i+1.
            let mut f: Vec<String> = (1..=52).map(|_| "0".to_string()).collect();
            f[0] = tid.to_string();
            f[1] = format!("({comm})");
            f[2] = state.to_string();
            f[3] = "1".into(); // ppid
            f[8] = flags.to_string();
            f[13] = utime.to_string();
            f[14] = stime.to_string();
            f[21] = starttime.to_string();
            f[38] = cpu.to_string();
            f.join(" ") + "\n"
        }

        /// Writes `/proc/<pid>/task/<tid>/stat` with [`Self::stat_line`].
        #[allow(clippy::too_many_arguments)]
        pub(crate) fn task(
            &self,
            pid: i32,
            tid: i32,
            comm: &str,
            flags: u64,
            utime: u64,
            stime: u64,
            starttime: u64,
            cpu: usize,
        ) -> &Self {
            self.write(
                &format!("proc/{pid}/task/{tid}/stat"),
                Self::stat_line(tid, comm, 'R', flags, utime, stime, starttime, cpu),
            )
        }
    }
}
pub mod perf;
