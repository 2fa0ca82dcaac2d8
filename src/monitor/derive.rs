//! Pure derivation of signals from two raw samples and the time between them.
//!
//! Problem: the readers give cumulative counters in the kernel's units (ns,
//! USER_HZ ticks, counter events). The detector wants shares of wall time
//! and ratios over the last interval.
//!
//! Approach: every function takes `(prev, cur)` (and `dt` where the
//! denominator is wall time) and returns `None` rather than a number it
//! cannot stand behind:
//!
//! ```text
//!   prev ──┐
//!          ├─ Δ = cur - prev ──► Δ / dt      (thread CPU, run delay, foreign use)
//!   cur  ──┘   (None if cur < prev,          Δbusy / Δtotal (per CPU, per PE)
//!               a source is missing,         Δinstr / Δcycles, 1000 Δmiss / Δinstr
//!               or a denominator is 0)
//! ```
//!
//! Invariants: no `std::fs`, `libc` or `nix` here (STYLE 1); a regression
//! (`cur < prev`: counter reset, tid reuse, wrap) is `None`, never a huge
//! unsigned difference; shares are not clamped, so a share slightly above
//! 1.0 from sampling jitter stays visible as such.

use std::collections::BTreeSet;
use std::time::Duration;

use super::sample::{CounterValues, CpuStat, ProcStat, Schedstat, TaskSnapshot};
use crate::cpulist::CpuSet;

/// `cur - prev`, or `None` if either is missing or the counter went
/// backwards (reset, reopened, or wrapped).
pub fn counter_delta(prev: Option<u64>, cur: Option<u64>) -> Option<u64> {
    cur?.checked_sub(prev?)
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den != 0).then(|| num as f64 / den as f64)
}

fn dt_ns(dt: Duration) -> u64 {
    u64::try_from(dt.as_nanos()).unwrap_or(u64::MAX)
}

/// A thread's use of wall time over an interval, from its `schedstat`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ThreadShares {
    /// Δrun_ns / Δt: 1.0 is a whole CPU.
    pub cpu: f64,
    /// Δwait_ns / Δt: share of wall time spent runnable but not running
    /// (the time-sharing interference signal).
    pub run_delay: f64,
}

/// CPU and run-delay shares of one thread; `None` for a zero `dt` or a
/// regression (a different thread with the same tid, or garbage).
pub fn thread_shares(prev: &Schedstat, cur: &Schedstat, dt: Duration) -> Option<ThreadShares> {
    let t = dt_ns(dt);
    let run = cur.run_ns.checked_sub(prev.run_ns)?;
    let wait = cur.wait_ns.checked_sub(prev.wait_ns)?;
    Some(ThreadShares {
        cpu: ratio(run, t)?,
        run_delay: ratio(wait, t)?,
    })
}

/// How one CPU (or a PE's CPUs together) spent an interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuShares {
    /// Share of accounted ticks that were busy (user, nice, system, irq,
    /// softirq).
    pub busy: f64,
    /// Share stolen by the hypervisor; `None` when the kernel does not
    /// report steal.
    pub steal: Option<f64>,
}

/// Busy and steal shares of one `/proc/stat` CPU line.
///
/// The denominator is the line's own Δtotal ticks rather than wall time:
/// ticks are counted per CPU, so this stays in [0, 1] however the sampling
/// lines up with the tick. `None` when no tick passed or a sum went
/// backwards.
pub fn cpu_shares(prev: &CpuStat, cur: &CpuStat) -> Option<CpuShares> {
    let busy = cur.busy().checked_sub(prev.busy())?;
    let idle = cur.idle_all().checked_sub(prev.idle_all())?;
    let steal = cur.steal().checked_sub(prev.steal())?;
    let total = busy.checked_add(idle)?.checked_add(steal)?;
    Some(CpuShares {
        busy: ratio(busy, total)?,
        steal: match (prev.steal, cur.steal) {
            (Some(_), Some(_)) => ratio(steal, total),
            _ => None,
        },
    })
}

