//! Checks every chart the kernel draws as a reader would: no exponent in a tick, legends clear of
//! the data, a PNG copy that decodes. Each chart is also written (SVG and PNG) under
//! `target/chart-review/` so a person can look at them.

use super::cell::{RunReport, SessionEntry, cell_chart, summary_chart};
use super::png::PNG_SCALE;
use crate::MimeBundle;
use crate::carbon::gpu::NvmlChoice;
use crate::carbon::intensity;
use crate::carbon::meter::{Meter, MeterConfig, Parts};
use crate::carbon::record::{EmissionRecord, RowKind};
use crate::carbon::sensor::Scope;
use crate::units::Joules;
use base64::Engine as _;

/// A rectangle of an SVG: x, y, width, height, fill.
type Rect = (f64, f64, f64, f64, String);

fn attr(el: &str, name: &str) -> Option<String> {
    let i = el.find(&format!(" {name}=\""))? + name.len() + 3;
    Some(el[i..i + el[i..].find('"')?].to_string())
}

fn rects(svg: &str) -> Vec<Rect> {
    svg.split("<rect")
        .skip(1)
        .filter_map(|el| {
            let el = &el[..el.find('>')?];
            let n = |a: &str| attr(el, a).and_then(|v| v.parse::<f64>().ok());
            Some((
                n("x").unwrap_or(0.0),
                n("y").unwrap_or(0.0),
                n("width")?,
                n("height")?,
                attr(el, "fill").unwrap_or_default(),
            ))
        })
        .collect()
}

/// The texts of an SVG's `<text>` elements.
pub(super) fn texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let t = &t[t.find('>')? + 1..];
            Some(t[..t.find("</text>")?].trim().to_string())
        })
        .collect()
}

/// No tick or label is written with an exponent (`2.000e-5`, `1e-3`).
pub(super) fn assert_no_exponent(name: &str, svg: &str) {
    for t in texts(svg) {
        let exp = t.char_indices().any(|(i, c)| {
            (c == 'e' || c == 'E')
                && i > 0
                && t[..i].ends_with(|p: char| p.is_ascii_digit())
                && t[i + 1..].starts_with(|n: char| n.is_ascii_digit() || n == '-' || n == '+')
        });
        assert!(!exp, "{name}: exponent in '{t}'");
    }
}

/// The legend's swatches (small squares) span a box that no data rectangle enters.
pub(super) fn assert_legend_clear(name: &str, svg: &str) {
    let rs = rects(svg);
    let small = |r: &&Rect| r.2 <= 12.0 && r.3 <= 12.0 && r.2 > 0.0;
    let swatches: Vec<&Rect> = rs.iter().filter(small).collect();
    assert!(!swatches.is_empty(), "{name}: no legend");
    let top = swatches.iter().map(|r| r.1).fold(f64::MAX, f64::min);
    let bottom = swatches.iter().map(|r| r.1 + r.3).fold(0.0, f64::max);
    let left = swatches.iter().map(|r| r.0).fold(f64::MAX, f64::min);
    let colours: Vec<&String> = swatches.iter().map(|r| &r.4).collect();
    for r in rs.iter().filter(|r| !small(r) && colours.contains(&&r.4)) {
        let overlaps = r.1 < bottom && r.1 + r.3 > top && r.0 + r.2 > left;
        assert!(
            !overlaps,
            "{name}: bar {r:?} under the legend {top}..{bottom}"
        );
    }
}

/// The bundle's PNG decodes, at the SVG's size times the scale; returns its bytes.
pub(super) fn assert_png(name: &str, b: &MimeBundle, scale: f32) -> Vec<u8> {
    let png = base64::engine::general_purpose::STANDARD
        .decode(b.text("image/png").expect("a PNG"))
        .unwrap();
    let img = resvg::tiny_skia::Pixmap::decode_png(&png).unwrap();
    let w = b.metadata["image/png"]["width"].as_f64().unwrap();
    assert!(img.width() > 0 && img.height() > 0, "{name}");
    assert_eq!(img.width(), (w as f32 * scale) as u32, "{name}");
    assert!(b.text("text/html").is_none(), "{name}: HTML would win");
    png
}

pub(super) fn save(name: &str, b: &MimeBundle, png: &[u8]) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/chart-review");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join(format!("{name}.png")), png);
        let _ = std::fs::write(
            dir.join(format!("{name}.svg")),
            b.text("image/svg+xml").unwrap_or_default(),
        );
    }
}

fn run(spin: u64) -> RunReport {
    let m = Meter::new(MeterConfig {
        scope: Scope::Process,
        tdp_w: Some(50.0),
        powercap_root: "/nonexistent".into(),
        proc_root: "/proc".into(),
        nvml: NvmlChoice::Disabled,
    });
    m.start(&[std::process::id()]);
    let mut x = 0u64;
    for i in 0..spin {
        x = x.wrapping_add(i * i);
    }
    assert!(x > 0);
    let meas = m.stop().unwrap();
    let z = intensity::zone(Some("FRA")).unwrap();
    let rec = EmissionRecord::from_measurement(&meas, "p", "s", &z, 1.2);
    RunReport { rec, meas }
}

