//! Raw samples: cumulative counters exactly as the kernel reports them, in
//! the kernel's units, with `None` where a source (or a field on an older
//! kernel) is missing. Rates and shares are computed in
//! [`super::derive`](mod@super::derive).

use std::collections::BTreeMap;

/// One thread's `/proc/<pid>/task/<tid>/schedstat`: cumulative since the
/// thread started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Schedstat {
    /// Time spent running on a CPU, in ns (`se.sum_exec_runtime`).
    pub run_ns: u64,
    /// Time spent runnable but waiting on a run queue, in ns
    /// (`sched_info.run_delay`).
    pub wait_ns: u64,
    /// Number of times the thread was scheduled onto a CPU
    /// (`sched_info.pcount`).
    pub timeslices: u64,
}

/// One `cpuN` line of `/proc/stat`, in USER_HZ ticks, cumulative since boot.
///
/// Fields that older kernels do not print are `None`. `guest` and
/// `guest_nice` are already included in `user` and `nice` by the kernel, so
/// they are not added again in [`CpuStat::busy`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuStat {
    /// Normal processes in user mode.
    pub user: u64,
    /// Niced processes in user mode.
    pub nice: u64,
    /// Kernel mode.
    pub system: u64,
    /// Idle.
    pub idle: u64,
    /// Idle while I/O was outstanding (since 2.5.41).
    pub iowait: Option<u64>,
    /// Servicing hard interrupts (since 2.6.0).
    pub irq: Option<u64>,
    /// Servicing soft interrupts (since 2.6.0).
    pub softirq: Option<u64>,
    /// Stolen by the hypervisor for other guests (since 2.6.11).
    pub steal: Option<u64>,
    /// Running a guest vCPU (since 2.6.24; part of `user`).
    pub guest: Option<u64>,
    /// Running a niced guest vCPU (since 2.6.33; part of `nice`).
    pub guest_nice: Option<u64>,
}

impl CpuStat {
    /// Ticks the CPU did work for this system: user, nice, system, irq,
    /// softirq.
    pub fn busy(&self) -> u64 {
        self.user
            .saturating_add(self.nice)
            .saturating_add(self.system)
            .saturating_add(self.irq.unwrap_or(0))
            .saturating_add(self.softirq.unwrap_or(0))
    }

    /// Ticks the CPU was idle: idle plus iowait.
    pub fn idle_all(&self) -> u64 {
        self.idle.saturating_add(self.iowait.unwrap_or(0))
    }

    /// Ticks stolen by the hypervisor (0 when the kernel does not say).
    pub fn steal(&self) -> u64 {
        self.steal.unwrap_or(0)
    }

    /// All accounted ticks: busy + idle + steal.
    pub fn total(&self) -> u64 {
        self.busy()
            .saturating_add(self.idle_all())
            .saturating_add(self.steal())
    }
}

/// The per-CPU lines of `/proc/stat`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcStat {
    /// Each online CPU's line, by CPU number (offline CPUs have no line).
    pub cpus: BTreeMap<usize, CpuStat>,
}

/// One line (`some` or `full`) of a PSI file.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PsiLine {
    /// Percentage of wall time stalled, averaged over 10 s.
    pub avg10: f64,
    /// Same over 60 s.
    pub avg60: f64,
    /// Same over 300 s.
    pub avg300: f64,
    /// Cumulative stall time, in µs.
    pub total_us: u64,
}

/// `/proc/pressure/cpu`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuPressure {
    /// Some runnable task was waiting for a CPU.
    pub some: PsiLine,
    /// All non-idle tasks were waiting at once (printed since 5.13; always
    /// zero at the system level).
    pub full: Option<PsiLine>,
}

/// A cgroup version: which hierarchy a [`TaskCgroup`] path belongs to, and
/// (in `cgroup`) which control files cap, weigh and confine a cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CgroupVersion {
    /// Per-controller hierarchies; a task's path is the one in the `cpu`
    /// controller's hierarchy (`N:cpu,cpuacct:/path`).
    V1,
    /// The unified hierarchy (`0::/path`).
    V2,
}

/// The cgroup that governs a task's CPU time, from `/proc/<pid>/cgroup`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TaskCgroup {
    /// The hierarchy.
    pub version: CgroupVersion,
    /// The path relative to the hierarchy's root, e.g. `/system.slice/x.service`.
    pub path: String,
}

/// Bit of `stat` field 9 (`flags`) set on kernel threads.
pub const PF_KTHREAD: u64 = 0x0020_0000;

/// What `/proc/<pid>/task/<tid>/stat` says about one thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskStat {
    /// Process (thread group) id: the `/proc/<pid>` directory.
    pub pid: i32,
    /// Thread id (field 1).
    pub tid: i32,
    /// Thread name (field 2, without the parentheses; non-UTF-8 bytes are
    /// replaced).
    pub comm: String,
    /// State letter (field 3): `R`, `S`, `D`, `Z`, `T`, `t`, `I`, ...
    pub state: char,
    /// Parent process id (field 4).
    pub ppid: i32,
    /// Process group id (field 5).
    pub pgrp: i32,
    /// `PF_*` flags (field 9).
    pub flags: u64,
    /// User-mode CPU time, USER_HZ ticks (field 14).
    pub utime: u64,
    /// Kernel-mode CPU time, USER_HZ ticks (field 15).
    pub stime: u64,
    /// CPU time of its reaped children, user and kernel mode, USER_HZ
    /// ticks (fields 16 and 17).
    pub children_ticks: u64,
    /// Start time after boot, USER_HZ ticks (field 22); tells a reused tid
    /// from the thread that had it before.
    pub starttime: u64,
    /// CPU the thread last ran on (field 39, `processor`).
    pub last_cpu: usize,
}

impl TaskStat {
    /// True for kernel threads (`PF_KTHREAD`).
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }

    /// `utime + stime`, USER_HZ ticks.
    pub fn cpu_ticks(&self) -> u64 {
        self.utime.saturating_add(self.stime)
    }
}

/// One thread found by the task walk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    /// Its `stat`.
    pub stat: TaskStat,
    /// Its process's cgroup (`None` if the file has no v2 or v1 `cpu` line).
    pub cgroup: Option<TaskCgroup>,
}

/// Every thread on the system at one moment (as near as a walk of `/proc`
/// gets to a moment).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskSnapshot {
    /// USER_HZ: ticks per second of the `utime`/`stime` fields.
    pub user_hz: u64,
    /// Time since boot when the walk began, USER_HZ ticks (from
    /// `/proc/uptime`; `None` if unreadable). Threads whose `starttime` is
    /// at or after it were born during the walk or later.
    pub boot_ticks: Option<u64>,
    /// Threads by tid.
    pub tasks: BTreeMap<i32, Task>,
}

/// Hardware counter values, cumulative, already scaled for multiplexing;
/// `None` where the counter is unsupported (typical on virtual machines).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterValues {
    /// Retired instructions.
    pub instructions: Option<u64>,
    /// CPU cycles.
    pub cycles: Option<u64>,
    /// Last-level cache misses.
    pub llc_misses: Option<u64>,
}

impl From<&super::perf::CounterSample> for CounterValues {
    /// The hardware part of a counter group read.
    fn from(s: &super::perf::CounterSample) -> Self {
        Self {
            instructions: s.instructions,
            cycles: s.cycles,
            llc_misses: s.llc_misses,
        }
    }
}
