//! The third figure of `%llm`'s comparison: the energy metered on this machine for a request to
//! a local server ([`crate::llm::local`]), its columns, warnings, explanation and JSON.

use crate::llm::local::{LocalMeasurement, Measured};
use crate::llm::run::RequestResult;
use crate::units::sig3;
use serde_json::{Value, json};

/// The MIME type of the measured figures, unrounded, for tools (the real-model test reads it);
/// front-ends ignore it.
pub const MEASURED_MIME: &str = "application/vnd.carbon-kernel.llm-measured+json";

/// The columns added when a request went to a local server.
pub(super) const HEAD: [&str; 2] = ["measured Wh", "measured gCO₂eq"];

/// A request's measured cells.
pub(super) fn cells(m: Option<&Measured>) -> [String; 2] {
    match m {
        Some(Measured::Metered(lm)) => {
            [sig3(lm.energy_kwh() * 1000.0), sig3(lm.emissions().grams())]
        }
        Some(Measured::Unavailable { .. }) => ["not measured".into(), "—".into()],
        None => ["—".into(), "—".into()],
    }
}

/// Why a request to a local server has no measured figure.
pub(super) fn warning(r: &RequestResult) -> Option<String> {
    match &r.measured {
        Some(Measured::Unavailable { reason, .. }) => {
            Some(format!("{}: no measured figure: {reason}", r.spec))
        }
        _ => None,
    }
}

/// The explanation lines of a metered request.
pub(super) fn explain(r: &RequestResult) -> Vec<String> {
    let Some(lm) = r.measured.as_ref().and_then(Measured::metered) else {
        return Vec::new();
    };
    let m = &lm.measurement;
    let s = &m.setup;
    let mut l = vec![format!(
        "Measured on this machine (the server's own energy, beside the two estimates of a datacenter deployment): {}, its process tree metered for the request's {:.3} s with the sensors of %%carbon; no other client was connected to it during the request (checked {} times).",
        lm.server.describe(),
        m.duration_s,
        lm.checks
    )];
    l.push(match lm.tdp_watts_per_cpu() {
        Some(w) => format!(
            "CPU: {:.2} s of the server's CPU time × {} W per logical CPU ({}, {} logical CPUs) = {} J",
            m.cpu_seconds,
            sig3(w),
            s.cpu.name,
            s.machine.logical_cpus,
            sig3(m.energy.cpu.0)
        ),
        None => format!(
            "CPU: {}, the server's share of the busy CPU time ({:.1} %, {:.2} CPU s) = {} J",
            s.cpu.name,
            m.busy_share * 100.0,
            m.cpu_seconds,
            sig3(m.energy.cpu.0)
        ),
    });
    l.push(format!(
        "RAM: {}, the server's resident memory ({:.0} MiB) = {} J; GPU: {} = {} J",
        s.ram.name,
        m.rss_bytes / (1u64 << 20) as f64,
        sig3(m.energy.ram.0),
        m.gpu_method(),
        sig3(m.energy.gpu.0)
    ));
    l.push(format!(
        "E = (CPU + RAM + GPU) × PUE {} = {} Wh; × {} gCO₂eq/kWh ({}, {}) = {} gCO₂eq",
        lm.pue,
        sig3(lm.energy_kwh() * 1000.0),
        lm.zone.g_per_kwh,
        lm.zone.name,
        lm.zone.source,
        sig3(lm.emissions().grams())
    ));
    l.extend(s.notes.iter().map(|n| format!("Sensor note: {n}")));
    l.extend(
        m.read_errors
            .iter()
            .map(|n| format!("Reading problem: {n}")),
    );
    l
}

fn measurement_json(lm: &LocalMeasurement) -> Value {
    let m = &lm.measurement;
    json!({
        "server": {
            "pids": lm.server.pids,
            "name": lm.server.name,
            "listen": lm.server.listen.to_string(),
        },
        "duration_s": m.duration_s,
        "cpu_seconds": m.cpu_seconds,
        "cpu_j": m.energy.cpu.0,
        "ram_j": m.energy.ram.0,
        "gpu_j": m.energy.gpu.0,
        "cpu_method": m.setup.cpu.name,
        "cpu_measured": m.setup.cpu.kind.measured(),
        "ram_method": m.setup.ram.name,
        "gpu_method": m.gpu_method(),
        "watts_per_cpu_second": lm.tdp_watts_per_cpu(),
        "logical_cpus": m.setup.machine.logical_cpus,
        "pue": lm.pue,
        "energy_kwh": lm.energy_kwh(),
        "emissions_kg": lm.emissions().0,
        "zone": lm.zone.iso3,
        "intensity_g_per_kwh": lm.zone.g_per_kwh,
        "checks": lm.checks,
    })
}

