//! Hardware and software performance counters from `perf_event_open(2)`.
//!
//! odin counts, per stage thread (`pid = tid, cpu = -1`) and per CPU where
//! permitted (`pid = -1, cpu = c`), two counter groups:
//!
//! - [`GroupKind::Hardware`]: instructions, cycles and last-level-cache
//!   misses, from which `derive` computes IPC and misses per 1000
//!   instructions;
//! - [`GroupKind::Software`]: task-clock, context switches and CPU
//!   migrations, which every Linux kernel with perf events provides.
//!
//! Both go through the same code ([`PerfCounters`]), so the group logic runs
//! and is tested even where only software events exist. This module returns
//! raw cumulative values ([`CounterSample`]); rates are computed elsewhere
//! from deltas of two samples.
//!
//! ```no_run
//! use odin::monitor::perf::{CounterSource, GroupKind, PerfCounters, Target, probe};
//!
//! let mut counters = PerfCounters::new();
//! // Once, for `odin probe`, the log and the metrics.
//! println!("{}", probe(&mut counters, std::path::Path::new("/")));
//! // Per stage thread, every tick; carry on with what opened.
//! let tid = 1234;
//! let groups: Vec<_> = [GroupKind::Hardware, GroupKind::Software]
//!     .into_iter()
//!     .filter_map(|kind| counters.open(Target::Thread(tid), kind).ok())
//!     .collect();
//! for g in &groups {
//!     let sample = counters.read(g.handle).unwrap();
//!     println!("{:?} {:?}", sample.instructions, sample.task_clock_ns);
//! }
//! ```
//!
//! # Kernel quirks
//!
//! **Groups.** The first event opened is the group leader (`group_fd = -1`);
//! the others pass the leader's fd. The kernel schedules a group onto the PMU
//! all at once or not at all, so the values of one group always cover the
//! same instants and ratios such as IPC are not skewed by multiplexing. The
//! leader is created with `disabled = 1` and the members with `disabled = 0`,
//! so nothing counts until one `PERF_EVENT_IOC_ENABLE` on the leader with
//! `PERF_IOC_FLAG_GROUP` starts the group as a unit. (Creating the members
//! disabled too looks equivalent but is not: in a CPU-wide context whose
//! group is already running, since the per-PMU context rework of Linux 6.2
//! enabling a member whose PMU differs from the leader's, such as
//! `context-switches` under a `task-clock` leader, leaves it unscheduled
//! and counting 0 until the group is scheduled again, which for a CPU-wide
//! software group is never. Task contexts hide this, as they are rescheduled
//! at every context switch.) `inherit = 0`: a stage thread's counts are its
//! own, not those of threads it spawns.
//!
//! **Group read layout.** With `read_format = PERF_FORMAT_GROUP |
//! PERF_FORMAT_TOTAL_TIME_ENABLED | PERF_FORMAT_TOTAL_TIME_RUNNING |
//! PERF_FORMAT_ID`, one `read()` on the leader returns, as native-endian
//! `u64`s:
//!
//! ```text
//! nr | time_enabled | time_running | value[0] id[0] | ... | value[nr-1] id[nr-1]
//! ```
//!
//! The read must be given a buffer large enough for all of it (else
//! `ENOSPC`); it never returns part of a group. The order of the pairs is the
//! leader then the siblings in creation order, but odin matches values to
//! events by the id the kernel reports for each fd (`PERF_EVENT_IOC_ID`), not
//! by position, so an event that failed to open cannot shift the others.
//!
//! **Multiplexing.** When more events want the PMU than it has counters, the
//! kernel rotates groups; each then counts only part of the time.
//! `time_enabled` is how long the group was enabled and `time_running` how
//! long it was actually on the PMU. The usual estimate of the full count is
//! `value * time_enabled / time_running` ([`scale`]); if `time_running` is 0
//! while `time_enabled` is not, the group never got the PMU and there is no
//! estimate (`None`), which is not the same as a count of 0. If both are 0
//! nothing was missed: the group has not been enabled for any time yet (a
//! per-thread group's clocks only advance while the thread runs, so a thread
//! that has been blocked since the group was opened reads `0, 0`), and the
//! values are exact. Software events are never multiplexed.
//!
//! **Why `ENOENT` means "no PMU" in a VM.** `PERF_TYPE_HARDWARE` and
//! `PERF_TYPE_HW_CACHE` events are served by the CPU's PMU driver (on x86 the
//! `cpu` PMU under `/sys/bus/event_source/devices`). A hypervisor that does
//! not virtualise the PMU reports no architectural performance monitoring in
//! CPUID, so the guest kernel never registers that PMU; `perf_event_open`
//! then finds no PMU for the event type and fails with `ENOENT`. A PMU that
//! exists but cannot count the event (a generic event the CPU has no
//! encoding for, or a feature it lacks) gives `ENOENT` or `EOPNOTSUPP`;
//! `ENODEV` means the PMU is not usable on that CPU. All of these are
//! [`OpenClass::Unsupported`]. Software events (`PERF_TYPE_SOFTWARE`) are
//! implemented by the kernel itself and work there.
//!
//! **Permissions.** `kernel.perf_event_paranoid`: `-1` allows everything, `0`
//! also CPU-wide events, `1` per-thread events counting kernel and user
//! space, `2` (the default) per-thread user-space only, `3` and above
//! (Debian, Android patches) nothing without privilege. `CAP_PERFMON` (Linux
//! 5.8+) or `CAP_SYS_ADMIN` bypass it. Refusals give `EACCES` or `EPERM`
//! ([`OpenClass::NotPermitted`]). When a per-thread group is refused, odin
//! retries it once with `exclude_kernel = 1`, which paranoid level 2
//! permits; [`Opened::user_only`] says so. Context switches happen in the
//! kernel, so a user-only context-switch counter stays at 0.

