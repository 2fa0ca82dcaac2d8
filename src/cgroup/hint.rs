//! Cgroup hints against antagonists: advise (log and export) or enforce
//! (cap through [`Enforcer`]), driven each tick by the pure
//! [`Escalation`] machine.
//!
//! Never touched, in either mode: PID 1, kernel threads (`PF_KTHREAD`,
//! kthreadd and its children), odin's own process, and processes in a
//! cgroup on the protect list (or below one). With an allow list, only
//! processes in those cgroups (or below) are candidates at all.
//!
//! An antagonist is the process the monitor saw, pid and start time: one
//! whose pid now names another process is forgotten, never hinted or
//! capped.
//!
//! The hint says, per process, where the cap would go and how
//! ([`enforce::plan`]): odin's best-effort cgroup (v1), the process's own
//! cgroup's `cpu.max` or its systemd unit's `CPUQuota=` (v2), or, when
//! its cgroup also holds innocent processes or has no `cpu` controller,
//! no cap at all ("advise only", with the reason in the log line, the
//! hint's `limit` and the metric).
//!
//! A missing or read-only `cpu` controller, or a state directory odin
//! cannot write, turns enforce into advise with one warning; so does a
//! failure while creating odin's cgroups (after undoing what was done).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::enforce::{self, EnforceSettings, Enforcer, Target};
use super::escalation::{Escalation, Input, SloStatus, Step, Timing};
use super::journal::UndoReport;
use super::systemd::UnitManager;
use super::vet::{Refused, Verdict, Vetter, ancestors};
use super::{CgroupFs, Hierarchy, Layout};
use crate::cpulist::CpuSet;
use crate::policy::Antagonist;

/// How long an antagonist counts as named after it was last seen, in
/// seconds: the task walk names nothing on a tick it is skipped or on the
/// first tick after a pause.
const MEMORY_S: f64 = 1.0;

/// What odin does about antagonists through cgroups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Nothing.
    Off,
    /// Log and export the hint, change nothing.
    #[default]
    Advise,
    /// Apply it (and undo it when the interference ends or odin stops).
    Enforce,
}

impl Mode {
    /// `off`, `advise` or `enforce`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Advise => "advise",
            Mode::Enforce => "enforce",
        }
    }
}

/// Everything the hints need, from the configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// off, advise or enforce.
    pub mode: Mode,
    /// Enforce mode's cgroups, cap and journal.
    pub enforce: EnforceSettings,
    /// When to escalate and lift.
    pub timing: Timing,
    /// Margin below the objective that counts as slack (0..1).
    pub slack: f64,
    /// cgroups never touched.
    pub protect: Vec<String>,
    /// When not empty: the only cgroups whose processes may be capped.
    pub allow: Vec<String>,
}

/// One process the hint names.
#[derive(Clone, Debug, PartialEq)]
pub struct HintTask {
    /// Process id.
    pub pid: i32,
    /// Start time, against pid reuse.
    pub start: u64,
    /// Command name.
    pub comm: String,
    /// Its cgroup in the `cpu` hierarchy.
    pub cgroup: String,
    /// CPUs it used on the pipeline's CPUs (all its threads).
    pub cpu_share: f64,
    /// Where the cap goes: odin's best-effort cgroup (v1), or its own
    /// cgroup (v2).
    pub target: String,
    /// The limit there, as the files (or systemd) say it; `none: ...`
    /// with the reason when only advice is possible.
    pub limit: String,
    /// Why its cgroup cannot be capped, if it cannot.
    pub advise_only: Option<String>,
}

/// A hint: which processes, where to, what limit, what it should gain.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Hint {
    /// The processes to cap.
    pub tasks: Vec<HintTask>,
    /// Named antagonists that are not candidates, with the reason.
    pub refused: Vec<Refused>,
    /// CPU time the pipeline's CPUs should get back, in CPUs (from the
    /// tasks that can be capped).
    pub expected_gain_cpus: f64,
}

