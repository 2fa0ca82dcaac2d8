//! `psi`: pressure stall information for the CPU.

use std::path::Path;

use odin::monitor::procfs::ProcReader;

use super::{Check, Status};

/// `psi`: `/proc/pressure/cpu`.
pub fn check(root: &Path) -> Check {
    match ProcReader::with_root(root).cpu_pressure() {
        Ok(Some(p)) => Check::ok(
            "psi",
            format!(
                "/proc/pressure/cpu: some avg10={:.2}% avg60={:.2}%",
                p.some.avg10, p.some.avg60
            ),
        ),
        Ok(None) => Check::not_ok(
            "psi",
            Status::Missing,
            "/proc/pressure/cpu: absent",
            "the kernel has no pressure stall information: odin cannot see machine-wide \
             CPU contention",
            "use a kernel >= 4.20 with CONFIG_PSI=y, and boot with psi=1 if it was built \
             with CONFIG_PSI_DEFAULT_DISABLED",
        ),
        Err(e) => Check::not_ok(
            "psi",
            Status::Missing,
            "/proc/pressure/cpu: unreadable",
            e.to_string(),
            "check that /proc is a procfs mount readable by odin",
        ),
    }
}
