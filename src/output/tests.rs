use super::*;
use crate::protocol::jbd::{self, BasicInfo, CellVoltages, JbdReading};
use crate::protocol::powermon::PowermonReading;
use influxdb_line_protocol::{FieldValue, parse_lines};

fn real_jbd() -> JbdReading {
    let info =
        jbd::parse_frame(&crate::protocol::parse_hex(jbd::tests::REAL_4S_INFO).unwrap()).unwrap();
    let cells =
        jbd::parse_frame(&crate::protocol::parse_hex(jbd::tests::REAL_4S_CELLS).unwrap()).unwrap();
    JbdReading {
        info: BasicInfo::parse(&info).unwrap(),
        cells: CellVoltages::parse(&cells).unwrap(),
        model: Some("SP04S034 L4S".into()),
    }
}

fn reading(values: Values) -> Reading {
    Reading {
        device: "house bank".into(),
        address: "AA:BB:CC:DD:EE:01".into(),
        time_ns: 1_700_000_000_123_456_789,
        values,
    }
}

#[test]
fn jbd_line_has_every_schema_field_with_its_type() {
    let text = line(&reading(Values::Jbd(real_jbd())));
    assert!(text.ends_with('\n'));
    let parsed: Vec<_> = parse_lines(&text).collect::<Result<_, _>>().unwrap();
    assert_eq!(parsed.len(), 1);
    let l = &parsed[0];
    assert_eq!(l.series.measurement.as_str(), "jbd_bms");
    let tags: Vec<(String, String)> = l
        .series
        .tag_set
        .as_ref()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        tags,
        vec![
            ("device".into(), "house bank".into()),
            ("address".into(), "AA:BB:CC:DD:EE:01".into()),
            ("model".into(), "SP04S034 L4S".into()),
        ]
    );
    assert_eq!(l.timestamp, Some(1_700_000_000_123_456_789));
    let get = |k: &str| {
        l.field_set
            .iter()
            .find(|(key, _)| key.as_str() == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("missing field {k} in {text}"))
    };
    assert_eq!(get("voltage"), FieldValue::F64(15.6));
    assert_eq!(get("current"), FieldValue::F64(-2.87));
    assert_eq!(get("power"), FieldValue::F64(-44.772));
    assert_eq!(get("remaining_capacity"), FieldValue::F64(4.98));
    assert_eq!(get("nominal_capacity"), FieldValue::F64(5.0));
    assert_eq!(get("soc"), FieldValue::I64(100));
    assert_eq!(get("cycles"), FieldValue::I64(42));
    assert_eq!(get("cell_count"), FieldValue::I64(4));
    assert_eq!(get("cell_1"), FieldValue::F64(3.43));
    assert_eq!(get("cell_4"), FieldValue::F64(3.417));
    assert_eq!(get("cell_min"), FieldValue::F64(3.417));
    assert_eq!(get("cell_max"), FieldValue::F64(3.432));
    assert_eq!(get("cell_avg"), FieldValue::F64(3.426));
    assert_eq!(get("cell_delta"), FieldValue::F64(0.015));
    assert_eq!(get("temperature_1"), FieldValue::F64(22.4));
    assert_eq!(get("temperature_3"), FieldValue::F64(21.7));
    assert_eq!(get("balancing"), FieldValue::I64(0));
    assert_eq!(get("charge_fet"), FieldValue::Boolean(true));
    assert_eq!(get("discharge_fet"), FieldValue::Boolean(true));
    assert_eq!(get("protection"), FieldValue::I64(0));
    assert_eq!(
        get("protection_cell_overvoltage"),
        FieldValue::Boolean(false)
    );
    assert_eq!(
        get("protection_mosfet_software_lock"),
        FieldValue::Boolean(false)
    );
    assert!(matches!(get("software_version"), FieldValue::String(s) if s.as_str() == "8.0"));
    assert!(matches!(get("production_date"), FieldValue::String(s) if s.as_str() == "2022-03-28"));
    assert!(l.field_set.iter().all(|(k, _)| k.as_str() != "cell_5"));
    assert!(
        l.field_set
            .iter()
            .all(|(k, _)| k.as_str() != "temperature_4")
    );
}

#[test]
fn special_characters_in_tags_are_escaped() {
    let mut r = reading(Values::Jbd(real_jbd()));
    r.device = "van, rear=left".into();
    let text = line(&r);
    assert!(
        text.starts_with("jbd_bms,device=van\\,\\ rear\\=left,"),
        "{text}"
    );
    let parsed: Vec<_> = parse_lines(&text).collect::<Result<_, _>>().unwrap();
    assert_eq!(
        parsed[0].series.tag_set.as_ref().unwrap()[0].1.to_string(),
        "van, rear=left"
    );
}