mod fake;
mod group;
mod probe;

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use perf_event_open_sys as sys;
use sys::bindings;

pub use fake::{FakeCall, FakeCounters};
pub use group::scale;
use group::{parse_group_read, to_sample};
pub use probe::{
    Capabilities, CounterSupport, Permissions, probe, read_capabilities, read_paranoid, summarize,
};

/// One counted event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum CounterKind {
    /// Retired instructions (hardware).
    Instructions,
    /// CPU cycles (hardware).
    Cycles,
    /// Last-level-cache misses (hardware): `PERF_COUNT_HW_CACHE_MISSES`, or
    /// the LL read-miss cache event where the generic one is missing.
    LlcMisses,
    /// Nanoseconds the task (or, for a CPU, the context) was on a CPU.
    TaskClock,
    /// Context switches.
    ContextSwitches,
    /// Migrations between CPUs.
    CpuMigrations,
}

impl CounterKind {
    /// Every kind, hardware first.
    pub const ALL: [CounterKind; 6] = [
        CounterKind::Instructions,
        CounterKind::Cycles,
        CounterKind::LlcMisses,
        CounterKind::TaskClock,
        CounterKind::ContextSwitches,
        CounterKind::CpuMigrations,
    ];

    /// The name `perf` uses for the event.
    pub fn name(self) -> &'static str {
        match self {
            CounterKind::Instructions => "instructions",
            CounterKind::Cycles => "cycles",
            CounterKind::LlcMisses => "cache-misses",
            CounterKind::TaskClock => "task-clock",
            CounterKind::ContextSwitches => "context-switches",
            CounterKind::CpuMigrations => "cpu-migrations",
        }
    }

    /// `(type, config)` encodings to try, best first.
    fn encodings(self) -> &'static [(u32, u64)] {
        const LL_READ_MISS: u64 = bindings::PERF_COUNT_HW_CACHE_LL as u64
            | (bindings::PERF_COUNT_HW_CACHE_OP_READ as u64) << 8
            | (bindings::PERF_COUNT_HW_CACHE_RESULT_MISS as u64) << 16;
        const HW: u32 = bindings::PERF_TYPE_HARDWARE;
        const SW: u32 = bindings::PERF_TYPE_SOFTWARE;
        match self {
            CounterKind::Instructions => &[(HW, bindings::PERF_COUNT_HW_INSTRUCTIONS as u64)],
            CounterKind::Cycles => &[(HW, bindings::PERF_COUNT_HW_CPU_CYCLES as u64)],
            CounterKind::LlcMisses => &[
                (HW, bindings::PERF_COUNT_HW_CACHE_MISSES as u64),
                (bindings::PERF_TYPE_HW_CACHE, LL_READ_MISS),
            ],
            CounterKind::TaskClock => &[(SW, bindings::PERF_COUNT_SW_TASK_CLOCK as u64)],
            CounterKind::ContextSwitches => {
                &[(SW, bindings::PERF_COUNT_SW_CONTEXT_SWITCHES as u64)]
            }
            CounterKind::CpuMigrations => &[(SW, bindings::PERF_COUNT_SW_CPU_MIGRATIONS as u64)],
        }
    }
}

