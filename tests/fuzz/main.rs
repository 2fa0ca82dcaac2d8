//! Fuzzing of every parser that reads what odin does not control: the
//! configuration, scenarios, cost profiles, `/proc` files (stat, task
//! stat, schedstat, pressure, cgroup), mountinfo and the cgroup journal.
//!
//! Each target takes inputs from one strategy: a file of its committed
//! corpus (`tests/fuzz/corpus/<target>/`, real files) put through a few
//! structure-aware mutations (byte flips, truncation, a line duplicated,
//! dropped or swapped, a number replaced by an extreme value, random bytes
//! inserted), or plain arbitrary bytes. Every input must parse or fail
//! without a panic, and every error must name its source (the file, and the
//! line or field where the format has one).
//!
//! A CI-sized run is a fixed number of cases from a fixed seed, so it is
//! the same run every time. A longer one:
//! `PROPTEST_CASES=100000 cargo test --release --test fuzz`, and
//! `PROPTEST_RNG_SEED=<u64>` for other inputs than the default ones.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

use odin::agent::config::Config as AgentConfig;
use odin::cgroup::journal::Journal;
use odin::cgroup::{Hierarchy, Layout};
use odin::cpulist::CpuSet;
use odin::engine::profile::CostProfile;
use odin::monitor::procfs;
use odin::sim::scenario::{MAX_EPISODES, Scenario};

/// Cases per target when `PROPTEST_CASES` is not set: a few seconds each.
const CI_CASES: u32 = 1500;

/// Values a number in a seed is replaced with: the edges of the integer
/// types, floats that overflow or vanish, YAML's special floats.
const EXTREMES: &[&str] = &[
    "0",
    "-0",
    "-1",
    "1",
    "255",
    "256",
    "65536",
    "2147483647",
    "2147483648",
    "-2147483649",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999999",
    "1e308",
    "1e309",
    "-1e308",
    "1e-300",
    "5e-324",
    "1e-12",
    "0.5",
    ".nan",
    ".inf",
    "-.inf",
    "NaN",
    "inf",
];

/// One structure-aware change to a seed.
#[derive(Clone, Debug)]
enum Mutation {
    /// Flip bit `bit` of the byte at `at` (as a fraction of the length).
    FlipBit { at: f64, bit: u8 },
    /// Keep only the first `keep` fraction of the bytes.
    Truncate { keep: f64 },
    /// Repeat line `line` (modulo the line count).
    DuplicateLine { line: usize },
    /// Drop line `line`.
    DeleteLine { line: usize },
    /// Swap lines `a` and `b`.
    SwapLines { a: usize, b: usize },
    /// Replace the `nth` number of the text by `EXTREMES[value]`.
    ReplaceNumber { nth: usize, value: usize },
    /// Insert `bytes` at `at`.
    Insert { at: f64, bytes: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0.0..1.0f64, 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        (0.0..1.0f64).prop_map(|keep| Mutation::Truncate { keep }),
        any::<usize>().prop_map(|line| Mutation::DuplicateLine { line }),
        any::<usize>().prop_map(|line| Mutation::DeleteLine { line }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
        (any::<usize>(), 0..EXTREMES.len())
            .prop_map(|(nth, value)| Mutation::ReplaceNumber { nth, value }),
        (0.0..1.0f64, proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        // Replacing numbers is the mutation that finds range bugs: weigh it.
        (any::<usize>(), 0..EXTREMES.len())
            .prop_map(|(nth, value)| Mutation::ReplaceNumber { nth, value }),
    ]
}

fn index(at: f64, len: usize) -> usize {
    ((at * len as f64) as usize).min(len)
}

/// Byte ranges of the numbers in `text`: digit runs with their sign,
/// point and exponent.
fn numbers(text: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if text[i].is_ascii_digit() {
            let mut start = i;
            if start > 0 && text[start - 1] == b'-' {
                start -= 1;
            }
            while i < text.len() && (text[i].is_ascii_digit() || b".eE+-".contains(&text[i])) {
                i += 1;
            }
            out.push((start, i));
        } else {
            i += 1;
        }
    }
    out
}

fn apply(mut data: Vec<u8>, m: &Mutation) -> Vec<u8> {
    let lines = |d: &[u8]| -> Vec<Vec<u8>> {
        d.split_inclusive(|&b| b == b'\n')
            .map(<[u8]>::to_vec)
            .collect()
    };
    match m {
        Mutation::FlipBit { at, bit } => {
            if !data.is_empty() {
                let i = index(*at, data.len() - 1);
                data[i] ^= 1 << bit;
            }
        }
        Mutation::Truncate { keep } => data.truncate(index(*keep, data.len())),
        Mutation::DuplicateLine { line } => {
            let mut l = lines(&data);
            if !l.is_empty() {
                let i = line % l.len();
                let copy = l[i].clone();
                l.insert(i, copy);
                data = l.concat();
            }
        }
        Mutation::DeleteLine { line } => {
            let mut l = lines(&data);
            if !l.is_empty() {
                l.remove(line % l.len());
                data = l.concat();
            }
        }
        Mutation::SwapLines { a, b } => {
            let mut l = lines(&data);
            if !l.is_empty() {
                let n = l.len();
                l.swap(a % n, b % n);
                data = l.concat();
            }
        }
        Mutation::ReplaceNumber { nth, value } => {
            let spans = numbers(&data);
            if !spans.is_empty() {
                let (s, e) = spans[nth % spans.len()];
                data.splice(s..e, EXTREMES[*value].bytes());
            }
        }
        Mutation::Insert { at, bytes } => {
            let i = index(*at, data.len());
            data.splice(i..i, bytes.iter().copied());
        }
    }
    data
}

/// The committed seeds of `target`, with their file names.
fn corpus_named(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let seeds: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|f| {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(f).unwrap())
        })
        .collect();
    assert!(!seeds.is_empty(), "{}: no seeds", dir.display());
    seeds
}

