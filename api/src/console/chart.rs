//! Small SVG charts drawn on the server from the numbers the API serves: a line chart (lag
//! over time) and a bar chart (sales per bucket). Written with maud, so every label is
//! escaped like the rest of the page; colours come from the stylesheet's classes.

use maud::{html, Markup};

const W: f64 = 640.0;
const H: f64 = 200.0;
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 24.0;
const TOP: f64 = 8.0;

/// A named series of `(x, y)` points, `x` in any unit (e.g. seconds).
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

fn nice_max(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|v| *v >= max)
        .unwrap_or(max)
}

fn axes(y_max: f64, y_label: &dyn Fn(f64) -> String) -> Markup {
    let plot_h = H - BOTTOM - TOP;
    html! {
        @for i in 0..=4 {
            @let y = TOP + plot_h * (1.0 - f64::from(i) / 4.0);
            line.grid x1=(LEFT) x2=(W) y1=(y) y2=(y) {}
            text.axis x=(LEFT - 4.0) y=(y + 4.0) text-anchor="end" {
                (y_label(y_max * f64::from(i) / 4.0))
            }
        }
    }
}

/// Lines of counts over `x_min..=x_max`; `x_labels` are `(x, label)` ticks along the bottom.
pub fn lines(
    title: &str,
    series: &[Series],
    (x_min, x_max): (f64, f64),
    x_labels: &[(f64, String)],
    y_label: &dyn Fn(f64) -> String,
) -> Markup {
    // Counts: at least 0..4, so that an idle chart has whole-number ticks.
    let y_max = nice_max(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(4.0, f64::max),
    );
    let span = (x_max - x_min).max(1.0);
    let plot_h = H - BOTTOM - TOP;
    let px = |x: f64| LEFT + (W - LEFT) * (x - x_min) / span;
    let py = |y: f64| TOP + plot_h * (1.0 - y / y_max);
    html! {
        figure.chart {
            svg viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(title) {
                title { (title) }
                (axes(y_max, y_label))
                @for (x, label) in x_labels {
                    text.axis x=(px(*x)) y=(H - 6.0) text-anchor="middle" { (label) }
                }
                @for (i, s) in series.iter().enumerate() {
                    @let points: Vec<String> = s.points.iter()
                        .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y))).collect();
                    polyline class=(format!("series s{}", i % 4)) points=(points.join(" ")) {}
                }
            }
            figcaption {
                @for (i, s) in series.iter().enumerate() {
                    span class=(format!("key s{}", i % 4)) { (s.name) }
                }
            }
        }
    }
}

/// One bar per `(label, value)`; every `label_every`-th label is written under its bar.
pub fn bars(
    title: &str,
    bars: &[(String, f64)],
    label_every: usize,
    y_label: &dyn Fn(f64) -> String,
) -> Markup {
    let y_max = nice_max(bars.iter().map(|b| b.1).fold(0.0, f64::max));
    let plot_h = H - BOTTOM - TOP;
    let slot = (W - LEFT) / bars.len().max(1) as f64;
    html! {
        figure.chart {
            svg viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(title) {
                title { (title) }
                (axes(y_max, y_label))
                @for (i, (label, value)) in bars.iter().enumerate() {
                    @let h = plot_h * value / y_max;
                    @let x = LEFT + slot * i as f64;
                    rect.bar x=(x + slot * 0.15) y=(TOP + plot_h - h) width=(slot * 0.7) height=(h) {
                        title { (label) ": " (y_label(*value)) }
                    }
                    @if i % label_every.max(1) == 0 {
                        text.axis x=(x + slot / 2.0) y=(H - 6.0) text-anchor="middle" { (label) }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_scales_are_round() {
        let svg = bars(
            "<sales>",
            &[("<b>".into(), 3.0), ("x".into(), 7.0)],
            1,
            &|v| format!("{v}"),
        )
        .into_string();
        assert!(svg.contains("&lt;b&gt;") && !svg.contains("<b>"));
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(120.0), 200.0);
        assert_eq!(nice_max(0.0), 1.0);
    }
}