#[test]
fn cell_chart_reads_in_units_with_its_png() {
    let b = cell_chart(&[run(3_000_000)]).unwrap();
    let svg = b.text("image/svg+xml").unwrap();
    assert_no_exponent("cell", svg);
    let t = texts(svg);
    assert!(
        t.iter().any(|t| t == "energy (mJ)" || t == "energy (J)"),
        "{t:?}"
    );
    let png = assert_png("cell", &b, 1.0);
    assert!(png.len() < 20_000, "cell chart PNG is {} bytes", png.len());
    save("cell", &b, &png);
}

#[test]
fn summary_chart_keeps_its_legend_off_the_bars() {
    let e = |l: &str, j: f64, co2: f64| SessionEntry {
        kind: RowKind::Cell,
        repeat_index: None,
        language: l.into(),
        label: String::new(),
        parts: Parts {
            cpu: Joules(j),
            ram: Joules(j / 3.0),
            gpu: Joules(j / 5.0),
        },
        emissions: co2,
        duration: 1.0,
    };
    // Tiny values (the case that printed 2.000e-5) and a tall first bar (under the old legend).
    let entries: Vec<SessionEntry> = (0..7)
        .map(|i| e("python", if i == 0 { 0.9 } else { 0.1 * i as f64 }, 2e-8))
        .collect();
    let b = summary_chart(&entries).unwrap();
    let svg = b.text("image/svg+xml").unwrap();
    assert_no_exponent("summary", svg);
    assert_legend_clear("summary", svg);
    let t = texts(svg);
    assert!(t.iter().any(|t| t.contains("µg")), "{t:?}");
    // One label per cell, 1 to 7, and nothing between them.
    for k in 1..=7 {
        assert!(t.contains(&k.to_string()), "{k} in {t:?}");
    }
    assert!(!t.iter().any(|t| t == "0.5" || t == "1.5"), "{t:?}");
    let png = assert_png("summary", &b, PNG_SCALE);
    save("summary", &b, &png);
}

#[test]
fn the_map_has_its_png() {
    let b = super::map::intensity_bundles(&intensity::zone(Some("France")).unwrap());
    let svg = b[1].text("image/svg+xml").unwrap();
    assert_no_exponent("map", svg);
    let png = assert_png("map", &b[1], 1.0);
    assert!(png.len() < 150_000, "map PNG is {} bytes", png.len());
    save("map", &b[1], &png);
}

/// Mean time of `f` over `n` calls, ms.
fn ms<T>(n: u32, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut last = f();
    let t = std::time::Instant::now();
    for _ in 0..n {
        last = f();
    }
    (t.elapsed().as_secs_f64() * 1000.0 / f64::from(n), last)
}

#[test]
#[ignore = "a measurement, not a check: cargo test -p carbon-magics --release -- --ignored --nocapture chart_cost"]
fn chart_cost() {
    use super::png::{encode_rgb_with, svg_to_png_at};
    let runs = [run(3_000_000)];
    let n = 50;
    let (t, b) = ms(n, || cell_chart(&runs).unwrap());
    println!(
        "cell_chart (figure, SVG + PNG + base64): {t:.3} ms, PNG base64 {} bytes",
        b.text("image/png").unwrap().len()
    );
    let fig = super::cell::cell_figure(&runs).unwrap();
    let (t, svg) = ms(n, || fig.svg());
    println!("  figure -> SVG text: {t:.3} ms, {} bytes", svg.len());
    let (t, c) = ms(n, || fig.canvas(1.0).unwrap());
    println!(
        "  figure -> RGB canvas 1x: {t:.3} ms ({} bytes)",
        c.rgb().len()
    );
    for (name, level, filter) in [
        ("Fast, Sub", png::Compression::Fast, png::Filter::Sub),
        ("Fast, Up", png::Compression::Fast, png::Filter::Up),
        ("Fast, Paeth", png::Compression::Fast, png::Filter::Paeth),
        ("Fast, none", png::Compression::Fast, png::Filter::NoFilter),
        (
            "Fast, adaptive",
            png::Compression::Fast,
            png::Filter::Adaptive,
        ),
        (
            "Balanced, adaptive",
            png::Compression::Balanced,
            png::Filter::Adaptive,
        ),
    ] {
        let (t, bytes) = ms(n, || {
            encode_rgb_with(c.w, c.h, &c.rgb(), level, filter).unwrap()
        });
        println!("  encode {name}: {t:.3} ms, {} bytes", bytes.len());
    }
    // What the chart cost before report::figure: the SVG parsed back by usvg, rasterized by
    // resvg, deflated at `Balanced`.
    let opt = || resvg::usvg::Options {
        font_family: "DejaVu Sans".into(),
        fontdb: super::png::fonts(),
        ..resvg::usvg::Options::default()
    };
    let (t, _) = ms(n, || resvg::usvg::Tree::from_str(&svg, &opt()).unwrap());
    println!("  (before) usvg parse + text layout: {t:.3} ms");
    let (t, p) = ms(n, || svg_to_png_at(&svg, 1.0).unwrap());
    println!(
        "  (before) usvg + resvg + Balanced, 1x: {t:.3} ms, {} bytes",
        p.bytes.len()
    );
}
