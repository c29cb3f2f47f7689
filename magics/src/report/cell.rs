//! What the user sees: the report under a metered cell (HTML table + small SVG + text/plain,
//! everyday equivalents with sources, a collapsed "how this was computed" with this cell's
//! numbers), the live display while it runs, `%carbon summary` and `%carbon csv`.

use super::chart::{PALETTE, chart_err, svg, tick};
use super::figure::{Anchor, Figure, Rgb};
use super::{esc, png};
use crate::MimeBundle;
use crate::carbon::hardware::TdpSource;
use crate::carbon::meter::{LiveSample, Measurement, Parts};
use crate::carbon::record::{Column, EmissionRecord, RowKind, RowLanguage};
use crate::carbon::sensor::{Scope, SensorKind};
use crate::carbon::sink::CsvView;
use crate::units::{
    Joules, KgCo2, energy_axis_j, fmt_co2, fmt_duration, fmt_energy, fmt_length, mass_axis_g,
    nice_ticks, sig3,
};
use plotters::prelude::*;

/// One everyday equivalent: how much of an activity emits (or uses) as much as the cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Equivalent {
    /// e.g. "driven by a petrol car"
    pub what: &'static str,
    /// amount with unit, e.g. "1.2 m"
    pub amount: String,
    /// where the factor comes from
    pub source: &'static str,
}

/// Car: 120 gCO₂/km, the seed app's factor (TelecomCarbon `CodeCarbon` page; close to the EEA's
/// average for new cars sold in the EU in 2019, 122 g/km NEDC).
pub const CAR_G_PER_KM: f64 = 120.0;
/// Smartphone: 10 Wh per full charge, the seed app's factor (a 2,600 mAh × 3.85 V battery).
pub const PHONE_WH_PER_CHARGE: f64 = 10.0;
/// LED bulb: 10 W, the seed app's factor (a 60 W-equivalent LED bulb).
pub const LED_W: f64 = 10.0;
/// Laptop: 30 W in use, the seed app's factor.
pub const LAPTOP_W: f64 = 30.0;

/// Shortest car trip worth naming: 100 m (below it, "0.0003 km by car" means nothing to a reader).
const CAR_MIN_M: f64 = 100.0;
/// Fewest smartphone charges worth naming: a tenth of a charge (1 Wh).
const PHONE_MIN_CHARGES: f64 = 0.1;
/// Shortest laptop time worth naming: one second (a cell's millijoules are LED-bulb milliseconds,
/// which say the same thing once).
const LAPTOP_MIN_S: f64 = 1.0;

/// Everyday equivalents of an energy (PUE included) and its emissions, chosen by magnitude: an
/// equivalent is named only when its amount is one a person pictures (a car trip of at least
/// 100 m, at least a tenth of a smartphone charge, at least a second of a laptop), so a cell reads
/// "4 ms of a 10 W LED bulb" and a semester "12 km driven by an average car · 30 smartphone
/// charges · …" instead of `0.00000335 smartphone charges`. The LED bulb's time is always named
/// (it reads well from milliseconds to days), so there is always one.
pub fn equivalents(energy: Joules, co2: KgCo2) -> Vec<Equivalent> {
    let wh = energy.0 / 3600.0;
    let car_m = co2.grams() / CAR_G_PER_KM * 1000.0;
    let charges = wh / PHONE_WH_PER_CHARGE;
    let laptop_s = energy.0 / LAPTOP_W;
    let mut out = Vec::new();
    if car_m >= CAR_MIN_M {
        out.push(Equivalent {
            what: "driven by an average car",
            amount: fmt_length(car_m),
            source: "120 gCO₂/km (seed app; EEA new-car average 2019 ≈ 122 g/km)",
        });
    }
    if charges >= PHONE_MIN_CHARGES {
        out.push(Equivalent {
            what: "smartphone charges",
            amount: sig3(charges),
            source: "10 Wh per charge (seed app)",
        });
    }
    out.push(Equivalent {
        what: "of a 10 W LED bulb",
        amount: fmt_duration(energy.0 / LED_W),
        source: "10 W LED (seed app; a 60 W-equivalent LED bulb draws 8–10 W)",
    });
    if laptop_s >= LAPTOP_MIN_S {
        out.push(Equivalent {
            what: "of a laptop in use",
            amount: fmt_duration(laptop_s),
            source: "30 W laptop (seed app)",
        });
    }
    out
}

/// One metered run as the report needs it.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The row (emissions, zone, PUE, status).
    pub rec: EmissionRecord,
    /// The measurement (sensors, CPU seconds, shares).
    pub meas: Measurement,
}

fn parts_pue(m: &Measurement, pue: f64) -> Parts {
    m.energy.scaled(pue)
}

