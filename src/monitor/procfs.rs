//! Readers for `/proc` under a root directory: per-thread `schedstat`,
//! per-CPU `/proc/stat`, `/proc/pressure/cpu`, and a walk of every thread's
//! `stat` and its process's `cgroup`.
//!
//! Every reader returns raw cumulative values ([`super::sample`]); see the
//! [module docs](super) for units, old-kernel gaps, `comm` parsing and races.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ProcError;
use super::sample::{
    CgroupVersion, CpuPressure, CpuStat, ProcStat, PsiLine, Schedstat, Task, TaskCgroup,
    TaskSnapshot, TaskStat,
};

/// Reads `/proc` files under a root (`/` on a real system).
#[derive(Clone, Debug)]
pub struct ProcReader {
    root: PathBuf,
}

impl Default for ProcReader {
    fn default() -> Self {
        Self::new()
    }
}

/// The result of walking every thread: what could be read, and what failed
/// for reasons other than the task going away.
#[derive(Debug, Default)]
pub struct TaskWalk {
    /// The threads that were read.
    pub snapshot: TaskSnapshot,
    /// Files that could not be read or parsed (vanished tasks are not here).
    /// One bad task does not blind the walk to the others.
    pub errors: Vec<ProcError>,
}

impl ProcReader {
    /// A reader of the real `/proc`.
    pub fn new() -> Self {
        Self::with_root("/")
    }

    /// A reader of `<root>/proc` (for tests with fake trees).
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root this reader reads under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn proc_path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join("proc").join(rel)
    }

    /// Thread `tid` of process `pid`: `/proc/<pid>/task/<tid>/schedstat`.
    ///
    /// A thread that has exited gives an [`ProcError::Io`] for which
    /// [`ProcError::is_gone`] is true.
    pub fn schedstat(&self, pid: i32, tid: i32) -> Result<Schedstat, ProcError> {
        let path = self.proc_path(format!("{pid}/task/{tid}/schedstat"));
        let text = read_string(&path)?;
        parse_schedstat(&path, &text)
    }

    /// The per-CPU lines of `/proc/stat`.
    pub fn stat(&self) -> Result<ProcStat, ProcError> {
        let path = self.proc_path("stat");
        let text = read_string(&path)?;
        parse_proc_stat(&path, &text)
    }

    /// `/proc/pressure/cpu`, or `None` where the kernel has no PSI (before
    /// 4.20, `CONFIG_PSI=n`, or booted with `psi=0`).
    pub fn cpu_pressure(&self) -> Result<Option<CpuPressure>, ProcError> {
        let path = self.proc_path("pressure/cpu");
        match std::fs::read_to_string(&path) {
            Ok(text) => parse_pressure(&path, &text).map(Some),
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::EOPNOTSUPP) =>
            {
                Ok(None)
            }
            Err(e) => Err(ProcError::io(&path, e)),
        }
    }

    /// Time since boot (first field of `/proc/uptime`, counting suspend,
    /// the clock `stat`'s `starttime` uses); `None` if the file is absent.
    pub fn uptime(&self) -> Result<Option<Duration>, ProcError> {
        let path = self.proc_path("uptime");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ProcError::io(&path, e)),
        };
        let first = text.split_ascii_whitespace().next().unwrap_or("");
        first
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Some(Duration::from_secs_f64(s)))
            .ok_or_else(|| {
                ProcError::parse(
                    &path,
                    "field 1 (uptime)",
                    format!("{first:?} is not seconds"),
                )
            })
    }

    /// Thread `tid` of process `pid`: `/proc/<pid>/task/<tid>/stat`.
    pub fn task_stat(&self, pid: i32, tid: i32) -> Result<TaskStat, ProcError> {
        let path = self.proc_path(format!("{pid}/task/{tid}/stat"));
        let bytes = std::fs::read(&path).map_err(|e| ProcError::io(&path, e))?;
        let stat = parse_task_stat(&path, pid, &bytes)?;
        if stat.tid != tid {
            return Err(ProcError::parse(
                &path,
                "field 1 (pid)",
                format!("says thread {}, not {tid}", stat.tid),
            ));
        }
        Ok(stat)
    }

    /// Process `pid`'s cgroup for CPU control, from `/proc/<pid>/cgroup`:
    /// the v1 hierarchy carrying the `cpu` controller if there is one (on a
    /// hybrid system that is where CPU limits apply), else the v2 `0::` line,
    /// else `None`.
    pub fn cgroup(&self, pid: i32) -> Result<Option<TaskCgroup>, ProcError> {
        let path = self.proc_path(format!("{pid}/cgroup"));
        let text = read_string(&path)?;
        parse_cgroup(&path, &text)
    }

    /// The thread ids of process `pid` (`/proc/<pid>/task`), ascending.
    pub fn tids(&self, pid: i32) -> Result<Vec<i32>, ProcError> {
        numeric_entries(&self.proc_path(format!("{pid}/task")))
    }

    /// The process ids in `/proc`, ascending.
    pub fn pids(&self) -> Result<Vec<i32>, ProcError> {
        numeric_entries(&self.proc_path(""))
    }

    /// Every thread on the system: `stat` of each `/proc/<pid>/task/<tid>`
    /// and the `cgroup` of each process.
    ///
    /// Fails only if `/proc` itself cannot be listed. Tasks that vanish
    /// between listing and reading are skipped; other per-task failures land
    /// in [`TaskWalk::errors`] and the walk goes on. Cost: one directory read
    /// per process and one file read per thread and per process.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "uptime in clock ticks, saturating"
    )]
    pub fn walk_tasks(&self) -> Result<TaskWalk, ProcError> {
        let hz = user_hz();
        let mut errors = Vec::new();
        let boot_ticks = match self.uptime() {
            Ok(up) => up.map(|d| (d.as_secs_f64() * hz as f64) as u64),
            Err(e) => {
                errors.push(e);
                None
            }
        };
        let mut walk = TaskWalk {
            snapshot: TaskSnapshot {
                user_hz: hz,
                boot_ticks,
                tasks: BTreeMap::new(),
            },
            errors,
        };
        for pid in self.pids()? {
            let tids = match self.tids(pid) {
                Ok(t) => t,
                Err(e) => {
                    keep_unless_gone(&mut walk.errors, e);
                    continue;
                }
            };
            let cgroup = match self.cgroup(pid) {
                Ok(c) => c,
                Err(e) => {
                    keep_unless_gone(&mut walk.errors, e);
                    None
                }
            };
            for tid in tids {
                match self.task_stat(pid, tid) {
                    Ok(stat) => {
                        walk.snapshot.tasks.insert(
                            tid,
                            Task {
                                stat,
                                cgroup: cgroup.clone(),
                            },
                        );
                    }
                    Err(e) => keep_unless_gone(&mut walk.errors, e),
                }
            }
        }
        Ok(walk)
    }
}

