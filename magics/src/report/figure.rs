//! A small chart as a list of shapes (rectangles, lines, text), written as SVG text and drawn
//! straight into an RGB raster for its PNG copy.
//!
//! The cell report's chart and the `%llm` comparison chart go out with every metered cell and
//! every request, PNG included (see [`super::png`] for why the PNG exists). Written as SVG and
//! rasterized by `resvg`, that PNG cost about 3 ms a cell on the 2-core VM (14-23 ms a request):
//! parsing the SVG back, shaping each label and building its glyphs' outlines anew, a 6-level
//! deflate, png's adaptive row filter (issue 9, performance). Here the shapes that make the SVG
//! are drawn directly into the pixels the PNG holds: rectangles and axis-aligned lines by the
//! area they cover, text from glyph masks rasterized once per process (by tiny-skia) and
//! blitted; the PNG is deflated at level 1 with one row filter.
//!
//! The pixels are palette indices while the picture has at most 256 colours (a chart has a few
//! fills and the blends of its text edges: the one-model `%llm` chart 64), and RGB from the
//! first blend that would need a 257th: an indexed PNG has a third of the bytes to filter and
//! deflate and comes out about a third the size (29 KB against 9 KB for that chart), with the
//! same pixels.
//!
//! Text is laid out glyph by glyph with the font's advance widths, without kerning or shaping:
//! the labels are short Latin words, digits and units, for which DejaVu Sans needs neither.

use super::chart::ChartError;
use super::esc;
use super::png::{FONT, Png, bundle_with_png};
use crate::MimeBundle;
use resvg::tiny_skia::{self, FillRule, PathBuilder, Stroke, Transform};
use skrifa::MetadataProvider as _;
use skrifa::instance::{LocationRef, Size};
use skrifa::outline::{DrawSettings, OutlinePen};
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

/// A coordinate with one decimal, as `{:.1}` writes it (`12.0`, `-0.5`), through integers: the
/// float formatter's exact path was a visible part of writing the SVG of every chart (perf of
/// `%llm` requests, issue 9). Ties round away from zero (`{:.1}` rounds them to even), which
/// moves such a coordinate by 0.1 px at most.
struct D1(f32);

impl std::fmt::Display for D1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.0.is_finite() || self.0.abs() > 1e9 {
            return write!(f, "{:.1}", self.0);
        }
        let tenths = (f64::from(self.0) * 10.0).round() as i64;
        let sign = if tenths < 0 { "-" } else { "" };
        let t = tenths.unsigned_abs();
        write!(f, "{sign}{}.{}", t / 10, t % 10)
    }
}

/// An sRGB colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    /// Black.
    pub const BLACK: Rgb = Rgb(0, 0, 0);
    /// White.
    pub const WHITE: Rgb = Rgb(255, 255, 255);
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

#[derive(Debug, Clone, PartialEq)]
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
    /// How many of the first shapes are the backdrop (see [`Figure::backdrop`]).
    backdrop: usize,
}

impl Figure {
    /// An empty white figure whose text is `font_size` px unless a text says otherwise.
    pub fn new(width: f32, height: f32, font_size: f32) -> Figure {
        Figure {
            width,
            height,
            font_size,
            shapes: Vec::with_capacity(32),
            backdrop: 0,
        }
    }

    /// Marks the shapes so far as the figure's backdrop: the part a chart shares with the next
    /// one of its kind (title, legend, axis labels, grid), drawn under everything added after.
    /// Its pixels are kept (the last few per process) and copied when another
    /// figure of the same size has the same backdrop, instead of drawn anew: most of a chart's
    /// glyphs are there, and every `%llm` request draws its chart before the cell ends (issue
    /// 9, performance). The picture is the same either way.
    pub fn backdrop(&mut self) {
        self.backdrop = self.shapes.len();
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
                        "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{fill}\"",
                        D1(*x),
                        D1(*y),
                        D1(*w),
                        D1(*h)
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
                        "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{stroke}\"/>",
                        D1(*x1),
                        D1(*y1),
                        D1(*x2),
                        D1(*y2)
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
                    let _ = write!(s, "<text x=\"{}\" y=\"{}\"", D1(*x), D1(*y));
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
        let c = self.canvas(scale)?;
        c.encode()
            .map(|bytes| Png {
                bytes,
                width: self.width.ceil() as u32,
                height: self.height.ceil() as u32,
            })
            .map_err(|e| ChartError(format!("png: {e}")))
    }

