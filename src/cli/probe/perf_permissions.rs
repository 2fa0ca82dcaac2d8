//! `perf_permissions`: whether odin may count on a whole CPU.

use odin::cpulist::CpuSet;
use odin::monitor::perf::{Capabilities, CounterSource, GroupKind, OpenClass, Permissions, Target};

use super::counters::{explain, try_open};
use super::{Check, Status};

/// `perf_permissions`: the paranoid level, `CAP_PERFMON`, and whether a
/// CPU-wide software group opens (what odin uses to see other programs on
/// its CPUs).
pub fn check(
    counters: &mut dyn CounterSource,
    perms: &Permissions,
    online: Option<&CpuSet>,
) -> Check {
    let caps = match perms.capabilities {
        Some(c) if c.has(Capabilities::PERFMON) => "CAP_PERFMON held",
        Some(c) if c.has(Capabilities::SYS_ADMIN) => "CAP_PERFMON held (via CAP_SYS_ADMIN)",
        Some(_) => "no CAP_PERFMON",
        None => "capabilities unreadable",
    };
    let paranoid = perms
        .paranoid
        .map_or("unreadable".to_string(), |p| p.to_string());
    let mut detail = format!("perf_event_paranoid={paranoid}, {caps}");
    let privileged = perms.capabilities.is_some_and(Capabilities::perfmon);
    let Some(cpu) = online
        .and_then(|o| o.iter().next())
        .and_then(|c| u32::try_from(c).ok())
    else {
        return Check::not_ok(
            "perf_permissions",
            Status::Degraded,
            detail,
            "no online CPU list to try a CPU-wide counter on",
            "mount sysfs at /sys",
        );
    };
    match try_open(counters, Target::Cpu(cpu), GroupKind::Software) {
        Ok(_) => {
            detail.push_str(", CPU-wide counters open");
            Check::ok("perf_permissions", detail)
        }
        Err(class) => {
            detail.push_str(", CPU-wide counters refused");
            let (reason, fix) = match (class, perms.paranoid) {
                (OpenClass::NotPermitted, Some(p)) if p > 0 && !privileged => (
                    format!(
                        "perf_event_paranoid is {p} and odin lacks CAP_PERFMON: per-thread \
                         counters only, none per CPU to see other programs on odin's CPUs"
                    ),
                    "sysctl kernel.perf_event_paranoid=0, or grant CAP_PERFMON \
                     (systemd: AmbientCapabilities=CAP_PERFMON)"
                        .to_string(),
                ),
                (OpenClass::NotPermitted, _) => (
                    "CPU-wide perf_event_open refused although the settings allow it: \
                     a seccomp filter or security module blocks it"
                        .into(),
                    "allow perf_event_open in the container's seccomp profile or LSM policy".into(),
                ),
                _ => explain(GroupKind::Software, class, perms),
            };
            Check::not_ok("perf_permissions", Status::Degraded, detail, reason, fix)
        }
    }
}
