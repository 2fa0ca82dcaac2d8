//! The state directory is trusted only when it is odin's alone: a
//! journal planted where someone else can write is neither undone nor
//! appended to, and the agent says why.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// A journal entry that, undone, would make root remove `victim`.
fn planted_journal(state: &Path, victim: &Path) {
    let entry = serde_json::json!({
        "op": "mkdir",
        "hierarchy": { "controller": "cpu", "mount": victim.parent().unwrap(), "v2": true },
        "path": victim,
    });
    std::fs::write(
        state.join(odin::cgroup::journal::FILE),
        format!("{entry}\n"),
    )
    .unwrap();
}

fn run_with_state(state: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_odin"))
        .args(["run", "--model", "alexnet", "--duration", "1"])
        .arg("--state-dir")
        .arg(state)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    err
}

#[test]
fn a_journal_in_a_directory_others_can_write_is_not_undone() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    planted_journal(&state, &victim);
    let err = run_with_state(&state);
    assert!(victim.is_dir(), "the planted entry was undone: {err}");
    assert!(
        err.contains("refusing state directory")
            && err.contains("writable by group or others")
            && err.contains("chmod 0700"),
        "{err}"
    );
    // Nothing was appended to it either, and no lock file was made there.
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 1);
}

#[test]
fn a_state_dir_that_is_a_link_or_someone_elses_is_not_undone() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
    planted_journal(&real, &victim);
    let link = dir.path().join("state");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let err = run_with_state(&link);
    assert!(victim.is_dir(), "{err}");
    assert!(err.contains("symbolic link"), "{err}");

    if !nix::unistd::Uid::effective().is_root() {
        common::skip("a state directory owned by another user needs root");
        return;
    }
    std::os::unix::fs::chown(&real, Some(1234), Some(1234)).unwrap();
    let err = run_with_state(&real);
    assert!(victim.is_dir(), "{err}");
    assert!(err.contains("owned by uid 1234"), "{err}");
}