    /// The figure drawn with `scale` pixels per CSS px, shape by shape in the SVG's order, on a
    /// copy of its kept backdrop when there is one.
    pub(super) fn canvas(&self, scale: f32) -> Result<Canvas, ChartError> {
        self.canvas_kept(scale).map(|(c, _)| c)
    }

    /// [`Figure::canvas`], and whether its backdrop was a kept one.
    fn canvas_kept(&self, scale: f32) -> Result<(Canvas, bool), ChartError> {
        if self.backdrop == 0 {
            return self.canvas_on(scale, Canvas::new).map(|c| (c, false));
        }
        let (w, h) = self.pixels(scale);
        let back = &self.shapes[..self.backdrop];
        let found = {
            let kept = BACKDROPS.lock().unwrap_or_else(|e| e.into_inner());
            kept.iter()
                .find(|k| (k.w, k.h, k.scale) == (w, h, scale) && k.shapes == back)
                .cloned()
        };
        let (mut c, hit) = match found {
            Some(k) => (k.canvas.clone(), true),
            None => {
                let mut c = self.blank(scale, Canvas::new)?;
                draw(&mut c, back, scale)?;
                let mut kept = BACKDROPS.lock().unwrap_or_else(|e| e.into_inner());
                if kept.len() >= KEPT_BACKDROPS {
                    kept.pop_back();
                }
                kept.push_front(Arc::new(Backdrop {
                    w,
                    h,
                    scale,
                    shapes: back.to_vec(),
                    canvas: c.clone(),
                }));
                (c, false)
            }
        };
        draw(&mut c, &self.shapes[self.backdrop..], scale)?;
        Ok((c, hit))
    }

    /// The figure drawn anew, its backdrop included (measurements).
    #[cfg(test)]
    pub(super) fn canvas_anew(&self, scale: f32) -> Result<Canvas, ChartError> {
        self.canvas_on(scale, Canvas::new)
    }

    /// The canvas' size in pixels.
    fn pixels(&self, scale: f32) -> (u32, u32) {
        let (w, h) = (self.width.ceil(), self.height.ceil());
        ((w * scale) as u32, (h * scale) as u32)
    }

    /// The blank canvas `make` gives for the figure's size.
    fn blank(
        &self,
        scale: f32,
        make: fn(u32, u32) -> Option<Canvas>,
    ) -> Result<Canvas, ChartError> {
        let (w, h) = self.pixels(scale);
        make(w, h).ok_or_else(|| {
            ChartError(format!(
                "figure: empty size {}x{}",
                self.width.ceil(),
                self.height.ceil()
            ))
        })
    }

    /// The whole figure drawn anew on the canvas `make` gives for the pixel size.
    fn canvas_on(
        &self,
        scale: f32,
        make: fn(u32, u32) -> Option<Canvas>,
    ) -> Result<Canvas, ChartError> {
        let mut c = self.blank(scale, make)?;
        draw(&mut c, &self.shapes, scale)?;
        Ok(c)
    }

    /// The figure as its own chart output: SVG, its PNG at `scale` and `plain` (see
    /// [`super::png::chart_bundle`]).
    pub fn bundle(&self, plain: impl Into<String>, scale: f32) -> MimeBundle {
        bundle_with_png(self.svg(), self.png(scale), plain.into())
    }
}

