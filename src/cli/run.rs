//! `odin run`: the pipeline on this machine, with a status line per second.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::builder::PossibleValuesParser;
use crossbeam_channel::{Receiver, after, never, select, tick};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::UsageError;
use odin::cpulist::CpuSet;
use odin::engine::profile::CostProfile;
use odin::engine::{Tensor, zoo};
use odin::monitor::observer::{Observer, StageView};
use odin::monitor::perf::{self, PerfCounters};
use odin::monitor::procfs::ProcReader;
use odin::pipeline::affinity::SchedAffinity;
use odin::pipeline::recorder::{Recorder, TimelineEntry};
use odin::pipeline::source::{Load, Source};
use odin::pipeline::{Partition, Pipeline, PipelineConfig, StageStats};
use odin::policy::config::PolicyConfig;
use odin::policy::controller::Controller;
use odin::policy::detector::Event;
use odin::policy::{Action, Observation, Placement, Slo};
use odin::topology;

/// How often the monitor samples and the detector decides.
const MONITOR_TICK: Duration = Duration::from_millis(100);

/// Undisturbed run time after which the expectations are calibrated.
const CALIBRATION: Duration = Duration::from_secs(1);

/// FLOP rate assumed for the initial partition when no profile is given.
const NOMINAL_GFLOPS: f64 = 50.0;

/// Runs the model as a pipeline of pinned stages and prints frames/s, p50
/// and p99 latency, per-stage service times and the partition every second.
/// SIGINT or SIGTERM drains the pipeline, writes the summary and exits 0.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model to run.
    #[arg(long, default_value = "resnet18", value_parser = PossibleValuesParser::new(zoo::NAMES))]
    model: String,
    /// One CPU set per stage, separated by ';' (e.g. "0;1" or "0-1;2-3").
    /// Default: one stage per online CPU.
    #[arg(long, value_name = "SETS")]
    pes: Option<String>,
    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Open loop: Poisson arrivals at this many frames per second
    /// (default: closed loop, keeping the pipeline full).
    #[arg(long, value_name = "FPS")]
    rate: Option<f64>,
    /// Cost profile from `odin profile --output` for the initial partition
    /// (default: FLOP-based costs).
    #[arg(long, value_name = "FILE")]
    profile: Option<PathBuf>,
    /// Write the run's summary as JSON to this file at exit.
    #[arg(long, value_name = "FILE")]
    json_summary: Option<PathBuf>,
    /// Seed of the model's random weights.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How to re-balance under interference: odin (local search), guided
    /// (estimate slowdowns, jump to the best placement, refine), lls (move
    /// the stage to the least-loaded PE) or static (never change).
    #[arg(long, default_value = "odin", value_parser = PossibleValuesParser::new(["static", "lls", "odin", "guided"]))]
    policy: String,
}

/// Parses `--pes` ("0;1", "0-1;2-3") and checks every CPU is online.
fn parse_pes(text: &str, online: &CpuSet) -> Result<Vec<CpuSet>, UsageError> {
    text.split(';')
        .enumerate()
        .map(|(i, part)| {
            let set: CpuSet = part
                .parse()
                .map_err(|e| UsageError(format!("--pes: PE {i} ({part:?}): {e}")))?;
            let offline = set.difference(online);
            if !offline.is_empty() {
                return Err(UsageError(format!(
                    "--pes: PE {i}: CPU {offline} not online (online: {online})"
                )));
            }
            Ok(set)
        })
        .collect()
}

