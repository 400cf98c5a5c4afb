//! The `victron` measurement: its schema and the record -> fields mapping. One measurement for
//! the battery monitor, DC energy meter and solar charger records: each line carries the
//! fields its record has (all optional), under the `jbd_bms` names where the meaning is the
//! same.

use super::protocol::{ALARM_BITS, Aux, BatteryMonitor, DcEnergyMeter, Record, SolarCharger};
use crate::devices::schema::{FieldSpec, FieldType, Fields, Value, round};

pub const MEASUREMENT: &str = "victron";
/// The product id, `0xA389`.
pub const PRODUCT_ID_TAG: &str = "product_id";
/// The product's name (`SmartShunt 500A/50mV`), or what its record says it is.
pub const PRODUCT_TAG: &str = "product";

use FieldType::{Bool, Float, Int};

/// Battery voltage.
pub const VOLTAGE: FieldSpec = FieldSpec::new("voltage", Float, "V").optional();
/// Battery current, positive while charging.
pub const CURRENT: FieldSpec = FieldSpec::new("current", Float, "A").optional();
/// Voltage x current.
pub const POWER: FieldSpec = FieldSpec::new("power", Float, "W").optional();
pub const SOC: FieldSpec = FieldSpec::new("soc", Float, "%").optional();
/// Taken out since the battery was last full, positive (VictronConnect shows it negative).
pub const CONSUMED_CAPACITY: FieldSpec =
    FieldSpec::new("consumed_capacity", Float, "Ah").optional();
/// The monitor's own estimate (as the energy layer's `time_to_empty`).
pub const TIME_TO_GO: FieldSpec = FieldSpec::new("time_to_go", Int, "s").optional();
/// The aux input, by its mode: one of these three.
pub const STARTER_VOLTAGE: FieldSpec = FieldSpec::new("starter_voltage", Float, "V").optional();
pub const MIDPOINT_VOLTAGE: FieldSpec = FieldSpec::new("midpoint_voltage", Float, "V").optional();
pub const TEMPERATURE: FieldSpec = FieldSpec::new("temperature", Float, "degC").optional();
/// The raw alarm reason bits; each named one is also its own field below.
pub const ALARM: FieldSpec = FieldSpec::new("alarm", Int, "").optional();
/// One bool per bit of [`ALARM_BITS`], on the lines of records that have alarms.
pub const ALARM_FLAGS: [FieldSpec; ALARM_BITS.len()] = {
    let mut flags = [FieldSpec::new("", Bool, ""); ALARM_BITS.len()];
    let mut i = 0;
    while i < ALARM_BITS.len() {
        flags[i] = FieldSpec::new(ALARM_BITS[i].1, Bool, "").optional();
        i += 1;
    }
    flags
};
/// DC energy meter: what the shunt measures (Victron's monitor mode number; e.g. -1 solar
/// charger, 1 AC charger, 8 DC system).
pub const MONITOR_MODE: FieldSpec = FieldSpec::new("monitor_mode", Int, "").optional();
/// Solar charger: Victron's charge state (0 off, 3 bulk, 4 absorption, 5 float, ...).
pub const CHARGE_STATE: FieldSpec = FieldSpec::new("charge_state", Int, "").optional();
/// Solar charger: Victron's charger error code (0 none).
pub const CHARGER_ERROR: FieldSpec = FieldSpec::new("charger_error", Int, "").optional();
pub const PV_POWER: FieldSpec = FieldSpec::new("pv_power", Float, "W").optional();
pub const YIELD_TODAY: FieldSpec = FieldSpec::new("yield_today", Float, "kWh").optional();
pub const LOAD_CURRENT: FieldSpec = FieldSpec::new("load_current", Float, "A").optional();

/// Every field, in the order they are printed.
pub fn schema() -> Vec<FieldSpec> {
    let mut s = vec![
        VOLTAGE,
        CURRENT,
        POWER,
        SOC,
        CONSUMED_CAPACITY,
        TIME_TO_GO,
        STARTER_VOLTAGE,
        MIDPOINT_VOLTAGE,
        TEMPERATURE,
        ALARM,
    ];
    s.extend(ALARM_FLAGS);
    s.extend([
        MONITOR_MODE,
        CHARGE_STATE,
        CHARGER_ERROR,
        PV_POWER,
        YIELD_TODAY,
        LOAD_CURRENT,
    ]);
    s.extend(crate::energy::fields::SCHEMA);
    s
}

fn put_f(out: &mut dyn Fields, spec: &FieldSpec, v: Option<f64>, decimals: i32) {
    if let Some(v) = v {
        out.put(spec, Value::Float(round(v, decimals)));
    }
}

fn put_i(out: &mut dyn Fields, spec: &FieldSpec, v: Option<i64>) {
    if let Some(v) = v {
        out.put(spec, Value::Int(v));
    }
}

/// Voltage (0.01 V), current (`current_decimals`) and their product.
fn electrical(
    out: &mut dyn Fields,
    voltage: Option<f64>,
    current: Option<f64>,
    current_decimals: i32,
) {
    put_f(out, &VOLTAGE, voltage, 2);
    put_f(out, &CURRENT, current, current_decimals);
    put_f(out, &POWER, voltage.zip(current).map(|(v, i)| v * i), 3);
}

fn aux_and_alarm(out: &mut dyn Fields, aux: Aux, alarm: u16) {
    match aux {
        Aux::StarterVoltage(v) => put_f(out, &STARTER_VOLTAGE, Some(v), 2),
        Aux::MidpointVoltage(v) => put_f(out, &MIDPOINT_VOLTAGE, Some(v), 2),
        Aux::Temperature(c) => put_f(out, &TEMPERATURE, Some(c), 2),
        Aux::None => {}
    }
    out.put(&ALARM, Value::Int(i64::from(alarm)));
    for (spec, (_, set)) in ALARM_FLAGS.iter().zip(super::protocol::alarm_flags(alarm)) {
        out.put(spec, Value::Bool(set));
    }
}

fn monitor(m: &BatteryMonitor, out: &mut dyn Fields) {
    electrical(out, m.voltage_v, m.current_a, 3);
    put_f(out, &SOC, m.soc_percent, 1);
    put_f(out, &CONSUMED_CAPACITY, m.consumed_ah, 1);
    put_i(out, &TIME_TO_GO, m.time_to_go_s.map(i64::from));
    aux_and_alarm(out, m.aux, m.alarm);
}

fn meter(m: &DcEnergyMeter, out: &mut dyn Fields) {
    electrical(out, m.voltage_v, m.current_a, 3);
    aux_and_alarm(out, m.aux, m.alarm);
    out.put(&MONITOR_MODE, Value::Int(i64::from(m.monitor_mode)));
}

fn solar(s: &SolarCharger, out: &mut dyn Fields) {
    electrical(out, s.voltage_v, s.current_a, 1);
    out.put(&CHARGE_STATE, Value::Int(i64::from(s.charge_state)));
    out.put(&CHARGER_ERROR, Value::Int(i64::from(s.error)));
    put_f(out, &PV_POWER, s.pv_power_w.map(f64::from), 0);
    put_f(out, &YIELD_TODAY, s.yield_today_kwh, 2);
    put_f(out, &LOAD_CURRENT, s.load_current_a, 1);
}

/// The record's fields, in schema order.
pub fn write(record: &Record, out: &mut dyn Fields) {
    match record {
        Record::BatteryMonitor(m) => monitor(m, out),
        Record::DcEnergyMeter(m) => meter(m, out),
        Record::SolarCharger(s) => solar(s, out),
    }
}
