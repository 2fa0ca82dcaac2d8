//! The calling thread, as the kernel names it.

/// The calling thread's id (its `tid`, the pid of a single-threaded
/// process), as `/proc/<pid>/task/<tid>`, `sched_setaffinity` and
/// `perf_event_open` take it.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}