/// Busy and steal shares of a PE: the ticks of its CPUs summed, so 0.5 on
/// a two-CPU PE is one CPU's worth of work. `None` if any of its CPUs has
/// no line in either sample (offline) or [`cpu_shares`] would be `None`
/// for the sum.
pub fn pe_cpu_shares(prev: &ProcStat, cur: &ProcStat, pe: &CpuSet) -> Option<CpuShares> {
    let mut p = CpuStat {
        steal: Some(0),
        ..CpuStat::default()
    };
    let mut c = p;
    let mut has_steal = true;
    for cpu in pe.iter() {
        let (a, b) = (prev.cpus.get(&cpu)?, cur.cpus.get(&cpu)?);
        has_steal &= a.steal.is_some() && b.steal.is_some();
        for (sum, line) in [(&mut p, a), (&mut c, b)] {
            sum.user += line.busy();
            sum.idle += line.idle_all();
            sum.steal = Some(sum.steal() + line.steal());
        }
    }
    if !has_steal {
        p.steal = None;
        c.steal = None;
    }
    cpu_shares(&p, &c)
}

/// Instructions per cycle over the interval.
pub fn ipc(prev: &CounterValues, cur: &CounterValues) -> Option<f64> {
    let instr = counter_delta(prev.instructions, cur.instructions)?;
    let cycles = counter_delta(prev.cycles, cur.cycles)?;
    ratio(instr, cycles)
}

/// Last-level cache misses per 1000 instructions over the interval.
pub fn llc_mpki(prev: &CounterValues, cur: &CounterValues) -> Option<f64> {
    let misses = counter_delta(prev.llc_misses, cur.llc_misses)?;
    let instr = counter_delta(prev.instructions, cur.instructions)?;
    ratio(misses, instr).map(|r| 1000.0 * r)
}

/// CPU time one thread used during an interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskCpuDelta {
    /// Process id.
    pub pid: i32,
    /// Thread id.
    pub tid: i32,
    /// CPU it last ran on, as of the later snapshot.
    pub last_cpu: usize,
    /// CPU time (user + system) used in the interval, ns.
    pub cpu_ns: u64,
}

/// Per-thread CPU time between two task snapshots, in tid order.
///
/// A thread in both (same pid and start time) contributes its Δ(utime +
/// stime). A thread only in `cur` (or whose tid was reused) contributes its
/// whole CPU time only if it provably started after the `prev` walk began
/// (`starttime >= prev.boot_ticks`); otherwise its baseline is unknown and it
/// is left out. Regressions are left out. Ticks become ns with
/// `cur.user_hz`; a zero `user_hz` gives an empty list.
pub fn task_cpu_deltas(prev: &TaskSnapshot, cur: &TaskSnapshot) -> Vec<TaskCpuDelta> {
    if cur.user_hz == 0 {
        return Vec::new();
    }
    let to_ns = |ticks: u64| {
        u64::try_from(u128::from(ticks) * 1_000_000_000 / u128::from(cur.user_hz))
            .unwrap_or(u64::MAX)
    };
    cur.tasks
        .iter()
        .filter_map(|(&tid, task)| {
            let s = &task.stat;
            let before = match prev.tasks.get(&tid) {
                Some(p) if p.stat.pid == s.pid && p.stat.starttime == s.starttime => {
                    p.stat.cpu_ticks()
                }
                _ if prev.boot_ticks.is_some_and(|b| s.starttime >= b) => 0,
                _ => return None,
            };
            Some(TaskCpuDelta {
                pid: s.pid,
                tid,
                last_cpu: s.last_cpu,
                cpu_ns: to_ns(s.cpu_ticks().checked_sub(before)?),
            })
        })
        .collect()
}

/// One foreign thread's use of a PE.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ForeignTask {
    /// Process id.
    pub pid: i32,
    /// Thread id.
    pub tid: i32,
    /// The PE CPU it last ran on.
    pub cpu: usize,
    /// CPU time / wall time (1.0 is a whole CPU).
    pub share: f64,
}

/// CPU time used on a PE by threads that are not the pipeline.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ForeignUse {
    /// Sum of the foreign threads' shares, in CPUs (up to the PE's size).
    pub share: f64,
    /// The foreign threads with nonzero use, largest share first (ties by
    /// tid).
    pub tasks: Vec<ForeignTask>,
}