/// "How this was computed", with this run's numbers (text lines).
pub fn explanation(r: &RunReport) -> Vec<String> {
    let m = &r.meas;
    let pue = r.rec.pue;
    let mut out = Vec::new();
    let n = m.setup.machine.logical_cpus;
    match &m.setup.cpu.kind {
        SensorKind::RaplPackage { zones } => match m.scope {
            Scope::Machine => out.push(format!(
                "CPU (measured): Σ Δenergy_uj of {zones} RAPL package(s), wrap-arounds corrected = {}",
                fmt_energy(m.energy.cpu)
            )),
            Scope::Process => out.push(format!(
                "CPU (measured): RAPL packages {} × share of busy CPU time ({:.2} s of the process tree ÷ {:.2} s busy on the machine = {:.1} %) = {}",
                fmt_energy(m.whole.cpu),
                m.cpu_seconds,
                if m.busy_share > 0.0 { m.cpu_seconds / m.busy_share } else { 0.0 },
                m.busy_share * 100.0,
                fmt_energy(m.energy.cpu)
            )),
        },
        SensorKind::TdpModel { tdp_w, source } => {
            let src = match source {
                TdpSource::User => "your CARBON_CPU_TDP".to_string(),
                TdpSource::Table => format!(
                    "TDP of '{}' in the CPU table (CodeCarbon's cpu_power.csv, Intel/AMD specs)",
                    m.setup.machine.cpu_model
                ),
                TdpSource::PerThreadDefault => format!(
                    "'{}' is not in the CPU table: 4 W × {n} threads (CodeCarbon's default)",
                    m.setup.machine.cpu_model
                ),
            };
            match m.scope {
                Scope::Process => out.push(format!(
                    "CPU (estimated): TDP × CPU time ÷ logical CPUs = {tdp_w:.1} W × {:.2} s ÷ {n} = {} ({src})",
                    m.cpu_seconds,
                    fmt_energy(m.energy.cpu)
                )),
                Scope::Machine => out.push(format!(
                    "CPU (estimated): TDP × (0.1 + 0.9 × load³) × duration = {tdp_w:.1} W × (0.1 + 0.9 × {:.2}³) × {:.2} s = {} (CodeCarbon ≥ 3.0.3's load curve; {src})",
                    m.machine_load,
                    m.duration_s,
                    fmt_energy(m.energy.cpu)
                )),
            }
        }
        _ => {}
    }
    match &m.setup.ram.kind {
        SensorKind::RaplDram { .. } => out.push(format!(
            "RAM (measured): RAPL dram {}{} = {}",
            fmt_energy(m.whole.ram),
            if m.scope == Scope::Process {
                format!(" × busy share {:.1} %", m.busy_share * 100.0)
            } else {
                String::new()
            },
            fmt_energy(m.energy.ram)
        )),
        SensorKind::RamModel { watts } => match m.scope {
            Scope::Process => out.push(format!(
                "RAM (estimated): machine RAM power × resident memory share × duration = {watts:.1} W × {:.3} % ({:.1} MiB of {:.1} GiB) × {:.2} s = {} (5 W per DIMM, CodeCarbon 3.x's model; the share is ours)",
                m.rss_frac * 100.0,
                m.rss_bytes / (1u64 << 20) as f64,
                m.setup.machine.mem_total as f64 / (1u64 << 30) as f64,
                m.duration_s,
                fmt_energy(m.energy.ram)
            )),
            Scope::Machine => out.push(format!(
                "RAM (estimated): machine RAM power × duration = {watts:.1} W × {:.2} s = {} (5 W per DIMM, CodeCarbon 3.x's model)",
                m.duration_s,
                fmt_energy(m.energy.ram)
            )),
        },
        _ => {}
    }
    match (&m.setup.gpu.kind, &m.gpu_use) {
        (SensorKind::Nvml { .. }, Some(g)) => out.push(format!(
            "GPU (measured): {} = {}",
            g.explain(&m.setup.gpu_model),
            fmt_energy(m.energy.gpu)
        )),
        (SensorKind::Nvml { devices }, None) => out.push(format!(
            "GPU (measured): Δ NVML total energy of {devices} device(s), whole devices ({}) = {}",
            m.setup.gpu_model,
            fmt_energy(m.energy.gpu)
        )),
        _ => out.push("GPU: no NVIDIA GPU with an energy counter, 0 J".into()),
    }
    if let Some(c) = &m.compile {
        out.push(format!(
            "Compile vs run: compiling {} , running {} (phases marked by the runtime)",
            fmt_energy(c.total()),
            fmt_energy(m.run.total())
        ));
    }
    let e = m.energy.total();
    out.push(format!(
        "Emissions = energy × PUE × intensity = {} × {pue} × {} gCO₂eq/kWh = {}",
        fmt_energy(e),
        r.rec.carbon_intensity,
        fmt_co2(KgCo2(r.rec.emissions))
    ));
    out.push(format!(
        "Intensity: {} ({})",
        r.rec.country_name, r.rec.intensity_source
    ));
    out.push(format!(
        "Counters are read at the cell's start and end (and each second for long cells); CPU times tick every {:.0} ms, so cells shorter than that may show 0 CPU time.",
        m.setup.tick_secs * 1000.0
    ));
    for n in m.setup.notes.iter().chain(m.read_errors.iter()) {
        out.push(format!("Note: {n}"));
    }
    out
}

/// The report's horizontal bar chart, shape by shape: a few `<rect>`/`<text>` elements (about
/// 1 KB of SVG) instead of plotters' mesh, axes and per-glyph attributes (about 8 KB, most of the
/// report message), and a PNG drawn from the same shapes without an SVG parser (see
/// [`super::figure`]). Every metered cell sends it through iopub, so its size and build time
/// are part of what `%%carbon` adds to a cell's round trip (issue 9, performance).
///
/// `items` are in joules; the axis takes the unit of the largest (mJ, J, Wh) and round ticks, and
/// each bar ends with its value, so no number needs an exponent.
fn bars_figure(items: &[(&str, f64)]) -> Figure {
    const W: f32 = 380.0;
    const LEFT: f32 = 66.0; // label column
    const RIGHT: f32 = 16.0;
    const TOP: f32 = 24.0; // title
    const ROW: f32 = 24.0;
    let max = items.iter().map(|(_, v)| *v).fold(0.0, f64::max);
    let (per, unit) = energy_axis_j(max);
    let ticks = nice_ticks(max / per, 4);
    let top = ticks.last().copied().unwrap_or(1.0);
    let height = TOP + ROW * items.len() as f32 + 22.0;
    let plot_w = W - LEFT - RIGHT;
    let axis_y = TOP + ROW * items.len() as f32;
    let mut f = Figure::new(W, height, 11.0);
    f.text(
        LEFT + plot_w / 2.0,
        15.0,
        Some(13.0),
        Anchor::Middle,
        Rgb::BLACK,
        format!("energy ({unit})"),
    );
    for (k, t) in ticks.iter().enumerate() {
        let x = LEFT + plot_w * (t / top) as f32;
        let grid = if k == 0 {
            Rgb::BLACK
        } else {
            Rgb(0xe4, 0xe4, 0xe4)
        };
        f.line(x, TOP, x, axis_y + 3.0, grid);
        f.text(x, axis_y + 15.0, None, Anchor::Middle, Rgb::BLACK, tick(*t));
    }
    // each bar's name in the label column, left of the axis (no bar or value reaches it)
    for (i, (label, _)) in items.iter().enumerate() {
        let y = TOP + ROW * i as f32;
        f.text(
            LEFT - 4.0,
            y + ROW / 2.0 + 4.0,
            None,
            Anchor::End,
            Rgb::BLACK,
            *label,
        );
    }
    // what the next cell with the same unit, ticks and bars shares, drawn under the bars
    f.backdrop();
    for (i, (label, v)) in items.iter().enumerate() {
        let y = TOP + ROW * i as f32;
        let w = (v.max(0.0) / per / top) as f32 * plot_w;
        let c = PALETTE[i % 8];
        let value = sig3(v / per);
        // The value sits right of its bar, or inside it (white) when the bar reaches the end.
        let inside = w > plot_w - 8.0 * value.len() as f32 - 6.0;
        let (tx, anchor, fill) = if inside {
            (LEFT + w - 4.0, Anchor::End, Rgb::WHITE)
        } else {
            (LEFT + w + 4.0, Anchor::Start, Rgb::BLACK)
        };
        // A zero bar (GPU 0 J) gets no rect: an empty one draws nothing (and resvg, which drew
        // this chart's PNG before, logged a warning for each).
        if w >= 0.05 {
            f.rect(
                LEFT,
                y + 4.0,
                w,
                ROW - 8.0,
                Rgb(c.0, c.1, c.2),
                Some(format!("{label} {value} {unit}")),
            );
        }
        f.text(tx, y + ROW / 2.0 + 4.0, None, anchor, fill, value);
    }
    f
}