/// Draws `shapes` on `c`, in order, `scale` pixels per CSS px.
fn draw(c: &mut Canvas, shapes: &[Shape], scale: f32) -> Result<(), ChartError> {
    let font = font()?;
    for shape in shapes {
        match shape {
            Shape::Rect {
                x, y, w, h, fill, ..
            } => {
                if *w > 0.0 && *h > 0.0 {
                    c.fill_rect(
                        x * scale,
                        y * scale,
                        (x + w) * scale,
                        (y + h) * scale,
                        *fill,
                    );
                }
            }
            Shape::Line {
                x1,
                y1,
                x2,
                y2,
                stroke,
            } => c.line(*x1, *y1, *x2, *y2, scale, *stroke),
            Shape::Text {
                x,
                y,
                size,
                anchor,
                fill,
                text,
            } => font.draw(c, *x, *y, *size, scale, *anchor, *fill, text),
        }
    }
    Ok(())
}

/// A figure's backdrop as drawn: its shapes, its canvas' size and scale, its pixels.
struct Backdrop {
    w: u32,
    h: u32,
    scale: f32,
    shapes: Vec<Shape>,
    canvas: Canvas,
}

/// Backdrops kept per process: the cell chart's and the `%llm` charts' of a few model sets (a
/// one-model `%llm` backdrop at 1x is 0.18 MB of palette indices).
const KEPT_BACKDROPS: usize = 4;

/// The backdrops drawn last, most recent first.
static BACKDROPS: Mutex<VecDeque<Arc<Backdrop>>> = Mutex::new(VecDeque::new());

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
    /// Each glyph's coverage at a size and sub-pixel offset, rasterized once: filling a glyph's
    /// outline anew for every label was most of the cell chart's PNG time (1.7 ms of 2.4 ms
    /// for 40 glyphs on the 2-core VM); a blit of a kept mask costs microseconds.
    masks: Mutex<HashMap<MaskKey, Arc<GlyphMask>>>,
}

/// A glyph at one size (device px × [`SIZE_STEPS`]) and one horizontal sub-pixel offset
/// (× [`SUBPIXEL`]).
type MaskKey = (char, u32, u8);

/// Glyph sizes are kept in steps of 1/64 device px (a label's size is a whole or half CSS px,
/// so this is exact for the charts' sizes).
const SIZE_STEPS: f32 = 64.0;

/// A glyph's pen position is rounded to 1/4 device px horizontally (its spacing then errs by at
/// most 1/8 px, below what anti-aliasing shows) and to a whole px vertically (a label's
/// baseline, shared by all its glyphs).
const SUBPIXEL: f32 = 4.0;

/// A glyph's anti-aliased coverage, placed relative to the pen's whole-pixel position.
struct GlyphMask {
    left: i32,
    top: i32,
    width: u32,
    coverage: Vec<u8>,
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
                masks: Mutex::new(HashMap::new()),
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

