//! SVG plot of a report: throughput and p99 latency over virtual time, one
//! line per policy, interference intervals shaded (drawn by
//! [`crate::plot`]).

use super::report::Report;
use crate::plot::{Band, Figure, Panel, Series, svg as draw};

/// Time bins each line is averaged into.
const BINS: usize = 120;

/// Interference intervals labelled in the plot; beyond this many the
/// labels would overlap, and only the shading (with its tooltip) stays.
const LABELLED: usize = 12;

/// Series of (time, value) per policy, averaged into time bins.
#[allow(
    clippy::cast_possible_truncation,
    reason = "saturating, then clamped to the last bin"
)]
fn binned(
    report: &Report,
    end: f64,
    value: impl Fn(&super::world::TickRecord) -> Option<f64>,
) -> Vec<Series> {
    let width = end / BINS as f64;
    report
        .timelines
        .iter()
        .filter(|(n, _)| report.policies.iter().any(|p| &p.policy == n))
        .map(|(name, ticks)| {
            let mut sum = vec![0.0; BINS];
            let mut count = vec![0usize; BINS];
            for t in ticks {
                if let Some(v) = value(t) {
                    let b = ((t.t / width) as usize).min(BINS - 1);
                    sum[b] += v;
                    count[b] += 1;
                }
            }
            let points = (0..BINS)
                .filter(|&b| count[b] > 0)
                .map(|b| ((b as f64 + 0.5) * width, sum[b] / count[b] as f64))
                .collect();
            Series {
                name: name.clone(),
                points,
            }
        })
        .collect()
}

/// The report as an SVG document.
pub fn svg(report: &Report) -> String {
    let end = report.end_s.max(1e-3);
    let labelled = report.intervals.len() <= LABELLED;
    draw(&Figure {
        title: format!(
            "odin simulate: {} on {} PEs, scenario {}, {} frames (shaded: interference)",
            report.model, report.pes, report.scenario, report.frames
        ),
        x_label: "virtual time (s)",
        x_end: end,
        bands: report
            .intervals
            .iter()
            .map(|iv| Band {
                from: iv.start_s.min(end),
                to: iv.end_s.min(end),
                label: format!("PE{} {} x{:.1}", iv.pe, iv.kind, iv.factor),
                labelled,
            })
            .collect(),
        marks: Vec::new(),
        panels: vec![
            Panel {
                id: "throughput",
                title: "Throughput",
                y_label: "frames/s",
                series: binned(report, end, |t| Some(t.throughput_fps)),
                reference: Some((report.reference_fps, "no interference".into())),
            },
            Panel {
                id: "p99",
                title: "p99 latency",
                y_label: "ms",
                series: binned(report, end, |t| t.p99_latency_ms),
                reference: Some((report.slo_latency_ms, "SLO".into())),
            },
        ],
    })
}