/// The report's chart as its own output (SVG + PNG + text, see [`super::png`]): energy of CPU,
/// RAM and GPU (and compile / run) with PUE, mean over the runs. `None` without a run.
pub fn cell_chart(runs: &[RunReport]) -> Option<MimeBundle> {
    let (items, plain) = cell_chart_items(runs)?;
    // 1 PNG pixel per SVG pixel: every metered cell pays for this PNG before the cell ends; the
    // sharper SVG is what trusted front-ends show anyway.
    Some(bars_figure(&items).bundle(plain, 1.0))
}

/// The figure of [`cell_chart`], for the measurement in `chart_tests`.
#[cfg(test)]
pub(super) fn cell_figure(runs: &[RunReport]) -> Option<Figure> {
    cell_chart_items(runs).map(|(items, _)| bars_figure(&items))
}

/// The bars of [`cell_chart`] (name, joules) and the text that says what they show.
fn cell_chart_items(runs: &[RunReport]) -> Option<(Vec<(&'static str, f64)>, String)> {
    let first = runs.first()?;
    let pue = first.rec.pue;
    let n = runs.len() as f64;
    let mut sum = Parts::default();
    let mut compile: Option<Parts> = None;
    for r in runs {
        let p = parts_pue(&r.meas, pue);
        sum.cpu += p.cpu;
        sum.ram += p.ram;
        sum.gpu += p.gpu;
        if let Some(c) = r.meas.compile {
            let a = compile.get_or_insert_with(Parts::default);
            a.cpu += c.cpu;
            a.ram += c.ram;
            a.gpu += c.gpu;
        }
    }
    let mean = sum.scaled(1.0 / n);
    let mut items = vec![
        ("CPU", mean.cpu.0),
        ("RAM", mean.ram.0),
        ("GPU", mean.gpu.0),
    ];
    if let Some(c) = compile {
        let c = c.scaled(pue / n).total();
        items.push(("compile", c.0));
        items.push(("run", (mean.total() - c).0));
    }
    let plain = format!(
        "chart: energy with PUE{}: {}",
        if runs.len() > 1 {
            ", mean of the runs"
        } else {
            ""
        },
        items
            .iter()
            .map(|(k, v)| format!("{k} {}", fmt_energy(Joules(*v))))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Some((items, plain))
}

/// The final report of one or several runs (`--repeat`): `where_` says where the row(s) went.
pub fn cell_report(runs: &[RunReport], where_: &str) -> MimeBundle {
    cell_report_with_startup(runs, None, where_)
}

/// Duration, energy (PUE included) and emissions of one run, formatted.
fn run_figures(r: &RunReport) -> [String; 3] {
    [
        fmt_duration(r.meas.duration_s),
        fmt_energy(parts_pue(&r.meas, r.rec.pue).total()),
        fmt_co2(KgCo2(r.rec.emissions)),
    ]
}

/// [`cell_report`], with the start of the language's runtime that this cell triggered (its own
/// row) shown as a line of its own and added to the cell's figures, so the first cell's report
/// covers its whole wall time. Several runs (`--repeat`) show their mean ± sample standard
/// deviation in the headline and each run in a table below it.
pub fn cell_report_with_startup(
    runs: &[RunReport],
    startup: Option<&RunReport>,
    where_: &str,
) -> MimeBundle {
    let Some(first) = runs.first() else {
        // The runtime failed to start: its start-up is all there is to show.
        return match startup {
            Some(s) => cell_report_with_startup(std::slice::from_ref(s), None, where_),
            None => MimeBundle::plain("no run"),
        };
    };
    let pue = first.rec.pue;
    let n = runs.len() as f64;
    let totals: Vec<Parts> = runs.iter().map(|r| parts_pue(&r.meas, pue)).collect();
    let mean = |f: &dyn Fn(&RunReport, &Parts) -> f64| {
        runs.iter().zip(&totals).map(|(r, p)| f(r, p)).sum::<f64>() / n
    };
    let std = |f: &dyn Fn(&RunReport, &Parts) -> f64| {
        if runs.len() < 2 {
            return 0.0;
        }
        let m = mean(f);
        (runs
            .iter()
            .zip(&totals)
            .map(|(r, p)| (f(r, p) - m).powi(2))
            .sum::<f64>()
            / (n - 1.0))
            .sqrt()
    };
    let dur = mean(&|r, _| r.meas.duration_s);
    let cpu = Joules(mean(&|_, p| p.cpu.0));
    let ram = Joules(mean(&|_, p| p.ram.0));
    let gpu = Joules(mean(&|_, p| p.gpu.0));
    let tot = cpu + ram + gpu;
    let co2 = KgCo2(mean(&|r, _| r.rec.emissions));
    let spread = |f: &dyn Fn(&RunReport, &Parts) -> f64, fmt: &dyn Fn(f64) -> String| {
        if runs.len() > 1 {
            format!(
                " ± {} (mean ± sample standard deviation of {} runs)",
                fmt(std(f)),
                runs.len()
            )
        } else {
            String::new()
        }
    };
    let dur_s = format!(
        "{}{}",
        fmt_duration(dur),
        spread(&|r, _| r.meas.duration_s, &fmt_duration)
    );
    let energy_s = format!(
        "{}{}",
        fmt_energy(tot),
        spread(&|_, p| p.total().0, &|x| fmt_energy(Joules(x)))
    );
    let co2_s = format!(
        "{}{}",
        fmt_co2(co2),
        spread(&|r, _| r.rec.emissions, &|x| fmt_co2(KgCo2(x)))
    );
    let statuses: Vec<&str> = runs.iter().map(|r| r.rec.status.as_str()).collect();
    let status = if statuses.iter().all(|s| *s == statuses[0]) {
        statuses[0].to_string()
    } else {
        statuses.join(", ")
    };
    let zone = format!(
        "{} — {} gCO₂eq/kWh{}",
        first.rec.country_name,
        first.rec.carbon_intensity,
        if first.rec.country_iso_code.is_empty() {
            " (world average, default: set CARBON_COUNTRY)"
        } else {
            ""
        }
    );
    let m = &first.meas;
    let method = format!(
        "{} — CPU: {}; RAM: {}; GPU: {}; {} scope",
        if m.setup.cpu.kind.measured() {
            "measured"
        } else {
            "estimated"
        },
        m.setup.cpu.name,
        m.setup.ram.name,
        m.gpu_method(),
        m.scope.name()
    );
    let split = format!(
        "CPU {} · RAM {} · GPU {}",
        fmt_energy(cpu),
        fmt_energy(ram),
        fmt_energy(gpu)
    );
    let compile = runs
        .iter()
        .filter_map(|r| r.meas.compile)
        .fold(None, |acc: Option<Parts>, c| {
            let mut a = acc.unwrap_or_default();
            a.cpu += c.cpu;
            a.ram += c.ram;
            a.gpu += c.gpu;
            Some(a)
        });
    let compile_s = compile.map(|c| {
        let c = c.scaled(pue / n);
        format!(
            "compile {} · run {}",
            fmt_energy(c.total()),
            fmt_energy(tot - c.total())
        )
    });
    let eq = equivalents(tot, co2);
    let lang = if first.rec.language == RowLanguage::None {
        String::new()
    } else {
        format!(" · {}", first.rec.language)
    };
    let label = if first.rec.label.is_empty() {
        String::new()
    } else {
        format!(" · {}", first.rec.label)
    };

    // text/plain
    let mut t = format!("⚡ %%carbon{lang}{label} · {status}\n");
    t.push_str(&format!(
        "  duration   {dur_s}\n  energy     {energy_s}\n             {split}\n"
    ));
    if let Some(c) = &compile_s {
        t.push_str(&format!("             {c}\n"));
    }
    // The start-up preceded the first run: "with start-up" is that run's wall time and cost.
    let startup_s = startup.map(|s| {
        let [d, e, c] = run_figures(s);
        let with = runs.first().map(|r| {
            let both = [s, r];
            let sum = |f: &dyn Fn(&RunReport) -> f64| both.iter().map(|x| f(x)).sum::<f64>();
            format!(
                "{} · {} · {}",
                fmt_duration(sum(&|x| x.meas.duration_s)),
                fmt_energy(Joules(sum(&|x| parts_pue(&x.meas, x.rec.pue).total().0))),
                fmt_co2(KgCo2(sum(&|x| x.rec.emissions)))
            )
        });
        (
            format!(
                "{d} · {e} · {c} (the {} runtime started for this cell; its own row)",
                s.rec.language
            ),
            with,
        )
    });
    let with_key = if runs.len() > 1 {
        "run 1 + start-up"
    } else {
        "with start-up"
    };
    if let Some((s, with)) = &startup_s {
        t.push_str(&format!("  start-up   {s}\n"));
        if let Some(w) = with {
            t.push_str(&format!("  {with_key} {w}\n"));
        }
    }
    let runs_table: Vec<[String; 4]> = if runs.len() > 1 {
        runs.iter()
            .enumerate()
            .map(|(i, r)| {
                let [d, e, c] = run_figures(r);
                [format!("run {}", i + 1), d, e, c]
            })
            .collect()
    } else {
        Vec::new()
    };
    if !runs_table.is_empty() {
        t.push_str("  runs (the mean above is their average):\n");
        for [k, d, e, c] in &runs_table {
            t.push_str(&format!("    {k:7} {d:>10} {e:>10} {c:>16}\n"));
        }
    }
    t.push_str(&format!(
        "  emissions  {co2_s}\n  zone       {zone}\n  PUE        {pue}\n  method     {method}\n"
    ));
    t.push_str("  ≈ ");
    t.push_str(
        &eq.iter()
            .map(|e| format!("{} {}", e.amount, e.what))
            .collect::<Vec<_>>()
            .join(" · "),
    );
    t.push('\n');
    t.push_str(&format!("  {where_}\n"));
    let expl = explanation(first);
    t.push_str("  how this was computed:\n");
    for l in &expl {
        t.push_str(&format!("    {l}\n"));
    }

    // text/html
    let row = |k: &str, v: &str| {
        format!(
            "<tr><th style=\"text-align:left;padding-right:1em\">{k}</th><td style=\"text-align:left\">{v}</td></tr>"
        )
    };
    let mut h = String::from(
        "<div class=\"carbon-report\" style=\"font-family:sans-serif;font-size:13px\">",
    );
    h.push_str(&format!(
        "<div style=\"font-weight:bold;margin-bottom:4px\">⚡ %%carbon{} · {}</div>",
        esc(&format!("{lang}{label}")),
        esc(&status)
    ));
    h.push_str(
        "<div style=\"display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start\"><table>",
    );
    h.push_str(&row("duration", &esc(&dur_s)));
    h.push_str(&row(
        "energy",
        &format!("{}<br><small>{}</small>", esc(&energy_s), esc(&split)),
    ));
    if let Some(c) = &compile_s {
        h.push_str(&row("compile / run", &esc(c)));
    }
    if let Some((s, with)) = &startup_s {
        h.push_str(&row("start-up", &esc(s)));
        if let Some(w) = with {
            h.push_str(&row(with_key, &esc(w)));
        }
    }
    if !runs_table.is_empty() {
        let mut tb = String::from(
            "<table style=\"font-size:12px\"><tr><th></th><th>duration</th><th>energy</th><th>emissions</th></tr>",
        );
        for cells in &runs_table {
            tb.push_str("<tr>");
            for c in cells {
                tb.push_str(&format!("<td>{}</td>", esc(c)));
            }
            tb.push_str("</tr>");
        }
        tb.push_str("</table><small>the mean above is their average</small>");
        h.push_str(&row("runs", &tb));
    }
    h.push_str(&row("emissions", &format!("<b>{}</b>", esc(&co2_s))));
    h.push_str(&row("zone", &esc(&zone)));
    h.push_str(&row("PUE", &pue.to_string()));
    h.push_str(&row("method", &esc(&method)));
    h.push_str(&row(
        "equivalents",
        &eq.iter()
            .map(|e| {
                format!(
                    "{} {} <small>({})</small>",
                    esc(&e.amount),
                    esc(e.what),
                    esc(e.source)
                )
            })
            .collect::<Vec<_>>()
            .join("<br>"),
    ));
    h.push_str(&row("record", &esc(where_)));
    h.push_str("</table>");
    // The chart is its own output (cell_chart): an untrusted notebook drops SVG inside HTML.
    h.push_str("</div>");
    h.push_str("<details><summary>How this was computed</summary><ul>");
    for l in &expl {
        h.push_str(&format!("<li>{}</li>", esc(l)));
    }
    h.push_str("</ul></details></div>");
    MimeBundle::plain(t).with("text/html", h)
}

/// The live display while a cell runs.
pub fn live(s: &LiveSample, pue: f64, g_per_kwh: f64) -> MimeBundle {
    let e = s.energy.total() * pue;
    let text = format!(
        "⏱ running {:.0} s · {} so far ({}) · {:.1} W now",
        s.elapsed_s,
        fmt_energy(e),
        fmt_co2(KgCo2::of(e, g_per_kwh)),
        s.power.0 * pue
    );
    let html = format!(
        "<div style=\"font-family:sans-serif;font-size:13px;color:#555\">{}</div>",
        esc(&text)
    );
    MimeBundle::plain(text).with("text/html", html)
}

/// One metered cell of the session, for `%carbon summary`.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionEntry {
    /// A cell (or command) run, or a runtime's start-up.
    pub kind: RowKind,
    /// 1-based run of `--repeat` (`None` without it).
    pub repeat_index: Option<u32>,
    /// Language or `command`.
    pub language: String,
    /// Label.
    pub label: String,
    /// Energy with PUE.
    pub parts: Parts,
    /// kg.
    pub emissions: f64,
    /// s.
    pub duration: f64,
}

/// How many of each thing a set of session entries holds: a cell run three times with
/// `--repeat 3` is one cell and three runs; `%carbon exec`/`run` commands and runtime start-ups
/// are counted apart from cells.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Distinct metered cells (the first run of each).
    pub cells: usize,
    /// Metered runs of cells (every `--repeat` run).
    pub runs: usize,
    /// `%carbon exec` / `%carbon run` commands.
    pub commands: usize,
    /// Runtime start-ups (JVM and JShell, evcxr's context).
    pub startups: usize,
}

