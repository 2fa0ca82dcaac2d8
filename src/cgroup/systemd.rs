//! systemd's view of a cgroup: on a host where systemd manages the
//! unified hierarchy, the cgroup of a service or scope is a unit, and its
//! CPU limit belongs to systemd (`CPUQuota=`). Writing the unit's
//! `cpu.max` behind systemd's back works until systemd rewrites it (a
//! `daemon-reload`, a `set-property`); asking the manager for a runtime
//! property (`SetUnitProperties(unit, runtime = true, ...)`) does not, and
//! the change is gone at the next boot.
//!
//! [`UnitManager`] is that request; the enforcer asks it when an
//! antagonist's leaf cgroup is a unit ([`unit_of`]).

use super::CgroupError;

/// The CPU quota of systemd units, set at runtime only.
pub trait UnitManager: std::fmt::Debug + Send + Sync {
    /// The unit's `CPUQuotaPerSecUSec`: CPU time per second of wall time,
    /// microseconds; `None` when it has no quota (systemd's infinity).
    fn cpu_quota(&self, unit: &str) -> Result<Option<u64>, CgroupError>;
    /// Sets (`Some`) or removes (`None`) the unit's quota for this boot.
    fn set_cpu_quota(&self, unit: &str, usec_per_sec: Option<u64>) -> Result<(), CgroupError>;
}

/// The unit whose cgroup is `cgroup` (a path as `/proc/<pid>/cgroup`
/// shows it), if its last component names a unit systemd can set a
/// property on: a service or a scope (`/system.slice/nginx.service`,
/// `/user.slice/user-1000.slice/session-2.scope`).
pub fn unit_of(cgroup: &str) -> Option<&str> {
    let last = cgroup.trim_end_matches('/').rsplit('/').next()?;
    let (name, kind) = last.rsplit_once('.')?;
    (!name.is_empty() && matches!(kind, "service" | "scope")).then_some(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_and_scopes_are_units_slices_and_plain_cgroups_are_not() {
        assert_eq!(
            unit_of("/system.slice/nginx.service"),
            Some("nginx.service")
        );
        assert_eq!(
            unit_of("/user.slice/user-1000.slice/session-2.scope"),
            Some("session-2.scope")
        );
        assert_eq!(unit_of("/system.slice"), None);
        assert_eq!(unit_of("/batch/jobs"), None);
        assert_eq!(unit_of("/"), None);
        assert_eq!(unit_of("/x/.service"), None);
    }
}