    /// The coverage of `c` at `size_q` / [`SIZE_STEPS`] device px, its pen `sub` /
    /// [`SUBPIXEL`] px right of a pixel's left edge.
    fn mask(&self, c: char, size_q: u32, sub: u8) -> Arc<GlyphMask> {
        let key = (c, size_q, sub);
        {
            let map = self.masks.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(m) = map.get(&key) {
                return m.clone();
            }
        }
        let m = Arc::new(self.rasterize(c, size_q as f32 / SIZE_STEPS, sub as f32 / SUBPIXEL));
        self.masks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, m.clone());
        m
    }

    fn rasterize(&self, c: char, size: f32, dx: f32) -> GlyphMask {
        let blank = GlyphMask {
            left: 0,
            top: 0,
            width: 0,
            coverage: Vec::new(),
        };
        let k = size / self.upem;
        // font units, y up → device px, y down, pen at (dx, 0)
        let Some(path) = self
            .glyph(c)
            .path
            .clone()
            .and_then(|p| p.transform(Transform::from_row(k, 0.0, 0.0, -k, dx, 0.0)))
        else {
            return blank;
        };
        let b = path.bounds();
        let (left, top) = (b.left().floor() as i32 - 1, b.top().floor() as i32 - 1);
        let (w, h) = (
            (b.right().ceil() as i32 + 1 - left).max(1) as u32,
            (b.bottom().ceil() as i32 + 1 - top).max(1) as u32,
        );
        let Some(mut mask) = tiny_skia::Mask::new(w, h) else {
            return blank;
        };
        mask.fill_path(
            &path,
            FillRule::Winding,
            true,
            Transform::from_translate(-left as f32, -top as f32),
        );
        GlyphMask {
            left,
            top,
            width: w,
            coverage: mask.take(),
        }
    }

    /// Draws `text` at `size` CSS px, anchored at `x` with its baseline at `y`, `scale` device px
    /// per CSS px.
    #[allow(clippy::too_many_arguments)]
    fn draw(
        &self,
        c: &mut Canvas,
        x: f32,
        y: f32,
        size: f32,
        scale: f32,
        anchor: Anchor,
        fill: Rgb,
        text: &str,
    ) {
        let size_q = (size * scale * SIZE_STEPS).round().max(1.0) as u32;
        let k = size_q as f32 / SIZE_STEPS / self.upem;
        let mut pen = scale
            * match anchor {
                Anchor::Start => x,
                Anchor::Middle => x - self.width(text, size) / 2.0,
                Anchor::End => x - self.width(text, size),
            };
        let base = (y * scale).round() as i32;
        for ch in text.chars() {
            let g = self.glyph(ch);
            if g.path.is_some() {
                let whole = pen.floor();
                let mut sub = ((pen - whole) * SUBPIXEL).round() as i32;
                let mut ix = whole as i32;
                if sub >= SUBPIXEL as i32 {
                    sub = 0;
                    ix += 1;
                }
                let m = self.mask(ch, size_q, sub as u8);
                c.blit(&m, ix + m.left, base + m.top, fill);
            }
            pen += g.advance * k;
        }
    }
}

/// An opaque raster on white, row-major: palette indices while the colours fit in 256, then
/// RGB (what the PNG holds, so nothing is converted before encoding).
#[derive(Clone)]
pub(super) struct Canvas {
    pub(super) w: u32,
    pub(super) h: u32,
    px: Pixels,
}

/// A canvas' pixels.
#[derive(Clone)]
enum Pixels {
    /// One byte a pixel, an index into the palette.
    Indexed { idx: Vec<u8>, pal: Palette },
    /// Three bytes a pixel.
    Rgb(Vec<u8>),
}

/// At most 256 colours and their indices, found through a small open-addressing table (a
/// `HashMap` per blended pixel cost more than the indexed PNG saved).
#[derive(Clone)]
struct Palette {
    colors: Vec<Rgb>,
    /// `0xRRGGBB` + 1 (0: empty slot) and its index.
    slots: Vec<(u32, u8)>,
    /// The last colour looked up and its index (runs of one colour are the rule).
    last: (u32, u8),
}

/// Slots of the palette's table: a power of two, four times the most colours it holds.
const SLOTS: usize = 1024;

impl Palette {
    fn new() -> Palette {
        Palette {
            colors: Vec::with_capacity(256),
            slots: vec![(0, 0); SLOTS],
            last: (0, 0),
        }
    }

    /// The index of `c`, added when new; `None` when the palette is full.
    #[inline]
    fn index(&mut self, c: Rgb) -> Option<u8> {
        let key = ((u32::from(c.0) << 16) | (u32::from(c.1) << 8) | u32::from(c.2)) + 1;
        if self.last.0 == key {
            return Some(self.last.1);
        }
        // Fibonacci hashing: the top bits of key × 2^32/φ
        let mut h = (key.wrapping_mul(0x9E37_79B9) >> 22) as usize;
        loop {
            let (k, i) = self.slots[h];
            if k == key {
                self.last = (key, i);
                return Some(i);
            }
            if k == 0 {
                let i = u8::try_from(self.colors.len()).ok()?;
                self.colors.push(c);
                self.slots[h] = (key, i);
                self.last = (key, i);
                return Some(i);
            }
            h = (h + 1) & (SLOTS - 1);
        }
    }