/// USER_HZ of the running kernel (`sysconf(_SC_CLK_TCK)`), 100 if unknown.
pub fn user_hz() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|&h| h > 0).unwrap_or(100)
}

fn keep_unless_gone(errors: &mut Vec<ProcError>, e: ProcError) {
    if !e.is_gone() {
        errors.push(e);
    }
}

fn read_string(path: &Path) -> Result<String, ProcError> {
    std::fs::read_to_string(path).map_err(|e| ProcError::io(path, e))
}

fn numeric_entries(dir: &Path) -> Result<Vec<i32>, ProcError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| ProcError::io(dir, e))? {
        let entry = entry.map_err(|e| ProcError::io(dir, e))?;
        if let Some(n) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn parse_u64(path: &Path, at: impl FnOnce() -> String, s: &str) -> Result<u64, ProcError> {
    s.parse()
        .map_err(|_| ProcError::parse(path, at(), format!("{s:?} is not a number")))
}

/// Parses a thread's `schedstat` read from `path`: `run_ns wait_ns
/// timeslices` (later kernels may append fields; ignored). Errors name
/// `path` and the field.
pub fn parse_schedstat(path: &Path, text: &str) -> Result<Schedstat, ProcError> {
    let fields: Vec<&str> = text.split_ascii_whitespace().collect();
    if fields.len() < 3 {
        return Err(ProcError::parse(
            path,
            "line 1",
            format!(
                "expected 3 fields (run ns, wait ns, timeslices), found {}",
                fields.len()
            ),
        ));
    }
    let names = ["run time", "run-queue wait", "timeslices"];
    let mut v = [0u64; 3];
    for (i, slot) in v.iter_mut().enumerate() {
        *slot = parse_u64(
            path,
            || format!("field {} ({})", i + 1, names[i]),
            fields[i],
        )?;
    }
    Ok(Schedstat {
        run_ns: v[0],
        wait_ns: v[1],
        timeslices: v[2],
    })
}

/// Parses `/proc/stat` read from `path`: the `cpuN ...` lines; the
/// aggregate `cpu` line and the other lines (`intr`, `ctxt`, ...) are
/// skipped. At least user, nice, system, idle. Errors name `path` and the
/// line.
pub fn parse_proc_stat(path: &Path, text: &str) -> Result<ProcStat, ProcError> {
    let mut stat = ProcStat::default();
    for (i, line) in text.lines().enumerate() {
        let mut fields = line.split_ascii_whitespace();
        let Some(cpu) = fields
            .next()
            .and_then(|k| k.strip_prefix("cpu"))
            .filter(|n| !n.is_empty())
        else {
            continue;
        };
        let at = || format!("line {}", i + 1);
        let cpu: usize = cpu.parse().map_err(|_| {
            ProcError::parse(path, at(), format!("\"cpu{cpu}\" is not a CPU number"))
        })?;
        let v = fields
            .map(|f| parse_u64(path, at, f))
            .collect::<Result<Vec<u64>, _>>()?;
        if v.len() < 4 {
            return Err(ProcError::parse(
                path,
                at(),
                format!(
                    "cpu{cpu} has {} fields, expected at least 4 (user nice system idle)",
                    v.len()
                ),
            ));
        }
        let line = CpuStat {
            user: v[0],
            nice: v[1],
            system: v[2],
            idle: v[3],
            iowait: v.get(4).copied(),
            irq: v.get(5).copied(),
            softirq: v.get(6).copied(),
            steal: v.get(7).copied(),
            guest: v.get(8).copied(),
            guest_nice: v.get(9).copied(),
        };
        if stat.cpus.insert(cpu, line).is_some() {
            return Err(ProcError::parse(
                path,
                at(),
                format!("cpu{cpu} appears twice"),
            ));
        }
    }
    Ok(stat)
}

/// Parses `/proc/pressure/cpu` read from `path`: `some avg10=.. avg60=..
/// avg300=.. total=..` and optionally `full ...`. Errors name `path` and
/// the line.
pub fn parse_pressure(path: &Path, text: &str) -> Result<CpuPressure, ProcError> {
    let mut some = None;
    let mut full = None;
    for (i, line) in text.lines().enumerate() {
        let at = || format!("line {}", i + 1);
        let mut fields = line.split_ascii_whitespace();
        let slot = match fields.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            Some(other) => {
                return Err(ProcError::parse(
                    path,
                    at(),
                    format!("{other:?} is neither \"some\" nor \"full\""),
                ));
            }
            None => continue,
        };
        let (mut avg10, mut avg60, mut avg300, mut total) = (None, None, None, None);
        for kv in fields {
            let Some((k, v)) = kv.split_once('=') else {
                return Err(ProcError::parse(
                    path,
                    at(),
                    format!("{kv:?} is not key=value"),
                ));
            };
            let avg = || {
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| {
                        ProcError::parse(path, at(), format!("{k}={v:?} is not a percentage"))
                    })
            };
            match k {
                "avg10" => avg10 = Some(avg()?),
                "avg60" => avg60 = Some(avg()?),
                "avg300" => avg300 = Some(avg()?),
                "total" => total = Some(parse_u64(path, at, v)?),
                _ => {} // a future key
            }
        }
        let missing = [
            ("avg10", avg10.is_none()),
            ("avg60", avg60.is_none()),
            ("avg300", avg300.is_none()),
            ("total", total.is_none()),
        ]
        .iter()
        .filter(|(_, m)| *m)
        .map(|(k, _)| *k)
        .collect::<Vec<_>>();
        if !missing.is_empty() {
            return Err(ProcError::parse(
                path,
                at(),
                format!("missing {}", missing.join(", ")),
            ));
        }
        *slot = Some(PsiLine {
            avg10: avg10.unwrap_or_default(),
            avg60: avg60.unwrap_or_default(),
            avg300: avg300.unwrap_or_default(),
            total_us: total.unwrap_or_default(),
        });
    }
    let some = some.ok_or_else(|| ProcError::parse(path, "line 1", "no \"some\" line"))?;
    Ok(CpuPressure { some, full })
}