/// What the hints are doing, for metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Status {
    /// The configured mode.
    pub configured: Mode,
    /// The mode in force (advise when enforce is impossible).
    pub effective: Mode,
    /// Escalated now.
    pub escalated: bool,
    /// The hint while escalated.
    pub hint: Option<Hint>,
    /// Caps applied since the start.
    pub enforcements: u64,
    /// Caps lifted since the start.
    pub lifts: u64,
    /// Processes under a cap now.
    pub capped_tasks: usize,
    /// Why enforce mode is not in force although configured.
    pub degraded: Option<String>,
}

/// One tick's view of the pipeline.
#[derive(Clone, Copy, Debug)]
pub struct Tick<'a> {
    /// Seconds since the start.
    pub t: f64,
    /// The objective's status.
    pub slo: SloStatus,
    /// The antagonists the monitor named on the pipeline's PEs.
    pub antagonists: &'a [Antagonist],
    /// The pipeline's CPUs.
    pub pipeline_cpus: &'a CpuSet,
}

/// Advise and enforce, over the agent's life.
#[derive(Debug)]
pub struct Hinter {
    settings: Settings,
    fs: Arc<dyn CgroupFs>,
    units: Option<Arc<dyn UnitManager>>,
    own_pid: i32,
    /// The processes odin runs under, never capped.
    supervisors: Vec<i32>,
    proc: PathBuf,
    /// The `cpu` hierarchy, for the hint's cgroups and limit.
    cpu: Option<Hierarchy>,
    machine: Escalation,
    enforcer: Option<Enforcer>,
    degraded: Option<String>,
    hint: Option<Hint>,
    /// Antagonists by pid: when last seen, who (start time), name, and
    /// the threads' shares summed.
    seen: BTreeMap<i32, Seen>,
    enforcements: u64,
    lifts: u64,
}

/// An antagonist as last seen.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    /// When, seconds since the start.
    t: f64,
    /// Its start time: who it is.
    start: u64,
    comm: String,
    /// CPUs its threads used on the pipeline's CPUs.
    share: f64,
}

/// One line for the log from an undo.
fn undo_summary(r: &UndoReport) -> String {
    let mut parts = r.done.clone();
    parts.extend(
        r.refused
            .iter()
            .map(|(e, why)| format!("REFUSED to undo (not trusted): {e}: {why}")),
    );
    parts.extend(
        r.failed
            .iter()
            .map(|(e, err)| format!("FAILED to undo: {e}: {err}")),
    );
    parts.join("; ")
}

impl Hinter {
    /// Starts the hints: undoes what a previous run left in the journal
    /// (logging it), then prepares enforce mode if configured (degrading
    /// to advise with one warning if it cannot work here). `units` is
    /// systemd's manager, if odin has one: on v2 a unit's quota is set
    /// through it.
    pub fn start(
        settings: Settings,
        fs: Arc<dyn CgroupFs>,
        units: Option<Arc<dyn UnitManager>>,
        own_pid: i32,
    ) -> Self {
        match enforce::restore(
            fs.as_ref(),
            &settings.enforce.root,
            &settings.enforce.state_dir,
            units.as_deref(),
        ) {
            Ok(r) if r.is_empty() => {}
            Ok(r) if r.failed.is_empty() && r.refused.is_empty() => tracing::info!(
                "undid {} cgroup changes left by a previous run: {}",
                r.done.len(),
                undo_summary(&r)
            ),
            Ok(r) => tracing::warn!(
                "undoing cgroup changes left by a previous run (entries naming paths outside \
                 the detected cgroup mounts or /proc are refused and dropped): {}",
                undo_summary(&r)
            ),
            Err(e) => tracing::warn!("cgroup changes of a previous run not undone: {e}"),
        }
        let cpu = Layout::detect(&settings.enforce.root)
            .ok()
            .and_then(|l| l.hierarchy("cpu"));
        let proc = settings.enforce.root.join("proc");
        let mut h = Self {
            machine: Escalation::new(settings.timing),
            supervisors: ancestors(&proc, own_pid),
            proc,
            settings,
            fs,
            units,
            own_pid,
            cpu,
            enforcer: None,
            degraded: None,
            hint: None,
            seen: BTreeMap::new(),
            enforcements: 0,
            lifts: 0,
        };
        h.prepare();
        h
    }

