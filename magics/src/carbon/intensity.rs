//! Carbon intensity of electricity per country (ISO 3166-1 alpha-3), from the shipped table
//! `data/carbon_intensity.csv` (Our World in Data / Ember, CC BY 4.0; see its header).

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

/// Looks a country up by ISO3 code (case-insensitive).
pub fn country(iso3: &str) -> Option<&'static Country> {
    table().get(&iso3.trim().to_ascii_uppercase())
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
                "unknown country code '{code}': expected an ISO 3166-1 alpha-3 code such as FRA, DEU, USA, GBR, CHN, IND ({} countries known; see carbon_intensity.csv)",
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
}
