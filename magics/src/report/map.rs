//! `%carbon intensity`: the table of the countries the kernel knows and a world map coloured by
//! the carbon intensity of their electricity, the configured zone marked.
//!
//! Shapes: Natural Earth 1:110m (public domain) via the npm package world-atlas, projected once
//! by `data/gen_world_map.py` into `data/world_map.csv`; values: `data/carbon_intensity.csv`
//! (Our World in Data / Ember, CC BY 4.0).

use super::{esc, html_table, png, text_table};
use crate::MimeBundle;
use crate::carbon::intensity::{self, Zone};
use crate::units::sig3;
use std::fmt::Write as _;

/// Class bounds of the map's colours, gCO₂eq/kWh: the last class is "700 and more". Chosen
/// around the table's spread (hydro and nuclear grids below 50, coal grids above 700).
pub const BOUNDS: [f64; 8] = [50.0, 100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0];

/// One colour per class, light to dark: ColorBrewer's 9-class YlOrBr (sequential,
/// colour-blind safe; Cynthia Brewer, colorbrewer2.org, Apache 2.0).
pub const COLOURS: [&str; 9] = [
    "#ffffe5", "#fff7bc", "#fee391", "#fec44f", "#fe9929", "#ec7014", "#cc4c02", "#993404",
    "#662506",
];

/// Fill of a country the table has no value for.
pub const NO_DATA: &str = "#d0d0d0";

/// The colour of an intensity.
pub fn colour(g_per_kwh: f64) -> &'static str {
    COLOURS[BOUNDS.iter().filter(|b| g_per_kwh >= **b).count()]
}

const MARGIN: f64 = 10.0;
const TOP: f64 = 28.0; // title
const LEGEND: f64 = 58.0; // colour scale and source below the map

