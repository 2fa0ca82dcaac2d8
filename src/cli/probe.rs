//! `odin probe`: what this machine offers odin, one check per line.
//!
//! A report, not a gate: every check ends `ok`, `degraded` (odin runs, with
//! less to go on) or `missing` (a feature is unavailable), with the reason
//! and the fix when not `ok`, and the command exits 0 either way.
//!
//! The checks are computed by [`checks`] from a root directory and a
//! [`CounterSource`], so tests run them on fake `/proc` and `/sys` trees
//! with [`FakeCounters`](odin::monitor::perf::FakeCounters). Two checks act
//! on the real machine whatever the root: the counter opens (through the
//! source) and the affinity check (through an [`Affinity`]).

use std::io;
use std::path::{Path, PathBuf};

use anyhow::Result;
use nix::errno::Errno;
use nix::unistd::{AccessFlags, access};
use serde::Serialize;

use odin::cgroup::{Layout, Version};
use odin::cpulist::CpuSet;
use odin::monitor::perf::{
    Capabilities, CounterSource, CounterSupport, GroupKind, OpenClass, Opened, Permissions, Target,
    summarize,
};
use odin::monitor::procfs::ProcReader;
use odin::pipeline::affinity::{Affinity, SchedAffinity};
use odin::thread::gettid;
use odin::topology;

/// Checks what this machine offers odin: performance counters and their
/// permissions, schedstat, PSI, cgroups, CPU affinity, the CPU topology and
/// other daemons that move threads or cgroups. Prints one line per check
/// with its status (ok, degraded, missing) and, when not ok, the reason and
/// the fix. Always exits 0: it is a report, not a gate.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print `{"checks": [{"name", "status", "detail", "reason", "fix"}, ...]}`
    /// instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let mut counters = odin::monitor::perf::PerfCounters::new();
    let checks = checks(Path::new("/"), &mut counters);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Report { checks: &checks })?
        );
    } else {
        for c in &checks {
            println!("{}", c.line());
        }
    }
    Ok(())
}

/// How far a check is from what odin wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Everything odin uses is there.
    Ok,
    /// odin runs, with less to go on.
    Degraded,
    /// The feature is unavailable.
    Missing,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Degraded => "degraded",
            Status::Missing => "missing",
        }
    }
}

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable identifier (`hw_counters`, `psi`, ...).
    pub name: &'static str,
    /// The verdict.
    pub status: Status,
    /// What was found, whatever the status.
    pub detail: String,
    /// Why it is not ok; `None` when ok.
    pub reason: Option<String>,
    /// What would make it ok; `None` when ok.
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Check {
            name,
            status: Status::Ok,
            detail: detail.into(),
            reason: None,
            fix: None,
        }
    }

    fn not_ok(
        name: &'static str,
        status: Status,
        detail: impl Into<String>,
        reason: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Check {
            name,
            status,
            detail: detail.into(),
            reason: Some(reason.into()),
            fix: Some(fix.into()),
        }
    }

    /// One line: name, status, detail, then reason and fix when not ok.
    fn line(&self) -> String {
        let mut line = format!(
            "{:<16} {:<8} {}",
            self.name,
            self.status.as_str(),
            self.detail
        );
        if let Some(reason) = &self.reason {
            line.push_str(&format!(" | reason: {reason}"));
        }
        if let Some(fix) = &self.fix {
            line.push_str(&format!(" | fix: {fix}"));
        }
        line
    }
}

#[derive(Serialize)]
struct Report<'a> {
    checks: &'a [Check],
}

/// Runs every check on the machine under `root`, opening counters through
/// `counters` and pinning threads with the kernel's affinity calls.
pub fn checks(root: &Path, counters: &mut dyn CounterSource) -> Vec<Check> {
    checks_with(root, counters, &SchedAffinity)
}

/// [`checks`] with the affinity calls behind `affinity`.
fn checks_with(
    root: &Path,
    counters: &mut dyn CounterSource,
    affinity: &dyn Affinity,
) -> Vec<Check> {
    let topo = topology::read_topology(root);
    let online = match &topo {
        Ok(t) => Some(t.online()),
        Err(_) => topology::online_cpus(root).ok(),
    };
    let perms = Permissions::read(root);
    let (hw, sw) = counter_checks(counters, &perms);
    vec![
        cpus_check(&topo),
        hw,
        sw,
        perf_permissions_check(counters, &perms, online.as_ref()),
        schedstat_check(root),
        psi_check(root),
        cgroup_check(root),
        affinity_check(root, affinity, online.as_ref()),
        other_daemons_check(root),
    ]
}