/// Foreign CPU use on `pe`: threads whose last CPU is in `pe` and whose tid
/// is not in `exclude` (the pipeline's threads). `None` for a zero `dt`.
///
/// "Last CPU" is where the thread was seen at the later snapshot: exact for
/// pinned threads, approximate for threads that migrate.
pub fn foreign_cpu_use(
    deltas: &[TaskCpuDelta],
    pe: &CpuSet,
    exclude: &BTreeSet<i32>,
    dt: Duration,
) -> Option<ForeignUse> {
    let t = dt_ns(dt);
    if t == 0 {
        return None;
    }
    let mut tasks: Vec<ForeignTask> = deltas
        .iter()
        .filter(|d| d.cpu_ns > 0 && pe.contains(d.last_cpu) && !exclude.contains(&d.tid))
        .map(|d| ForeignTask {
            pid: d.pid,
            tid: d.tid,
            cpu: d.last_cpu,
            share: d.cpu_ns as f64 / t as f64,
        })
        .collect();
    tasks.sort_by(|a, b| b.share.total_cmp(&a.share).then(a.tid.cmp(&b.tid)));
    Some(ForeignUse {
        share: tasks.iter().map(|t| t.share).sum(),
        tasks,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::monitor::sample::{Task, TaskStat};

    const MS: Duration = Duration::from_millis(1);

    fn ss(run_ns: u64, wait_ns: u64) -> Schedstat {
        Schedstat {
            run_ns,
            wait_ns,
            timeslices: 0,
        }
    }

    /// prev, cur, dt, expected (cpu, run_delay).
    type ThreadCase = (Schedstat, Schedstat, Duration, Option<(f64, f64)>);

    #[test]
    fn thread_shares_table() {
        let cases: &[ThreadCase] = &[
            (
                ss(0, 0),
                ss(50_000_000, 25_000_000),
                100 * MS,
                Some((0.5, 0.25)),
            ),
            (ss(10, 10), ss(10, 10), 100 * MS, Some((0.0, 0.0))),
            (
                ss(1_000, 0),
                ss(201_000, 300_000),
                Duration::from_micros(200),
                Some((1.0, 1.5)),
            ),
            // Zero dt.
            (ss(0, 0), ss(1, 1), Duration::ZERO, None),
            // Regression in either field (tid reused by a younger thread).
            (ss(100, 0), ss(99, 5), 100 * MS, None),
            (ss(0, 100), ss(5, 99), 100 * MS, None),
        ];
        for (i, (p, c, dt, want)) in cases.iter().enumerate() {
            let got = thread_shares(p, c, *dt).map(|s| (s.cpu, s.run_delay));
            assert_eq!(got, *want, "case {i}");
        }
    }

    fn line(user: u64, system: u64, idle: u64, steal: Option<u64>) -> CpuStat {
        CpuStat {
            user,
            system,
            idle,
            iowait: Some(0),
            irq: Some(0),
            softirq: Some(0),
            steal,
            ..CpuStat::default()
        }
    }

    /// prev, cur, expected (busy, steal).
    type CpuCase = (CpuStat, CpuStat, Option<(f64, Option<f64>)>);

    #[test]
    fn cpu_shares_table() {
        let cases: &[CpuCase] = &[
            // 100 ticks: 60 user, 15 system, 20 idle, 5 steal.
            (
                line(0, 0, 0, Some(0)),
                line(60, 15, 20, Some(5)),
                Some((0.75, Some(0.05))),
            ),
            (
                line(5, 5, 5, Some(5)),
                line(5, 5, 15, Some(5)),
                Some((0.0, Some(0.0))),
            ),
            // Old kernel without steal.
            (
                line(0, 0, 0, None),
                line(30, 0, 70, None),
                Some((0.3, None)),
            ),
            // No tick passed.
            (line(1, 1, 1, Some(1)), line(1, 1, 1, Some(1)), None),
            // A counter went backwards.
            (line(10, 0, 0, Some(0)), line(9, 0, 100, Some(0)), None),
            (line(0, 0, 0, Some(9)), line(10, 0, 10, Some(8)), None),
        ];
        for (i, (p, c, want)) in cases.iter().enumerate() {
            let got = cpu_shares(p, c).map(|s| (s.busy, s.steal));
            assert_eq!(got, *want, "case {i}");
        }
    }

    #[test]
    fn pe_cpu_shares_sums_its_cpus_only() {
        let stat = |lines: &[(usize, CpuStat)]| ProcStat {
            cpus: lines.iter().copied().collect(),
        };
        let prev = stat(&[
            (0, line(0, 0, 0, Some(0))),
            (1, line(0, 0, 0, Some(0))),
            (2, line(0, 0, 0, Some(0))),
        ]);
        let cur = stat(&[
            (0, line(100, 0, 0, Some(0))), // fully busy
            (1, line(0, 0, 90, Some(10))), // idle, some steal
            (2, line(50, 0, 50, Some(0))), // not in the PE
        ]);
        let pe = CpuSet::from_cpus([0, 1]);
        let s = pe_cpu_shares(&prev, &cur, &pe).unwrap();
        assert_eq!((s.busy, s.steal), (0.5, Some(0.05)));
        assert_eq!(pe_cpu_shares(&prev, &cur, &CpuSet::from_cpus([0, 7])), None);
        let no_steal = stat(&[(0, line(0, 0, 0, None)), (1, line(0, 0, 0, Some(0)))]);
        let s = pe_cpu_shares(&no_steal, &cur, &pe).unwrap();
        assert_eq!((s.busy, s.steal), (100.0 / 190.0, None));
    }

    fn ctr(instr: Option<u64>, cycles: Option<u64>, miss: Option<u64>) -> CounterValues {
        CounterValues {
            instructions: instr,
            cycles,
            llc_misses: miss,
        }
    }

    #[test]
    fn ipc_and_mpki_table() {
        let some = Some;
        let cases: &[(CounterValues, CounterValues, Option<f64>, Option<f64>)] = &[
            (
                ctr(some(1_000), some(1_000), some(10)),
                ctr(some(3_001_000), some(2_001_000), some(6_010)),
                Some(1.5),
                Some(2.0),
            ),
            // No LLC counter (typical VM): IPC still works.
            (
                ctr(some(0), some(0), None),
                ctr(some(500), some(1000), None),
                Some(0.5),
                None,
            ),
            // No PMU at all.
            (ctr(None, None, None), ctr(None, None, None), None, None),
            // Source appears only in cur.
            (
                ctr(None, some(0), some(0)),
                ctr(some(10), some(10), some(1)),
                None,
                None,
            ),
            // Zero denominators.
            (
                ctr(some(5), some(5), some(5)),
                ctr(some(5), some(5), some(6)),
                None,
                None,
            ),
            (
                ctr(some(5), some(5), some(5)),
                ctr(some(6), some(5), some(5)),
                None,
                Some(0.0),
            ),
            // Counter reset / wrap: cur < prev.
            (
                ctr(some(u64::MAX - 10), some(100), some(0)),
                ctr(some(5), some(200), some(1)),
                None,
                None,
            ),
            (
                ctr(some(0), some(300), some(9)),
                ctr(some(100), some(200), some(8)),
                None,
                None,
            ),
        ];
        for (i, (p, c, want_ipc, want_mpki)) in cases.iter().enumerate() {
            assert_eq!(ipc(p, c), *want_ipc, "ipc case {i}");
            assert_eq!(llc_mpki(p, c), *want_mpki, "mpki case {i}");
        }
    }

    #[test]
    fn counter_delta_table() {
        assert_eq!(counter_delta(Some(3), Some(10)), Some(7));
        assert_eq!(counter_delta(Some(3), Some(3)), Some(0));
        assert_eq!(counter_delta(Some(10), Some(3)), None);
        assert_eq!(counter_delta(None, Some(3)), None);
        assert_eq!(counter_delta(Some(3), None), None);
    }

    fn task(pid: i32, tid: i32, ticks: u64, starttime: u64, cpu: usize) -> (i32, Task) {
        (
            tid,
            Task {
                stat: TaskStat {
                    pid,
                    tid,
                    comm: format!("t{tid}"),
                    state: 'R',
                    ppid: 1,
                    pgrp: pid,
                    flags: 0,
                    utime: ticks,
                    stime: 0,
                    children_ticks: 0,
                    starttime,
                    last_cpu: cpu,
                },
                cgroup: None,
            },
        )
    }

    fn snap(boot_ticks: u64, tasks: &[(i32, Task)]) -> TaskSnapshot {
        TaskSnapshot {
            user_hz: 100,
            boot_ticks: Some(boot_ticks),
            tasks: tasks.iter().cloned().collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn task_cpu_deltas_pairs_by_tid_and_start_time() {
        let prev = snap(
            1000,
            &[
                task(10, 10, 100, 5, 0), // steady
                task(10, 11, 50, 6, 1),  // will regress
                task(20, 20, 70, 7, 1),  // tid reused below
                task(30, 30, 10, 8, 0),  // exits
                task(40, 40, 0, 9, 1),   // idle
            ],
        );
        let cur = snap(
            1030,
            &[
                task(10, 10, 130, 5, 1),   // +30 ticks = 300 ms, now on CPU 1
                task(10, 11, 40, 6, 1),    // went backwards: left out
                task(21, 20, 4, 1010, 0),  // new thread with an old tid: born after prev
                task(40, 40, 0, 9, 1),     // no CPU time
                task(50, 50, 2, 1005, 1),  // born during the interval
                task(60, 60, 900, 500, 0), // missed by prev, started before it: unknown
            ],
        );
        let got = task_cpu_deltas(&prev, &cur);
        let want = vec![
            TaskCpuDelta {
                pid: 10,
                tid: 10,
                last_cpu: 1,
                cpu_ns: 300_000_000,
            },
            TaskCpuDelta {
                pid: 21,
                tid: 20,
                last_cpu: 0,
                cpu_ns: 40_000_000,
            },
            TaskCpuDelta {
                pid: 40,
                tid: 40,
                last_cpu: 1,
                cpu_ns: 0,
            },
            TaskCpuDelta {
                pid: 50,
                tid: 50,
                last_cpu: 1,
                cpu_ns: 20_000_000,
            },
        ];
        assert_eq!(got, want);

        // Without prev's boot time nothing new can be attributed.
        let mut blind = prev.clone();
        blind.boot_ticks = None;
        let got = task_cpu_deltas(&blind, &cur);
        assert_eq!(got.iter().map(|d| d.tid).collect::<Vec<_>>(), vec![10, 40]);

        // An empty first snapshot does not count lifetimes as one interval.
        let empty = snap(1000, &[]);
        let got = task_cpu_deltas(&empty, &cur);
        assert_eq!(got.iter().map(|d| d.tid).collect::<Vec<_>>(), vec![20, 50]);

        let mut zero_hz = cur.clone();
        zero_hz.user_hz = 0;
        assert!(task_cpu_deltas(&prev, &zero_hz).is_empty());
    }

    fn d(pid: i32, tid: i32, cpu: usize, ms: u64) -> TaskCpuDelta {
        TaskCpuDelta {
            pid,
            tid,
            last_cpu: cpu,
            cpu_ns: ms * 1_000_000,
        }
    }

    #[test]
    fn foreign_cpu_use_excludes_pipeline_and_other_cpus() {
        let deltas = [
            d(100, 100, 2, 50),  // pipeline stage thread
            d(200, 201, 2, 80),  // antagonist on the PE
            d(200, 202, 3, 20),  // same process, other PE CPU
            d(300, 300, 0, 100), // elsewhere
            d(400, 400, 3, 0),   // on the PE but idle
            d(500, 500, 3, 20),  // ties with 202
        ];
        let pe = CpuSet::from_cpus([2, 3]);
        let exclude = BTreeSet::from([100]);
        let u = foreign_cpu_use(&deltas, &pe, &exclude, 100 * MS).unwrap();
        assert!((u.share - 1.2).abs() < 1e-12, "{u:?}");
        let got: Vec<(i32, usize, f64)> = u.tasks.iter().map(|t| (t.tid, t.cpu, t.share)).collect();
        assert_eq!(got, vec![(201, 2, 0.8), (202, 3, 0.2), (500, 3, 0.2)]);

        let none = foreign_cpu_use(&deltas, &CpuSet::from_cpus([5]), &exclude, 100 * MS).unwrap();
        assert_eq!(none, ForeignUse::default());
        assert_eq!(
            foreign_cpu_use(&deltas, &pe, &exclude, Duration::ZERO),
            None
        );
    }
}
