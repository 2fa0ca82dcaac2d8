//! `schedstat`: per-thread scheduler statistics.

use std::path::Path;

use odin::monitor::procfs::ProcReader;

use super::{Check, Status, gettid};

/// `schedstat`: the calling thread's `/proc/<pid>/task/<tid>/schedstat`.
pub fn check(root: &Path) -> Check {
    const FIX: &str = "use a kernel with CONFIG_SCHED_INFO=y (selected by CONFIG_SCHEDSTATS \
                       or CONFIG_TASK_DELAY_ACCT)";
    const FALLBACK: &str = "odin loses per-thread run delay and runs on PSI and stage times";
    let pid = std::process::id() as i32;
    let tid = gettid();
    let file = format!("/proc/{pid}/task/{tid}/schedstat");
    match ProcReader::with_root(root).schedstat(pid, tid) {
        Ok(s) if s.run_ns == 0 && s.wait_ns == 0 && s.timeslices == 0 => Check::not_ok(
            "schedstat",
            Status::Degraded,
            format!("{file}: 0 0 0"),
            format!("the kernel prints zeros: scheduler statistics are compiled out; {FALLBACK}"),
            FIX,
        ),
        Ok(s) => Check::ok(
            "schedstat",
            format!(
                "per-thread run and wait time (this thread: ran {} us, waited {} us)",
                s.run_ns / 1000,
                s.wait_ns / 1000
            ),
        ),
        Err(e) if e.is_gone() => Check::not_ok(
            "schedstat",
            Status::Degraded,
            format!("{file}: absent"),
            format!("the kernel has no per-thread schedstat; {FALLBACK}"),
            FIX,
        ),
        Err(e) => Check::not_ok(
            "schedstat",
            Status::Degraded,
            format!("{file}: unreadable"),
            format!("{e}; {FALLBACK}"),
            "check that /proc is a procfs mount readable by odin",
        ),
    }
}