impl Counts {
    /// Counts `entries`.
    pub fn of<'a>(entries: impl IntoIterator<Item = &'a SessionEntry>) -> Self {
        let mut c = Counts::default();
        for e in entries {
            if e.kind == RowKind::Startup {
                c.startups += 1;
            } else if e.language == RowLanguage::Command.as_str() {
                c.commands += 1;
            } else {
                c.runs += 1;
                if e.repeat_index.unwrap_or(1) <= 1 {
                    c.cells += 1;
                }
            }
        }
        c
    }

    /// In words, naming each count: `2 cells in 4 runs, 1 command, 1 runtime start-up`
    /// (zero counts after the cells are left out).
    pub fn describe(&self) -> String {
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let mut parts = vec![format!(
            "{} in {}",
            plural(self.cells, "cell", "cells"),
            plural(self.runs, "run", "runs")
        )];
        if self.commands > 0 {
            parts.push(plural(self.commands, "command", "commands"));
        }
        if self.startups > 0 {
            parts.push(plural(
                self.startups,
                "runtime start-up",
                "runtime start-ups",
            ));
        }
        parts.join(", ")
    }
}

/// `%carbon summary`: totals by language and a chart of every metered cell.
pub fn summary(entries: &[SessionEntry]) -> MimeBundle {
    if entries.is_empty() {
        return MimeBundle::plain(
            "No metered cell in this session yet: use %%carbon or %carbon on.",
        );
    }
    // Start-ups get lines of their own, so a language's line is its cells only.
    let key = |e: &SessionEntry| {
        if e.kind == RowKind::Startup {
            format!("{} start-up", e.language)
        } else {
            e.language.clone()
        }
    };
    let mut langs: Vec<String> = entries.iter().map(key).collect();
    langs.sort();
    langs.dedup();
    let mut t = String::from(
        "Session summary (energy with PUE; a cell run N times with --repeat is 1 cell in N runs)\n",
    );
    let mut h = String::from(
        "<div style=\"font-family:sans-serif;font-size:13px\"><b>Session summary</b> <small>(a cell run N times with --repeat is 1 cell in N runs)</small><table><tr><th>language</th><th>counted</th><th>duration</th><th>CPU</th><th>RAM</th><th>GPU</th><th>energy</th><th>emissions</th></tr>",
    );
    let mut line = |name: &str, es: &[&SessionEntry]| {
        let cpu: Joules = es.iter().fold(Joules(0.0), |a, e| a + e.parts.cpu);
        let ram: Joules = es.iter().fold(Joules(0.0), |a, e| a + e.parts.ram);
        let gpu: Joules = es.iter().fold(Joules(0.0), |a, e| a + e.parts.gpu);
        let co2 = KgCo2(es.iter().map(|e| e.emissions).sum());
        let dur: f64 = es.iter().map(|e| e.duration).sum();
        // One set of figures, written as a text line and as an HTML row.
        let [d, c, r, g, total, em] = [
            fmt_duration(dur),
            fmt_energy(cpu),
            fmt_energy(ram),
            fmt_energy(gpu),
            fmt_energy(cpu + ram + gpu),
            fmt_co2(co2),
        ];
        let counts = Counts::of(es.iter().copied());
        let n = if counts.runs == 0 && counts.commands == 0 && counts.startups > 0 {
            // a start-up line: "1 cell in 0 runs" would mislead
            format!("{} start-up(s)", counts.startups)
        } else {
            counts.describe()
        };
        t.push_str(&format!(
            "  {name:14} {n}\n  {:14} {d:>10}  CPU {c}  RAM {r}  GPU {g}  total {total}  {em}\n",
            ""
        ));
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{d}</td><td>{c}</td><td>{r}</td><td>{g}</td><td>{total}</td><td>{em}</td></tr>",
            esc(name),
            esc(&n)
        ));
    };
    for l in &langs {
        let es: Vec<&SessionEntry> = entries.iter().filter(|e| &key(e) == l).collect();
        line(l, &es);
    }
    let all: Vec<&SessionEntry> = entries.iter().collect();
    line("all", &all);
    h.push_str("</table></div>");
    MimeBundle::plain(t).with("text/html", h)
}

