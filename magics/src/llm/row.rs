//! `emissions.csv` rows of LLM requests: the same file and columns as cells (METHODOLOGY.md §2),
//! one row per request, `kind = llm`.
//!
//! The CodeCarbon columns carry the tokens × parameters (EcoLogits-class) estimate, its midpoint
//! where it is a range: `duration` = measured latency, `gpu_energy` = request energy (kWh, PUE
//! included, as CodeCarbon's energies), `emissions` = usage + embodied (kg), `pue` and
//! `country_*`/`carbon_intensity` = the provider's datacenter assumptions. Our columns add the
//! provider, model, tokens, the range (`emissions_min_kg`/`emissions_max_kg`) and, in `method`,
//! the seed's latency × hardware figure for the same request.
//!
//! A request to a server on this machine that was metered ([`super::local`]) is the exception:
//! its CodeCarbon columns hold the measurement, as a metered cell's do, and `method` says so.

use super::local::{LocalMeasurement, Measured};
use super::run::RequestResult;
use crate::carbon::intensity;
use crate::carbon::record::{EmissionRecord, RowKind, RowStatus};

/// Fills an LLM row on top of `base` (time, ids, project from [`EmissionRecord::base`]).
/// `status`: [`RowStatus::Ok`], [`RowStatus::Error`] or [`RowStatus::Interrupted`].
pub fn llm_record(
    mut base: EmissionRecord,
    r: &RequestResult,
    status: RowStatus,
) -> EmissionRecord {
    base.kind = RowKind::Llm;
    base.status = status;
    base.label = r.spec.to_string();
    base.llm_provider = r.spec.provider.key().into();
    base.llm_model = r.spec.model.clone();
    // The local machine does not serve the request: its CPU/RAM columns would mislead.
    base.cpu_count = 0;
    base.cpu_model = String::new();
    base.ram_total_size = 0.0;
    base.tracking_mode = None;
    base.cpu_utilization_percent = 0.0;
    if let Some(resp) = &r.response {
        base.duration = resp.latency_s;
        base.prompt_tokens = resp.prompt_tokens;
        base.completion_tokens = resp.completion_tokens;
    }
    match (&r.eco, &r.seed) {
        (Some(e), seed) => {
            let zone = intensity::zone(Some(&e.zone))
                .or_else(|_| intensity::zone(None))
                .ok();
            if let Some(z) = zone {
                base.country_name = z.name;
                base.country_iso_code = z.iso3;
            }
            base.pue = e.pue.mid();
            base.carbon_intensity = e.intensity * 1000.0;
            base.intensity_source = e.zone_source.clone();
            base.cpu_energy = 0.0;
            base.ram_energy = 0.0;
            base.gpu_energy = e.energy_kwh.mid();
            base.cpu_power = 0.0;
            base.ram_power = 0.0;
            base.gpu_power = if base.duration > 0.0 {
                base.gpu_energy * 3.6e6 / base.duration
            } else {
                0.0
            };
            base.gpu_count = e.gpus.1 as usize;
            base.gpu_model = "NVIDIA H100 80GB (EcoLogits assumption)".into();
            base.gpu_method = "tokens x parameters (EcoLogits 0.11)".into();
            let total = e.total_kg();
            base.emissions = total.mid();
            base.emissions_min_kg = Some(total.min());
            base.emissions_max_kg = Some(total.max());
            base.method = format!(
                "estimated: tokens x parameters (EcoLogits 0.11, {} output tokens, midpoint of {}..{} kg; {}); seed latency x hardware: {} kg, {} kWh",
                e.tokens,
                total.min(),
                total.max(),
                e.resolution,
                seed.as_ref().map(|s| s.total_kg()).unwrap_or(0.0),
                seed.as_ref().map(|s| s.energy_kwh).unwrap_or(0.0),
            );
        }
        (None, _) => {
            base.emissions = 0.0;
            base.gpu_energy = 0.0;
            base.method = format!(
                "no estimate: the request failed ({})",
                r.error
                    .as_ref()
                    .map(|e| e.message.as_str())
                    .unwrap_or_default()
            );
        }
    }
    match (&r.measured, &r.response) {
        (Some(Measured::Metered(lm)), Some(resp)) => {
            measured_columns(&mut base, lm, resp.latency_s)
        }
        (Some(Measured::Unavailable { reason, .. }), _) => {
            base.method
                .push_str(&format!("; not measured on this machine: {reason}"));
        }
        _ => {}
    }
    base
}

