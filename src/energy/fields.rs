//! The fields the energy layer adds to a battery kind's measurement (each battery kind's
//! schema ends with [`SCHEMA`]).

use super::Derived;
use crate::devices::schema::{FieldSpec, FieldType::*, Fields, Value, round};

/// Energy into the battery since blebatt first saw the device; only grows.
pub const CHARGED_ENERGY: FieldSpec = FieldSpec::new("charged_energy", Float, "Wh").optional();
/// Energy out of it; only grows.
pub const DISCHARGED_ENERGY: FieldSpec =
    FieldSpec::new("discharged_energy", Float, "Wh").optional();
/// Charge into it; only grows.
pub const CHARGED_CAPACITY: FieldSpec = FieldSpec::new("charged_capacity", Float, "Ah").optional();
/// Charge out of it; only grows.
pub const DISCHARGED_CAPACITY: FieldSpec =
    FieldSpec::new("discharged_capacity", Float, "Ah").optional();
/// While discharging: remaining capacity / smoothed current.
pub const TIME_TO_EMPTY: FieldSpec = FieldSpec::new("time_to_empty", Int, "s").optional();
/// While charging: (full - remaining capacity) / smoothed current.
pub const TIME_TO_FULL: FieldSpec = FieldSpec::new("time_to_full", Int, "s").optional();

/// In print order. Optional: `run` and `once` print the counters on every line of a battery
/// kind, `decode` (one reading, no history) does not.
pub const SCHEMA: [FieldSpec; 6] = [
    CHARGED_ENERGY,
    DISCHARGED_ENERGY,
    CHARGED_CAPACITY,
    DISCHARGED_CAPACITY,
    TIME_TO_EMPTY,
    TIME_TO_FULL,
];

/// Decimals printed: 0.1 mWh and 1 uAh are below any BMS's resolution.
const WH_DECIMALS: i32 = 4;
const AH_DECIMALS: i32 = 6;

pub fn write(d: &Derived, out: &mut dyn Fields) {
    let t = &d.totals;
    out.put(
        &CHARGED_ENERGY,
        Value::Float(round(t.charged_wh, WH_DECIMALS)),
    );
    out.put(
        &DISCHARGED_ENERGY,
        Value::Float(round(t.discharged_wh, WH_DECIMALS)),
    );
    out.put(
        &CHARGED_CAPACITY,
        Value::Float(round(t.charged_ah, AH_DECIMALS)),
    );
    out.put(
        &DISCHARGED_CAPACITY,
        Value::Float(round(t.discharged_ah, AH_DECIMALS)),
    );
    if let Some(s) = d.time_to_empty_s {
        out.put(&TIME_TO_EMPTY, Value::Int(s));
    }
    if let Some(s) = d.time_to_full_s {
        out.put(&TIME_TO_FULL, Value::Int(s));
    }
}
