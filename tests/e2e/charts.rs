//! e2e: charts through the real kernel binary. Each chart is a `display_data` of its own with
//! `image/svg+xml` and `image/png` (what an untrusted notebook, GitHub and nbviewer can show) and
//! no `text/html`; `%carbon intensity` shows the table of zones and the world map; a country is
//! taken by alpha-3, alpha-2 or name.

use crate::harness::{Exec, Kernel, Opts};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

fn kernel(dir: &Path, country: Option<&str>) -> Kernel {
    let mut o = Opts::default()
        .test_runtime()
        .workdir(dir)
        .env("CARBON_NVML_LIB", "none")
        .env_remove("CARBON_COUNTRY")
        .timeout(Duration::from_secs(90));
    if let Some(c) = country {
        o = o.env("CARBON_COUNTRY", c);
    }
    match Kernel::start(o) {
        Ok(k) => k,
        Err(e) => panic!("kernel did not start: {e}"),
    }
}

/// The outputs holding a chart: SVG and PNG (base64 of a PNG file) and no HTML.
fn charts(e: &Exec) -> Vec<&Value> {
    e.displays()
        .into_iter()
        .filter(|d| d["data"]["image/svg+xml"].is_string())
        .inspect(|d| {
            let png = d["data"]["image/png"].as_str().unwrap_or_default();
            // base64 of the PNG signature \x89PNG\r\n\x1a\n
            assert!(png.starts_with("iVBORw0KGgo"), "no PNG beside the SVG: {d}");
            assert!(d["metadata"]["image/png"]["width"].as_u64().unwrap() > 0);
            assert!(
                d["data"]["text/html"].is_null(),
                "HTML would hide the image"
            );
            assert!(d["data"]["text/plain"].is_string());
        })
        .collect()
}

#[test]
fn carbon_intensity_shows_the_table_and_the_map_with_the_zone_marked() {
    let d = tempfile::tempdir().unwrap();
    let mut k = kernel(d.path(), Some("fr"));
    let e = k.execute("%carbon intensity");
    assert_eq!(e.status(), "ok", "{:?}", e.iopub);
    let table = e
        .displays()
        .into_iter()
        .find(|d| d["data"]["text/html"].is_string())
        .expect("the table");
    let text = table["data"]["text/plain"].as_str().unwrap();
    assert!(text.contains("213 countries"), "{text}");
    assert!(text.contains("France ◀ configured"), "{text}");
    for needle in [
        "Afghanistan",
        "Zimbabwe",
        "OWID/Ember",
        "2023",
        "gCO₂eq/kWh",
    ] {
        assert!(text.contains(needle), "{needle} in {text}");
    }
    let html = table["data"]["text/html"].as_str().unwrap();
    assert!(html.find(">Afghanistan<").unwrap() < html.find(">Zimbabwe<").unwrap());
    let maps = charts(&e);
    assert_eq!(maps.len(), 1, "{:?}", e.iopub);
    let svg = maps[0]["data"]["image/svg+xml"].as_str().unwrap();
    assert!(svg.contains("France: 56.0 g/kWh"), "the zone is labelled");
    assert!(svg.contains("Natural Earth"), "the source is named");
}

#[test]
fn countries_are_taken_by_name_alpha2_or_alpha3() {
    let d = tempfile::tempdir().unwrap();
    let mut k = kernel(d.path(), Some("France"));
    let st = k.execute("%carbon status").result_text().unwrap();
    assert!(st.contains("France"), "{st}");
    let c = k
        .execute("%carbon config country=de")
        .result_text()
        .unwrap();
    assert!(c.contains("DEU"), "{c}");
    let st = k.execute("%carbon status").result_text().unwrap();
    assert!(st.contains("Germany"), "{st}");
    let e = k.execute("%%carbon --country fra\nprint hi\n");
    assert_eq!(e.status(), "ok", "{:?}", e.iopub);
    let bad = k.execute("%carbon config country=Atlantis");
    assert_eq!(bad.status(), "error");
    let csv = std::fs::read_to_string(d.path().join("emissions.csv")).unwrap();
    assert!(csv.contains(",France,FRA,") || csv.contains("FRA"), "{csv}");
}

#[test]
fn the_cell_report_and_the_summary_carry_their_charts_as_png() {
    let d = tempfile::tempdir().unwrap();
    let mut k = kernel(d.path(), None);
    let e = k.execute("%%carbon\nprint hi\n");
    assert_eq!(e.status(), "ok", "{:?}", e.iopub);
    assert_eq!(e.stdout(), "hi\n");
    let c = charts(&e);
    assert_eq!(c.len(), 1, "one chart under the report: {:?}", e.iopub);
    assert!(
        c[0]["data"]["text/plain"]
            .as_str()
            .unwrap()
            .starts_with("chart: energy")
    );
    // The report itself (table, explanation) no longer embeds the SVG.
    let report = e
        .displays()
        .into_iter()
        .chain(e.updates())
        .find(|d| d["data"]["text/html"].is_string())
        .expect("the report");
    assert!(
        !report["data"]["text/html"]
            .as_str()
            .unwrap()
            .contains("<svg")
    );

    assert_eq!(k.execute("%%carbon\nprint again\n").status(), "ok");
    let s = k.execute("%carbon summary");
    assert_eq!(s.status(), "ok", "{:?}", s.iopub);
    assert!(s.displays().iter().any(|d| {
        d["data"]["text/plain"]
            .as_str()
            .unwrap_or("")
            .contains("Session summary")
    }));
    let c = charts(&s);
    assert_eq!(c.len(), 1, "{:?}", s.iopub);
    let svg = c[0]["data"]["image/svg+xml"].as_str().unwrap();
    assert!(svg.contains("metered cell") && svg.contains("CO₂eq"));
}
