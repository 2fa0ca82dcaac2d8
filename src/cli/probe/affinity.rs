//! `affinity`: pinning threads to each online CPU.

use std::path::Path;

use odin::cpulist::CpuSet;
use odin::pipeline::affinity::Affinity;

use super::{Check, Status};

/// `CAP_SYS_NICE` (capability number 23).
const CAP_SYS_NICE: u32 = 23;

/// `affinity`: pin a short-lived thread to each online CPU and read it
/// back; and whether `CAP_SYS_NICE` is held.
pub fn check(root: &Path, affinity: &dyn Affinity, online: Option<&CpuSet>) -> Check {
    let Some(online) = online.filter(|o| !o.is_empty()) else {
        return Check::not_ok(
            "affinity",
            Status::Missing,
            "no online CPUs to pin to",
            "the online CPU list is unreadable",
            "mount sysfs at /sys",
        );
    };
    let allowed = affinity.get(0).ok();
    let mut pinned = Vec::new();
    let mut failed: Vec<(usize, String)> = Vec::new();
    std::thread::scope(|s| {
        for cpu in online.iter() {
            let want = CpuSet::single(cpu);
            let outcome = s
                .spawn(move || {
                    affinity.set(0, &want).map_err(|e| e.to_string())?;
                    let got = affinity.get(0).map_err(|e| e.to_string())?;
                    if got == want {
                        Ok(())
                    } else {
                        Err(format!("pinned to CPU {want}, read back {got}"))
                    }
                })
                .join()
                .unwrap_or_else(|_| Err("the probe thread panicked".into()));
            match outcome {
                Ok(()) => pinned.push(cpu),
                Err(e) => failed.push((cpu, e)),
            }
        }
    });
    let caps = odin::monitor::perf::read_capabilities(root).ok();
    let nice = caps.map(|c| c.has(CAP_SYS_NICE));
    let mut detail = if pinned.is_empty() {
        "pinned to no CPU".to_string()
    } else {
        format!(
            "pinned a thread to CPU {} and read it back",
            CpuSet::from_cpus(pinned.iter().copied())
        )
    };
    detail.push_str(match nice {
        Some(true) => ", CAP_SYS_NICE held",
        Some(false) => ", no CAP_SYS_NICE",
        None => ", CAP_SYS_NICE unknown",
    });
    if let Some((_, first)) = failed.first() {
        let failed_set = CpuSet::from_cpus(failed.iter().map(|(c, _)| *c));
        let outside = allowed
            .as_ref()
            .map(|a| failed_set.difference(a))
            .filter(|d| !d.is_empty());
        let (reason, fix) = match (&outside, &allowed) {
            (Some(out), Some(a)) => (
                format!(
                    "cannot pin to CPU {failed_set} ({first}): CPU {out} is outside the \
                     {a} this process may use (a cpuset or taskset restricts it)"
                ),
                "run odin where its cpuset includes the CPUs it should use \
                 (cgroup cpuset.cpus; docker --cpuset-cpus; taskset)",
            ),
            _ => (
                format!("cannot pin to CPU {failed_set}: {first}"),
                "allow sched_setaffinity (seccomp profile or security module) \
                 and check the cpuset of odin's cgroup",
            ),
        };
        let status = if pinned.is_empty() {
            Status::Missing
        } else {
            Status::Degraded
        };
        return Check::not_ok("affinity", status, detail, reason, fix);
    }
    if nice == Some(false) {
        return Check::not_ok(
            "affinity",
            Status::Degraded,
            detail,
            "no CAP_SYS_NICE: odin can pin its own threads but not move other users' \
             threads or raise priorities",
            "run odin as root or grant CAP_SYS_NICE (systemd: AmbientCapabilities=CAP_SYS_NICE)",
        );
    }
    Check::ok("affinity", detail)
}
