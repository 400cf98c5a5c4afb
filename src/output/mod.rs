//! Readings to Influx line protocol. The schema (measurement, tag and field names) lives here
//! and nowhere else; dashboards and users depend on it, so names only ever get added.

use std::borrow::Cow;

use influxdb_line_protocol::LineProtocolBuilder;

use crate::protocol::jbd::{self, JbdReading};
use crate::protocol::powermon::PowermonReading;
use crate::reading::{Reading, Values};

pub const JBD_MEASUREMENT: &str = "jbd_bms";

/// `protection_<name>` for each bit of [`jbd::PROTECTION_BITS`], in the same order.
const PROTECTION_FIELDS: [&str; jbd::PROTECTION_BITS.len()] = [
    "protection_cell_overvoltage",
    "protection_cell_undervoltage",
    "protection_pack_overvoltage",
    "protection_pack_undervoltage",
    "protection_charge_overtemperature",
    "protection_charge_undertemperature",
    "protection_discharge_overtemperature",
    "protection_discharge_undertemperature",
    "protection_charge_overcurrent",
    "protection_discharge_overcurrent",
    "protection_short_circuit",
    "protection_frontend_ic_error",
    "protection_mosfet_software_lock",
    "protection_charge_mosfet_breakdown",
    "protection_discharge_mosfet_breakdown",
];
pub const POWERMON_MEASUREMENT: &str = "powermon";

/// One field value, typed as line protocol types it.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Float(f64),
    Int(i64),
    Bool(bool),
    Str(String),
}

impl influxdb_line_protocol::builder::FieldValue for &Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use influxdb_line_protocol::builder::FieldValue as F;
        match self {
            Field::Float(v) => F::fmt(v, f),
            Field::Int(v) => F::fmt(v, f),
            Field::Bool(v) => F::fmt(v, f),
            Field::Str(v) => F::fmt(&v.as_str(), f),
        }
    }
}

/// Rounds a derived value to `decimals`, so 15.6 V x -2.87 A prints -44.772, not
/// -44.772000000000006.
fn round(v: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (v * scale).round() / scale
}

