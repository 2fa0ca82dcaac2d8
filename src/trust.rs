//! What odin trusts on disk.
//!
//! odin runs as root (or with capabilities) and acts on what its files
//! say: the configuration picks CPUs and cgroups, the journal names
//! processes to move and directories to remove. A file anyone else can
//! change, or swap, would let them steer root. So a file odin reads or
//! a directory it keeps state in is trusted only when:
//! - it is owned by root or by odin's effective user, and no one else
//!   may write it (no group or world write bit);
//! - every directory above it is owned by root or odin's effective user
//!   and not writable by others, unless it is sticky (`/tmp`): there
//!   no one else may rename or remove what odin's user owns;
//! - it is not a symbolic link, unless the operator allowed that for the
//!   file (`follow`); even then the checks apply to the file the link
//!   resolves to and to that file's directories;
//! - the checks are made on what was opened (`fstat` of the descriptor),
//!   and the path opened is the one whose directories were checked, so
//!   nothing can be swapped in between.
//!
//! A state directory is stricter: owned by odin's effective user itself
//! (not root's when odin runs as someone else), never a symbolic link.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why a file or directory is not trusted, or could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The path could not be opened, read or inspected.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The path, or a directory above it, is not safe to trust.
    #[error(
        "refusing {what} {path}: {why}; odin runs privileged and acts on what it reads there; {fix}",
        path = path.display()
    )]
    Untrusted {
        /// What the file is for ("configuration", "state directory").
        what: &'static str,
        /// The path that failed the check (the file or one of its parents).
        path: PathBuf,
        /// What is wrong with it.
        why: String,
        /// How to make it trusted.
        fix: String,
    },
}

/// The effective user id odin runs as.
pub fn euid() -> u32 {
    nix::unistd::Uid::effective().as_raw()
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> TrustError + '_ {
    move |source| TrustError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `uid` may own what odin trusts: root or odin's own user.
fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == euid()
}

fn owners() -> String {
    if euid() == 0 {
        "root".to_string()
    } else {
        format!("root or uid {}", euid())
    }
}

/// Checks `dir` and every directory above it (the path is absolute and
/// resolved): each owned by root or odin's user, and not writable by
/// group or others unless sticky.
fn check_parents(what: &'static str, dir: &Path) -> Result<(), TrustError> {
    for d in dir.ancestors() {
        let meta = std::fs::metadata(d).map_err(io_err(d))?;
        let mode = meta.mode();
        let untrusted = |why: String, fix: String| TrustError::Untrusted {
            what,
            path: d.to_path_buf(),
            why: format!("directory {} {why}", d.display()),
            fix,
        };
        if !trusted_owner(meta.uid()) {
            return Err(untrusted(
                format!("is owned by uid {}, not {}", meta.uid(), owners()),
                format!("move the file to a directory {} owns", owners()),
            ));
        }
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(untrusted(
                format!("is writable by group or others (mode {:o})", mode & 0o7777),
                format!("`chmod go-w {}`", d.display()),
            ));
        }
    }
    Ok(())
}

