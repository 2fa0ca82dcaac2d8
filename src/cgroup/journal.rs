//! The write-ahead journal of odin's cgroup changes.
//!
//! Every change is appended (one JSON line) and `fsync`ed before it is
//! made, so a crash at any point leaves a journal that names at least
//! everything done. Undo walks the journal newest first, and every undo
//! step is idempotent and checks before it acts:
//! - `mkdir`: removes the cgroup (with the control values odin wrote in
//!   it); tasks still inside (children forked by a capped process) are
//!   first moved to where the process they joined came from.
//! - `move`: moves the process back to the cgroup it came from (or, if
//!   that is gone, its nearest existing ancestor), but only if it is the
//!   same process (pid and start time) and still where odin put it.
//! - `set`: writes the old value back to a control file of a cgroup odin
//!   did not create (an antagonist's `cpu.max`), but only if the file
//!   still holds what odin wrote.
//! - `unit_quota`: gives a systemd unit its old runtime CPU quota back
//!   through the manager, but only if the quota is still odin's.
//! - `enable` (written by older versions, which enabled a controller in
//!   a cgroup they did not create): left as it is, since other cgroups
//!   may rely on the controller by now.
//!
//! The journal is data, not authority: before an entry is undone, every
//! path it names is checked against the system as odin detects it at that
//! moment ([`UndoEnv`]): its hierarchy must be the one mounted now, its
//! directories below that mount (no `..`, no symbolic link on the way),
//! its `proc` the root's `/proc`. An entry that fails is refused with the
//! reason, left out of the undo and dropped from the journal.
//!
//! An entry recorded for a change that never happened (a crash between
//! the record and the write) undoes to nothing. Entries whose undo fails
//! stay in the journal for the next attempt.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::systemd::UnitManager;
use super::{CgroupError, CgroupFs, Hierarchy, Layout, ProcessInfo, procs, read_file, v2};

/// The journal's file name in the state directory.
pub const FILE: &str = "cgroup-journal.jsonl";

/// Why the journal could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file or its directory could not be read or written.
    #[error("cgroup journal {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The state directory or the journal is not odin's alone.
    #[error(transparent)]
    Untrusted(#[from] crate::trust::TrustError),
}

/// A journal line that is not an entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Skipped {
    /// 1-based line number.
    pub line: usize,
    /// Why it is not an entry.
    pub message: String,
    /// The line (at most 200 characters of it).
    pub text: String,
}

/// The entries of a journal's text, and the lines that are not entries.
/// An entry is one JSON object on one line; a line torn by a crash or a
/// failed append (ENOSPC, EIO) announced a change that was never made
/// (the record comes before the change), and garbage is no entry.
pub fn parse(text: &str) -> (Vec<Entry>, Vec<Skipped>) {
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(e) => entries.push(e),
            Err(e) => skipped.push(Skipped {
                line: i + 1,
                message: e.to_string(),
                text: line.chars().take(200).collect(),
            }),
        }
    }
    (entries, skipped)
}

