//! Typed quantities (joules, watts, kWh, kgCO₂eq) so energy and power are never mixed up.
//! Raw counters (µJ, mJ, clock ticks) stay integers until differenced; these types hold the
//! differenced, converted values.
//!
//! The one set of formatters every report uses is here too: three significant figures, the unit
//! chosen by magnitude (µg … t, mJ … MWh, ms … h), never an exponent or a `-0`.

use std::ops::{Add, AddAssign, Mul, Sub};

/// Joules per kilowatt-hour (3.6 MJ, SI definition).
pub const J_PER_KWH: f64 = 3_600_000.0;

/// An amount of energy, in joules.
#[derive(Debug, Clone, Copy, Default, PartialEq, PartialOrd)]
pub struct Joules(pub f64);

impl Joules {
    /// From microjoules (powercap's `energy_uj`).
    pub fn from_uj(uj: u64) -> Self {
        Joules(uj as f64 / 1e6)
    }
    /// From millijoules (NVML's total energy).
    pub fn from_mj(mj: u64) -> Self {
        Joules(mj as f64 / 1e3)
    }
    /// From kilowatt-hours (CodeCarbon's unit for energies).
    pub fn from_kwh(kwh: f64) -> Self {
        Joules(kwh * J_PER_KWH)
    }
    /// In kilowatt-hours (CodeCarbon's unit for energies).
    pub fn kwh(self) -> f64 {
        self.0 / J_PER_KWH
    }
    /// Mean power over `secs` (0 W for an empty interval).
    pub fn over(self, secs: f64) -> Watts {
        if secs > 0.0 {
            Watts(self.0 / secs)
        } else {
            Watts(0.0)
        }
    }
}

impl Add for Joules {
    type Output = Joules;
    fn add(self, o: Joules) -> Joules {
        Joules(self.0 + o.0)
    }
}

impl AddAssign for Joules {
    fn add_assign(&mut self, o: Joules) {
        self.0 += o.0;
    }
}

impl Sub for Joules {
    type Output = Joules;
    fn sub(self, o: Joules) -> Joules {
        Joules(self.0 - o.0)
    }
}

impl Mul<f64> for Joules {
    type Output = Joules;
    fn mul(self, k: f64) -> Joules {
        Joules(self.0 * k)
    }
}

/// A power, in watts.
#[derive(Debug, Clone, Copy, Default, PartialEq, PartialOrd)]
pub struct Watts(pub f64);

impl Watts {
    /// Energy spent at this power for `secs` seconds.
    pub fn for_secs(self, secs: f64) -> Joules {
        Joules(self.0 * secs)
    }
}

/// Emissions, in kilograms of CO₂ equivalent (CodeCarbon's unit).
#[derive(Debug, Clone, Copy, Default, PartialEq, PartialOrd)]
pub struct KgCo2(pub f64);

impl KgCo2 {
    /// Emissions of `energy` at `g_per_kwh` grams CO₂eq per kWh.
    pub fn of(energy: Joules, g_per_kwh: f64) -> Self {
        KgCo2(energy.kwh() * g_per_kwh / 1000.0)
    }
    /// In grams.
    pub fn grams(self) -> f64 {
        self.0 * 1000.0
    }
}

/// `v` with three significant figures in plain decimal notation: never an exponent, never `-0`
/// (zero of either sign is `0`). Used where the unit is named elsewhere (a column header, an
/// axis); quantities with a unit of their own go through [`fmt_mass_g`], [`fmt_energy`], ….
pub fn sig3(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let Some((r, mag)) = round3(v) else {
        return "0".into();
    };
    let decimals = (2 - mag).max(0) as usize;
    format!("{r:.decimals$}")
}

/// `v` rounded to three significant figures and the power of ten of its first digit after
/// rounding (999.6 gives 1000 and 3), or `None` for zero.
fn round3(v: f64) -> Option<(f64, i32)> {
    if v == 0.0 || !v.is_finite() {
        return None;
    }
    let mut mag = v.abs().log10().floor() as i32;
    let mut n = (v.abs() / 10f64.powi(mag - 2)).round();
    if n >= 1000.0 {
        mag += 1;
        n = (v.abs() / 10f64.powi(mag - 2)).round();
    }
    Some((n.copysign(v) * 10f64.powi(mag - 2), mag))
}

/// One unit of a scale: used from `from` (in the base unit) up, worth `factor` base units.
struct Step {
    from: f64,
    factor: f64,
    unit: &'static str,
}

/// `v` (in the scale's base unit) in the largest unit of `scale` it reaches, three significant
/// figures; values below the first step use the first unit. Zero is written in `zero_unit`.
fn scaled(v: f64, scale: &[Step], zero_unit: &str) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{} {zero_unit}", sig3(v));
    }
    let pick = |a: f64| scale.iter().rposition(|s| a >= s.from).unwrap_or(0);
    let mut i = pick(v.abs());
    // Rounding can reach the next unit (999.7 mg is 1.00 g, not 1000 mg); the margin keeps
    // 1000 × 1e-6 from falling just short of 1e-3.
    if let Some((r, _)) = round3(v / scale[i].factor) {
        i = i.max(pick(r.abs() * scale[i].factor * (1.0 + 1e-9)));
    }
    format!("{} {}", sig3(v / scale[i].factor), scale[i].unit)
}