impl fmt::Display for CounterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which counter group.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum GroupKind {
    /// Instructions, cycles, LLC misses: needs a hardware PMU.
    Hardware,
    /// Task-clock, context switches, CPU migrations: always in the kernel.
    Software,
}

impl GroupKind {
    /// The events of the group; the first that opens leads it.
    pub fn counters(self) -> &'static [CounterKind] {
        match self {
            GroupKind::Hardware => &[
                CounterKind::Instructions,
                CounterKind::Cycles,
                CounterKind::LlcMisses,
            ],
            GroupKind::Software => &[
                CounterKind::TaskClock,
                CounterKind::ContextSwitches,
                CounterKind::CpuMigrations,
            ],
        }
    }
}

impl fmt::Display for GroupKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GroupKind::Hardware => "hardware",
            GroupKind::Software => "software",
        })
    }
}

/// What a group counts.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Target {
    /// One thread, on whatever CPU it runs (`pid = tid, cpu = -1`).
    Thread(i32),
    /// Everything that runs on one CPU (`pid = -1, cpu = c`); needs
    /// `perf_event_paranoid <= 0` or `CAP_PERFMON`.
    Cpu(u32),
}

impl Target {
    /// The `pid` and `cpu` arguments of `perf_event_open`.
    fn pid_cpu(self) -> (libc::pid_t, libc::c_int) {
        match self {
            Target::Thread(tid) => (tid, -1),
            Target::Cpu(cpu) => (-1, cpu as libc::c_int),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Thread(tid) => write!(f, "thread {tid}"),
            Target::Cpu(cpu) => write!(f, "CPU {cpu}"),
        }
    }
}

/// Why `perf_event_open` failed, as far as the caller needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpenClass {
    /// No PMU for the event, or it cannot count it (`ENOENT`, `EOPNOTSUPP`,
    /// `ENODEV`): typical of virtual machines. Not fixable by odin.
    Unsupported,
    /// Refused by `perf_event_paranoid` or for lack of `CAP_PERFMON`
    /// (`EACCES`, `EPERM`).
    NotPermitted,
    /// Anything else, with the errno.
    Other(i32),
}

impl OpenClass {
    /// An errno that stands for the class (the errno itself for `Other`).
    pub fn errno(self) -> i32 {
        match self {
            OpenClass::Unsupported => libc::ENOENT,
            OpenClass::NotPermitted => libc::EACCES,
            OpenClass::Other(e) => e,
        }
    }
}

impl fmt::Display for OpenClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenClass::Unsupported => f.write_str("unsupported"),
            OpenClass::NotPermitted => f.write_str("not permitted"),
            OpenClass::Other(e) => write!(f, "{}", io::Error::from_raw_os_error(*e)),
        }
    }
}

/// Classifies a `perf_event_open` errno.
pub fn classify(errno: i32) -> OpenClass {
    match errno {
        libc::ENOENT | libc::EOPNOTSUPP | libc::ENODEV => OpenClass::Unsupported,
        libc::EACCES | libc::EPERM => OpenClass::NotPermitted,
        e => OpenClass::Other(e),
    }
}