/// The journal's text, if the file exists; it must be odin's alone.
fn read_trusted(path: &Path) -> Result<Option<String>, JournalError> {
    use crate::trust::TrustError;
    let mut f = match crate::trust::open_own(path, WHAT, std::fs::OpenOptions::new().read(true)) {
        Ok(f) => f,
        Err(TrustError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let mut text = String::new();
    f.read_to_string(&mut text).map_err(io_err(path))?;
    Ok(Some(text))
}

/// What the journal is called in errors.
const WHAT: &str = "cgroup journal";

/// One change, recorded before it is made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Entry {
    /// odin created the cgroup `path` in `hierarchy`; what it wrote inside
    /// goes with it.
    Mkdir {
        /// The hierarchy.
        hierarchy: Hierarchy,
        /// The directory.
        path: PathBuf,
    },
    /// odin enabled `controller` for the children of `dir`.
    Enable {
        /// The cgroup whose `cgroup.subtree_control` changed.
        dir: PathBuf,
        /// The controller.
        controller: String,
    },
    /// odin wrote `new` to the control file `file` of cgroup `cgroup` in
    /// `hierarchy`, a cgroup it did not create; `old` is what it held.
    Set {
        /// The hierarchy.
        hierarchy: Hierarchy,
        /// The cgroup, as `/proc/<pid>/cgroup` shows it.
        cgroup: String,
        /// The control file ([`SETTABLE`]).
        file: String,
        /// Its value before.
        old: String,
        /// What odin wrote.
        new: String,
    },
    /// odin set the runtime CPU quota of the systemd unit `unit` (whose
    /// cgroup is `cgroup`) to `new` microseconds per second; `old` is the
    /// quota it had (`None`: none).
    UnitQuota {
        /// The unit (`name.service`, `name.scope`).
        unit: String,
        /// Its cgroup, for the log.
        cgroup: String,
        /// Its quota before.
        old: Option<u64>,
        /// What odin set.
        new: u64,
    },
    /// odin moved process `pid` from cgroup `from` to `to`.
    Move {
        /// The hierarchy.
        hierarchy: Hierarchy,
        /// The `/proc` directory the process is read from.
        proc: PathBuf,
        /// Process id.
        pid: i32,
        /// Its start time (`stat` field 22), against pid reuse.
        start: u64,
        /// Its name, for the log.
        comm: String,
        /// Where it was.
        from: String,
        /// Where odin put it.
        to: String,
    },
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::Mkdir { path, .. } => write!(f, "created {}", path.display()),
            Entry::Enable { dir, controller } => {
                write!(f, "enabled {controller} below {}", dir.display())
            }
            Entry::Set {
                hierarchy,
                cgroup,
                file,
                old,
                new,
            } => write!(
                f,
                "set {file} of {cgroup} from {old:?} to {new:?} in {}",
                hierarchy.mount.display()
            ),
            Entry::UnitQuota { unit, old, new, .. } => write!(
                f,
                "set CPUQuota of {unit} from {} to {}",
                quota_text(*old),
                quota_text(Some(*new))
            ),
            Entry::Move {
                pid,
                comm,
                from,
                to,
                hierarchy,
                ..
            } => write!(
                f,
                "moved pid {pid} ({comm}) from {from} to {to} in {}",
                hierarchy.mount.display()
            ),
        }
    }
}

/// A unit quota as `systemctl` shows it: `20%` (of one CPU), `none`.
pub fn quota_text(usec_per_sec: Option<u64>) -> String {
    match usec_per_sec {
        None => "none".into(),
        Some(u) => format!("{}%", u as f64 / 10_000.0),
    }
}

/// The control files a `set` entry may name: what odin writes in a
/// cgroup it did not create.
pub const SETTABLE: &[&str] = &[v2::CPU_MAX, "cpuset.cpus"];

/// The journal file and what it holds.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    entries: Vec<Entry>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Makes a new or renamed directory entry durable.
fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

impl Journal {
    /// The journal in `state_dir` (created, mode 0700, if missing), with
    /// the entries a previous run left. The directory and the file must be
    /// trusted ([`crate::trust::state_dir`]): owned by odin's user,
    /// writable by no one else, not symbolic links; otherwise whoever can
    /// write them could make odin move processes and remove directories.
    pub fn open(state_dir: &Path) -> Result<Self, JournalError> {
        let dir = crate::trust::state_dir(state_dir)?;
        let path = dir.join(FILE);
        let entries = Self::load(&path)?;
        Ok(Self { path, entries })
    }