pub fn run(args: Args) -> Result<()> {
    let root = Path::new("/");
    let online = topology::online_cpus(root)?;
    let pes = match &args.pes {
        Some(text) => parse_pes(text, &online)?,
        None => online.iter().map(CpuSet::single).collect(),
    };
    if let Some(d) = args.duration
        && !(d.is_finite() && d > 0.0)
    {
        return Err(UsageError(format!(
            "--duration {d}: must be a positive number of seconds"
        ))
        .into());
    }
    let load = match args.rate {
        None => Load::Closed,
        Some(r) if r.is_finite() && r > 0.0 => Load::Open { rate: r },
        Some(r) => {
            return Err(UsageError(format!(
                "--rate {r}: must be a positive number of frames per second"
            ))
            .into());
        }
    };
    let model = Arc::new(zoo::build(&args.model, args.seed)?);
    let profile = match &args.profile {
        Some(path) => {
            let p = CostProfile::load(path)?;
            p.check_fits(&model)
                .with_context(|| format!("--profile {}", path.display()))?;
            p
        }
        None => CostProfile::nominal(&model, NOMINAL_GFLOPS),
    };
    if pes.len() > model.len() {
        return Err(UsageError(format!(
            "--pes: {} stages but {} has only {} units",
            pes.len(),
            model.name(),
            model.len()
        ))
        .into());
    }
    // A PE with more CPUs is proportionally faster.
    let speeds: Vec<f64> = pes.iter().map(|p| p.len() as f64).collect();
    let partition = Partition::optimal(&profile.unit_ms(), &speeds)?;
    let stages = pes.len();

    let signals = signal_channel()?;
    let pipeline = Pipeline::start(
        model.clone(),
        PipelineConfig::new(pes.clone(), partition.clone()),
        Arc::new(SchedAffinity),
    )?;
    for s in pipeline.stage_stats() {
        if let Some(e) = &s.pin_error {
            tracing::warn!(stage = s.stage, "stage runs unpinned: {e}");
        }
    }
    let inputs: Vec<Tensor> = (0..4)
        .map(|i| Tensor::random(model.input(), 100 + i))
        .collect();
    let source = Source::spawn(pipeline.admitter(), load, inputs, args.seed)?;
    println!(
        "odin run: {} ({} units) on {} stages, partition {}, {}, policy {}",
        model.name(),
        model.len(),
        stages,
        partition,
        match load {
            Load::Closed => "closed loop".to_string(),
            Load::Open { rate } => format!("open loop at {rate} frames/s"),
        },
        args.policy
    );

    let mut counters = PerfCounters::new();
    let support = perf::probe(&mut counters, root);
    if !support.has_hardware() {
        tracing::warn!("{support}; detection runs on stage times and scheduler signals");
    }
    let mut observer = Observer::new(
        ProcReader::new(),
        Box::new(counters),
        &support,
        pes.clone(),
        profile.unit_ms(),
    );
    let policy_cfg = PolicyConfig::default();
    let mut controller = Controller::build(&args.policy, &policy_cfg).map_err(UsageError)?;
    let mut calibrated = false;
    let unit_ms = profile.unit_ms();
    let pe_speed: Vec<f64> = pes.iter().map(|p| p.len() as f64).collect();
    let (mut last_frames, mut last_tick) = (0u64, Instant::now());

    let start = Instant::now();
    let mut recorder = Recorder::new(start, &partition);
    let ticker = tick(Duration::from_secs(1));
    let monitor_tick = tick(MONITOR_TICK);
    let deadline = args
        .duration
        .map_or_else(never, |d| after(Duration::from_secs_f64(d)));
    loop {
        select! {
            recv(pipeline.completed()) -> c => match c {
                Ok(c) => recorder.record(&c),
                Err(_) => break,
            },
            recv(ticker) -> _ => {
                let now = Instant::now();
                let entry = recorder.close_window(now, pipeline.partition().cuts());
                println!("{}", status_line(&entry, &pipeline.stage_stats()));
            },
            recv(monitor_tick) -> now => {
                let now = now.unwrap_or_else(|_| Instant::now());
                let views = stage_views(&pipeline, &pes);
                let (stages, pe_signals) = observer.tick(&views, now);
                let frames = recorder.frames();
                let dt = now.saturating_duration_since(last_tick).as_secs_f64();
                let throughput = (dt > 0.0).then(|| (frames - last_frames) as f64 / dt);
                (last_frames, last_tick) = (frames, now);
                if !calibrated {
                    // Expectations come from the first undisturbed second.
                    if now - start >= CALIBRATION && views.iter().all(|v| v.service_ms.is_some()) {
                        observer.calibrate(&views);
                        calibrated = true;
                    }
                    continue;
                }
                let partition = pipeline.partition();
                let mut obs = Observation {
                    t: (now - start).as_secs_f64(),
                    unit_ms: unit_ms.clone(),
                    pe_speed: pe_speed.clone(),
                    placement: Placement {
                        units: partition.units(),
                        cuts: partition.cuts().to_vec(),
                        mapping: views.iter().map(|v| v.pe).collect(),
                    },
                    stages,
                    pes: pe_signals,
                    events: Vec::new(),
                    frames_done: frames,
                    throughput_fps: throughput,
                    p99_latency_ms: None,
                    slo: Slo::default(),
                    true_speed: None,
                };
                let action = controller.step(&mut obs);
                for e in &obs.events {
                    println!("{}", event_line(now - start, e, &pes));
                }
                if let Action::Apply(next) = action {
                    match apply(&pipeline, &obs.placement, &next, &pes) {
                        Ok(p) => {
                            println!(
                                "t={:.1}s {}: {} -> {} (stage times {})",
                                (now - start).as_secs_f64(),
                                controller.policy_name(),
                                describe(&obs.placement, &pes),
                                describe(&next, &pes),
                                obs.stages
                                    .iter()
                                    .map(|s| format!("{:.1} ms", s.service_ms.unwrap_or(0.0)))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            );
                            recorder.partition_changed(now, &p);
                        }
                        Err(e) => tracing::warn!("{} asked for an impossible placement: {e}", controller.policy_name()),
                    }
                }
            },
            recv(deadline) -> _ => break,
            recv(signals) -> s => {
                tracing::info!("signal {}: draining", s.unwrap_or_default());
                break;
            },
        }
    }
    source.stop();
    let rejected = pipeline.rejected();
    let stats = pipeline.stage_stats();
    for c in pipeline.shutdown() {
        recorder.record(&c);
    }
    let summary = recorder.summary(model.name(), rejected, &stats, Instant::now());
    println!(
        "done: {} frames in {:.1} s, {:.2} frames/s, p50 {:.1} ms, p99 {:.1} ms, {} rejected",
        summary.frames,
        summary.duration_s,
        summary.throughput_fps,
        summary.latency_ms.p50,
        summary.latency_ms.p99,
        summary.rejected
    );
    if let Some(path) = &args.json_summary {
        let text = serde_json::to_string_pretty(&summary)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Moves the pipeline from placement `from` to `to`: the cuts at once,
/// each remapped stage when it reaches a frame boundary.
fn apply(p: &Pipeline, from: &Placement, to: &Placement, pes: &[CpuSet]) -> Result<Partition> {
    let partition = Partition::relaxed(to.units, to.cuts.clone())?;
    if to.cuts != from.cuts {
        p.set_partition(partition.clone())?;
    }
    for (stage, (&old, &new)) in from.mapping.iter().zip(&to.mapping).enumerate() {
        if old != new {
            let cpus = pes.get(new).with_context(|| format!("no PE {new}"))?;
            // The outcome arrives between frames; a failure is logged by the stage.
            drop(p.remap(stage, cpus.clone())?);
        }
    }
    Ok(partition)
}

/// `[0..6)@0 [6..12)@1`.
fn describe(p: &Placement, pes: &[CpuSet]) -> String {
    (0..p.stages())
        .map(|s| {
            let r = p.range(s);
            let cpus = pes
                .get(p.mapping[s])
                .map_or_else(|| "?".into(), |c| c.to_string());
            format!("[{}..{})@{cpus}", r.start, r.end)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The stages as the observer sees them; a stage's PE is the configured
/// PE it is pinned to.
fn stage_views(p: &Pipeline, pes: &[CpuSet]) -> Vec<StageView> {
    let part = p.partition();
    p.stage_stats()
        .iter()
        .map(|s| StageView {
            tid: s.tid,
            pe: pes
                .iter()
                .position(|pe| pe.to_string() == s.pe)
                .unwrap_or(s.stage),
            units: part.range(s.stage),
            service_ms: (s.frames > 0).then_some(s.service_ms),
        })
        .collect()
}

fn event_line(t: Duration, e: &Event, pes: &[CpuSet]) -> String {
    let cpus = |pe: usize| {
        pes.get(pe)
            .map_or_else(|| "?".to_string(), |c| c.to_string())
    };
    match e {
        Event::Onset {
            pe,
            stage,
            kind,
            severity,
            antagonists,
        } => {
            let names: Vec<String> = antagonists
                .iter()
                .take(3)
                .map(|a| format!("{} {} ({:.2} CPU)", a.pid, a.comm, a.cpu_share))
                .collect();
            format!(
                "t={:.1}s interference on PE {pe} (CPUs {}), stage {stage}: {}, {:.0}% slower; antagonists: {}",
                t.as_secs_f64(),
                cpus(*pe),
                kind.as_str(),
                severity * 100.0,
                if names.is_empty() {
                    "none named".to_string()
                } else {
                    names.join(", ")
                }
            )
        }
        Event::Offset { pe, stage } => format!(
            "t={:.1}s interference ended on PE {pe} (CPUs {}), stage {stage}",
            t.as_secs_f64(),
            cpus(*pe)
        ),
    }
}

/// SIGINT and SIGTERM as messages; a second one exits at once.
fn signal_channel() -> Result<Receiver<i32>> {
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("odin-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for s in signals.forever() {
                seen += 1;
                if seen > 1 {
                    eprintln!("odin: second signal {s}, exiting without draining");
                    std::process::exit(130);
                }
                let _ = tx.send(s);
            }
        })?;
    Ok(rx)
}

fn status_line(w: &TimelineEntry, stages: &[StageStats]) -> String {
    let stages: Vec<String> = stages
        .iter()
        .map(|s| {
            format!(
                "[{}..{}) {:.1} ms @{}",
                s.units[0], s.units[1], s.service_ms, s.pe
            )
        })
        .collect();
    format!(
        "t={:>4.0}s {:>7.2} frames/s  p50 {:>7.1} ms  p99 {:>7.1} ms | {}",
        w.t,
        w.throughput_fps,
        w.p50_ms,
        w.p99_ms,
        stages.join("  ")
    )
}