/// Why counters could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum PerfError {
    /// `perf_event_open` failed.
    #[error("perf_event_open({event}, {target}): {source} ({class})")]
    Open {
        /// The event that failed (the group's first, if none opened).
        event: CounterKind,
        /// What it was to count.
        target: Target,
        /// The classification of the errno.
        class: OpenClass,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// An ioctl on a perf fd failed.
    #[error("{op} on the {kind} group of {target}: {source}")]
    Ioctl {
        /// Which ioctl.
        op: &'static str,
        /// The group's kind.
        kind: GroupKind,
        /// The group's target.
        target: Target,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// Reading a group failed.
    #[error("reading the {kind} group of {target}: {source}")]
    Read {
        /// The group's kind.
        kind: GroupKind,
        /// The group's target.
        target: Target,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// A group read did not have the layout asked for.
    #[error("reading the {kind} group of {target}: {detail}")]
    Layout {
        /// The group's kind.
        kind: GroupKind,
        /// The group's target.
        target: Target,
        /// What was wrong.
        detail: String,
    },
    /// The handle does not name an open group.
    #[error("no open counter group {0:?}")]
    UnknownHandle(GroupHandle),
    /// A file under the root could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// A file under the root holds something unexpected.
    #[error("{path}: {detail}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
}

impl PerfError {
    /// The classification, if this is an open failure.
    pub fn class(&self) -> Option<OpenClass> {
        match self {
            PerfError::Open { class, .. } => Some(*class),
            _ => None,
        }
    }
}

/// Names an open group of a [`CounterSource`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GroupHandle(usize);

/// A group that opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// Pass this to [`CounterSource::read`] and [`CounterSource::close`].
    pub handle: GroupHandle,
    /// The events that opened; their fields in a [`CounterSample`] are filled.
    pub counting: Vec<CounterKind>,
    /// The events that did not, and why; their fields stay `None`.
    pub missing: Vec<(CounterKind, OpenClass)>,
    /// Only user space is counted (`exclude_kernel`), because counting the
    /// kernel was not permitted.
    pub user_only: bool,
}

/// One read of one group: cumulative counts since the group was enabled,
/// scaled for multiplexing.
///
/// A field is `None` if the event is not in this group, did not open, or the
/// group was enabled but never ran (`time_running == 0 < time_enabled`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CounterSample {
    /// Nanoseconds the group was enabled.
    pub time_enabled_ns: u64,
    /// Nanoseconds the group was on the PMU (equal to enabled unless
    /// multiplexed).
    pub time_running_ns: u64,
    /// Retired instructions.
    pub instructions: Option<u64>,
    /// CPU cycles.
    pub cycles: Option<u64>,
    /// Last-level-cache misses.
    pub llc_misses: Option<u64>,
    /// Task-clock, nanoseconds.
    pub task_clock_ns: Option<u64>,
    /// Context switches.
    pub context_switches: Option<u64>,
    /// CPU migrations.
    pub cpu_migrations: Option<u64>,
}

impl CounterSample {
    /// The field of `kind`.
    pub fn get(&self, kind: CounterKind) -> Option<u64> {
        match kind {
            CounterKind::Instructions => self.instructions,
            CounterKind::Cycles => self.cycles,
            CounterKind::LlcMisses => self.llc_misses,
            CounterKind::TaskClock => self.task_clock_ns,
            CounterKind::ContextSwitches => self.context_switches,
            CounterKind::CpuMigrations => self.cpu_migrations,
        }
    }

    /// Sets the field of `kind`.
    pub fn set(&mut self, kind: CounterKind, value: Option<u64>) {
        *match kind {
            CounterKind::Instructions => &mut self.instructions,
            CounterKind::Cycles => &mut self.cycles,
            CounterKind::LlcMisses => &mut self.llc_misses,
            CounterKind::TaskClock => &mut self.task_clock_ns,
            CounterKind::ContextSwitches => &mut self.context_switches,
            CounterKind::CpuMigrations => &mut self.cpu_migrations,
        } = value;
    }
}

/// Opens and reads counter groups; real ([`PerfCounters`]) or fake
/// ([`FakeCounters`]).
pub trait CounterSource: Send {
    /// Opens and enables the `kind` group on `target`. Succeeds if at least
    /// one event of the group opened; otherwise the error of the first.
    fn open(&mut self, target: Target, kind: GroupKind) -> Result<Opened, PerfError>;
    /// Reads a group's cumulative values in one read.
    fn read(&mut self, group: GroupHandle) -> Result<CounterSample, PerfError>;
    /// Closes a group; unknown handles are ignored.
    fn close(&mut self, group: GroupHandle);
}

const READ_FORMAT: u64 = (bindings::PERF_FORMAT_GROUP
    | bindings::PERF_FORMAT_ID
    | bindings::PERF_FORMAT_TOTAL_TIME_ENABLED
    | bindings::PERF_FORMAT_TOTAL_TIME_RUNNING) as u64;

/// One open group.
#[derive(Debug)]
struct Group {
    target: Target,
    kind: GroupKind,
    /// Read from here; the whole group comes back.
    leader: File,
    /// Kept open for the group's life; closed on drop.
    _members: Vec<OwnedFd>,
    /// Kernel id of each event that opened.
    ids: Vec<(CounterKind, u64)>,
    /// Read buffer sized for the group.
    buf: Vec<u8>,
}

