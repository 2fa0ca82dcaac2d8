//! `other_daemons`: schedulers and daemons that move odin's threads or
//! cgroups.

use std::path::Path;

use odin::monitor::procfs::ProcReader;

use super::{Check, Status};

/// A daemon that moves threads, interrupts or cgroups behind odin's back.
struct Daemon {
    /// Its `comm`.
    comm: &'static str,
    /// What it does to odin.
    does: &'static str,
    /// How to keep it off odin's CPUs.
    fix: &'static str,
}

const DAEMONS: &[Daemon] = &[
    Daemon {
        comm: "irqbalance",
        does: "moves interrupts between CPUs",
        fix: "set IRQBALANCE_BANNED_CPULIST=<odin's CPUs> in /etc/default/irqbalance \
              (or /etc/sysconfig/irqbalance), or stop irqbalance",
    },
    Daemon {
        comm: "tuned",
        does: "its profiles can re-pin threads and isolate CPUs",
        fix: "use a tuned profile without a [scheduler] plugin touching odin's CPUs, \
              or stop tuned",
    },
    Daemon {
        comm: "numad",
        does: "moves processes between NUMA nodes by rewriting their cpusets",
        fix: "exclude odin (numad -x <pid>) or stop numad",
    },
    Daemon {
        comm: "systemd-oomd",
        does: "kills whole cgroups under memory pressure",
        fix: "set ManagedOOMPreference=avoid on odin's unit",
    },
    Daemon {
        comm: "cgrulesengd",
        does: "moves processes into cgroups by /etc/cgrules.conf",
        fix: "add no rule matching odin or its antagonists, or stop cgred",
    },
    Daemon {
        comm: "ananicy",
        does: "renices processes and moves them into cgroups by rules",
        fix: "add no rule matching odin, or stop ananicy",
    },
    Daemon {
        comm: "ananicy-cpp",
        does: "renices processes and moves them into cgroups by rules",
        fix: "add no rule matching odin, or stop ananicy-cpp",
    },
];

/// `other_daemons`: a sched_ext scheduler, and the [`DAEMONS`] found in
/// `/proc/*/comm`.
pub fn check(root: &Path) -> Check {
    let read = |rel: &str| {
        std::fs::read_to_string(root.join(rel))
            .ok()
            .map(|s| s.trim().to_string())
    };
    let mut found = Vec::new();
    let mut reasons = Vec::new();
    let mut fixes = Vec::new();
    if read("sys/kernel/sched_ext/state").as_deref() == Some("enabled") {
        let ops = read("sys/kernel/sched_ext/root/ops")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unnamed".into());
        found.push(format!("sched_ext scheduler {ops}"));
        reasons.push(format!(
            "the sched_ext scheduler {ops} replaces the kernel's fair scheduler: \
             placement and run delay follow its policy"
        ));
        fixes.push(
            "stop the sched_ext scheduler (e.g. systemctl stop scx, or end its scx_* loader) \
             to compare"
                .to_string(),
        );
    }
    let pids = match ProcReader::with_root(root).pids() {
        Ok(p) => p,
        Err(e) => {
            return Check::not_ok(
                "other_daemons",
                Status::Degraded,
                found.join(", "),
                format!("cannot list processes: {e}"),
                "mount procfs at /proc",
            );
        }
    };
    let mut running: Vec<(&Daemon, Vec<i32>)> = Vec::new();
    for pid in pids {
        let Some(comm) = read(&format!("proc/{pid}/comm")) else {
            continue;
        };
        let Some(d) = DAEMONS.iter().find(|d| d.comm == comm) else {
            continue;
        };
        match running.iter_mut().find(|(r, _)| r.comm == d.comm) {
            Some((_, pids)) => pids.push(pid),
            None => running.push((d, vec![pid])),
        }
    }
    for (d, pids) in &running {
        let pids: Vec<String> = pids.iter().map(ToString::to_string).collect();
        let s = if pids.len() == 1 { "" } else { "s" };
        found.push(format!("{} (pid{s} {})", d.comm, pids.join(", ")));
        reasons.push(format!("{} {}", d.comm, d.does));
        fixes.push(d.fix.to_string());
    }
    if found.is_empty() {
        let names: Vec<&str> = DAEMONS.iter().map(|d| d.comm).collect();
        return Check::ok(
            "other_daemons",
            format!("none running (looked for sched_ext, {})", names.join(", ")),
        );
    }
    Check::not_ok(
        "other_daemons",
        Status::Degraded,
        found.join(", "),
        reasons.join("; "),
        fixes.join("; "),
    )
}
