//! One agent per state directory.
//!
//! The state directory holds the journal of odin's cgroup changes; an
//! agent undoes what the journal names when it starts and when it lifts a
//! cap. Two agents on one directory would undo each other's live changes
//! (a second `odin run` with the service's configuration would lift the
//! service's cap and remove its cgroups). So an agent holds an exclusive
//! `flock` on `<state_dir>/lock` for its whole life, and the file says
//! which process holds it. The kernel drops the lock when the holder
//! exits, however it exits (`kill -9` included): a stale file never
//! blocks the next start.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// The lock file's name in the state directory.
pub const FILE: &str = "lock";

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "state directory {dir} is in use by odin pid {holder}: two agents on one state directory \
         would undo each other's cgroup changes; stop that one, or give this one its own \
         directory (--state-dir, or cgroup.state_dir)",
        dir = dir.display(),
        holder = holder.map_or_else(|| "unknown".to_string(), |p| p.to_string())
    )]
    Held {
        /// The state directory.
        dir: PathBuf,
        /// The holder's pid, as it wrote it.
        holder: Option<i32>,
    },
    /// The directory or the lock file is not trusted or not usable.
    #[error("state directory lock {path}: {message}", path = path.display())]
    Unusable {
        /// The lock file or directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// The exclusive lock on a state directory, held until dropped.
#[derive(Debug)]
pub struct StateLock {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl StateLock {
    /// Takes the lock on `dir` (a trusted state directory, created if
    /// missing, see [`crate::trust::state_dir`]) and writes this process's
    /// pid into it; [`LockError::Held`] names the holder when another
    /// process has it.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let resolved = crate::trust::state_dir(dir).map_err(|e| LockError::Unusable {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        let path = resolved.join(FILE);
        let unusable = |message: String| LockError::Unusable {
            path: path.clone(),
            message,
        };
        let file = crate::trust::open_own(
            &path,
            "state directory lock",
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
        )
        .map_err(|e| unusable(e.to_string()))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    holder: text.trim().parse().ok(),
                });
            }
            Err((_, e)) => return Err(unusable(std::io::Error::from(e).to_string())),
        };
        lock.set_len(0)
            .and_then(|()| lock.rewind())
            .and_then(|()| writeln!(lock, "{}", std::process::id()))
            .and_then(|()| lock.sync_data())
            .map_err(|e| unusable(e.to_string()))?;
        Ok(Self {
            dir: resolved,
            _lock: lock,
        })
    }

    /// The state directory, resolved.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The pid of the agent that holds the lock on `dir` now, or `None` when
/// no process holds it (no agent runs there). The lock file must be
/// trusted as the agent's own; the holder is alive while it holds the
/// lock, so the pid is not a stale one.
pub fn holder(dir: &Path) -> Result<Option<i32>, LockError> {
    let path = dir.join(FILE);
    let unusable = |message: String| LockError::Unusable {
        path: path.clone(),
        message,
    };
    let mut file = crate::trust::open(&path, "state directory lock", false)
        .map_err(|e| unusable(e.to_string()))?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| unusable(e.to_string()))?;
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_free) => Ok(None),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| unusable(format!("holds {:?}, not a pid", text.trim()))),
        Err((_, e)) => Err(unusable(std::io::Error::from(e).to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        let first = StateLock::acquire(&state).unwrap();
        let pid = std::fs::read_to_string(state.join(FILE)).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        // flock locks belong to the open file: a second open in the same
        // process conflicts as another process would.
        let e = StateLock::acquire(&state).unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(e, LockError::Held { holder: Some(p), .. } if p == std::process::id() as i32),
            "{text}"
        );
        assert!(text.contains("--state-dir"), "{text}");
        drop(first);
        StateLock::acquire(&state).unwrap();
    }

    #[test]
    fn holder_names_the_live_holder_and_none_once_it_lets_go() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        let lock = StateLock::acquire(&state).unwrap();
        assert_eq!(holder(&state).unwrap(), Some(std::process::id() as i32));
        drop(lock);
        // The file and its pid stay; nobody holds the lock.
        assert!(state.join(FILE).exists());
        assert_eq!(holder(&state).unwrap(), None);
        let e = holder(&d.path().join("missing")).unwrap_err();
        assert!(matches!(e, LockError::Unusable { .. }), "{e}");
    }

    #[test]
    fn a_lock_file_that_is_a_link_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        crate::trust::state_dir(&state).unwrap();
        let elsewhere = d.path().join("elsewhere");
        std::fs::write(&elsewhere, "keep\n").unwrap();
        std::os::unix::fs::symlink(&elsewhere, state.join(FILE)).unwrap();
        let e = StateLock::acquire(&state).unwrap_err();
        assert!(matches!(e, LockError::Unusable { .. }), "{e}");
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "keep\n");
    }
}