const MASS_G: [Step; 5] = [
    Step {
        from: 0.0,
        factor: 1e-6,
        unit: "µg",
    },
    Step {
        from: 1e-3,
        factor: 1e-3,
        unit: "mg",
    },
    Step {
        from: 1.0,
        factor: 1.0,
        unit: "g",
    },
    Step {
        from: 1e3,
        factor: 1e3,
        unit: "kg",
    },
    Step {
        from: 1e6,
        factor: 1e6,
        unit: "t",
    },
];

const ENERGY_J: [Step; 5] = [
    Step {
        from: 0.0,
        factor: 1e-3,
        unit: "mJ",
    },
    Step {
        from: 1.0,
        factor: 1.0,
        unit: "J",
    },
    Step {
        from: 3600.0,
        factor: 3600.0,
        unit: "Wh",
    },
    Step {
        from: J_PER_KWH,
        factor: J_PER_KWH,
        unit: "kWh",
    },
    Step {
        from: 1e3 * J_PER_KWH,
        factor: 1e3 * J_PER_KWH,
        unit: "MWh",
    },
];

/// Minutes from 2 min and hours from 2 h, so "90.0 s" and "90.0 min" stay readable.
const DURATION_S: [Step; 4] = [
    Step {
        from: 0.0,
        factor: 1e-3,
        unit: "ms",
    },
    Step {
        from: 1.0,
        factor: 1.0,
        unit: "s",
    },
    Step {
        from: 120.0,
        factor: 60.0,
        unit: "min",
    },
    Step {
        from: 7200.0,
        factor: 3600.0,
        unit: "h",
    },
];

const LENGTH_M: [Step; 4] = [
    Step {
        from: 0.0,
        factor: 1e-6,
        unit: "µm",
    },
    Step {
        from: 1e-3,
        factor: 1e-3,
        unit: "mm",
    },
    Step {
        from: 1.0,
        factor: 1.0,
        unit: "m",
    },
    Step {
        from: 1e3,
        factor: 1e3,
        unit: "km",
    },
];

/// A mass given in grams, in µg, mg, g, kg or t.
pub fn fmt_mass_g(g: f64) -> String {
    scaled(g, &MASS_G, "g")
}

/// Emissions in µg, mg, g, kg or t of CO₂eq (`1.23 mg CO₂eq`).
pub fn fmt_co2(kg: KgCo2) -> String {
    format!("{} CO₂eq", fmt_mass_g(kg.grams()))
}

/// An energy in mJ, J, Wh, kWh or MWh.
pub fn fmt_energy(j: Joules) -> String {
    scaled(j.0, &ENERGY_J, "J")
}

/// A duration given in seconds, in ms, s, min or h.
pub fn fmt_duration(s: f64) -> String {
    scaled(s, &DURATION_S, "s")
}

/// A length given in metres, in µm, mm, m or km.
pub fn fmt_length(m: f64) -> String {
    scaled(m, &LENGTH_M, "m")
}

/// The unit of a chart axis whose largest value is `max` (in the scale's base unit): the
/// factor to divide values by and the unit's name, so ticks read `0 20 40 µg`, never `2.000e-5`.
fn axis(max: f64, scale: &[Step]) -> (f64, &'static str) {
    let i = if max.is_finite() && max > 0.0 {
        scale.iter().rposition(|s| max >= s.from).unwrap_or(0)
    } else {
        0
    };
    (scale[i].factor, scale[i].unit)
}

/// Axis unit for masses given in grams (µg, mg, g, kg, t): `(grams per unit, unit)`.
pub fn mass_axis_g(max_g: f64) -> (f64, &'static str) {
    axis(max_g, &MASS_G)
}

/// Axis unit for energies given in joules (mJ, J, Wh, kWh, MWh): `(joules per unit, unit)`.
pub fn energy_axis_j(max_j: f64) -> (f64, &'static str) {
    axis(max_j, &ENERGY_J)
}

