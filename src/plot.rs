//! Time-series charts as SVG: stacked panels over one time axis, one line
//! per series, shaded bands and dashed reference lines. `odin simulate`
//! and `odin experiment` draw their plots with it.
//!
//! Written by hand rather than with a plotting crate: a few line charts
//! with axes, ticks, a legend and shaded bands are a few hundred bytes of
//! SVG each, and a plotting dependency would add build time and code for
//! formats (bitmap backends, fonts) odin does not need.
//! Every series is a `<path class="series" data-series="NAME">` inside its
//! panel's `<g class="panel" data-panel="ID">`, and every band a
//! `<rect class="band">`, so a test or a script can find them.

use std::fmt::Write as _;

const WIDTH: f64 = 960.0;
const PANEL_H: f64 = 250.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 64.0;
const GAP: f64 = 70.0;

const COLOURS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf",
];

/// A named line of (x, y) points, in x order.
pub struct Series {
    /// Legend text.
    pub name: String,
    /// The points.
    pub points: Vec<(f64, f64)>,
}

/// A shaded x range, drawn in every panel.
pub struct Band {
    /// Start.
    pub from: f64,
    /// End.
    pub to: f64,
    /// What it is: its tooltip, and its label at the top left.
    pub label: String,
    /// Whether the label is written in the panel (the tooltip always is);
    /// many narrow bands would overlap their labels.
    pub labelled: bool,
}

/// One panel.
pub struct Panel<'a> {
    /// Id for the `data-panel` attribute.
    pub id: &'a str,
    /// Title above the panel.
    pub title: &'a str,
    /// Y axis label.
    pub y_label: &'a str,
    /// The lines, coloured in order.
    pub series: Vec<Series>,
    /// A dashed horizontal line and its label.
    pub reference: Option<(f64, String)>,
}

/// A whole figure.
pub struct Figure<'a> {
    /// Heading.
    pub title: String,
    /// X axis label, shared by the panels.
    pub x_label: &'a str,
    /// The x range drawn, from 0.
    pub x_end: f64,
    /// Shaded ranges.
    pub bands: Vec<Band>,
    /// Dotted vertical lines with a label (phase boundaries).
    pub marks: Vec<(f64, String)>,
    /// The panels, top to bottom.
    pub panels: Vec<Panel<'a>>,
}

/// A "nice" step for about `n` ticks over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    if !(span > 0.0 && span.is_finite()) {
        return 1.0;
    }
    let raw = span / n;
    let mag = 10f64.powf(raw.log10().floor());
    let nice = match raw / mag {
        r if r < 1.5 => 1.0,
        r if r < 3.0 => 2.0,
        r if r < 7.0 => 5.0,
        _ => 10.0,
    };
    nice * mag
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "a tick step above 1e-300 needs at most 300 decimals"
)]
fn fmt_tick(v: f64, step: f64) -> String {
    if step >= 1.0 {
        format!("{v:.0}")
    } else {
        let d = (-step.log10()).ceil() as usize;
        format!("{v:.d$}")
    }
}

/// Escapes text for SVG content and attributes.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The figure as an SVG document.
pub fn svg(f: &Figure) -> String {
    let end = if f.x_end > 0.0 && f.x_end.is_finite() {
        f.x_end
    } else {
        1.0
    };
    let height = TOP + f.panels.len() as f64 * (PANEL_H + GAP);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">"##
    );
    let _ = writeln!(
        s,
        r##"<rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="24" font-size="15">{}</text>"##,
        esc(&f.title)
    );
    for (i, p) in f.panels.iter().enumerate() {
        panel(&mut s, f, end, TOP + i as f64 * (PANEL_H + GAP), p);
    }
    s.push_str("</svg>\n");
    s
}