/// `tid (comm) state ppid ... flags(9) ... utime(14) stime(15) ...
/// starttime(22) ... processor(39) ...`.
/// Parses a `stat` line of thread (or process) `pid` read from `path`;
/// the name runs from the first `(` to the last `)`, since a name may
/// hold spaces and parentheses.
pub fn parse_task_stat(path: &Path, pid: i32, bytes: &[u8]) -> Result<TaskStat, ProcError> {
    let open = bytes.iter().position(|&b| b == b'(');
    let close = bytes.iter().rposition(|&b| b == b')');
    let (open, close) = match (open, close) {
        (Some(o), Some(c)) if o < c => (o, c),
        _ => {
            return Err(ProcError::parse(
                path,
                "field 2 (comm)",
                "no \"(name)\" in the line (truncated?)",
            ));
        }
    };
    let head = std::str::from_utf8(&bytes[..open]).unwrap_or("").trim();
    let tid: i32 = head.parse().map_err(|_| {
        ProcError::parse(
            path,
            "field 1 (pid)",
            format!("{head:?} is not a thread id"),
        )
    })?;
    let comm = String::from_utf8_lossy(&bytes[open + 1..close]).into_owned();
    let tail = std::str::from_utf8(&bytes[close + 1..])
        .map_err(|_| ProcError::parse(path, "fields 3..", "not ASCII after the name"))?;
    // tail field k (0-based) is stat field k + 3.
    let fields: Vec<&str> = tail.split_ascii_whitespace().collect();
    let field = |n: usize, name: &str| -> Result<&str, ProcError> {
        fields.get(n - 3).copied().ok_or_else(|| {
            ProcError::parse(
                path,
                format!("field {n} ({name})"),
                format!(
                    "missing: the line ends after field {} (truncated?)",
                    fields.len() + 2
                ),
            )
        })
    };
    let num = |n: usize, name: &str| -> Result<u64, ProcError> {
        let s = field(n, name)?;
        s.parse().map_err(|_| {
            ProcError::parse(
                path,
                format!("field {n} ({name})"),
                format!("{s:?} is not a number"),
            )
        })
    };
    let state_str = field(3, "state")?;
    let mut chars = state_str.chars();
    let state = match (chars.next(), chars.next()) {
        (Some(c), None) => c,
        _ => {
            return Err(ProcError::parse(
                path,
                "field 3 (state)",
                format!("{state_str:?} is not one state letter"),
            ));
        }
    };
    let ppid = num(4, "ppid")?;
    let pgrp = num(5, "pgrp")?;
    let flags = num(9, "flags")?;
    let utime = num(14, "utime")?;
    let stime = num(15, "stime")?;
    let children_ticks = num(16, "cutime")?
        .checked_add(num(17, "cstime")?)
        .ok_or_else(|| {
            ProcError::parse(
                path,
                "fields 16, 17 (cutime, cstime)",
                "their sum overflows 64 bits",
            )
        })?;
    let starttime = num(22, "starttime")?;
    let last_cpu = num(39, "processor")?;
    Ok(TaskStat {
        pid,
        tid,
        comm,
        state,
        ppid: i32::try_from(ppid).map_err(|_| {
            ProcError::parse(path, "field 4 (ppid)", format!("{ppid} is not a pid"))
        })?,
        pgrp: i32::try_from(pgrp).map_err(|_| {
            ProcError::parse(path, "field 5 (pgrp)", format!("{pgrp} is not a group"))
        })?,
        flags,
        utime,
        stime,
        children_ticks,
        starttime,
        last_cpu: usize::try_from(last_cpu).map_err(|_| {
            ProcError::parse(
                path,
                "field 39 (processor)",
                format!("CPU {last_cpu} is out of range"),
            )
        })?,
    })
}