    /// The entries in the file at `path` (none if it does not exist). A
    /// line that is not an entry (torn by a failed append, or corrupt) is
    /// skipped with a warning naming it; the entries around it are kept.
    /// The file must be a regular file of odin's user that no one else
    /// may write, and not a symbolic link.
    pub fn load(path: &Path) -> Result<Vec<Entry>, JournalError> {
        let Some(text) = read_trusted(path)? else {
            return Ok(Vec::new());
        };
        let (entries, skipped) = parse(&text);
        for s in &skipped {
            tracing::warn!(
                "cgroup journal {}:{}: skipped, not an entry ({}): {:?}",
                path.display(),
                s.line,
                s.message,
                s.text
            );
        }
        Ok(entries)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What is recorded, oldest first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Appends `entry` and makes it durable; only then may the change be
    /// made.
    pub fn record(&mut self, entry: Entry) -> Result<(), JournalError> {
        let created = !self.path.exists();
        let mut line = serde_json::to_string(&entry).expect("an entry always serialises");
        line.push('\n');
        let mut f = crate::trust::open_own(
            &self.path,
            WHAT,
            std::fs::OpenOptions::new().create(true).append(true),
        )?;
        f.write_all(line.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io_err(&self.path))?;
        if created && let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        self.entries.push(entry);
        Ok(())
    }

    /// Replaces the journal with `entries` atomically (write, fsync,
    /// rename); with none, removes the file.
    pub fn replace(&mut self, entries: Vec<Entry>) -> Result<(), JournalError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        if entries.is_empty() {
            match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_err(&self.path)(e));
                }
                _ => {}
            }
        } else {
            let tmp = self.path.with_extension("tmp");
            // A leftover of a crash between write and rename.
            match std::fs::remove_file(&tmp) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_err(&tmp)(e));
                }
                _ => {}
            }
            let text: String = entries
                .iter()
                .map(|e| serde_json::to_string(e).expect("an entry always serialises") + "\n")
                .collect();
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)
                .and_then(|mut f| {
                    f.write_all(text.as_bytes())?;
                    f.sync_all()
                })
                .map_err(io_err(&tmp))?;
            std::fs::rename(&tmp, &self.path).map_err(io_err(&self.path))?;
        }
        sync_dir(dir)?;
        self.entries = entries;
        Ok(())
    }

    /// Undoes everything recorded, newest first, and keeps only the
    /// entries whose undo failed.
    pub fn undo_all(&mut self, env: &UndoEnv) -> Result<UndoReport, JournalError> {
        let report = undo(env, &self.entries);
        let left = report.failed.iter().map(|(e, _)| e.clone()).collect();
        self.replace(left)?;
        Ok(report)
    }
}

/// The running system an undo acts on, as odin detects it itself.
pub struct UndoEnv<'a> {
    /// Where the changes go.
    pub fs: &'a dyn CgroupFs,
    /// The root's `/proc`.
    pub proc: PathBuf,
    /// The cgroup mounts now.
    pub layout: Layout,
    /// systemd's manager, where odin has one.
    pub units: Option<&'a dyn UnitManager>,
}

impl std::fmt::Debug for UndoEnv<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UndoEnv")
            .field("proc", &self.proc)
            .field("layout", &self.layout)
            .field("units", &self.units.is_some())
            .finish()
    }
}

impl<'a> UndoEnv<'a> {
    /// The system under `root` (`/` on a real one): its `/proc` and the
    /// cgroup layout read from its mountinfo now.
    pub fn detect(
        fs: &'a dyn CgroupFs,
        root: &Path,
        units: Option<&'a dyn UnitManager>,
    ) -> Result<Self, CgroupError> {
        Ok(Self {
            fs,
            proc: root.join("proc"),
            layout: Layout::detect(root)?,
            units,
        })
    }
}

/// What an undo did.
#[derive(Debug, Default)]
pub struct UndoReport {
    /// One line per entry: what was undone, or why nothing was needed.
    pub done: Vec<String>,
    /// Entries whose undo failed, with the error.
    pub failed: Vec<(Entry, CgroupError)>,
    /// Entries not undone because they name something outside what odin
    /// detected, with the reason; they are dropped from the journal.
    pub refused: Vec<(Entry, String)>,
}

impl UndoReport {
    /// Whether anything was recorded at all.
    pub fn is_empty(&self) -> bool {
        self.done.is_empty() && self.failed.is_empty() && self.refused.is_empty()
    }
}

/// Undoes `entries`, newest first, after checking each against `env`.
pub fn undo(env: &UndoEnv, entries: &[Entry]) -> UndoReport {
    let mut report = UndoReport::default();
    let mut admitted = Vec::new();
    for entry in entries {
        match admit(env, entry) {
            Ok(()) => admitted.push(entry.clone()),
            Err(why) => report.refused.push((entry.clone(), why)),
        }
    }
    for entry in admitted.iter().rev() {
        match undo_one(env, entry, &admitted) {
            Ok(line) => report.done.push(line),
            Err(e) => report.failed.push((entry.clone(), e)),
        }
    }
    report
}

