//! Who is taking CPU time from a PE: the foreign threads that ran on its
//! CPUs between two task snapshots, with their process, name and cgroup.
//!
//! Pure: it works on [`TaskSnapshot`]s from
//! [`ProcReader::walk_tasks`](super::procfs::ProcReader::walk_tasks).
//!
//! An antagonist is a process identity, not a pid: [`Antagonist::start`] is
//! its process's start time (the thread group leader's `starttime`, field
//! 22 of `stat`), read in the same snapshot that names it, so whoever acts
//! on it later can tell the process from another one that got its pid. A
//! thread whose leader is missing from the snapshot has no known identity
//! and is not reported.
//!
//! Not antagonists: odin's own process (the pipeline and the agent), PID 1,
//! kernel threads (`PF_KTHREAD`; ksoftirqd and kworkers are the kernel doing
//! work someone asked for, and cannot be throttled), any extra tids the caller
//! names, and threads below a minimum share (default 5% of one CPU).
//!
//! Limitation: a thread's CPU is `stat`'s "last CPU" at the later snapshot.
//! All its CPU time in the interval is attributed there, so a thread that
//! migrates between CPUs is counted where it was last seen (and may be missed
//! or misplaced). For pinned antagonists, the ones that hurt a pinned
//! pipeline most, the attribution is exact.

use std::collections::BTreeSet;
use std::time::Duration;

use super::derive::{foreign_cpu_use, task_cpu_deltas};
use super::sample::TaskSnapshot;
use crate::cpulist::CpuSet;
use crate::policy::Antagonist;

/// Which threads may be reported.
#[derive(Clone, Debug, PartialEq)]
pub struct AntagonistFilter {
    /// odin's own process id: none of its threads is foreign.
    pub own_pid: i32,
    /// Threads to ignore besides odin's, PID 1's and kernel threads.
    pub exclude_tids: BTreeSet<i32>,
    /// Smallest CPU share (of one CPU) worth reporting.
    pub min_share: f64,
}

impl AntagonistFilter {
    /// Default minimum share: 5% of one CPU.
    pub const DEFAULT_MIN_SHARE: f64 = 0.05;

    /// A filter for a process `own_pid`, with the default minimum share.
    pub fn new(own_pid: i32) -> Self {
        Self {
            own_pid,
            exclude_tids: BTreeSet::new(),
            min_share: Self::DEFAULT_MIN_SHARE,
        }
    }
}

impl Default for AntagonistFilter {
    /// A filter for the calling process.
    fn default() -> Self {
        Self::new(std::process::id() as i32)
    }
}