/// The committed seeds of `target`.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    corpus_named(target).into_iter().map(|(_, s)| s).collect()
}

/// A seed of `target` with up to 6 mutations (most inputs), or arbitrary
/// bytes.
fn inputs(target: &str) -> BoxedStrategy<Vec<u8>> {
    let seeds = corpus(target);
    let n = seeds.len();
    let mutated = (0..n, proptest::collection::vec(mutation(), 0..6))
        .prop_map(move |(i, ms)| ms.iter().fold(seeds[i].clone(), apply));
    prop_oneof![
        6 => mutated,
        1 => proptest::collection::vec(any::<u8>(), 0..512),
    ]
    .boxed()
}

fn runner() -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CI_CASES);
    let seed = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x0d1f_u64);
    TestRunner::new(Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..Config::default()
    })
}

/// Runs `check` on the inputs of `target`; a panic or a failed check is
/// reported with the smallest input that shows it.
fn fuzz(target: &str, check: impl Fn(&[u8]) -> Result<(), TestCaseError>) {
    let result = runner().run(&inputs(target), |data| check(&data));
    if let Err(e) = result {
        panic!("fuzz target {target}: {e}");
    }
}

/// Fails the case unless `message` holds every one of `needles`.
fn names(message: &str, needles: &[&str]) -> Result<(), TestCaseError> {
    for n in needles {
        prop_assert!(message.contains(n), "error {message:?} does not name {n:?}");
    }
    Ok(())
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

#[test]
fn config() {
    let online: CpuSet = "0-3".parse().unwrap();
    fuzz("config", |data| {
        let text = text(data);
        match AgentConfig::parse(&text, "fuzz.yaml", &online) {
            Ok(c) => {
                // What was accepted is valid and reads back as itself.
                prop_assert!(c.validate(&online).is_ok());
                let again = AgentConfig::parse(&c.to_yaml(), "again.yaml", &online);
                prop_assert!(again.is_ok(), "{:?}", again.err());
            }
            Err(e) => names(&e.to_string(), &["fuzz.yaml"])?,
        }
        Ok(())
    });
}

#[test]
fn scenario() {
    fuzz("scenario", |data| {
        let text = text(data);
        match Scenario::parse(&text, "fuzz.yaml") {
            Ok(s) => {
                for pes in [1, 3, 64] {
                    match s.resolve("fuzz.yaml", pes, 10.0, 7) {
                        Ok(t) => {
                            prop_assert_eq!(t.pe_speed.len(), pes);
                            prop_assert!(t.intervals.len() <= MAX_EPISODES);
                            for iv in &t.intervals {
                                prop_assert!(iv.pe < pes && iv.start_s.is_finite());
                            }
                        }
                        Err(e) => names(&e.to_string(), &["fuzz.yaml"])?,
                    }
                }
            }
            Err(e) => names(&e.to_string(), &["fuzz.yaml"])?,
        }
        Ok(())
    });
}

#[test]
fn profile() {
    fuzz("profile", |data| {
        match CostProfile::parse(&text(data), Path::new("fuzz-profile.json")) {
            Ok(p) => {
                prop_assert!(!p.units.is_empty());
                prop_assert!(p.unit_ms().iter().all(|t| t.is_finite() && *t >= 0.0));
            }
            Err(e) => names(&e.to_string(), &["fuzz-profile.json"])?,
        }
        Ok(())
    });
}

#[test]
fn proc_stat() {
    let path = Path::new("/proc/stat");
    fuzz("proc_stat", |data| {
        if let Err(e) = procfs::parse_proc_stat(path, &text(data)) {
            names(&e.to_string(), &["/proc/stat", "line "])?;
        }
        Ok(())
    });
}

#[test]
fn task_stat() {
    let path = Path::new("/proc/7/task/8/stat");
    fuzz("task_stat", |data| {
        if let Err(e) = procfs::parse_task_stat(path, 7, data) {
            names(&e.to_string(), &["/proc/7/task/8/stat", "field"])?;
        }
        Ok(())
    });
}

#[test]
fn schedstat() {
    let path = Path::new("/proc/7/task/8/schedstat");
    fuzz("schedstat", |data| {
        if let Err(e) = procfs::parse_schedstat(path, &text(data)) {
            names(&e.to_string(), &["/proc/7/task/8/schedstat"])?;
        }
        Ok(())
    });
}

#[test]
fn pressure() {
    let path = Path::new("/proc/pressure/cpu");
    fuzz("pressure", |data| {
        if let Err(e) = procfs::parse_pressure(path, &text(data)) {
            names(&e.to_string(), &["/proc/pressure/cpu", "line "])?;
        }
        Ok(())
    });
}

#[test]
fn cgroup() {
    let path = Path::new("/proc/7/cgroup");
    let v1 = Hierarchy {
        controller: "cpu".into(),
        mount: "/sys/fs/cgroup/cpu".into(),
        v2: false,
    };
    let v2 = Hierarchy {
        controller: "cpu".into(),
        mount: "/sys/fs/cgroup".into(),
        v2: true,
    };
    fuzz("cgroup", |data| {
        let text = text(data);
        if let Err(e) = procfs::parse_cgroup(path, &text) {
            names(&e.to_string(), &["/proc/7/cgroup", "line "])?;
        }
        for h in [&v1, &v2] {
            if let Some(cg) = h.parse_cgroup(&text) {
                // A cgroup found is one line's path, never more.
                prop_assert!(!cg.contains('\n'));
            }
        }
        Ok(())
    });
}

#[test]
fn mountinfo() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("proc/self/mountinfo");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let shown = file.display().to_string();
    fuzz("mountinfo", |data| {
        std::fs::write(&file, data).unwrap();
        match Layout::detect(root.path()) {
            Ok(layout) => {
                for mount in layout.v2.iter().map(|(m, _)| m).chain(layout.v1.values()) {
                    prop_assert!(mount.starts_with(root.path()), "{}", mount.display());
                }
            }
            Err(e) => names(&e.to_string(), &[&shown, "mountinfo"])?,
        }
        Ok(())
    });
}

