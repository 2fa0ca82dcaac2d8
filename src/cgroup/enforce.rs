//! Enforce mode: the cap on antagonists, where it lives per cgroup
//! version, and undo.
//!
//! On cgroup v2 a process has one cgroup for every controller, and that
//! cgroup carries its unit's memory, pids, device and network policies:
//! moving the process elsewhere would strip it of them (a container would
//! escape its limits by burning CPU). So on v2 odin moves nobody and
//! creates no cgroup; it caps the antagonist's own leaf cgroup where it
//! is, and only when that cap hits nobody else:
//! ```text
//!   leaf = the antagonist's cgroup (in the cpu hierarchy)
//!   every process in leaf and below a named antagonist (pid + start)?
//!     no  -> advise only: "<leaf> also holds pid N (comm)"
//!   leaf a systemd unit (.service, .scope) and a manager present?
//!     yes -> CPUQuota= at runtime through the manager (old quota journalled)
//!   parent's cgroup.subtree_control lists cpu?
//!     no  -> advise only: "<leaf> has no cpu.max" (odin never enables it)
//!     yes -> <leaf>/cpu.max = quota (old value journalled)
//! ```
//! odin itself stays in its own cgroup (its unit); give it a weight there
//! (`CPUWeight=`) if it needs one. Every leaf gets the quota of its own.
//!
//! On v1 each controller is its own hierarchy, so moving a process in the
//! `cpu` hierarchy leaves its memory, pids and devices cgroups alone; odin
//! keeps its own cgroups there (`<mount>` is the controller's mount point,
//! `<name>` the configured name, `odin`):
//! ```text
//!   <mount>/<name>/              weight = pipeline weight (holds no task)
//!           <name>/pipeline/     weight = pipeline weight: odin's process
//!           <name>/besteffort/   weight = pipeline weight,
//!                                cfs_quota_us/cfs_period_us = quota: the
//!                                capped antagonists, sharing one quota
//! ```
//! Antagonists usually share a cgroup with unrelated processes (often the
//! root, where odin is too), so there odin moves the antagonist processes,
//! and remembers where each came from.
//!
//! Narrowing the CPUs follows the `cpuset` hierarchy's version the same
//! way: on v1 `<cpuset mount>/<name>/besteffort` without the pipeline's
//! CPUs, each antagonist moved there as well; on v2 the capped leaf's own
//! `cpuset.cpus` (journalled), under the same conditions as its `cpu.max`.
//!
//! An antagonist is a process, not a pid: just before every write that
//! concerns it (a move, a leaf's `cpu.max`, a unit's quota), its start
//! time is read again, and one that changed (the pid now belongs to
//! another process) is dropped, not capped.
//!
//! Every change goes through the [`Journal`] first; [`Enforcer::lift`]
//! and [`restore`] undo from it, checking each entry against the system
//! as detected at that moment.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::journal::{Entry, Journal, UndoEnv, UndoReport, quota_text};
use super::systemd::{UnitManager, unit_of};
use super::{CgroupError, CgroupFs, CgroupVersion, Hierarchy, Layout, ProcessInfo, v2};
use crate::cpulist::CpuSet;

/// The CFS period odin uses for caps, microseconds.
pub const PERIOD_US: u64 = 100_000;
/// The kernel's smallest quota, microseconds.
pub const MIN_QUOTA_US: u64 = 1_000;
/// The cgroup of the pipeline, below odin's (v1).
pub const PIPELINE: &str = "pipeline";
/// The cgroup of the capped antagonists, below odin's (v1).
pub const BESTEFFORT: &str = "besteffort";
/// What enforce mode needs to know.
#[derive(Clone, Debug, PartialEq)]
pub struct EnforceSettings {
    /// The file system root: `/proc` and the cgroup mounts are under it.
    pub root: PathBuf,
    /// odin's cgroup below each v1 hierarchy's root.
    pub name: String,
    /// The antagonists' cap, in CPUs.
    pub quota: f64,
    /// The pipeline's CPU weight (v2 scale, 1..=10000), for odin's own
    /// v1 cgroups.
    pub weight: u32,
    /// Also keep the capped antagonists off the pipeline's CPUs.
    pub narrow_cpuset: bool,
    /// Where the journal lives.
    pub state_dir: PathBuf,
}

impl EnforceSettings {
    /// The quota in microseconds per [`PERIOD_US`].
    #[allow(
        clippy::cast_possible_truncation,
        reason = "a quota share times the period, saturating"
    )]
    pub fn quota_us(&self) -> u64 {
        ((self.quota * PERIOD_US as f64).round() as u64).max(MIN_QUOTA_US)
    }

    /// The quota as systemd's `CPUQuotaPerSecUSec`: CPU time per second.
    pub fn quota_usec_per_sec(&self) -> u64 {
        self.quota_us() * (1_000_000 / PERIOD_US)
    }

    /// The best-effort cgroup (v1), as `/proc/<pid>/cgroup` shows it.
    pub fn besteffort(&self) -> String {
        format!("/{}/{BESTEFFORT}", self.name)
    }

    /// The pipeline's cgroup (v1), as `/proc/<pid>/cgroup` shows it.
    pub fn pipeline(&self) -> String {
        format!("/{}/{PIPELINE}", self.name)
    }
}

/// Undoes what a previous run left in the journal in `state_dir`, if
/// there is one, on the system under `root` as detected now (`units`:
/// systemd's manager, for unit quotas).
pub fn restore(
    fs: &dyn CgroupFs,
    root: &Path,
    state_dir: &Path,
    units: Option<&dyn UnitManager>,
) -> Result<UndoReport, CgroupError> {
    if !state_dir.join(super::journal::FILE).exists() {
        return Ok(UndoReport::default());
    }
    let env = UndoEnv::detect(fs, root, units)?;
    Ok(Journal::open(state_dir)?.undo_all(&env)?)
}

/// A process to cap.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// Its id.
    pub pid: i32,
    /// Its start time, as the monitor saw it: who it is.
    pub start: u64,
    /// Its name.
    pub comm: String,
}

/// How a cgroup holding antagonists is capped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cap {
    /// v1: the antagonists move into odin's best-effort cgroup `to`.
    Move {
        /// The best-effort cgroup.
        to: String,
    },
    /// v2: the cgroup's own `cpu.max`.
    CpuMax {
        /// The antagonists' leaf cgroup.
        cgroup: String,
    },
    /// v2 under systemd: the unit's runtime `CPUQuota=`.
    Unit {
        /// The unit.
        unit: String,
        /// Its cgroup.
        cgroup: String,
    },
}

