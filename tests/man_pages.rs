//! The manual pages under docs/man (shipped in the Debian package) are
//! what `odin man-pages` makes from the command line's definitions now:
//! a flag added or changed without regenerating them fails here.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn pages(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

#[test]
fn the_committed_man_pages_are_the_generated_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_odin"))
        .arg("man-pages")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fresh = pages(dir.path());
    let committed = pages(&Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/man"));
    let regenerate = "regenerate them: cargo run --release -- man-pages docs/man";
    assert_eq!(
        fresh.keys().collect::<Vec<_>>(),
        committed.keys().collect::<Vec<_>>(),
        "docs/man has other pages than odin makes; {regenerate}"
    );
    for (name, text) in &fresh {
        assert!(
            committed[name] == *text,
            "docs/man/{name} differs from what odin makes; {regenerate}"
        );
    }
    // One page per command a user sees; the hidden packaging command has none.
    for page in [
        "odin.1",
        "odin-run.1",
        "odin-check-config.1",
        "odin-reload.1",
    ] {
        assert!(
            fresh.contains_key(page),
            "{page} missing: {:?}",
            fresh.keys()
        );
    }
    assert!(!fresh.contains_key("odin-man-pages.1"));
    assert!(fresh["odin-run.1"].contains("\\-\\-model\\-name"));
}
