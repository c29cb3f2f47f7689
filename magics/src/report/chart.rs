//! Charts as SVG strings with plotters' `SVGBackend` (no fonts or system libraries needed: text is
//! emitted as SVG `<text>`). Shared helpers; each report module draws its own chart with them.

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
}