/// A request to a server on this machine, metered: the CodeCarbon columns (energies, powers,
/// emissions, zone, PUE, machine, sensors, tracking mode) hold the measurement, as for a metered
/// cell; `emissions_min_kg`/`emissions_max_kg` keep the tokens × parameters range and `method`
/// says so, with the seed's figure.
fn measured_columns(base: &mut EmissionRecord, lm: &LocalMeasurement, latency_s: f64) {
    let m = &lm.measurement;
    let estimates = std::mem::take(&mut base.method);
    base.country_name = lm.zone.name.clone();
    base.country_iso_code = lm.zone.iso3.clone();
    base.carbon_intensity = lm.zone.g_per_kwh;
    base.intensity_source = lm.zone.source.clone();
    base.pue = lm.pue;
    base.set_measurement(latency_s, m);
    base.process_cpu_seconds = Some(m.cpu_seconds);
    base.method = format!(
        "measured on this machine ({}): the server {}, its process tree, {:.3} s; the energy and emissions columns are this measurement, emissions_min_kg/emissions_max_kg the {}",
        lm.method_word(),
        lm.server.describe(),
        m.duration_s,
        estimates.trim_start_matches("estimated: ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carbon::record::header;
    use crate::llm::client::LlmResponse;
    use crate::llm::footprint::{Tables, eco_estimate, seed_estimate};
    use crate::llm::providers::{ModelSpec, ProviderKind};

    #[test]
    fn row_carries_both_methods_and_the_range() {
        let t = Tables::builtin();
        let r = RequestResult {
            spec: ModelSpec {
                provider: ProviderKind::OpenAi,
                model: "gpt-4o-mini".into(),
            },
            response: Some(LlmResponse {
                latency_s: 5.0,
                prompt_tokens: Some(10),
                completion_tokens: Some(500),
                ..Default::default()
            }),
            error: None,
            partial: String::new(),
            seed: Some(seed_estimate(&t, "gpt-4o-mini", 5.0)),
            eco: Some(eco_estimate(&t, "openai", "gpt-4o-mini", 500, Some(5.0))),
            measured: None,
        };
        let z = intensity::zone(None).unwrap();
        let row = llm_record(EmissionRecord::base("p", "s", &z, 1.0), &r, RowStatus::Ok);
        assert_eq!(row.fields().len(), header().len());
        assert_eq!(row.kind, RowKind::Llm);
        assert_eq!(row.country_iso_code, "USA");
        // llm-footprint.md §1.11: total GWP 1.2714e-5 – 1.5340e-5 kg → midpoint 1.4027e-5 kg
        assert!((row.emissions_min_kg.unwrap() - 1.2714e-5).abs() < 1e-8);
        assert!((row.emissions - 1.4027e-5).abs() < 1e-8);
        // PUE 1.2 (openai) and the USA mix 0.3844 kg/kWh
        assert_eq!(row.pue, 1.2);
        assert!((row.carbon_intensity - 384.4).abs() < 1e-9);
        assert!(row.method.contains("seed latency x hardware"));
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn a_metered_local_request_writes_its_measurement_in_codecarbons_columns() {
        let t = Tables::builtin();
        let (metered, shared) = crate::llm::local::tests::examples();
        let lm = metered.metered().unwrap().clone();
        let r = |measured| RequestResult {
            spec: ModelSpec {
                provider: ProviderKind::Local,
                model: "smollm2".into(),
            },
            response: Some(LlmResponse {
                latency_s: 0.8,
                completion_tokens: Some(12),
                ..Default::default()
            }),
            error: None,
            partial: String::new(),
            seed: Some(seed_estimate(&t, "smollm2", 0.8)),
            eco: Some(eco_estimate(&t, "local", "smollm2", 12, Some(0.8))),
            measured: Some(measured),
        };
        let z = intensity::zone(None).unwrap();
        let row = llm_record(
            EmissionRecord::base("p", "s", &z, 1.0),
            &r(metered),
            RowStatus::Ok,
        );
        // the measurement, PUE 1.5 and France's intensity (the meters' zone), as a cell's row
        assert!((row.energy_consumed() - lm.energy_kwh()).abs() < 1e-15);
        assert!((row.emissions - lm.emissions().0).abs() < 1e-15);
        assert_eq!((row.pue, row.country_iso_code.as_str()), (1.5, "FRA"));
        assert_eq!(
            row.tracking_mode,
            Some(crate::carbon::sensor::Scope::Process)
        );
        assert_eq!(row.process_cpu_seconds, Some(lm.measurement.cpu_seconds));
        assert!(row.cpu_method.contains("TDP"), "{}", row.cpu_method);
        assert!(
            row.method.starts_with("measured on this machine"),
            "{}",
            row.method
        );
        assert!(row.method.contains("tokens x parameters"), "{}", row.method);
        // the estimate's range stays beside it
        let eco = r(shared.clone()).eco.unwrap().total_kg();
        assert_eq!(row.emissions_min_kg, Some(eco.min()));
        // another client: the estimate's row, and why there is no measurement
        let row = llm_record(
            EmissionRecord::base("p", "s", &z, 1.0),
            &r(shared),
            RowStatus::Ok,
        );
        assert!((row.emissions - eco.mid()).abs() < 1e-15);
        assert!(
            row.method
                .contains("not measured on this machine: the server"),
            "{}",
            row.method
        );
        assert_eq!(row.tracking_mode, None);
    }
}
