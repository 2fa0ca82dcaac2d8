//! Real interference detection: a 2-stage pipeline on CPUs 0 and 1, a real
//! busy-loop process put on CPU 1, the real monitor and the detector.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::tick;
use odin::cpulist::CpuSet;
use odin::engine::profile::CostProfile;
use odin::engine::{Tensor, zoo};
use odin::monitor::observer::{Observer, StageView};
use odin::monitor::perf::{self, PerfCounters};
use odin::monitor::procfs::ProcReader;
use odin::pipeline::affinity::SchedAffinity;
use odin::pipeline::source::{Arrivals, Source};
use odin::pipeline::{Partition, Pipeline, PipelineConfig};
use odin::policy::detector::{Detector, DetectorConfig, Event, Kind};

/// Monitor ticks (100 ms apart) allowed for the warm-up, the onset and the
/// offset; a tick the test thread misses is not counted.
const WARM_UP_TICKS: u32 = 300;
const ONSET_TICKS: u32 = 30;
const OFFSET_TICKS: u32 = 50;
/// Wall time after which a phase that still has ticks left is taken for a hang.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// One antagonist on CPU 1 at a time.
static CPU1: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Kills the antagonist when dropped, also when an assertion fails.
struct Antagonist(Child);

impl Drop for Antagonist {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `odin stress --kind cpu --cpus 1`, running (its banner read) when this
/// returns. A high-priority neighbour: on this shared machine other
/// programs come and go on CPU 1 too, and the antagonist must stand out
/// from them.
fn busy_neighbour_on_cpu_1() -> Antagonist {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_odin"));
    cmd.args(["stress", "--kind", "cpu", "--cpus", "1"])
        .stdout(Stdio::piped());
    // SAFETY: setpriority is async-signal-safe; failing (not root) leaves
    // the child at normal priority.
    unsafe {
        cmd.pre_exec(|| {
            libc::setpriority(libc::PRIO_PROCESS, 0, -10);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let mut banner = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    Antagonist(child)
}

fn views(p: &Pipeline) -> Vec<StageView> {
    let part = p.partition();
    p.stage_stats()
        .iter()
        .map(|s| StageView {
            tid: s.tid,
            pe: s.stage,
            units: part.range(s.stage),
            service_ms: (s.frames > 0).then_some(s.service_ms),
        })
        .collect()
}

#[test]
fn a_busy_neighbour_on_cpu_1_is_detected_named_and_its_departure_seen() {
    let _cpu1 = CPU1.lock().unwrap_or_else(|e| e.into_inner());
    let online = odin::topology::online_cpus(Path::new("/")).unwrap();
    if !(online.contains(0) && online.contains(1)) {
        common::skip(format!("needs CPUs 0 and 1 online, have {online}"));
        return;
    }
    let model = Arc::new(zoo::build("resnet18", 1).unwrap());
    let unit_ms = CostProfile::nominal(&model, 100.0).unit_ms();
    let pes = vec![CpuSet::single(0), CpuSet::single(1)];
    let partition = Partition::optimal(&unit_ms, &[1.0, 1.0]).unwrap();
    let pipe = Pipeline::start(
        model.clone(),
        PipelineConfig::new(pes.clone(), partition),
        Arc::new(SchedAffinity),
    )
    .unwrap();
    let inputs = vec![Tensor::random(model.input(), 3)];
    let source = Source::spawn(pipe.admitter(), Arrivals::Closed, inputs, 1).unwrap();

    let mut counters = PerfCounters::new();
    let support = perf::probe(&mut counters, Path::new("/"));
    let mut observer = Observer::new(
        ProcReader::new(),
        Box::new(counters),
        &support,
        pes,
        unit_ms,
    );
    let mut detector = Detector::new(DetectorConfig::default());
    let ticker = tick(Duration::from_millis(100));
    // Drain completions on a helper thread; the test thread only ticks.
    let done = pipe.completed().clone();
    let drain = std::thread::spawn(move || done.iter().count());

    // Warm up undisturbed, then take the expectation from what we see.
    let mut ticks = 0;
    while ticks < 10 || pipe.stage_stats().iter().any(|s| s.frames < 20) {
        let now = ticker.recv().unwrap();
        let (stages, signals) = observer.tick(&views(&pipe), now);
        // Other programs on this shared machine may interfere already: what
        // the detector says before the antagonist starts is not the test.
        detector.tick(&stages, &signals);
        ticks += 1;
        assert!(ticks < WARM_UP_TICKS, "the pipeline does not run");
    }
    observer.calibrate(&views(&pipe));
    let mut detector = Detector::new(DetectorConfig::default());

    let stress = busy_neighbour_on_cpu_1();
    let started = Instant::now();

    let mut onset_ticks = 0;
    let onset = loop {
        let now = ticker.recv().unwrap();
        onset_ticks += 1;
        let (stages, signals) = observer.tick(&views(&pipe), now);
        let events = detector.tick(&stages, &signals);
        // Only CPU 1's PE is under test; others may see the machine's noise.
        if let Some(e) = events
            .into_iter()
            .find(|e| matches!(e, Event::Onset { pe: 1, .. }))
        {
            break e;
        }
        assert!(
            onset_ticks < ONSET_TICKS,
            "no onset within {ONSET_TICKS} monitor ticks"
        );
        assert!(started.elapsed() < HANG_GUARD, "the monitor hangs");
    };
    let Event::Onset {
        pe,
        stage,
        kind,
        antagonists,
        severity,
    } = onset
    else {
        unreachable!()
    };
    assert_eq!((pe, stage), (1, 1), "the busy CPU's stage");
    assert_eq!(kind, Kind::CpuTimeSharing);
    assert!(severity > 0.15, "{severity}");
    let pid = stress.0.id() as i32;
    assert!(
        antagonists.iter().any(|a| a.pid == pid),
        "stress pid {pid} not among {antagonists:?}"
    );
    eprintln!("onset after {onset_ticks} ticks: {antagonists:?}");

    drop(stress);
    let gone = Instant::now();
    let mut offset_ticks = 0;
    loop {
        let now = ticker.recv().unwrap();
        offset_ticks += 1;
        let (stages, signals) = observer.tick(&views(&pipe), now);
        let events = detector.tick(&stages, &signals);
        if events.contains(&Event::Offset { pe: 1, stage: 1 }) {
            break;
        }
        assert!(
            offset_ticks < OFFSET_TICKS,
            "no offset within {OFFSET_TICKS} monitor ticks"
        );
        assert!(gone.elapsed() < HANG_GUARD, "the monitor hangs");
    }
    eprintln!("offset after {offset_ticks} ticks");
    source.stop();
    pipe.shutdown();
    assert!(drain.join().unwrap() > 0);
}

/// A neighbour already busy on CPU 1 when `odin run` starts: calibration
/// leaves CPU 1's stage out (its run queue says it is shared), so the
/// slowdown is seen as interference and the pipeline re-balanced, instead
/// of becoming the expectation.
#[test]
fn a_neighbour_there_before_odin_starts_is_not_taken_for_the_baseline() {
    let _cpu1 = CPU1.lock().unwrap_or_else(|e| e.into_inner());
    let _stress = busy_neighbour_on_cpu_1();
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("s.json");
    let out = Command::new(env!("CARGO_BIN_EXE_odin"))
        .args([
            "run",
            "--model",
            "resnet18",
            "--pes",
            "0;1",
            "--duration",
            "8",
        ])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--json-summary")
        .arg(&summary)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("CPUs 1 are time-shared with other programs at start"),
        "{stderr}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let onset_on_1 = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["event"] == "onset" && e["pe"] == 1);
    assert!(onset_on_1, "no onset on PE 1: {}", v["events"]);
    assert!(
        stderr.contains("reason=\"onset\""),
        "the pipeline was re-balanced for it: {stderr}"
    );
}