/// Round tick values from 0 to at least `max`: about `n` steps of 1, 2 or 5 × 10^k, so an axis
/// reads `0 5 10 15`, not `0 0.383 0.767 1.15`.
pub fn nice_ticks(max: f64, n: usize) -> Vec<f64> {
    if !(max.is_finite() && max > 0.0) {
        return vec![0.0, 1.0];
    }
    let raw = max / n.max(1) as f64;
    let p = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|s| *s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * p);
    let k = (max / step - 1e-9).ceil().max(1.0) as usize;
    (0..=k).map(|i| i as f64 * step).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_pick_a_readable_unit_and_round_ticks() {
        assert_eq!(mass_axis_g(2.0e-5), (1e-6, "µg"));
        assert_eq!(mass_axis_g(0.004), (1e-3, "mg"));
        assert_eq!(mass_axis_g(12.0), (1.0, "g"));
        assert_eq!(mass_axis_g(0.0), (1e-6, "µg"));
        assert_eq!(energy_axis_j(0.2), (1e-3, "mJ"));
        assert_eq!(energy_axis_j(42.0), (1.0, "J"));
        assert_eq!(nice_ticks(1.0, 4), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(nice_ticks(13.0, 4), vec![0.0, 5.0, 10.0, 15.0]);
        assert_eq!(nice_ticks(383.0, 4), vec![0.0, 100.0, 200.0, 300.0, 400.0]);
        let t = nice_ticks(0.0173, 4);
        assert!(*t.last().unwrap() >= 0.0173 && t.len() <= 6, "{t:?}");
    }

    #[test]
    fn conversions() {
        assert_eq!(Joules::from_uj(3_600_000_000_000).kwh(), 1.0);
        assert_eq!(Joules::from_mj(1500).0, 1.5);
        assert_eq!(Joules(10.0).over(4.0), Watts(2.5));
        assert_eq!(Joules(10.0).over(0.0), Watts(0.0));
        assert_eq!(Watts(5.0).for_secs(2.0), Joules(10.0));
        // 1 kWh at 475 g/kWh = 0.475 kg
        assert!((KgCo2::of(Joules(J_PER_KWH), 475.0).0 - 0.475).abs() < 1e-12);
    }

    #[test]
    fn three_significant_figures_without_exponent() {
        assert_eq!(sig3(0.0123456), "0.0123");
        assert_eq!(sig3(12.3456), "12.3");
        assert_eq!(sig3(123456.0), "123000");
        assert_eq!(sig3(0.00001234), "0.0000123");
        assert_eq!(sig3(9.996), "10.0");
        assert_eq!(sig3(-1.5), "-1.50");
        assert_eq!(sig3(0.0), "0");
        assert_eq!(sig3(-0.0), "0");
    }

    #[test]
    fn energy_units_by_magnitude() {
        assert_eq!(fmt_energy(Joules(0.0)), "0 J");
        assert_eq!(fmt_energy(Joules(-0.0)), "0 J");
        assert_eq!(fmt_energy(Joules(2e-6)), "0.00200 mJ");
        assert_eq!(fmt_energy(Joules(0.0123)), "12.3 mJ");
        assert_eq!(fmt_energy(Joules(0.9994)), "999 mJ");
        assert_eq!(fmt_energy(Joules(0.9996)), "1.00 J");
        assert_eq!(fmt_energy(Joules(1.0)), "1.00 J");
        assert_eq!(fmt_energy(Joules(12.345)), "12.3 J");
        assert_eq!(fmt_energy(Joules(3594.0)), "3590 J");
        assert_eq!(fmt_energy(Joules(3599.0)), "1.00 Wh");
        assert_eq!(fmt_energy(Joules(3600.0)), "1.00 Wh");
        assert_eq!(fmt_energy(Joules(7200.0)), "2.00 Wh");
        assert_eq!(fmt_energy(Joules(J_PER_KWH)), "1.00 kWh");
        assert_eq!(fmt_energy(Joules(2.5e3 * J_PER_KWH)), "2.50 MWh");
        assert_eq!(fmt_energy(Joules(-0.5)), "-500 mJ");
        assert!(!fmt_energy(Joules(1e-9)).contains('e'));
    }

    #[test]
    fn mass_units_by_magnitude() {
        assert_eq!(fmt_mass_g(0.0), "0 g");
        assert_eq!(fmt_mass_g(-0.0), "0 g");
        assert_eq!(fmt_mass_g(1.4e-8), "0.0140 µg");
        assert_eq!(fmt_mass_g(2e-4), "200 µg");
        assert_eq!(fmt_mass_g(9.9996e-4), "1.00 mg");
        assert_eq!(fmt_mass_g(1e-3), "1.00 mg");
        assert_eq!(fmt_mass_g(0.5), "500 mg");
        assert_eq!(fmt_mass_g(1.234), "1.23 g");
        assert_eq!(fmt_mass_g(999.9), "1.00 kg");
        assert_eq!(fmt_mass_g(2.5e6), "2.50 t");
        assert_eq!(fmt_co2(KgCo2(2e-6)), "2.00 mg CO₂eq");
        assert_eq!(fmt_co2(KgCo2(-0.0)), "0 g CO₂eq");
    }

    #[test]
    fn durations_and_lengths() {
        assert_eq!(fmt_duration(0.0), "0 s");
        assert_eq!(fmt_duration(-0.0), "0 s");
        assert_eq!(fmt_duration(0.0001), "0.100 ms");
        assert_eq!(fmt_duration(0.25), "250 ms");
        assert_eq!(fmt_duration(0.9999), "1.00 s");
        assert_eq!(fmt_duration(90.0), "90.0 s");
        assert_eq!(fmt_duration(120.0), "2.00 min");
        assert_eq!(fmt_duration(3600.0), "60.0 min");
        assert_eq!(fmt_duration(7200.0), "2.00 h");
        assert_eq!(fmt_length(1000.0), "1.00 km");
        assert_eq!(fmt_length(0.5), "500 mm");
    }
}
