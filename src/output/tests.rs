use std::sync::Arc;

use super::*;
use crate::devices::Values;
use crate::devices::jbd::protocol::{self as jbd, BasicInfo, CellVoltages, JbdReading};
use crate::devices::powermon::protocol::PowermonReading;
use crate::devices::protocol::parse_hex;
use influxdb_line_protocol::{FieldValue, parse_lines};

fn real_jbd() -> JbdReading {
    let info = jbd::parse_frame(&parse_hex(jbd::tests::REAL_4S_INFO).unwrap()).unwrap();
    let cells = jbd::parse_frame(&parse_hex(jbd::tests::REAL_4S_CELLS).unwrap()).unwrap();
    JbdReading {
        info: BasicInfo::parse(&info).unwrap(),
        cells: CellVoltages::parse(&cells).unwrap(),
        model: Some("SP04S034 L4S".into()),
    }
}

fn reading(values: impl Values) -> Reading {
    Reading {
        derived: None,
        device: "house bank".into(),
        address: "AA:BB:CC:DD:EE:01".into(),
        time_ns: 1_700_000_000_123_456_789,
        values: Arc::new(values),
    }
}

#[test]
fn jbd_line_has_every_schema_field_with_its_type() {
    let text = line(&reading(real_jbd()));
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
    let mut r = reading(real_jbd());
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
    let text = line(&reading(j));
    assert!(!text.contains("model="), "{text}");
    j = real_jbd();
    j.model = None;
    assert!(!line(&reading(j)).contains("model="));
}

#[test]
fn powermon_line_and_no_soc_when_unknown() {
    let raw = parse_hex(crate::devices::powermon::protocol::tests::REAL_OLD_A).unwrap();
    let mut pm = PowermonReading::parse(&raw).unwrap();
    let text = line(&reading(pm.clone()));
    assert!(text.starts_with("powermon,device=house\\ bank,address=AA:BB:CC:DD:EE:01 voltage1=12.876044,voltage2=0.026982171,current=0.8077788,power=10.400995,temperature=35.50145,coulomb_meter=77.421,energy_meter=1014.636,soc=100i,uptime=428543i,peak_current=34.8353 "), "{text}");
    pm.soc_percent = None;
    let text = line(&reading(pm));
    assert!(!text.contains("soc="), "{text}");
    assert_eq!(parse_lines(&text).count(), 1);
}

#[test]
fn non_finite_values_are_never_written() {
    let mut pm = PowermonReading::parse(
        &parse_hex(crate::devices::powermon::protocol::tests::REAL_NEW_A).unwrap(),
    )
    .unwrap();
    pm.voltage2_v = f64::NAN;
    pm.power_w = f64::INFINITY;
    let text = line(&reading(pm));
    assert!(!text.contains("NaN") && !text.contains("inf"), "{text}");
    assert!(
        !text.contains("voltage2=") && !text.contains("power="),
        "{text}"
    );
    parse_lines(&text).collect::<Result<Vec<_>, _>>().unwrap();
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
    let mut data = jbd::parse_frame(&parse_hex(jbd::tests::REAL_4S_INFO).unwrap())
        .unwrap()
        .data;
    data[25..27].copy_from_slice(&[0, 0]);
    data[19] = 250;
    data[10..12].copy_from_slice(&[0, 0]);
    data.extend([0; 9]);
    let mut j = real_jbd();
    j.info = BasicInfo::parse(&jbd::parse_frame(&jbd::encode_reply(3, 0, &data)).unwrap()).unwrap();
    assert_eq!(j.info.omitted.len(), 4, "{:?}", j.info.omitted);
    let keys = keys_of(&reading(j));
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
    let raw = parse_hex(crate::devices::powermon::protocol::tests::REAL_NEW_A).unwrap();
    let mut rec: [u8; 51] = crate::devices::powermon::protocol::decode_cobs_frame(&raw)
        .unwrap()
        .try_into()
        .unwrap();
    rec[0..2].copy_from_slice(&0x0A3Fu16.to_le_bytes()); // firmware, not BCD
    rec[47] = 200; // power status
    let pm = PowermonReading::parse(&crate::devices::powermon::protocol::encode_cobs_frame(&rec))
        .unwrap();
    let keys = keys_of(&reading(pm));
    assert!(!keys.iter().any(|k| k == "firmware_version"), "{keys:?}");
    assert!(!keys.iter().any(|k| k == "power_status"), "{keys:?}");
    assert!(keys.iter().any(|k| k == "voltage1"), "{keys:?}");
}