    /// Builds the enforcer when enforce mode is configured.
    fn prepare(&mut self) {
        self.degraded = None;
        if self.settings.mode != Mode::Enforce || self.enforcer.is_some() {
            return;
        }
        match Enforcer::new(
            self.fs.clone(),
            self.settings.enforce.clone(),
            self.units.clone(),
            self.own_pid,
        ) {
            Ok(e) => {
                if let Some(note) = &e.cpuset_note {
                    tracing::warn!(
                        "cgroup.narrow_cpuset is on but {note}: capped antagonists keep their CPUs"
                    );
                }
                self.cpu = Some(e.cpu().clone());
                self.enforcer = Some(e);
            }
            Err(reason) => self.degrade(reason),
        }
    }

    fn degrade(&mut self, reason: String) {
        tracing::warn!("cgroup.mode is enforce but {reason}: acting as advise (hints only)");
        self.degraded = Some(reason);
    }

    /// The mode in force.
    pub fn effective(&self) -> Mode {
        match self.settings.mode {
            Mode::Enforce if self.enforcer.is_none() => Mode::Advise,
            m => m,
        }
    }

    /// The hint for the candidates among the antagonists seen lately,
    /// each with where and how it would be capped.
    fn hint(&self) -> Hint {
        let mut hint = Hint::default();
        let mut named = Vec::new();
        let vetter = Vetter {
            proc: &self.proc,
            cpu: self.cpu.as_ref(),
            own_pid: self.own_pid,
            supervisors: &self.supervisors,
            protect: &self.settings.protect,
            allow: &self.settings.allow,
        };
        for (&pid, seen) in &self.seen {
            match vetter.candidate(pid, seen.start, seen.share) {
                Verdict::Gone => {}
                Verdict::Refused(reason) => hint.refused.push(Refused {
                    pid,
                    comm: seen.comm.clone(),
                    reason,
                }),
                Verdict::Candidate { info, cgroup } => {
                    named.push(Target {
                        pid,
                        start: seen.start,
                        comm: info.comm.clone(),
                    });
                    hint.tasks.push(HintTask {
                        pid,
                        start: seen.start,
                        comm: info.comm,
                        cgroup,
                        cpu_share: seen.share,
                        target: String::new(),
                        limit: String::new(),
                        advise_only: None,
                    });
                }
            }
        }
        let enforce = &self.settings.enforce;
        let mut total = 0.0;
        for task in &mut hint.tasks {
            let planned = match &self.cpu {
                Some(h) => enforce::plan(
                    h,
                    &self.proc,
                    &task.cgroup,
                    &named,
                    &enforce.besteffort(),
                    self.units.is_some(),
                ),
                None => Err("no cpu controller is mounted".to_string()),
            };
            match planned {
                Ok(cap) => {
                    total += task.cpu_share;
                    task.target = cap.target().to_string();
                    task.limit = cap.limit_text(enforce);
                }
                Err(why) => {
                    task.target = task.cgroup.clone();
                    task.limit = format!("none: advise only, {why}");
                    task.advise_only = Some(why);
                }
            }
        }
        hint.expected_gain_cpus = (total - self.settings.enforce.quota).max(0.0);
        hint
    }