#[test]
fn journal() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cgroup-journal.jsonl");
    let shown = file.display().to_string();
    fuzz("journal", |data| {
        std::fs::write(&file, data).unwrap();
        if let Err(e) = Journal::load(&file) {
            names(&e.to_string(), &[&shown])?;
        }
        Ok(())
    });
}

/// The seeds themselves are what the kernel and odin write: each parses.
#[test]
fn every_seed_parses() {
    let online: CpuSet = "0-3".parse().unwrap();
    for seed in corpus("config") {
        AgentConfig::parse(&text(&seed), "seed.yaml", &online).unwrap();
    }
    for seed in corpus("scenario") {
        Scenario::parse(&text(&seed), "seed.yaml").unwrap();
    }
    for seed in corpus("profile") {
        CostProfile::parse(&text(&seed), Path::new("seed.json")).unwrap();
    }
    for seed in corpus("proc_stat") {
        procfs::parse_proc_stat(Path::new("stat"), &text(&seed)).unwrap();
    }
    // Seeds named regress-* once broke a parser: they are refused now, as
    // a test beside each fix shows.
    for (name, seed) in corpus_named("task_stat") {
        if !name.starts_with("regress-") {
            procfs::parse_task_stat(Path::new("stat"), 1, &seed).unwrap();
        }
    }
    for seed in corpus("schedstat") {
        procfs::parse_schedstat(Path::new("schedstat"), &text(&seed)).unwrap();
    }
    for seed in corpus("pressure") {
        procfs::parse_pressure(Path::new("cpu"), &text(&seed)).unwrap();
    }
    for seed in corpus("cgroup") {
        procfs::parse_cgroup(Path::new("cgroup"), &text(&seed)).unwrap();
    }
    let root = tempfile::tempdir().unwrap();
    let mountinfo = root.path().join("proc/self/mountinfo");
    std::fs::create_dir_all(mountinfo.parent().unwrap()).unwrap();
    for seed in corpus("mountinfo") {
        std::fs::write(&mountinfo, seed).unwrap();
        assert_ne!(Layout::detect(root.path()).unwrap(), Layout::default());
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cgroup-journal.jsonl");
    for seed in corpus("journal") {
        std::fs::write(&file, seed).unwrap();
        assert!(!Journal::load(&file).unwrap().is_empty());
    }
}
