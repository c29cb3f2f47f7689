//! Charts as their own Jupyter output: SVG for trusted front-ends, a PNG copy for all the others.
//!
//! JupyterLab renders `image/svg+xml` only in trusted notebooks: its SVG renderer is registered
//! `safe: false`, and HTML output of an untrusted notebook is sanitized, which drops inline
//! `<svg>` (`@jupyterlab/rendermime` `standardRendererFactories`: `text/html` safe rank 50,
//! `image/svg+xml` unsafe rank 80, `image/png` safe rank 90). A notebook reopened from disk is
//! untrusted, and GitHub's and nbviewer's renderers and VS Code each apply rules of their own. So
//! every chart is sent as a separate `display_data` holding `image/svg+xml`, `image/png` and
//! `text/plain`, and no `text/html`: a trusted front-end picks the SVG, an untrusted one the PNG,
//! a terminal the text.
//!
//! The PNG is the SVG rasterized by `resvg`, its text drawn with the DejaVu Sans subset shipped in
//! `data/fonts/` (no system fonts are read: the same picture on every machine).

use super::chart::ChartError;
use crate::MimeBundle;
use base64::Engine as _;
use resvg::{tiny_skia, usvg};
use std::sync::{Arc, OnceLock};

/// The font the PNG's text is drawn with (DejaVu Sans 2.37 subset, Bitstream Vera licence:
/// `data/fonts/LICENSE-DejaVu.txt`).
pub(super) const FONT: &[u8] = include_bytes!("../../data/fonts/DejaVuSans-subset.ttf");

/// The PNG has this many pixels per SVG pixel: 2 keeps text sharp on high-density screens (the
/// bundle's metadata asks front-ends to show it at the SVG's size), at about twice the bytes of 1.
pub const PNG_SCALE: f32 = 2.0;

pub(super) fn fonts() -> Arc<usvg::fontdb::Database> {
    static DB: OnceLock<Arc<usvg::fontdb::Database>> = OnceLock::new();
    DB.get_or_init(|| {
        let mut db = usvg::fontdb::Database::new();
        db.load_font_data(FONT.to_vec());
        // Every family the charts name maps to the one embedded face.
        db.set_sans_serif_family("DejaVu Sans");
        db.set_serif_family("DejaVu Sans");
        db.set_monospace_family("DejaVu Sans");
        Arc::new(db)
    })
    .clone()
}

/// A rasterized chart: PNG bytes and the size it is meant to be shown at (the SVG's, in CSS px).
#[derive(Debug, Clone, PartialEq)]
pub struct Png {
    /// The PNG file.
    pub bytes: Vec<u8>,
    /// Display width, CSS px (the PNG has [`PNG_SCALE`] times as many pixels).
    pub width: u32,
    /// Display height, CSS px.
    pub height: u32,
}

/// Rasterizes `svg` at [`PNG_SCALE`] on a white background.
pub fn svg_to_png(svg: &str) -> Result<Png, ChartError> {
    svg_to_png_at(svg, PNG_SCALE)
}

/// Rasterizes `svg` with `scale` PNG pixels per SVG pixel on a white background.
pub fn svg_to_png_at(svg: &str, scale: f32) -> Result<Png, ChartError> {
    let opt = usvg::Options {
        font_family: "DejaVu Sans".into(),
        fontdb: fonts(),
        ..usvg::Options::default()
    };
    let tree = usvg::Tree::from_str(svg, &opt).map_err(|e| ChartError(format!("svg: {e}")))?;
    let size = tree.size();
    let (w, h) = (size.width().ceil() as u32, size.height().ceil() as u32);
    let mut pixmap = tiny_skia::Pixmap::new((w as f32 * scale) as u32, (h as f32 * scale) as u32)
        .ok_or_else(|| ChartError(format!("svg: empty size {w}x{h}")))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        tiny_skia::Transform::from_scale(scale, scale),
        &mut pixmap.as_mut(),
    );
    let bytes = encode_rgb(&pixmap).map_err(|e| ChartError(format!("png: {e}")))?;
    Ok(Png {
        bytes,
        width: w,
        height: h,
    })
}

