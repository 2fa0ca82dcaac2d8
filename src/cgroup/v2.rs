//! The unified hierarchy (cgroup v2): `cpu.max`, `cpu.weight`,
//! `cpuset.cpus`, and the `cgroup.subtree_control` a parent needs before
//! its children get a controller's files.
//!
//! Kernel rules that shape odin's use of it:
//! - A controller is usable in a cgroup only if its parent lists it in
//!   `cgroup.subtree_control` (and the root lists it in
//!   `cgroup.controllers`).
//! - "No internal processes": a non-root cgroup with controllers enabled
//!   for its children cannot hold processes itself, so odin's own cgroup
//!   `<name>` holds none; the processes go into `<name>/pipeline` and
//!   `<name>/besteffort`.
//! - `cpu.max` is `"$QUOTA $PERIOD"` in microseconds, `max` for no limit;
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

/// Whether `dir` enables `controller` for its children.
pub fn subtree_has(dir: &Path, controller: &str) -> Result<bool, CgroupError> {
    let text = read_file(&dir.join(SUBTREE_CONTROL))?;
    Ok(text.split_whitespace().any(|c| c == controller))
}

/// Enables (`on`) or disables `controller` for `dir`'s children.
pub fn set_subtree(
    fs: &dyn CgroupFs,
    dir: &Path,
    controller: &str,
    on: bool,
) -> Result<(), CgroupError> {
    let sign = if on { '+' } else { '-' };
    fs.write(&dir.join(SUBTREE_CONTROL), &format!("{sign}{controller}"))
}