    /// One tick, after the policy's step.
    pub fn tick(&mut self, tick: &Tick) -> Step {
        if self.settings.mode == Mode::Off {
            return Step::Stay;
        }
        let mut now: BTreeMap<i32, Seen> = BTreeMap::new();
        for a in tick.antagonists {
            let e = now.entry(a.pid).or_insert_with(|| Seen {
                t: tick.t,
                start: a.start,
                comm: a.comm.clone(),
                share: 0.0,
            });
            // Threads of one process share its start; another start is
            // another process that got the pid within the tick.
            if e.start == a.start {
                e.share += a.cpu_share;
            }
        }
        // A pid seen again with another start is a new process: it
        // replaces the old one, whose memory is of no use.
        self.seen.extend(now);
        self.seen.retain(|_, s| tick.t - s.t <= MEMORY_S);
        let hint = self.hint();
        let capped_alive = self
            .enforcer
            .as_ref()
            .is_some_and(|e| !e.capped_now().is_empty());
        let step = self.machine.step(&Input {
            t: tick.t,
            slo: tick.slo,
            antagonists: !hint.tasks.is_empty() || capped_alive,
        });
        match step {
            Step::Escalate => {
                self.announce(&hint, tick.slo, "");
                if self.enforcer.is_some() {
                    self.enforce(&hint, tick.pipeline_cpus);
                }
                self.hint = Some(hint);
            }
            Step::Stay if self.machine.escalated() => {
                let known: BTreeSet<i32> = self
                    .hint
                    .iter()
                    .flat_map(|h| h.tasks.iter().map(|t| t.pid))
                    .collect();
                if hint.tasks.iter().any(|t| !known.contains(&t.pid)) {
                    self.announce(&hint, tick.slo, " (more antagonists)");
                    if self.enforcer.is_some() {
                        self.enforce(&hint, tick.pipeline_cpus);
                    }
                    let mut merged = hint;
                    if let Some(old) = &self.hint {
                        for t in &old.tasks {
                            if !merged.tasks.iter().any(|n| n.pid == t.pid) {
                                merged.tasks.push(t.clone());
                            }
                        }
                    }
                    self.hint = Some(merged);
                }
            }
            Step::Stay => {}
            Step::Lift => {
                self.lift("the interference ended or the objective has slack again");
                self.hint = None;
            }
        }
        step
    }

    /// The one log line of a hint (advise) or cap (enforce).
    fn announce(&self, hint: &Hint, slo: SloStatus, what: &str) {
        let list = |f: &dyn Fn(&HintTask) -> String| {
            hint.tasks.iter().map(f).collect::<Vec<_>>().join(",")
        };
        let refused = hint
            .refused
            .iter()
            .map(|r| format!("{} {}: {}", r.pid, r.comm, r.reason))
            .collect::<Vec<_>>()
            .join("; ");
        let advise_only = hint
            .tasks
            .iter()
            .filter_map(|t| {
                let why = t.advise_only.as_ref()?;
                Some(format!("{} {}: {why}", t.pid, t.comm))
            })
            .collect::<Vec<_>>()
            .join("; ");
        let mode = self.effective().as_str();
        tracing::warn!(
            mode,
            pids = list(&|t| t.pid.to_string()),
            comms = list(&|t| t.comm.clone()),
            cgroups = list(&|t| t.cgroup.clone()),
            targets = list(&|t| t.target.clone()),
            limits = list(&|t| t.limit.clone()),
            expected_gain_cpus = format!("{:.2}", hint.expected_gain_cpus),
            slo = ?slo,
            refused,
            advise_only,
            "cgroup hint{what}: the objective is missed and re-balancing did not fix it; {}",
            if mode == "enforce" {
                "capping the antagonists"
            } else {
                "capping the antagonists would help (cgroup.mode: enforce applies it)"
            }
        );
    }

    fn enforce(&mut self, hint: &Hint, cpus: &CpuSet) {
        let Some(e) = self.enforcer.as_mut() else {
            return;
        };
        let targets: Vec<Target> = hint
            .tasks
            .iter()
            .map(|t| Target {
                pid: t.pid,
                start: t.start,
                comm: t.comm.clone(),
            })
            .collect();
        let was_active = e.active();
        match e.cap(&targets, cpus) {
            Ok(r) => {
                if !was_active && e.active() {
                    self.enforcements += 1;
                }
                for n in &r.notes {
                    tracing::warn!("cgroup enforce: {n}");
                }
                for (pid, err) in &r.failed {
                    tracing::warn!("cgroup enforce: pid {pid} not capped: {err}");
                }
                for pid in &r.dropped {
                    tracing::info!(
                        "cgroup enforce: pid {pid} not capped: it names another process than \
                         the antagonist seen (pid reused)"
                    );
                }
                for (cgroup, pids, why) in &r.advised {
                    tracing::warn!(
                        "cgroup enforce: {cgroup} (pid {}) not capped, advise only: {why}",
                        pids.iter()
                            .map(i32::to_string)
                            .collect::<Vec<_>>()
                            .join(",")
                    );
                }
                if !r.capped.is_empty() {
                    tracing::info!(
                        "cgroup enforce: capped pid {}: {}",
                        r.capped
                            .iter()
                            .map(i32::to_string)
                            .collect::<Vec<_>>()
                            .join(","),
                        r.how.join("; ")
                    );
                }
            }
            Err(err) => {
                tracing::error!("cgroup enforce failed: {err}; undoing");
                self.lift("enforcing failed");
                self.enforcer = None;
                self.machine.reset();
                self.degrade(format!("enforcing failed ({err})"));
            }
        }
    }