/// Counters from the kernel's `perf_event_open`. File descriptors are closed
/// when a group is closed or this is dropped.
#[derive(Debug, Default)]
pub struct PerfCounters {
    groups: Vec<Option<Group>>,
}

impl PerfCounters {
    /// No groups open yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens a group of `specs` (each event with its encodings, best first),
    /// retrying a refused per-thread group as user-space only, and files it.
    fn open_specs(
        &mut self,
        target: Target,
        kind: GroupKind,
        specs: &[EventSpec],
    ) -> Result<Opened, PerfError> {
        let (group, missing, user_only) = match open_group(target, kind, specs, false) {
            Ok((g, m)) => (g, m, false),
            Err(e)
                if e.class() == Some(OpenClass::NotPermitted)
                    && matches!(target, Target::Thread(_)) =>
            {
                // perf_event_paranoid 2 allows user-space-only counting. If
                // the retry fails for another reason (no PMU), that reason
                // is the one that matters; a second refusal keeps the first.
                let (g, m) = open_group(target, kind, specs, true).map_err(|retry| {
                    if retry.class() == Some(OpenClass::NotPermitted) {
                        e
                    } else {
                        retry
                    }
                })?;
                (g, m, true)
            }
            Err(e) => return Err(e),
        };
        let counting = group.ids.iter().map(|&(k, _)| k).collect();
        let slot = match self.groups.iter().position(Option::is_none) {
            Some(i) => {
                self.groups[i] = Some(group);
                i
            }
            None => {
                self.groups.push(Some(group));
                self.groups.len() - 1
            }
        };
        Ok(Opened {
            handle: GroupHandle(slot),
            counting,
            missing,
            user_only,
        })
    }
}