/// The map as SVG: every country of the table that has a shape coloured by its intensity, the
/// others grey, `zone` outlined and labelled.
pub fn map_svg(zone: &Zone) -> String {
    let (mw, mh) = intensity::map_size();
    let w = mw + 2.0 * MARGIN;
    let h = TOP + mh + LEGEND;
    let mut s = String::with_capacity(48_000);
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         font-family=\"sans-serif\" font-size=\"11\">\
         <rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\
         <text x=\"{MARGIN}\" y=\"18\" font-size=\"14\">Carbon intensity of electricity, gCO₂eq/kWh (life-cycle, latest year)</text>\
         <g transform=\"translate({MARGIN} {TOP})\" stroke=\"#fff\" stroke-width=\"0.4\" fill-rule=\"evenodd\">\
         <rect width=\"{mw}\" height=\"{mh}\" fill=\"#eef3f7\" stroke=\"none\"/>"
    );
    let mut marked = None;
    for sh in intensity::shapes().iter().filter(|s| !s.path.is_empty()) {
        let c = intensity::country(&sh.iso3).filter(|_| !sh.iso3.is_empty());
        let (fill, title) = match c {
            Some(c) => (
                colour(c.g_per_kwh),
                format!("{} {} g/kWh ({})", c.name, sig3(c.g_per_kwh), c.year),
            ),
            None => (NO_DATA, format!("{}: no value", sh.names[0])),
        };
        let _ = write!(
            s,
            "<path d=\"{}\" fill=\"{fill}\"><title>{}</title></path>",
            sh.path,
            esc(&title)
        );
        if !zone.iso3.is_empty() && sh.iso3 == zone.iso3 {
            marked = Some(sh);
        }
    }
    // The configured zone on top: a dark outline, a dot and its name with its value, the label
    // kept inside the map.
    let label = format!("{}: {} g/kWh", zone.name, sig3(zone.g_per_kwh));
    if let Some(sh) = marked {
        let _ = write!(
            s,
            "<path d=\"{}\" fill=\"none\" stroke=\"#000\" stroke-width=\"1.6\"/>",
            sh.path
        );
        if let Some((x, y)) = sh.label {
            let tw = 6.4 * label.chars().count() as f64 + 8.0;
            let lx = (x + 8.0).min(mw - tw - 2.0);
            let ly = if y < 24.0 { y + 10.0 } else { y - 20.0 };
            let _ = write!(
                s,
                "<circle cx=\"{x}\" cy=\"{y}\" r=\"3.5\" fill=\"#000\" stroke=\"#fff\" stroke-width=\"1\"/>\
                 <line x1=\"{x}\" y1=\"{y}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#000\" stroke-width=\"1\"/>\
                 <rect x=\"{lx:.1}\" y=\"{ly:.1}\" width=\"{tw:.1}\" height=\"17\" rx=\"3\" fill=\"#fff\" fill-opacity=\"0.9\" stroke=\"#000\" stroke-width=\"0.8\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" stroke=\"none\" fill=\"#000\" font-size=\"11\">{}</text>",
                lx.max(x.min(lx + tw)),
                ly + 8.5,
                lx + 4.0,
                ly + 12.5,
                esc(&label)
            );
        }
    }
    s.push_str("</g>");
    // Legend: one swatch per class with its lower bound under it, then "no data".
    let ly = TOP + mh + 12.0;
    let sw = 44.0;
    let _ = write!(
        s,
        "<text x=\"{MARGIN}\" y=\"{:.1}\">gCO₂eq/kWh</text>",
        ly + 11.0
    );
    let x0 = MARGIN + 74.0;
    for (i, c) in COLOURS.iter().enumerate() {
        let x = x0 + sw * i as f64;
        let lo = if i == 0 { 0.0 } else { BOUNDS[i - 1] };
        let _ = write!(
            s,
            "<rect x=\"{x}\" y=\"{ly}\" width=\"{sw}\" height=\"12\" fill=\"{c}\" stroke=\"#999\" stroke-width=\"0.5\"/>\
             <text x=\"{x}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            ly + 24.0,
            lo
        );
    }
    let xe = x0 + sw * COLOURS.len() as f64;
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}+</text>\
         <rect x=\"{:.1}\" y=\"{ly}\" width=\"{sw}\" height=\"12\" fill=\"{NO_DATA}\" stroke=\"#999\" stroke-width=\"0.5\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\">no value</text>",
        xe - sw / 2.0 + sw / 2.0,
        ly + 24.0,
        BOUNDS[BOUNDS.len() - 1],
        xe + 36.0,
        xe + 36.0 + sw + 6.0,
        ly + 11.0,
    );
    let zone_note = if zone.is_default {
        "No zone configured: reports use the world average (set CARBON_COUNTRY or --country)."
            .to_string()
    } else if marked.is_none() {
        format!("{label}: too small for this map's scale, not marked.")
    } else {
        String::new()
    };
    let _ = write!(
        s,
        "<text x=\"{MARGIN}\" y=\"{:.1}\" fill=\"#555\" font-size=\"10\">Data: Our World in Data / Ember (CC BY 4.0). Shapes: Natural Earth 1:110m (public domain). {}</text></svg>",
        h - 6.0,
        esc(&zone_note)
    );
    s
}