    /// Undoes the cap, if any, and logs what was undone.
    fn lift(&mut self, why: &str) {
        let Some(e) = self.enforcer.as_mut() else {
            if self.hint.is_some() {
                tracing::info!("cgroup hint withdrawn: {why}");
            }
            return;
        };
        if e.journal().entries().is_empty() {
            return;
        }
        match e.lift() {
            Ok(r) if r.failed.is_empty() => {
                self.lifts += 1;
                tracing::info!("cgroup cap lifted ({why}): {}", undo_summary(&r));
            }
            Ok(r) => tracing::warn!(
                "cgroup cap lifted in part ({why}), the rest is retried at the next start: {}",
                undo_summary(&r)
            ),
            Err(err) => tracing::error!("cgroup cap not lifted ({why}): {err}"),
        }
    }

    /// Applies new settings: leaving enforce (or changing where and how it
    /// enforces) undoes the cap first. Returns what changed, if anything.
    pub fn reconfigure(&mut self, settings: Settings) -> Option<String> {
        if settings == self.settings {
            return None;
        }
        let old = self.settings.mode;
        let rebuild = settings.mode != Mode::Enforce || settings.enforce != self.settings.enforce;
        if rebuild && self.enforcer.is_some() {
            self.lift("the configuration changed");
            self.enforcer = None;
            self.machine.reset();
            self.hint = None;
        }
        if settings.mode != old {
            self.machine.reset();
            self.hint = None;
        }
        self.machine.set_timing(settings.timing);
        self.settings = settings;
        self.prepare();
        Some(format!(
            "cgroup mode {} -> {}{}",
            old.as_str(),
            self.settings.mode.as_str(),
            if self.effective() != self.settings.mode {
                " (acting as advise)"
            } else {
                ""
            }
        ))
    }

    /// At exit: undoes the cap.
    pub fn finish(&mut self) {
        self.lift("odin is stopping");
        self.enforcer = None;
    }

    /// Why enforce mode is not in force although configured.
    pub fn degraded(&self) -> Option<&str> {
        self.degraded.as_deref()
    }