/// Opens (then closes) `kind` on the calling thread.
fn try_open(
    counters: &mut dyn CounterSource,
    target: Target,
    kind: GroupKind,
) -> Result<Opened, OpenClass> {
    match counters.open(target, kind) {
        Ok(opened) => {
            counters.close(opened.handle);
            Ok(opened)
        }
        Err(e) => Err(e.class().unwrap_or(OpenClass::Other(0))),
    }
}

/// What an opened group counts, and what it could not.
fn counting(opened: &Opened) -> String {
    let names: Vec<&str> = opened.counting.iter().map(|k| k.name()).collect();
    let mut s = names.join(", ");
    if !opened.missing.is_empty() {
        let missing: Vec<String> = opened
            .missing
            .iter()
            .map(|(k, class)| format!("{} ({class})", k.name()))
            .collect();
        s.push_str(&format!("; not counting {}", missing.join(", ")));
    }
    if opened.user_only {
        s.push_str("; user space only");
    }
    s
}

const GRANT: &str = "sysctl kernel.perf_event_paranoid=1 (or lower), or grant CAP_PERFMON \
                     (systemd: AmbientCapabilities=CAP_PERFMON)";

/// `hw_counters` and `sw_counters`: open each group on this thread.
fn counter_checks(counters: &mut dyn CounterSource, perms: &Permissions) -> (Check, Check) {
    let me = Target::Thread(gettid());
    let hw = match try_open(counters, me, GroupKind::Hardware) {
        Ok(opened) if opened.missing.is_empty() => {
            Check::ok("hw_counters", format!("per thread: {}", counting(&opened)))
        }
        Ok(opened) => Check::not_ok(
            "hw_counters",
            Status::Degraded,
            format!("per thread: {}", counting(&opened)),
            "the PMU cannot count some of odin's events; the others count",
            "none needed: odin derives what it can from the events that count",
        ),
        Err(class) => {
            let (reason, fix) = explain(GroupKind::Hardware, class, perms);
            Check::not_ok(
                "hw_counters",
                Status::Degraded,
                "no instructions, cycles or LLC misses, so no IPC or MPKI",
                format!(
                    "{reason}; odin runs on the other signals \
                     (software counters, schedstat, PSI, stage times)"
                ),
                fix,
            )
        }
    };
    let sw = match try_open(counters, me, GroupKind::Software) {
        Ok(opened) if opened.user_only => Check::not_ok(
            "sw_counters",
            Status::Degraded,
            format!("per thread: {}", counting(&opened)),
            format!(
                "{}: counting user space only, so context switches read 0",
                paranoid_text(perms)
            ),
            GRANT,
        ),
        Ok(opened) if opened.missing.is_empty() => {
            Check::ok("sw_counters", format!("per thread: {}", counting(&opened)))
        }
        Ok(opened) => Check::not_ok(
            "sw_counters",
            Status::Degraded,
            format!("per thread: {}", counting(&opened)),
            "the kernel cannot count some software events",
            "use a kernel built with CONFIG_PERF_EVENTS=y",
        ),
        Err(class) => {
            let (reason, fix) = explain(GroupKind::Software, class, perms);
            Check::not_ok(
                "sw_counters",
                Status::Degraded,
                "no task-clock, context switches or migrations",
                format!("{reason}; odin runs on schedstat, PSI and stage times"),
                fix,
            )
        }
    };
    (hw, sw)
}

/// Reason and fix for a failed open of a `kind` group, as
/// [`summarize`] words them.
fn explain(kind: GroupKind, class: OpenClass, perms: &Permissions) -> (String, String) {
    let other = match kind {
        GroupKind::Hardware => Ok(()),
        GroupKind::Software => Err(class),
    };
    match (kind, class, summarize(Err(class), other, perms)) {
        // summarize words an unsupported pair as the hardware PMU's absence.
        (GroupKind::Software, OpenClass::Unsupported, _) => (
            "the kernel has no software perf events".into(),
            "use a kernel built with CONFIG_PERF_EVENTS=y".into(),
        ),
        (
            _,
            _,
            CounterSupport::SoftwareOnly { reason, fix } | CounterSupport::None { reason, fix },
        ) => (reason, fix),
        (_, _, CounterSupport::Hardware) => (
            format!("perf_event_open failed ({class})"),
            "see the kernel log (dmesg)".into(),
        ),
    }
}

