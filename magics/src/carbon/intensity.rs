//! Carbon intensity of electricity per country (ISO 3166-1 alpha-3), from the shipped table
//! `data/carbon_intensity.csv` (Our World in Data / Ember, CC BY 4.0; see its header), and the
//! countries' codes, names and map shapes from `data/world_map.csv` (Natural Earth 1:110m, public
//! domain, via the npm package world-atlas; ISO codes and names from i18n-iso-countries, MIT; made
//! by `data/gen_world_map.py`). A country can be named by alpha-3 (`FRA`), alpha-2 (`fr`) or
//! English name (`France`), in any case: see [`resolve`].

use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The table, with its source, year and licence in its header comments.
pub const INTENSITY_CSV: &str = include_str!("../../data/carbon_intensity.csv");

/// World average used when no zone is configured: 475 gCO₂eq/kWh (IEA 2019; CodeCarbon's
/// default for an unknown country, codecarbon/core/emissions.py).
pub const WORLD_AVERAGE_G_PER_KWH: f64 = 475.0;

/// Source line shown for table values.
pub const TABLE_SOURCE: &str =
    "Our World in Data / Ember, carbon intensity of electricity generation (CC BY 4.0)";

/// One country of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Country {
    /// ISO 3166-1 alpha-3.
    pub iso3: String,
    /// English name.
    pub name: String,
    /// gCO₂eq/kWh.
    pub g_per_kwh: f64,
    /// Year of the value.
    pub year: u16,
}

/// The intensity applied to a cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    /// ISO3 code, empty for the world average.
    pub iso3: String,
    /// Display name ("France", "World average").
    pub name: String,
    /// gCO₂eq/kWh.
    pub g_per_kwh: f64,
    /// Where the number comes from, with year.
    pub source: String,
    /// True when no country was configured.
    pub is_default: bool,
}

fn table() -> &'static BTreeMap<String, Country> {
    static T: OnceLock<BTreeMap<String, Country>> = OnceLock::new();
    T.get_or_init(|| {
        let mut rdr = csv::ReaderBuilder::new()
            .comment(Some(b'#'))
            .from_reader(INTENSITY_CSV.as_bytes());
        let mut m = BTreeMap::new();
        for rec in rdr.records().flatten() {
            let (Some(iso), Some(name), Some(g), Some(y)) =
                (rec.get(0), rec.get(1), rec.get(2), rec.get(3))
            else {
                continue;
            };
            if let (Ok(g), Ok(year)) = (g.parse::<f64>(), y.parse::<u16>()) {
                m.insert(
                    iso.to_string(),
                    Country {
                        iso3: iso.to_string(),
                        name: name.to_string(),
                        g_per_kwh: g,
                        year,
                    },
                );
            }
        }
        m
    })
}

/// Looks a country up by ISO3 code, alpha-2 code or English name (case-insensitive).
pub fn country(name: &str) -> Option<&'static Country> {
    table().get(resolve(name)?)
}

/// The shapes and codes of `%carbon intensity`'s map, with the source in their header.
pub const WORLD_MAP_CSV: &str = include_str!("../../data/world_map.csv");

/// One country of `data/world_map.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    /// ISO 3166-1 alpha-3 (empty for the two shapes without a code: N. Cyprus, Somaliland).
    pub iso3: String,
    /// ISO 3166-1 alpha-2.
    pub iso2: String,
    /// English names, the first the usual one.
    pub names: Vec<String>,
    /// Where a marker goes (centroid of its largest ring), map pixels; `None` without a shape.
    pub label: Option<(f64, f64)>,
    /// SVG path data in map pixels (see [`map_size`]); empty when Natural Earth has no shape at
    /// 1:110m (small islands, Luxembourg, …).
    pub path: String,
}

/// Every row of `data/world_map.csv`, in file order (by alpha-3).
pub fn shapes() -> &'static [Shape] {
    static S: OnceLock<Vec<Shape>> = OnceLock::new();
    S.get_or_init(|| {
        let mut rdr = csv::ReaderBuilder::new()
            .comment(Some(b'#'))
            .from_reader(WORLD_MAP_CSV.as_bytes());
        rdr.records()
            .flatten()
            .map(|r| {
                let f = |i: usize| r.get(i).unwrap_or_default().to_string();
                let label = match (f(4).parse::<f64>(), f(5).parse::<f64>()) {
                    (Ok(x), Ok(y)) => Some((x, y)),
                    _ => None,
                };
                Shape {
                    iso3: f(0),
                    iso2: f(1),
                    names: f(3).split('|').map(str::to_string).collect(),
                    label,
                    path: f(6),
                }
            })
            .collect()
    })
}

