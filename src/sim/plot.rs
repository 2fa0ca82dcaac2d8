//! SVG plot of a report: throughput and p99 latency over virtual time, one
//! line per policy, interference intervals shaded.
//!
//! Written by hand rather than with a plotting crate: two line charts with
//! axes, ticks, a legend and shaded bands are a few hundred bytes of SVG
//! each, and a plotting dependency would add build time and code for
//! formats (bitmap backends, fonts) odin does not need.

use std::fmt::Write as _;

use super::report::Report;

const WIDTH: f64 = 960.0;
const PANEL_H: f64 = 260.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 50.0;
const GAP: f64 = 60.0;
const BINS: usize = 120;

const COLOURS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf",
];

/// A "nice" step for about `n` ticks over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    if !(span > 0.0 && span.is_finite()) {
        return 1.0;
    }
    let raw = span / n;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm < 1.5 {
        1.0
    } else if norm < 3.0 {
        2.0
    } else if norm < 7.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn fmt_tick(v: f64, step: f64) -> String {
    if step >= 1.0 {
        format!("{v:.0}")
    } else {
        let d = (-step.log10()).ceil() as usize;
        format!("{v:.d$}")
    }
}

/// Series of (time, value) per policy, averaged into time bins.
fn binned(
    report: &Report,
    end: f64,
    value: impl Fn(&super::world::TickRecord) -> Option<f64>,
) -> Vec<(String, Vec<(f64, f64)>)> {
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
            (name.clone(), points)
        })
        .collect()
}

struct Panel<'a> {
    top: f64,
    title: &'a str,
    y_label: &'a str,
    series: Vec<(String, Vec<(f64, f64)>)>,
    reference: Option<(f64, &'a str)>,
}

fn panel(svg: &mut String, report: &Report, end: f64, p: &Panel) {
    let (x0, x1) = (LEFT, WIDTH - RIGHT);
    let (y0, y1) = (p.top + PANEL_H, p.top);
    let mut ymax = p
        .series
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|q| q.1))
        .fold(0.0, f64::max);
    if let Some((r, _)) = p.reference {
        ymax = ymax.max(r);
    }
    let ystep = nice_step(ymax * 1.05, 5.0);
    let ytop = (ymax * 1.05 / ystep).ceil().max(1.0) * ystep;
    let sx = |t: f64| x0 + (x1 - x0) * t / end;
    let sy = |v: f64| y0 - (y0 - y1) * v / ytop;

    // Interference bands, labelled once per episode.
    for iv in &report.intervals {
        let (a, b) = (sx(iv.start_s.min(end)), sx(iv.end_s.min(end)));
        if b > a {
            let _ = writeln!(
                svg,
                r##"<rect x="{a:.1}" y="{y1:.1}" width="{:.1}" height="{:.1}" fill="#e45756" fill-opacity="0.12"><title>PE {} {} x{:.2}, {:.1}-{:.1} s</title></rect>"##,
                b - a,
                y0 - y1,
                iv.pe,
                iv.kind,
                iv.factor,
                iv.start_s,
                iv.end_s
            );
        }
    }
    if report.intervals.len() <= 12 {
        for iv in &report.intervals {
            let a = sx(iv.start_s.min(end));
            if a < x1 {
                let _ = writeln!(
                    svg,
                    r##"<text x="{:.1}" y="{:.1}" font-size="10" fill="#a33">PE{} {} x{:.1}</text>"##,
                    a + 2.0,
                    y1 + 11.0,
                    iv.pe,
                    iv.kind,
                    iv.factor
                );
            }
        }
    }
    // Axes, grid and tick labels.
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" font-size="14" font-weight="bold">{}</text>"##,
        x0,
        y1 - 8.0,
        p.title
    );
    let mut v = 0.0;
    while v <= ytop + ystep * 1e-9 {
        let y = sy(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{x0:.1}" y1="{y:.1}" x2="{x1:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            x0 - 5.0,
            y + 4.0,
            fmt_tick(v, ystep)
        );
        v += ystep;
    }
    let xstep = nice_step(end, 10.0);
    let mut t = 0.0;
    while t <= end + xstep * 1e-9 {
        let x = sx(t);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{:.1}" stroke="#333"/><text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"##,
            y0 + 5.0,
            y0 + 18.0,
            fmt_tick(t, xstep)
        );
        t += xstep;
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{x0:.1}" y="{y1:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#333"/>"##,
        x1 - x0,
        y0 - y1
    );
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">virtual time (s)</text>"##,
        (x0 + x1) / 2.0,
        y0 + 34.0
    );
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle" transform="rotate(-90 {:.1} {:.1})">{}</text>"##,
        x0 - 48.0,
        (y0 + y1) / 2.0,
        x0 - 48.0,
        (y0 + y1) / 2.0,
        p.y_label
    );
    if let Some((r, label)) = p.reference {
        let y = sy(r);
        let _ = writeln!(
            svg,
            r##"<line x1="{x0:.1}" y1="{y:.1}" x2="{x1:.1}" y2="{y:.1}" stroke="#555" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}" font-size="10" fill="#555" text-anchor="end">{label}</text>"##,
            x1 - 4.0,
            y - 4.0
        );
    }
    // Lines and legend.
    for (i, (name, pts)) in p.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = pts
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", sx(t), sy(v)))
            .collect();
        let _ = writeln!(
            svg,
            r##"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="1.6"/>"##,
            path.join(" ")
        );
        let ly = y1 + 16.0 + 18.0 * i as f64;
        let _ = writeln!(
            svg,
            r##"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{:.1}" font-size="12">{name}</text>"##,
            x1 + 12.0,
            x1 + 36.0,
            x1 + 42.0,
            ly + 4.0
        );
    }
}

/// The report as an SVG document.
pub fn svg(report: &Report) -> String {
    let end = report.end_s.max(1e-3);
    let height = TOP + 2.0 * PANEL_H + GAP + 50.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">"##
    );
    let _ = writeln!(
        s,
        r##"<rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="22" font-size="15">odin simulate: {} on {} PEs, scenario {}, {} frames (shaded: interference)</text>"##,
        report.model, report.pes, report.scenario, report.frames
    );
    let throughput = Panel {
        top: TOP,
        title: "Throughput",
        y_label: "frames/s",
        series: binned(report, end, |t| Some(t.throughput_fps)),
        reference: Some((report.reference_fps, "no interference")),
    };
    panel(&mut s, report, end, &throughput);
    let latency = Panel {
        top: TOP + PANEL_H + GAP,
        title: "p99 latency",
        y_label: "ms",
        series: binned(report, end, |t| t.p99_latency_ms),
        reference: Some((report.slo_latency_ms, "SLO")),
    };
    panel(&mut s, report, end, &latency);
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(10.0, 5.0), 2.0);
        assert_eq!(nice_step(47.0, 10.0), 5.0);
        assert_eq!(nice_step(0.9, 5.0), 0.2);
        assert_eq!(fmt_tick(0.4, 0.2), "0.4");
        assert_eq!(fmt_tick(40.0, 5.0), "40");
    }
}
