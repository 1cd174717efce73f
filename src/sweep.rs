//! `tidewater bench --sweep`: ack latency against offered rate, with the reference
//! job running. The load generator offers each rate of `--sweep-rates` for
//! `--sweep-step` against one server; each step's achieved rate and ack latency
//! percentiles go into the report and into an SVG line chart beside it, so the knee
//! of the curve can be seen.
//!
//! The chart is written by hand (a few SVG elements): a plotting crate needs a font
//! stack (font-kit with fontconfig, or a bundled TrueType font) to lay out its
//! labels, while an SVG viewer lays out `<text>` itself.

use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::path::Path;

/// One step of a sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Events/s asked for; `None`: as fast as the server takes them.
    pub offered: Option<u64>,
    pub achieved: f64,
    /// Ack latency p50, p99, p999, in ms.
    pub ms: (f64, f64, f64),
}

impl Point {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "offered_events_per_sec": self.offered,
            "achieved_events_per_sec": self.achieved,
            "ack_latency_ms": { "p50": self.ms.0, "p99": self.ms.1, "p999": self.ms.2 },
        })
    }
}

/// `100k,250k,1.5m,max`: events/s, `k` and `m` for thousands and millions, `max`
/// for no limit.
pub fn parse_rates(text: &str) -> Result<Vec<Option<u64>>> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim) {
        if part == "max" {
            out.push(None);
            continue;
        }
        let (digits, scale) = match part.chars().last() {
            Some('k' | 'K') => (&part[..part.len() - 1], 1e3),
            Some('m' | 'M') => (&part[..part.len() - 1], 1e6),
            _ => (part, 1.0),
        };
        let n: f64 = digits
            .parse()
            .with_context(|| format!("--sweep-rates: {part:?} is not a rate (100k, 1.5m, max)"))?;
        let rate = n * scale;
        if !(rate.is_finite() && (1.0..=1e10).contains(&rate)) {
            bail!("--sweep-rates: {part:?} is not a rate from 1 to 10000m events/s");
        }
        out.push(Some(rate as u64));
    }
    if out.is_empty() {
        bail!("--sweep-rates names no rate");
    }
    Ok(out)
}

/// The chart: achieved events/s across, ack latency (log scale) up, a line each
/// for p50, p99 and p999.
pub fn svg(points: &[Point], title: &str) -> String {
    let (w, h, left, right, top, bottom) = (800.0, 480.0, 70.0, 20.0, 40.0, 50.0);
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let x_max = points.iter().map(|p| p.achieved).fold(1.0, f64::max) * 1.05;
    let ms = |p: &Point| [p.ms.0, p.ms.1, p.ms.2];
    let all: Vec<f64> = points.iter().flat_map(ms).filter(|v| *v > 0.0).collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min).min(1.0);
    let hi = all.iter().copied().fold(0.0, f64::max).max(1.0);
    // Decades that hold every value.
    let (d0, d1) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let x = |v: f64| left + v / x_max * plot_w;
    let y = |v: f64| top + plot_h - (v.max(10f64.powf(d0)).log10() - d0) / (d1 - d0) * plot_h;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = write!(
        s,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        w / 2.0,
        escape(title)
    );
    // Grid and axis labels: each decade of latency, five steps of rate.
    let mut d = d0;
    while d <= d1 {
        let yy = y(10f64.powf(d));
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{} ms</text>"##,
            left + plot_w,
            left - 6.0,
            yy + 4.0,
            trim(10f64.powf(d))
        );
        d += 1.0;
    }
    for i in 0..=5 {
        let v = x_max * f64::from(i) / 5.0;
        let xx = x(v);
        let _ = write!(
            s,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{top}" y2="{}" stroke="#eee"/><text x="{xx:.1}" y="{}" text-anchor="middle">{}</text>"##,
            top + plot_h,
            top + plot_h + 18.0,
            rate(v)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">events/s acknowledged</text>"#,
        left + plot_w / 2.0,
        h - 10.0
    );
    let _ = write!(
        s,
        r#"<text transform="translate(16 {}) rotate(-90)" text-anchor="middle">ack latency (log scale)</text>"#,
        top + plot_h / 2.0
    );
    for (i, (name, colour)) in [("p50", "#1b9e77"), ("p99", "#d95f02"), ("p999", "#7570b3")]
        .iter()
        .enumerate()
    {
        let line: Vec<String> = points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.achieved), y(ms(p)[i])))
            .collect();
        let _ = write!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            line.join(" ")
        );
        for p in points {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#,
                x(p.achieved),
                y(ms(p)[i])
            );
        }
        let ly = top + 14.0 + 16.0 * i as f64;
        let _ = write!(
            s,
            r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2"/><text x="{}" y="{}">{name}</text>"#,
            left + 12.0,
            left + 32.0,
            left + 38.0,
            ly + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Writes the chart to `path`.
pub fn write_svg(path: &Path, points: &[Point], title: &str) -> Result<()> {
    std::fs::write(path, svg(points, title))
        .with_context(|| format!("cannot write {}", path.display()))
}

fn trim(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

fn rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else {
        format!("{:.0}k", v / 1e3)
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_bad_ones_are_refused() {
        assert_eq!(
            parse_rates("100k, 1.5m,250000,max").unwrap(),
            [Some(100_000), Some(1_500_000), Some(250_000), None]
        );
        assert_eq!(
            parse_rates("2M,1.5K").unwrap(),
            [Some(2_000_000), Some(1_500)]
        );
        for bad in ["", "fast", "-1k", "0", "1x", "0.4", "1e30"] {
            assert!(parse_rates(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_chart_has_a_line_per_percentile_and_every_point() {
        let points = [
            Point {
                offered: Some(100_000),
                achieved: 99_000.0,
                ms: (0.4, 1.2, 3.0),
            },
            Point {
                offered: None,
                achieved: 2_000_000.0,
                ms: (6.0, 15.0, 40.0),
            },
        ];
        let s = svg(&points, "a <test>");
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
        assert_eq!(s.matches("<polyline").count(), 3);
        assert_eq!(s.matches("<circle").count(), 6);
        assert!(s.contains("a &lt;test&gt;") && s.contains(">p999<"));
        assert!(
            s.contains(">0.1 ms<") && s.contains(">100 ms<"),
            "the decades: {s}"
        );
        assert!(!s.contains("NaN") && !s.contains("inf"));
    }
}
