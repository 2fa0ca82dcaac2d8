//! The shipped systemd unit passes `systemd-analyze verify` without a
//! warning.

mod common;

use std::process::Command;

#[test]
fn unit_verifies_without_warnings() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        // .ci/run installs systemd; a machine without it cannot run this check.
        common::skip("systemd-analyze is not installed");
        return;
    };
    assert!(version.status.success());
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/odin.service"))
            .unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    // Where the Debian package puts the binary and the configuration.
    assert!(unit.contains("\nExecStart=/usr/bin/odin run --config /etc/odin/odin.yaml\n"));
    // verify checks that ExecStart's binary exists: point it at the one
    // cargo built, leave every other line as shipped. It also looks up the
    // Documentation= pages with man: the ones in docs/man, as the package
    // installs them (man1/).
    let dir = tempfile::tempdir().unwrap();
    let man1 = dir.path().join("man/man1");
    std::fs::create_dir_all(&man1).unwrap();
    for e in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/man")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, man1.join(p.file_name().unwrap())).unwrap();
    }
    let path = dir.path().join("odin.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/odin", env!("CARGO_BIN_EXE_odin")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .env("MANPATH", dir.path().join("man"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stdout}{stderr}"
    );
    assert!(
        stderr.trim().is_empty() && stdout.trim().is_empty(),
        "warnings:\n{stdout}{stderr}"
    );
}