/// The deflate level of every chart's PNG: `Fast` (fdeflate). `Balanced` (zlib level 6) took
/// 3.9-4.9 ms of a 3.5 KB cell chart (bench/carbon_bench-results.md, 2026-12-02), more for the
/// larger LLM and summary charts; the price is a PNG about twice as large.
pub(super) const PNG_DEFLATE: png::Compression = png::Compression::Fast;

/// The PNG row filter of the charts drawn by `report::figure` (the cell chart, the `%llm`
/// comparison): `Paeth`, one filter for every row. png's adaptive choice tries five filters per
/// row: the cell chart took 0.56 ms with it against 0.14-0.41 ms with one filter, and the
/// comparison chart (1 model, 1x) 1.9 ms against 0.64 ms. Paeth's PNGs are nearly as small as
/// the adaptive ones (comparison chart 29 KB against 27 KB, cell chart 8.3 KB against 7.4 KB),
/// where `Up` made the comparison chart 73 KB and `Sub` 45 KB (`chart_tests::chart_cost`,
/// `llm::tests::llm_chart_cost`, opt-level 2, 2-core VM). The larger charts rasterized from SVG
/// on demand keep the adaptive filter.
pub(super) const PNG_FILTER: png::Filter = png::Filter::Paeth;

/// The pixmap as an RGB PNG. The background is opaque white, so the alpha channel carries
/// nothing (and premultiplied equals straight colour): dropping it halved the encoding time of
/// tiny-skia's own `encode_png` (RGBA) for the same size (cell chart at 2x: 8.4 KB at
/// `Balanced`, release build).
pub(super) fn encode_rgb(pixmap: &tiny_skia::Pixmap) -> Result<Vec<u8>, png::EncodingError> {
    let rgb: Vec<u8> = pixmap
        .data()
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    encode_rgb_with(
        pixmap.width(),
        pixmap.height(),
        &rgb,
        PNG_DEFLATE,
        png::Filter::Adaptive,
    )
}

/// `rgb` (`width` × `height`, 3 bytes a pixel, row-major) as a PNG.
pub(super) fn encode_rgb_bytes(
    width: u32,
    height: u32,
    rgb: &[u8],
) -> Result<Vec<u8>, png::EncodingError> {
    encode_rgb_with(width, height, rgb, PNG_DEFLATE, PNG_FILTER)
}

/// [`encode_rgb_bytes`] with another deflate level and row filter (for the measurement).
pub(super) fn encode_rgb_with(
    width: u32,
    height: u32,
    rgb: &[u8],
    level: png::Compression,
    filter: png::Filter,
) -> Result<Vec<u8>, png::EncodingError> {
    encode(width, height, rgb, None, level, filter)
}

/// Palette indices (`width` × `height`, a byte a pixel, row-major) and the palette (`plte`: RGB
/// triples, at most 256) as an indexed PNG, deflated and filtered as the RGB ones (Paeth beat
/// `Sub` and no filter here too: the one-model `%llm` chart 9.4 KB in 0.10 ms against 15.6 KB
/// in 0.09 ms and 68 KB in 0.15 ms, opt-level 2, 2-core VM).
pub(super) fn encode_indexed(
    width: u32,
    height: u32,
    idx: &[u8],
    plte: Vec<u8>,
) -> Result<Vec<u8>, png::EncodingError> {
    encode(width, height, idx, Some(plte), PNG_DEFLATE, PNG_FILTER)
}