/// An event and its `(type, config)` encodings, best first.
type EventSpec = (CounterKind, &'static [(u32, u64)]);

/// Opens one group: the first event that opens leads, the others join it;
/// an event none of whose encodings opens is left out. Fails only if no
/// event opens, with the first event's error.
fn open_group(
    target: Target,
    kind: GroupKind,
    specs: &[EventSpec],
    user_only: bool,
) -> Result<(Group, Vec<(CounterKind, OpenClass)>), PerfError> {
    let mut leader: Option<OwnedFd> = None;
    let mut members = Vec::new();
    let mut opened = Vec::new();
    let mut missing = Vec::new();
    let mut first_err = None;
    for &(counter, encodings) in specs {
        let mut err = None;
        for &(type_, config) in encodings {
            match open_event(
                type_,
                config,
                target,
                leader.as_ref().map(|l| l.as_fd()),
                user_only,
            ) {
                Ok(fd) => {
                    opened.push((counter, fd.as_raw_fd()));
                    match leader {
                        None => leader = Some(fd),
                        Some(_) => members.push(fd),
                    }
                    err = None;
                    break;
                }
                Err(e) => err = Some(e),
            }
        }
        if let Some(source) = err {
            let class = classify(source.raw_os_error().unwrap_or(0));
            missing.push((counter, class));
            first_err.get_or_insert(PerfError::Open {
                event: counter,
                target,
                class,
                source,
            });
        }
    }
    let Some(leader) = leader else {
        return Err(first_err.expect("a group has at least one event"));
    };
    let ioctl_err = |op, source| PerfError::Ioctl {
        op,
        kind,
        target,
        source,
    };
    let mut ids = Vec::with_capacity(opened.len());
    for (counter, fd) in opened {
        let mut id = 0u64;
        // SAFETY: fd is a perf event fd owned by `leader` or `members`,
        // both alive here; the ioctl writes one u64 to `id`, which
        // outlives the call.
        let rc = unsafe { sys::ioctls::ID(fd, &mut id) };
        if rc < 0 {
            return Err(ioctl_err("PERF_EVENT_IOC_ID", io::Error::last_os_error()));
        }
        ids.push((counter, id));
    }
    // SAFETY: `leader` is an open perf event fd; ENABLE takes a flags
    // integer and touches no user memory.
    let rc = unsafe { sys::ioctls::ENABLE(leader.as_raw_fd(), bindings::PERF_IOC_FLAG_GROUP) };
    if rc < 0 {
        return Err(ioctl_err(
            "PERF_EVENT_IOC_ENABLE",
            io::Error::last_os_error(),
        ));
    }
    let words = 3 + 2 * ids.len();
    let group = Group {
        target,
        kind,
        leader: File::from(leader),
        _members: members,
        ids,
        buf: vec![0; words * 8],
    };
    Ok((group, missing))
}

/// One `perf_event_open` call for a counting (non-sampling) event.
#[allow(
    clippy::cast_possible_truncation,
    reason = "perf_event_attr is a few hundred bytes"
)]
fn open_event(
    type_: u32,
    config: u64,
    target: Target,
    group: Option<BorrowedFd<'_>>,
    user_only: bool,
) -> io::Result<OwnedFd> {
    let mut attr = bindings::perf_event_attr {
        type_,
        size: std::mem::size_of::<bindings::perf_event_attr>() as u32,
        config,
        read_format: READ_FORMAT,
        ..Default::default()
    };
    // Only the leader starts disabled; members follow it (see "Groups").
    attr.set_disabled(u64::from(group.is_none()));
    attr.set_inherit(0);
    attr.set_exclude_kernel(u64::from(user_only));
    // The hypervisor's share of a guest's time is not the stage's work.
    attr.set_exclude_hv(u64::from(type_ != bindings::PERF_TYPE_SOFTWARE));
    let (pid, cpu) = target.pid_cpu();
    let group_fd = group.map_or(-1, |g| g.as_raw_fd());
    // SAFETY: `attr` is a fully initialised perf_event_attr (zeroed by
    // Default, then set) that lives across the call; the kernel may write
    // `size` back into it, which `&mut` allows. It asks for a counting event
    // with no sampling or mmap, so the kernel writes to no other user memory.
    // `group_fd` is -1 or a perf fd borrowed for the call.
    let fd = unsafe {
        sys::perf_event_open(
            &mut attr,
            pid,
            cpu,
            group_fd,
            libc::c_ulong::from(bindings::PERF_FLAG_FD_CLOEXEC),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned `fd` as a new descriptor; nothing
    // else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl CounterSource for PerfCounters {
    fn open(&mut self, target: Target, kind: GroupKind) -> Result<Opened, PerfError> {
        let specs: Vec<EventSpec> = kind
            .counters()
            .iter()
            .map(|&c| (c, c.encodings()))
            .collect();
        self.open_specs(target, kind, &specs)
    }

    fn read(&mut self, handle: GroupHandle) -> Result<CounterSample, PerfError> {
        let Some(Some(g)) = self.groups.get_mut(handle.0) else {
            return Err(PerfError::UnknownHandle(handle));
        };
        let (kind, target) = (g.kind, g.target);
        let n = (&g.leader)
            .read(&mut g.buf)
            .map_err(|source| PerfError::Read {
                kind,
                target,
                source,
            })?;
        let layout = |detail| PerfError::Layout {
            kind,
            target,
            detail,
        };
        if n != g.buf.len() {
            return Err(layout(format!("read {n} bytes, want {}", g.buf.len())));
        }
        let words: Vec<u64> = g
            .buf
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().expect("chunks of 8")))
            .collect();
        let read = parse_group_read(&words).map_err(layout)?;
        to_sample(&read, &g.ids).map_err(layout)
    }

    fn close(&mut self, handle: GroupHandle) {
        if let Some(slot) = self.groups.get_mut(handle.0) {
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::mpsc;

    use crate::thread::gettid;

    /// Tests that open perf fds run one at a time, so fd numbers and CPU 0's
    /// counts are not disturbed by each other.
    static SERIAL: Mutex<()> = Mutex::new(());

    pub(super) fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|e| e.into_inner())
    }

    enum Cmd {
        PingPong(u32),
        Exit,
    }

    /// A thread that blocks on command, for context switches to count.
    struct Worker {
        tid: i32,
        cmd: mpsc::Sender<Cmd>,
        done: mpsc::Receiver<u64>,
        ping: mpsc::SyncSender<()>,
        pong: mpsc::Receiver<()>,
        join: Option<std::thread::JoinHandle<()>>,
    }

    impl Worker {
        fn spawn() -> Worker {
            let (cmd_tx, cmd_rx) = mpsc::channel();
            let (done_tx, done_rx) = mpsc::channel();
            let (ping_tx, ping_rx) = mpsc::sync_channel::<()>(0);
            let (pong_tx, pong_rx) = mpsc::sync_channel::<()>(0);
            let (tid_tx, tid_rx) = mpsc::channel();
            let join = std::thread::spawn(move || {
                tid_tx.send(gettid()).unwrap();
                for cmd in cmd_rx {
                    let used = match cmd {
                        Cmd::PingPong(n) => {
                            for _ in 0..n {
                                ping_rx.recv().unwrap();
                                pong_tx.send(()).unwrap();
                            }
                            0
                        }
                        Cmd::Exit => break,
                    };
                    done_tx.send(used).unwrap();
                }
            });
            Worker {
                tid: tid_rx.recv().unwrap(),
                cmd: cmd_tx,
                done: done_rx,
                ping: ping_tx,
                pong: pong_rx,
                join: Some(join),
            }
        }

        /// `n` round trips in which the worker blocks on `recv` each time.
        fn ping_pong(&self, n: u32) {
            self.cmd.send(Cmd::PingPong(n)).unwrap();
            for _ in 0..n {
                self.ping.send(()).unwrap();
                self.pong.recv().unwrap();
            }
            self.done.recv().unwrap();
        }
    }

    impl Drop for Worker {
        fn drop(&mut self) {
            let _ = self.cmd.send(Cmd::Exit);
            if let Some(j) = self.join.take() {
                let _ = j.join();
            }
        }
    }

    #[test]
    fn errnos_are_classified() {
        let table = [
            (libc::ENOENT, OpenClass::Unsupported),
            (libc::EOPNOTSUPP, OpenClass::Unsupported),
            (libc::ENODEV, OpenClass::Unsupported),
            (libc::EACCES, OpenClass::NotPermitted),
            (libc::EPERM, OpenClass::NotPermitted),
            (libc::EINVAL, OpenClass::Other(libc::EINVAL)),
            (libc::EMFILE, OpenClass::Other(libc::EMFILE)),
            (libc::ESRCH, OpenClass::Other(libc::ESRCH)),
            (libc::ENOSYS, OpenClass::Other(libc::ENOSYS)),
        ];
        for (errno, want) in table {
            assert_eq!(classify(errno), want, "errno {errno}");
            // The representative errno maps back to the same class.
            assert_eq!(classify(want.errno()), want);
        }
    }

    #[test]
    fn fallbacks_and_missing_members_leave_the_rest_counting() {
        // The hardware group's logic, driven with software events: an event
        // whose first encoding fails opens with its second, an event with
        // no working encoding is left out, and the first event that opens
        // leads.
        const SW: u32 = bindings::PERF_TYPE_SOFTWARE;
        const BOGUS: u64 = 9999; // >= PERF_COUNT_SW_MAX: ENOENT
        const CS: u64 = bindings::PERF_COUNT_SW_CONTEXT_SWITCHES as u64;
        const MIGR: u64 = bindings::PERF_COUNT_SW_CPU_MIGRATIONS as u64;
        let specs: [EventSpec; 3] = [
            (CounterKind::TaskClock, &[(SW, BOGUS)]),
            (CounterKind::ContextSwitches, &[(SW, BOGUS), (SW, CS)]),
            (CounterKind::CpuMigrations, &[(SW, MIGR)]),
        ];
        let _s = serial();
        let w = Worker::spawn();
        let mut pc = PerfCounters::new();
        let opened = pc
            .open_specs(Target::Thread(w.tid), GroupKind::Software, &specs)
            .unwrap();
        assert_eq!(
            opened.counting,
            [CounterKind::ContextSwitches, CounterKind::CpuMigrations]
        );
        assert_eq!(
            opened.missing,
            [(CounterKind::TaskClock, OpenClass::Unsupported)]
        );
        w.ping_pong(3);
        let s = pc.read(opened.handle).unwrap();
        assert_eq!(s.task_clock_ns, None, "{s:?}");
        assert!(s.context_switches.unwrap() >= 1, "{s:?}");
        assert!(s.cpu_migrations.is_some(), "{s:?}");

        // Nothing opens: the first event's error, classified.
        let err = pc
            .open_specs(Target::Thread(w.tid), GroupKind::Software, &specs[..1])
            .unwrap_err();
        assert!(
            matches!(
                err,
                PerfError::Open {
                    event: CounterKind::TaskClock,
                    class: OpenClass::Unsupported,
                    ..
                }
            ),
            "{err}"
        );
    }
}
