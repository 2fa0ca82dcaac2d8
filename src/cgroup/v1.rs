//! The per-controller hierarchies of cgroup v1: `cpu.cfs_quota_us` with
//! `cpu.cfs_period_us`, `cpu.shares`, and the separate `cpuset` hierarchy.
//!
//! Kernel rules that shape odin's use of it:
//! - Each controller (or co-mounted group such as `cpu,cpuacct`) is its
//!   own tree, so a process has one cgroup per hierarchy; odin moves it in
//!   each hierarchy it uses (into cgroups of its own) and remembers each
//!   origin. Its memory, pids or devices cgroups are other hierarchies and
//!   stay as they are.
//! - `cpu.cfs_quota_us` is `-1` for no limit, at least 1000 otherwise; a
//!   child's quota may not exceed its parent's, so odin's own cgroups stay
//!   unlimited above `besteffort`.
//! - `cpu.shares` is 2..=262144, 1024 by default: the v2 weight `w`
//!   (default 100) maps to `w * 1024 / 100`.
//! - A new cpuset cgroup starts with empty `cpuset.cpus` and `cpuset.mems`
//!   and refuses tasks until both are set.

use std::path::Path;

use super::{CgroupError, CgroupFs, read_file};
use crate::cpulist::CpuSet;

/// The file with the CFS quota, microseconds per period.
pub const CFS_QUOTA: &str = "cpu.cfs_quota_us";
/// The file with the CFS period, microseconds.
pub const CFS_PERIOD: &str = "cpu.cfs_period_us";
/// The file with a cgroup's relative CPU weight.
pub const SHARES: &str = "cpu.shares";

/// `cpu.shares` for a v2 weight (1..=10000, 100 the default).
pub fn shares(weight: u32) -> u64 {
    (u64::from(weight) * 1024 / 100).clamp(2, 262_144)
}

/// Caps `dir` at `quota_us` per `period_us`: the period first, so the
/// quota is never judged against a stale period.
pub fn set_limit(
    fs: &dyn CgroupFs,
    dir: &Path,
    quota_us: u64,
    period_us: u64,
) -> Result<(), CgroupError> {
    fs.write(&dir.join(CFS_PERIOD), &period_us.to_string())?;
    fs.write(&dir.join(CFS_QUOTA), &quota_us.to_string())
}

/// Sets `dir`'s shares from a v2-style weight.
pub fn set_weight(fs: &dyn CgroupFs, dir: &Path, weight: u32) -> Result<(), CgroupError> {
    fs.write(&dir.join(SHARES), &shares(weight).to_string())
}

/// Gives the cpuset cgroup `dir` the CPUs `cpus` and the memory nodes of
/// `parent` (which a new v1 cpuset lacks).
pub fn set_cpus(
    fs: &dyn CgroupFs,
    dir: &Path,
    parent: &Path,
    cpus: &CpuSet,
) -> Result<(), CgroupError> {
    let mems = read_file(&parent.join("cpuset.mems"))?;
    fs.write(&dir.join("cpuset.cpus"), &cpus.to_string())?;
    fs.write(&dir.join("cpuset.mems"), mems.trim())
}

/// The CPUs of the cpuset cgroup `dir`.
pub fn cpus(dir: &Path) -> Result<Option<CpuSet>, CgroupError> {
    let text = read_file(&dir.join("cpuset.cpus"))?;
    Ok(text.trim().parse().ok())
}