    /// The palette as PNG's PLTE chunk wants it: RGB triples in index order.
    fn plte(&self) -> Vec<u8> {
        self.colors.iter().flat_map(|c| [c.0, c.1, c.2]).collect()
    }
}

/// `d` + (`s` - `d`) × `a` / 255, rounded, per channel.
#[inline]
fn blend(d: Rgb, s: Rgb, a: u32) -> Rgb {
    let ch = |d: u8, s: u8| ((u32::from(d) * (255 - a) + u32::from(s) * a + 127) / 255) as u8;
    Rgb(ch(d.0, s.0), ch(d.1, s.1), ch(d.2, s.2))
}

impl Canvas {
    fn new(w: u32, h: u32) -> Option<Canvas> {
        if w == 0 || h == 0 {
            return None;
        }
        let n = (w as usize).checked_mul(h as usize)?;
        let mut pal = Palette::new();
        // white, index 0: the background
        pal.index(Rgb::WHITE)?;
        Some(Canvas {
            w,
            h,
            px: Pixels::Indexed {
                idx: vec![0; n],
                pal,
            },
        })
    }

    /// A canvas that is RGB from the start (to compare the two kinds of pixels in tests).
    #[cfg(test)]
    fn new_rgb(w: u32, h: u32) -> Option<Canvas> {
        let mut c = Canvas::new(w, h)?;
        c.make_rgb();
        Some(c)
    }

