//! Typed quantities (joules, watts, kWh, kgCO₂eq) so energy and power are never mixed up.
//! Raw counters (µJ, mJ, clock ticks) stay integers until differenced; these types hold the
//! differenced, converted values.

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

/// Human formatting of an energy with an adapted unit (J, kJ, Wh, kWh).
pub fn fmt_energy(j: Joules) -> String {
    let v = j.0.abs();
    if v < 1.0 {
        format!("{:.3} mJ", j.0 * 1e3).replace(".000 mJ", " mJ")
    } else if v < 3600.0 {
        format!("{:.2} J", j.0)
    } else if v < 3.6e6 {
        format!("{:.2} Wh", j.0 / 3600.0)
    } else {
        format!("{:.3} kWh", j.kwh())
    }
}

/// Human formatting of emissions (µg, mg, g, kg of CO₂eq).
pub fn fmt_co2(kg: KgCo2) -> String {
    let g = kg.grams();
    let a = g.abs();
    if a == 0.0 {
        "0 gCO₂eq".into()
    } else if a < 1e-3 {
        format!("{:.2} µgCO₂eq", g * 1e6)
    } else if a < 1.0 {
        format!("{:.3} mgCO₂eq", g * 1e3)
    } else if a < 1000.0 {
        format!("{:.3} gCO₂eq", g)
    } else {
        format!("{:.3} kgCO₂eq", kg.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(Joules::from_uj(3_600_000_000_000).kwh(), 1.0);
        assert_eq!(Joules::from_mj(1500).0, 1.5);
        assert_eq!(Joules(10.0).over(4.0), Watts(2.5));
        assert_eq!(Joules(10.0).over(0.0), Watts(0.0));
        assert_eq!(Watts(5.0).for_secs(2.0), Joules(10.0));
        // 1 kWh at 475 g/kWh = 0.475 kg
        assert!((KgCo2::of(Joules(J_PER_KWH), 475.0).0 - 0.475).abs() < 1e-12);
        assert_eq!(fmt_energy(Joules(12.345)), "12.35 J");
        assert_eq!(fmt_energy(Joules(7200.0)), "2.00 Wh");
        assert!(fmt_co2(KgCo2(2e-6)).contains("mg"));
    }
}