impl Cap {
    /// Where the cap goes: the cgroup that gets the limit.
    pub fn target(&self) -> &str {
        match self {
            Cap::Move { to } => to,
            Cap::CpuMax { cgroup } | Cap::Unit { cgroup, .. } => cgroup,
        }
    }

    /// The limit, as the files (or systemd) say it.
    pub fn limit_text(&self, settings: &EnforceSettings) -> String {
        let quota = settings.quota_us();
        match self {
            Cap::Move { .. } => CgroupVersion::V1.limit_text(quota, PERIOD_US),
            Cap::CpuMax { .. } => CgroupVersion::V2.limit_text(quota, PERIOD_US),
            Cap::Unit { .. } => format!(
                "CPUQuota={}",
                quota_text(Some(settings.quota_usec_per_sec()))
            ),
        }
    }

    /// Which path is taken, for the log.
    pub fn how(&self, settings: &EnforceSettings) -> String {
        let limit = self.limit_text(settings);
        match self {
            Cap::Move { to } => format!("moved into {to} ({limit})"),
            Cap::CpuMax { cgroup } => format!("{cgroup} capped in place ({limit})"),
            Cap::Unit { unit, cgroup } => {
                format!("{unit} ({cgroup}) capped through systemd at runtime ({limit})")
            }
        }
    }
}

/// How the antagonists `named` in `cgroup` of the hierarchy `h` (whose
/// controller is the one to limit) can be capped: `Err` says why only
/// advice is possible. `besteffort` is odin's v1 cgroup; `systemd`, whether
/// a unit manager is at hand. Processes are read under `proc`.
///
/// On v2 the cgroup and everything below it must hold named antagonists
/// only, each still the process the monitor saw (pid and start time).
pub fn plan(
    h: &Hierarchy,
    proc: &Path,
    cgroup: &str,
    named: &[Target],
    besteffort: &str,
    systemd: bool,
) -> Result<Cap, String> {
    match h.version() {
        CgroupVersion::V1 => Ok(Cap::Move {
            to: besteffort.to_string(),
        }),
        CgroupVersion::V2 => plan_in_place(h, proc, cgroup, named, systemd),
    }
}

fn plan_in_place(
    h: &Hierarchy,
    proc: &Path,
    cgroup: &str,
    named: &[Target],
    systemd: bool,
) -> Result<Cap, String> {
    let ctrl = &h.controller;
    let dir = h.checked_dir(cgroup)?;
    if dir == h.mount {
        return Err(format!(
            "it is in the root cgroup, which has no {ctrl} limit of its own"
        ));
    }
    let procs = super::subtree_procs(&dir).map_err(|e| e.to_string())?;
    for pid in procs {
        let info = ProcessInfo::read(proc, pid).ok().flatten();
        let named = named.iter().find(|t| t.pid == pid);
        match (info, named) {
            (Some(p), Some(t)) if p.start == t.start => {}
            (None, _) => {} // gone: no one to hit
            (Some(p), Some(_)) => {
                return Err(format!(
                    "{cgroup} holds pid {pid} ({}), started after the antagonist of that pid \
                     was seen (pid reused): capping it would cap another process",
                    p.comm
                ));
            }
            (Some(p), None) => {
                return Err(format!(
                    "{cgroup} also holds pid {pid} ({}), which is not a named antagonist: \
                     capping the cgroup would cap it too",
                    p.comm
                ));
            }
        }
    }
    if systemd && let Some(unit) = unit_of(cgroup) {
        return Ok(Cap::Unit {
            unit: unit.to_string(),
            cgroup: cgroup.to_string(),
        });
    }
    let parent = dir.parent().unwrap_or(&h.mount);
    let enabled = v2::subtree_has(parent, ctrl).map_err(|e| e.to_string())?;
    if !enabled {
        return Err(format!(
            "{} does not enable {ctrl} for its children (cgroup.subtree_control), so {cgroup} \
             has no {ctrl} limit; odin does not enable controllers in cgroups it did not create",
            parent.display()
        ));
    }
    Ok(Cap::CpuMax {
        cgroup: cgroup.to_string(),
    })
}

/// What [`Enforcer::cap`] did.
#[derive(Debug, Default)]
pub struct CapReport {
    /// Processes capped now (moved, or in a cgroup capped now).
    pub capped: Vec<i32>,
    /// One line per cap applied now: which path was taken.
    pub how: Vec<String>,
    /// cgroups left uncapped (advise only): the cgroup, its antagonists,
    /// and why.
    pub advised: Vec<(String, Vec<i32>, String)>,
    /// Antagonists dropped because their pid now names another process.
    pub dropped: Vec<i32>,
    /// Processes that could not be capped, with the error.
    pub failed: Vec<(i32, CgroupError)>,
    /// Things that could not be done but did not stop the cap.
    pub notes: Vec<String>,
}

/// The cgroups odin changes on one machine, and the journal of what it
/// changed.
#[derive(Debug)]
pub struct Enforcer {
    fs: Arc<dyn CgroupFs>,
    units: Option<Arc<dyn UnitManager>>,
    settings: EnforceSettings,
    proc: PathBuf,
    cpu: Hierarchy,
    cpuset: Option<Hierarchy>,
    journal: Journal,
    own_pid: i32,
    /// odin's own v1 cgroups exist in the cpu hierarchy.
    own_cpu: bool,
    /// The CPUs capped antagonists keep, once worked out; `None` inside:
    /// narrowing leaves none.
    narrow: Option<Option<CpuSet>>,
    /// odin's own v1 cpuset cgroups exist.
    own_cpuset: bool,
    /// v1: processes moved in.
    moved: BTreeSet<i32>,
    /// v2: leaf cgroups capped, with how.
    capped: BTreeMap<String, Cap>,
    /// v2: leaf cgroups whose cpuset odin narrowed.
    narrowed: BTreeSet<String>,
    /// Why cpusets are not narrowed although configured.
    pub cpuset_note: Option<String>,
}

