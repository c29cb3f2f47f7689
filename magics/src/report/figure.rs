//! A small chart as a list of shapes (rectangles, lines, text), written as SVG text and drawn
//! straight into a pixmap for its PNG copy.
//!
//! The cell report's chart goes out with every metered cell, PNG included (see [`super::png`]
//! for why the PNG exists). Written as SVG and rasterized by `resvg`, that PNG cost about 3 ms a
//! cell on the 2-core VM: parsing the SVG back, shaping each label and building its glyphs'
//! outlines anew, a 6-level deflate (issue 9, performance). Here the shapes that make the SVG
//! are drawn directly with tiny-skia; each glyph's outline is built once per process and kept,
//! and the PNG is deflated at level 1.
//!
//! Text is laid out glyph by glyph with the font's advance widths, without kerning or shaping:
//! the labels are short Latin words, digits and units, for which DejaVu Sans needs neither.

use super::chart::ChartError;
use super::esc;
use super::png::{FONT, Png, bundle_with_png};
use crate::MimeBundle;
use resvg::tiny_skia::{self, FillRule, Paint, PathBuilder, Pixmap, Stroke, Transform};
use skrifa::MetadataProvider as _;
use skrifa::instance::{LocationRef, Size};
use skrifa::outline::{DrawSettings, OutlinePen};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

/// The PNG's deflate level: see `chart_tests::chart_cost` for what the others cost here.
const PNG_LEVEL: png::Compression = png::Compression::Fast;

/// An sRGB colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    /// Black.
    pub const BLACK: Rgb = Rgb(0, 0, 0);
    /// White.
    pub const WHITE: Rgb = Rgb(255, 255, 255);

    fn paint(self) -> Paint<'static> {
        let mut p = Paint::default();
        p.set_color_rgba8(self.0, self.1, self.2, 255);
        p.anti_alias = true;
        p
    }
}

impl std::fmt::Display for Rgb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rgb({},{},{})", self.0, self.1, self.2)
    }
}

/// Where a text's `x` is: SVG's `text-anchor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// `x` is the text's left end.
    Start,
    /// `x` is the text's middle.
    Middle,
    /// `x` is the text's right end.
    End,
}

impl Anchor {
    fn svg(self) -> &'static str {
        match self {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        }
    }
}

#[derive(Debug, Clone)]
enum Shape {
    Rect {
        x: f32,
        y: f32,
        w: f32,
        h: f32,
        fill: Rgb,
        title: Option<String>,
    },
    /// A line 1 px wide.
    Line {
        x1: f32,
        y1: f32,
        x2: f32,
        y2: f32,
        stroke: Rgb,
    },
    /// `y` is the baseline.
    Text {
        x: f32,
        y: f32,
        size: f32,
        anchor: Anchor,
        fill: Rgb,
        text: String,
    },
}

/// A chart of `width` × `height` CSS px on white, built shape by shape, then written as SVG
/// ([`Figure::svg`]), drawn as PNG ([`Figure::png`]), or both as one chart output
/// ([`Figure::bundle`]).
#[derive(Debug, Clone)]
pub struct Figure {
    width: f32,
    height: f32,
    font_size: f32,
    shapes: Vec<Shape>,
}

impl Figure {
    /// An empty white figure whose text is `font_size` px unless a text says otherwise.
    pub fn new(width: f32, height: f32, font_size: f32) -> Figure {
        Figure {
            width,
            height,
            font_size,
            shapes: Vec::with_capacity(32),
        }
    }

    /// A filled rectangle; `title` is its tooltip in the SVG. Nothing is drawn for an empty one.
    pub fn rect(&mut self, x: f32, y: f32, w: f32, h: f32, fill: Rgb, title: Option<String>) {
        self.shapes.push(Shape::Rect {
            x,
            y,
            w,
            h,
            fill,
            title,
        });
    }

    /// A line 1 px wide.
    pub fn line(&mut self, x1: f32, y1: f32, x2: f32, y2: f32, stroke: Rgb) {
        self.shapes.push(Shape::Line {
            x1,
            y1,
            x2,
            y2,
            stroke,
        });
    }