/// The influxdb-line-protocol builder's line for the same point: the reference the writer is
/// held to, byte for byte.
fn reference_line(r: &Reading) -> Vec<u8> {
    use crate::devices::schema::FieldValue as Owned;
    use influxdb_line_protocol::LineProtocolBuilder;
    let v = r.values.as_ref();
    let mut tags = vec![("device", r.device.clone()), ("address", r.address.clone())];
    v.tags(&mut |k, val| tags.push((k, val.to_string())));
    tags.retain(|(_, val)| !val.is_empty());
    let mut fields: Vec<(String, Owned)> = Vec::new();
    v.fields(&mut fields);
    fields.retain(|(_, f)| !matches!(f, Owned::Float(x) if !x.is_finite()));
    let Some(((first_key, first), rest)) = fields.split_first() else {
        return Vec::new();
    };
    macro_rules! put {
        ($b:expr, $k:expr, $v:expr) => {
            match $v {
                Owned::Float(x) => $b.field($k, *x),
                Owned::Int(x) => $b.field($k, *x),
                Owned::Bool(x) => $b.field($k, *x),
                Owned::Str(s) => $b.field($k, s.as_str()),
            }
        };
    }
    let mut b = LineProtocolBuilder::new().measurement(v.kind().measurement);
    for (k, val) in &tags {
        b = b.tag(k, val);
    }
    let mut b = put!(b, first_key, first);
    for (k, val) in rest {
        b = put!(b, k, val);
    }
    b.timestamp(r.time_ns).close_line().build()
}

/// A reading of any shape: keys, tags and strings with every character line protocol escapes.
#[derive(Debug)]
struct AnyValues {
    tags: Vec<String>,
    fields: Vec<(FieldSpec, Option<usize>, crate::devices::schema::FieldValue)>,
}

impl Values for AnyValues {
    fn kind(&self) -> &'static crate::devices::Kind {
        &crate::devices::jbd::KIND
    }

    fn tags(&self, tag: &mut dyn FnMut(&'static str, &str)) {
        for t in &self.tags {
            tag("model", t);
        }
    }

    fn fields(&self, out: &mut dyn Fields) {
        use crate::devices::schema::FieldValue as Owned;
        for (spec, n, v) in &self.fields {
            let v = match v {
                Owned::Float(x) => Value::Float(*x),
                Owned::Int(x) => Value::Int(*x),
                Owned::Bool(x) => Value::Bool(*x),
                Owned::Str(s) => Value::Str(s),
            };
            out.field(spec, *n, v);
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

mod same_as_the_builder {
    use proptest::prelude::*;

    use super::*;
    use crate::devices::schema::{FieldType, FieldValue as Owned};

    /// Text with every escaped character, plain ASCII and multi-byte UTF-8.
    fn text() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[a-z0-9 ,=\"\\\\é温_]{0,12}").unwrap()
    }

    fn value() -> impl Strategy<Value = Owned> {
        prop_oneof![
            proptest::num::f64::ANY.prop_map(Owned::Float),
            any::<f64>().prop_map(Owned::Float),
            any::<i64>().prop_map(Owned::Int),
            any::<bool>().prop_map(Owned::Bool),
            text().prop_map(Owned::Str),
        ]
    }

    fn field() -> impl Strategy<Value = (FieldSpec, Option<usize>, Owned)> {
        (
            proptest::string::string_regex("[a-z ,=\\\\é_]{1,8}").unwrap(),
            prop::option::of(1usize..40),
            value(),
        )
            .prop_map(|(key, n, v)| {
                // Keys are 'static in a schema; a test's few leak.
                let key: &'static str = Box::leak(key.into_boxed_str());
                (FieldSpec::new(key, FieldType::Float, ""), n, v)
            })
    }

    proptest! {
        #![proptest_config(crate::devices::protocol::proptest_config())]

        #[test]
        fn any_reading_is_written_byte_for_byte_as_the_builder_writes_it(
            device in text(),
            address in text(),
            tags in prop::collection::vec(text(), 0..3),
            fields in prop::collection::vec(field(), 0..8),
            time_ns in any::<i64>(),
        ) {
            let r = Reading {
                derived: None,
                device,
                address,
                time_ns,
                values: Arc::new(AnyValues { tags, fields }),
            };
            let mut buf = b"previous line\n".to_vec();
            write_line(&mut buf, &r);
            let mut want = b"previous line\n".to_vec();
            want.extend(reference_line(&r));
            prop_assert_eq!(String::from_utf8_lossy(&buf), String::from_utf8_lossy(&want));
        }

        #[test]
        fn any_jbd_or_powermon_reading_is_written_as_the_builder_writes_it(
            volts in prop::collection::vec(proptest::num::f64::ANY, 1..33),
            temps in prop::collection::vec(prop::option::of(any::<f64>()), 0..7),
            current in proptest::num::f64::ANY,
            model in prop::option::of(text()),
            time_ns in any::<i64>(),
        ) {
            let mut j = real_jbd();
            j.cells.volts = volts;
            j.info.temperatures_c = temps;
            j.info.current_a = current;
            j.model = model;
            let mut pm = PowermonReading::parse(
                &parse_hex(crate::devices::powermon::protocol::tests::REAL_NEW_A).unwrap(),
            )
            .unwrap();
            pm.current_a = current;
            for values in [Arc::new(j) as Arc<dyn Values>, Arc::new(pm)] {
                let r = Reading {
                    derived: None,
                    device: "house bank".into(),
                    address: "AA:BB:CC:DD:EE:01".into(),
                    time_ns,
                    values,
                };
                prop_assert_eq!(line(&r).into_bytes(), reference_line(&r));
            }
        }
    }
}
