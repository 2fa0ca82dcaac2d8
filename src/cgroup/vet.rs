//! Which antagonists may be hinted or capped at all: the safety filter.
//!
//! Never candidates: PID 1, kernel threads (`PF_KTHREAD`, kthreadd and its
//! children), odin's own process, the processes odin runs under (its
//! supervisors), processes that take too little of the pipeline's CPUs to
//! be worth capping, and processes in a cgroup on the protect list (or
//! below one). With an allow list, only processes in those cgroups (or
//! below) are candidates. A process whose pid now names another process
//! (another start time) has gone and is neither.

use std::path::Path;

use super::{Hierarchy, ProcessInfo, is_within};

/// Least CPU (in CPUs) a process must take from the pipeline's CPUs to
/// be hinted or capped: below it a cap cannot give much back.
pub const MIN_CAP_SHARE: f64 = 0.1;

/// Why a process is not a candidate.
#[derive(Clone, Debug, PartialEq)]
pub enum Refusal {
    /// PID 1.
    Init,
    /// A kernel thread.
    KernelThread,
    /// odin itself.
    Odin,
    /// A process odin runs under (its parent, its parent's parent...):
    /// the shell, runtime or supervisor that started it.
    Supervisor,
    /// It used too little of the pipeline's CPUs to be worth capping.
    Light(f64),
    /// In a protected cgroup (the protect entry).
    Protected(String),
    /// Not in an allowed cgroup.
    NotAllowed,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Init => f.write_str("PID 1"),
            Refusal::KernelThread => f.write_str("kernel thread"),
            Refusal::Odin => f.write_str("odin itself"),
            Refusal::Supervisor => f.write_str("a process odin runs under"),
            Refusal::Light(share) => write!(
                f,
                "{share:.2} CPU on the pipeline's CPUs, below the {MIN_CAP_SHARE} worth capping"
            ),
            Refusal::Protected(p) => write!(f, "protected cgroup {p}"),
            Refusal::NotAllowed => f.write_str("not in an allowed cgroup"),
        }
    }
}

/// The safety filter: whether process `p`, in `cgroup`, may be capped.
pub fn vet(
    p: &ProcessInfo,
    cgroup: &str,
    own_pid: i32,
    protect: &[String],
    allow: &[String],
) -> Result<(), Refusal> {
    if p.pid == 1 {
        return Err(Refusal::Init);
    }
    if p.is_kernel_thread() {
        return Err(Refusal::KernelThread);
    }
    if p.pid == own_pid {
        return Err(Refusal::Odin);
    }
    if let Some(entry) = protect.iter().find(|e| is_within(cgroup, e)) {
        return Err(Refusal::Protected(entry.clone()));
    }
    if !allow.is_empty() && !allow.iter().any(|e| is_within(cgroup, e)) {
        return Err(Refusal::NotAllowed);
    }
    Ok(())
}

/// A named antagonist that is not a candidate, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Refused {
    /// Process id.
    pub pid: i32,
    /// Its name, as the monitor saw it.
    pub comm: String,
    /// Why it is not a candidate.
    pub reason: Refusal,
}

/// What the safety filter says about one antagonist seen lately.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Verdict {
    /// Its pid is gone or names another process now.
    Gone,
    /// It may be hinted or capped: who it is and its cgroup in the `cpu`
    /// hierarchy (`/` where unknown).
    Candidate { info: ProcessInfo, cgroup: String },
    /// It may not.
    Refused(Refusal),
}

/// The facts the safety filter needs about the machine and odin.
pub(super) struct Vetter<'a> {
    /// The `/proc` directory under the root.
    pub proc: &'a Path,
    /// The `cpu` hierarchy, for the process's cgroup.
    pub cpu: Option<&'a Hierarchy>,
    /// odin's own process id.
    pub own_pid: i32,
    /// The processes odin runs under.
    pub supervisors: &'a [i32],
    /// Cgroups never touched (with everything below them).
    pub protect: &'a [String],
    /// If not empty, the only cgroups whose processes are candidates.
    pub allow: &'a [String],
}