impl Enforcer {
    /// Checks that enforce mode can work here: a `cpu` controller odin may
    /// write, and a state directory for the journal. `units` is systemd's
    /// manager, preferred for a unit's cgroup on v2. `Err` says why not.
    pub fn new(
        fs: Arc<dyn CgroupFs>,
        settings: EnforceSettings,
        units: Option<Arc<dyn UnitManager>>,
        own_pid: i32,
    ) -> Result<Self, String> {
        let layout = Layout::detect(&settings.root).map_err(|e| e.to_string())?;
        let cpu = layout
            .hierarchy("cpu")
            .ok_or_else(|| "no cpu controller is mounted (neither v2 nor v1)".to_string())?;
        cpu.writable()?;
        let mut cpuset_note = None;
        let cpuset = if settings.narrow_cpuset {
            match layout.hierarchy("cpuset") {
                None => {
                    cpuset_note = Some("no cpuset controller is mounted".to_string());
                    None
                }
                Some(h) => match h.writable() {
                    Ok(()) => Some(h),
                    Err(e) => {
                        cpuset_note = Some(e);
                        None
                    }
                },
            }
        } else {
            None
        };
        let journal = Journal::open(&settings.state_dir).map_err(|e| e.to_string())?;
        nix::unistd::access(&settings.state_dir, nix::unistd::AccessFlags::W_OK).map_err(|e| {
            format!(
                "state directory {} is not writable: {}",
                settings.state_dir.display(),
                std::io::Error::from(e)
            )
        })?;
        Ok(Self {
            fs,
            units,
            proc: settings.root.join("proc"),
            settings,
            cpu,
            cpuset,
            journal,
            own_pid,
            own_cpu: false,
            narrow: None,
            own_cpuset: false,
            moved: BTreeSet::new(),
            capped: BTreeMap::new(),
            narrowed: BTreeSet::new(),
            cpuset_note,
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> &EnforceSettings {
        &self.settings
    }

    /// The hierarchy with the `cpu` controller.
    pub fn cpu(&self) -> &Hierarchy {
        &self.cpu
    }

    /// The journal.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Whether a cap is in force.
    pub fn active(&self) -> bool {
        self.own_cpu || !self.capped.is_empty()
    }

    /// Whether a systemd manager is at hand.
    pub fn has_units(&self) -> bool {
        self.units.is_some()
    }

    /// The processes under a cap now: those in odin's best-effort cgroup
    /// (v1), or in a capped cgroup (v2), children included.
    pub fn capped_now(&self) -> Vec<i32> {
        let mut out = Vec::new();
        if self.own_cpu {
            out.extend(
                super::procs(&self.cpu.dir(&self.settings.besteffort())).unwrap_or_default(),
            );
        }
        for cgroup in self.capped.keys() {
            if let Ok(dir) = self.cpu.checked_dir(cgroup) {
                out.extend(super::subtree_procs(&dir).unwrap_or_default());
            }
        }
        out
    }

    fn record(&mut self, e: Entry) -> Result<(), CgroupError> {
        self.journal.record(e).map_err(CgroupError::from)
    }

    /// Whether `t` is still the process the monitor saw.
    fn same_process(&self, t: &Target) -> Result<bool, CgroupError> {
        Ok(ProcessInfo::read(&self.proc, t.pid)?.is_some_and(|p| p.start == t.start))
    }

    /// Caps `targets` not yet capped, the way their cgroup version allows
    /// ([`plan`]). An error creating odin's own cgroups (v1) is returned
    /// (the caller lifts what was done); a process or cgroup that cannot
    /// be capped is reported and skipped.
    pub fn cap(
        &mut self,
        targets: &[Target],
        pipeline_cpus: &CpuSet,
    ) -> Result<CapReport, CgroupError> {
        let mut report = CapReport::default();
        if self.narrow.is_none() && self.cpuset.is_some() {
            self.narrow = Some(self.narrowed_cpus(pipeline_cpus, &mut report)?);
        }
        let cpu = self.cpu.clone();
        match cpu.version() {
            CgroupVersion::V1 => {
                if !self.own_cpu {
                    self.setup_v1_cpu()?;
                    self.own_cpu = true;
                }
                let to = self.settings.besteffort();
                for t in targets {
                    if self.moved.contains(&t.pid) {
                        continue;
                    }
                    match self.move_into(&cpu, t, &to) {
                        Ok(false) => report.dropped.push(t.pid),
                        Ok(true) => {
                            self.moved.insert(t.pid);
                            report.capped.push(t.pid);
                            self.narrow_process(t, targets, &mut report);
                        }
                        Err(e) => report.failed.push((t.pid, e)),
                    }
                }
                if !report.capped.is_empty() {
                    let how = Cap::Move { to }.how(&self.settings);
                    report.how.push(how);
                }
            }
            CgroupVersion::V2 => self.cap_in_place(&cpu, targets, &mut report),
        }
        Ok(report)
    }

    /// v2: caps each antagonist's leaf cgroup where it is.
    fn cap_in_place(&mut self, cpu: &Hierarchy, targets: &[Target], report: &mut CapReport) {
        let mut leaves: BTreeMap<String, Vec<&Target>> = BTreeMap::new();
        for t in targets {
            match cpu.cgroup_of(&self.proc, t.pid) {
                Ok(Some(c)) => leaves.entry(c).or_default().push(t),
                Ok(None) => report.notes.push(format!(
                    "pid {} is in no cgroup of {}",
                    t.pid,
                    cpu.mount.display()
                )),
                Err(e) => report.failed.push((t.pid, e)),
            }
        }
        for (cgroup, members) in leaves {
            if self.capped.contains_key(&cgroup) {
                continue;
            }
            // Decided now, right before the write: each antagonist is
            // still the process the monitor named, and so is every other
            // process in the cgroup.
            let mut pids = Vec::new();
            for t in &members {
                match self.same_process(t) {
                    Ok(true) => pids.push(t.pid),
                    Ok(false) => report.dropped.push(t.pid),
                    Err(e) => report.failed.push((t.pid, e)),
                }
            }
            if pids.is_empty() {
                continue;
            }
            let how = plan(
                cpu,
                &self.proc,
                &cgroup,
                targets,
                &self.settings.besteffort(),
                self.units.is_some(),
            );
            let cap = match how {
                Ok(cap) => cap,
                Err(why) => {
                    report.advised.push((cgroup, pids, why));
                    continue;
                }
            };
            let alive = pids;
            let done = match &cap {
                Cap::Unit { unit, cgroup } => self.set_unit_quota(unit, cgroup),
                _ => self.set_in_place(cpu, &cgroup, v2::CPU_MAX, &cap_value(&self.settings)),
            };
            match done {
                Ok(()) => {
                    report.how.push(cap.how(&self.settings));
                    report.capped.extend(&alive);
                    if matches!(cap, Cap::Unit { .. }) {
                        if self.cpuset.is_some() {
                            report.notes.push(format!(
                                "cpuset of {cgroup} not narrowed: systemd owns the unit's cgroup"
                            ));
                        }
                    } else if let Some(t) = members.first() {
                        self.narrow_process(t, targets, report);
                    }
                    self.capped.insert(cgroup, cap);
                }
                // The error names the cgroup or unit; its first process
                // stands for all of them.
                Err(e) => report.failed.push((alive[0], e)),
            }
        }
    }

    /// Journals the old value of `file` in `cgroup` of `h`, then writes
    /// `value`.
    fn set_in_place(
        &mut self,
        h: &Hierarchy,
        cgroup: &str,
        file: &str,
        value: &str,
    ) -> Result<(), CgroupError> {
        let dir = h.dir(cgroup);
        let old = super::read_file(&dir.join(file))?.trim().to_string();
        self.record(Entry::Set {
            hierarchy: h.clone(),
            cgroup: cgroup.to_string(),
            file: file.to_string(),
            old,
            new: value.to_string(),
        })?;
        self.fs.write(&dir.join(file), value)
    }

    /// Journals `unit`'s quota, then sets odin's through the manager.
    fn set_unit_quota(&mut self, unit: &str, cgroup: &str) -> Result<(), CgroupError> {
        let units = self.units.clone().ok_or_else(|| CgroupError::Systemd {
            unit: unit.to_string(),
            message: "no systemd manager".into(),
        })?;
        let old = units.cpu_quota(unit)?;
        let new = self.settings.quota_usec_per_sec();
        self.record(Entry::UnitQuota {
            unit: unit.to_string(),
            cgroup: cgroup.to_string(),
            old,
            new,
        })?;
        units.set_cpu_quota(unit, Some(new))
    }

    /// The CPUs capped antagonists keep: the cpuset root's less the
    /// pipeline's; `None` (with a note) when that leaves none.
    fn narrowed_cpus(
        &self,
        pipeline_cpus: &CpuSet,
        report: &mut CapReport,
    ) -> Result<Option<CpuSet>, CgroupError> {
        let Some(h) = &self.cpuset else {
            return Ok(None);
        };
        let all = h.version().effective_cpus(&h.mount)?;
        match all.map(|a| a.difference(pipeline_cpus)) {
            Some(rest) if !rest.is_empty() => Ok(Some(rest)),
            _ => {
                report.notes.push(format!(
                    "cpuset not narrowed: the pipeline's CPUs {pipeline_cpus} leave no other CPU"
                ));
                Ok(None)
            }
        }
    }

    /// Keeps capped `t` off the pipeline's CPUs, where narrowing is on: v1
    /// moves it into odin's cpuset cgroup, v2 narrows its leaf in place
    /// (if that leaf holds only the antagonists `named`). Failures are
    /// notes: the cap stands without them.
    fn narrow_process(&mut self, t: &Target, named: &[Target], report: &mut CapReport) {
        let (Some(h), Some(Some(rest))) = (self.cpuset.clone(), self.narrow.clone()) else {
            return;
        };
        let result = match h.version() {
            CgroupVersion::V1 => self.narrow_v1(&h, &rest, t).map(|moved| {
                if !moved {
                    report.dropped.push(t.pid);
                }
            }),
            CgroupVersion::V2 => match h.cgroup_of(&self.proc, t.pid) {
                Ok(Some(cgroup)) if !self.narrowed.contains(&cgroup) => {
                    match plan_in_place(&h, &self.proc, &cgroup, named, false) {
                        Ok(_) => self
                            .set_in_place(&h, &cgroup, "cpuset.cpus", &rest.to_string())
                            .map(|()| {
                                self.narrowed.insert(cgroup);
                            }),
                        Err(why) => {
                            report.notes.push(format!("cpuset not narrowed: {why}"));
                            Ok(())
                        }
                    }
                }
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            },
        };
        if let Err(e) = result {
            report
                .notes
                .push(format!("pid {} keeps its CPUs: {e}", t.pid));
        }
    }

    /// v1: odin's cpuset cgroups (once), then `t` into the best-effort
    /// one; `false` if `t` is no longer the process named.
    fn narrow_v1(&mut self, h: &Hierarchy, rest: &CpuSet, t: &Target) -> Result<bool, CgroupError> {
        let fs = self.fs.clone();
        let besteffort = h.dir(&self.settings.besteffort());
        if !self.own_cpuset {
            let base = h.dir(&format!("/{}", self.settings.name));
            let all = h
                .version()
                .effective_cpus(&h.mount)?
                .unwrap_or_else(|| rest.clone());
            self.mkdir(h, &base)?;
            h.version().set_cpus(fs.as_ref(), &base, &h.mount, &all)?;
            self.mkdir(h, &besteffort)?;
            h.version()
                .set_cpus(fs.as_ref(), &besteffort, &base, rest)?;
            self.own_cpuset = true;
        }
        self.move_into(h, t, &self.settings.besteffort())
    }

    /// Checks that `t` is still the process named, records, then moves it
    /// into `to` in `h`; `false` if it is not (nothing written).
    fn move_into(&mut self, h: &Hierarchy, t: &Target, to: &str) -> Result<bool, CgroupError> {
        if !self.same_process(t)? {
            return Ok(false);
        }
        let from = h
            .cgroup_of(&self.proc, t.pid)?
            .unwrap_or_else(|| "/".into());
        if from == to {
            return Ok(true);
        }
        self.record(Entry::Move {
            hierarchy: h.clone(),
            proc: self.proc.clone(),
            pid: t.pid,
            start: t.start,
            comm: t.comm.clone(),
            from,
            to: to.to_string(),
        })?;
        h.move_process(self.fs.as_ref(), to, t.pid)?;
        Ok(true)
    }

    /// v1: odin's cgroups in the cpu hierarchy, then odin into `pipeline`.
    fn setup_v1_cpu(&mut self) -> Result<(), CgroupError> {
        let fs = self.fs.clone();
        let fs = fs.as_ref();
        let cpu = self.cpu.clone();
        let files = cpu.version();
        let weight = self.settings.weight;
        let base = cpu.dir(&format!("/{}", self.settings.name));
        self.mkdir(&cpu, &base)?;
        files.set_weight(fs, &base, weight)?;
        let pipeline = cpu.dir(&self.settings.pipeline());
        self.mkdir(&cpu, &pipeline)?;
        files.set_weight(fs, &pipeline, weight)?;
        let besteffort = cpu.dir(&self.settings.besteffort());
        self.mkdir(&cpu, &besteffort)?;
        // The cap alone sets the capped tasks' share. With the least
        // weight, a pipeline that keeps its CPUs busy would starve them to
        // nothing rather than to the quota: they could not even run to
        // act on a signal.
        files.set_weight(fs, &besteffort, weight)?;
        files.set_limit(fs, &besteffort, self.settings.quota_us(), PERIOD_US)?;
        // odin itself, last: a failure here leaves the cap useful.
        if let Some(me) = ProcessInfo::read(&self.proc, self.own_pid)? {
            let t = Target {
                pid: me.pid,
                start: me.start,
                comm: me.comm,
            };
            let pipeline = self.settings.pipeline();
            if let Err(e) = self.move_into(&cpu, &t, &pipeline) {
                tracing::warn!("odin stays in its cgroup: {e}");
            }
        }
        Ok(())
    }

    fn mkdir(&mut self, h: &Hierarchy, path: &Path) -> Result<(), CgroupError> {
        // What a previous run of this agent left was undone at the start,
        // so a cgroup that exists is someone else's: another agent with the
        // same `cgroup.name` (its journal elsewhere). Adopting it would
        // have this agent's undo remove it and move its processes out.
        if path.exists() {
            return Err(CgroupError::Mkdir {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "it exists and this agent's journal did not create it: another agent \
                     with the same cgroup.name owns it; give this one another cgroup.name",
                ),
            });
        }
        self.record(Entry::Mkdir {
            hierarchy: h.clone(),
            path: path.to_path_buf(),
        })?;
        self.fs.mkdir(path)
    }

    /// Undoes every change (moved processes and odin go back where they
    /// came from, odin's cgroups are removed, capped cgroups and units get
    /// their old limits) and clears the journal of what was undone.
    pub fn lift(&mut self) -> Result<UndoReport, CgroupError> {
        let env = UndoEnv::detect(self.fs.as_ref(), &self.settings.root, self.units.as_deref())?;
        let report = self.journal.undo_all(&env)?;
        self.own_cpu = false;
        self.own_cpuset = false;
        self.narrow = None;
        self.moved.clear();
        self.capped.clear();
        self.narrowed.clear();
        Ok(report)
    }
}

/// `cpu.max` for the configured quota.
fn cap_value(settings: &EnforceSettings) -> String {
    v2::limit_value(settings.quota_us(), PERIOD_US)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::journal::Journal;
    use crate::cgroup::testutil::{FakeTree, FakeUnits, Op};

    const ODIN: i32 = 100;
    const HOG: i32 = 200;

    fn settings(t: &FakeTree, narrow: bool) -> EnforceSettings {
        EnforceSettings {
            root: t.dir.path().to_path_buf(),
            name: "odin".into(),
            quota: 0.2,
            weight: 1000,
            narrow_cpuset: narrow,
            state_dir: t.path("var/lib/odin"),
        }
    }

    fn target(pid: i32, comm: &str) -> Target {
        Target {
            pid,
            start: 1000 + pid as u64,
            comm: comm.into(),
        }
    }

    fn enforcer(t: &FakeTree, narrow: bool) -> Enforcer {
        Enforcer::new(t.fs.clone(), settings(t, narrow), None, ODIN).unwrap()
    }

    fn w(path: &str, data: &str) -> Op {
        Op::Write(path.into(), data.into())
    }

    fn d(path: &str) -> Op {
        Op::Mkdir(path.into())
    }

    fn rm(path: &str) -> Op {
        Op::Rmdir(path.into())
    }

    /// The journal file's entries, as (op, path or pid, to) triples.
    fn journal_lines(t: &FakeTree) -> Vec<String> {
        let path = t.path("var/lib/odin").join(crate::cgroup::journal::FILE);
        Journal::load(&path)
            .unwrap()
            .iter()
            .map(|e| {
                let line = e.to_string();
                line.replace(&t.dir.path().display().to_string(), "")
            })
            .collect()
    }

    #[test]
    fn v1_a_cgroup_of_another_agent_is_not_adopted() {
        let t = FakeTree::v1();
        t.process(ODIN, 1, "odin", 0, "/");
        t.process(HOG, 50, "hog", 0, "/");
        // Another agent's, with its capped process inside.
        std::fs::create_dir_all(t.path("sys/fs/cgroup/cpu,cpuacct/odin/besteffort")).unwrap();
        let mut e = Enforcer::new(t.fs.clone(), settings(&t, false), None, ODIN).unwrap();
        let err = e
            .cap(&[target(HOG, "hog")], &"0-1".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("another agent"), "{err}");
        assert!(journal_lines(&t).is_empty(), "nothing of it journalled");
        assert_eq!(t.cgroup_of(HOG, "cpu"), "/");
        e.lift().unwrap();
        assert!(t.path("sys/fs/cgroup/cpu,cpuacct/odin/besteffort").is_dir());
    }

    #[test]
    fn v1_cap_writes_cfs_quota_and_shares_and_narrows_the_cpuset() {
        let t = FakeTree::v1();
        t.process(ODIN, 1, "odin", 0, "/");
        t.process(HOG, 50, "hog", 0, "/");
        let mut e = enforcer(&t, true);
        let r = e
            .cap(&[target(HOG, "hog")], &"0-1".parse().unwrap())
            .unwrap();
        assert_eq!(r.capped, vec![HOG]);
        let c = "sys/fs/cgroup/cpu,cpuacct";
        let s = "sys/fs/cgroup/cpuset";
        assert_eq!(
            t.fs.take(),
            vec![
                d(&format!("{c}/odin")),
                w(&format!("{c}/odin/cpu.shares"), "10240"),
                d(&format!("{c}/odin/pipeline")),
                w(&format!("{c}/odin/pipeline/cpu.shares"), "10240"),
                d(&format!("{c}/odin/besteffort")),
                w(&format!("{c}/odin/besteffort/cpu.shares"), "10240"),
                w(&format!("{c}/odin/besteffort/cpu.cfs_period_us"), "100000"),
                w(&format!("{c}/odin/besteffort/cpu.cfs_quota_us"), "20000"),
                w(&format!("{c}/odin/pipeline/cgroup.procs"), "100"),
                w(&format!("{c}/odin/besteffort/cgroup.procs"), "200"),
                d(&format!("{s}/odin")),
                w(&format!("{s}/odin/cpuset.cpus"), "0-3"),
                w(&format!("{s}/odin/cpuset.mems"), "0"),
                d(&format!("{s}/odin/besteffort")),
                w(&format!("{s}/odin/besteffort/cpuset.cpus"), "2-3"),
                w(&format!("{s}/odin/besteffort/cpuset.mems"), "0"),
                w(&format!("{s}/odin/besteffort/cgroup.procs"), "200"),
            ]
        );
        assert_eq!(t.cgroup_of(HOG, "cpu"), "/odin/besteffort");
        assert_eq!(t.cgroup_of(HOG, "cpuset"), "/odin/besteffort");
        assert_eq!(t.cgroup_of(ODIN, "cpuset"), "/", "odin keeps its cpuset");
        assert_eq!(
            r.how,
            ["moved into /odin/besteffort (cpu.cfs_quota_us=20000 cpu.cfs_period_us=100000)"]
        );
        let undo = e.lift().unwrap();
        assert!(undo.failed.is_empty(), "{undo:?}");
        assert_eq!(
            (t.cgroup_of(HOG, "cpu"), t.cgroup_of(HOG, "cpuset")),
            ("/".into(), "/".into())
        );
        assert!(!t.path(&format!("{c}/odin")).exists() && !t.path(&format!("{s}/odin")).exists());
        assert!(journal_lines(&t).is_empty());
    }

    #[test]
    fn narrowing_that_leaves_no_cpu_is_skipped_with_a_note() {
        let t = FakeTree::v1();
        t.process(ODIN, 1, "odin", 0, "/");
        t.process(HOG, 50, "hog", 0, "/");
        let mut e = enforcer(&t, true);
        let r = e
            .cap(&[target(HOG, "hog")], &"0-3".parse().unwrap())
            .unwrap();
        assert!(r.notes[0].contains("leave no other CPU"), "{:?}", r.notes);
        assert_eq!(t.cgroup_of(HOG, "cpuset"), "/");
        assert!(!t.path("sys/fs/cgroup/cpuset/odin").exists());
        e.lift().unwrap();
    }

    #[test]
    fn a_crashed_run_is_undone_from_the_journal_at_the_next_start() {
        let t = FakeTree::v1();
        t.process(ODIN, 1, "odin", 0, "/system.slice/odin.service");
        t.process(HOG, 50, "hog", 0, "/user.slice/batch");
        t.process(300, 50, "quiet", 0, "/user.slice/other");
        let mut e = enforcer(&t, false);
        e.cap(
            &[
                target(HOG, "hog"),
                target(300, "quiet"),
                target(999, "gone"),
            ],
            &"0".parse().unwrap(),
        )
        .unwrap();
        // While capped: the hog forked a child (born in besteffort), and
        // someone else moved "quiet" elsewhere.
        t.process(201, HOG, "hog-child", 0, "/odin/besteffort");
        t.fs.write(
            &t.path("sys/fs/cgroup/cpu,cpuacct/user.slice/cgroup.procs"),
            "300",
        )
        .unwrap();
        // odin dies without undoing anything.
        drop(e);
        t.fs.take();
        let report = restore(t.fs.as_ref(), t.dir.path(), &t.path("var/lib/odin"), None).unwrap();
        assert!(report.failed.is_empty(), "{report:?}");
        let done = report.done.join("\n");
        assert!(
            done.contains("pid 300 (quiet) left /odin/besteffort for /user.slice"),
            "{done}"
        );
        assert!(
            done.contains("removed") && done.contains("after moving pid 201 to /user.slice/batch"),
            "{done}"
        );
        assert_eq!(t.cgroup_of(HOG, "cpu"), "/user.slice/batch");
        assert_eq!(
            t.cgroup_of(201, "cpu"),
            "/user.slice/batch",
            "children follow their parent"
        );
        assert_eq!(t.cgroup_of(300, "cpu"), "/user.slice", "not moved twice");
        assert_eq!(t.cgroup_of(ODIN, "cpu"), "/system.slice/odin.service");
        assert!(!t.path("sys/fs/cgroup/cpu,cpuacct/odin").exists());
        assert!(
            !t.path("var/lib/odin")
                .join(crate::cgroup::journal::FILE)
                .exists()
        );
        // Nothing left: a second restore does nothing.
        assert!(
            restore(t.fs.as_ref(), t.dir.path(), &t.path("var/lib/odin"), None)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_reused_pid_or_a_vanished_origin_is_handled() {
        let t = FakeTree::v1();
        t.process(ODIN, 1, "odin", 0, "/");
        t.process(HOG, 50, "hog", 0, "/user.slice/batch");
        let mut e = enforcer(&t, false);
        e.cap(&[target(HOG, "hog")], &"0".parse().unwrap()).unwrap();
        // The origin cgroup went away while the hog was capped.
        std::fs::remove_dir_all(t.path("sys/fs/cgroup/cpu,cpuacct/user.slice/batch")).unwrap();
        let undo = e.lift().unwrap();
        assert!(undo.failed.is_empty(), "{undo:?}");
        assert_eq!(
            t.cgroup_of(HOG, "cpu"),
            "/user.slice",
            "nearest existing ancestor"
        );

        // The capped process exits and a new one gets its pid, elsewhere:
        // it is left alone.
        t.process(HOG + 1, 50, "hog2", 0, "/user.slice");
        e.cap(&[target(HOG + 1, "hog2")], &"0".parse().unwrap())
            .unwrap();
        assert_eq!(t.cgroup_of(HOG + 1, "cpu"), "/odin/besteffort");
        let stat = t.read(&format!("proc/{}/stat", HOG + 1));
        t.write(
            &format!("proc/{}/stat", HOG + 1),
            &stat.replace(" 1201 ", " 9999 "),
        );
        std::fs::create_dir(t.path("sys/fs/cgroup/cpu,cpuacct/system.slice")).unwrap();
        t.fs.write(
            &t.path("sys/fs/cgroup/cpu,cpuacct/system.slice/cgroup.procs"),
            "201",
        )
        .unwrap();
        t.fs.take();
        let undo = e.lift().unwrap();
        assert!(undo.failed.is_empty(), "{undo:?}");
        assert!(
            undo.done.iter().any(|l| l.contains("pid reused")),
            "{undo:?}"
        );
        assert_eq!(t.cgroup_of(HOG + 1, "cpu"), "/system.slice");
        assert!(
            !t.fs
                .take()
                .iter()
                .any(|o| matches!(o, Op::Write(_, pid) if pid == "201"))
        );
    }

    #[test]
    fn a_missing_controller_or_state_dir_is_refused_with_the_reason() {
        let t = FakeTree::v2("memory io", "");
        let e = Enforcer::new(t.fs.clone(), settings(&t, false), None, ODIN).unwrap_err();
        assert!(e.contains("no cpu controller"), "{e}");
        let t = FakeTree::v2("cpu", "");
        t.write("var/lib/odin", "a file, not a directory");
        let e = Enforcer::new(t.fs.clone(), settings(&t, false), None, ODIN).unwrap_err();
        assert!(e.contains("var/lib/odin"), "{e}");
    }

    /// A v2 machine whose `/user.slice` enables `cpu` for its children:
    /// odin in its unit, a hog alone in `/user.slice/batch`.
    fn v2_machine() -> FakeTree {
        let t = FakeTree::v2("cpuset cpu io memory", "cpu memory");
        t.process(ODIN, 1, "odin", 0, "/system.slice/odin.service");
        t.enable("/user.slice", "cpu");
        t.process(HOG, 50, "hog", 0, "/user.slice/batch");
        t
    }

    #[test]
    fn v2_caps_the_antagonists_own_cgroup_in_place_and_lift_restores_its_cpu_max() {
        let t = v2_machine();
        t.write("sys/fs/cgroup/user.slice/batch/cpu.max", "50000 100000\n");
        let mut e = enforcer(&t, false);
        let cpus: CpuSet = "0-1".parse().unwrap();
        let r = e.cap(&[target(HOG, "hog")], &cpus).unwrap();
        assert_eq!(r.capped, vec![HOG]);
        assert!(
            r.failed.is_empty() && r.notes.is_empty() && r.advised.is_empty(),
            "{r:?}"
        );
        assert_eq!(
            r.how,
            ["/user.slice/batch capped in place (cpu.max=\"20000 100000\")"]
        );
        let m = "sys/fs/cgroup";
        // One write, in the hog's own cgroup: nobody moves, odin creates no
        // cgroup and enables no controller.
        assert_eq!(
            t.fs.take(),
            vec![w(&format!("{m}/user.slice/batch/cpu.max"), "20000 100000")]
        );
        assert_eq!(
            journal_lines(&t),
            [
                "set cpu.max of /user.slice/batch from \"50000 100000\" to \"20000 100000\" in /sys/fs/cgroup"
            ]
        );
        assert_eq!(t.cgroup_of(HOG, "cpu"), "/user.slice/batch");
        assert_eq!(t.cgroup_of(ODIN, "cpu"), "/system.slice/odin.service");
        assert!(!t.path(&format!("{m}/odin")).exists());
        assert_eq!(t.read(&format!("{m}/cgroup.subtree_control")), "cpu memory");
        assert_eq!(e.capped_now(), vec![HOG]);
        // The hog forks: the child is under the same cap.
        t.process(HOG + 1, HOG, "hog", 0, "/user.slice/batch");
        assert_eq!(e.capped_now(), vec![HOG, HOG + 1]);
        // A second cap of the same cgroup changes nothing.
        e.cap(&[target(HOG, "hog")], &cpus).unwrap();
        assert!(t.fs.take().is_empty());

        let undo = e.lift().unwrap();
        assert!(
            undo.failed.is_empty() && undo.refused.is_empty(),
            "{undo:?}"
        );
        assert_eq!(
            t.fs.take(),
            vec![w(&format!("{m}/user.slice/batch/cpu.max"), "50000 100000")]
        );
        assert!(journal_lines(&t).is_empty());
        assert!(!e.active());
    }

    #[test]
    fn v2_a_cgroup_shared_with_innocents_or_without_cpu_is_only_advised() {
        let t = v2_machine();
        // An innocent process joins the hog's cgroup.
        t.process(300, 1, "editor", 0, "/user.slice/batch");
        // Another hog in a cgroup whose parent does not enable cpu.
        t.process(400, 1, "hog2", 0, "/srv/jobs/one");
        // A third in the root cgroup.
        t.process(500, 1, "hog3", 0, "/");
        let mut e = enforcer(&t, false);
        let r = e
            .cap(
                &[target(HOG, "hog"), target(400, "hog2"), target(500, "hog3")],
                &"0".parse().unwrap(),
            )
            .unwrap();
        assert!(r.capped.is_empty(), "{r:?}");
        let advised: Vec<(&str, &[i32], &str)> = r
            .advised
            .iter()
            .map(|(c, p, why)| (c.as_str(), p.as_slice(), why.as_str()))
            .collect();
        assert_eq!(advised.len(), 3, "{advised:?}");
        assert_eq!(advised[0].0, "/", "{advised:?}");
        assert!(advised[0].2.contains("root cgroup"), "{advised:?}");
        assert_eq!((advised[1].0, advised[1].1), ("/srv/jobs/one", &[400][..]));
        assert!(
            advised[1]
                .2
                .contains("does not enable cpu for its children")
                && advised[1].2.contains("srv/jobs"),
            "{advised:?}"
        );
        assert_eq!(
            (advised[2].0, advised[2].1),
            ("/user.slice/batch", &[HOG][..])
        );
        assert!(
            advised[2].2.contains("also holds pid 300 (editor)"),
            "{advised:?}"
        );
        assert!(t.fs.take().is_empty(), "advice writes nothing");
        assert!(journal_lines(&t).is_empty());
        assert!(!e.active());
    }

    #[test]
    fn v2_a_unit_is_capped_through_systemd_at_runtime_and_its_quota_restored() {
        let t = FakeTree::v2("cpu", "cpu");
        t.process(ODIN, 1, "odin", 0, "/system.slice/odin.service");
        t.enable("/system.slice", "cpu");
        t.process(HOG, 1, "stress", 0, "/system.slice/stress.service");
        let units = Arc::new(FakeUnits::default());
        units
            .quotas
            .lock()
            .unwrap()
            .insert("stress.service".into(), Some(1_500_000));
        let mut e =
            Enforcer::new(t.fs.clone(), settings(&t, false), Some(units.clone()), ODIN).unwrap();
        let r = e
            .cap(&[target(HOG, "stress")], &"0".parse().unwrap())
            .unwrap();
        assert_eq!(r.capped, vec![HOG], "{r:?}");
        assert_eq!(
            r.how,
            [
                "stress.service (/system.slice/stress.service) capped through systemd at runtime (CPUQuota=20%)"
            ]
        );
        assert_eq!(
            units.take(),
            [("stress.service".to_string(), Some(200_000))]
        );
        assert!(
            t.fs.take().is_empty(),
            "systemd's cgroup is not written behind its back"
        );
        assert_eq!(
            journal_lines(&t),
            ["set CPUQuota of stress.service from 150% to 20%"]
        );
        // A crash: the next start without a manager cannot restore it and
        // keeps the entry; with one, it restores the old quota.
        drop(e);
        let state = t.path("var/lib/odin");
        let r = restore(t.fs.as_ref(), t.dir.path(), &state, None).unwrap();
        assert_eq!(r.failed.len(), 1, "{r:?}");
        assert!(r.failed[0].1.to_string().contains("no systemd manager"));
        assert_eq!(journal_lines(&t).len(), 1);
        let r = restore(t.fs.as_ref(), t.dir.path(), &state, Some(units.as_ref())).unwrap();
        assert!(r.failed.is_empty(), "{r:?}");
        assert_eq!(
            units.take(),
            [("stress.service".to_string(), Some(1_500_000))]
        );
        assert!(journal_lines(&t).is_empty());
    }

    #[test]
    fn a_pid_whose_start_time_changed_is_dropped_not_capped() {
        // v1: the pid now names another process.
        let t = FakeTree::v1();
        t.process(ODIN, 1, "odin", 0, "/");
        t.process(HOG, 50, "hog", 0, "/");
        let mut e = enforcer(&t, false);
        let mut seen = target(HOG, "hog");
        seen.start += 1;
        let r = e.cap(&[seen.clone()], &"0".parse().unwrap()).unwrap();
        assert_eq!(
            (r.capped.len(), r.dropped.as_slice()),
            (0, &[HOG][..]),
            "{r:?}"
        );
        assert_eq!(t.cgroup_of(HOG, "cpu"), "/");
        assert!(
            !t.fs
                .take()
                .iter()
                .any(|o| matches!(o, Op::Write(_, pid) if pid == "200"))
        );
        e.lift().unwrap();

        // v2: the same, in a cgroup that could be capped.
        let t = v2_machine();
        let mut e = enforcer(&t, false);
        let r = e.cap(&[seen], &"0".parse().unwrap()).unwrap();
        assert_eq!(
            (r.capped.len(), r.dropped.as_slice()),
            (0, &[HOG][..]),
            "{r:?}"
        );
        assert!(t.fs.take().is_empty());
        assert!(journal_lines(&t).is_empty());
    }

    #[test]
    fn v2_narrowing_sets_the_capped_cgroups_own_cpuset() {
        let t = FakeTree::v2("cpuset cpu", "cpuset cpu");
        t.process(ODIN, 1, "odin", 0, "/system.slice/odin.service");
        t.enable("/user.slice", "cpu cpuset");
        t.process(HOG, 50, "hog", 0, "/user.slice/batch");
        let mut e = enforcer(&t, true);
        let r = e
            .cap(&[target(HOG, "hog")], &"0-1".parse().unwrap())
            .unwrap();
        assert_eq!(r.capped, vec![HOG], "{r:?}");
        let b = "sys/fs/cgroup/user.slice/batch";
        assert_eq!(
            t.fs.take(),
            vec![
                w(&format!("{b}/cpu.max"), "20000 100000"),
                w(&format!("{b}/cpuset.cpus"), "2-3"),
            ]
        );
        e.lift().unwrap();
        assert_eq!(
            t.fs.take(),
            vec![
                w(&format!("{b}/cpuset.cpus"), ""),
                w(&format!("{b}/cpu.max"), "max 100000")
            ]
        );
    }

    #[test]
    fn restore_refuses_journal_entries_outside_the_detected_hierarchy() {
        let t = FakeTree::v1();
        t.process(ODIN, 1, "odin", 0, "/");
        let cpu = Layout::detect(t.dir.path())
            .unwrap()
            .hierarchy("cpu")
            .unwrap();
        let mount = cpu.mount.clone();
        // What an attacker who can write the journal would like removed,
        // moved or written.
        std::fs::create_dir_all(t.path("etc/precious")).unwrap();
        std::fs::create_dir_all(t.path("elsewhere/besteffort")).unwrap();
        std::os::unix::fs::symlink(t.path("elsewhere"), mount.join("link")).unwrap();
        std::fs::create_dir_all(t.path("fakeproc/200")).unwrap();
        std::fs::create_dir(mount.join("odin")).unwrap();
        let elsewhere = Hierarchy {
            controller: "cpu".into(),
            mount: t.path("etc"),
            v2: false,
        };
        let entries = vec![
            Entry::Mkdir {
                hierarchy: cpu.clone(),
                path: mount.join("odin"),
            },
            Entry::Mkdir {
                hierarchy: cpu.clone(),
                path: t.path("etc/precious"),
            },
            Entry::Mkdir {
                hierarchy: cpu.clone(),
                path: mount.join("odin/../../../../etc/precious"),
            },
            Entry::Mkdir {
                hierarchy: cpu.clone(),
                path: mount.join("link/besteffort"),
            },
            Entry::Mkdir {
                hierarchy: elsewhere.clone(),
                path: t.path("etc/precious"),
            },
            Entry::Move {
                hierarchy: cpu.clone(),
                proc: t.path("fakeproc"),
                pid: 200,
                start: 1,
                comm: "x".into(),
                from: "/".into(),
                to: "/odin".into(),
            },
            Entry::Move {
                hierarchy: cpu.clone(),
                proc: t.path("proc"),
                pid: ODIN,
                start: 1000 + ODIN as u64,
                comm: "odin".into(),
                from: "/../../etc".into(),
                to: "/".into(),
            },
            Entry::Set {
                hierarchy: cpu.clone(),
                cgroup: "/odin".into(),
                file: "../../../etc/passwd".into(),
                old: "x".into(),
                new: "y".into(),
            },
            Entry::UnitQuota {
                unit: "../x.service".into(),
                cgroup: "/".into(),
                old: None,
                new: 1,
            },
        ];
        let state = t.path("var/lib/odin");
        let mut j = Journal::open(&state).unwrap();
        for e in entries {
            j.record(e).unwrap();
        }
        drop(j);
        let r = restore(t.fs.as_ref(), t.dir.path(), &state, None).unwrap();
        assert!(r.failed.is_empty(), "{r:?}");
        assert_eq!(
            r.done,
            [format!("removed {}", mount.join("odin").display())]
        );
        let why: Vec<&str> = r.refused.iter().map(|(_, w)| w.as_str()).collect();
        assert_eq!(why.len(), 8, "{why:#?}");
        let expect = [
            "is outside the cpu hierarchy",
            "has a \"..\" component",
            "is a symbolic link, not a cgroup",
            "not at",
            "is not the root's proc directory",
            "has a \"..\" component",
            "is not a control file odin sets",
            "is not a service or scope unit",
        ];
        for (w, e) in why.iter().zip(expect) {
            assert!(w.contains(e), "{w:?} should say {e:?}");
        }
        assert_eq!(
            t.fs.take(),
            vec![rm(&format!(
                "{}/odin",
                mount.strip_prefix(t.dir.path()).unwrap().display()
            ))]
        );
        assert!(t.path("etc/precious").is_dir() && t.path("elsewhere/besteffort").is_dir());
        assert_eq!(t.cgroup_of(ODIN, "cpu"), "/");
        // Refused entries are dropped, not retried at every start.
        assert!(!state.join(crate::cgroup::journal::FILE).exists());
    }

    #[test]
    fn an_old_journals_enabled_controller_is_left_enabled() {
        let t = FakeTree::v2("cpu", "cpu");
        let state = t.path("var/lib/odin");
        let mut j = Journal::open(&state).unwrap();
        j.record(Entry::Enable {
            dir: t.path("sys/fs/cgroup"),
            controller: "cpu".into(),
        })
        .unwrap();
        drop(j);
        let r = restore(t.fs.as_ref(), t.dir.path(), &state, None).unwrap();
        assert!(r.done[0].contains("left cpu enabled"), "{r:?}");
        assert!(t.fs.take().is_empty());
        assert_eq!(t.read("sys/fs/cgroup/cgroup.subtree_control"), "cpu");
    }
}
