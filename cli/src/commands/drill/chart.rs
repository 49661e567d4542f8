//! The drill's timeline picture (SVG, plotters): acknowledged writes, answered reads and
//! failed requests per second, with each drdctl command and the key failover steps marked.

use lab::traffic::{Kind, TrafficLog};
use plotters::prelude::*;

use super::Report;

/// Width of one bucket of the rates, in milliseconds.
const BUCKET_MS: u64 = 500;

/// Steps worth a label on the picture (the others get an unlabelled tick).
const LABELLED: &[&str] = &["fence-source", "promote-target", "switch-dns"];

pub fn timeline(report: &Report, log: &TrafficLog) -> anyhow::Result<String> {
    let end_ms = log
        .requests
        .iter()
        .map(|r| r.at_ms)
        .chain(report.phases.iter().map(|p| p.end_ms))
        .max()
        .unwrap_or(0)
        + BUCKET_MS;
    let buckets = (end_ms / BUCKET_MS) as usize + 1;
    // The last bucket the traffic filled completely: a partial one would show a false drop.
    let last_full = log
        .requests
        .iter()
        .map(|r| r.at_ms)
        .max()
        .map_or(0, |m| (m / BUCKET_MS) as usize);
    let mut writes = vec![0u32; buckets];
    let mut reads = vec![0u32; buckets];
    let mut failed = vec![0u32; buckets];
    for r in &log.requests {
        let b = (r.at_ms / BUCKET_MS) as usize;
        match (r.ok, r.kind) {
            (false, _) => failed[b] += 1,
            (true, Kind::Write) => writes[b] += 1,
            (true, Kind::Read) => reads[b] += 1,
        }
    }
    let per_sec = 1000.0 / BUCKET_MS as f64;
    let series = |v: &[u32]| -> Vec<(f64, f64)> {
        v.iter()
            .take(last_full.max(1))
            .enumerate()
            .map(|(i, n)| {
                (
                    (i as u64 * BUCKET_MS) as f64 / 1000.0,
                    f64::from(*n) * per_sec,
                )
            })
            .collect()
    };
    let peak = writes
        .iter()
        .chain(&reads)
        .chain(&failed)
        .copied()
        .max()
        .unwrap_or(1);
    let y_max = (f64::from(peak) * per_sec * 1.3).max(10.0);
    let x_max = end_ms as f64 / 1000.0;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1100, 460)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "drdctl lab drill: requests through {} (missing acknowledged writes: {})",
                    report.fqdn,
                    report
                        .acknowledged_writes_missing
                        .map_or("not checked".into(), |n| n.to_string())
                ),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
            .map_err(drawing)?;
        chart
            .configure_mesh()
            .x_desc("seconds since the traffic started")
            .y_desc("requests per second")
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(drawing)?;

        // The drdctl commands: a shaded band each, named at the top.
        let band = [
            RGBColor(255, 236, 179),
            RGBColor(220, 237, 200),
            RGBColor(209, 232, 255),
            RGBColor(220, 237, 200),
        ];
        for (i, p) in report.phases.iter().enumerate() {
            let (a, b) = (p.start_ms as f64 / 1000.0, p.end_ms as f64 / 1000.0);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(a, 0.0), (b, y_max)],
                    band[i % band.len()].mix(0.5).filled(),
                )))
                .map_err(drawing)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    p.name.clone(),
                    (a, y_max * 0.97),
                    ("sans-serif", 13),
                )))
                .map_err(drawing)?;
            for st in &p.steps {
                let x = st.start_ms as f64 / 1000.0;
                let labelled = LABELLED.iter().position(|l| *l == st.name);
                // Labels at staggered heights: the key steps are often a fraction of a second
                // apart.
                let top = match labelled {
                    Some(k) => y_max * (0.9 - 0.06 * k as f64),
                    None => y_max * 0.1,
                };
                let labelled = labelled.is_some();
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(x, 0.0), (x, top)],
                        BLACK.mix(if labelled { 0.6 } else { 0.25 }),
                    )))
                    .map_err(drawing)?;
                if labelled {
                    chart
                        .draw_series(std::iter::once(Text::new(
                            st.name.clone(),
                            (x, top),
                            ("sans-serif", 11),
                        )))
                        .map_err(drawing)?;
                }
            }
        }

        let lines: [(&str, &[u32], RGBColor); 3] = [
            ("acknowledged writes/s", &writes, RGBColor(46, 125, 50)),
            ("answered reads/s", &reads, RGBColor(21, 101, 192)),
            ("failed requests/s", &failed, RGBColor(198, 40, 40)),
        ];
        for (label, data, color) in lines {
            chart
                .draw_series(LineSeries::new(series(data), color.stroke_width(2)))
                .map_err(drawing)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(drawing)?;
        root.present().map_err(drawing)?;
    }
    Ok(svg)
}

fn drawing<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the timeline: {e}")
}