/// The map's size in pixels, from the `# size: W H` line of `data/world_map.csv`.
pub fn map_size() -> (f64, f64) {
    WORLD_MAP_CSV
        .lines()
        .find_map(|l| {
            let mut it = l.strip_prefix("# size:")?.split_whitespace();
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .unwrap_or((800.0, 348.0))
}

/// The ISO 3166-1 alpha-3 code a user's country names: `FRA`, `fr`, `France`, `france` all give
/// `FRA` (alpha-3, then alpha-2, then the English names of both data files; case-insensitive).
pub fn resolve(name: &str) -> Option<&'static str> {
    let n = name.trim();
    if n.is_empty() {
        return None;
    }
    let up = n.to_ascii_uppercase();
    if let Some((k, _)) = table().get_key_value(&up) {
        return Some(k.as_str());
    }
    let shapes = shapes();
    let code = |s: &'static Shape| (!s.iso3.is_empty()).then_some(s.iso3.as_str());
    if let Some(s) = shapes.iter().find(|s| s.iso3 == up) {
        return code(s);
    }
    if n.len() == 2
        && let Some(s) = shapes.iter().find(|s| s.iso2 == up)
    {
        return code(s);
    }
    let lower = n.to_lowercase();
    if let Some(c) = table().values().find(|c| c.name.to_lowercase() == lower) {
        return Some(c.iso3.as_str());
    }
    shapes
        .iter()
        .find(|s| s.names.iter().any(|m| m.to_lowercase() == lower))
        .and_then(code)
}

/// Every country of the intensity table, sorted by name.
pub fn countries() -> Vec<&'static Country> {
    let mut v: Vec<&Country> = table().values().collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// Number of countries in the table.
pub fn count() -> usize {
    table().len()
}

/// The zone for a configured country (None: the world average).
pub fn zone(iso3: Option<&str>) -> Result<Zone, String> {
    match iso3.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(Zone {
            iso3: String::new(),
            name: "World average".into(),
            g_per_kwh: WORLD_AVERAGE_G_PER_KWH,
            source: "world average (IEA 2019, CodeCarbon's default); set CARBON_COUNTRY for your country".into(),
            is_default: true,
        }),
        Some(code) => match country(code) {
            Some(c) => Ok(Zone {
                iso3: c.iso3.clone(),
                name: c.name.clone(),
                g_per_kwh: c.g_per_kwh,
                source: format!("{TABLE_SOURCE}, {}", c.year),
                is_default: false,
            }),
            None => Err(format!(
                "unknown country '{code}': expected an ISO 3166-1 code or English name such as FRA, fr or France (also DEU, USA, GBR, CHN, IND; {} countries known: %carbon intensity lists them)",
                count()
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_match_the_source() {
        // Values of CodeCarbon 3.3.2's global_energy_mix.json (OWID/Ember), read from the wheel.
        for (iso, g, year) in [
            ("FRA", 56.039, 2023),
            ("USA", 369.473, 2023),
            ("DEU", 380.95, 2023),
            ("CHN", 582.317, 2023),
            ("IND", 713.441, 2023),
            ("POL", 661.926, 2023),
            ("NOR", 30.08, 2023),
            ("BRA", 98.348, 2023),
            ("ABW", 561.224, 2022),
        ] {
            let c = country(iso).unwrap();
            assert_eq!((c.g_per_kwh, c.year), (g, year), "{iso}");
        }
        assert_eq!(count(), 213);
        assert_eq!(zone(Some("fra")).unwrap().name, "France");
        let w = zone(None).unwrap();
        assert!(w.is_default && w.g_per_kwh == 475.0);
        let e = zone(Some("XXX")).unwrap_err();
        assert!(e.contains("XXX") && e.contains("FRA"), "{e}");
    }

    #[test]
    fn countries_resolve_by_alpha3_alpha2_and_name() {
        for s in ["FRA", "fra", "fr", "FR", "France", "france", " FRANCE "] {
            assert_eq!(resolve(s), Some("FRA"), "{s}");
        }
        // Names from either data file, and the alternatives i18n-iso-countries lists.
        for (s, iso) in [
            ("United States", "USA"),
            ("united states of america", "USA"),
            ("us", "USA"),
            ("Germany", "DEU"),
            ("de", "DEU"),
            ("UK", "GBR"),
            ("gb", "GBR"),
            ("Russia", "RUS"),
            ("Côte d'Ivoire", "CIV"),
        ] {
            assert_eq!(resolve(s), Some(iso), "{s}");
        }
        for s in ["", "XX", "Atlantis", "world"] {
            assert_eq!(resolve(s), None, "{s}");
        }
        assert_eq!(zone(Some("France")).unwrap().iso3, "FRA");
        assert_eq!(zone(Some("fr")).unwrap().iso3, "FRA");
        assert_eq!(country("de").unwrap().name, "Germany");
    }

    #[test]
    fn map_file_has_shapes_for_most_of_the_table() {
        let with_shape = countries()
            .iter()
            .filter(|c| {
                shapes()
                    .iter()
                    .any(|s| s.iso3 == c.iso3 && !s.path.is_empty())
            })
            .count();
        assert_eq!(with_shape, 171, "countries of the table drawn on the map");
        assert_eq!(map_size(), (800.0, 348.0));
        let fra = shapes().iter().find(|s| s.iso3 == "FRA").unwrap();
        let (x, y) = fra.label.unwrap();
        assert!(
            (390.0..420.0).contains(&x) && (70.0..95.0).contains(&y),
            "{x},{y}"
        );
        let names = countries();
        assert!(names.windows(2).all(|w| w[0].name <= w[1].name));
    }
}