    /// A text whose baseline is at `y`; `size` None is the figure's font size.
    pub fn text(
        &mut self,
        x: f32,
        y: f32,
        size: Option<f32>,
        anchor: Anchor,
        fill: Rgb,
        text: impl Into<String>,
    ) {
        self.shapes.push(Shape::Text {
            x,
            y,
            size: size.unwrap_or(self.font_size),
            anchor,
            fill,
            text: text.into(),
        });
    }

    /// The figure as an SVG document (sans-serif text: the front-end's own font).
    pub fn svg(&self) -> String {
        let (w, h, fs) = (self.width, self.height, self.font_size);
        let mut s = String::with_capacity(400 + 120 * self.shapes.len());
        let _ = write!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
             viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"{fs}\">\
             <rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>"
        );
        for shape in &self.shapes {
            match shape {
                Shape::Rect {
                    x,
                    y,
                    w,
                    h,
                    fill,
                    title,
                } => {
                    let _ = write!(
                        s,
                        "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" fill=\"{fill}\""
                    );
                    match title {
                        Some(t) => {
                            let _ = write!(s, "><title>{}</title></rect>", esc(t));
                        }
                        None => s.push_str("/>"),
                    }
                }
                Shape::Line {
                    x1,
                    y1,
                    x2,
                    y2,
                    stroke,
                } => {
                    let _ = write!(
                        s,
                        "<line x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\" stroke=\"{stroke}\"/>"
                    );
                }
                Shape::Text {
                    x,
                    y,
                    size,
                    anchor,
                    fill,
                    text,
                } => {
                    let _ = write!(s, "<text x=\"{x:.1}\" y=\"{y:.1}\"");
                    if *size != fs {
                        let _ = write!(s, " font-size=\"{size}\"");
                    }
                    if *anchor != Anchor::Start {
                        let _ = write!(s, " text-anchor=\"{}\"", anchor.svg());
                    }
                    if *fill != Rgb::BLACK {
                        let _ = write!(s, " fill=\"{fill}\"");
                    }
                    let _ = write!(s, ">{}</text>", esc(text));
                }
            }
        }
        s.push_str("</svg>");
        s
    }

    /// The figure drawn with `scale` PNG pixels per CSS px, as a PNG.
    pub fn png(&self, scale: f32) -> Result<Png, ChartError> {
        let pm = self.pixmap(scale)?;
        super::png::encode_rgb(&pm, PNG_LEVEL)
            .map(|bytes| Png {
                bytes,
                width: self.width.ceil() as u32,
                height: self.height.ceil() as u32,
            })
            .map_err(|e| ChartError(format!("png: {e}")))
    }

    /// The figure drawn with `scale` pixels per CSS px.
    pub(super) fn pixmap(&self, scale: f32) -> Result<Pixmap, ChartError> {
        let (w, h) = (self.width.ceil() as u32, self.height.ceil() as u32);
        let mut pm = Pixmap::new((w as f32 * scale) as u32, (h as f32 * scale) as u32)
            .ok_or_else(|| ChartError(format!("figure: empty size {w}x{h}")))?;
        pm.fill(tiny_skia::Color::WHITE);
        let base = Transform::from_scale(scale, scale);
        let font = font()?;
        // The glyphs of all texts, one path per colour, filled last: one fill per colour
        // instead of one per glyph (each fill sets up a raster pipeline; per glyph that was most
        // of the drawing time). Text is therefore drawn above every rect and line.
        let mut text: Vec<(Rgb, PathBuilder)> = Vec::with_capacity(2);
        for shape in &self.shapes {
            match shape {
                Shape::Rect {
                    x, y, w, h, fill, ..
                } => {
                    if let Some(r) = tiny_skia::Rect::from_xywh(*x, *y, *w, *h) {
                        pm.fill_rect(r, &fill.paint(), base, None);
                    }
                }
                Shape::Line {
                    x1,
                    y1,
                    x2,
                    y2,
                    stroke,
                } => {
                    let mut pb = PathBuilder::new();
                    pb.move_to(*x1, *y1);
                    pb.line_to(*x2, *y2);
                    if let Some(p) = pb.finish() {
                        pm.stroke_path(&p, &stroke.paint(), &Stroke::default(), base, None);
                    }
                }
                Shape::Text {
                    x,
                    y,
                    size,
                    anchor,
                    fill,
                    text: t,
                } => {
                    let i = match text.iter().position(|(c, _)| c == fill) {
                        Some(i) => i,
                        None => {
                            text.push((*fill, PathBuilder::new()));
                            text.len() - 1
                        }
                    };
                    font.layout(&mut text[i].1, *x, *y, *size, *anchor, t);
                }
            }
        }
        for (colour, pb) in text {
            if let Some(p) = pb.finish() {
                pm.fill_path(&p, &colour.paint(), FillRule::Winding, base, None);
            }
        }
        Ok(pm)
    }

    /// The figure as its own chart output: SVG, its PNG at `scale` and `plain` (see
    /// [`super::png::chart_bundle`]).
    pub fn bundle(&self, plain: impl Into<String>, scale: f32) -> MimeBundle {
        bundle_with_png(self.svg(), self.png(scale), plain.into())
    }
}

