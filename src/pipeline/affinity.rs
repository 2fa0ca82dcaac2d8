//! CPU affinity of threads, behind a small trait so the runtime can be
//! tested with a recording fake.

use nix::sched::{CpuSet as NixCpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

use crate::cpulist::CpuSet;

/// Why an affinity could not be set or read.
#[derive(Debug, thiserror::Error)]
pub enum AffinityError {
    /// The CPU number exceeds what the kernel's affinity mask can hold.
    #[error("CPU {cpu} does not fit the affinity mask (max {max})")]
    OutOfRange {
        /// The CPU.
        cpu: usize,
        /// Largest CPU the mask holds.
        max: usize,
    },
    /// The empty set cannot be an affinity.
    #[error("empty CPU set")]
    Empty,
    /// The system call failed.
    #[error("sched_{op}affinity(tid {tid}, {cpus}): {source}")]
    Sys {
        /// `set` or `get`.
        op: &'static str,
        /// Thread id (0: the calling thread).
        tid: i32,
        /// The CPUs asked for (empty for `get`).
        cpus: String,
        /// The kernel's answer.
        #[source]
        source: nix::Error,
    },
}

/// Sets and reads the CPUs a thread may run on.
pub trait Affinity: Send + Sync {
    /// Restricts thread `tid` (0: the calling thread) to `cpus`.
    fn set(&self, tid: i32, cpus: &CpuSet) -> Result<(), AffinityError>;
    /// The CPUs thread `tid` (0: the calling thread) may run on.
    fn get(&self, tid: i32) -> Result<CpuSet, AffinityError>;
}

/// The kernel's `sched_setaffinity(2)` and `sched_getaffinity(2)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SchedAffinity;

impl Affinity for SchedAffinity {
    fn set(&self, tid: i32, cpus: &CpuSet) -> Result<(), AffinityError> {
        let mask = mask(cpus)?;
        sched_setaffinity(Pid::from_raw(tid), &mask).map_err(|source| AffinityError::Sys {
            op: "set",
            tid,
            cpus: cpus.to_string(),
            source,
        })
    }

    fn get(&self, tid: i32) -> Result<CpuSet, AffinityError> {
        let mask = sched_getaffinity(Pid::from_raw(tid)).map_err(|source| AffinityError::Sys {
            op: "get",
            tid,
            cpus: String::new(),
            source,
        })?;
        Ok((0..NixCpuSet::count())
            .filter(|&c| mask.is_set(c).unwrap_or(false))
            .collect())
    }
}

#[cfg(test)]
/// A recording fake: `set` stores the CPUs per thread and logs the call,
/// `get` answers what was set (or what [`FakeAffinity::force`] put there),
/// so a test can play someone else changing a thread's affinity.
#[derive(Debug, Default)]
pub(crate) struct FakeAffinity {
    state: std::sync::Mutex<FakeState>,
    /// Signalled on every `set`.
    changed: std::sync::Condvar,
}

#[cfg(test)]
#[derive(Debug, Default)]
struct FakeState {
    pinned: std::collections::HashMap<i32, CpuSet>,
    sets: Vec<(i32, CpuSet)>,
}

#[cfg(test)]
impl FakeAffinity {
    /// A fake with no thread pinned.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Every `set` so far, in order, with tid 0 resolved to the caller's
    /// thread id.
    pub(crate) fn sets(&self) -> Vec<(i32, CpuSet)> {
        self.lock().sets.clone()
    }

    /// Waits until at least `n` `set`s were made (at most `timeout`) and
    /// returns them all.
    pub(crate) fn wait_sets(&self, n: usize, timeout: std::time::Duration) -> Vec<(i32, CpuSet)> {
        let st = self.lock();
        let (st, _) = self
            .changed
            .wait_timeout_while(st, timeout, |st| st.sets.len() < n)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.sets.clone()
    }

    /// Makes thread `tid` run on `cpus` without recording a `set`, as
    /// another program's `taskset` would.
    pub(crate) fn force(&self, tid: i32, cpus: CpuSet) {
        self.lock().pinned.insert(tid, cpus);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
/// The calling thread's id for tid 0.
fn resolve(tid: i32) -> i32 {
    if tid == 0 {
        crate::thread::gettid()
    } else {
        tid
    }
}

#[cfg(test)]
impl Affinity for FakeAffinity {
    fn set(&self, tid: i32, cpus: &CpuSet) -> Result<(), AffinityError> {
        if cpus.is_empty() {
            return Err(AffinityError::Empty);
        }
        let tid = resolve(tid);
        let mut st = self.lock();
        st.sets.push((tid, cpus.clone()));
        st.pinned.insert(tid, cpus.clone());
        self.changed.notify_all();
        Ok(())
    }

    fn get(&self, tid: i32) -> Result<CpuSet, AffinityError> {
        let tid = resolve(tid);
        self.lock()
            .pinned
            .get(&tid)
            .cloned()
            .ok_or(AffinityError::Sys {
                op: "get",
                tid,
                cpus: String::new(),
                source: nix::Error::ESRCH,
            })
    }
}

/// The kernel's CPU mask of `cpus` (built ahead, e.g. before a fork, when
/// the affinity is set where nothing may allocate).
pub fn mask(cpus: &CpuSet) -> Result<NixCpuSet, AffinityError> {
    if cpus.is_empty() {
        return Err(AffinityError::Empty);
    }
    let mut mask = NixCpuSet::new();
    for cpu in cpus.iter() {
        mask.set(cpu).map_err(|_| AffinityError::OutOfRange {
            cpu,
            max: NixCpuSet::count() - 1,
        })?;
    }
    Ok(mask)
}

/// Pins the calling thread to `cpus`.
pub fn pin_current_thread(cpus: &CpuSet) -> Result<(), AffinityError> {
    SchedAffinity.set(0, cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_a_thread_reads_back_and_shows_in_proc() {
        let online = crate::topology::online_cpus(std::path::Path::new("/")).unwrap();
        let last = CpuSet::single(online.iter().last().unwrap());
        let (got, status) = std::thread::spawn(move || {
            pin_current_thread(&last).unwrap();
            let tid = crate::thread::gettid();
            let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
            (SchedAffinity.get(0).unwrap(), status)
        })
        .join()
        .unwrap();
        let want = CpuSet::single(online.iter().last().unwrap());
        assert_eq!(got, want);
        let listed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .parse::<CpuSet>()
            .unwrap();
        assert_eq!(listed, want);
    }

    #[test]
    fn the_fake_records_sets_and_answers_what_was_forced() {
        let fake = FakeAffinity::new();
        assert!(fake.get(7).is_err(), "an unknown thread");
        fake.set(7, &CpuSet::single(1)).unwrap();
        assert_eq!(fake.get(7).unwrap(), CpuSet::single(1));
        fake.force(7, CpuSet::from_cpus([0, 1]));
        assert_eq!(fake.get(7).unwrap(), CpuSet::from_cpus([0, 1]));
        assert!(matches!(
            fake.set(7, &CpuSet::default()),
            Err(AffinityError::Empty)
        ));
        assert_eq!(fake.sets(), vec![(7, CpuSet::single(1))]);
    }

    #[test]
    fn empty_and_huge_sets_are_refused() {
        assert!(matches!(
            SchedAffinity.set(0, &CpuSet::default()),
            Err(AffinityError::Empty)
        ));
        let huge = CpuSet::single(CpuSet::MAX_CPU);
        assert!(matches!(
            SchedAffinity.set(0, &huge),
            Err(AffinityError::OutOfRange { .. }) | Err(AffinityError::Sys { .. })
        ));
    }
}