impl Vetter<'_> {
    /// The verdict on process `pid`, seen with start time `start` taking
    /// `share` CPUs of the pipeline's CPUs.
    pub fn candidate(&self, pid: i32, start: u64, share: f64) -> Verdict {
        let Ok(Some(p)) = ProcessInfo::read(self.proc, pid) else {
            return Verdict::Gone;
        };
        // The pid names another process now: the one seen has gone.
        if p.start != start {
            return Verdict::Gone;
        }
        if self.supervisors.contains(&pid) {
            return Verdict::Refused(Refusal::Supervisor);
        }
        if share < MIN_CAP_SHARE {
            return Verdict::Refused(Refusal::Light(share));
        }
        let cgroup = self
            .cpu
            .and_then(|h| h.cgroup_of(self.proc, pid).ok().flatten())
            .unwrap_or_else(|| "/".into());
        match vet(&p, &cgroup, self.own_pid, self.protect, self.allow) {
            Ok(()) => Verdict::Candidate { info: p, cgroup },
            Err(r) => Verdict::Refused(r),
        }
    }
}

/// The processes `pid` runs under: its parent, that one's parent, and so
/// on up to (not including) PID 1, read under `proc`.
pub(super) fn ancestors(proc: &Path, pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut cur = pid;
    while let Ok(Some(p)) = ProcessInfo::read(proc, cur) {
        if p.ppid <= 1 || out.contains(&p.ppid) {
            break;
        }
        out.push(p.ppid);
        cur = p.ppid;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::PF_KTHREAD;

    const ODIN: i32 = 100;

    fn info(pid: i32, ppid: i32, flags: u64) -> ProcessInfo {
        ProcessInfo {
            pid,
            comm: "x".into(),
            ppid,
            flags,
            start: 1,
        }
    }

    #[test]
    fn the_safety_filter_refuses_init_kthreads_odin_and_protected_cgroups() {
        let protect = vec![
            "init.scope".to_string(),
            "system.slice/systemd-journald.service".to_string(),
        ];
        let none: Vec<String> = Vec::new();
        let batch = vec!["/batch.slice".to_string()];
        type Case<'a> = (ProcessInfo, &'a str, &'a [String], Result<(), Refusal>);
        let cases: &[Case] = &[
            (info(1, 0, 0), "/init.scope", &none, Err(Refusal::Init)),
            (info(1, 0, 0), "/", &none, Err(Refusal::Init)),
            (
                info(2, 0, PF_KTHREAD),
                "/",
                &none,
                Err(Refusal::KernelThread),
            ),
            (
                info(57, 2, PF_KTHREAD),
                "/",
                &none,
                Err(Refusal::KernelThread),
            ),
            // A kthreadd child without the flag (older kernels) is one too.
            (info(58, 2, 0), "/", &none, Err(Refusal::KernelThread)),
            (info(ODIN, 1, 0), "/", &none, Err(Refusal::Odin)),
            (
                info(400, 1, 0),
                "/init.scope",
                &none,
                Err(Refusal::Protected("init.scope".into())),
            ),
            (
                info(401, 1, 0),
                "/system.slice/systemd-journald.service",
                &none,
                Err(Refusal::Protected(
                    "system.slice/systemd-journald.service".into(),
                )),
            ),
            (
                info(402, 1, 0),
                "/system.slice/systemd-journald.service/sub",
                &none,
                Err(Refusal::Protected(
                    "system.slice/systemd-journald.service".into(),
                )),
            ),
            // A prefix that is not a path component is not protected.
            (info(403, 1, 0), "/init.scope2", &none, Ok(())),
            (
                info(404, 1, 0),
                "/system.slice/other.service",
                &none,
                Ok(()),
            ),
            (info(405, 1, 0), "/", &none, Ok(())),
            (
                info(406, 1, 0),
                "/user.slice",
                &batch,
                Err(Refusal::NotAllowed),
            ),
            (info(407, 1, 0), "/batch.slice/job-1.scope", &batch, Ok(())),
        ];
        for (p, cgroup, allow, want) in cases {
            assert_eq!(
                &vet(p, cgroup, ODIN, &protect, allow),
                want,
                "pid {} in {cgroup}",
                p.pid
            );
        }
    }
}