    /// The pixels as RGB, 3 bytes a pixel (measurements and tests).
    pub(super) fn rgb(&self) -> std::borrow::Cow<'_, [u8]> {
        match &self.px {
            Pixels::Rgb(v) => std::borrow::Cow::Borrowed(v),
            Pixels::Indexed { idx, pal } => std::borrow::Cow::Owned(
                idx.iter()
                    .flat_map(|&i| {
                        let c = pal.colors[usize::from(i)];
                        [c.0, c.1, c.2]
                    })
                    .collect(),
            ),
        }
    }

    /// Turns indexed pixels into RGB ones (a colour beyond the palette's 256 is coming).
    fn make_rgb(&mut self) {
        if let Pixels::Indexed { .. } = self.px {
            let rgb = self.rgb().into_owned();
            self.px = Pixels::Rgb(rgb);
        }
    }

    /// The canvas as a PNG: indexed or RGB, as its pixels are.
    fn encode(&self) -> Result<Vec<u8>, png::EncodingError> {
        match &self.px {
            Pixels::Indexed { idx, pal } => {
                super::png::encode_indexed(self.w, self.h, idx, pal.plte())
            }
            Pixels::Rgb(v) => super::png::encode_rgb_bytes(self.w, self.h, v),
        }
    }

    /// Mixes `c` into pixel `p` (its index in the raster) by coverage `a` (0–255).
    #[inline]
    fn mix(&mut self, p: usize, c: Rgb, a: u32) {
        if a == 0 {
            return;
        }
        match &mut self.px {
            Pixels::Indexed { idx, pal } => {
                let new = if a >= 255 {
                    c
                } else {
                    blend(pal.colors[usize::from(idx[p])], c, a)
                };
                match pal.index(new) {
                    Some(i) => idx[p] = i,
                    None => {
                        self.make_rgb();
                        self.mix(p, c, a);
                    }
                }
            }
            Pixels::Rgb(v) => {
                let q = &mut v[p * 3..p * 3 + 3];
                let new = if a >= 255 {
                    c
                } else {
                    blend(Rgb(q[0], q[1], q[2]), c, a)
                };
                q.copy_from_slice(&[new.0, new.1, new.2]);
            }
        }
    }

    /// Pixels `p0..p1` become `c`.
    fn fill_run(&mut self, p0: usize, p1: usize, c: Rgb) {
        if let Pixels::Indexed { idx, pal } = &mut self.px {
            match pal.index(c) {
                Some(i) => {
                    idx[p0..p1].fill(i);
                    return;
                }
                None => self.make_rgb(),
            }
        }
        if let Pixels::Rgb(v) = &mut self.px {
            for q in v[p0 * 3..p1 * 3].chunks_exact_mut(3) {
                q.copy_from_slice(&[c.0, c.1, c.2]);
            }
        }
    }

    /// Fills the device-px rectangle [x0, x1) × [y0, y1), edge pixels by the area they cover
    /// (what an anti-aliased fill of an axis-aligned rectangle gives).
    fn fill_rect(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, c: Rgb) {
        let (x0, x1) = (x0.max(0.0), x1.min(self.w as f32));
        let (y0, y1) = (y0.max(0.0), y1.min(self.h as f32));
        if x0 >= x1 || y0 >= y1 {
            return;
        }
        let overlap = |lo: f32, hi: f32, p: f32| (hi.min(p + 1.0) - lo.max(p)).clamp(0.0, 1.0);
        let (cx0, cx1) = (x0.floor() as u32, (x1.ceil() as u32).min(self.w));
        let (cy0, cy1) = (y0.floor() as u32, (y1.ceil() as u32).min(self.h));
        // the columns wholly inside: one colour, copied (most of a bar's pixels)
        let (in0, in1) = (x0.ceil() as u32, (x1.floor() as u32).min(self.w));
        for py in cy0..cy1 {
            let cy = overlap(y0, y1, py as f32);
            let row = py as usize * self.w as usize;
            let edge = |s: &mut Self, x: u32| {
                let cov = cy * overlap(x0, x1, x as f32);
                s.mix(row + x as usize, c, (cov * 255.0 + 0.5) as u32);
            };
            if in0 >= in1 {
                for x in cx0..cx1 {
                    edge(self, x);
                }
                continue;
            }
            for x in (cx0..in0).chain(in1..cx1) {
                edge(self, x);
            }
            let (p0, p1) = (row + in0 as usize, row + in1 as usize);
            if cy >= 1.0 {
                self.fill_run(p0, p1, c);
            } else {
                let a = (cy * 255.0 + 0.5) as u32;
                for p in p0..p1 {
                    self.mix(p, c, a);
                }
            }
        }
    }

    /// A line 1 CSS px wide with butt ends, as tiny-skia's default stroke draws it.
    fn line(&mut self, x1: f32, y1: f32, x2: f32, y2: f32, scale: f32, c: Rgb) {
        let half = 0.5 * scale;
        let (x1, y1, x2, y2) = (x1 * scale, y1 * scale, x2 * scale, y2 * scale);
        if x1 == x2 {
            self.fill_rect(x1 - half, y1.min(y2), x1 + half, y1.max(y2), c);
        } else if y1 == y2 {
            self.fill_rect(x1.min(x2), y1 - half, x1.max(x2), y1 + half, c);
        } else {
            // A slanted line (none of the charts draws one today): its stroke outline filled
            // into a mask the size of the canvas.
            let mut pb = PathBuilder::new();
            pb.move_to(x1, y1);
            pb.line_to(x2, y2);
            let stroke = Stroke {
                width: scale,
                ..Stroke::default()
            };
            let Some(outline) = pb.finish().and_then(|p| p.stroke(&stroke, 1.0)) else {
                return;
            };
            let Some(mut mask) = tiny_skia::Mask::new(self.w, self.h) else {
                return;
            };
            mask.fill_path(&outline, FillRule::Winding, true, Transform::identity());
            let m = GlyphMask {
                left: 0,
                top: 0,
                width: self.w,
                coverage: mask.take(),
            };
            self.blit(&m, 0, 0, c);
        }
    }

    /// Mixes `c` into the canvas through `m`'s coverage, its top-left pixel at (`x`, `y`).
    fn blit(&mut self, m: &GlyphMask, x: i32, y: i32, c: Rgb) {
        if m.width == 0 {
            return;
        }
        let mw = m.width as i32;
        for (j, row) in m.coverage.chunks_exact(m.width as usize).enumerate() {
            let py = y + j as i32;
            if py < 0 || py >= self.h as i32 {
                continue;
            }
            let i0 = (-x).max(0);
            let i1 = mw.min(self.w as i32 - x);
            let base = py as usize * self.w as usize;
            for i in i0..i1 {
                let a = row[i as usize];
                if a != 0 {
                    self.mix(base + (x + i) as usize, c, u32::from(a));
                }
            }
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
    fn coordinates_have_one_decimal() {
        for (v, s) in [
            (0.0, "0.0"),
            (12.0, "12.0"),
            (3.149, "3.1"),
            (2.96, "3.0"),
            (-0.5, "-0.5"),
            (-0.04, "0.0"),
            (-12.34, "-12.3"),
            (1234.56, "1234.6"),
        ] {
            assert_eq!(D1(v).to_string(), s, "{v}");
        }
        assert_eq!(D1(f32::NAN).to_string(), "NaN");
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

    /// Mean per-channel difference allowed against resvg (0-255): the two differ only on glyph
    /// edges (measured 0.83, with 37 of 48,000 pixels off by more than half; a label left out
    /// or a bar moved by a pixel exceeds one bound or the other).
    const MEAN_DIFF_MAX: f64 = 2.0;

    /// The drawn PNG is the picture resvg makes of the same SVG (which is what the PNG was
    /// before `report::figure`): same shapes, same glyphs, up to anti-aliasing and the glyphs'
    /// rounded positions.
    #[test]
    fn png_matches_resvgs_picture_of_the_svg() {
        let mut f = Figure::new(200.0, 60.0, 11.0);
        f.rect(10.0, 5.0, 80.5, 20.25, Rgb(230, 159, 0), None);
        f.line(10.0, 40.5, 190.0, 40.5, Rgb::BLACK);
        f.line(100.0, 5.0, 100.0, 45.0, Rgb(0xe4, 0xe4, 0xe4));
        f.text(86.0, 19.0, None, Anchor::End, Rgb::WHITE, "0.00185");
        f.text(100.0, 55.0, None, Anchor::Middle, Rgb::BLACK, "0.0015 mJ");
        f.text(
            105.0,
            20.0,
            Some(13.0),
            Anchor::Start,
            Rgb(0, 114, 178),
            "energy (µg CO₂)",
        );
        let ours = tiny_skia::Pixmap::decode_png(&f.png(2.0).unwrap().bytes).unwrap();
        let theirs = tiny_skia::Pixmap::decode_png(
            &super::super::png::svg_to_png_at(&f.svg(), 2.0)
                .unwrap()
                .bytes,
        )
        .unwrap();
        assert_eq!(
            (ours.width(), ours.height()),
            (theirs.width(), theirs.height())
        );
        let (mut sum, mut far) = (0u64, 0usize);
        for (a, b) in ours.pixels().iter().zip(theirs.pixels()) {
            let d = [
                a.red().abs_diff(b.red()),
                a.green().abs_diff(b.green()),
                a.blue().abs_diff(b.blue()),
            ];
            sum += d.iter().map(|&v| u64::from(v)).sum::<u64>();
            if d.iter().any(|&v| v > 128) {
                far += 1;
            }
        }
        let mean = sum as f64 / (3 * ours.pixels().len()) as f64;
        let n = ours.pixels().len();
        println!("mean difference {mean:.3} / 255, {far} of {n} pixels differ by more than half");
        assert!(mean < MEAN_DIFF_MAX, "mean difference {mean:.3}");
        assert!(
            far * 500 < n,
            "{far} of {n} pixels differ by more than half"
        );
    }

    /// Palette indices hold the same picture as RGB pixels: a chart's few colours stay indexed
    /// (and its PNG says so), and one with more than 256 turns RGB on the way, losing nothing.
    #[test]
    fn indexed_pixels_are_the_rgb_picture_and_overflow_to_rgb() {
        let few = sample();
        // 300 bars of distinct colours, half-covered pixels at their edges: > 256 colours
        let mut many = Figure::new(300.0, 30.0, 11.0);
        for i in 0..300u16 {
            let c = Rgb((i % 256) as u8, (i / 2) as u8, 255 - (i % 200) as u8);
            many.rect(f32::from(i), 2.3, 1.0, 20.6, c, None);
        }
        many.text(10.0, 28.0, None, Anchor::Start, Rgb::BLACK, "µg CO₂ 0.0015");
        for (name, f, indexed) in [("few", &few, true), ("many", &many, false)] {
            for scale in [1.0, 2.0] {
                let ours = f.canvas(scale).unwrap();
                let rgb = f.canvas_on(scale, Canvas::new_rgb).unwrap();
                assert_eq!(
                    matches!(ours.px, Pixels::Indexed { .. }),
                    indexed,
                    "{name} at {scale}x"
                );
                assert!(ours.rgb() == rgb.rgb(), "{name} at {scale}x: other pixels");
                // the PNG's IHDR colour type: 3 indexed, 2 RGB
                let png = f.png(scale).unwrap().bytes;
                assert_eq!(png[25], if indexed { 3 } else { 2 }, "{name} at {scale}x");
                let img = tiny_skia::Pixmap::decode_png(&png).unwrap();
                let back: Vec<u8> = img
                    .pixels()
                    .iter()
                    .flat_map(|p| [p.red(), p.green(), p.blue()])
                    .collect();
                assert!(
                    back == *rgb.rgb(),
                    "{name} at {scale}x: the PNG decodes to others"
                );
            }
        }
    }

    /// A figure drawn on a kept backdrop is the figure drawn anew; another backdrop (other text,
    /// other size, other scale) is not taken for it.
    #[test]
    fn a_kept_backdrop_draws_the_same_picture() {
        // a title no other test draws, so no other test's figure is the one kept
        let with = |title: &str, bar: f32, width: f32| {
            let mut f = Figure::new(width, 50.0, 11.0);
            f.text(4.0, 14.0, Some(13.0), Anchor::Start, Rgb::BLACK, title);
            f.line(10.0, 30.5, width - 10.0, 30.5, Rgb(0xc8, 0xc8, 0xc8));
            f.backdrop();
            f.rect(20.0, 20.0, bar, 25.0, Rgb(0, 114, 178), None);
            f.text(
                24.0 + bar,
                40.0,
                None,
                Anchor::Start,
                Rgb::BLACK,
                format!("{bar} g"),
            );
            f
        };
        let title = format!("kept backdrop {:?}", std::thread::current().id());
        for scale in [1.0, 2.0] {
            let first = with(&title, 30.0, 150.0);
            let (a, hit) = first.canvas_kept(scale).unwrap();
            assert!(!hit, "{scale}x: nothing kept yet");
            let next = with(&title, 55.5, 150.0);
            let (b, hit) = next.canvas_kept(scale).unwrap();
            assert!(hit, "{scale}x: the same backdrop is kept");
            assert!(b.rgb() == next.canvas_on(scale, Canvas::new).unwrap().rgb());
            assert!(a.rgb() != b.rgb(), "{scale}x: the bars differ");
            // the kept pixels were not drawn on: the first figure again is its own picture
            let (again, hit) = first.canvas_kept(scale).unwrap();
            assert!(hit && again.rgb() == a.rgb(), "{scale}x");
            for other in [
                with("another title", 30.0, 150.0),
                with(&title, 30.0, 160.0),
            ] {
                let (c, hit) = other.canvas_kept(scale).unwrap();
                assert!(!hit, "{scale}x: another backdrop");
                assert!(c.rgb() == other.canvas_on(scale, Canvas::new).unwrap().rgb());
            }
        }
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