/// `Ok` if `h` is the hierarchy of its controller mounted now.
fn mounted(env: &UndoEnv, h: &Hierarchy) -> Result<(), String> {
    match env.layout.hierarchy(&h.controller) {
        Some(now) if now == *h => Ok(()),
        Some(now) => Err(format!(
            "the {} hierarchy is at {} ({}), not at {} ({})",
            h.controller,
            now.mount.display(),
            if now.v2 { "v2" } else { "v1" },
            h.mount.display(),
            if h.v2 { "v2" } else { "v1" },
        )),
        None => Err(format!("no {} hierarchy is mounted now", h.controller)),
    }
}

/// Whether `entry` names only what odin detected itself: `Err` says what
/// lies outside.
fn admit(env: &UndoEnv, entry: &Entry) -> Result<(), String> {
    match entry {
        Entry::Mkdir { hierarchy, path } => {
            mounted(env, hierarchy)?;
            hierarchy.cgroup_at(path).map(drop)
        }
        Entry::Move {
            hierarchy,
            proc,
            from,
            to,
            ..
        } => {
            mounted(env, hierarchy)?;
            if *proc != env.proc {
                return Err(format!(
                    "{} is not the root's proc directory {}",
                    proc.display(),
                    env.proc.display()
                ));
            }
            hierarchy.checked_dir(from)?;
            hierarchy.checked_dir(to).map(drop)
        }
        Entry::Set {
            hierarchy,
            cgroup,
            file,
            ..
        } => {
            mounted(env, hierarchy)?;
            if !SETTABLE.contains(&file.as_str()) {
                return Err(format!("{file:?} is not a control file odin sets"));
            }
            let dir = hierarchy.checked_dir(cgroup)?;
            if dir == hierarchy.mount {
                return Err(format!(
                    "odin never sets {file} of the root cgroup {}",
                    dir.display()
                ));
            }
            Ok(())
        }
        Entry::UnitQuota { unit, .. } => {
            if unit.contains('/') || super::systemd::unit_of(unit) != Some(unit.as_str()) {
                return Err(format!("{unit:?} is not a service or scope unit"));
            }
            Ok(())
        }
        // Undone to nothing: no path is used.
        Entry::Enable { .. } => Ok(()),
    }
}

