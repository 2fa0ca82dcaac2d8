//! `odin stress`: a built-in antagonist for experiments.
//!
//! One worker thread per CPU in `--cpus`, pinned there. The workers are
//! threads of this process, so killing it (any signal) stops them all:
//! nothing outlives the command.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::ValueEnum;

use super::UsageError;
use odin::cpulist::CpuSet;
use odin::pipeline::affinity::pin_current_thread;
use odin::topology;

/// What the workers do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// A busy loop: takes CPU time from whatever shares the CPU.
    Cpu,
    /// A random walk over a working set the size of the last-level cache:
    /// evicts everyone else's cache lines.
    Cache,
    /// A streaming copy over buffers much larger than the last-level cache:
    /// takes memory bandwidth.
    Membw,
}

/// Runs an antagonist on the given CPUs until the duration ends or it is
/// killed.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to stress.
    #[arg(long, value_enum)]
    kind: Kind,
    /// CPUs to run on (e.g. "1" or "0-3"); one worker per CPU.
    #[arg(long, value_name = "LIST")]
    cpus: String,
    /// Stop after this many seconds (default: until killed).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Percentage of each 10 ms period the workers are active.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u8).range(1..=100))]
    duty: u8,
}

/// Period over which the duty cycle applies.
const PERIOD: Duration = Duration::from_millis(10);

pub fn run(args: Args) -> Result<()> {
    let online = topology::online_cpus(Path::new("/"))?;
    let cpus: CpuSet = args
        .cpus
        .parse()
        .map_err(|e| UsageError(format!("--cpus {:?}: {e}", args.cpus)))?;
    let offline = cpus.difference(&online);
    if !offline.is_empty() {
        return Err(UsageError(format!(
            "--cpus: CPU {offline} not online (online: {online})"
        ))
        .into());
    }
    if let Some(d) = args.duration {
        super::check_seconds("duration", d, false)?;
    }
    // The cache of the CPUs it runs on (an empty set was refused above).
    let first = cpus.iter().next().unwrap_or(0);
    let llc = topology::llc_bytes(Path::new("/"), first).unwrap_or(32 << 20);
    let bytes = match args.kind {
        Kind::Cpu => 0,
        Kind::Cache => llc.clamp(1 << 20, 1 << 30),
        Kind::Membw => (4 * llc).clamp(256 << 20, 1 << 30),
    };
    let deadline = args
        .duration
        .map(|d| Instant::now() + Duration::from_secs_f64(d));
    let duty = f64::from(args.duty) / 100.0;
    // Workers report once pinned; the banner then says the load is on.
    let (ready_tx, ready) = crossbeam_channel::unbounded();
    let workers: Vec<_> = cpus
        .iter()
        .map(|cpu| {
            let kind = args.kind;
            let ready_tx = ready_tx.clone();
            std::thread::Builder::new()
                .name(format!("odin-stress-{cpu}"))
                .spawn(move || worker(kind, cpu, bytes, duty, deadline, ready_tx))
                .context("spawning a stress worker")
        })
        .collect::<Result<_>>()?;
    drop(ready_tx);
    if ready.iter().count() == cpus.len() {
        println!(
            "odin stress: {} on CPUs {cpus}, duty {}%, pid {}{}",
            args.kind
                .to_possible_value()
                .expect("no skipped variants")
                .get_name(),
            args.duty,
            std::process::id(),
            if bytes > 0 {
                format!(", {} MiB per worker", bytes >> 20)
            } else {
                String::new()
            }
        );
    }
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("a stress worker panicked"))??;
    }
    Ok(())
}

fn worker(
    kind: Kind,
    cpu: usize,
    bytes: usize,
    duty: f64,
    deadline: Option<Instant>,
    ready: crossbeam_channel::Sender<()>,
) -> Result<()> {
    pin_current_thread(&CpuSet::single(cpu)).with_context(|| format!("pinning to CPU {cpu}"))?;
    let mut work = Work::new(kind, bytes, cpu as u64);
    let _ = ready.send(());
    drop(ready);
    let active = PERIOD.mul_f64(duty);
    loop {
        let period_start = Instant::now();
        while period_start.elapsed() < active {
            work.step();
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(());
        }
        // Idle for the rest of the period: the duty cycle itself.
        if let Some(rest) = PERIOD.checked_sub(period_start.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}

/// One kind of work, in small steps.
enum Work {
    Cpu(u64),
    /// A single random cycle through the slots (Sattolo's algorithm), so
    /// every load depends on the previous one and prefetchers cannot help.
    Cache {
        next: Vec<u32>,
        at: u32,
    },
    Membw {
        src: Vec<u64>,
        dst: Vec<u64>,
    },
}

impl Work {
    fn new(kind: Kind, bytes: usize, seed: u64) -> Self {
        match kind {
            Kind::Cpu => Work::Cpu(seed),
            Kind::Cache => {
                // One slot per 64-byte line, so every step touches a new line.
                let slots = (bytes / 64).max(2);
                let mut next: Vec<u32> = (0..slots as u32).collect();
                let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                for i in (1..slots).rev() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let j = (x % i as u64) as usize;
                    next.swap(i, j);
                }
                // Spread slots one cache line apart.
                let mut spread = vec![0u32; slots * 16];
                for (i, &n) in next.iter().enumerate() {
                    spread[i * 16] = n * 16;
                }
                Work::Cache {
                    next: spread,
                    at: 0,
                }
            }
            Kind::Membw => {
                let words = bytes / 2 / 8;
                Work::Membw {
                    src: vec![1; words],
                    dst: vec![0; words],
                }
            }
        }
    }

    fn step(&mut self) {
        match self {
            Work::Cpu(x) => {
                for _ in 0..10_000 {
                    *x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                }
                std::hint::black_box(*x);
            }
            Work::Cache { next, at } => {
                for _ in 0..10_000 {
                    *at = next[*at as usize];
                }
                std::hint::black_box(*at);
            }
            Work::Membw { src, dst } => {
                // A few MiB per step keeps the duty-cycle check frequent.
                let chunk = (1 << 19).min(src.len());
                let start = (dst[0] as usize % (src.len() / chunk).max(1)) * chunk;
                dst[start..start + chunk].copy_from_slice(&src[start..start + chunk]);
                dst[0] = dst[0].wrapping_add(1);
                std::hint::black_box(&dst[start]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_walk_is_one_cycle_over_every_line() {
        let Work::Cache { next, .. } = Work::new(Kind::Cache, 64 * 1000, 7) else {
            panic!("cache load");
        };
        let (mut at, mut seen) = (0usize, 0);
        loop {
            at = next[at] as usize;
            seen += 1;
            if at == 0 {
                break;
            }
            assert!(seen <= 1000, "not a single cycle");
        }
        assert_eq!(seen, 1000);
    }
}
