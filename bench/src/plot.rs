//! SVG plots (plotters' SVG backend, no font or system dependencies): the latency percentile
//! spectrum (HdrHistogram's classic plot: latency against percentile on a `1/(1-q)` log axis)
//! and throughput and p99 latency over time.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::runner::IntervalPoint;
use crate::BenchError;

/// Plot size in pixels.
const SIZE: (u32, u32) = (900, 560);
/// Highest `1/(1-q)` shown: 99.999%.
const X_MAX: f64 = 100_000.0;

fn err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Output(format!("plot: {e}"))
}

fn color(i: usize) -> RGBColor {
    const PALETTE: [RGBColor; 6] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ];
    PALETTE[i % PALETTE.len()]
}

/// Points `(1/(1-q), latency_us)` of a histogram's percentile spectrum.
pub fn spectrum_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let mut pts = Vec::new();
    if h.is_empty() {
        return pts;
    }
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        if q >= 1.0 {
            break;
        }
        let x = 1.0 / (1.0 - q);
        if x > X_MAX {
            break;
        }
        pts.push((x, v.value_iterated_to() as f64 / 1000.0));
    }
    // End the line at the largest sample: at x = count (where 1 sample in `count` is above
    // it), never left of the last point.
    let last_x = pts.last().map_or(1.0, |p| p.0);
    pts.push((
        X_MAX.min(h.len() as f64).max(last_x),
        h.max() as f64 / 1000.0,
    ));
    pts
}

fn percentile_label(x: f64) -> String {
    // x = 1/(1-q): 1 -> 0%, 10 -> 90%, 100 -> 99%, ...
    let q = 100.0 * (1.0 - 1.0 / x);
    if q < 1.0 {
        "0%".into()
    } else {
        let s = format!("{q:.3}");
        format!("{}%", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// Writes the latency percentile spectrum of each named histogram (ns) to `path`.
pub fn percentile_spectrum(
    path: &Path,
    title: &str,
    series: &[(String, &Histogram<u64>)],
) -> Result<(), BenchError> {
    let lines: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(n, h)| (n.clone(), spectrum_points(h)))
        .filter(|(_, p)| !p.is_empty())
        .collect();
    let y_max = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.1))
        .fold(1.0f64, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .margin_right(45)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((1.0..X_MAX).log_scale(), 0.0..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (us)")
        .x_label_formatter(&|x| percentile_label(*x))
        .draw()
        .map_err(err)?;
    for (i, (name, pts)) in lines.into_iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// Writes throughput (top) and p99 latency (bottom) per interval of each named run to `path`.
pub fn timeline(
    path: &Path,
    title: &str,
    series: &[(String, &[IntervalPoint])],
) -> Result<(), BenchError> {
    let t_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.start_s + x.length_s))
        .fold(1e-3f64, f64::max);
    let tp_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.throughput))
        .fold(1.0f64, f64::max)
        * 1.1;
    let p99_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.latency.p99_us))
        .fold(1.0f64, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (SIZE.0, SIZE.1 + 200)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(err)?;
    let (top, bottom) = root.split_vertically((SIZE.1 + 160) / 2);
    type Metric = fn(&IntervalPoint) -> f64;
    let panels: [(&DrawingArea<_, _>, &str, f64, Metric); 2] = [
        (&top, "throughput (ops/s)", tp_max, |p| p.throughput),
        (&bottom, "p99 latency (us)", p99_max, |p| p.latency.p99_us),
    ];
    for (area, y_desc, y_max, f) in panels {
        let mut chart = ChartBuilder::on(area)
            .margin(15)
            .margin_right(30)
            .x_label_area_size(35)
            .y_label_area_size(80)
            .build_cartesian_2d(0.0..t_max, 0.0..y_max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("time since warm-up (s)")
            .y_desc(y_desc)
            .draw()
            .map_err(err)?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let c = color(i);
            // A step per interval: the value holds from its start to its end.
            let data: Vec<(f64, f64)> = pts
                .iter()
                .flat_map(|p| [(p.start_s, f(p)), (p.start_s + p.length_s, f(p))])
                .collect();
            chart
                .draw_series(LineSeries::new(data, c.stroke_width(2)))
                .map_err(err)?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{new_histogram, Percentiles};

    fn tmp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("tessera-bench-{}-{name}", std::process::id()))
    }

    #[test]
    fn spectrum_is_monotone_and_ends_at_max() {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            h.record(v * 1000).unwrap();
        }
        let pts = spectrum_points(&h);
        assert!(pts.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        let last = pts.last().unwrap();
        assert!((last.1 - 10_000.0).abs() < 10.0);
        // Few samples: the quantile iteration passes x = count; the line still never turns back.
        let mut few = new_histogram();
        for v in [
            10_000u64, 20_000, 30_000, 5_000_000, 6_000_000, 9_000_000, 9_500_000,
        ] {
            few.record(v).unwrap();
        }
        let pts = spectrum_points(&few);
        assert!(
            pts.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1),
            "{pts:?}"
        );
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(1000.0), "99.9%");
    }

    #[test]
    fn writes_svg_files() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            h.record(v * 1500).unwrap();
        }
        let p = tmp("spectrum.svg");
        percentile_spectrum(&p, "test", &[("GET".into(), &h)]).unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<polyline") && svg.contains("GET"));

        let pts: Vec<IntervalPoint> = (0..5)
            .map(|i| IntervalPoint {
                start_s: f64::from(i),
                length_s: 1.0,
                count: 100,
                throughput: 100.0 + f64::from(i),
                latency: Percentiles::of(&h),
            })
            .collect();
        let p = tmp("timeline.svg");
        timeline(&p, "test", &[("redis".into(), &pts)]).unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        assert!(svg.contains("throughput") && svg.contains("redis"));
    }
}