    /// What the hints are doing.
    pub fn status(&self) -> Status {
        Status {
            configured: self.settings.mode,
            effective: self.effective(),
            escalated: self.machine.escalated(),
            hint: self.hint.clone().filter(|_| self.machine.escalated()),
            enforcements: self.enforcements,
            lifts: self.lifts,
            capped_tasks: self.enforcer.as_ref().map_or(0, |e| e.capped_now().len()),
            degraded: self.degraded.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::PF_KTHREAD;
    use crate::cgroup::testutil::{FakeTree, Op};

    const ODIN: i32 = 100;

    fn settings(t: &FakeTree, mode: Mode) -> Settings {
        Settings {
            mode,
            enforce: EnforceSettings {
                root: t.dir.path().to_path_buf(),
                name: "odin".into(),
                quota: 0.2,
                weight: 1000,
                narrow_cpuset: false,
                state_dir: t.path("var/lib/odin"),
            },
            timing: Timing {
                escalate_after: 1.0,
                lift_after: 1.0,
                hold: 2.0,
            },
            slack: 0.2,
            protect: vec!["init.scope".into()],
            allow: Vec::new(),
        }
    }

    fn ant(pid: i32, share: f64) -> Antagonist {
        Antagonist {
            pid,
            // FakeTree::process starts pid p at 1000 + p.
            start: 1000 + pid as u64,
            tid: pid,
            comm: format!("p{pid}"),
            cgroup: None,
            cpu_share: share,
        }
    }

    /// A machine with odin (started from a shell), init, a kernel thread,
    /// a protected process and two hogs (in the shell's cgroup); cgroup v1
    /// or v2.
    fn machine(v1: bool) -> FakeTree {
        let t = if v1 {
            FakeTree::v1()
        } else {
            FakeTree::v2("cpu", "cpu")
        };
        t.process(50, 1, "sh", 0, "/user.slice");
        t.process(ODIN, 50, "odin", 0, "/");
        t.process(1, 0, "systemd", 0, "/init.scope");
        t.process(20, 2, "kworker/1:0", PF_KTHREAD, "/");
        t.process(300, 1, "agetty", 0, "/init.scope/sub");
        t.process(400, 1, "hog", 0, "/user.slice");
        t.process(401, 1, "hog2", 0, "/user.slice");
        t
    }

    fn tick(h: &mut Hinter, t: f64, slo: SloStatus, ants: &[Antagonist]) -> Step {
        h.tick(&Tick {
            t,
            slo,
            antagonists: ants,
            pipeline_cpus: &"0-1".parse().unwrap(),
        })
    }

    #[test]
    fn enforce_caps_only_safe_processes_and_lifts_when_the_hog_is_gone() {
        let t = machine(true);
        let mut h = Hinter::start(settings(&t, Mode::Enforce), t.fs.clone(), None, ODIN);
        assert_eq!(h.effective(), Mode::Enforce);
        let all = [
            ant(1, 0.3),
            ant(20, 0.3),
            ant(50, 0.5),
            ant(ODIN, 0.9),
            ant(300, 0.4),
            ant(400, 0.9),
            ant(401, 0.05),
        ];
        assert_eq!(tick(&mut h, 0.0, SloStatus::Missed, &all), Step::Stay);
        assert!(t.fs.take().is_empty(), "nothing before escalate_after");
        assert_eq!(tick(&mut h, 1.0, SloStatus::Missed, &all), Step::Escalate);
        let moved: Vec<String> =
            t.fs.take()
                .into_iter()
                .filter_map(|o| match o {
                    Op::Write(p, pid) if p.ends_with("cgroup.procs") => Some(format!("{p} {pid}")),
                    _ => None,
                })
                .collect();
        assert_eq!(
            moved,
            [
                "sys/fs/cgroup/cpu,cpuacct/odin/pipeline/cgroup.procs 100",
                "sys/fs/cgroup/cpu,cpuacct/odin/besteffort/cgroup.procs 400",
            ]
        );
        let st = h.status();
        let hint = st.hint.unwrap();
        assert_eq!(hint.tasks.iter().map(|t| t.pid).collect::<Vec<_>>(), [400]);
        assert_eq!(
            (hint.tasks[0].target.as_str(), hint.tasks[0].limit.as_str()),
            (
                "/odin/besteffort",
                "cpu.cfs_quota_us=20000 cpu.cfs_period_us=100000"
            )
        );
        let refused: Vec<(i32, String)> = hint
            .refused
            .iter()
            .map(|r| (r.pid, r.reason.to_string()))
            .collect();
        assert_eq!(
            refused,
            [
                (1, "PID 1".to_string()),
                (20, "kernel thread".into()),
                (50, "a process odin runs under".into()),
                (ODIN, "odin itself".into()),
                (300, "protected cgroup init.scope".into()),
                (
                    401,
                    "0.05 CPU on the pipeline's CPUs, below the 0.1 worth capping".into()
                ),
            ]
        );
        assert!((hint.expected_gain_cpus - 0.7).abs() < 1e-9);
        assert_eq!((st.enforcements, st.capped_tasks), (1, 1));

        // A second hog appears while escalated: capped too.
        tick(
            &mut h,
            1.5,
            SloStatus::Missed,
            &[ant(400, 0.2), ant(401, 0.9)],
        );
        assert_eq!(t.cgroup_of(401, "cpu"), "/odin/besteffort");
        // Both exit: calm, but the hold keeps the cap until t = 3.
        for pid in [400, 401] {
            std::fs::remove_dir_all(t.path(&format!("proc/{pid}"))).unwrap();
            t.write("sys/fs/cgroup/cpu,cpuacct/odin/besteffort/cgroup.procs", "");
        }
        assert_eq!(tick(&mut h, 2.0, SloStatus::Missed, &[]), Step::Stay);
        assert_eq!(tick(&mut h, 2.9, SloStatus::Missed, &[]), Step::Stay);
        assert_eq!(tick(&mut h, 3.0, SloStatus::Missed, &[]), Step::Lift);
        assert!(!t.path("sys/fs/cgroup/cpu,cpuacct/odin").exists());
        assert_eq!(t.cgroup_of(ODIN, "cpu"), "/");
        let st = h.status();
        assert_eq!((st.escalated, st.lifts, st.capped_tasks), (false, 1, 0));
        assert!(st.hint.is_none());
    }

    #[test]
    fn advise_changes_nothing_and_a_missing_controller_degrades_enforce() {
        let t = machine(false);
        let mut h = Hinter::start(settings(&t, Mode::Advise), t.fs.clone(), None, ODIN);
        tick(&mut h, 0.0, SloStatus::Missed, &[ant(400, 0.9)]);
        assert_eq!(
            tick(&mut h, 1.0, SloStatus::Missed, &[ant(400, 0.9)]),
            Step::Escalate
        );
        let hint = h.status().hint.unwrap();
        // On v2 the hog shares /user.slice with the shell: advice only,
        // and the hint says why.
        let task = &hint.tasks[0];
        assert_eq!(
            (task.cgroup.as_str(), task.target.as_str()),
            ("/user.slice", "/user.slice")
        );
        assert!(
            task.limit
                .starts_with("none: advise only, /user.slice also holds pid 50 (sh)"),
            "{}",
            task.limit
        );
        assert!(task.advise_only.is_some());
        assert_eq!(hint.expected_gain_cpus, 0.0);
        assert!(t.fs.take().is_empty(), "advise writes nothing");

        let t = FakeTree::v2("memory", "");
        t.process(ODIN, 1, "odin", 0, "/");
        t.process(400, 1, "hog", 0, "/");
        let mut h = Hinter::start(settings(&t, Mode::Enforce), t.fs.clone(), None, ODIN);
        assert_eq!(h.effective(), Mode::Advise);
        assert!(h.status().degraded.unwrap().contains("no cpu controller"));
        tick(&mut h, 0.0, SloStatus::Missed, &[ant(400, 0.9)]);
        assert_eq!(
            tick(&mut h, 1.0, SloStatus::Missed, &[ant(400, 0.9)]),
            Step::Escalate
        );
        assert!(t.fs.take().is_empty());
        assert!(h.status().hint.is_some());
    }

    #[test]
    fn leaving_enforce_on_reload_undoes_and_a_new_start_restores_a_crash() {
        let t = machine(true);
        let mut h = Hinter::start(settings(&t, Mode::Enforce), t.fs.clone(), None, ODIN);
        tick(&mut h, 0.0, SloStatus::Missed, &[ant(400, 0.9)]);
        tick(&mut h, 1.0, SloStatus::Missed, &[ant(400, 0.9)]);
        assert_eq!(t.cgroup_of(400, "cpu"), "/odin/besteffort");
        let change = h.reconfigure(settings(&t, Mode::Advise)).unwrap();
        assert_eq!(change, "cgroup mode enforce -> advise");
        assert_eq!(t.cgroup_of(400, "cpu"), "/user.slice");
        assert!(!t.path("sys/fs/cgroup/cpu,cpuacct/odin").exists());
        assert!(h.reconfigure(settings(&t, Mode::Advise)).is_none());

        // Back to enforce, cap, and crash (no finish): the next start undoes.
        h.reconfigure(settings(&t, Mode::Enforce)).unwrap();
        tick(&mut h, 2.0, SloStatus::Missed, &[ant(400, 0.9)]);
        tick(&mut h, 3.0, SloStatus::Missed, &[ant(400, 0.9)]);
        assert_eq!(t.cgroup_of(400, "cpu"), "/odin/besteffort");
        drop(h);
        let h = Hinter::start(settings(&t, Mode::Advise), t.fs.clone(), None, ODIN);
        assert_eq!(t.cgroup_of(400, "cpu"), "/user.slice");
        assert!(!t.path("sys/fs/cgroup/cpu,cpuacct/odin").exists());
        assert_eq!(h.effective(), Mode::Advise);

        // finish() undoes too.
        let mut h = Hinter::start(settings(&t, Mode::Enforce), t.fs.clone(), None, ODIN);
        tick(&mut h, 0.0, SloStatus::Missed, &[ant(400, 0.9)]);
        tick(&mut h, 1.0, SloStatus::Missed, &[ant(400, 0.9)]);
        assert_eq!(t.cgroup_of(400, "cpu"), "/odin/besteffort");
        h.finish();
        assert_eq!(t.cgroup_of(400, "cpu"), "/user.slice");
        assert!(
            !t.path("var/lib/odin")
                .join(crate::cgroup::journal::FILE)
                .exists()
        );
    }

    #[test]
    fn v2_hints_and_caps_a_lone_antagonists_own_cgroup() {
        let t = FakeTree::v2("cpu", "cpu");
        t.process(50, 1, "sh", 0, "/user.slice/session-1.scope");
        t.process(ODIN, 50, "odin", 0, "/user.slice/session-1.scope");
        t.enable("/system.slice", "cpu");
        t.process(400, 1, "hog", 0, "/system.slice/hog.service");
        let mut h = Hinter::start(settings(&t, Mode::Enforce), t.fs.clone(), None, ODIN);
        tick(&mut h, 0.0, SloStatus::Missed, &[ant(400, 0.9)]);
        assert_eq!(
            tick(&mut h, 1.0, SloStatus::Missed, &[ant(400, 0.9)]),
            Step::Escalate
        );
        let st = h.status();
        let task = &st.hint.as_ref().unwrap().tasks[0];
        assert_eq!(
            (task.target.as_str(), task.limit.as_str()),
            ("/system.slice/hog.service", "cpu.max=\"20000 100000\"")
        );
        assert_eq!(
            t.fs.take(),
            vec![Op::Write(
                "sys/fs/cgroup/system.slice/hog.service/cpu.max".into(),
                "20000 100000".into()
            )]
        );
        assert_eq!((st.enforcements, st.capped_tasks), (1, 1));
        assert_eq!(t.cgroup_of(ODIN, "cpu"), "/user.slice/session-1.scope");
        h.finish();
        assert_eq!(
            t.read("sys/fs/cgroup/system.slice/hog.service/cpu.max"),
            "max 100000"
        );
    }

    #[test]
    fn an_antagonist_whose_pid_was_reused_is_forgotten_not_capped() {
        let t = machine(true);
        let mut h = Hinter::start(settings(&t, Mode::Enforce), t.fs.clone(), None, ODIN);
        tick(&mut h, 0.0, SloStatus::Missed, &[ant(400, 0.9)]);
        // The hog exits and another process gets its pid.
        let stat = t.read("proc/400/stat");
        t.write("proc/400/stat", &stat.replace(" 1400 ", " 7777 "));
        assert_eq!(tick(&mut h, 1.0, SloStatus::Missed, &[]), Step::Stay);
        assert!(t.fs.take().is_empty());
        assert_eq!(t.cgroup_of(400, "cpu"), "/user.slice");
        // Seen again as itself (the monitor reads the new start), it is a
        // new antagonist with a fresh escalate_after.
        let mut again = ant(400, 0.9);
        again.start = 7777;
        tick(&mut h, 2.0, SloStatus::Missed, &[again.clone()]);
        assert_eq!(
            tick(&mut h, 3.0, SloStatus::Missed, &[again]),
            Step::Escalate
        );
        assert_eq!(t.cgroup_of(400, "cpu"), "/odin/besteffort");
        h.finish();
    }
}
