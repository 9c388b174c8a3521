//! Tables, distributions, JSON and the SVG plot.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{anyhow, Result};
use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::fanout::StepResult;

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn opt_f(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |x| format!("{x:.prec$}"))
}

fn mb(kib: Option<u64>) -> String {
    kib.map_or_else(|| "-".to_owned(), |k| format!("{:.0}", k as f64 / 1024.0))
}

/// The column header of [`table_row`] (Markdown).
pub const TABLE_HEADER: &str = "| viewers | ≥95% frames | frames sent | worst viewer | delivered Mbit/s | latency p50 / p90 / p99 / max (ms) | first frame p50 / p99 (ms) | server CPU % | CPU % per Gbit/s | server RSS MB | harness CPU % | failed |\n|---:|---:|---:|---:|---:|---|---|---:|---:|---|---:|---:|";

/// One Markdown table row.
pub fn table_row(r: &StepResult) -> String {
    format!(
        "| {} | {}/{} | {} | {:.1}% | {:.1} | {:.2} / {:.2} / {:.2} / {:.2} | {:.0} / {:.0} | {} | {} | {}→{} | {:.1} | {} |",
        r.viewers,
        r.viewers_95,
        r.viewers,
        r.frames_sent,
        r.worst_viewer_share * 100.0,
        r.delivered_mbps,
        ms(r.latency.p50_us),
        ms(r.latency.p90_us),
        ms(r.latency.p99_us),
        ms(r.latency.max_us),
        ms(r.first_frame.p50_us),
        ms(r.first_frame.p99_us),
        opt_f(r.server_cpu_pct, 1),
        opt_f(r.server_cpu_per_gbps, 1),
        mb(r.server_rss_start_kib),
        mb(r.server_rss_end_kib),
        r.harness_cpu_pct,
        r.viewers_failed,
    )
}

/// Failure notes under a table (empty when nothing failed).
pub fn failure_notes(results: &[StepResult]) -> String {
    let mut s = String::new();
    for r in results {
        if !r.failures.is_empty() {
            let _ = writeln!(
                s,
                "- N={}: {} viewer(s) failed: {}",
                r.viewers,
                r.viewers_failed,
                r.failures.join("; ")
            );
        }
    }
    s
}

/// Percentiles and a text bar chart of a latency histogram (µs values, printed in ms).
pub fn distribution(h: &Histogram<u64>) -> String {
    let mut s = String::new();
    if h.is_empty() {
        return "(no samples)\n".to_owned();
    }
    let _ = writeln!(
        s,
        "samples {}  mean {:.3} ms  stdev {:.3} ms",
        h.len(),
        h.mean() / 1000.0,
        h.stdev() / 1000.0
    );
    for (label, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)] {
        let _ = writeln!(s, "  {label:>6}  {:>10.3} ms", ms(h.value_at_quantile(q)));
    }
    let _ = writeln!(s, "  {:>6}  {:>10.3} ms", "max", ms(h.max()));
    // Twenty buckets from min to max on a log scale: wide tails stay readable.
    let lo = h.min().max(1) as f64;
    let hi = (h.max().max(2) as f64).max(lo * 1.01);
    let n = 20usize;
    let ratio = (hi / lo).powf(1.0 / n as f64);
    let mut counts = vec![0u64; n];
    for v in h.iter_recorded() {
        let x = v.value_iterated_to() as f64;
        let i = (((x / lo).ln() / ratio.ln()).floor().max(0.0) as usize).min(n - 1);
        counts[i] += v.count_at_value();
    }
    let peak = counts.iter().copied().max().unwrap_or(1).max(1);
    let _ = writeln!(s, "  distribution (ms, log buckets):");
    let mut edge = lo;
    for c in counts {
        let next = edge * ratio;
        let bar = "#".repeat(((c as f64 / peak as f64) * 50.0).ceil() as usize);
        let _ = writeln!(
            s,
            "  {:>9.3} .. {:>9.3} {:>8} {}",
            edge / 1000.0,
            next / 1000.0,
            c,
            bar
        );
        edge = next;
    }
    s
}