/// Measurement, tags and fields of a reading, in schema order.
pub struct Point {
    pub measurement: &'static str,
    pub tags: Vec<(&'static str, String)>,
    /// Fixed names are borrowed; only numbered ones (`cell_7`) are built per line.
    pub fields: Vec<(Cow<'static, str>, Field)>,
}

pub fn point(reading: &Reading) -> Point {
    let mut tags = vec![
        ("device", reading.device.clone()),
        ("address", reading.address.clone()),
    ];
    let (measurement, fields) = match &reading.values {
        Values::Jbd(jbd) => {
            if let Some(model) = jbd.model.as_ref().filter(|m| !m.is_empty()) {
                tags.push(("model", model.clone()));
            }
            (JBD_MEASUREMENT, jbd_fields(jbd))
        }
        Values::Powermon(pm) => (POWERMON_MEASUREMENT, powermon_fields(pm)),
    };
    // Empty tag values are not allowed in line protocol: omit them.
    tags.retain(|(_, v)| !v.is_empty());
    Point {
        measurement,
        tags,
        // Never emit NaN or infinity.
        fields: fields
            .into_iter()
            .filter(|(_, v)| !matches!(v, Field::Float(x) if !x.is_finite()))
            .collect(),
    }
}

pub fn jbd_fields(r: &JbdReading) -> Vec<(Cow<'static, str>, Field)> {
    use Field::*;
    let info = &r.info;
    let cells = &r.cells;
    let mut f: Vec<(Cow<'static, str>, Field)> = vec![
        ("voltage".into(), Float(info.voltage_v)),
        ("current".into(), Float(info.current_a)),
        ("power".into(), Float(round(info.power_w(), 3))),
        (
            "remaining_capacity".into(),
            Float(info.remaining_capacity_ah),
        ),
        ("nominal_capacity".into(), Float(info.nominal_capacity_ah)),
    ];
    if let Some(soc) = info.soc_percent {
        f.push(("soc".into(), Int(soc.into())));
    }
    f.push(("cycles".into(), Int(info.cycles.into())));
    f.push(("cell_count".into(), Int(cells.volts.len() as i64)));
    for (i, v) in cells.volts.iter().enumerate() {
        f.push((format!("cell_{}", i + 1).into(), Float(*v)));
    }
    f.push(("cell_min".into(), Float(cells.min())));
    f.push(("cell_max".into(), Float(cells.max())));
    f.push(("cell_avg".into(), Float(round(cells.avg(), 4))));
    f.push(("cell_delta".into(), Float(round(cells.delta(), 3))));
    // An omitted NTC leaves a gap: temperature_N stays the BMS's sensor N.
    for (i, t) in info.temperatures_c.iter().enumerate() {
        if let Some(t) = t {
            f.push((format!("temperature_{}", i + 1).into(), Float(*t)));
        }
    }
    f.push(("balancing".into(), Int(info.balancing.into())));
    f.push(("charge_fet".into(), Bool(info.charge_fet_on)));
    f.push(("discharge_fet".into(), Bool(info.discharge_fet_on)));
    f.push(("protection".into(), Int(info.protection.0.into())));
    for (i, (_, on)) in info.protection.flags().enumerate() {
        f.push((PROTECTION_FIELDS[i].into(), Bool(on)));
    }
    f.push((
        "software_version".into(),
        Str(info.software_version_string()),
    ));
    if let Some(date) = info.production_date {
        f.push(("production_date".into(), Str(date.to_string())));
    }
    if let Some(h) = info.v11.humidity_percent {
        f.push(("humidity".into(), Int(h.into())));
    }
    if let Some(a) = info.v11.alarm {
        f.push(("alarm".into(), Int(a.into())));
    }
    if let Some(c) = info.v11.full_charge_capacity_ah {
        f.push(("full_charge_capacity".into(), Float(c)));
    }
    f
}

pub fn powermon_fields(r: &PowermonReading) -> Vec<(Cow<'static, str>, Field)> {
    use Field::*;
    let mut f: Vec<(Cow<'static, str>, Field)> = vec![
        ("voltage1".into(), Float(r.voltage1_v)),
        ("voltage2".into(), Float(r.voltage2_v)),
        ("current".into(), Float(r.current_a)),
        ("power".into(), Float(r.power_w)),
        ("temperature".into(), Float(r.temperature_c)),
        ("coulomb_meter".into(), Float(r.coulomb_meter_ah)),
        ("energy_meter".into(), Float(r.energy_meter_wh)),
    ];
    if let Some(soc) = r.soc_percent {
        f.push(("soc".into(), Int(soc.into())));
    }
    if let Some(up) = r.uptime_s {
        f.push(("uptime".into(), Int(up.into())));
    }
    if let Some(peak) = r.peak_current_a {
        f.push(("peak_current".into(), Float(peak)));
    }
    if let Some(ps) = r.power_status {
        f.push(("power_status".into(), Int(ps.into())));
    }
    if let Some(rt) = r.runtime_min {
        f.push(("runtime".into(), Int(rt.into())));
    }
    if let Some(fw) = &r.firmware_version {
        f.push(("firmware_version".into(), Str(fw.clone())));
    }
    f
}

/// Appends the reading as one line (with its trailing newline) to `buf`.
/// A point without fields is never written: it would be an invalid line.
pub fn write_line(buf: &mut Vec<u8>, reading: &Reading) {
    let p = point(reading);
    let mut fields = p.fields.iter();
    let Some((first_key, first_value)) = fields.next() else {
        return;
    };
    let mut b = LineProtocolBuilder::new_with(std::mem::take(buf)).measurement(p.measurement);
    for (k, v) in &p.tags {
        b = b.tag(k, v);
    }
    let mut b = b.field(first_key, first_value);
    for (k, v) in fields {
        b = b.field(k, v);
    }
    *buf = b.timestamp(reading.time_ns).close_line().build();
}

/// The reading as one line, newline included.
pub fn line(reading: &Reading) -> String {
    let mut buf = Vec::new();
    write_line(&mut buf, reading);
    String::from_utf8(buf).expect("line protocol builder writes UTF-8")
}

#[cfg(test)]
mod tests;
