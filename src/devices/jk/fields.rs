//! The `jk_bms` measurement: its schema and the reading -> fields mapping. Names are those of
//! `jbd_bms` wherever the meaning is the same.

use super::protocol::{CellInfo, ERROR_BITS};
use crate::devices::schema::{FieldSpec, FieldType, Fields, Value, round};

pub const MEASUREMENT: &str = "jk_bms";
/// The BMS's model from its device info record.
pub const MODEL_TAG: &str = "model";

use FieldType::{Bool, Float, Int};

pub const VOLTAGE: FieldSpec = FieldSpec::new("voltage", Float, "V");
/// Positive while charging.
pub const CURRENT: FieldSpec = FieldSpec::new("current", Float, "A");
/// Voltage x current (the BMS's own power word is unsigned), rounded to mW.
pub const POWER: FieldSpec = FieldSpec::new("power", Float, "W");
pub const REMAINING_CAPACITY: FieldSpec = FieldSpec::new("remaining_capacity", Float, "Ah");
pub const NOMINAL_CAPACITY: FieldSpec = FieldSpec::new("nominal_capacity", Float, "Ah");
pub const SOC: FieldSpec = FieldSpec::new("soc", Int, "%").optional();
pub const SOH: FieldSpec = FieldSpec::new("soh", Int, "%").optional();
pub const CYCLES: FieldSpec = FieldSpec::new("cycles", Int, "");
/// Lifetime charge through the pack, as the BMS counts it.
pub const TOTAL_CYCLE_CAPACITY: FieldSpec = FieldSpec::new("total_cycle_capacity", Float, "Ah");
pub const CELL_COUNT: FieldSpec = FieldSpec::new("cell_count", Int, "");
pub const CELL: FieldSpec = FieldSpec::new("cell", Float, "V").numbered();
pub const CELL_MIN: FieldSpec = FieldSpec::new("cell_min", Float, "V");
pub const CELL_MAX: FieldSpec = FieldSpec::new("cell_max", Float, "V");
pub const CELL_AVG: FieldSpec = FieldSpec::new("cell_avg", Float, "V");
pub const CELL_DELTA: FieldSpec = FieldSpec::new("cell_delta", Float, "V");
/// Cell N's wire resistance.
pub const CELL_RESISTANCE: FieldSpec = FieldSpec::new("cell_resistance", Float, "ohm").numbered();
/// Sensor N (T1, T2); an absent or implausible one is left out, the others keep their numbers.
pub const TEMPERATURE: FieldSpec = FieldSpec::new("temperature", Float, "degC").numbered();
pub const MOS_TEMPERATURE: FieldSpec = FieldSpec::new("mos_temperature", Float, "degC").optional();
/// 0 off, 1 balancing while charging, 2 while discharging.
pub const BALANCING: FieldSpec = FieldSpec::new("balancing", Int, "");
pub const BALANCE_CURRENT: FieldSpec = FieldSpec::new("balance_current", Float, "A");
pub const CHARGE_FET: FieldSpec = FieldSpec::new("charge_fet", Bool, "");
pub const DISCHARGE_FET: FieldSpec = FieldSpec::new("discharge_fet", Bool, "");
/// The raw error bits; each named one is also its own field below.
pub const ERRORS: FieldSpec = FieldSpec::new("errors", Int, "");
/// One bool per named bit of [`ERROR_BITS`] (24S firmware reports bits 0..15 only: the
/// others are false there).
pub const ERROR_FLAGS: [FieldSpec; named_errors()] = {
    let mut flags = [FieldSpec::new("", Bool, ""); named_errors()];
    let (mut i, mut n) = (0, 0);
    while i < ERROR_BITS.len() {
        if let Some(key) = ERROR_BITS[i] {
            flags[n] = FieldSpec::new(key, Bool, "");
            n += 1;
        }
        i += 1;
    }
    flags
};

const fn named_errors() -> usize {
    let (mut i, mut n) = (0, 0);
    while i < ERROR_BITS.len() {
        if ERROR_BITS[i].is_some() {
            n += 1;
        }
        i += 1;
    }
    n
}

/// Every field, in the order they are printed.
pub fn schema() -> Vec<FieldSpec> {
    let mut s = vec![
        VOLTAGE,
        CURRENT,
        POWER,
        REMAINING_CAPACITY,
        NOMINAL_CAPACITY,
        SOC,
        SOH,
        CYCLES,
        TOTAL_CYCLE_CAPACITY,
        CELL_COUNT,
        CELL,
        CELL_MIN,
        CELL_MAX,
        CELL_AVG,
        CELL_DELTA,
        CELL_RESISTANCE,
        TEMPERATURE,
        MOS_TEMPERATURE,
        BALANCING,
        BALANCE_CURRENT,
        CHARGE_FET,
        DISCHARGE_FET,
        ERRORS,
    ];
    s.extend(ERROR_FLAGS);
    s.extend(crate::energy::fields::SCHEMA);
    s
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// The reading's fields, in schema order.
pub fn write(c: &CellInfo, out: &mut dyn Fields) {
    out.put(&VOLTAGE, Value::Float(c.voltage_v));
    out.put(&CURRENT, Value::Float(c.current_a));
    out.put(&POWER, Value::Float(round(c.voltage_v * c.current_a, 3)));
    out.put(&REMAINING_CAPACITY, Value::Float(c.remaining_capacity_ah));
    out.put(&NOMINAL_CAPACITY, Value::Float(c.nominal_capacity_ah));
    if let Some(soc) = c.soc_percent {
        out.put(&SOC, Value::Int(soc.into()));
    }
    if let Some(soh) = c.soh_percent {
        out.put(&SOH, Value::Int(soh.into()));
    }
    out.put(&CYCLES, Value::Int(c.cycles.into()));
    out.put(
        &TOTAL_CYCLE_CAPACITY,
        Value::Float(c.total_cycle_capacity_ah),
    );
    out.put(&CELL_COUNT, Value::Int(c.cells_v.len() as i64));
    for (i, v) in c.cells_v.iter().enumerate() {
        out.field(&CELL, Some(i + 1), Value::Float(*v));
    }
    if !c.cells_v.is_empty() {
        out.put(&CELL_MIN, Value::Float(min(&c.cells_v)));
        out.put(&CELL_MAX, Value::Float(max(&c.cells_v)));
    }
    out.put(&CELL_AVG, Value::Float(c.cell_avg_v));
    out.put(&CELL_DELTA, Value::Float(c.cell_delta_v));
    for (i, r) in c.cell_resistances_ohm.iter().enumerate() {
        out.field(&CELL_RESISTANCE, Some(i + 1), Value::Float(*r));
    }
    for (i, t) in c.temperatures_c.iter().enumerate() {
        if let Some(t) = t {
            out.field(&TEMPERATURE, Some(i + 1), Value::Float(*t));
        }
    }
    if let Some(t) = c.mos_temperature_c {
        out.put(&MOS_TEMPERATURE, Value::Float(t));
    }
    out.put(&BALANCING, Value::Int(c.balancing.into()));
    out.put(&BALANCE_CURRENT, Value::Float(c.balance_current_a));
    out.put(&CHARGE_FET, Value::Bool(c.charge_fet_on));
    out.put(&DISCHARGE_FET, Value::Bool(c.discharge_fet_on));
    out.put(&ERRORS, Value::Int(c.errors.into()));
    for (spec, (_, on)) in ERROR_FLAGS.iter().zip(c.error_flags()) {
        out.put(spec, Value::Bool(on));
    }
}
