//! What the server did, as Prometheus metrics with Triton's meanings:
//! requests that succeeded and failed (by reason), inferences (batch rows)
//! run, the time requests spent queued, computing and in all, and the
//! requests accepted but not yet answered, per model.
//!
//! Updated once per request (a lock, not per frame), rendered only when
//! scraped, after the agent's own families.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::agent::metrics::escape;

/// Upper bounds of the request-duration histogram buckets, seconds.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Why a request failed, the `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    /// Malformed, or does not fit the model (400).
    Invalid,
    /// Asked for a model odin does not serve (404).
    NotFound,
    /// The queue was full (503).
    QueueFull,
    /// Its deadline passed in the queue (503 / DEADLINE_EXCEEDED).
    Timeout,
    /// Odin was shutting down or reloading the model (503).
    Unavailable,
    /// Odin failed (500).
    Internal,
    /// The client went away before its answer.
    Cancelled,
}

impl Failure {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Invalid => "invalid",
            Failure::NotFound => "not_found",
            Failure::QueueFull => "queue_full",
            Failure::Timeout => "timeout",
            Failure::Unavailable => "unavailable",
            Failure::Internal => "internal",
            Failure::Cancelled => "cancelled",
        }
    }
}

/// A cumulative histogram.
#[derive(Clone, Debug, Default)]
struct Histogram {
    counts: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = DURATION_BUCKETS.iter().position(|&b| s <= b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += s;
    }
}

/// One model's figures.
#[derive(Clone, Debug, Default)]
struct ModelStats {
    success: u64,
    failure: BTreeMap<Failure, u64>,
    inferences: u64,
    request: Histogram,
    queue: Histogram,
    compute: Histogram,
}

/// The serving metrics of every model served since the start.
#[derive(Debug, Default)]
pub struct ServingStats {
    models: Mutex<BTreeMap<String, ModelStats>>,
    pending: Mutex<BTreeMap<String, AtomicI64>>,
}

impl ServingStats {
    /// A request to `model` of `rows` batch rows was answered with its
    /// outputs after `total` (arrival to response), of which `queue` waiting
    /// and `compute` in the pipeline.
    pub fn succeeded(
        &self,
        model: &str,
        rows: usize,
        queue: Duration,
        compute: Duration,
        total: Duration,
    ) {
        let mut m = self.models.lock().expect("stats lock");
        let s = m.entry(model.to_string()).or_default();
        s.success += 1;
        s.inferences += rows as u64;
        s.request.observe(total);
        s.queue.observe(queue);
        s.compute.observe(compute);
    }

    /// A request to `model` failed.
    pub fn failed(&self, model: &str, why: Failure) {
        let mut m = self.models.lock().expect("stats lock");
        *m.entry(model.to_string())
            .or_default()
            .failure
            .entry(why)
            .or_default() += 1;
    }

    /// A request to `model` was accepted into the queue (+1) or answered
    /// (-1).
    pub fn pending(&self, model: &str, delta: i64) {
        let mut p = self.pending.lock().expect("stats lock");
        p.entry(model.to_string())
            .or_default()
            .fetch_add(delta, Ordering::Relaxed);
    }

    /// Requests to `model` accepted and not yet answered.
    pub fn pending_now(&self, model: &str) -> i64 {
        self.pending
            .lock()
            .expect("stats lock")
            .get(model)
            .map_or(0, |a| a.load(Ordering::Relaxed))
    }

    /// Successful requests to `model` so far.
    pub fn successes(&self, model: &str) -> u64 {
        self.models
            .lock()
            .expect("stats lock")
            .get(model)
            .map_or(0, |s| s.success)
    }

    /// Failed requests to `model` for `why` so far.
    pub fn failures(&self, model: &str, why: Failure) -> u64 {
        self.models
            .lock()
            .expect("stats lock")
            .get(model)
            .and_then(|s| s.failure.get(&why).copied())
            .unwrap_or(0)
    }

    /// Failed requests to `model` for any reason so far.
    pub fn failures_total(&self, model: &str) -> u64 {
        self.models
            .lock()
            .expect("stats lock")
            .get(model)
            .map_or(0, |s| s.failure.values().sum())
    }

