//! The `jbd_bms` measurement: its schema and the reading -> fields mapping.

use super::protocol::{JbdReading, PROTECTION_BITS};
use crate::devices::schema::{FieldSpec, FieldType, Fields, Value, round};

pub const MEASUREMENT: &str = "jbd_bms";
/// The BMS's name from register 0x05, when it has one.
pub const MODEL_TAG: &str = "model";

use FieldType::{Bool, Float, Int, Str};

pub const VOLTAGE: FieldSpec = FieldSpec::new("voltage", Float, "V");
/// Negative = discharging.
pub const CURRENT: FieldSpec = FieldSpec::new("current", Float, "A");
/// Voltage x current, rounded to mW.
pub const POWER: FieldSpec = FieldSpec::new("power", Float, "W");
pub const REMAINING_CAPACITY: FieldSpec = FieldSpec::new("remaining_capacity", Float, "Ah");
pub const NOMINAL_CAPACITY: FieldSpec = FieldSpec::new("nominal_capacity", Float, "Ah");
pub const SOC: FieldSpec = FieldSpec::new("soc", Int, "%").optional();
pub const CYCLES: FieldSpec = FieldSpec::new("cycles", Int, "");
pub const CELL_COUNT: FieldSpec = FieldSpec::new("cell_count", Int, "");
pub const CELL: FieldSpec = FieldSpec::new("cell", Float, "V").numbered();
pub const CELL_MIN: FieldSpec = FieldSpec::new("cell_min", Float, "V");
pub const CELL_MAX: FieldSpec = FieldSpec::new("cell_max", Float, "V");
pub const CELL_AVG: FieldSpec = FieldSpec::new("cell_avg", Float, "V");
pub const CELL_DELTA: FieldSpec = FieldSpec::new("cell_delta", Float, "V");
/// NTC sensor N; an implausible one is left out, so `temperature_N` stays the BMS's sensor N.
pub const TEMPERATURE: FieldSpec = FieldSpec::new("temperature", Float, "degC").numbered();
/// Balance bitmask, bit 0 = cell 1.
pub const BALANCING: FieldSpec = FieldSpec::new("balancing", Int, "");
pub const CHARGE_FET: FieldSpec = FieldSpec::new("charge_fet", Bool, "");
pub const DISCHARGE_FET: FieldSpec = FieldSpec::new("discharge_fet", Bool, "");
/// The protection status word; each named bit is also its own field below.
pub const PROTECTION: FieldSpec = FieldSpec::new("protection", Int, "");
/// One bool per bit of [`PROTECTION_BITS`], named there.
pub const PROTECTION_FLAGS: [FieldSpec; PROTECTION_BITS.len()] = {
    let mut flags = [FieldSpec::new("", Bool, ""); PROTECTION_BITS.len()];
    let mut i = 0;
    while i < flags.len() {
        flags[i] = FieldSpec::new(PROTECTION_BITS[i].1, Bool, "");
        i += 1;
    }
    flags
};
pub const SOFTWARE_VERSION: FieldSpec = FieldSpec::new("software_version", Str, "");
pub const PRODUCTION_DATE: FieldSpec = FieldSpec::new("production_date", Str, "").optional();
/// V11 firmware only.
pub const HUMIDITY: FieldSpec = FieldSpec::new("humidity", Int, "%").optional();
pub const ALARM: FieldSpec = FieldSpec::new("alarm", Int, "").optional();
pub const FULL_CHARGE_CAPACITY: FieldSpec =
    FieldSpec::new("full_charge_capacity", Float, "Ah").optional();

/// Every field, in the order they are printed.
pub fn schema() -> Vec<FieldSpec> {
    let mut s = vec![
        VOLTAGE,
        CURRENT,
        POWER,
        REMAINING_CAPACITY,
        NOMINAL_CAPACITY,
        SOC,
        CYCLES,
        CELL_COUNT,
        CELL,
        CELL_MIN,
        CELL_MAX,
        CELL_AVG,
        CELL_DELTA,
        TEMPERATURE,
        BALANCING,
        CHARGE_FET,
        DISCHARGE_FET,
        PROTECTION,
    ];
    s.extend(PROTECTION_FLAGS);
    s.extend([
        SOFTWARE_VERSION,
        PRODUCTION_DATE,
        HUMIDITY,
        ALARM,
        FULL_CHARGE_CAPACITY,
    ]);
    s.extend(crate::energy::fields::SCHEMA);
    s
}

/// The reading's fields, in schema order.
pub fn write(r: &JbdReading, out: &mut dyn Fields) {
    let info = &r.info;
    let cells = &r.cells;
    out.put(&VOLTAGE, Value::Float(info.voltage_v));
    out.put(&CURRENT, Value::Float(info.current_a));
    out.put(&POWER, Value::Float(round(info.power_w(), 3)));
    out.put(
        &REMAINING_CAPACITY,
        Value::Float(info.remaining_capacity_ah),
    );
    out.put(&NOMINAL_CAPACITY, Value::Float(info.nominal_capacity_ah));
    if let Some(soc) = info.soc_percent {
        out.put(&SOC, Value::Int(soc.into()));
    }
    out.put(&CYCLES, Value::Int(info.cycles.into()));
    out.put(&CELL_COUNT, Value::Int(cells.volts.len() as i64));
    for (i, v) in cells.volts.iter().enumerate() {
        out.field(&CELL, Some(i + 1), Value::Float(*v));
    }
    out.put(&CELL_MIN, Value::Float(cells.min()));
    out.put(&CELL_MAX, Value::Float(cells.max()));
    out.put(&CELL_AVG, Value::Float(round(cells.avg(), 4)));
    out.put(&CELL_DELTA, Value::Float(round(cells.delta(), 3)));
    for (i, t) in info.temperatures_c.iter().enumerate() {
        if let Some(t) = t {
            out.field(&TEMPERATURE, Some(i + 1), Value::Float(*t));
        }
    }
    out.put(&BALANCING, Value::Int(info.balancing.into()));
    out.put(&CHARGE_FET, Value::Bool(info.charge_fet_on));
    out.put(&DISCHARGE_FET, Value::Bool(info.discharge_fet_on));
    out.put(&PROTECTION, Value::Int(info.protection.0.into()));
    for (spec, (_, on)) in PROTECTION_FLAGS.iter().zip(info.protection.flags()) {
        out.put(spec, Value::Bool(on));
    }
    out.put(
        &SOFTWARE_VERSION,
        Value::Str(&info.software_version_string()),
    );
    if let Some(date) = info.production_date {
        out.put(&PRODUCTION_DATE, Value::Str(&date.to_string()));
    }
    if let Some(h) = info.v11.humidity_percent {
        out.put(&HUMIDITY, Value::Int(h.into()));
    }
    if let Some(a) = info.v11.alarm {
        out.put(&ALARM, Value::Int(a.into()));
    }
    if let Some(c) = info.v11.full_charge_capacity_ah {
        out.put(&FULL_CHARGE_CAPACITY, Value::Float(c));
    }
}
