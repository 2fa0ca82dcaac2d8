//! Per-frame records turned into what `odin run` reports: a status line per
//! second, a timeline, and the summary written at exit.
//!
//! Memory does not grow with the run's length. Nothing is kept per frame:
//! latencies go into two fixed-size [`Histogram`]s, one for the current
//! one-second window (cleared when it closes) and one for the whole run.
//! Their percentiles are within 1/256 (0.39 %) of the exact nearest-rank
//! ones; counts, means and throughputs are exact.
//!
//! The timeline (one entry per second) and the list of partitions keep a
//! bounded recent window ([`Recent`]): the last [`TIMELINE_CAP`] seconds
//! and the initial partition plus the last [`PARTITIONS_CAP`] changes;
//! what fell out is counted in the summary (`timeline_dropped`,
//! `partitions_dropped`). A window rather than streaming to the summary
//! file, because the summary is one JSON document written whole at exit
//! that its readers (`odin experiment`, scripts) parse at once: a file
//! streamed during the run would not be a document until the end, and
//! never after a crash. The whole-run numbers (frames, throughput,
//! latency) still cover every frame; the window holds the recent past,
//! which is what matters about a service that has run for days, and runs
//! shorter than an hour are reported whole. When entries were dropped,
//! the first entry kept covers the second before its `t` like every other
//! one, not the time since the start.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::frame::Completed;
use super::histogram::Histogram;
use super::partition::Partition;
use super::runtime::StageStats;

/// One second of the run.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TimelineEntry {
    /// Seconds since start at the end of the window.
    pub t: f64,
    /// Frames completed in the window per second.
    pub throughput_fps: f64,
    /// Median latency in the window, milliseconds (0 when none completed),
    /// within 1/256 of the exact value.
    pub p50_ms: f64,
    /// 99th-percentile latency in the window, milliseconds, within 1/256.
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

/// Latency percentiles over a run, from a [`Histogram`] of every frame.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LatencySummary {
    /// Median, milliseconds, within 1/256 of the exact nearest-rank value.
    pub p50: f64,
    /// 99th percentile, milliseconds, within 1/256.
    pub p99: f64,
    /// Mean, milliseconds (exact).
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
    /// Latency over all completed frames (percentiles within 0.39 %).
    pub latency_ms: LatencySummary,
    /// The stages at the end of the run.
    pub stages: Vec<StageSummary>,
    /// The initial partition, then the last [`PARTITIONS_CAP`] that came
    /// into force.
    pub partitions: Vec<PartitionChange>,
    /// Partition changes left out of `partitions` (older than those kept).
    pub partitions_dropped: u64,
    /// One entry per second, the last [`TIMELINE_CAP`] of them.
    pub timeline: Vec<TimelineEntry>,
    /// Seconds left out of `timeline` (the oldest).
    pub timeline_dropped: u64,
}

/// Seconds of timeline kept: the last hour.
pub const TIMELINE_CAP: usize = 3600;

/// Partition changes kept besides the initial partition.
pub const PARTITIONS_CAP: usize = 1024;

/// The last `cap` items pushed, and how many older ones were dropped.
/// Serialises as the sequence of items kept, oldest first.
#[derive(Clone, Debug, PartialEq)]
pub struct Recent<T> {
    items: VecDeque<T>,
    cap: usize,
    dropped: u64,
}

impl<T> Recent<T> {
    /// An empty window of at most `cap` items.
    pub fn new(cap: usize) -> Self {
        Self {
            items: VecDeque::new(),
            cap,
            dropped: 0,
        }
    }

    /// Adds `item`, dropping the oldest when full.
    pub fn push(&mut self, item: T) {
        if self.cap == 0 {
            self.dropped += 1;
            return;
        }
        if self.items.len() == self.cap {
            self.items.pop_front();
            self.dropped += 1;
        }
        self.items.push_back(item);
    }

    /// Items pushed and since dropped.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Items kept.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The items kept, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }

    /// The items kept, oldest first, without copying them.
    pub fn into_vec(self) -> Vec<T> {
        self.items.into()
    }
}

impl<T: Serialize> Serialize for Recent<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(&self.items)
    }
}

/// Collects completed frames into windows and a run summary, in memory
/// that does not grow with the run (see the module doc).
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    run: Histogram,
    window: Histogram,
    window_start: Instant,
    timeline: Recent<TimelineEntry>,
    initial: PartitionChange,
    partitions: Recent<PartitionChange>,
}

impl Recorder {
    /// A recorder for a run that started at `start` under `initial`.
    pub fn new(start: Instant, initial: &Partition) -> Self {
        Self {
            start,
            run: Histogram::new(),
            window: Histogram::new(),
            window_start: start,
            timeline: Recent::new(TIMELINE_CAP),
            initial: PartitionChange {
                t: 0.0,
                cuts: initial.cuts().to_vec(),
            },
            partitions: Recent::new(PARTITIONS_CAP),
        }
    }

    /// Adds a completed frame.
    pub fn record(&mut self, c: &Completed) {
        self.run.record(c.latency);
        self.window.record(c.latency);
    }

