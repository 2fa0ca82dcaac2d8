//! The unified hierarchy (cgroup v2): `cpu.max`, `cpu.weight`,
//! `cpuset.cpus`, and the `cgroup.subtree_control` that decides whether a
//! cgroup has a controller's files at all.
//!
//! Kernel rules that shape odin's use of it:
//! - A controller's files exist in a cgroup only if its parent lists the
//!   controller in `cgroup.subtree_control`. odin reads that file but
//!   never writes it: enabling or disabling a controller below a cgroup
//!   odin did not create changes the other cgroups there (and "no internal
//!   processes" forbids it where the parent holds processes).
//! - Every controller of a process lives in its one cgroup, so moving a
//!   process elsewhere also strips it of its cgroup's memory, pids, device
//!   and network policies: on v2 odin caps a cgroup where it is and moves
//!   nobody.
//! - `cpu.max` is `"$QUOTA $PERIOD"` in microseconds, `max` for no limit;
//!   reading it gives the same form back, which is what odin restores.
//!   `cpu.weight` is 1..=10000, 100 by default.

use std::path::Path;

use super::{CgroupError, CgroupFs, read_file};
use crate::cpulist::CpuSet;

/// The file that caps a cgroup's CPU time.
pub const CPU_MAX: &str = "cpu.max";
/// The file with a cgroup's relative CPU weight.
pub const CPU_WEIGHT: &str = "cpu.weight";
/// The file that enables controllers for a cgroup's children.
pub const SUBTREE_CONTROL: &str = "cgroup.subtree_control";

/// `cpu.max` for `quota_us` of CPU time per `period_us`.
pub fn limit_value(quota_us: u64, period_us: u64) -> String {
    format!("{quota_us} {period_us}")
}

/// Caps `dir` at `quota_us` per `period_us`.
pub fn set_limit(
    fs: &dyn CgroupFs,
    dir: &Path,
    quota_us: u64,
    period_us: u64,
) -> Result<(), CgroupError> {
    fs.write(&dir.join(CPU_MAX), &limit_value(quota_us, period_us))
}

/// Sets `dir`'s CPU weight (clamped to the kernel's 1..=10000).
pub fn set_weight(fs: &dyn CgroupFs, dir: &Path, weight: u32) -> Result<(), CgroupError> {
    fs.write(&dir.join(CPU_WEIGHT), &weight.clamp(1, 10_000).to_string())
}

/// Restricts `dir`'s tasks to `cpus`.
pub fn set_cpus(fs: &dyn CgroupFs, dir: &Path, cpus: &CpuSet) -> Result<(), CgroupError> {
    fs.write(&dir.join("cpuset.cpus"), &cpus.to_string())
}

/// The CPUs `dir` may use (`cpuset.cpus.effective`).
pub fn effective_cpus(dir: &Path) -> Result<Option<CpuSet>, CgroupError> {
    let text = read_file(&dir.join("cpuset.cpus.effective"))?;
    Ok(text.trim().parse().ok())
}

/// `dir`'s `cpu.max` as the kernel shows it (`max 100000` when
/// unlimited).
pub fn limit(dir: &Path) -> Result<String, CgroupError> {
    Ok(read_file(&dir.join(CPU_MAX))?.trim().to_string())
}

/// Whether `dir` enables `controller` for its children.
pub fn subtree_has(dir: &Path, controller: &str) -> Result<bool, CgroupError> {
    let text = read_file(&dir.join(SUBTREE_CONTROL))?;
    Ok(text.split_whitespace().any(|c| c == controller))
}
