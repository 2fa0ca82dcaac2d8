//! `cgroup`: the cgroup layout and whether odin may write to it.

use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::unistd::{AccessFlags, access};

use odin::cgroup::{Layout, Mounted};

use super::{Check, Status};

/// `path` as seen on the machine: with `root` replaced by `/`.
fn shown(root: &Path, path: &Path) -> PathBuf {
    Path::new("/").join(path.strip_prefix(root).unwrap_or(path))
}

/// `cgroup`: version, and where the `cpu` and `cpuset` controllers are
/// mounted and whether odin may write there.
pub fn check(root: &Path) -> Check {
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
    let version = match layout.mounted() {
        Mounted::V2 => "v2",
        Mounted::V1 => "v1",
        Mounted::Hybrid => "hybrid (v1 controllers and v2)",
        Mounted::None => {
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
