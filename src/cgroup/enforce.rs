//! Enforce mode: odin's own cgroups, the cap on antagonists, and undo.
//!
//! Where odin's cgroups live, in each hierarchy it uses (`<mount>` is the
//! controller's mount point, `<name>` the configured name, `odin`):
//! ```text
//!   <mount>/<name>/              weight = pipeline weight (holds no task)
//!           <name>/pipeline/     weight = pipeline weight: odin's process
//!           <name>/besteffort/   weight = pipeline weight, cpu.max (v2) or
//!                                cfs_quota_us/cfs_period_us (v1) = quota,
//!                                optionally cpuset.cpus without the
//!                                pipeline's CPUs: the capped antagonists
//! ```
//! Antagonists usually share a cgroup with unrelated processes (often the
//! root, where odin is too), so capping their cgroup would cap the
//! innocent: odin moves the antagonist processes instead, and remembers
//! where each came from. The capped ones share one quota.
//!
//! On v1 the `cpuset` controller is its own hierarchy, so narrowing the
//! CPUs creates `<cpuset mount>/<name>/besteffort` too and moves each
//! antagonist there as well.
//!
//! Every change goes through the [`Journal`] first; [`Enforcer::lift`]
//! and [`restore`] undo from it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::journal::{Entry, Journal, JournalError, UndoReport};
use super::{CgroupError, CgroupFs, Hierarchy, Layout, ProcessInfo, v1, v2};
use crate::cpulist::CpuSet;

/// The CFS period odin uses for caps, microseconds.
pub const PERIOD_US: u64 = 100_000;
/// The kernel's smallest quota, microseconds.
pub const MIN_QUOTA_US: u64 = 1_000;
/// The cgroup of the pipeline, below odin's.
pub const PIPELINE: &str = "pipeline";
/// The cgroup of the capped antagonists, below odin's.
pub const BESTEFFORT: &str = "besteffort";
/// What enforce mode needs to know.
#[derive(Clone, Debug, PartialEq)]
pub struct EnforceSettings {
    /// The file system root: `/proc` and the cgroup mounts are under it.
    pub root: PathBuf,
    /// odin's cgroup below each hierarchy's root.
    pub name: String,
    /// The antagonists' cap, in CPUs.
    pub quota: f64,
    /// The pipeline's CPU weight (v2 scale, 1..=10000).
    pub weight: u32,
    /// Also keep the capped antagonists off the pipeline's CPUs.
    pub narrow_cpuset: bool,
    /// Where the journal lives.
    pub state_dir: PathBuf,
}

impl EnforceSettings {
    /// The quota in microseconds per [`PERIOD_US`].
    pub fn quota_us(&self) -> u64 {
        ((self.quota * PERIOD_US as f64).round() as u64).max(MIN_QUOTA_US)
    }

    /// The best-effort cgroup, as `/proc/<pid>/cgroup` shows it.
    pub fn besteffort(&self) -> String {
        format!("/{}/{BESTEFFORT}", self.name)
    }

    /// The pipeline's cgroup, as `/proc/<pid>/cgroup` shows it.
    pub fn pipeline(&self) -> String {
        format!("/{}/{PIPELINE}", self.name)
    }
}

/// The limit, as the files say it: `cpu.max="20000 100000"` on v2,
/// `cpu.cfs_quota_us=20000 cpu.cfs_period_us=100000` on v1.
pub fn limit_text(v2: bool, quota_us: u64) -> String {
    if v2 {
        format!(
            "{}=\"{}\"",
            v2::CPU_MAX,
            v2::limit_value(quota_us, PERIOD_US)
        )
    } else {
        format!(
            "{}={quota_us} {}={PERIOD_US}",
            v1::CFS_QUOTA,
            v1::CFS_PERIOD
        )
    }
}

/// Undoes what a previous run left in the journal in `state_dir`, if
/// there is one.
pub fn restore(fs: &dyn CgroupFs, state_dir: &Path) -> Result<UndoReport, JournalError> {
    if !state_dir.join(super::journal::FILE).exists() {
        return Ok(UndoReport::default());
    }
    Journal::open(state_dir)?.undo_all(fs)
}

/// A process to cap.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// Its id.
    pub pid: i32,
    /// Its start time, against pid reuse.
    pub start: u64,
    /// Its name.
    pub comm: String,
}