/// `path` made absolute with its directories resolved; the last
/// component is kept as it is unless `follow`.
fn resolve(path: &Path, follow: bool) -> Result<PathBuf, TrustError> {
    if follow {
        return std::fs::canonicalize(path).map_err(io_err(path));
    }
    let name = path.file_name().ok_or_else(|| TrustError::Io {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "names no file"),
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent = std::fs::canonicalize(parent).map_err(io_err(parent))?;
    Ok(parent.join(name))
}

/// Opens `path` to read, if it is trusted (see the module doc): a regular
/// file owned by root or odin's user, writable by no one else, in
/// trusted directories, not a symbolic link unless `follow`. `what` names
/// the file in the error ("configuration", "cost profile").
pub fn open(path: &Path, what: &'static str, follow: bool) -> Result<File, TrustError> {
    let resolved = resolve(path, follow)?;
    if let Some(dir) = resolved.parent() {
        check_parents(what, dir)?;
    }
    // O_NOFOLLOW on the resolved path: with `follow` the link was resolved
    // above, without it a link is refused here. O_NONBLOCK: a FIFO planted
    // in place of the file must not block the open.
    let file = open_no_link(
        &resolved,
        path,
        what,
        std::fs::OpenOptions::new().read(true),
        libc::O_NOCTTY,
        || {
            format!(
                "name the file it points to ({}), or pass --follow-symlinks",
                std::fs::canonicalize(path)
                    .map_or_else(|_| "?".into(), |p| p.display().to_string())
            )
        },
    )?;
    check_file(&file, path, what, false)?;
    Ok(file)
}

/// Reads the trusted file `path` whole (see [`open`]).
pub fn read(path: &Path, what: &'static str, follow: bool) -> Result<String, TrustError> {
    let mut text = String::new();
    open(path, what, follow)?
        .read_to_string(&mut text)
        .map_err(io_err(path))?;
    Ok(text)
}

/// Checks an opened file: regular, owned by root or odin's user (odin's
/// user only with `own`), not writable by group or others.
pub fn check_file(
    file: &File,
    path: &Path,
    what: &'static str,
    own: bool,
) -> Result<(), TrustError> {
    let meta = file.metadata().map_err(io_err(path))?;
    let untrusted = |why: String, fix: String| TrustError::Untrusted {
        what,
        path: path.to_path_buf(),
        why,
        fix,
    };
    if !meta.file_type().is_file() {
        return Err(untrusted(
            "it is not a regular file".into(),
            "name a regular file".into(),
        ));
    }
    let owner_ok = if own {
        meta.uid() == euid()
    } else {
        trusted_owner(meta.uid())
    };
    if !owner_ok {
        let who = if own {
            format!("uid {}", euid())
        } else {
            owners()
        };
        return Err(untrusted(
            format!("it is owned by uid {}, not {who}", meta.uid()),
            format!("`chown {} {}`", euid(), path.display()),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(untrusted(
            format!(
                "it is writable by group or others (mode {:o})",
                meta.mode() & 0o7777
            ),
            format!("`chmod go-w {}`", path.display()),
        ));
    }
    Ok(())
}

/// Opens `path`, a file of a trusted state directory (see [`state_dir`]),
/// with `options`, adding `O_NOFOLLOW` and `O_NONBLOCK` and creating it
/// 0600: refused when it is a symbolic link, not a regular file, or not
/// odin's user's alone. `what` names it in the error ("cgroup journal").
pub fn open_own(
    path: &Path,
    what: &'static str,
    options: &mut std::fs::OpenOptions,
) -> Result<File, TrustError> {
    let file = open_no_link(path, path, what, options.mode(0o600), 0, || {
        format!("remove {}", path.display())
    })?;
    check_file(&file, path, what, true)?;
    Ok(file)
}

/// Opens `open` with `options` and `O_NOFOLLOW | O_NONBLOCK | extra`: a
/// symbolic link there is refused as untrusted, with `fix`. Errors name
/// `named`, the path the caller was given.
fn open_no_link(
    open: &Path,
    named: &Path,
    what: &'static str,
    options: &mut std::fs::OpenOptions,
    extra: libc::c_int,
    fix: impl FnOnce() -> String,
) -> Result<File, TrustError> {
    options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | extra)
        .open(open)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                TrustError::Untrusted {
                    what,
                    path: named.to_path_buf(),
                    why: "it is a symbolic link".into(),
                    fix: fix(),
                }
            } else {
                io_err(named)(e)
            }
        })
}