    /// Appends the families in the text exposition format.
    pub fn render(&self, out: &mut String) {
        let models = self.models.lock().expect("stats lock").clone();
        let pending: Vec<(String, i64)> = self
            .pending
            .lock()
            .expect("stats lock")
            .iter()
            .map(|(m, n)| (m.clone(), n.load(Ordering::Relaxed)))
            .collect();
        let label = |m: &str| format!("model=\"{}\"", escape(m));
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
        };
        head(
            out,
            "odin_inference_request_success_total",
            "counter",
            "Inference requests answered with their outputs.",
        );
        for (m, s) in &models {
            let _ = writeln!(
                out,
                "odin_inference_request_success_total{{{}}} {}",
                label(m),
                s.success
            );
        }
        head(
            out,
            "odin_inference_request_failure_total",
            "counter",
            "Inference requests answered with an error, by reason.",
        );
        for (m, s) in &models {
            for (why, n) in &s.failure {
                let _ = writeln!(
                    out,
                    "odin_inference_request_failure_total{{{},reason=\"{}\"}} {n}",
                    label(m),
                    why.as_str()
                );
            }
        }
        head(
            out,
            "odin_inference_count_total",
            "counter",
            "Inferences run for successful requests (a request of batch N counts N).",
        );
        for (m, s) in &models {
            let _ = writeln!(
                out,
                "odin_inference_count_total{{{}}} {}",
                label(m),
                s.inferences
            );
        }
        for (name, help, pick) in [
            (
                "odin_inference_request_duration_seconds",
                "Arrival of a successful request to its response, queueing included.",
                (|s: &ModelStats| &s.request) as fn(&ModelStats) -> &Histogram,
            ),
            (
                "odin_inference_queue_duration_seconds",
                "Time successful requests waited in the queue before their first frame ran.",
                |s: &ModelStats| &s.queue,
            ),
            (
                "odin_inference_compute_duration_seconds",
                "Time successful requests spent in the pipeline, first frame in to last out.",
                |s: &ModelStats| &s.compute,
            ),
        ] {
            head(out, name, "histogram", help);
            for (m, s) in &models {
                let h = pick(s);
                let mut cumulative = 0;
                for (b, n) in DURATION_BUCKETS.iter().zip(&h.counts) {
                    cumulative += n;
                    let _ = writeln!(out, "{name}_bucket{{{},le=\"{b}\"}} {cumulative}", label(m));
                }
                let _ = writeln!(out, "{name}_bucket{{{},le=\"+Inf\"}} {}", label(m), h.count);
                let _ = writeln!(out, "{name}_sum{{{}}} {}", label(m), h.sum);
                let _ = writeln!(out, "{name}_count{{{}}} {}", label(m), h.count);
            }
        }
        head(
            out,
            "odin_inference_pending_requests",
            "gauge",
            "Requests accepted and not yet answered (queued or in the pipeline).",
        );
        for (m, n) in &pending {
            let _ = writeln!(out, "odin_inference_pending_requests{{{}}} {n}", label(m));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_histograms_follow_the_requests() {
        let s = ServingStats::default();
        let ms = Duration::from_millis;
        s.pending("m", 1);
        s.pending("m", 1);
        s.succeeded("m", 3, ms(2), ms(20), ms(23));
        s.pending("m", -1);
        s.failed("m", Failure::QueueFull);
        s.failed("m", Failure::QueueFull);
        s.failed("m", Failure::Timeout);
        let mut out = String::new();
        s.render(&mut out);
        assert!(out.contains("odin_inference_request_success_total{model=\"m\"} 1\n"));
        assert!(out.contains(
            "odin_inference_request_failure_total{model=\"m\",reason=\"queue_full\"} 2\n"
        ));
        assert!(
            out.contains(
                "odin_inference_request_failure_total{model=\"m\",reason=\"timeout\"} 1\n"
            )
        );
        assert!(out.contains("odin_inference_count_total{model=\"m\"} 3\n"));
        // 23 ms lands in the 25 ms bucket, not the 10 ms one.
        assert!(out.contains(
            "odin_inference_request_duration_seconds_bucket{model=\"m\",le=\"0.01\"} 0\n"
        ));
        assert!(out.contains(
            "odin_inference_request_duration_seconds_bucket{model=\"m\",le=\"0.025\"} 1\n"
        ));
        assert!(out.contains(
            "odin_inference_queue_duration_seconds_bucket{model=\"m\",le=\"0.0025\"} 1\n"
        ));
        assert!(out.contains("odin_inference_compute_duration_seconds_count{model=\"m\"} 1\n"));
        assert!(out.contains("odin_inference_pending_requests{model=\"m\"} 1\n"));
        assert_eq!(s.successes("m"), 1);
        assert_eq!(s.failures("m", Failure::QueueFull), 2);
        assert_eq!(s.pending_now("m"), 1);
    }

    #[test]
    fn the_agents_exposition_with_serving_families_is_promtool_clean() {
        let m = crate::agent::metrics::Metrics::default();
        let s = std::sync::Arc::new(ServingStats::default());
        let ms = Duration::from_millis;
        s.succeeded("resnet50", 8, ms(1), ms(300), ms(302));
        s.failed("resnet50", Failure::Invalid);
        s.failed("a\"b", Failure::NotFound);
        s.pending("resnet50", 0);
        m.set_serving(s);
        let body = m.render();
        assert!(body.contains("odin_inference_count_total{model=\"resnet50\"} 8"));
        assert!(
            body.contains("model=\"a\\\"b\""),
            "label values are escaped"
        );
        crate::agent::metrics::lint_clean(&body);
    }
}