fn undo_one(env: &UndoEnv, entry: &Entry, all: &[Entry]) -> Result<String, CgroupError> {
    let fs = env.fs;
    let proc = env.proc.as_path();
    match entry {
        Entry::Move {
            hierarchy,
            pid,
            start,
            comm,
            from,
            to,
            ..
        } => {
            match ProcessInfo::read(proc, *pid)? {
                None => return Ok(format!("pid {pid} ({comm}) has exited")),
                Some(p) if p.start != *start => {
                    return Ok(format!("pid {pid} ({comm}) has exited (pid reused)"));
                }
                Some(_) => {}
            }
            let Some(now) = hierarchy.cgroup_of(proc, *pid)? else {
                return Ok(format!(
                    "pid {pid} ({comm}) is in no cgroup of {}",
                    hierarchy.mount.display()
                ));
            };
            if now != *to {
                return Ok(format!("pid {pid} ({comm}) left {to} for {now} meanwhile"));
            }
            let back = existing_ancestor(hierarchy, from);
            match hierarchy.move_process(fs, &back, *pid) {
                // Exited between the check and the move.
                Err(e) if e.os_error() == Some(libc::ESRCH) => {
                    Ok(format!("pid {pid} ({comm}) has exited"))
                }
                Err(e) => Err(e),
                Ok(()) => Ok(format!("moved pid {pid} ({comm}) back to {back}")),
            }
        }
        Entry::Mkdir { hierarchy, path } => {
            if !path.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                return Ok(format!("{} is gone", path.display()));
            }
            let mut evacuated = Vec::new();
            for pid in procs(path)? {
                let back = evacuation_target(proc, hierarchy, path, pid, all);
                match hierarchy.move_process(fs, &back, pid) {
                    Err(e) if e.os_error() == Some(libc::ESRCH) => {}
                    Err(e) => return Err(e),
                    Ok(()) => evacuated.push(format!("{pid} to {back}")),
                }
            }
            fs.rmdir(path)?;
            Ok(if evacuated.is_empty() {
                format!("removed {}", path.display())
            } else {
                format!(
                    "removed {} after moving pid {}",
                    path.display(),
                    evacuated.join(", ")
                )
            })
        }
        Entry::Set {
            hierarchy,
            cgroup,
            file,
            old,
            new,
        } => {
            let dir = hierarchy.dir(cgroup);
            if !dir.is_dir() {
                return Ok(format!("{cgroup} is gone"));
            }
            let path = dir.join(file);
            let now = read_file(&path)?;
            let now = now.trim();
            if now != new {
                return Ok(format!(
                    "left {file} of {cgroup} at {now:?}: changed from odin's {new:?} meanwhile"
                ));
            }
            fs.write(&path, old)?;
            Ok(format!("restored {file} of {cgroup} to {old:?}"))
        }
        Entry::UnitQuota {
            unit,
            cgroup,
            old,
            new,
        } => {
            let Some(units) = env.units else {
                return Err(CgroupError::Systemd {
                    unit: unit.clone(),
                    message: "no systemd manager to restore the CPU quota through".into(),
                });
            };
            let now = units.cpu_quota(unit)?;
            if now != Some(*new) {
                return Ok(format!(
                    "left CPUQuota of {unit} ({cgroup}) at {}: changed from odin's {} meanwhile",
                    quota_text(now),
                    quota_text(Some(*new))
                ));
            }
            units.set_cpu_quota(unit, *old)?;
            Ok(format!(
                "restored CPUQuota of {unit} ({cgroup}) to {}",
                quota_text(*old)
            ))
        }
        Entry::Enable { dir, controller } => Ok(format!(
            "left {controller} enabled below {}: other cgroups may use it by now",
            dir.display()
        )),
    }
}

/// `cgroup`, or its nearest ancestor that still exists (as a directory,
/// not a symbolic link).
fn existing_ancestor(h: &Hierarchy, cgroup: &str) -> String {
    let is_dir = |c: &str| h.dir(c).symlink_metadata().is_ok_and(|m| m.is_dir());
    let mut c = cgroup.trim_end_matches('/').to_string();
    while !c.is_empty() && c != "/" && !is_dir(&c) {
        c = match c.rfind('/') {
            Some(0) | None => "/".to_string(),
            Some(i) => c[..i].to_string(),
        };
    }
    if c.is_empty() { "/".to_string() } else { c }
}

