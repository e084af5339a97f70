//! Charts drawn server-side as SVG (plotters' SVG backend), so the pages show them without
//! JavaScript. The SVG is made of elements and presentation attributes only — no `<style>`,
//! no `style=""`, no script — so it sits inline under the pages' strict Content-Security-Policy.

use maud::{Markup, PreEscaped};
use plotters::prelude::*;

use crate::views::delivery::Day;

const WIDTH: u32 = 640;
const HEIGHT: u32 = 160;
const BAR: RGBColor = RGBColor(0x1a, 0x7f, 0x37);
const AXIS: RGBColor = RGBColor(0x66, 0x66, 0x66);

/// Deploys per day as bars, the first and last day named under the axis. Empty markup if
/// plotters fails (it draws into a string, so it does not).
pub fn daily_deploys(days: &[Day]) -> Markup {
    let mut svg = String::new();
    if let Err(e) = draw(days, &mut svg) {
        tracing::warn!(error = %e, "could not draw the deploys chart");
        return PreEscaped(String::new());
    }
    PreEscaped(svg)
}

fn draw<'a>(days: &'a [Day], svg: &'a mut String) -> Result<(), Box<dyn std::error::Error + 'a>> {
    let most = days.iter().map(|d| d.deployments).max().unwrap_or(0).max(1);
    let root = SVGBackend::with_string(svg, (WIDTH, HEIGHT)).into_drawing_area();
    let n = days.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .margin(8)
        .x_label_area_size(22)
        .y_label_area_size(28)
        .build_cartesian_2d(0..n, 0..most)?;
    let label = |i: &usize| {
        days.get(*i)
            .map(|d| d.date.strftime("%b %-d").to_string())
            .unwrap_or_default()
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_y_mesh()
        .x_labels(2.min(n))
        .x_label_formatter(&label)
        .y_labels(most.min(4) + 1)
        .axis_style(AXIS)
        .label_style(("sans-serif", 11).into_font().color(&AXIS))
        .draw()?;
    chart.draw_series(
        days.iter()
            .enumerate()
            .filter(|(_, d)| d.deployments > 0)
            .map(|(i, d)| {
                let mut bar = Rectangle::new([(i, 0), (i + 1, d.deployments)], BAR.filled());
                bar.set_margin(0, 0, 1, 1);
                bar
            }),
    )?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_is_plain_svg_a_strict_csp_lets_through() {
        let today: jiff::civil::Date = "2026-11-26".parse().unwrap();
        let days: Vec<Day> = (0..30)
            .map(|i| Day {
                date: today.checked_sub(jiff::Span::new().days(29 - i)).unwrap(),
                deployments: usize::try_from(i % 4).unwrap(),
            })
            .collect();
        let svg = daily_deploys(&days).into_string();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(
            !svg.contains("style=") && !svg.contains("<style") && !svg.contains("<script"),
            "{svg}"
        );
        assert!(svg.contains("Oct 28") && svg.contains("<rect"), "{svg}");
    }
}