/// One glyph: its outline in font units (y up), None for a blank, and its advance.
struct Glyph {
    path: Option<tiny_skia::Path>,
    advance: f32,
}

/// The embedded face, its glyphs built on first use and kept for the process's life (a few
/// dozen characters: digits, units, the labels).
struct Font {
    upem: f32,
    glyphs: Mutex<HashMap<char, Arc<Glyph>>>,
}

fn font() -> Result<&'static Font, ChartError> {
    static FONT_CACHE: OnceLock<Option<Font>> = OnceLock::new();
    FONT_CACHE
        .get_or_init(|| {
            let f = skrifa::FontRef::new(FONT).ok()?;
            Some(Font {
                upem: f32::from(
                    f.metrics(Size::unscaled(), LocationRef::default())
                        .units_per_em,
                ),
                glyphs: Mutex::new(HashMap::new()),
            })
        })
        .as_ref()
        .ok_or_else(|| ChartError("figure: the embedded font does not parse".into()))
}

/// Collects an outline into a tiny-skia path.
struct Pen(PathBuilder);

impl OutlinePen for Pen {
    fn move_to(&mut self, x: f32, y: f32) {
        self.0.move_to(x, y)
    }
    fn line_to(&mut self, x: f32, y: f32) {
        self.0.line_to(x, y)
    }
    fn quad_to(&mut self, cx0: f32, cy0: f32, x: f32, y: f32) {
        self.0.quad_to(cx0, cy0, x, y)
    }
    fn curve_to(&mut self, cx0: f32, cy0: f32, cx1: f32, cy1: f32, x: f32, y: f32) {
        self.0.cubic_to(cx0, cy0, cx1, cy1, x, y)
    }
    fn close(&mut self) {
        self.0.close()
    }
}

impl Font {
    /// The glyph of `c` (the font's missing-glyph box when it has none).
    fn glyph(&self, c: char) -> Arc<Glyph> {
        let mut map = match self.glyphs.lock() {
            Ok(m) => m,
            // A panic while building a glyph leaves at worst a missing entry.
            Err(e) => e.into_inner(),
        };
        map.entry(c)
            .or_insert_with(|| Arc::new(Self::build(c)))
            .clone()
    }

    fn build(c: char) -> Glyph {
        let blank = Glyph {
            path: None,
            advance: 0.0,
        };
        let Ok(f) = skrifa::FontRef::new(FONT) else {
            return blank;
        };
        let id = f.charmap().map(c).unwrap_or(skrifa::GlyphId::NOTDEF);
        let advance = f
            .glyph_metrics(Size::unscaled(), LocationRef::default())
            .advance_width(id)
            .unwrap_or(0.0);
        let path = f.outline_glyphs().get(id).and_then(|g| {
            let mut pen = Pen(PathBuilder::new());
            g.draw(
                DrawSettings::unhinted(Size::unscaled(), LocationRef::default()),
                &mut pen,
            )
            .ok()?;
            pen.0.finish()
        });
        Glyph { path, advance }
    }

    /// Width of `text` at `size` px.
    fn width(&self, text: &str, size: f32) -> f32 {
        text.chars().map(|c| self.glyph(c).advance).sum::<f32>() * size / self.upem
    }

