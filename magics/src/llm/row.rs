//! `emissions.csv` rows of LLM requests: the same file and columns as cells (METHODOLOGY.md §2),
//! one row per request, `kind = llm`.
//!
//! The CodeCarbon columns carry the tokens × parameters (EcoLogits-class) estimate, its midpoint
//! where it is a range: `duration` = measured latency, `gpu_energy` = request energy (kWh, PUE
//! included, as CodeCarbon's energies), `emissions` = usage + embodied (kg), `pue` and
//! `country_*`/`carbon_intensity` = the provider's datacenter assumptions. Our columns add the
//! provider, model, tokens, the range (`emissions_min_kg`/`emissions_max_kg`) and, in `method`,
//! the seed's latency × hardware figure for the same request.

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
    base
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
}
