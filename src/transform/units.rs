//! Unit systems: the user's choice (`plugindata/<plugin>/system`) and conversions into it.
//!
//! `system` keeps the meaning it had for the old plugin, where it was Fitbit's
//! `Accept-Language`: `en_US` is US units, `en_GB` is UK units (stone for body
//! weight), anything else is metric. The words `metric`, `us` and `uk` work too.

use crate::provider::raw::{Quantity, Unit};

/// A unit system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitSystem {
    /// kg, km, cm.
    Metric,
    /// lb, miles, inches.
    Us,
    /// stone, miles, inches.
    Uk,
}

impl UnitSystem {
    /// The system a `system` setting names: `en_US`/`us` (US units), `en_GB`/`uk` (UK
    /// units), `metric`, or any other locale `ll_CC` (metric, as Fitbit read its
    /// `Accept-Language`). None for anything else (`imperial`, typos).
    pub fn parse(system: &str) -> Option<UnitSystem> {
        let system = system.trim();
        match system {
            "en_US" | "us" | "US" => Some(UnitSystem::Us),
            "en_GB" | "uk" | "UK" => Some(UnitSystem::Uk),
            s if s.eq_ignore_ascii_case("metric") => Some(UnitSystem::Metric),
            s if is_locale(s) => Some(UnitSystem::Metric),
            _ => None,
        }
    }

    /// The system of a setting already checked with [`UnitSystem::parse`] (when it was
    /// stored or planned); metric for anything else.
    pub fn from_setting(system: &str) -> UnitSystem {
        UnitSystem::parse(system).unwrap_or(UnitSystem::Metric)
    }
}

/// `ll_CC`: two lowercase letters, `_`, two uppercase letters.
fn is_locale(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 5
        && b[..2].iter().all(u8::is_ascii_lowercase)
        && b[2] == b'_'
        && b[3..].iter().all(u8::is_ascii_uppercase)
}

/// How many base units one unit of the system's unit is.
fn system_unit_in_base(quantity: Quantity, system: UnitSystem) -> f64 {
    match (quantity, system) {
        (Quantity::Mass, UnitSystem::Metric) => 1.0,
        (Quantity::Mass, UnitSystem::Us) => 0.453_592_37,
        (Quantity::Mass, UnitSystem::Uk) => 6.350_293_18,
        (Quantity::Distance, UnitSystem::Metric) => 1.0,
        (Quantity::Distance, _) => 1.609_344,
        (Quantity::Length, UnitSystem::Metric) => 1.0,
        (Quantity::Length, _) => 2.54,
        (Quantity::Glucose, UnitSystem::Us) => 1.0 / crate::provider::raw::MG_DL_PER_MMOL_L,
        (Quantity::Glucose, _) => 1.0,
    }
}

/// The name of the system's unit for `quantity`, as entries state it.
pub fn unit_name(quantity: Quantity, system: UnitSystem) -> &'static str {
    match (quantity, system) {
        (Quantity::Mass, UnitSystem::Metric) => "kg",
        (Quantity::Mass, UnitSystem::Us) => "lb",
        (Quantity::Mass, UnitSystem::Uk) => "stone",
        (Quantity::Distance, UnitSystem::Metric) => "km",
        (Quantity::Distance, _) => "mi",
        (Quantity::Length, UnitSystem::Metric) => "cm",
        (Quantity::Length, _) => "in",
        (Quantity::Glucose, UnitSystem::Us) => "mg/dL",
        (Quantity::Glucose, _) => "mmol/L",
    }
}

/// Converts a value in `unit` into the system's unit for `quantity`.
pub fn convert(value: f64, quantity: Quantity, unit: Unit, system: UnitSystem) -> Option<f64> {
    let base = value * quantity.base_factor(unit)?;
    Some(base / system_unit_in_base(quantity, system))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grams_to_each_system() {
        let kg = convert(81350.0, Quantity::Mass, Unit::G, UnitSystem::Metric).unwrap();
        assert!((kg - 81.35).abs() < 1e-9);
        let lb = convert(81350.0, Quantity::Mass, Unit::G, UnitSystem::Us).unwrap();
        assert!((lb - 179.3461).abs() < 1e-3);
        let st = convert(81350.0, Quantity::Mass, Unit::G, UnitSystem::Uk).unwrap();
        assert!((st - 12.8104).abs() < 1e-3);
        assert_eq!(UnitSystem::from_setting("nl_NL"), UnitSystem::Metric);
        assert_eq!(UnitSystem::from_setting("en_GB"), UnitSystem::Uk);
    }
}