/// `perf_event_paranoid is N` or that it could not be read.
fn paranoid_text(perms: &Permissions) -> String {
    match perms.paranoid {
        Some(p) => format!("perf_event_paranoid is {p}"),
        None => "perf_event_paranoid is unreadable".into(),
    }
}

/// `perf_permissions`: the paranoid level, `CAP_PERFMON`, and whether a
/// CPU-wide software group opens (what odin uses to see other programs on
/// its CPUs).
fn perf_permissions_check(
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

/// `cpus`: online CPUs, packages, cores and last-level caches.
fn cpus_check(topo: &Result<topology::Topology, topology::TopologyError>) -> Check {
    let t = match topo {
        Ok(t) => t,
        Err(e) => {
            return Check::not_ok(
                "cpus",
                Status::Missing,
                "no CPU list",
                e.to_string(),
                "mount sysfs at /sys (mount -t sysfs sysfs /sys)",
            );
        }
    };
    let online = t.online();
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let mut detail = format!("{}: {online}", plural(online.len(), "CPU"));
    let packages = t.packages().len();
    if packages > 0 {
        detail.push_str(&format!(", {}", plural(packages, "package")));
    }
    let cores = t.cores();
    if cores > 0 {
        detail.push_str(&format!(", {}", plural(cores, "core")));
    }
    let llcs = t.llc_domains();
    let lists: Vec<String> = llcs.iter().map(ToString::to_string).collect();
    match llcs.len() {
        0 => {}
        1 => detail.push_str(&format!(", LLC shared by {}", lists[0])),
        n => detail.push_str(&format!(", {n} LLCs: {}", lists.join("; "))),
    }
    let blind = t.without_llc();
    if blind.is_empty() {
        Check::ok("cpus", detail)
    } else {
        Check::not_ok(
            "cpus",
            Status::Degraded,
            detail,
            format!(
                "no cache information for CPU {blind} under /sys/devices/system/cpu/cpuN/cache: \
                 odin cannot tell which CPUs share a last-level cache"
            ),
            "expose the cache topology to the guest (QEMU: -cpu host,host-cache-info=on \
             or -cpu ...,l3-cache=on)",
        )
    }
}

/// `schedstat`: the calling thread's `/proc/<pid>/task/<tid>/schedstat`.
fn schedstat_check(root: &Path) -> Check {
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

/// `psi`: `/proc/pressure/cpu`.
fn psi_check(root: &Path) -> Check {
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

/// `path` as seen on the machine: with `root` replaced by `/`.
fn shown(root: &Path, path: &Path) -> PathBuf {
    Path::new("/").join(path.strip_prefix(root).unwrap_or(path))
}

/// `cgroup`: version, and where the `cpu` and `cpuset` controllers are
/// mounted and whether odin may write there.
fn cgroup_check(root: &Path) -> Check {
    let layout = match Layout::detect(root) {
        Ok(l) => l,
        Err(e) => {
            return Check::not_ok(
                "cgroup",
                Status::Missing,
                "cgroup layout unknown",
                e.to_string(),
                "mount procfs at /proc",
            );
        }
    };
    let version = match layout.version() {
        Version::V2 => "v2",
        Version::V1 => "v1",
        Version::Hybrid => "hybrid (v1 controllers and v2)",
        Version::None => {
            return Check::not_ok(
                "cgroup",
                Status::Missing,
                "no cgroup file system mounted",
                "no cgroup file system is mounted: odin cannot confine other programs",
                "mount cgroup2 (mount -t cgroup2 none /sys/fs/cgroup)",
            );
        }
    };
    let mut parts = vec![match &layout.v2 {
        Some((mount, _)) => format!("{version}, v2 at {}", shown(root, mount).display()),
        None => version.to_string(),
    }];
    let mut reasons = Vec::new();
    let mut fixes = Vec::new();
    for ctrl in ["cpu", "cpuset"] {
        let Some((mount, v2)) = layout.controller(ctrl) else {
            parts.push(format!("{ctrl}: absent"));
            reasons.push(format!("no {ctrl} controller"));
            fixes.push(if layout.v2.is_some() {
                format!(
                    "enable it on v2 (echo +{ctrl} > /sys/fs/cgroup/cgroup.subtree_control) \
                     or mount it on v1"
                )
            } else {
                format!("mount it (mount -t cgroup -o {ctrl} cgroup /sys/fs/cgroup/{ctrl})")
            });
            continue;
        };
        let at = shown(root, mount);
        let v = if v2 { "v2" } else { "v1" };
        match access(mount, AccessFlags::W_OK) {
            Ok(()) => parts.push(format!("{ctrl}: {v} at {}, writable", at.display())),
            Err(e) => {
                parts.push(format!("{ctrl}: {v} at {}, not writable", at.display()));
                if e == Errno::EROFS {
                    reasons.push(format!("{} is mounted read-only", at.display()));
                    fixes.push(
                        "mount it read-write (a container needs a writable cgroup \
                                mount, e.g. docker --cgroupns=private on v2)"
                            .to_string(),
                    );
                } else {
                    // SAFETY: geteuid has no preconditions and cannot fail.
                    let uid = unsafe { libc::geteuid() };
                    reasons.push(format!(
                        "{} is not writable by uid {uid}: {}",
                        at.display(),
                        io::Error::from(e)
                    ));
                    fixes.push(
                        "run odin as root or delegate a cgroup subtree to it \
                                (systemd: Delegate=yes)"
                            .to_string(),
                    );
                }
            }
        }
    }
    let detail = parts.join("; ");
    if reasons.is_empty() {
        Check::ok("cgroup", detail)
    } else {
        fixes.dedup();
        Check::not_ok(
            "cgroup",
            Status::Degraded,
            detail,
            format!(
                "{}: odin cannot limit or move other programs' CPU use",
                reasons.join("; ")
            ),
            fixes.join("; "),
        )
    }
}

/// `CAP_SYS_NICE` (capability number 23).
const CAP_SYS_NICE: u32 = 23;

/// `affinity`: pin a short-lived thread to each online CPU and read it
/// back; and whether `CAP_SYS_NICE` is held.
fn affinity_check(root: &Path, affinity: &dyn Affinity, online: Option<&CpuSet>) -> Check {
    let Some(online) = online.filter(|o| !o.is_empty()) else {
        return Check::not_ok(
            "affinity",
            Status::Missing,
            "no online CPUs to pin to",
            "the online CPU list is unreadable",
            "mount sysfs at /sys",
        );
    };
    let allowed = affinity.get(0).ok();
    let mut pinned = Vec::new();
    let mut failed: Vec<(usize, String)> = Vec::new();
    std::thread::scope(|s| {
        for cpu in online.iter() {
            let want = CpuSet::single(cpu);
            let outcome = s
                .spawn(move || {
                    affinity.set(0, &want).map_err(|e| e.to_string())?;
                    let got = affinity.get(0).map_err(|e| e.to_string())?;
                    if got == want {
                        Ok(())
                    } else {
                        Err(format!("pinned to CPU {want}, read back {got}"))
                    }
                })
                .join()
                .unwrap_or_else(|_| Err("the probe thread panicked".into()));
            match outcome {
                Ok(()) => pinned.push(cpu),
                Err(e) => failed.push((cpu, e)),
            }
        }
    });
    let caps = odin::monitor::perf::read_capabilities(root).ok();
    let nice = caps.map(|c| c.has(CAP_SYS_NICE));
    let mut detail = if pinned.is_empty() {
        "pinned to no CPU".to_string()
    } else {
        format!(
            "pinned a thread to CPU {} and read it back",
            CpuSet::from_cpus(pinned.iter().copied())
        )
    };
    detail.push_str(match nice {
        Some(true) => ", CAP_SYS_NICE held",
        Some(false) => ", no CAP_SYS_NICE",
        None => ", CAP_SYS_NICE unknown",
    });
    if let Some((_, first)) = failed.first() {
        let failed_set = CpuSet::from_cpus(failed.iter().map(|(c, _)| *c));
        let outside = allowed
            .as_ref()
            .map(|a| failed_set.difference(a))
            .filter(|d| !d.is_empty());
        let (reason, fix) = match (&outside, &allowed) {
            (Some(out), Some(a)) => (
                format!(
                    "cannot pin to CPU {failed_set} ({first}): CPU {out} is outside the \
                     {a} this process may use (a cpuset or taskset restricts it)"
                ),
                "run odin where its cpuset includes the CPUs it should use \
                 (cgroup cpuset.cpus; docker --cpuset-cpus; taskset)",
            ),
            _ => (
                format!("cannot pin to CPU {failed_set}: {first}"),
                "allow sched_setaffinity (seccomp profile or security module) \
                 and check the cpuset of odin's cgroup",
            ),
        };
        let status = if pinned.is_empty() {
            Status::Missing
        } else {
            Status::Degraded
        };
        return Check::not_ok("affinity", status, detail, reason, fix);
    }
    if nice == Some(false) {
        return Check::not_ok(
            "affinity",
            Status::Degraded,
            detail,
            "no CAP_SYS_NICE: odin can pin its own threads but not move other users' \
             threads or raise priorities",
            "run odin as root or grant CAP_SYS_NICE (systemd: AmbientCapabilities=CAP_SYS_NICE)",
        );
    }
    Check::ok("affinity", detail)
}

/// A daemon that moves threads, interrupts or cgroups behind odin's back.
struct Daemon {
    /// Its `comm`.
    comm: &'static str,
    /// What it does to odin.
    does: &'static str,
    /// How to keep it off odin's CPUs.
    fix: &'static str,
}

const DAEMONS: &[Daemon] = &[
    Daemon {
        comm: "irqbalance",
        does: "moves interrupts between CPUs",
        fix: "set IRQBALANCE_BANNED_CPULIST=<odin's CPUs> in /etc/default/irqbalance \
              (or /etc/sysconfig/irqbalance), or stop irqbalance",
    },
    Daemon {
        comm: "tuned",
        does: "its profiles can re-pin threads and isolate CPUs",
        fix: "use a tuned profile without a [scheduler] plugin touching odin's CPUs, \
              or stop tuned",
    },
    Daemon {
        comm: "numad",
        does: "moves processes between NUMA nodes by rewriting their cpusets",
        fix: "exclude odin (numad -x <pid>) or stop numad",
    },
    Daemon {
        comm: "systemd-oomd",
        does: "kills whole cgroups under memory pressure",
        fix: "set ManagedOOMPreference=avoid on odin's unit",
    },
    Daemon {
        comm: "cgrulesengd",
        does: "moves processes into cgroups by /etc/cgrules.conf",
        fix: "add no rule matching odin or its antagonists, or stop cgred",
    },
    Daemon {
        comm: "ananicy",
        does: "renices processes and moves them into cgroups by rules",
        fix: "add no rule matching odin, or stop ananicy",
    },
    Daemon {
        comm: "ananicy-cpp",
        does: "renices processes and moves them into cgroups by rules",
        fix: "add no rule matching odin, or stop ananicy-cpp",
    },
];

/// `other_daemons`: a sched_ext scheduler, and the [`DAEMONS`] found in
/// `/proc/*/comm`.
fn other_daemons_check(root: &Path) -> Check {
    let read = |rel: &str| {
        std::fs::read_to_string(root.join(rel))
            .ok()
            .map(|s| s.trim().to_string())
    };
    let mut found = Vec::new();
    let mut reasons = Vec::new();
    let mut fixes = Vec::new();
    if read("sys/kernel/sched_ext/state").as_deref() == Some("enabled") {
        let ops = read("sys/kernel/sched_ext/root/ops")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unnamed".into());
        found.push(format!("sched_ext scheduler {ops}"));
        reasons.push(format!(
            "the sched_ext scheduler {ops} replaces the kernel's fair scheduler: \
             placement and run delay follow its policy"
        ));
        fixes.push(
            "stop the sched_ext scheduler (e.g. systemctl stop scx, or end its scx_* loader) \
             to compare"
                .to_string(),
        );
    }
    let pids = match ProcReader::with_root(root).pids() {
        Ok(p) => p,
        Err(e) => {
            return Check::not_ok(
                "other_daemons",
                Status::Degraded,
                found.join(", "),
                format!("cannot list processes: {e}"),
                "mount procfs at /proc",
            );
        }
    };
    let mut running: Vec<(&Daemon, Vec<i32>)> = Vec::new();
    for pid in pids {
        let Some(comm) = read(&format!("proc/{pid}/comm")) else {
            continue;
        };
        let Some(d) = DAEMONS.iter().find(|d| d.comm == comm) else {
            continue;
        };
        match running.iter_mut().find(|(r, _)| r.comm == d.comm) {
            Some((_, pids)) => pids.push(pid),
            None => running.push((d, vec![pid])),
        }
    }
    for (d, pids) in &running {
        let pids: Vec<String> = pids.iter().map(ToString::to_string).collect();
        let s = if pids.len() == 1 { "" } else { "s" };
        found.push(format!("{} (pid{s} {})", d.comm, pids.join(", ")));
        reasons.push(format!("{} {}", d.comm, d.does));
        fixes.push(d.fix.to_string());
    }
    if found.is_empty() {
        let names: Vec<&str> = DAEMONS.iter().map(|d| d.comm).collect();
        return Check::ok(
            "other_daemons",
            format!("none running (looked for sched_ext, {})", names.join(", ")),
        );
    }
    Check::not_ok(
        "other_daemons",
        Status::Degraded,
        found.join(", "),
        reasons.join("; "),
        fixes.join("; "),
    )
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use odin::monitor::perf::FakeCounters;
    use odin::pipeline::affinity::AffinityError;

    const NAMES: &[&str] = &[
        "cpus",
        "hw_counters",
        "sw_counters",
        "perf_permissions",
        "schedstat",
        "psi",
        "cgroup",
        "affinity",
        "other_daemons",
    ];

    /// A fake root with everything odin wants: 2 CPUs sharing an LLC, PSI,
    /// schedstat for the calling thread, cgroup v2 with cpu and cpuset,
    /// paranoid 2 and every capability.
    struct Tree(tempfile::TempDir);

    impl Tree {
        fn healthy() -> Self {
            let t = Tree(tempfile::tempdir().unwrap());
            t.write("sys/devices/system/cpu/online", "0-1\n");
            for cpu in 0..2 {
                let dir = format!("sys/devices/system/cpu/cpu{cpu}");
                t.write(&format!("{dir}/topology/physical_package_id"), "0\n");
                t.write(&format!("{dir}/topology/core_id"), &format!("{cpu}\n"));
                t.write(&format!("{dir}/cache/index0/level"), "1\n");
                t.write(
                    &format!("{dir}/cache/index0/shared_cpu_list"),
                    &format!("{cpu}\n"),
                );
                t.write(&format!("{dir}/cache/index3/level"), "3\n");
                t.write(&format!("{dir}/cache/index3/shared_cpu_list"), "0-1\n");
            }
            t.write("proc/sys/kernel/perf_event_paranoid", "2\n");
            t.status("000001ffffffffff");
            t.write(&Self::schedstat_rel(), "5000 200 3\n");
            t.write(
                "proc/pressure/cpu",
                "some avg10=1.50 avg60=0.50 avg300=0.10 total=12345\n\
                 full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
            );
            t.write(
                "proc/self/mountinfo",
                "25 1 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            );
            t.write("sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory\n");
            t.write("proc/1/comm", "systemd\n");
            t
        }

        fn path(&self) -> &Path {
            self.0.path()
        }

        fn write(&self, rel: &str, text: &str) {
            let p = self.0.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }

        fn remove(&self, rel: &str) {
            std::fs::remove_file(self.0.path().join(rel)).unwrap();
        }

        fn status(&self, capeff: &str) {
            self.write(
                "proc/self/status",
                &format!("Name:\todin\nCapEff:\t{capeff}\n"),
            );
        }

        fn schedstat_rel() -> String {
            format!("proc/{}/task/{}/schedstat", std::process::id(), gettid())
        }
    }

    thread_local! {
        static PINNED: RefCell<Option<CpuSet>> = const { RefCell::new(None) };
    }

    /// Pins (per thread) unless the CPU is refused.
    struct FakeAffinity {
        refuse: CpuSet,
    }

    impl Affinity for FakeAffinity {
        fn set(&self, tid: i32, cpus: &CpuSet) -> Result<(), AffinityError> {
            if !cpus.difference(&self.refuse).eq(cpus) {
                return Err(AffinityError::Sys {
                    op: "set",
                    tid,
                    cpus: cpus.to_string(),
                    source: nix::Error::EINVAL,
                });
            }
            PINNED.with(|p| *p.borrow_mut() = Some(cpus.clone()));
            Ok(())
        }

        fn get(&self, _tid: i32) -> Result<CpuSet, AffinityError> {
            Ok(PINNED
                .with(|p| p.borrow().clone())
                .unwrap_or_else(|| "0-1".parse().unwrap()))
        }
    }

    fn run(tree: &Tree, counters: &FakeCounters, refuse: &str) -> Vec<Check> {
        let refuse = if refuse.is_empty() {
            CpuSet::default()
        } else {
            refuse.parse().unwrap()
        };
        checks_with(tree.path(), &mut counters.clone(), &FakeAffinity { refuse })
    }

    fn get<'a>(checks: &'a [Check], name: &str) -> &'a Check {
        checks.iter().find(|c| c.name == name).unwrap()
    }

    /// Every name once; reason and fix present exactly when not ok.
    fn well_formed(checks: &[Check]) {
        let names: Vec<&str> = checks.iter().map(|c| c.name).collect();
        assert_eq!(names, NAMES);
        for c in checks {
            let ok = c.status == Status::Ok;
            assert_eq!(c.reason.is_none(), ok, "{c:?}");
            assert_eq!(c.fix.is_none(), ok, "{c:?}");
            assert!(!c.detail.is_empty(), "{c:?}");
            if !ok {
                assert!(!c.reason.as_ref().unwrap().is_empty(), "{c:?}");
                assert!(!c.fix.as_ref().unwrap().is_empty(), "{c:?}");
            }
            assert!(!c.line().contains('\n'), "{}", c.line());
        }
    }

    #[test]
    fn healthy_machine_is_all_ok() {
        let t = Tree::healthy();
        let checks = run(&t, &FakeCounters::new(), "");
        well_formed(&checks);
        for c in &checks {
            assert_eq!(c.status, Status::Ok, "{c:?}");
        }
        assert_eq!(
            get(&checks, "cpus").detail,
            "2 CPUs: 0-1, 1 package, 2 cores, LLC shared by 0-1"
        );
        let cg = &get(&checks, "cgroup").detail;
        assert!(
            cg.starts_with("v2, v2 at /sys/fs/cgroup;")
                && cg.contains("cpu: v2 at /sys/fs/cgroup, writable")
                && cg.contains("cpuset: v2 at /sys/fs/cgroup, writable"),
            "{cg}"
        );
        assert!(get(&checks, "psi").detail.contains("avg10=1.50%"));
        assert!(get(&checks, "affinity").detail.contains("CPU 0-1"));

        let json = serde_json::to_value(Report { checks: &checks }).unwrap();
        let first = &json["checks"][0];
        assert_eq!(first["name"], "cpus");
        assert_eq!(first["status"], "ok");
        assert!(first["reason"].is_null() && first["fix"].is_null());
    }

    #[test]
    fn no_pmu_degrades_hw_counters_only() {
        let t = Tree::healthy();
        let checks = run(&t, &FakeCounters::without_hardware(), "");
        well_formed(&checks);
        let hw = get(&checks, "hw_counters");
        assert_eq!(hw.status, Status::Degraded);
        let reason = hw.reason.as_deref().unwrap();
        assert!(
            reason.contains("virtual machine") && reason.contains("other signals"),
            "{reason}"
        );
        assert!(hw.fix.as_deref().unwrap().contains("pmu=on"), "{hw:?}");
        for c in checks.iter().filter(|c| c.name != "hw_counters") {
            assert_eq!(c.status, Status::Ok, "{c:?}");
        }
    }

    #[test]
    fn refused_counters_name_paranoid_and_cap_perfmon() {
        let t = Tree::healthy();
        t.status("0000000000000000");
        let fake = FakeCounters::without_hardware();
        fake.fail(GroupKind::Software, OpenClass::NotPermitted);
        let checks = run(&t, &fake, "");
        well_formed(&checks);
        let sw = get(&checks, "sw_counters");
        assert_eq!(sw.status, Status::Degraded);
        assert!(
            sw.reason
                .as_deref()
                .unwrap()
                .contains("perf_event_paranoid is 2"),
            "{sw:?}"
        );
        let perms = get(&checks, "perf_permissions");
        assert_eq!(perms.status, Status::Degraded);
        assert!(perms.detail.contains("no CAP_PERFMON"), "{perms:?}");
        assert!(perms.fix.as_deref().unwrap().contains("CAP_PERFMON"));
        // Without CAP_SYS_NICE too.
        assert_eq!(get(&checks, "affinity").status, Status::Degraded);
        // Every open was closed again.
        assert!(fake.open_groups().is_empty());
    }

    #[test]
    fn no_psi_file_is_missing_with_a_kernel_fix() {
        let t = Tree::healthy();
        t.remove("proc/pressure/cpu");
        let checks = run(&t, &FakeCounters::new(), "");
        well_formed(&checks);
        let psi = get(&checks, "psi");
        assert_eq!(psi.status, Status::Missing);
        let fix = psi.fix.as_deref().unwrap();
        assert!(
            fix.contains("4.20") && fix.contains("CONFIG_PSI") && fix.contains("psi=1"),
            "{fix}"
        );
    }

    #[test]
    fn missing_or_zero_schedstat_is_degraded() {
        let t = Tree::healthy();
        t.write(&Tree::schedstat_rel(), "0 0 0\n");
        let checks = run(&t, &FakeCounters::new(), "");
        let s = get(&checks, "schedstat");
        assert_eq!(s.status, Status::Degraded, "{s:?}");
        assert!(s.reason.as_deref().unwrap().contains("compiled out"));

        t.remove(&Tree::schedstat_rel());
        let checks = run(&t, &FakeCounters::new(), "");
        well_formed(&checks);
        let s = get(&checks, "schedstat");
        assert_eq!(s.status, Status::Degraded, "{s:?}");
        assert!(s.fix.as_deref().unwrap().contains("CONFIG_SCHED_INFO"));
    }

    #[test]
    fn sched_ext_and_irqbalance_are_listed() {
        let t = Tree::healthy();
        t.write("sys/kernel/sched_ext/state", "enabled\n");
        t.write("sys/kernel/sched_ext/root/ops", "rusty_1.0.4\n");
        t.write("proc/812/comm", "irqbalance\n");
        t.write("proc/900/comm", "irqbalancer\n"); // not the same name
        let checks = run(&t, &FakeCounters::new(), "");
        well_formed(&checks);
        let d = get(&checks, "other_daemons");
        assert_eq!(d.status, Status::Degraded);
        assert_eq!(
            d.detail,
            "sched_ext scheduler rusty_1.0.4, irqbalance (pid 812)"
        );
        let fix = d.fix.as_deref().unwrap();
        assert!(fix.contains("IRQBALANCE_BANNED_CPULIST") && fix.contains("scx"));

        // A loaded but disabled sched_ext is not listed.
        t.write("sys/kernel/sched_ext/state", "disabled\n");
        t.remove("proc/812/comm");
        let checks = run(&t, &FakeCounters::new(), "");
        assert_eq!(get(&checks, "other_daemons").status, Status::Ok);
    }

    #[test]
    fn affinity_refused_everywhere_is_missing() {
        let t = Tree::healthy();
        let checks = run(&t, &FakeCounters::new(), "0-1");
        well_formed(&checks);
        let a = get(&checks, "affinity");
        assert_eq!(a.status, Status::Missing, "{a:?}");
        assert!(a.reason.as_deref().unwrap().contains("CPU 0-1"), "{a:?}");

        let checks = run(&t, &FakeCounters::new(), "1");
        let a = get(&checks, "affinity");
        assert_eq!(a.status, Status::Degraded, "{a:?}");
        assert!(a.detail.contains("CPU 0 and read it back"), "{a:?}");
    }

    #[test]
    fn cgroup_gaps_are_reported() {
        let t = Tree::healthy();
        t.write("sys/fs/cgroup/cgroup.controllers", "cpu memory\n");
        let checks = run(&t, &FakeCounters::new(), "");
        well_formed(&checks);
        let c = get(&checks, "cgroup");
        assert_eq!(c.status, Status::Degraded);
        assert!(c.detail.contains("cpuset: absent"), "{c:?}");
        assert!(c.fix.as_deref().unwrap().contains("+cpuset"), "{c:?}");

        t.write(
            "proc/self/mountinfo",
            "22 1 8:1 / / rw - ext4 /dev/vda rw\n",
        );
        let checks = run(&t, &FakeCounters::new(), "");
        assert_eq!(get(&checks, "cgroup").status, Status::Missing);
    }

    #[test]
    fn missing_cache_topology_degrades_cpus() {
        let t = Tree::healthy();
        std::fs::remove_dir_all(t.path().join("sys/devices/system/cpu/cpu1/cache")).unwrap();
        let checks = run(&t, &FakeCounters::new(), "");
        let c = get(&checks, "cpus");
        assert_eq!(c.status, Status::Degraded, "{c:?}");
        assert!(c.reason.as_deref().unwrap().contains("CPU 1"), "{c:?}");

        t.remove("sys/devices/system/cpu/online");
        let checks = run(&t, &FakeCounters::new(), "");
        well_formed(&checks);
        assert_eq!(get(&checks, "cpus").status, Status::Missing);
        assert_eq!(get(&checks, "affinity").status, Status::Missing);
    }
}