/// `%carbon intensity`'s outputs: the table (text and HTML), then the map (SVG + PNG + text).
pub fn intensity_bundles(zone: &Zone) -> Vec<MimeBundle> {
    let countries = intensity::countries();
    let rows: Vec<Vec<String>> = countries
        .iter()
        .map(|c| {
            let mark = if c.iso3 == zone.iso3 {
                " ◀ configured"
            } else {
                ""
            };
            vec![
                format!("{}{mark}", c.name),
                c.iso3.clone(),
                sig3(c.g_per_kwh),
                c.year.to_string(),
                "OWID/Ember".to_string(),
            ]
        })
        .collect();
    let head = ["country", "ISO3", "gCO₂eq/kWh", "year", "source"];
    let intro = format!(
        "Carbon intensity of electricity: {} countries, by name. Configured zone: {} ({} gCO₂eq/kWh, {}).\nSource: {}. Without a zone: world average {} gCO₂eq/kWh (IEA 2019, CodeCarbon's default).\nSet the zone with CARBON_COUNTRY (.env), %carbon config country=…, or %%carbon --country …: alpha-3 (FRA), alpha-2 (fr) or name (France).\n",
        countries.len(),
        zone.name,
        sig3(zone.g_per_kwh),
        zone.source,
        intensity::TABLE_SOURCE,
        sig3(intensity::WORLD_AVERAGE_G_PER_KWH),
    );
    let text = format!("{intro}\n{}", text_table(&head, &rows));
    let html = format!(
        "<div style=\"font-family:sans-serif;font-size:13px\"><p>{}</p>\
         <div style=\"max-height:320px;overflow-y:auto;display:inline-block\">{}</div></div>",
        esc(&intro).replace('\n', "<br>"),
        html_table(&head, &rows)
    );
    let table = MimeBundle::plain(text).with("text/html", html);
    let shown = intensity::shapes()
        .iter()
        .filter(|s| !s.path.is_empty() && intensity::country(&s.iso3).is_some())
        .count();
    let plain = format!(
        "map: {shown} countries coloured by carbon intensity (classes from 0 to {}+ gCO₂eq/kWh); configured zone: {} ({} gCO₂eq/kWh){}",
        BOUNDS[BOUNDS.len() - 1],
        zone.name,
        sig3(zone.g_per_kwh),
        if zone.is_default {
            ", not a country"
        } else {
            ", marked"
        }
    );
    vec![table, png::chart_bundle_at(map_svg(zone), plain, 1.0)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill_of<'a>(svg: &'a str, title_start: &str) -> Option<&'a str> {
        // Each country is `<path d=".." fill="#xxxxxx"><title>NAME …</title></path>`.
        let t = svg.find(&format!("<title>{title_start}"))?;
        let f = svg[..t].rfind("fill=\"")? + 6;
        Some(&svg[f..f + 7])
    }

    #[test]
    fn every_country_with_a_shape_gets_its_colour() {
        let zone = intensity::zone(Some("FRA")).unwrap();
        let svg = map_svg(&zone);
        let mut coloured = 0;
        for sh in intensity::shapes().iter().filter(|s| !s.path.is_empty()) {
            if let Some(c) = intensity::country(&sh.iso3) {
                assert_eq!(
                    fill_of(&svg, &format!("{} ", esc(&c.name))),
                    Some(colour(c.g_per_kwh)),
                    "{}",
                    c.name
                );
                coloured += 1;
            }
        }
        assert_eq!(coloured, 171);
        assert_eq!(colour(30.0), COLOURS[0]);
        assert_eq!(colour(56.0), COLOURS[1]);
        assert_eq!(colour(713.0), COLOURS[8]);
        // Kosovo has a shape but no value: grey.
        assert_eq!(fill_of(&svg, "Kosovo"), Some(NO_DATA));
    }

    #[test]
    fn the_configured_zone_is_marked() {
        let fra = map_svg(&intensity::zone(Some("france")).unwrap());
        let path = &intensity::shapes()
            .iter()
            .find(|s| s.iso3 == "FRA")
            .unwrap()
            .path;
        assert!(fra.contains(&format!("<path d=\"{path}\" fill=\"none\" stroke=\"#000\"")));
        assert!(fra.contains("France: 56.0 g/kWh") && fra.contains("<circle"));
        let world = map_svg(&intensity::zone(None).unwrap());
        assert!(!world.contains("fill=\"none\" stroke=\"#000\"") && !world.contains("<circle"));
        assert!(world.contains("No zone configured"));
        // Luxembourg has a value but no shape at 1:110m: said, not marked.
        let lux = map_svg(&intensity::zone(Some("LUX")).unwrap());
        assert!(lux.contains("too small for this map") && !lux.contains("<circle"));
    }

    #[test]
    fn bundles_hold_the_sorted_table_and_the_map_as_svg_and_png() {
        let b = intensity_bundles(&intensity::zone(Some("fr")).unwrap());
        assert_eq!(b.len(), 2);
        let t = b[0].text("text/plain").unwrap();
        assert!(
            t.contains("France ◀ configured") && t.contains("OWID/Ember") && t.contains("2023")
        );
        let html = b[0].text("text/html").unwrap();
        let (a, z) = (
            html.find(">Afghanistan<").unwrap(),
            html.find(">Zimbabwe<").unwrap(),
        );
        assert!(a < z);
        assert!(b[1].text("image/svg+xml").unwrap().starts_with("<svg"));
        assert!(b[1].text("image/png").is_some());
        assert!(b[1].text("text/plain").unwrap().contains("France"));
    }
}