/// Plots latency p50/p99 (top) and server CPU (bottom) against viewers, one colour per server.
pub fn plot(path: &Path, title: &str, series: &[(String, Vec<StepResult>)]) -> Result<()> {
    let root = SVGBackend::new(path, (960, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("plot: {e}"))?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| anyhow!("plot: {e}"))?;
    let (top, bottom) = root.split_vertically(400);
    let max_n = series
        .iter()
        .flat_map(|(_, r)| r.iter().map(|s| s.viewers))
        .max()
        .unwrap_or(1)
        .max(1) as u32;
    let max_lat = series
        .iter()
        .flat_map(|(_, r)| r.iter().map(|s| ms(s.latency.p99_us)))
        .fold(1.0f64, f64::max)
        * 1.1;
    let max_cpu = series
        .iter()
        .flat_map(|(_, r)| r.iter().filter_map(|s| s.server_cpu_pct))
        .fold(10.0f64, f64::max)
        * 1.1;
    let e = |e: DrawingAreaErrorKind<_>| anyhow!("plot: {e}");

    let mut lat = ChartBuilder::on(&top)
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0u32..max_n + max_n / 20 + 1, 0f64..max_lat)
        .map_err(e)?;
    lat.configure_mesh()
        .x_desc("viewers")
        .y_desc("latency (ms)")
        .draw()
        .map_err(e)?;
    let mut cpu = ChartBuilder::on(&bottom)
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0u32..max_n + max_n / 20 + 1, 0f64..max_cpu)
        .map_err(e)?;
    cpu.configure_mesh()
        .x_desc("viewers")
        .y_desc("server CPU (% of one core)")
        .draw()
        .map_err(e)?;
    for (i, (name, rs)) in series.iter().enumerate() {
        let colour = Palette99::pick(i).to_rgba();
        let pts = |f: &dyn Fn(&StepResult) -> Option<f64>| -> Vec<(u32, f64)> {
            rs.iter()
                .filter_map(|r| f(r).map(|v| (r.viewers as u32, v)))
                .collect()
        };
        let p99 = pts(&|r| Some(ms(r.latency.p99_us)));
        let p50 = pts(&|r| Some(ms(r.latency.p50_us)));
        lat.draw_series(LineSeries::new(p99.clone(), colour.stroke_width(2)))
            .map_err(e)?
            .label(format!("{name} p99"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        lat.draw_series(p99.iter().map(|&p| Circle::new(p, 3, colour.filled())))
            .map_err(e)?;
        lat.draw_series(LineSeries::new(p50.clone(), colour.stroke_width(1)))
            .map_err(e)?
            .label(format!("{name} p50"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(1))
            });
        lat.draw_series(
            p50.iter()
                .map(|&p| Cross::new(p, 3, colour.stroke_width(1))),
        )
        .map_err(e)?;
        let c = pts(&|r| r.server_cpu_pct);
        cpu.draw_series(LineSeries::new(c.clone(), colour.stroke_width(2)))
            .map_err(e)?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        cpu.draw_series(c.iter().map(|&p| Circle::new(p, 3, colour.filled())))
            .map_err(e)?;
    }
    lat.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(e)?;
    cpu.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(e)?;
    root.present().map_err(|e| anyhow!("plot: {e}"))?;
    Ok(())
}

/// Today's date (UTC) as YYYY-MM-DD.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (400-year era arithmetic).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_413), (2025, 11, 21));
    }

    #[test]
    fn distribution_prints_percentiles() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for v in 1..=1000u64 {
            h.record(v * 10).unwrap();
        }
        let s = distribution(&h);
        assert!(s.contains("p99.9"));
        assert!(s.contains('#'));
    }
}