/// The foreign threads that used `pe` between `prev` and `cur`, `dt` apart,
/// largest share first (ties by tid). Empty for a zero `dt`.
///
/// Each is named by its process's start time (the leader's `stat` field
/// 22), its cgroup path where known, and its share: CPU time / wall time
/// over the interval (1.0 is a whole CPU).
pub fn find(
    prev: &TaskSnapshot,
    cur: &TaskSnapshot,
    dt: Duration,
    pe: &CpuSet,
    filter: &AntagonistFilter,
) -> Vec<Antagonist> {
    let exclude: BTreeSet<i32> = cur
        .tasks
        .values()
        .filter(|t| {
            let s = &t.stat;
            s.pid == filter.own_pid
                || s.pid == 1
                || s.is_kernel_thread()
                || filter.exclude_tids.contains(&s.tid)
        })
        .map(|t| t.stat.tid)
        .collect();
    let deltas = task_cpu_deltas(prev, cur);
    let Some(used) = foreign_cpu_use(&deltas, pe, &exclude, dt) else {
        return Vec::new();
    };
    used.tasks
        .into_iter()
        .filter(|f| f.share >= filter.min_share)
        .filter_map(|f| {
            let task = cur.tasks.get(&f.tid)?;
            let leader = cur.tasks.get(&f.pid).filter(|l| l.stat.pid == f.pid)?;
            Some(Antagonist {
                pid: f.pid,
                start: leader.stat.starttime,
                tid: f.tid,
                comm: task.stat.comm.clone(),
                cgroup: task.cgroup.as_ref().map(|c| c.path.clone()),
                cpu_share: f.share,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::process::{Child, Command};

    use super::*;
    use crate::monitor::procfs::ProcReader;
    use crate::monitor::sample::{CgroupVersion, PF_KTHREAD, Task, TaskCgroup, TaskStat};

    fn task(pid: i32, tid: i32, comm: &str, flags: u64, ticks: u64, cpu: usize) -> Task {
        Task {
            stat: TaskStat {
                pid,
                tid,
                comm: comm.into(),
                state: 'R',
                ppid: 1,
                pgrp: pid,
                flags,
                utime: ticks,
                stime: 0,
                children_ticks: 0,
                starttime: 1000 + tid as u64,
                last_cpu: cpu,
            },
            cgroup: Some(TaskCgroup {
                version: CgroupVersion::V2,
                path: format!("/{comm}"),
            }),
        }
    }

    fn snap(tasks: Vec<Task>) -> TaskSnapshot {
        TaskSnapshot {
            user_hz: 100,
            boot_ticks: Some(1000),
            tasks: tasks
                .into_iter()
                .map(|t| (t.stat.tid, t))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn finds_foreign_threads_and_skips_self_init_kthreads_and_noise() {
        const ME: i32 = 4242;
        // Each task: (pid, tid, comm, flags, ticks before, ticks after, cpu).
        let table: &[(i32, i32, &str, u64, u64, u64, usize)] = &[
            (ME, ME, "odin", 0, 0, 30, 2),                 // ourselves
            (ME, 4243, "stage-1", 0, 0, 30, 3),            // our pipeline thread
            (1, 1, "systemd", 0, 0, 20, 2),                // init
            (15, 15, "ksoftirqd/2", PF_KTHREAD, 0, 20, 2), // kernel thread
            (700, 700, "stress", 0, 100, 127, 2),          // 0.9 CPU on the PE
            (700, 701, "stress", 0, 0, 6, 3),              // 0.2 CPU on the PE
            (800, 800, "my (weird) proc", 0, 5, 11, 3),    // 0.2 CPU, tie with 701
            (900, 900, "quiet", 0, 0, 1, 2),               // 0.033 CPU: below 5%
            (950, 950, "elsewhere", 0, 0, 30, 0),          // not on the PE
            (960, 960, "extra", 0, 0, 30, 2),              // excluded by the caller
        ];
        let prev = snap(
            table
                .iter()
                .map(|r| task(r.0, r.1, r.2, r.3, r.4, r.6))
                .collect(),
        );
        let cur = snap(
            table
                .iter()
                .map(|r| task(r.0, r.1, r.2, r.3, r.5, r.6))
                .collect(),
        );
        let mut filter = AntagonistFilter::new(ME);
        filter.exclude_tids.insert(960);
        let pe = CpuSet::from_cpus([2, 3]);
        let got = find(&prev, &cur, Duration::from_millis(300), &pe, &filter);
        let summary = |got: &[Antagonist]| -> Vec<(i32, i32, String, f64)> {
            got.iter()
                .map(|a| {
                    (
                        a.pid,
                        a.tid,
                        a.comm.clone(),
                        (a.cpu_share * 1000.0).round() / 1000.0,
                    )
                })
                .collect()
        };
        assert_eq!(
            summary(&got),
            vec![
                (700, 700, "stress".into(), 0.9),
                (700, 701, "stress".into(), 0.2),
                (800, 800, "my (weird) proc".into(), 0.2),
            ]
        );
        assert_eq!(got[2].cgroup.as_deref(), Some("/my (weird) proc"));
        // Each thread is attributed to the CPU it was last seen on.
        let dt = Duration::from_millis(300);
        let on = |cpu| summary(&find(&prev, &cur, dt, &CpuSet::single(cpu), &filter));
        assert_eq!(on(2), vec![(700, 700, "stress".into(), 0.9)]);
        assert_eq!(
            on(3),
            vec![
                (700, 701, "stress".into(), 0.2),
                (800, 800, "my (weird) proc".into(), 0.2),
            ]
        );
        // Each names its process by the leader's start time, the thread's
        // own (1701) notwithstanding.
        let starts: Vec<(i32, u64)> = got.iter().map(|a| (a.tid, a.start)).collect();
        assert_eq!(starts, vec![(700, 1700), (701, 1700), (800, 1800)]);

        // A lower threshold lets "quiet" in; a zero dt finds nothing.
        filter.min_share = 0.0;
        assert_eq!(
            find(&prev, &cur, Duration::from_millis(300), &pe, &filter).len(),
            4
        );
        assert!(find(&prev, &cur, Duration::ZERO, &pe, &filter).is_empty());

        // A thread whose leader is not in the snapshot has no identity.
        let mut orphan = cur.clone();
        orphan.tasks.remove(&700);
        let got = find(&prev, &orphan, Duration::from_millis(300), &pe, &filter);
        assert!(got.iter().all(|a| a.pid != 700), "{got:#?}");
    }

    /// Kills and reaps the child when dropped, also when the test fails.
    struct KillOnDrop(Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// A `sh` busy loop pinned to `cpu` before it execs.
    ///
    /// The child also starts its own session and, best effort, raises that
    /// session's autogroup priority: with `CONFIG_SCHED_AUTOGROUP` the
    /// scheduler shares a CPU fairly between sessions first, so a plain
    /// `nice` cannot keep concurrent builds on a small machine from
    /// starving the loop below the share the test asserts. Without the
    /// privilege (or autogroup) the writes fail harmlessly.
    fn spin_on(cpu: usize) -> KillOnDrop {
        use std::os::unix::process::CommandExt;
        let autogroup = c"/proc/self/autogroup";
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "while :; do :; done"]);
        // SAFETY: the closure runs in the forked child before exec. It only
        // makes async-signal-safe system calls (sched_setaffinity, setsid,
        // setpriority, open, write, close) on a stack-allocated mask and
        // static strings; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::setsid();
                libc::setpriority(libc::PRIO_PROCESS, 0, -10);
                let fd = libc::open(autogroup.as_ptr(), libc::O_WRONLY);
                if fd >= 0 {
                    libc::write(fd, c"-10".as_ptr().cast(), 3);
                    libc::close(fd);
                }
                Ok(())
            });
        }
        KillOnDrop(cmd.spawn().expect("spawn sh"))
    }

    #[test]
    fn real_busy_child_is_an_antagonist_on_its_cpu() {
        let online = crate::topology::online_cpus(Path::new("/")).unwrap();
        if !online.contains(1) {
            eprintln!("skip: CPU 1 is not online ({online})");
            return;
        }
        let child = spin_on(1);
        let pid = child.0.id() as i32;
        let reader = ProcReader::new();
        // Time each walk by its midpoint: the child's stat is read somewhere
        // inside it. Right after each walk, read the child's schedstat (ns
        // precise, a source independent of the tick-based stat fields).
        let walk = || {
            let start = std::time::Instant::now();
            let w = reader.walk_tasks().unwrap();
            let mid = start + start.elapsed() / 2;
            (w, mid, reader.schedstat(pid, pid).unwrap())
        };
        let (prev, t0, s0) = walk();
        // Waiting for CPU time to accumulate is the measurement itself. The
        // child's stat line is read at an unknown point inside each walk, so
        // a walk slowed by a busy machine shifts the two sources against
        // each other by up to its length: a window of a second keeps that
        // well inside the tolerance.
        std::thread::sleep(Duration::from_millis(1000));
        let (cur, t1, s1) = walk();
        let dt = t1 - t0;
        let found = find(
            &prev.snapshot,
            &cur.snapshot,
            dt,
            &CpuSet::single(1),
            &AntagonistFilter::default(),
        );
        let me = found
            .iter()
            .find(|a| a.pid == pid)
            .unwrap_or_else(|| panic!("child {pid} not among {found:#?}"));
        assert_eq!((me.tid, me.comm.as_str()), (pid, "sh"));
        let info = crate::cgroup::ProcessInfo::read(Path::new("/proc"), pid)
            .unwrap()
            .unwrap();
        assert_eq!(me.start, info.start, "the identity the enforcer checks");
        let truth = (s1.run_ns - s0.run_ns) as f64 / dt.as_nanos() as f64;
        eprintln!(
            "busy child {pid}: share {:.3} of CPU 1 over {dt:?} (schedstat says {truth:.3})",
            me.cpu_share
        );
        assert!(
            (me.cpu_share - truth).abs() < 0.1,
            "share {} but schedstat says {truth}",
            me.cpu_share
        );
        // How much CPU it got depends on what else runs on CPU 1; that it
        // was runnable all along (run + run-queue wait) does not.
        let demand =
            (s1.run_ns + s1.wait_ns - s0.run_ns - s0.wait_ns) as f64 / dt.as_nanos() as f64;
        assert!(demand > 0.8, "busy child runnable only {demand} of {dt:?}");
        assert!(
            me.cpu_share > 0.05,
            "child share {} over {dt:?}",
            me.cpu_share
        );
        let own = std::process::id() as i32;
        for a in &found {
            assert!(a.pid != own && a.pid != 1, "{a:?}");
            let t = &cur.snapshot.tasks[&a.tid];
            assert!(!t.stat.is_kernel_thread(), "{a:?}");
            assert_eq!(t.stat.last_cpu, 1, "{a:?}");
        }
        assert!(
            found.windows(2).all(|w| w[0].cpu_share >= w[1].cpu_share),
            "{found:#?}"
        );
    }
}