    /// Frames recorded so far.
    pub fn frames(&self) -> u64 {
        self.run.count()
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
        let w = &self.window;
        let entry = TimelineEntry {
            t: self.secs(now),
            throughput_fps: w.count() as f64 / len.as_secs_f64(),
            p50_ms: w.quantile_ms(0.5),
            p99_ms: w.quantile_ms(0.99),
            cuts: cuts.to_vec(),
        };
        self.timeline.push(entry.clone());
        self.window.clear();
        self.window_start = now;
        entry
    }

    /// The run's summary at `now`; the timeline and partitions move into
    /// it.
    pub fn into_summary(
        self,
        model: &str,
        rejected: u64,
        stages: &[StageStats],
        now: Instant,
    ) -> Summary {
        let duration = self.secs(now).max(1e-9);
        let frames = self.frames();
        let partitions_dropped = self.partitions.dropped();
        let timeline_dropped = self.timeline.dropped();
        let mut partitions = Vec::with_capacity(self.partitions.len() + 1);
        partitions.push(self.initial);
        partitions.extend(self.partitions.into_vec());
        Summary {
            model: model.to_string(),
            frames,
            rejected,
            duration_s: duration,
            throughput_fps: frames as f64 / duration,
            latency_ms: LatencySummary {
                p50: self.run.quantile_ms(0.5),
                p99: self.run.quantile_ms(0.99),
                mean: self.run.mean_ms(),
            },
            stages: stages
                .iter()
                .map(|s| StageSummary {
                    pe: s.pe.to_string(),
                    units: s.units,
                    service_ms: s.service_ms,
                    frames: s.frames,
                })
                .collect(),
            partitions,
            partitions_dropped,
            timeline: self.timeline.into_vec(),
            timeline_dropped,
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

    /// `got` is within the histogram's bound (1/256) of `exact`.
    fn close(got: f64, exact: f64) -> bool {
        (got - exact).abs() <= exact / 256.0
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
        assert_eq!((w.t, w.throughput_fps), (2.0, 2.0));
        assert!(close(w.p50_ms, 20.0) && w.p99_ms == 40.0, "{w:?}");
        r.partition_changed(
            t0 + Duration::from_secs(3),
            &Partition::new(4, vec![3]).unwrap(),
        );
        let empty = r.close_window(t0 + Duration::from_secs(4), &[3]);
        assert_eq!((empty.throughput_fps, empty.p50_ms), (0.0, 0.0));
        let s = r.into_summary("m", 5, &[], t0 + Duration::from_secs(4));
        assert_eq!((s.frames, s.rejected, s.throughput_fps), (4, 5, 1.0));
        assert!(close(s.latency_ms.p50, 20.0), "{:?}", s.latency_ms);
        assert_eq!((s.latency_ms.p99, s.latency_ms.mean), (40.0, 25.0));
        assert_eq!(
            s.partitions
                .iter()
                .map(|c| c.cuts.clone())
                .collect::<Vec<_>>(),
            vec![vec![2], vec![3]]
        );
        assert_eq!(s.timeline.len(), 2);
        assert_eq!((s.timeline_dropped, s.partitions_dropped), (0, 0));
    }

    #[test]
    fn recent_keeps_the_last_items_and_counts_the_rest() {
        let mut r = Recent::new(3);
        for i in 0..10 {
            r.push(i);
        }
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), vec![7, 8, 9]);
        assert_eq!((r.len(), r.dropped()), (3, 7));
        assert_eq!(serde_json::to_string(&r).unwrap(), "[7,8,9]");
        let mut none = Recent::new(0);
        none.push(1);
        assert!(none.is_empty() && none.dropped() == 1);
    }

    #[test]
    fn timeline_and_partitions_are_capped_and_the_initial_partition_stays() {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0, &Partition::new(4, vec![2]).unwrap());
        let extra = 5;
        for s in 1..=(TIMELINE_CAP + extra) as u64 {
            let now = t0 + Duration::from_secs(s);
            r.record(&done(s, 10));
            r.close_window(now, &[2]);
            let cut = 1 + (s as usize % 3);
            r.partition_changed(now, &Partition::new(4, vec![cut]).unwrap());
        }
        let end = t0 + Duration::from_secs((TIMELINE_CAP + extra) as u64);
        let s = r.into_summary("m", 0, &[], end);
        assert_eq!(s.frames, (TIMELINE_CAP + extra) as u64);
        assert_eq!(
            (s.timeline.len(), s.timeline_dropped),
            (TIMELINE_CAP, extra as u64)
        );
        assert_eq!(s.timeline[0].t, (extra + 1) as f64, "the oldest went first");
        assert_eq!(s.timeline.last().unwrap().t, (TIMELINE_CAP + extra) as f64);
        assert_eq!(s.partitions.len(), PARTITIONS_CAP + 1);
        assert_eq!(
            s.partitions_dropped,
            (TIMELINE_CAP + extra - PARTITIONS_CAP) as u64
        );
        assert_eq!(
            (s.partitions[0].t, s.partitions[0].cuts.clone()),
            (0.0, vec![2])
        );
        assert_eq!(s.partitions[1].t, s.partitions_dropped as f64 + 1.0);
    }
}