fn panel(svg: &mut String, f: &Figure, end: f64, top: f64, p: &Panel) {
    let (x0, x1) = (LEFT, WIDTH - RIGHT);
    let (y0, y1) = (top + PANEL_H, top);
    let mut ymax = p
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|q| q.1))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    if let Some((r, _)) = &p.reference {
        ymax = ymax.max(*r);
    }
    let ystep = nice_step(ymax * 1.05, 5.0);
    let ytop = (ymax * 1.05 / ystep).ceil().max(1.0) * ystep;
    let sx = |t: f64| x0 + (x1 - x0) * t.clamp(0.0, end) / end;
    let sy = |v: f64| y0 - (y0 - y1) * v.clamp(0.0, ytop) / ytop;
    let _ = writeln!(svg, r##"<g class="panel" data-panel="{}">"##, esc(p.id));
    for b in &f.bands {
        let (a, z) = (sx(b.from), sx(b.to));
        if z > a {
            let _ = writeln!(
                svg,
                r##"<rect class="band" x="{a:.1}" y="{y1:.1}" width="{:.1}" height="{:.1}" fill="#e45756" fill-opacity="0.15"><title>{}: {:.1}-{:.1} s</title></rect>"##,
                z - a,
                y0 - y1,
                esc(&b.label),
                b.from,
                b.to,
            );
            if b.labelled {
                let _ = writeln!(
                    svg,
                    r##"<text x="{:.1}" y="{:.1}" font-size="10" fill="#a33">{}</text>"##,
                    a + 3.0,
                    y1 + 12.0,
                    esc(&b.label)
                );
            }
        }
    }
    for (t, label) in &f.marks {
        let x = sx(*t);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{y1:.1}" x2="{x:.1}" y2="{y0:.1}" stroke="#888" stroke-dasharray="2 3"/><text x="{:.1}" y="{:.1}" font-size="10" fill="#666">{}</text>"##,
            x + 3.0,
            y0 - 5.0,
            esc(label)
        );
    }
    let _ = writeln!(
        svg,
        r##"<text x="{x0:.1}" y="{:.1}" font-size="14" font-weight="bold">{}</text>"##,
        y1 - 8.0,
        esc(p.title)
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
        r##"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"##,
        (x0 + x1) / 2.0,
        y0 + 34.0,
        esc(f.x_label)
    );
    let (lx, ly) = (x0 - 48.0, (y0 + y1) / 2.0);
    let _ = writeln!(
        svg,
        r##"<text x="{lx:.1}" y="{ly:.1}" font-size="12" text-anchor="middle" transform="rotate(-90 {lx:.1} {ly:.1})">{}</text>"##,
        esc(p.y_label)
    );
    if let Some((r, label)) = &p.reference {
        let y = sy(*r);
        let _ = writeln!(
            svg,
            r##"<line x1="{x0:.1}" y1="{y:.1}" x2="{x1:.1}" y2="{y:.1}" stroke="#555" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}" font-size="10" fill="#555" text-anchor="end">{}</text>"##,
            x1 - 4.0,
            y - 4.0,
            esc(label)
        );
    }
    for (i, series) in p.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let d: Vec<String> = series
            .points
            .iter()
            .filter(|q| q.0.is_finite() && q.1.is_finite())
            .enumerate()
            .map(|(k, &(t, v))| {
                format!(
                    "{}{:.1},{:.1}",
                    if k == 0 { 'M' } else { 'L' },
                    sx(t),
                    sy(v)
                )
            })
            .collect();
        let _ = writeln!(
            svg,
            r##"<path class="series" data-series="{}" d="{}" fill="none" stroke="{colour}" stroke-width="1.8"/>"##,
            esc(&series.name),
            d.join(" ")
        );
        let ly = y1 + 16.0 + 18.0 * i as f64;
        let _ = writeln!(
            svg,
            r##"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{:.1}" font-size="12">{}</text>"##,
            x1 + 12.0,
            x1 + 36.0,
            x1 + 42.0,
            ly + 4.0,
            esc(&series.name)
        );
    }
    svg.push_str("</g>\n");
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

    #[test]
    fn every_series_and_band_is_drawn_in_every_panel() {
        let series = |n: &str| Series {
            name: n.into(),
            points: vec![(0.5, 10.0), (1.5, f64::NAN), (2.5, 30.0)],
        };
        let fig = Figure {
            title: "a <b> & c".into(),
            x_label: "s",
            x_end: 3.0,
            bands: vec![Band {
                from: 1.0,
                to: 2.0,
                label: "load".into(),
                labelled: true,
            }],
            marks: vec![(0.5, "start".into())],
            panels: vec![
                Panel {
                    id: "fps",
                    title: "Throughput",
                    y_label: "frames/s",
                    series: vec![series("static"), series("odin")],
                    reference: None,
                },
                Panel {
                    id: "p99",
                    title: "p99",
                    y_label: "ms",
                    series: vec![series("static")],
                    reference: Some((50.0, "SLO".into())),
                },
            ],
        };
        let s = svg(&fig);
        assert_eq!(s.matches(r#"class="band""#).count(), 2);
        assert_eq!(s.matches(r#"data-series="static""#).count(), 2);
        assert_eq!(s.matches(r#"data-series="odin""#).count(), 1);
        assert!(s.contains("a &lt;b&gt; &amp; c"));
        // The NaN point is skipped, the line goes on.
        assert!(s.contains(r#"d="M"#) && !s.contains("NaN"));
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
    }
}
