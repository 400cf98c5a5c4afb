//! The `powermon` measurement: its schema and the reading -> fields mapping.

use super::protocol::PowermonReading;
use crate::devices::schema::{FieldSpec, FieldType, Fields, Value};

pub const MEASUREMENT: &str = "powermon";

use FieldType::{Float, Int, Str};

pub const VOLTAGE1: FieldSpec = FieldSpec::new("voltage1", Float, "V");
pub const VOLTAGE2: FieldSpec = FieldSpec::new("voltage2", Float, "V");
/// Positive into the battery, as the shunt is configured.
pub const CURRENT: FieldSpec = FieldSpec::new("current", Float, "A");
pub const POWER: FieldSpec = FieldSpec::new("power", Float, "W");
pub const TEMPERATURE: FieldSpec = FieldSpec::new("temperature", Float, "degC");
pub const COULOMB_METER: FieldSpec = FieldSpec::new("coulomb_meter", Float, "Ah");
pub const ENERGY_METER: FieldSpec = FieldSpec::new("energy_meter", Float, "Wh");
pub const SOC: FieldSpec = FieldSpec::new("soc", Int, "%").optional();
/// Old firmware layout only.
pub const UPTIME: FieldSpec = FieldSpec::new("uptime", Int, "s").optional();
/// Old firmware layout only.
pub const PEAK_CURRENT: FieldSpec = FieldSpec::new("peak_current", Float, "A").optional();
/// New layout only: 0 off, 1 on, 2 LVD, 3 OCD, 4 HVD, 5 FGD, 6 NCH, 7 LTD, 8 HTD.
pub const POWER_STATUS: FieldSpec = FieldSpec::new("power_status", Int, "").optional();
/// New layout only: time to go.
pub const RUNTIME: FieldSpec = FieldSpec::new("runtime", Int, "min").optional();
pub const FIRMWARE_VERSION: FieldSpec = FieldSpec::new("firmware_version", Str, "").optional();

/// Every field, in the order they are printed.
pub fn schema() -> Vec<FieldSpec> {
    let mut s = vec![
        VOLTAGE1,
        VOLTAGE2,
        CURRENT,
        POWER,
        TEMPERATURE,
        COULOMB_METER,
        ENERGY_METER,
        SOC,
        UPTIME,
        PEAK_CURRENT,
        POWER_STATUS,
        RUNTIME,
        FIRMWARE_VERSION,
    ];
    s.extend(crate::energy::fields::SCHEMA);
    s
}

/// The reading's fields, in schema order.
pub fn write(r: &PowermonReading, out: &mut dyn Fields) {
    out.put(&VOLTAGE1, Value::Float(r.voltage1_v));
    out.put(&VOLTAGE2, Value::Float(r.voltage2_v));
    out.put(&CURRENT, Value::Float(r.current_a));
    out.put(&POWER, Value::Float(r.power_w));
    out.put(&TEMPERATURE, Value::Float(r.temperature_c));
    out.put(&COULOMB_METER, Value::Float(r.coulomb_meter_ah));
    out.put(&ENERGY_METER, Value::Float(r.energy_meter_wh));
    if let Some(soc) = r.soc_percent {
        out.put(&SOC, Value::Int(soc.into()));
    }
    if let Some(up) = r.uptime_s {
        out.put(&UPTIME, Value::Int(up.into()));
    }
    if let Some(peak) = r.peak_current_a {
        out.put(&PEAK_CURRENT, Value::Float(peak));
    }
    if let Some(ps) = r.power_status {
        out.put(&POWER_STATUS, Value::Int(ps.into()));
    }
    if let Some(rt) = r.runtime_min {
        out.put(&RUNTIME, Value::Int(rt.into()));
    }
    if let Some(fw) = &r.firmware_version {
        out.put(&FIRMWARE_VERSION, Value::Str(fw));
    }
}