/// What [`Enforcer::cap`] did.
#[derive(Debug, Default)]
pub struct CapReport {
    /// Processes moved into the best-effort cgroup now.
    pub capped: Vec<i32>,
    /// Processes that could not be moved, with the error.
    pub failed: Vec<(i32, CgroupError)>,
    /// Things that could not be done but did not stop the cap.
    pub notes: Vec<String>,
}

/// odin's cgroups on one machine, and the journal of what it changed.
#[derive(Debug)]
pub struct Enforcer {
    fs: Arc<dyn CgroupFs>,
    settings: EnforceSettings,
    proc: PathBuf,
    cpu: Hierarchy,
    cpuset: Option<Hierarchy>,
    journal: Journal,
    own_pid: i32,
    /// odin's cgroups exist.
    active: bool,
    /// Processes moved in, by pid.
    capped: BTreeSet<i32>,
    /// The cpuset hierarchy, where it is not the cpu one and the cpus are
    /// narrowed.
    split_cpuset: Option<Hierarchy>,
    /// Why cpusets are not narrowed although configured.
    pub cpuset_note: Option<String>,
}

impl Enforcer {
    /// Checks that enforce mode can work here: a `cpu` controller odin may
    /// write, and a state directory for the journal. `Err` says why not.
    pub fn new(
        fs: Arc<dyn CgroupFs>,
        settings: EnforceSettings,
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
            proc: settings.root.join("proc"),
            settings,
            cpu,
            cpuset,
            journal,
            own_pid,
            active: false,
            capped: BTreeSet::new(),
            split_cpuset: None,
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

    /// Whether odin's cgroups exist.
    pub fn active(&self) -> bool {
        self.active
    }

    /// The limit, as the files say it.
    pub fn limit_text(&self) -> String {
        limit_text(self.cpu.v2, self.settings.quota_us())
    }

    /// The processes in the best-effort cgroup now (capped ones that still
    /// run, and their children).
    pub fn capped_now(&self) -> Vec<i32> {
        if !self.active {
            return Vec::new();
        }
        super::procs(&self.cpu.dir(&self.settings.besteffort())).unwrap_or_default()
    }

    /// The pids moved in so far.
    pub fn moved(&self) -> &BTreeSet<i32> {
        &self.capped
    }

    fn record(&mut self, e: Entry) -> Result<(), CgroupError> {
        self.journal.record(e).map_err(CgroupError::from)
    }

    /// Creates odin's cgroups (once) and moves `targets` not yet capped
    /// into the best-effort one. An error creating the cgroups is returned
    /// (the caller lifts what was done); a process that cannot be moved is
    /// reported and skipped.
    pub fn cap(
        &mut self,
        targets: &[Target],
        pipeline_cpus: &CpuSet,
    ) -> Result<CapReport, CgroupError> {
        let mut report = CapReport::default();
        if !self.active {
            self.setup(pipeline_cpus, &mut report)?;
            self.active = true;
        }
        let cpuset_split = self.split_cpuset.clone();
        let to = self.settings.besteffort();
        for t in targets {
            if self.capped.contains(&t.pid) {
                continue;
            }
            let mut hierarchies = vec![self.cpu.clone()];
            hierarchies.extend(cpuset_split.clone());
            let mut ok = true;
            for h in hierarchies {
                if let Err(e) = self.move_into(&h, t, &to) {
                    report.failed.push((t.pid, e));
                    ok = false;
                    break;
                }
            }
            if ok {
                self.capped.insert(t.pid);
                report.capped.push(t.pid);
            }
        }
        Ok(report)
    }

    /// Records, then moves process `t` into `to` in `h`.
    fn move_into(&mut self, h: &Hierarchy, t: &Target, to: &str) -> Result<(), CgroupError> {
        let from = h
            .cgroup_of(&self.proc, t.pid)?
            .unwrap_or_else(|| "/".into());
        if from == to {
            return Ok(());
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
        h.move_process(self.fs.as_ref(), to, t.pid)
    }

    /// odin's cgroups in every hierarchy used, then odin into `pipeline`.
    fn setup(&mut self, pipeline_cpus: &CpuSet, report: &mut CapReport) -> Result<(), CgroupError> {
        let fs = self.fs.clone();
        let fs = fs.as_ref();
        let cpu = self.cpu.clone();
        let name = format!("/{}", self.settings.name);
        let weight = self.settings.weight;
        // The CPUs the capped tasks keep, if narrowing is on and leaves any.
        let narrow = match self.cpuset.clone() {
            None => None,
            Some(h) => {
                let all = if h.v2 {
                    v2::effective_cpus(&h.mount)?
                } else {
                    v1::cpus(&h.mount)?
                };
                match all.map(|a| a.difference(pipeline_cpus)) {
                    Some(rest) if !rest.is_empty() => Some((h, rest)),
                    _ => {
                        report.notes.push(format!(
                            "cpuset not narrowed: the pipeline's CPUs {pipeline_cpus} leave no other CPU"
                        ));
                        None
                    }
                }
            }
        };
        let unified_cpuset = narrow.as_ref().is_some_and(|(h, _)| h.mount == cpu.mount);
        let mut controllers = vec!["cpu"];
        if unified_cpuset {
            controllers.push("cpuset");
        }
        // The cpu hierarchy (and, on v2, cpuset with it).
        let base = cpu.dir(&name);
        if cpu.v2 {
            for c in &controllers {
                if !v2::subtree_has(&cpu.mount, c)? {
                    self.record(Entry::Enable {
                        dir: cpu.mount.clone(),
                        controller: c.to_string(),
                    })?;
                    v2::set_subtree(fs, &cpu.mount, c, true)?;
                }
            }
        }
        self.mkdir(&cpu, &base)?;
        if cpu.v2 {
            for c in &controllers {
                v2::set_subtree(fs, &base, c, true)?;
            }
        }
        set_weight(fs, &cpu, &base, weight)?;
        let pipeline = cpu.dir(&self.settings.pipeline());
        self.mkdir(&cpu, &pipeline)?;
        set_weight(fs, &cpu, &pipeline, weight)?;
        let besteffort = cpu.dir(&self.settings.besteffort());
        self.mkdir(&cpu, &besteffort)?;
        // The cap alone sets the capped tasks' share. With the least
        // weight, a pipeline that keeps its CPUs busy would starve them to
        // nothing rather than to the quota: they could not even run to
        // act on a signal.
        set_weight(fs, &cpu, &besteffort, weight)?;
        let quota = self.settings.quota_us();
        if cpu.v2 {
            v2::set_limit(fs, &besteffort, quota, PERIOD_US)?;
        } else {
            v1::set_limit(fs, &besteffort, quota, PERIOD_US)?;
        }
        match &narrow {
            Some((_, rest)) if unified_cpuset => v2::set_cpus(fs, &besteffort, rest)?,
            Some((h, rest)) => {
                // A separate cpuset hierarchy: v1, or v2 beside a v1 cpu.
                let base = h.dir(&name);
                let besteffort = h.dir(&self.settings.besteffort());
                if h.v2 {
                    if !v2::subtree_has(&h.mount, "cpuset")? {
                        self.record(Entry::Enable {
                            dir: h.mount.clone(),
                            controller: "cpuset".into(),
                        })?;
                        v2::set_subtree(fs, &h.mount, "cpuset", true)?;
                    }
                    self.mkdir(h, &base)?;
                    v2::set_subtree(fs, &base, "cpuset", true)?;
                    self.mkdir(h, &besteffort)?;
                    v2::set_cpus(fs, &besteffort, rest)?;
                } else {
                    let all = v1::cpus(&h.mount)?.unwrap_or_else(|| rest.clone());
                    self.mkdir(h, &base)?;
                    v1::set_cpus(fs, &base, &h.mount, &all)?;
                    self.mkdir(h, &besteffort)?;
                    v1::set_cpus(fs, &besteffort, &base, rest)?;
                }
            }
            None => {}
        }
        self.split_cpuset = narrow.filter(|_| !unified_cpuset).map(|(h, _)| h);
        // odin itself, last: a failure here leaves the cap useful.
        let me = ProcessInfo::read(&self.proc, self.own_pid)?;
        if let Some(me) = me {
            let t = Target {
                pid: me.pid,
                start: me.start,
                comm: me.comm,
            };
            if let Err(e) = self.move_into(&cpu, &t, &self.settings.pipeline()) {
                report.notes.push(format!("odin stays in its cgroup: {e}"));
            }
        }
        Ok(())
    }

    fn mkdir(&mut self, h: &Hierarchy, path: &Path) -> Result<(), CgroupError> {
        self.record(Entry::Mkdir {
            hierarchy: h.clone(),
            path: path.to_path_buf(),
        })?;
        self.fs.mkdir(path)
    }

    /// Undoes every change (the antagonists and odin go back where they
    /// came from, odin's cgroups are removed) and clears the journal of
    /// what was undone.
    pub fn lift(&mut self) -> Result<UndoReport, JournalError> {
        let report = self.journal.undo_all(self.fs.as_ref())?;
        self.active = false;
        self.capped.clear();
        self.split_cpuset = None;
        Ok(report)
    }
}

fn set_weight(
    fs: &dyn CgroupFs,
    h: &Hierarchy,
    dir: &Path,
    weight: u32,
) -> Result<(), CgroupError> {
    if h.v2 {
        v2::set_weight(fs, dir, weight)
    } else {
        v1::set_weight(fs, dir, weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::journal::Journal;
    use crate::cgroup::testutil::{FakeTree, Op};

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
    fn v2_cap_writes_cpu_max_and_weight_and_lift_undoes_everything() {
        let t = FakeTree::v2("cpuset cpu io memory", "memory");
        t.process(ODIN, 1, "odin", 0, "/");
        t.process(HOG, 50, "hog", 0, "/user.slice/batch");
        let mut e = Enforcer::new(t.fs.clone(), settings(&t, false), ODIN).unwrap();
        let cpus: CpuSet = "0-1".parse().unwrap();
        let r = e.cap(&[target(HOG, "hog")], &cpus).unwrap();
        assert_eq!(r.capped, vec![HOG]);
        assert!(r.failed.is_empty() && r.notes.is_empty(), "{r:?}");
        let m = "sys/fs/cgroup";
        assert_eq!(
            t.fs.take(),
            vec![
                w(&format!("{m}/cgroup.subtree_control"), "+cpu"),
                d(&format!("{m}/odin")),
                w(&format!("{m}/odin/cgroup.subtree_control"), "+cpu"),
                w(&format!("{m}/odin/cpu.weight"), "1000"),
                d(&format!("{m}/odin/pipeline")),
                w(&format!("{m}/odin/pipeline/cpu.weight"), "1000"),
                d(&format!("{m}/odin/besteffort")),
                w(&format!("{m}/odin/besteffort/cpu.weight"), "1000"),
                w(&format!("{m}/odin/besteffort/cpu.max"), "20000 100000"),
                w(&format!("{m}/odin/pipeline/cgroup.procs"), "100"),
                w(&format!("{m}/odin/besteffort/cgroup.procs"), "200"),
            ]
        );
        assert_eq!(
            journal_lines(&t),
            vec![
                "enabled cpu below /sys/fs/cgroup",
                "created /sys/fs/cgroup/odin",
                "created /sys/fs/cgroup/odin/pipeline",
                "created /sys/fs/cgroup/odin/besteffort",
                "moved pid 100 (odin) from / to /odin/pipeline in /sys/fs/cgroup",
                "moved pid 200 (hog) from /user.slice/batch to /odin/besteffort in /sys/fs/cgroup",
            ]
        );
        assert_eq!(t.cgroup_of(HOG, "cpu"), "/odin/besteffort");
        assert_eq!(e.capped_now(), vec![HOG]);
        assert_eq!(e.limit_text(), "cpu.max=\"20000 100000\"");
        // A second cap of the same process changes nothing.
        e.cap(&[target(HOG, "hog")], &cpus).unwrap();
        assert!(t.fs.take().is_empty());

        let undo = e.lift().unwrap();
        assert!(undo.failed.is_empty(), "{undo:?}");
        assert_eq!(
            t.fs.take(),
            vec![
                w(&format!("{m}/user.slice/batch/cgroup.procs"), "200"),
                w(&format!("{m}/cgroup.procs"), "100"),
                rm(&format!("{m}/odin/besteffort")),
                rm(&format!("{m}/odin/pipeline")),
                rm(&format!("{m}/odin")),
                w(&format!("{m}/cgroup.subtree_control"), "-cpu"),
            ]
        );
        assert_eq!(t.cgroup_of(HOG, "cpu"), "/user.slice/batch");
        assert_eq!(t.cgroup_of(ODIN, "cpu"), "/");
        assert!(!t.path("sys/fs/cgroup/odin").exists());
        assert!(journal_lines(&t).is_empty());
        assert!(!e.journal().path().exists(), "a clean journal is no file");
    }

    #[test]
    fn v1_cap_writes_cfs_quota_and_shares_and_narrows_the_cpuset() {
        let t = FakeTree::v1();
        t.process(ODIN, 1, "odin", 0, "/");
        t.process(HOG, 50, "hog", 0, "/");
        let mut e = Enforcer::new(t.fs.clone(), settings(&t, true), ODIN).unwrap();
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
                d(&format!("{s}/odin")),
                w(&format!("{s}/odin/cpuset.cpus"), "0-3"),
                w(&format!("{s}/odin/cpuset.mems"), "0"),
                d(&format!("{s}/odin/besteffort")),
                w(&format!("{s}/odin/besteffort/cpuset.cpus"), "2-3"),
                w(&format!("{s}/odin/besteffort/cpuset.mems"), "0"),
                w(&format!("{c}/odin/pipeline/cgroup.procs"), "100"),
                w(&format!("{c}/odin/besteffort/cgroup.procs"), "200"),
                w(&format!("{s}/odin/besteffort/cgroup.procs"), "200"),
            ]
        );
        assert_eq!(t.cgroup_of(HOG, "cpu"), "/odin/besteffort");
        assert_eq!(t.cgroup_of(HOG, "cpuset"), "/odin/besteffort");
        assert_eq!(t.cgroup_of(ODIN, "cpuset"), "/", "odin keeps its cpuset");
        assert_eq!(
            e.limit_text(),
            "cpu.cfs_quota_us=20000 cpu.cfs_period_us=100000"
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
        let mut e = Enforcer::new(t.fs.clone(), settings(&t, true), ODIN).unwrap();
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
        let t = FakeTree::v2("cpu", "cpu");
        t.process(ODIN, 1, "odin", 0, "/system.slice/odin.service");
        t.process(HOG, 50, "hog", 0, "/user.slice/batch");
        t.process(300, 50, "quiet", 0, "/user.slice/other");
        let mut e = Enforcer::new(t.fs.clone(), settings(&t, false), ODIN).unwrap();
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
        t.fs.write(&t.path("sys/fs/cgroup/user.slice/cgroup.procs"), "300")
            .unwrap();
        // odin dies without undoing anything.
        drop(e);
        t.fs.take();
        let report = restore(t.fs.as_ref(), &t.path("var/lib/odin")).unwrap();
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
        assert!(!t.path("sys/fs/cgroup/odin").exists());
        assert!(
            !t.path("var/lib/odin")
                .join(crate::cgroup::journal::FILE)
                .exists()
        );
        // The root's cpu stays enabled: odin did not enable it.
        assert!(!t.fs.take().iter().any(|o| matches!(o, Op::Write(p, _) if p.ends_with("subtree_control") && !p.contains("odin"))));
        // Nothing left: a second restore does nothing.
        assert!(
            restore(t.fs.as_ref(), &t.path("var/lib/odin"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_reused_pid_or_a_vanished_origin_is_handled() {
        let t = FakeTree::v2("cpu", "cpu");
        t.process(ODIN, 1, "odin", 0, "/");
        t.process(HOG, 50, "hog", 0, "/user.slice/batch");
        let mut e = Enforcer::new(t.fs.clone(), settings(&t, false), ODIN).unwrap();
        e.cap(&[target(HOG, "hog")], &"0".parse().unwrap()).unwrap();
        // The origin cgroup went away while the hog was capped.
        std::fs::remove_dir_all(t.path("sys/fs/cgroup/user.slice/batch")).unwrap();
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
        std::fs::create_dir(t.path("sys/fs/cgroup/system.slice")).unwrap();
        t.fs.write(&t.path("sys/fs/cgroup/system.slice/cgroup.procs"), "201")
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
        let e = Enforcer::new(t.fs.clone(), settings(&t, false), ODIN).unwrap_err();
        assert!(e.contains("no cpu controller"), "{e}");
        let t = FakeTree::v2("cpu", "");
        t.write("var/lib/odin", "a file, not a directory");
        let e = Enforcer::new(t.fs.clone(), settings(&t, false), ODIN).unwrap_err();
        assert!(e.contains("var/lib/odin"), "{e}");
    }
}