/// Where a process found in odin's cgroup `dir` goes when the cgroup is
/// removed: where its parent came from if odin moved the parent, else
/// where the first process odin moved into `dir` came from, else the
/// hierarchy's root. Processes are read under `proc`, the root's `/proc`.
fn evacuation_target(proc: &Path, h: &Hierarchy, dir: &Path, pid: i32, all: &[Entry]) -> String {
    let moved_here = |e: &&Entry| match e {
        Entry::Move { hierarchy, to, .. } => hierarchy == h && h.dir(to) == dir,
        _ => false,
    };
    let origin = |e: &Entry| match e {
        Entry::Move { from, .. } => from.clone(),
        _ => "/".to_string(),
    };
    let parent = ProcessInfo::read(proc, pid).ok().flatten().map(|p| p.ppid);
    let by_parent = parent.and_then(|ppid| {
        all.iter()
            .filter(moved_here)
            .find(|e| matches!(e, Entry::Move { pid, .. } if *pid == ppid))
    });
    let target = by_parent
        .or_else(|| all.iter().find(moved_here))
        .map_or_else(|| "/".to_string(), origin);
    existing_ancestor(h, &target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkdir(p: &str) -> Entry {
        Entry::Mkdir {
            hierarchy: Hierarchy {
                controller: "cpu".into(),
                mount: "/sys/fs/cgroup".into(),
                v2: true,
            },
            path: p.into(),
        }
    }

    #[test]
    fn entries_are_json_lines_that_read_back_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut j = Journal::open(&state).unwrap();
        j.record(mkdir("/sys/fs/cgroup/odin")).unwrap();
        j.record(Entry::Enable {
            dir: "/sys/fs/cgroup".into(),
            controller: "cpu".into(),
        })
        .unwrap();
        let text = std::fs::read_to_string(j.path()).unwrap();
        assert_eq!(
            text,
            "{\"op\":\"mkdir\",\"hierarchy\":{\"controller\":\"cpu\",\"mount\":\"/sys/fs/cgroup\",\"v2\":true},\"path\":\"/sys/fs/cgroup/odin\"}\n\
             {\"op\":\"enable\",\"dir\":\"/sys/fs/cgroup\",\"controller\":\"cpu\"}\n"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // A crash in the middle of an append.
        std::fs::write(j.path(), format!("{text}{{\"op\":\"mkd")).unwrap();
        assert_eq!(Journal::open(&state).unwrap().entries(), j.entries());
        // A line torn in the middle (a failed append that a later one
        // followed) or garbage is skipped and named; the entries around it
        // are kept.
        let lines: Vec<&str> = text.lines().collect();
        let torn = format!(
            "{}\n{{\"op\":\"mkd\n\u{0}\u{1}junk\n{}\n",
            lines[0], lines[1]
        );
        let (entries, skipped) = parse(&torn);
        assert_eq!(entries, j.entries());
        assert_eq!(
            skipped.iter().map(|s| s.line).collect::<Vec<_>>(),
            vec![2, 3]
        );
        std::fs::write(j.path(), &torn).unwrap();
        assert_eq!(Journal::open(&state).unwrap().entries(), j.entries());
        j.replace(vec![mkdir("/x")]).unwrap();
        assert_eq!(Journal::load(j.path()).unwrap(), vec![mkdir("/x")]);
        j.replace(Vec::new()).unwrap();
        assert!(!j.path().exists());
    }

    #[test]
    fn a_journal_or_state_dir_someone_else_could_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let chmod = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut j = Journal::open(&state).unwrap();
        j.record(mkdir("/sys/fs/cgroup/odin")).unwrap();
        let mode = std::fs::metadata(j.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        // The state directory open to the group.
        chmod(&state, 0o770);
        let e = Journal::open(&state).unwrap_err().to_string();
        assert!(
            e.contains("state directory") && e.contains("chmod 0700"),
            "{e}"
        );
        chmod(&state, 0o700);

        // The journal writable by others.
        chmod(j.path(), 0o666);
        let e = Journal::open(&state).unwrap_err().to_string();
        assert!(
            e.contains("cgroup journal") && e.contains("mode 666"),
            "{e}"
        );
        chmod(j.path(), 0o600);

        // The journal a link to a file that names other people's cgroups:
        // neither read nor appended to.
        let planted = dir.path().join("planted.jsonl");
        std::fs::write(&planted, std::fs::read(j.path()).unwrap()).unwrap();
        chmod(&planted, 0o600);
        std::fs::remove_file(j.path()).unwrap();
        std::os::unix::fs::symlink(&planted, j.path()).unwrap();
        let e = Journal::open(&state).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        let before = std::fs::read(&planted).unwrap();
        assert!(j.record(mkdir("/elsewhere")).is_err());
        assert_eq!(std::fs::read(&planted).unwrap(), before);

        // The state directory itself a link.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&state, &link).unwrap();
        let e = Journal::open(&link).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
    }

    #[test]
    fn existing_ancestor_walks_up_to_the_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        let h = Hierarchy {
            controller: "cpu".into(),
            mount: dir.path().to_path_buf(),
            v2: true,
        };
        assert_eq!(existing_ancestor(&h, "/a/b"), "/a/b");
        assert_eq!(existing_ancestor(&h, "/a/b/c/d"), "/a/b");
        assert_eq!(existing_ancestor(&h, "/x/y"), "/");
        assert_eq!(existing_ancestor(&h, "/"), "/");
    }
}
