//! Per-frame records turned into what `odin run` reports: a status line per
//! second, a timeline, and the summary written at exit.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::frame::Completed;
use super::partition::Partition;
use super::runtime::StageStats;

/// One second of the run.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TimelineEntry {
    /// Seconds since start at the end of the window.
    pub t: f64,
    /// Frames completed in the window per second.
    pub throughput_fps: f64,
    /// Median latency in the window, milliseconds (0 when none completed).
    pub p50_ms: f64,
    /// 99th-percentile latency in the window, milliseconds.
    pub p99_ms: f64,
    /// Cut points in force at the end of the window.
    pub cuts: Vec<usize>,
}

/// A partition that came into force.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PartitionChange {
    /// Seconds since start.
    pub t: f64,
    /// The cut points.
    pub cuts: Vec<usize>,
}

/// Latency percentiles over a run.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LatencySummary {
    /// Median, milliseconds.
    pub p50: f64,
    /// 99th percentile, milliseconds.
    pub p99: f64,
    /// Mean, milliseconds.
    pub mean: f64,
}

/// One stage in the summary.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StageSummary {
    /// CPUs of its PE.
    pub pe: String,
    /// Units `[start, end)` at the end of the run.
    pub units: [usize; 2],
    /// Smoothed service time at the end of the run, milliseconds.
    pub service_ms: f64,
    /// Frames it ran units for.
    pub frames: u64,
}

/// What a run did, as written by `--json-summary`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Summary {
    /// Model name.
    pub model: String,
    /// Frames completed.
    pub frames: u64,
    /// Frames rejected at admission.
    pub rejected: u64,
    /// Wall time of the run, seconds.
    pub duration_s: f64,
    /// Completed frames per second over the run.
    pub throughput_fps: f64,
    /// Latency over all completed frames.
    pub latency_ms: LatencySummary,
    /// The stages at the end of the run.
    pub stages: Vec<StageSummary>,
    /// Every partition in force, from the initial one.
    pub partitions: Vec<PartitionChange>,
    /// One entry per second.
    pub timeline: Vec<TimelineEntry>,
}

/// The `q` quantile (0..=1) of sorted values by nearest rank; 0 when empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// Collects completed frames into windows and a run summary.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    latencies_ms: Vec<f64>,
    window_ms: Vec<f64>,
    window_start: Instant,
    timeline: Vec<TimelineEntry>,
    partitions: Vec<PartitionChange>,
}

impl Recorder {
    /// A recorder for a run that started at `start` under `initial`.
    pub fn new(start: Instant, initial: &Partition) -> Self {
        Self {
            start,
            latencies_ms: Vec::new(),
            window_ms: Vec::new(),
            window_start: start,
            timeline: Vec::new(),
            partitions: vec![PartitionChange {
                t: 0.0,
                cuts: initial.cuts().to_vec(),
            }],
        }
    }

    /// Adds a completed frame.
    pub fn record(&mut self, c: &Completed) {
        let ms = c.latency.as_secs_f64() * 1e3;
        self.latencies_ms.push(ms);
        self.window_ms.push(ms);
    }

    /// Frames recorded so far.
    pub fn frames(&self) -> u64 {
        self.latencies_ms.len() as u64
    }

    /// Notes a partition that came into force at `now`.
    pub fn partition_changed(&mut self, now: Instant, p: &Partition) {
        self.partitions.push(PartitionChange {
            t: self.secs(now),
            cuts: p.cuts().to_vec(),
        });
    }

    /// Closes the current window at `now` and returns its entry.
    pub fn close_window(&mut self, now: Instant, cuts: &[usize]) -> TimelineEntry {
        let len = now
            .saturating_duration_since(self.window_start)
            .max(Duration::from_micros(1));
        let w = sorted(&self.window_ms);
        let entry = TimelineEntry {
            t: self.secs(now),
            throughput_fps: w.len() as f64 / len.as_secs_f64(),
            p50_ms: percentile(&w, 0.5),
            p99_ms: percentile(&w, 0.99),
            cuts: cuts.to_vec(),
        };
        self.timeline.push(entry.clone());
        self.window_ms.clear();
        self.window_start = now;
        entry
    }

    /// The run's summary at `now`.
    pub fn summary(
        &self,
        model: &str,
        rejected: u64,
        stages: &[StageStats],
        now: Instant,
    ) -> Summary {
        let all = sorted(&self.latencies_ms);
        let duration = self.secs(now).max(1e-9);
        let mean = if all.is_empty() {
            0.0
        } else {
            all.iter().sum::<f64>() / all.len() as f64
        };
        Summary {
            model: model.to_string(),
            frames: self.frames(),
            rejected,
            duration_s: duration,
            throughput_fps: self.frames() as f64 / duration,
            latency_ms: LatencySummary {
                p50: percentile(&all, 0.5),
                p99: percentile(&all, 0.99),
                mean,
            },
            stages: stages
                .iter()
                .map(|s| StageSummary {
                    pe: s.pe.clone(),
                    units: s.units,
                    service_ms: s.service_ms,
                    frames: s.frames,
                })
                .collect(),
            partitions: self.partitions.clone(),
            timeline: self.timeline.clone(),
        }
    }

    fn secs(&self, now: Instant) -> f64 {
        now.saturating_duration_since(self.start).as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Shape, Tensor};

    fn done(id: u64, ms: u64) -> Completed {
        Completed {
            id,
            output: Tensor::zeros(Shape::new(1, 1, 1, 1)),
            latency: Duration::from_millis(ms),
            at: Instant::now(),
            service: vec![],
            wait: vec![],
        }
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn windows_and_summary() {
        let t0 = Instant::now();
        let p = Partition::new(4, vec![2]).unwrap();
        let mut r = Recorder::new(t0, &p);
        for (i, ms) in [10, 20, 30, 40].into_iter().enumerate() {
            r.record(&done(i as u64, ms));
        }
        let w = r.close_window(t0 + Duration::from_secs(2), &[2]);
        assert_eq!(
            (w.t, w.throughput_fps, w.p50_ms, w.p99_ms),
            (2.0, 2.0, 20.0, 40.0)
        );
        r.partition_changed(
            t0 + Duration::from_secs(3),
            &Partition::new(4, vec![3]).unwrap(),
        );
        let empty = r.close_window(t0 + Duration::from_secs(4), &[3]);
        assert_eq!((empty.throughput_fps, empty.p50_ms), (0.0, 0.0));
        let s = r.summary("m", 5, &[], t0 + Duration::from_secs(4));
        assert_eq!((s.frames, s.rejected, s.throughput_fps), (4, 5, 1.0));
        assert_eq!(
            (s.latency_ms.p50, s.latency_ms.p99, s.latency_ms.mean),
            (20.0, 40.0, 25.0)
        );
        assert_eq!(
            s.partitions
                .iter()
                .map(|c| c.cuts.clone())
                .collect::<Vec<_>>(),
            vec![vec![2], vec![3]]
        );
        assert_eq!(s.timeline.len(), 2);
    }
}