/// Makes sure `dir` is a state directory odin may trust, creating it
/// (mode 0700, with missing parents) if it does not exist: a real
/// directory (not a symbolic link) owned by odin's effective user,
/// writable by no one else, in trusted directories. Returns the path with
/// its parents resolved, the one to use from then on.
pub fn state_dir(dir: &Path) -> Result<PathBuf, TrustError> {
    use std::os::unix::fs::DirBuilderExt;
    const WHAT: &str = "state directory";
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?,
        Err(e) => return Err(io_err(dir)(e)),
        Ok(_) => {}
    }
    let resolved = resolve(dir, false)?;
    if let Some(parent) = resolved.parent() {
        check_parents(WHAT, parent)?;
    }
    let meta = std::fs::symlink_metadata(&resolved).map_err(io_err(dir))?;
    let untrusted = |why: String, fix: String| TrustError::Untrusted {
        what: WHAT,
        path: dir.to_path_buf(),
        why,
        fix,
    };
    if meta.file_type().is_symlink() {
        return Err(untrusted(
            "it is a symbolic link".into(),
            "give cgroup.state_dir the directory itself".into(),
        ));
    }
    if !meta.is_dir() {
        return Err(untrusted(
            "it is not a directory".into(),
            "remove it or give cgroup.state_dir another path".into(),
        ));
    }
    if meta.uid() != euid() {
        return Err(untrusted(
            format!("it is owned by uid {}, not uid {}", meta.uid(), euid()),
            format!("`chown {} {}`", euid(), dir.display()),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(untrusted(
            format!(
                "it is writable by group or others (mode {:o})",
                meta.mode() & 0o7777
            ),
            format!("`chmod 0700 {}`", dir.display()),
        ));
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn untrusted(r: Result<impl std::fmt::Debug, TrustError>) -> String {
        match r {
            Err(e @ TrustError::Untrusted { .. }) => e.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_private_file_is_read_and_a_writable_or_linked_one_refused() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("odin.yaml");
        std::fs::write(&f, "pes: []\n").unwrap();
        chmod(&f, 0o644);
        assert_eq!(read(&f, "configuration", false).unwrap(), "pes: []\n");

        chmod(&f, 0o664);
        let e = untrusted(read(&f, "configuration", false));
        assert!(
            e.contains("writable by group or others (mode 664)") && e.contains("chmod go-w"),
            "{e}"
        );
        chmod(&f, 0o600);

        let link = d.path().join("link.yaml");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        let e = untrusted(read(&link, "configuration", false));
        assert!(
            e.contains("symbolic link") && e.contains("--follow-symlinks"),
            "{e}"
        );
        assert_eq!(read(&link, "configuration", true).unwrap(), "pes: []\n");

        // A directory above it that others may write.
        let open_dir = d.path().join("shared");
        std::fs::create_dir(&open_dir).unwrap();
        chmod(&open_dir, 0o777);
        let g = open_dir.join("odin.yaml");
        std::fs::write(&g, "").unwrap();
        chmod(&g, 0o644);
        let e = untrusted(read(&g, "configuration", false));
        assert!(e.contains("directory") && e.contains("shared"), "{e}");
        // Sticky, as /tmp: others cannot swap what odin's user owns.
        chmod(&open_dir, 0o1777);
        read(&g, "configuration", false).unwrap();
        // Through a link, the checks are on the target's directories.
        chmod(&open_dir, 0o777);
        let to_shared = d.path().join("to-shared.yaml");
        std::os::unix::fs::symlink(&g, &to_shared).unwrap();
        let e = untrusted(read(&to_shared, "configuration", true));
        assert!(e.contains("shared"), "{e}");
    }

    #[test]
    fn a_fifo_or_a_directory_is_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = untrusted(read(&fifo, "configuration", false));
        assert!(e.contains("not a regular file"), "{e}");
        let e = untrusted(read(d.path(), "configuration", false));
        assert!(e.contains("not a regular file"), "{e}");
        let e = read(&d.path().join("missing"), "configuration", false).unwrap_err();
        assert!(matches!(e, TrustError::Io { .. }) && e.to_string().contains("missing"));
    }

    #[test]
    fn a_file_owned_by_someone_else_is_refused() {
        if euid() != 0 {
            eprintln!("SKIP a_file_owned_by_someone_else_is_refused: needs root to chown");
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs the tests as root"
            );
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("odin.yaml");
        std::fs::write(&f, "").unwrap();
        chmod(&f, 0o644);
        std::os::unix::fs::chown(&f, Some(1234), None).unwrap();
        let e = untrusted(read(&f, "cost profile", false));
        assert!(
            e.contains("refusing cost profile") && e.contains("owned by uid 1234"),
            "{e}"
        );
        // So is a file in a directory someone else owns.
        let theirs = d.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(1234), None).unwrap();
        let g = theirs.join("odin.yaml");
        std::fs::write(&g, "").unwrap();
        chmod(&g, 0o644);
        let e = untrusted(read(&g, "configuration", false));
        assert!(e.contains("theirs") && e.contains("uid 1234"), "{e}");
    }

    #[test]
    fn a_state_dir_is_created_private_and_refused_when_linked_or_open() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("a/b/state");
        let resolved = state_dir(&state).unwrap();
        assert_eq!(resolved, std::fs::canonicalize(&state).unwrap());
        let mode = std::fs::metadata(&state).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // Again: it exists and is fine.
        state_dir(&state).unwrap();

        chmod(&state, 0o770);
        let e = untrusted(state_dir(&state));
        assert!(e.contains("mode 770") && e.contains("chmod 0700"), "{e}");
        chmod(&state, 0o700);

        let link = d.path().join("link");
        std::os::unix::fs::symlink(&state, &link).unwrap();
        let e = untrusted(state_dir(&link));
        assert!(e.contains("symbolic link"), "{e}");

        let file = d.path().join("file");
        std::fs::write(&file, "").unwrap();
        let e = untrusted(state_dir(&file));
        assert!(e.contains("not a directory"), "{e}");

        if euid() == 0 {
            let theirs = d.path().join("theirs");
            std::fs::create_dir(&theirs).unwrap();
            chmod(&theirs, 0o700);
            std::os::unix::fs::chown(&theirs, Some(1234), None).unwrap();
            let e = untrusted(state_dir(&theirs));
            assert!(e.contains("owned by uid 1234"), "{e}");
        }
    }
}