/// Every request's measured figure (or why none), with the two estimates' energies beside it.
pub(super) fn json(results: &[RequestResult]) -> Value {
    Value::Array(
        results
            .iter()
            .filter(|r| r.measured.is_some())
            .map(|r| {
                let (measured, reason) = match &r.measured {
                    Some(Measured::Metered(lm)) => (measurement_json(lm), Value::Null),
                    Some(Measured::Unavailable { reason, .. }) => {
                        (Value::Null, Value::from(reason.clone()))
                    }
                    None => (Value::Null, Value::Null),
                };
                json!({
                    "model": r.spec.to_string(),
                    "measured": measured,
                    "not_measured": reason,
                    "completion_tokens": r.response.as_ref().and_then(|x| x.completion_tokens),
                    "tokens_counted": r.response.as_ref().map(|x| x.tokens_estimated),
                    "latency_s": r.response.as_ref().map(|x| x.latency_s),
                    "seed_energy_kwh": r.seed.as_ref().map(|x| x.energy_kwh),
                    "seed_kg": r.seed.as_ref().map(|x| x.total_kg()),
                    "eco_energy_kwh": r.eco.as_ref().map(|e| json!({"min": e.energy_kwh.min(), "max": e.energy_kwh.max()})),
                    "eco_kg": r.eco.as_ref().map(|e| json!({"min": e.total_kg().min(), "max": e.total_kg().max()})),
                })
            })
            .collect(),
    )
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use crate::llm::client::LlmResponse;
    use crate::llm::footprint::{Tables, eco_estimate, seed_estimate};
    use crate::llm::local::tests::examples;
    use crate::llm::providers::{ModelSpec, ProviderKind};
    use crate::llm::run::RequestResult;
    use crate::report::llm::{
        MEASURED_BAR, MEASURED_MIME, chart_bundle, comparison_bundle, history_bundle,
        summary_bundles, totals,
    };
    use crate::units::sig3;

    fn result(measured: Option<crate::llm::local::Measured>) -> RequestResult {
        let t = Tables::builtin();
        RequestResult {
            spec: ModelSpec {
                provider: ProviderKind::Local,
                model: "smollm2".into(),
            },
            response: Some(LlmResponse {
                text: "hi".into(),
                completion_tokens: Some(12),
                tokens_estimated: true,
                latency_s: 0.8,
                attempts: 1,
                ..Default::default()
            }),
            error: None,
            partial: String::new(),
            seed: Some(seed_estimate(&t, "smollm2", 0.8)),
            eco: Some(eco_estimate(&t, "local", "smollm2", 12, Some(0.8))),
            measured,
        }
    }

    #[test]
    fn the_measured_figure_stands_beside_the_estimates_or_says_why_not() {
        let t = Tables::builtin();
        let (metered, shared) = examples();
        let lm = metered.metered().unwrap().clone();
        let b = comparison_bundle(&[result(Some(metered)), result(Some(shared))], &t);
        let text = b.text("text/plain").unwrap();
        assert!(
            text.contains("measured Wh") && text.contains("measured gCO₂eq"),
            "{text}"
        );
        // 2.5 CPU s × 100 W ÷ n CPUs, plus the RAM share, in Wh
        assert!(
            text.contains(&crate::units::sig3(lm.energy_kwh() * 1000.0)),
            "{text}"
        );
        assert!(
            text.contains("llama-server (pid 40) listening on 127.0.0.1:8000"),
            "{text}"
        );
        assert!(text.contains("s of the server's CPU time × "), "{text}");
        assert!(text.contains("not measured"), "{text}");
        assert!(text.contains("no measured figure: the server"), "{text}");
        // the tokens were counted from the stream, and the report says so
        assert!(text.contains("counted from the stream chunks"), "{text}");
        let html = b.text("text/html").unwrap();
        assert!(html.contains("measured Wh"));
        let json = &b.data[MEASURED_MIME];
        assert_eq!(json[0]["measured"]["server"]["pids"][0], 40);
        assert_eq!(json[0]["tokens_counted"], true);
        assert!(json[1]["measured"].is_null());
        assert!(
            json[1]["not_measured"]
                .as_str()
                .unwrap()
                .contains("other client")
        );
        // without a local request, no measured column and no JSON
        let b = comparison_bundle(&[result(None)], &t);
        assert!(!b.text("text/plain").unwrap().contains("measured Wh"));
        assert!(!b.data.contains_key(MEASURED_MIME));
    }

    /// The measured figure is drawn beside the two estimates in the comparison chart, and
    /// appears in `%llm history` and `%llm summary` (table and both charts).
    #[test]
    fn the_measured_figure_is_charted_and_summed_beside_the_estimates() {
        let (metered, shared) = examples();
        let g = metered.metered().unwrap().emissions().grams();
        assert!(g > 0.0);
        // comparison chart: a third bar for the metered request, none for the other
        let c = chart_bundle(&[result(Some(metered.clone())), result(Some(shared))]).unwrap();
        let plain = c.text("text/plain").unwrap();
        let lines: Vec<&str> = plain.lines().collect();
        assert!(
            lines[1].contains(&format!("{MEASURED_BAR} {}", sig3(g))),
            "{plain}"
        );
        assert!(!lines[2].contains(MEASURED_BAR), "{plain}");
        let svg = c.text("image/svg+xml").unwrap();
        assert!(svg.contains(MEASURED_BAR), "legend: {svg}");
        crate::report::chart_tests::assert_legend_clear("llm-measured", svg);
        let png = crate::report::chart_tests::assert_png(
            "llm-measured",
            &c,
            crate::report::llm::CHART_SCALE,
        );
        crate::report::chart_tests::save("llm-measured", &c, &png);
        // without a metered request the chart has no measured bar or key
        let c = chart_bundle(&[result(None)]).unwrap();
        assert!(!c.text("image/svg+xml").unwrap().contains(MEASURED_BAR));

        // history: the entries as the session writes them
        let rs = [result(Some(metered)), result(None)];
        let es = crate::llm::session::history_entries("s", "2026-01-01T10:00:00Z", "hi", &rs);
        assert_eq!(es[0].measured_g, Some(g));
        assert!(es[0].measured_kwh.unwrap() > 0.0);
        assert_eq!(es[1].measured_g, None);
        let h = history_bundle(&es, "s", "data/llm_history.jsonl");
        let text = h.text("text/plain").unwrap();
        assert!(text.contains("measured gCO₂eq (this machine)"), "{text}");
        assert!(text.contains(&sig3(g)), "{text}");
        let h = history_bundle(&es[1..], "s", "data/llm_history.jsonl");
        assert!(!h.text("text/plain").unwrap().contains("measured"));

        // summary: the measured column sums the metered calls only
        let t = totals(&es);
        assert_eq!((t.calls, t.measured_calls), (2, 1));
        assert_eq!(t.measured_g, g);
        let b = summary_bundles(&es);
        let table = b[0].text("text/plain").unwrap();
        assert!(
            table.contains("measured on this machine (local servers)"),
            "{table}"
        );
        assert!(table.contains("1 of 2 (1 not metered)"), "{table}");
        let per_model = b[1].text("text/plain").unwrap();
        assert!(
            per_model.contains(&format!("measured on this machine {} g", sig3(g))),
            "{per_model}"
        );
        assert!(
            b[1].text("image/svg+xml")
                .unwrap()
                .contains("measured on this machine")
        );
        let per_call = b[2].text("text/plain").unwrap();
        assert_eq!(
            per_call.matches("measured on this machine").count(),
            1,
            "{per_call}"
        );
        for (name, c) in [
            ("llm-summary-measured", &b[1]),
            ("llm-calls-measured", &b[2]),
        ] {
            crate::report::chart_tests::assert_no_exponent(name, c.text("image/svg+xml").unwrap());
        }
        crate::report::chart_tests::assert_legend_clear(
            "llm-summary-measured",
            b[1].text("image/svg+xml").unwrap(),
        );
    }
}