/// A stacked part of the summary bars: name, how to get it, colour.
type Component = (&'static str, fn(&Parts) -> f64, RGBColor);

/// `%carbon summary`'s chart as its own output (SVG + PNG + text): energy per metered cell,
/// stacked CPU/RAM/GPU, and the cumulative emissions on a second axis. `None` without a cell.
pub fn summary_chart(entries: &[SessionEntry]) -> Option<MimeBundle> {
    if entries.is_empty() {
        return None;
    }
    let svg = summary_svg(entries).ok()?;
    let total: f64 = entries.iter().map(|e| e.emissions).sum();
    let plain = format!(
        "chart: energy of each of the {} metered cells (CPU, RAM, GPU) and cumulative emissions, {} in all",
        entries.len(),
        fmt_co2(KgCo2(total))
    );
    Some(png::chart_bundle(svg, plain))
}

/// The summary chart's SVG. The legend has a band of its own above the plot (it covered the
/// first bars when drawn inside), each cell's number sits under the middle of its bar, and both
/// axes are in the unit their largest value reads best in (mJ/J/Wh, µg/mg/g).
fn summary_svg(entries: &[SessionEntry]) -> Result<String, super::chart::ChartError> {
    let n = entries.len();
    let max_j = entries
        .iter()
        .map(|e| e.parts.total().0)
        .fold(0.0, f64::max);
    let (per_j, e_unit) = energy_axis_j(max_j);
    let e_top = *nice_ticks(max_j / per_j, 5).last().unwrap_or(&1.0);
    let total_g: f64 = entries.iter().map(|e| e.emissions * 1000.0).sum();
    let (per_g, m_unit) = mass_axis_g(total_g);
    let m_top = *nice_ticks(total_g / per_g, 5).last().unwrap_or(&1.0);
    let comps: [Component; 3] = [
        ("CPU", |p| p.cpu.0, PALETTE[0]),
        ("RAM", |p| p.ram.0, PALETTE[1]),
        ("GPU", |p| p.gpu.0, PALETTE[2]),
    ];
    let line_colour = PALETTE[5];
    let width = (220 + 36 * n as u32).clamp(480, 860);
    svg(width, 320, |root| {
        let (head, body) = root.split_vertically(46);
        head.draw(&Text::new(
            "Energy per metered cell and cumulative emissions",
            (10, 6),
            ("sans-serif", 14).into_font(),
        ))
        .map_err(chart_err)?;
        // The legend, in a row under the title.
        let mut x = 10;
        let style = ("sans-serif", 11).into_font();
        for (name, _, c) in &comps {
            head.draw(&Rectangle::new([(x, 28), (x + 10, 38)], c.filled()))
                .map_err(chart_err)?;
            head.draw(&Text::new(*name, (x + 14, 27), style.clone()))
                .map_err(chart_err)?;
            x += 60;
        }
        head.draw(&PathElement::new(
            vec![(x, 33), (x + 16, 33)],
            line_colour.stroke_width(2),
        ))
        .map_err(chart_err)?;
        head.draw(&Text::new(
            format!("cumulative emissions ({m_unit} CO₂eq)"),
            (x + 20, 27),
            style,
        ))
        .map_err(chart_err)?;
        let mut chart = ChartBuilder::on(&body)
            .margin(8)
            .x_label_area_size(34)
            .y_label_area_size(56)
            .right_y_label_area_size(60)
            .build_cartesian_2d(-0.5..n as f64 - 0.5, 0.0..e_top)
            .map_err(chart_err)?
            .set_secondary_coord(-0.5..n as f64 - 0.5, 0.0..m_top);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc("metered cell")
            .y_desc(format!("energy ({e_unit})"))
            .x_labels((n + 1).min(13))
            .x_label_formatter(&|x| {
                // Integer positions are the bars' middles; no label between them.
                let r = x.round();
                if (x - r).abs() < 1e-6 && r >= 0.0 {
                    format!("{}", r as usize + 1)
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|v| tick(*v))
            .label_style(("sans-serif", 11))
            .draw()
            .map_err(chart_err)?;
        chart
            .configure_secondary_axes()
            .y_desc(format!("cumulative {m_unit} CO₂eq"))
            .y_label_formatter(&|v| tick(*v))
            .label_style(("sans-serif", 11))
            .draw()
            .map_err(chart_err)?;
        for (ci, (_, get, color)) in comps.iter().enumerate() {
            let color = *color;
            // a part with no energy (no GPU) gets no rectangle: an empty one drew nothing, and
            // usvg warned about each one when it rasterized the chart for its PNG
            let bars: Vec<Rectangle<(f64, f64)>> = entries
                .iter()
                .enumerate()
                .filter(|(_, e)| get(&e.parts) > 0.0)
                .map(|(i, e)| {
                    let below: f64 = comps[..ci].iter().map(|(_, g, _)| g(&e.parts)).sum();
                    let x = i as f64;
                    Rectangle::new(
                        [
                            (x - 0.35, below / per_j),
                            (x + 0.35, (below + get(&e.parts)) / per_j),
                        ],
                        color.filled(),
                    )
                })
                .collect();
            chart.draw_series(bars).map_err(chart_err)?;
        }
        let mut cum = 0.0;
        let pts: Vec<(f64, f64)> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                cum += e.emissions * 1000.0 / per_g;
                (i as f64, cum)
            })
            .collect();
        chart
            .draw_secondary_series(LineSeries::new(pts.clone(), line_colour.stroke_width(2)))
            .map_err(chart_err)?;
        chart
            .draw_secondary_series(pts.iter().map(|p| Circle::new(*p, 3, line_colour.filled())))
            .map_err(chart_err)?;
        Ok(())
    })
}

/// `%carbon csv`: where the file is, how many rows, the last `last` rows.
pub fn csv_view(path: &std::path::Path, view: &Result<CsvView, String>, last: usize) -> MimeBundle {
    let v = match view {
        Ok(v) => v,
        Err(e) => {
            return MimeBundle::plain(format!(
                "{}: no rows yet or unreadable ({e})",
                path.display()
            ));
        }
    };
    let cols = [
        Column::Timestamp,
        Column::Kind,
        Column::Language,
        Column::Label,
        Column::Status,
        Column::Duration,
        Column::EnergyConsumed,
        Column::Emissions,
        Column::TrackingMode,
        Column::CountryIsoCode,
    ];
    let idx: Vec<(usize, &str)> = cols
        .iter()
        .filter_map(|c| {
            v.header
                .iter()
                .position(|h| h == c.name())
                .map(|i| (i, c.name()))
        })
        .collect();
    let start = v.rows.len().saturating_sub(last);
    let mut t = format!(
        "{}: {} row(s), {} column(s); last {}:\n",
        path.display(),
        v.rows.len(),
        v.header.len(),
        v.rows.len() - start
    );
    let mut h = format!(
        "<div style=\"font-family:sans-serif;font-size:13px\"><b>{}</b>: {} row(s), {} column(s)<table><tr>{}</tr>",
        esc(&path.display().to_string()),
        v.rows.len(),
        v.header.len(),
        idx.iter()
            .map(|(_, c)| format!("<th>{c}</th>"))
            .collect::<String>()
    );
    t.push_str(&idx.iter().map(|(_, c)| *c).collect::<Vec<_>>().join(" | "));
    t.push('\n');
    for r in &v.rows[start..] {
        let cells: Vec<String> = idx
            .iter()
            .map(|(i, _)| r.get(*i).cloned().unwrap_or_default())
            .collect();
        t.push_str(&cells.join(" | "));
        t.push('\n');
        h.push_str("<tr>");
        for c in &cells {
            h.push_str(&format!("<td>{}</td>", esc(c)));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table></div>");
    MimeBundle::plain(t).with("text/html", h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carbon::gpu::NvmlChoice;
    use crate::carbon::intensity;
    use crate::carbon::meter::{Meter, MeterConfig};

    fn run() -> RunReport {
        let m = Meter::new(MeterConfig {
            scope: Scope::Process,
            tdp_w: Some(50.0),
            powercap_root: "/nonexistent".into(),
            proc_root: "/proc".into(),
            nvml: NvmlChoice::Disabled,
        });
        m.start(&[std::process::id()]);
        let mut x = 0u64;
        for i in 0..3_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        let meas = m.stop().unwrap();
        let z = intensity::zone(Some("FRA")).unwrap();
        let mut rec = EmissionRecord::from_measurement(&meas, "p", "s", &z, 1.2);
        rec.status = crate::carbon::record::RowStatus::Ok;
        rec.language = crate::lang::Language::Python.into();
        RunReport { rec, meas }
    }

    #[test]
    fn report_has_table_chart_equivalents_and_explanation_with_numbers() {
        let r = run();
        let b = cell_report(
            std::slice::from_ref(&r),
            "row appended to /tmp/emissions.csv",
        );
        let html = b.text("text/html").unwrap();
        let text = b.text("text/plain").unwrap();
        for needle in [
            "<table>",
            "<details>",
            "How this was computed",
            "LED bulb",
            "France",
            "50.0 W",
        ] {
            assert!(html.contains(needle), "html lacks {needle}");
        }
        assert!(text.contains("emissions") && text.contains("France"));
        // the explanation shows this run's CPU seconds
        assert!(
            text.contains(&format!("{:.2} s", r.meas.cpu_seconds)),
            "{text}"
        );
        // The chart is its own output: an untrusted notebook drops SVG inside HTML.
        assert!(!html.contains("<svg"));
        let c = cell_chart(std::slice::from_ref(&r)).unwrap();
        assert!(c.text("image/svg+xml").unwrap().contains("<svg"));
        assert!(c.text("image/png").is_some() && c.text("text/html").is_none());
        let two = cell_report(&[r.clone(), r], "x");
        assert!(two.text("text/plain").unwrap().contains("2 runs"));
    }

    #[test]
    fn equivalents_follow_their_factors() {
        // 36 kJ = 10 Wh = one smartphone charge; 120 g = 1 km by car
        let e = equivalents(Joules(36_000.0), KgCo2(0.12));
        assert_eq!(e[0].amount, "1.00 km");
        assert_eq!(e[1].amount, "1.00");
        assert_eq!(e[2].amount, "60.0 min");
        assert_eq!(e[3].amount, "20.0 min");
    }

    #[test]
    fn equivalents_are_chosen_by_magnitude() {
        // a cell: 40 mJ, 5 µg → only the LED bulb, in milliseconds
        let cell = equivalents(Joules(0.04), KgCo2(5e-9));
        assert_eq!(cell.len(), 1, "{cell:?}");
        assert_eq!(cell[0].amount, "4.00 ms");
        assert!(cell[0].what.contains("LED"));
        // a long cell: 60 J → LED and laptop seconds, no car, no phone
        let whats: Vec<_> = equivalents(Joules(60.0), KgCo2(8e-6))
            .iter()
            .map(|e| e.what)
            .collect();
        assert_eq!(whats, ["of a 10 W LED bulb", "of a laptop in use"]);
        // a semester: 20 MJ at 475 g/kWh → km by car, charges, hours
        let sem = equivalents(Joules(2e7), KgCo2::of(Joules(2e7), 475.0));
        assert_eq!(sem[0].amount, "22.0 km", "{sem:?}");
        assert_eq!(sem[1].amount, "556");
        for e in cell.iter().chain(&sem) {
            assert!(
                !e.amount.contains('e') && !e.amount.starts_with('-'),
                "{e:?}"
            );
            assert!(!e.source.is_empty());
        }
    }

    #[test]
    fn counts_tell_cells_runs_commands_and_startups_apart() {
        let e = |kind: RowKind, language: &str, repeat_index: Option<u32>| SessionEntry {
            kind,
            repeat_index,
            language: language.into(),
            label: String::new(),
            parts: Parts::default(),
            emissions: 0.0,
            duration: 0.0,
        };
        let entries = [
            e(RowKind::Startup, "java", None),
            e(RowKind::Cell, "java", None),
            e(RowKind::Cell, "python", Some(1)),
            e(RowKind::Cell, "python", Some(2)),
            e(RowKind::Cell, "python", Some(3)),
            e(RowKind::Cell, "command", None),
        ];
        let c = Counts::of(&entries);
        assert_eq!(
            c,
            Counts {
                cells: 2,
                runs: 4,
                commands: 1,
                startups: 1
            }
        );
        assert_eq!(
            c.describe(),
            "2 cells in 4 runs, 1 command, 1 runtime start-up"
        );
        let t = summary(&entries);
        let t = t.text("text/plain").unwrap();
        assert!(
            t.contains("java start-up") && t.contains("1 cell in 1 run"),
            "{t}"
        );
    }

    #[test]
    fn repeat_report_shows_each_run_and_startup_its_own_line() {
        let r = run();
        let mut s = r.clone();
        s.rec.kind = RowKind::Startup;
        s.rec.language = RowLanguage::Code(crate::lang::Language::Java);
        let b = cell_report_with_startup(&[r.clone(), r.clone(), r], Some(&s), "x");
        let t = b.text("text/plain").unwrap();
        assert!(t.contains("sample standard deviation of 3 runs"), "{t}");
        assert!(
            t.contains("run 1") && t.contains("run 2") && t.contains("run 3"),
            "{t}"
        );
        assert!(t.contains("start-up") && t.contains("java runtime"), "{t}");
        assert!(b.text("text/html").unwrap().contains(">run 3<"));
    }

    #[test]
    fn summary_and_csv_view() {
        let e = |l: &str, j: f64| SessionEntry {
            kind: RowKind::Cell,
            repeat_index: None,
            language: l.into(),
            label: String::new(),
            parts: Parts {
                cpu: Joules(j),
                ram: Joules(j / 2.0),
                gpu: Joules(0.0),
            },
            emissions: j * 1e-7,
            duration: 1.0,
        };
        let b = summary(&[e("python", 10.0), e("java", 20.0), e("python", 5.0)]);
        let t = b.text("text/plain").unwrap();
        assert!(t.contains("python") && t.contains("java") && t.contains("all"));
        assert!(b.text("image/svg+xml").is_none());
        let c = summary_chart(&[e("python", 1.0), e("java", 3.0)]).unwrap();
        let svg = c.text("image/svg+xml").unwrap();
        assert!(svg.contains("<svg"));
        assert!(c.text("image/png").is_some());
        // no GPU energy, no empty GPU bar (usvg warned about each when it drew the PNG)
        assert!(!svg.contains("height=\"0\""), "{svg}");
        assert!(summary_chart(&[]).is_none());
        assert!(
            summary(&[])
                .text("text/plain")
                .unwrap()
                .contains("No metered cell")
        );
        let v = CsvView {
            header: vec!["timestamp".into(), "label".into()],
            rows: (0..8)
                .map(|i| vec![format!("t{i}"), format!("l{i}")])
                .collect(),
        };
        let b = csv_view(std::path::Path::new("/x/e.csv"), &Ok(v), 3);
        let t = b.text("text/plain").unwrap();
        assert!(
            t.contains("8 row(s)") && t.contains("l7") && !t.contains("l4"),
            "{t}"
        );
    }
}
