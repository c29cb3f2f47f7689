//! The electricity zone of an EcoLogits-class estimate: the provider's datacenter location by
//! default (EcoLogits' `PROVIDER_CONFIG_MAP`), or the user's choice — `--zone ISO3|WOR` on the
//! command, else `LLM_ZONE` in `.env` — as EcoLogits' `electricity_mix_zone`. Intensities are
//! EcoLogits' own electricity mixes (generated with the model repository).

use super::footprint::{ProviderDc, Tables};
use super::models::repository;
use crate::config::Settings;

/// Settings key of the default zone of `%llm` estimates.
pub const ZONE_KEY: &str = "LLM_ZONE";

/// A zone the user chose, and where the choice was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneChoice {
    /// ISO 3166-1 alpha-3 code or `WOR`/`EEE`, upper case.
    pub zone: String,
    /// `--zone` or `LLM_ZONE`.
    pub from: String,
}

/// Checks a zone against EcoLogits' electricity mixes (case-insensitive); the error names the
/// accepted form and a few examples.
pub fn parse_zone(s: &str) -> Result<String, String> {
    let z = s.trim().to_ascii_uppercase();
    if repository().mixes.contains_key(&z) {
        Ok(z)
    } else {
        Err(format!(
            "'{s}' is not a zone of EcoLogits' electricity mixes: expected an ISO 3166-1 alpha-3 code or WOR (world), e.g. USA, FRA, SWE, DEU, GBR, CHN, IND ({} zones known)",
            repository().mixes.len()
        ))
    }
}

/// The zone to use: `--zone` (already checked by the parser), else `LLM_ZONE`; a bad `LLM_ZONE`
/// is reported and ignored (the provider's zone then applies).
pub fn choose(cli: Option<&str>, settings: &Settings) -> (Option<ZoneChoice>, Option<String>) {
    if let Some(z) = cli {
        return (
            Some(ZoneChoice {
                zone: z.to_ascii_uppercase(),
                from: "--zone".into(),
            }),
            None,
        );
    }
    match settings
        .get(ZONE_KEY)
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => (None, None),
        Some(v) => match parse_zone(v) {
            Ok(zone) => (
                Some(ZoneChoice {
                    zone,
                    from: ZONE_KEY.into(),
                }),
                None,
            ),
            Err(e) => (
                None,
                Some(format!("{ZONE_KEY}: {e}; the provider's zone is used")),
            ),
        },
    }
}

/// The zone, its intensity (kgCO₂eq/kWh), the sentence naming both and their sources, and
/// warnings, for a request whose datacenter is `dc`.
pub fn apply(
    t: &Tables,
    dc: &ProviderDc,
    choice: Option<&ZoneChoice>,
) -> (String, f64, String, Vec<String>) {
    let repo = repository();
    let mut warnings = Vec::new();
    let (zone, why) = match choice {
        Some(c) => (c.zone.clone(), format!("chosen with {}", c.from)),
        None => (
            dc.zone.clone(),
            format!("the provider's datacenter location ({})", dc.source),
        ),
    };
    let (zone, intensity) = match t.mixes.get(&zone) {
        Some(v) => (zone, *v),
        None => {
            warnings.push(format!("zone {zone} unknown: world mix used"));
            (
                "WOR".to_string(),
                t.mixes.get("WOR").copied().unwrap_or(0.45829),
            )
        }
    };
    let source = if repo.mixes.get(&zone) == Some(&intensity) {
        repo.mix_source.clone()
    } else {
        "LLM_MODELS_FILE (the user's electricity mix)".to_string()
    };
    let sentence = format!("Zone {zone}, {why}: {intensity} kgCO₂eq/kWh from {source}.");
    (zone, intensity, sentence, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_choose() {
        assert_eq!(parse_zone("fra").unwrap(), "FRA");
        assert_eq!(parse_zone("WOR").unwrap(), "WOR");
        let e = parse_zone("XYZ").unwrap_err();
        assert!(e.contains("ISO 3166-1 alpha-3") && e.contains("215"), "{e}");
        let mut s = Settings::empty();
        assert_eq!(choose(None, &s), (None, None));
        s.set(ZONE_KEY, "swe");
        let (c, w) = choose(None, &s);
        assert_eq!(c.unwrap().zone, "SWE");
        assert!(w.is_none());
        let (c, _) = choose(Some("FRA"), &s);
        assert_eq!(c.unwrap().from, "--zone");
        s.set(ZONE_KEY, "Mars");
        let (c, w) = choose(None, &s);
        assert!(c.is_none());
        assert!(w.unwrap().contains("LLM_ZONE"));
    }

    #[test]
    fn apply_names_zone_intensity_and_source() {
        let t = Tables::builtin();
        let dc = &t.providers["openai"];
        let (z, i, s, w) = apply(&t, dc, None);
        assert_eq!((z.as_str(), i), ("USA", 0.3844));
        assert!(
            s.contains("datacenter location") && s.contains("electricity_mixes.json"),
            "{s}"
        );
        assert!(w.is_empty());
        let c = ZoneChoice {
            zone: "FRA".into(),
            from: "--zone".into(),
        };
        let (z, i, s, _) = apply(&t, dc, Some(&c));
        assert_eq!((z.as_str(), i), ("FRA", 0.04144));
        assert!(s.contains("chosen with --zone"), "{s}");
    }
}