/// 8-bit `data` as a PNG: RGB, or palette indices into `plte`.
fn encode(
    width: u32,
    height: u32,
    data: &[u8],
    plte: Option<Vec<u8>>,
    level: png::Compression,
    filter: png::Filter,
) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::with_capacity(data.len() / 8);
    let mut enc = png::Encoder::new(&mut out, width, height);
    match plte {
        Some(p) => {
            enc.set_color(png::ColorType::Indexed);
            enc.set_palette(p);
        }
        None => enc.set_color(png::ColorType::Rgb),
    }
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(level);
    // after set_compression, which sets the filter its level goes with
    enc.set_filter(filter);
    let mut w = enc.write_header()?;
    w.write_image_data(data)?;
    w.finish()?;
    Ok(out)
}

/// One chart as its own output: `image/svg+xml`, `image/png` (when the SVG rasterizes) and
/// `text/plain` (`plain` says what the chart shows, for terminals and screen readers).
pub fn chart_bundle(svg: String, plain: impl Into<String>) -> MimeBundle {
    chart_bundle_at(svg, plain, PNG_SCALE)
}

/// [`chart_bundle`] with `scale` PNG pixels per SVG pixel (1 for a large picture such as the
/// world map, whose PNG would otherwise weigh several times its SVG).
pub fn chart_bundle_at(svg: String, plain: impl Into<String>, scale: f32) -> MimeBundle {
    let png = svg_to_png_at(&svg, scale);
    bundle_with_png(svg, png, plain.into())
}

/// The chart output of `svg` and its PNG (or why there is none).
pub(super) fn bundle_with_png(
    svg: String,
    png: Result<Png, ChartError>,
    plain: String,
) -> MimeBundle {
    let mut b = MimeBundle::new();
    match png {
        Ok(png) => {
            b = b.with(
                "image/png",
                base64::engine::general_purpose::STANDARD.encode(&png.bytes),
            );
            b.metadata.insert(
                "image/png".into(),
                serde_json::json!({ "width": png.width, "height": png.height }),
            );
        }
        // The SVG still shows in trusted front-ends; the text says why the PNG is missing.
        Err(e) => {
            return b
                .with("text/plain", format!("{plain}\n(no PNG copy: {e})"))
                .with("image/svg+xml", svg);
        }
    }
    b.with("text/plain", plain).with("image/svg+xml", svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rasterizes_text_and_shapes_at_scale() {
        let svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"120\" height=\"40\">\
                   <rect x=\"0\" y=\"0\" width=\"60\" height=\"40\" fill=\"#0072b2\"/>\
                   <text x=\"70\" y=\"25\" font-family=\"sans-serif\" font-size=\"14\">µg CO₂</text></svg>";
        let png = svg_to_png(svg).unwrap();
        assert_eq!((png.width, png.height), (120, 40));
        assert_eq!(&png.bytes[1..4], b"PNG");
        let img = tiny_skia::Pixmap::decode_png(&png.bytes).unwrap();
        assert_eq!((img.width(), img.height()), (240, 80));
        // The bar is blue and the text left dark pixels right of it (the font was found).
        let px = |x: u32, y: u32| img.pixel(x, y).unwrap();
        assert_eq!((px(10, 10).red(), px(10, 10).blue()), (0, 178));
        let dark = (140..240)
            .flat_map(|x| (0..80).map(move |y| (x, y)))
            .filter(|&(x, y)| px(x, y).red() < 128)
            .count();
        assert!(dark > 50, "text drew {dark} dark pixels");
    }

    #[test]
    fn bundle_has_svg_png_and_text_but_no_html() {
        let svg =
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"/>".to_string();
        let b = chart_bundle(svg, "a chart");
        assert!(b.text("image/svg+xml").unwrap().starts_with("<svg"));
        let png = base64::engine::general_purpose::STANDARD
            .decode(b.text("image/png").unwrap())
            .unwrap();
        assert_eq!(&png[1..4], b"PNG");
        assert_eq!(b.metadata["image/png"]["width"], 10);
        assert_eq!(b.text("text/plain"), Some("a chart"));
        assert!(b.text("text/html").is_none());
    }
}