#[test]
fn empty_model_tag_is_omitted() {
    let mut j = real_jbd();
    j.model = Some(String::new());
    let text = line(&reading(Values::Jbd(j)));
    assert!(!text.contains("model="), "{text}");
    j = real_jbd();
    j.model = None;
    assert!(!line(&reading(Values::Jbd(j))).contains("model="));
}

#[test]
fn powermon_line_and_no_soc_when_unknown() {
    let raw = crate::protocol::parse_hex(crate::protocol::powermon::tests::REAL_OLD_A).unwrap();
    let mut pm = PowermonReading::parse(&raw).unwrap();
    let text = line(&reading(Values::Powermon(pm.clone())));
    assert!(text.starts_with("powermon,device=house\\ bank,address=AA:BB:CC:DD:EE:01 voltage1=12.876044,voltage2=0.026982171,current=0.8077788,power=10.400995,temperature=35.50145,coulomb_meter=77.421,energy_meter=1014.636,soc=100i,uptime=428543i,peak_current=34.8353 "), "{text}");
    pm.soc_percent = None;
    let text = line(&reading(Values::Powermon(pm)));
    assert!(!text.contains("soc="), "{text}");
    assert_eq!(parse_lines(&text).count(), 1);
}

#[test]
fn non_finite_values_are_never_written() {
    let mut pm = PowermonReading::parse(
        &crate::protocol::parse_hex(crate::protocol::powermon::tests::REAL_NEW_A).unwrap(),
    )
    .unwrap();
    pm.voltage2_v = f64::NAN;
    pm.power_w = f64::INFINITY;
    let text = line(&reading(Values::Powermon(pm)));
    assert!(!text.contains("NaN") && !text.contains("inf"), "{text}");
    assert!(
        !text.contains("voltage2=") && !text.contains("power="),
        "{text}"
    );
    parse_lines(&text).collect::<Result<Vec<_>, _>>().unwrap();
}

#[test]
fn protection_field_names_follow_the_protocol_bit_names() {
    for (i, (_, name)) in jbd::PROTECTION_BITS.iter().enumerate() {
        assert_eq!(super::PROTECTION_FIELDS[i], format!("protection_{name}"));
    }
}

/// Field keys of the one line `r` prints.
fn keys_of(r: &Reading) -> Vec<String> {
    let text = line(r);
    let parsed: Vec<_> = parse_lines(&text).collect::<Result<_, _>>().unwrap();
    parsed[0]
        .field_set
        .iter()
        .map(|(k, _)| k.to_string())
        .collect()
}

#[test]
fn omitted_jbd_values_are_not_printed() {
    // The real 4S reply with NTC 2 raw 0, RSOC 250, date 0 and 9 bytes of zero padding.
    let mut data = jbd::parse_frame(&crate::protocol::parse_hex(jbd::tests::REAL_4S_INFO).unwrap())
        .unwrap()
        .data;
    data[25..27].copy_from_slice(&[0, 0]);
    data[19] = 250;
    data[10..12].copy_from_slice(&[0, 0]);
    data.extend([0; 9]);
    let mut j = real_jbd();
    j.info = BasicInfo::parse(&jbd::parse_frame(&jbd::encode_reply(3, 0, &data)).unwrap()).unwrap();
    assert_eq!(j.info.omitted.len(), 4, "{:?}", j.info.omitted);
    let keys = keys_of(&reading(Values::Jbd(j)));
    for gone in [
        "soc",
        "temperature_2",
        "production_date",
        "humidity",
        "alarm",
    ] {
        assert!(!keys.iter().any(|k| k == gone), "{gone} in {keys:?}");
    }
    // The others are still there, sensor numbers unchanged.
    for kept in ["voltage", "temperature_1", "temperature_3", "cycles"] {
        assert!(keys.iter().any(|k| k == kept), "{kept} not in {keys:?}");
    }
}

#[test]
fn omitted_powermon_values_are_not_printed() {
    let raw = crate::protocol::parse_hex(crate::protocol::powermon::tests::REAL_NEW_A).unwrap();
    let mut rec: [u8; 51] = crate::protocol::powermon::decode_cobs_frame(&raw)
        .unwrap()
        .try_into()
        .unwrap();
    rec[0..2].copy_from_slice(&0x0A3Fu16.to_le_bytes()); // firmware, not BCD
    rec[47] = 200; // power status
    let pm = PowermonReading::parse(&crate::protocol::powermon::encode_cobs_frame(&rec)).unwrap();
    let keys = keys_of(&reading(Values::Powermon(pm)));
    assert!(!keys.iter().any(|k| k == "firmware_version"), "{keys:?}");
    assert!(!keys.iter().any(|k| k == "power_status"), "{keys:?}");
    assert!(keys.iter().any(|k| k == "voltage1"), "{keys:?}");
}
