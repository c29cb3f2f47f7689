//! Charts as SVG strings with plotters' `SVGBackend` (no fonts or system libraries needed: text is
//! emitted as SVG `<text>`). Shared helpers; each report module draws its own chart with them.

use super::figure::{Figure, Rgb};
use plotters::prelude::*;

/// A drawing error, as text (plotters' error types are generic over the backend).
#[derive(Debug, thiserror::Error)]
#[error("chart: {0}")]
pub struct ChartError(pub String);

/// Draws into an in-memory SVG of `width` × `height` pixels and returns the SVG text.
pub fn svg<F>(width: u32, height: u32, draw: F) -> Result<String, ChartError>
where
    F: FnOnce(&DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> Result<(), ChartError>,
{
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| ChartError(e.to_string()))?;
        draw(&root)?;
        root.present().map_err(|e| ChartError(e.to_string()))?;
    }
    Ok(out)
}

/// Maps any displayable plotters error into [`ChartError`] (use with `map_err(chart_err)`).
pub fn chart_err<E: std::fmt::Display>(e: E) -> ChartError {
    ChartError(e.to_string())
}

/// What a legend entry shows beside its label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Key {
    /// A filled square (bars).
    Bar(RGBColor),
    /// A short line (line series).
    Line(RGBColor),
}

/// Legend font size, px; labels are measured at [`CHAR_W`] px a character (DejaVu Sans at 11 px
/// averages about 6.2 px, so the estimate errs wide).
const LEGEND_FONT: u32 = 11;
const CHAR_W: i32 = 7;
const ROW_H: i32 = 16;

/// Lays the legend out in rows of at most `width` px: the top-left of each entry.
fn legend_layout(items: &[(String, Key)], width: u32) -> Vec<(i32, i32)> {
    let (mut x, mut y) = (10, 0);
    items
        .iter()
        .map(|(label, _)| {
            let w = 18 + CHAR_W * label.chars().count() as i32 + 14;
            if x > 10 && x + w > width as i32 - 10 {
                x = 10;
                y += ROW_H;
            }
            let at = (x, y);
            x += w;
            at
        })
        .collect()
}

/// Height of the band [`legend`] needs for `items` in `width` px.
pub fn legend_height(items: &[(String, Key)], width: u32) -> u32 {
    legend_layout(items, width)
        .last()
        .map_or(0, |(_, y)| (*y + ROW_H) as u32 + 4)
}

/// Draws a legend in rows on `area` (a band above the plot, sized with [`legend_height`]):
/// drawn outside the plot, it can never cover data, whatever the values.
pub fn legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    items: &[(String, Key)],
) -> Result<(), ChartError> {
    let width = area.dim_in_pixel().0;
    let font = ("sans-serif", LEGEND_FONT).into_font();
    for ((label, key), (x, y)) in items.iter().zip(legend_layout(items, width)) {
        let mid = y + ROW_H / 2;
        match key {
            Key::Bar(c) => area.draw(&Rectangle::new(
                [(x, mid - 5), (x + 10, mid + 5)],
                c.filled(),
            )),
            Key::Line(c) => area.draw(&PathElement::new(
                vec![(x - 2, mid), (x + 12, mid)],
                c.stroke_width(2),
            )),
        }
        .map_err(chart_err)?;
        area.draw(&Text::new(label.clone(), (x + 18, mid - 6), font.clone()))
            .map_err(chart_err)?;
    }
    Ok(())
}

/// A palette colour as a [`Figure`] colour.
pub fn rgb(c: RGBColor) -> Rgb {
    Rgb(c.0, c.1, c.2)
}

/// [`legend`] drawn into a [`Figure`] of `width` px, its first row's top at `top` (the band
/// above the plot that [`legend_height`] sized): the same rows, swatches and labels.
pub fn figure_legend(f: &mut Figure, top: f32, width: u32, items: &[(String, Key)]) {
    for ((label, key), (x, y)) in items.iter().zip(legend_layout(items, width)) {
        let (x, mid) = (x as f32, top + (y + ROW_H / 2) as f32);
        match key {
            Key::Bar(c) => f.rect(x, mid - 5.0, 10.0, 10.0, rgb(*c), None),
            // a figure's lines are 1 px: a 2 px line is a thin rectangle
            Key::Line(c) => f.rect(x - 2.0, mid - 1.0, 14.0, 2.0, rgb(*c), None),
        }
        // baseline about a third of the font size below the middle: the text's x-height centred
        f.text(
            x + 18.0,
            mid + 4.0,
            Some(LEGEND_FONT as f32),
            super::figure::Anchor::Start,
            Rgb::BLACK,
            label.clone(),
        );
    }
}

/// A tick label: three significant figures without trailing zeros (`0.8`, `80`, `1.25`), so an
/// axis does not mix `0.800` and `80.0`.
pub fn tick(v: f64) -> String {
    let s = crate::units::sig3(v);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A tick of a log axis in grams, in the unit that reads best (`10 µg`, `1 mg`, `2.5 g`): no
/// exponent, no trailing zeros.
pub fn mass_tick(g: f64) -> String {
    let s = crate::units::fmt_mass_g(g);
    match s.split_once(' ') {
        Some((num, unit)) if num.contains('.') => {
            format!("{} {unit}", num.trim_end_matches('0').trim_end_matches('.'))
        }
        _ => s,
    }
}

/// The palette used by every chart (colour-blind friendly, Okabe–Ito), so CPU/RAM/GPU and
/// languages look the same everywhere.
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),   // blue
    RGBColor(230, 159, 0),   // orange
    RGBColor(0, 158, 115),   // green
    RGBColor(204, 121, 167), // purple
    RGBColor(86, 180, 233),  // sky
    RGBColor(213, 94, 0),    // vermillion
    RGBColor(240, 228, 66),  // yellow
    RGBColor(0, 0, 0),       // black
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_bar_chart_with_text() {
        let s = svg(300, 200, |root| {
            let mut chart = ChartBuilder::on(root)
                .caption("energy", ("sans-serif", 16))
                .x_label_area_size(20)
                .y_label_area_size(30)
                .build_cartesian_2d(0..3, 0.0..10.0)
                .map_err(chart_err)?;
            chart.configure_mesh().draw().map_err(chart_err)?;
            chart
                .draw_series((0..3).map(|i| {
                    Rectangle::new([(i, 0.0), (i + 1, i as f64 * 3.0)], PALETTE[0].filled())
                }))
                .map_err(chart_err)?;
            Ok(())
        })
        .unwrap();
        assert!(s.starts_with("<svg"));
        assert!(s.contains("energy"));
        assert!(s.contains("<rect"));
    }

    #[test]
    fn legend_rows_wrap_within_the_width() {
        let items: Vec<(String, Key)> =
            ["seed operational", "seed embodied", "EcoLogits operational"]
                .iter()
                .map(|l| (l.to_string(), Key::Bar(PALETTE[0])))
                .collect();
        let at = legend_layout(&items, 330);
        assert!(at.iter().all(|(x, _)| *x < 330));
        assert!(at.last().unwrap().1 > 0, "wrapped: {at:?}");
        assert_eq!(legend_layout(&items, 900).last().unwrap().1, 0);
        assert_eq!(legend_height(&items, 900), 20);
        assert_eq!(mass_tick(1e-5), "10 µg");
        assert_eq!(mass_tick(1e-3), "1 mg");
        assert_eq!(mass_tick(2.5), "2.5 g");
        assert_eq!(
            (tick(0.8), tick(80.0), tick(1.25), tick(0.0)),
            ("0.8".into(), "80".into(), "1.25".into(), "0".into())
        );
    }
}