/// One line of `/proc/<pid>/cgroup`: `hierarchy-id:controllers:path`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupLine<'a> {
    /// The hierarchy id (`0` for the unified hierarchy).
    pub id: &'a str,
    /// The controllers, comma-separated (empty for the unified hierarchy).
    pub controllers: &'a str,
    /// The cgroup's path relative to the hierarchy's root, as written.
    pub path: &'a str,
}

impl<'a> CgroupLine<'a> {
    /// Splits `line`; `None` if it has fewer than three fields (the path
    /// may itself hold `:`).
    pub fn parse(line: &'a str) -> Option<Self> {
        let mut parts = line.splitn(3, ':');
        Some(Self {
            id: parts.next()?,
            controllers: parts.next()?,
            path: parts.next()?,
        })
    }

    /// The unified (v2) hierarchy's line: `0::/path`.
    pub fn is_v2(&self) -> bool {
        self.id == "0" && self.controllers.is_empty()
    }

    /// A v1 line whose hierarchy carries `controller`.
    pub fn has_controller(&self, controller: &str) -> bool {
        self.controllers.split(',').any(|c| c == controller)
    }
}

/// Parses a `/proc/<pid>/cgroup` read from `path`:
/// `hierarchy-id:controllers:path` lines; the v1 `cpu` hierarchy's line
/// wins over the v2 one. Errors name `path` and the line.
pub fn parse_cgroup(path: &Path, text: &str) -> Result<Option<TaskCgroup>, ProcError> {
    let mut v2 = None;
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let Some(l) = CgroupLine::parse(line) else {
            return Err(ProcError::parse(
                path,
                format!("line {}", i + 1),
                format!("{line:?} is not \"id:controllers:path\""),
            ));
        };
        if l.is_v2() {
            v2 = Some(l.path);
        } else if l.has_controller("cpu") {
            return Ok(Some(TaskCgroup {
                version: CgroupVersion::V1,
                path: l.path.to_string(),
            }));
        }
    }
    Ok(v2.map(|p| TaskCgroup {
        version: CgroupVersion::V2,
        path: p.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::sample::PF_KTHREAD;
    use crate::monitor::testutil::FakeRoot;
    use crate::thread::gettid;

    fn reader(root: &FakeRoot) -> ProcReader {
        ProcReader::with_root(root.path())
    }

    fn assert_parse_err(err: ProcError, file: &str, words: &[&str]) {
        let msg = err.to_string();
        assert!(matches!(err, ProcError::Parse { .. }), "{msg}");
        assert!(msg.contains(file), "{msg:?} should name {file}");
        for w in words {
            assert!(msg.contains(w), "{msg:?} should say {w:?}");
        }
    }

    // ---- schedstat ----

    #[test]
    fn schedstat_reads_three_fields() {
        let root = FakeRoot::new();
        root.write("proc/10/task/11/schedstat", "123456789 2000 42\n");
        let s = reader(&root).schedstat(10, 11).unwrap();
        assert_eq!(
            s,
            Schedstat {
                run_ns: 123_456_789,
                wait_ns: 2000,
                timeslices: 42
            }
        );
    }

    #[test]
    fn schedstat_errors_name_file_and_field() {
        let root = FakeRoot::new();
        root.write("proc/10/task/11/schedstat", "123 456\n");
        root.write("proc/10/task/12/schedstat", "123 x 7\n");
        let r = reader(&root);
        assert_parse_err(
            r.schedstat(10, 11).unwrap_err(),
            "10/task/11/schedstat",
            &["expected 3 fields", "found 2"],
        );
        assert_parse_err(
            r.schedstat(10, 12).unwrap_err(),
            "10/task/12/schedstat",
            &["field 2 (run-queue wait)", "\"x\""],
        );
        let gone = r.schedstat(10, 13).unwrap_err();
        assert!(gone.is_gone(), "{gone}");
        assert!(gone.to_string().contains("10/task/13/schedstat"), "{gone}");
    }

    // ---- /proc/stat ----

    const STAT: &str = "cpu  10 20 30 40 50 60 70 80 90 100\n\
        cpu0 1 2 3 4 5 6 7 8 9 10\n\
        cpu1 11 12 13 14 15 16 17 18 0 0\n\
        intr 12345 0 0\n\
        ctxt 999\n\
        btime 1700000000\n";

    #[test]
    fn stat_reads_per_cpu_lines() {
        let root = FakeRoot::new();
        root.write("proc/stat", STAT);
        let s = reader(&root).stat().unwrap();
        assert_eq!(s.cpus.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
        let c0 = s.cpus[&0];
        assert_eq!((c0.user, c0.nice, c0.system, c0.idle), (1, 2, 3, 4));
        assert_eq!(c0.iowait, Some(5));
        assert_eq!(c0.steal, Some(8));
        assert_eq!(c0.guest_nice, Some(10));
        // busy = user nice system irq softirq; idle = idle iowait; steal apart.
        assert_eq!(c0.busy(), 1 + 2 + 3 + 6 + 7);
        assert_eq!(c0.idle_all(), 4 + 5);
        assert_eq!(c0.steal(), 8);
        assert_eq!(c0.total(), 19 + 9 + 8);
    }

    #[test]
    fn stat_old_kernel_lines_have_none_for_missing_fields() {
        let root = FakeRoot::new();
        // 2.6.0-2.6.10: no steal, guest, guest_nice. 2.4: only four fields.
        root.write(
            "proc/stat",
            "cpu 1 1 1 1\ncpu0 1 2 3 4 5 6 7\ncpu3 9 8 7 6\n",
        );
        let s = reader(&root).stat().unwrap();
        let c0 = s.cpus[&0];
        assert_eq!(
            (c0.irq, c0.softirq, c0.steal, c0.guest),
            (Some(6), Some(7), None, None)
        );
        assert_eq!(c0.steal(), 0);
        let c3 = s.cpus[&3];
        assert_eq!((c3.iowait, c3.irq), (None, None));
        assert_eq!(c3.busy(), 9 + 8 + 7);
        assert_eq!(c3.total(), 9 + 8 + 7 + 6);
    }

    #[test]
    fn stat_garbage_is_an_error_with_line_number() {
        let cases: &[(&str, &[&str])] = &[
            ("cpu 1 2 3 4\ncpu0 1 2 abc 4\n", &["line 2", "\"abc\""]),
            ("cpu0 1 2 3\n", &["line 1", "cpu0 has 3 fields"]),
            ("cpu0 1 2 3 4\ncpuX 1 2 3 4\n", &["line 2", "cpuX"]),
            ("cpu0 1 2 3 4\ncpu0 1 2 3 4\n", &["line 2", "twice"]),
            ("cpu0 1 2 3 -4\n", &["line 1", "\"-4\""]),
        ];
        for (text, words) in cases {
            let root = FakeRoot::new();
            root.write("proc/stat", text);
            assert_parse_err(reader(&root).stat().unwrap_err(), "proc/stat", words);
        }
    }

    // ---- pressure ----

    #[test]
    fn pressure_present_with_and_without_full() {
        let root = FakeRoot::new();
        root.write(
            "proc/pressure/cpu",
            "some avg10=7.81 avg60=42.33 avg300=50.72 total=1225157221\n\
             full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        );
        let p = reader(&root).cpu_pressure().unwrap().unwrap();
        assert_eq!(p.some.avg10, 7.81);
        assert_eq!(p.some.avg300, 50.72);
        assert_eq!(p.some.total_us, 1_225_157_221);
        assert_eq!(p.full.unwrap().total_us, 0);

        root.write(
            "proc/pressure/cpu",
            "some avg10=0.50 avg60=0.10 avg300=0.00 total=99\n",
        );
        let p = reader(&root).cpu_pressure().unwrap().unwrap();
        assert_eq!((p.some.avg10, p.some.total_us, p.full), (0.5, 99, None));
    }

    #[test]
    fn pressure_absent_is_none() {
        let root = FakeRoot::new();
        assert_eq!(reader(&root).cpu_pressure().unwrap(), None);
    }

    #[test]
    fn pressure_malformed_is_an_error() {
        let cases: &[(&str, &[&str])] = &[
            (
                "some avg10=abc avg60=0 avg300=0 total=1\n",
                &["line 1", "avg10", "abc"],
            ),
            (
                "some avg10=0 avg60=0 avg300=0\n",
                &["line 1", "missing total"],
            ),
            (
                "some avg10=0 avg60=0 avg300=0 total=1\nhalf avg10=0\n",
                &["line 2", "half"],
            ),
            ("some avg10 avg60=0 avg300=0 total=1\n", &["key=value"]),
            (
                "full avg10=0 avg60=0 avg300=0 total=1\n",
                &["no \"some\" line"],
            ),
            ("", &["no \"some\" line"]),
        ];
        for (text, words) in cases {
            let root = FakeRoot::new();
            root.write("proc/pressure/cpu", text);
            assert_parse_err(
                reader(&root).cpu_pressure().unwrap_err(),
                "pressure/cpu",
                words,
            );
        }
    }

    // ---- task stat ----

    #[test]
    fn a_process_stat_line_gives_its_group_and_its_childrens_time() {
        // Fields 1..=22 of a process named "odd) name)", then 30 more.
        let line = format!(
            "4242 (odd) name)) S 1 4240 4240 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 2 0 1000 {}\n",
            ["0"; 30].join(" ")
        );
        let s = parse_task_stat(Path::new("stat"), 4242, line.as_bytes()).unwrap();
        assert_eq!(
            (s.comm.as_str(), s.state, s.ppid, s.pgrp),
            ("odd) name)", 'S', 1, 4240)
        );
        assert_eq!((s.utime, s.stime, s.children_ticks), (250, 50, 10));
        assert!(parse_task_stat(Path::new("stat"), 1, b"garbage").is_err());
    }

    #[test]
    fn task_stat_comm_with_spaces_and_parentheses() {
        let root = FakeRoot::new();
        root.task(100, 101, "my (weird) proc", 0x40, 250, 50, 777, 3);
        let s = reader(&root).task_stat(100, 101).unwrap();
        assert_eq!(
            s,
            TaskStat {
                pid: 100,
                tid: 101,
                comm: "my (weird) proc".into(),
                state: 'R',
                ppid: 1,
                pgrp: 0,
                flags: 0x40,
                utime: 250,
                stime: 50,
                children_ticks: 0,
                starttime: 777,
                last_cpu: 3,
            }
        );
        assert_eq!(s.cpu_ticks(), 300);
        assert!(!s.is_kernel_thread());

        // A name that ends in ") R 1" must not fool the parser either.
        root.task(100, 102, ") R 1 2 3 4", PF_KTHREAD, 1, 2, 3, 1);
        let s = reader(&root).task_stat(100, 102).unwrap();
        assert_eq!((s.comm.as_str(), s.last_cpu), (") R 1 2 3 4", 1));
        assert!(s.is_kernel_thread());
    }

    #[test]
    fn task_stat_non_utf8_comm_is_replaced_not_rejected() {
        let root = FakeRoot::new();
        let line = FakeRoot::stat_line(5, "X", 'S', 0, 1, 1, 1, 0).replace("(X)", "(a\u{1}b)");
        let mut bytes = line.into_bytes();
        let at = bytes.iter().position(|&b| b == 1).unwrap();
        bytes[at] = 0xff;
        root.write("proc/5/task/5/stat", bytes);
        let s = reader(&root).task_stat(5, 5).unwrap();
        assert_eq!(s.comm, "a\u{fffd}b");
    }

    #[test]
    fn task_stat_truncated_and_garbage_lines_are_errors() {
        let full = FakeRoot::stat_line(7, "cat", 'R', 0, 1, 2, 3, 0);
        let fields: Vec<&str> = full.split(' ').collect();
        let cases: Vec<(String, &[&str])> = vec![
            // Cut after field 20: utime is there, processor is not.
            (
                fields[..20].join(" "),
                &["field 22 (starttime)", "ends after field 20"],
            ),
            (
                fields[..38].join(" "),
                &["field 39 (processor)", "ends after field 38"],
            ),
            ("7 (cat".into(), &["field 2 (comm)", "truncated"]),
            ("".into(), &["field 2 (comm)"]),
            (full.replacen("7 (", "x (", 1), &["field 1 (pid)", "\"x\""]),
            (
                full.replacen(") R ", ") RR ", 1),
                &["field 3 (state)", "\"RR\""],
            ),
            (
                full.replacen(" 1 2 ", " one 2 ", 1),
                &["field 14 (utime)", "\"one\""],
            ),
        ];
        for (text, words) in cases {
            let root = FakeRoot::new();
            root.write("proc/7/task/7/stat", &text);
            assert_parse_err(
                reader(&root).task_stat(7, 7).unwrap_err(),
                "proc/7/task/7/stat",
                words,
            );
        }
    }

    #[test]
    fn task_stat_children_times_that_overflow_are_an_error() {
        let text = include_str!("../../tests/fuzz/corpus/task_stat/regress-cutime-overflow");
        let e = parse_task_stat(Path::new("/proc/1234/stat"), 1234, text.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/proc/1234/stat")
                && e.contains("cutime, cstime")
                && e.contains("overflows"),
            "{e}"
        );
    }

    #[test]
    fn task_stat_tid_must_match_directory() {
        let root = FakeRoot::new();
        root.write(
            "proc/7/task/8/stat",
            FakeRoot::stat_line(9, "x", 'R', 0, 0, 0, 0, 0),
        );
        assert_parse_err(
            reader(&root).task_stat(7, 8).unwrap_err(),
            "proc/7/task/8/stat",
            &["field 1", "thread 9, not 8"],
        );
    }

    // ---- cgroup ----

    #[test]
    fn cgroup_v2_v1_hybrid_and_none() {
        let cases: &[(&str, Option<(CgroupVersion, &str)>)] = &[
            (
                "0::/system.slice/noisy.service\n",
                Some((CgroupVersion::V2, "/system.slice/noisy.service")),
            ),
            (
                "12:pids:/user.slice\n4:cpu,cpuacct:/batch/job1\n3:memory:/x\n",
                Some((CgroupVersion::V1, "/batch/job1")),
            ),
            // Hybrid: the v1 cpu controller governs CPU, not the v2 line.
            (
                "9:name=systemd:/\n1:cpu:/lim\n0::/\n",
                Some((CgroupVersion::V1, "/lim")),
            ),
            // A path may itself contain ':'.
            ("0::/weird:name\n", Some((CgroupVersion::V2, "/weird:name"))),
            // v1 without the cpu controller and no v2 line.
            ("3:cpuset:/a\n2:cpuacct:/b\n", None),
            ("", None),
        ];
        for (text, want) in cases {
            let root = FakeRoot::new();
            root.write("proc/3/cgroup", text);
            let got = reader(&root).cgroup(3).unwrap();
            let want = want.map(|(version, path)| TaskCgroup {
                version,
                path: path.to_string(),
            });
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn cgroup_malformed_is_an_error() {
        let root = FakeRoot::new();
        root.write("proc/3/cgroup", "0::/\ngarbage\n");
        assert_parse_err(
            reader(&root).cgroup(3).unwrap_err(),
            "proc/3/cgroup",
            &["line 2", "garbage"],
        );
    }

    // ---- uptime ----

    #[test]
    fn uptime_present_absent_malformed() {
        let root = FakeRoot::new();
        assert_eq!(reader(&root).uptime().unwrap(), None);
        root.write("proc/uptime", "12345.67 24000.00\n");
        assert_eq!(
            reader(&root).uptime().unwrap(),
            Some(Duration::from_secs_f64(12345.67))
        );
        root.write("proc/uptime", "soon\n");
        assert_parse_err(
            reader(&root).uptime().unwrap_err(),
            "proc/uptime",
            &["\"soon\""],
        );
    }

    // ---- walk ----

    #[test]
    fn walk_reads_all_threads_skips_vanished_and_reports_broken() {
        let root = FakeRoot::new();
        // Process 1 (init), a kernel thread, a two-thread process with a v1
        // cgroup, a process whose task dir vanished, one whose thread's stat
        // vanished, one with a broken stat, and non-pid entries.
        root.task(1, 1, "systemd", 0, 5, 5, 1, 0)
            .write("proc/1/cgroup", "0::/init.scope\n")
            .task(2, 2, "kthreadd", PF_KTHREAD, 0, 0, 1, 1)
            .write("proc/2/cgroup", "0::/\n")
            .task(300, 300, "my (weird) proc", 0, 10, 0, 50, 1)
            .task(300, 301, "worker 1", 0, 20, 1, 51, 0)
            .write("proc/300/cgroup", "4:cpu,cpuacct:/batch\n0::/\n")
            .write("proc/400/cgroup", "0::/gone\n") // no task/ at all
            .write("proc/500/task/500/schedstat", "1 2 3\n") // no stat
            .write("proc/500/cgroup", "0::/\n")
            .write("proc/600/task/600/stat", "600 (half")
            .write("proc/600/cgroup", "0::/\n")
            .write("proc/self/stat", "not a pid dir")
            .write("proc/stat", STAT)
            .write("proc/uptime", "10.50 3.00\n");
        let walk = reader(&root).walk_tasks().unwrap();
        assert_eq!(
            walk.snapshot.boot_ticks,
            Some(10 * user_hz() + user_hz() / 2)
        );
        let tids: Vec<i32> = walk.snapshot.tasks.keys().copied().collect();
        assert_eq!(tids, vec![1, 2, 300, 301]);
        assert!(walk.snapshot.user_hz > 0);
        let w = &walk.snapshot.tasks[&301];
        assert_eq!(
            (w.stat.pid, w.stat.comm.as_str(), w.stat.last_cpu),
            (300, "worker 1", 0)
        );
        assert_eq!(
            w.cgroup,
            Some(TaskCgroup {
                version: CgroupVersion::V1,
                path: "/batch".into()
            })
        );
        assert_eq!(walk.snapshot.tasks[&300].stat.comm, "my (weird) proc");
        assert!(walk.snapshot.tasks[&2].stat.is_kernel_thread());
        assert_eq!(walk.errors.len(), 1, "{:?}", walk.errors);
        assert_parse_err(
            walk.errors.into_iter().next().unwrap(),
            "proc/600/task/600/stat",
            &["comm"],
        );
    }

    #[test]
    fn walk_without_cgroup_file_still_lists_the_task() {
        let root = FakeRoot::new();
        root.task(42, 42, "lonely", 0, 1, 1, 1, 0);
        let walk = reader(&root).walk_tasks().unwrap();
        assert!(walk.errors.is_empty(), "{:?}", walk.errors);
        assert_eq!(walk.snapshot.tasks[&42].cgroup, None);
    }

    #[test]
    fn walk_of_missing_proc_fails_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = ProcReader::with_root(dir.path().join("nowhere"))
            .walk_tasks()
            .unwrap_err();
        assert!(err.to_string().contains("nowhere"), "{err}");
    }

    // ---- the real /proc ----

    fn thread_cpu_ns() -> u64 {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `t` is a valid, writable timespec.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
        assert_eq!(rc, 0, "clock_gettime");
        t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
    }

    #[test]
    fn real_schedstat_run_time_grows_with_work() {
        let r = ProcReader::new();
        let (pid, tid) = (std::process::id() as i32, gettid());
        let before = r.schedstat(pid, tid).unwrap();
        let cpu0 = thread_cpu_ns();
        let mut x = 0u64;
        while thread_cpu_ns() - cpu0 < 100_000_000 {
            for i in 0..10_000u64 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
            }
        }
        let spent = thread_cpu_ns() - cpu0;
        let after = r.schedstat(pid, tid).unwrap();
        let grew = after.run_ns - before.run_ns;
        // schedstat is updated at ticks and context switches, so it may lag
        // the thread clock by a tick or so; it must not exceed it by much.
        assert!(
            grew >= spent * 3 / 4 && grew <= spent + 50_000_000,
            "schedstat run grew {grew} ns over {spent} ns of thread CPU time"
        );
        assert!(after.timeslices >= before.timeslices);
        assert!(after.wait_ns >= before.wait_ns);
    }

    #[test]
    fn real_walk_finds_a_blocked_thread_by_tid() {
        let (tid_tx, tid_rx) = crossbeam_channel::bounded(1);
        let (go_tx, go_rx) = crossbeam_channel::bounded::<()>(0);
        let h = std::thread::Builder::new()
            .name("odin-blocker".into())
            .spawn(move || {
                tid_tx.send(gettid()).unwrap();
                let _ = go_rx.recv();
            })
            .unwrap();
        let tid = tid_rx.recv().unwrap();
        let walk = ProcReader::new().walk_tasks().unwrap();
        drop(go_tx);
        h.join().unwrap();
        let t = walk
            .snapshot
            .tasks
            .get(&tid)
            .unwrap_or_else(|| panic!("thread {tid} not in the walk"));
        assert_eq!(t.stat.pid, std::process::id() as i32);
        assert_eq!(t.stat.comm, "odin-blocker");
        assert!(!t.stat.is_kernel_thread());
        assert!("RSD".contains(t.stat.state), "state {}", t.stat.state);
        // Our own process must be there too, and PID 1.
        assert!(walk.snapshot.tasks.contains_key(&gettid()));
        assert!(walk.snapshot.tasks.contains_key(&1));
        for e in &walk.errors {
            eprintln!("walk error (not fatal): {e}");
        }
    }

    #[test]
    fn real_stat_has_every_online_cpu() {
        let online = crate::topology::online_cpus(Path::new("/")).unwrap();
        let stat = ProcReader::new().stat().unwrap();
        for cpu in online.iter() {
            let line = stat
                .cpus
                .get(&cpu)
                .unwrap_or_else(|| panic!("no cpu{cpu} line"));
            assert!(line.total() > 0, "cpu{cpu}: {line:?}");
        }
    }

    #[test]
    fn real_pressure_parses_if_present() {
        match ProcReader::new().cpu_pressure().unwrap() {
            Some(p) => assert!(p.some.avg10 >= 0.0 && p.some.avg10 <= 100.0, "{p:?}"),
            None => eprintln!("skip: no /proc/pressure/cpu on this kernel"),
        }
    }
}