    /// Appends the outlines of `text` at `size` px, anchored at `x` with its baseline at `y`,
    /// to `out` (in CSS px).
    fn layout(&self, out: &mut PathBuilder, x: f32, y: f32, size: f32, anchor: Anchor, text: &str) {
        let k = size / self.upem;
        let mut pen_x = match anchor {
            Anchor::Start => x,
            Anchor::Middle => x - self.width(text, size) / 2.0,
            Anchor::End => x - self.width(text, size),
        };
        for c in text.chars() {
            let g = self.glyph(c);
            // font units, y up → CSS px at the pen, y down
            if let Some(p) = g
                .path
                .clone()
                .and_then(|p| p.transform(Transform::from_row(k, 0.0, 0.0, -k, pen_x, y)))
            {
                out.push_path(&p);
            }
            pen_x += g.advance * k;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Figure {
        let mut f = Figure::new(120.0, 40.0, 11.0);
        f.rect(
            0.0,
            0.0,
            60.0,
            40.0,
            Rgb(0, 114, 178),
            Some("a <bar>".into()),
        );
        f.line(0.0, 39.5, 120.0, 39.5, Rgb::BLACK);
        f.text(70.0, 25.0, Some(14.0), Anchor::Start, Rgb::BLACK, "µg CO₂");
        f
    }

    #[test]
    fn svg_has_each_shape_with_its_attributes() {
        let s = sample().svg();
        assert!(s.starts_with("<svg") && s.ends_with("</svg>"), "{s}");
        assert!(s.contains("width=\"120\" height=\"40\""), "{s}");
        assert!(
            s.contains("<rect x=\"0.0\" y=\"0.0\" width=\"60.0\" height=\"40.0\" fill=\"rgb(0,114,178)\"><title>a &lt;bar&gt;</title></rect>"),
            "{s}"
        );
        assert!(s.contains("<line x1=\"0.0\" y1=\"39.5\""), "{s}");
        assert!(
            s.contains("<text x=\"70.0\" y=\"25.0\" font-size=\"14\">µg CO₂</text>"),
            "{s}"
        );
    }

    #[test]
    fn png_draws_shapes_and_glyphs_at_scale() {
        let png = sample().png(2.0).unwrap();
        assert_eq!((png.width, png.height), (120, 40));
        let img = tiny_skia::Pixmap::decode_png(&png.bytes).unwrap();
        assert_eq!((img.width(), img.height()), (240, 80));
        let px = |x: u32, y: u32| img.pixel(x, y).unwrap();
        assert_eq!((px(10, 10).red(), px(10, 10).blue()), (0, 178));
        // The text left dark pixels right of the bar, within its line (baseline 25 px, 14 px).
        let dark: Vec<(u32, u32)> = (120..240)
            .flat_map(|x| (0..78).map(move |y| (x, y)))
            .filter(|&(x, y)| px(x, y).red() < 128)
            .collect();
        assert!(dark.len() > 50, "text drew {} dark pixels", dark.len());
        assert!(
            dark.iter()
                .all(|&(_, y)| (2 * 25 - 2 * 14..=2 * 25 + 2 * 5).contains(&y))
        );
    }

    #[test]
    fn anchors_place_text_by_its_measured_width() {
        let f = font().unwrap();
        let w = f.width("123", 11.0);
        // DejaVu Sans digits are 1303/2048 em wide (the subset's hmtx, read with fontTools).
        assert!((w - 3.0 * 11.0 * 1303.0 / 2048.0).abs() < 0.01, "{w}");
        let ink_right = |anchor| {
            let mut fig = Figure::new(100.0, 20.0, 11.0);
            fig.text(50.0, 15.0, None, anchor, Rgb::BLACK, "123");
            let img = tiny_skia::Pixmap::decode_png(&fig.png(1.0).unwrap().bytes).unwrap();
            (0..100)
                .filter(|&x| (0..20).any(|y| img.pixel(x, y).unwrap().red() < 128))
                .max()
                .unwrap()
        };
        let (start, mid, end) = (
            ink_right(Anchor::Start),
            ink_right(Anchor::Middle),
            ink_right(Anchor::End),
        );
        assert!((start as f32 - (50.0 + w)).abs() <= 2.0, "{start} {w}");
        assert!((mid as f32 - (50.0 + w / 2.0)).abs() <= 2.0, "{mid} {w}");
        assert!((end as f32 - 50.0).abs() <= 2.0, "{end}");
    }
}
