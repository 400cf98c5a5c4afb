//! What every registered kind must do, tested for each one in [`KINDS`]: a new kind is held
//! to it by being listed there, with no test of its own to remember.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use influxdb_line_protocol::{FieldValue as Parsed, parse_lines};
use proptest::prelude::*;

use super::*;
use crate::demo::DemoLink;
use crate::device::{self, DeviceSpec};
use crate::output;
use crate::reading::Reading;

/// Checks one printed line against its kind's schema: the measurement, only known tags, only
/// schema fields with their schema types, and every field the schema says is always there.
fn assert_conforms(kind: &Kind, line: &str) {
    let parsed: Vec<_> = parse_lines(line)
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{kind}: invalid line protocol ({e}): {line}"));
    assert_eq!(parsed.len(), 1, "{kind}: one line: {line}");
    let l = &parsed[0];
    assert_eq!(l.series.measurement.as_str(), kind.measurement, "{line}");
    for (tag, _) in l.series.tag_set.iter().flatten() {
        let tag = tag.as_str();
        assert!(
            ["device", "address"].contains(&tag) || kind.tags.contains(&tag),
            "{kind}: tag {tag:?} is not declared: {line}"
        );
    }
    let mut seen = HashSet::new();
    for (key, value) in &l.field_set {
        let spec = kind
            .field(key.as_str())
            .unwrap_or_else(|| panic!("{kind}: field {key:?} is not in the schema: {line}"));
        let ty = match value {
            Parsed::F64(_) => FieldType::Float,
            Parsed::I64(_) => FieldType::Int,
            Parsed::Boolean(_) => FieldType::Bool,
            Parsed::String(_) => FieldType::Str,
            other => panic!("{kind}: {key}: a type no schema has: {other:?}"),
        };
        assert_eq!(ty, spec.ty, "{kind}: {key} printed as {ty:?}: {line}");
        seen.insert(spec.key);
    }
    for spec in (kind.schema)() {
        if spec.presence != Presence::Optional {
            assert!(
                seen.contains(spec.key),
                "{kind}: {} is always printed, and is missing: {line}",
                spec.key
            );
        }
    }
}

#[tokio::test]
async fn every_kinds_demo_devices_through_its_session_print_exactly_its_schema() {
    for &kind in KINDS {
        let demo = (kind.demo)();
        assert!(!demo.is_empty(), "{kind} has no demo device");
        for d in demo {
            let spec = DeviceSpec {
                name: d.name.into(),
                kind,
                address: d.address.into(),
                timeout: Duration::from_secs(5),
                adapter: None,
                password: d.password.map(crate::secret::Secret::new),
                passkey: None,
                key: d.key.map(crate::secret::Secret::new),
            };
            // The generic device task over the demo transport: the kind's real session.
            let handle = device::spawn(spec, DemoLink::new(d.peripheral));
            for _ in 0..2 {
                let reading = handle.poll().await.expect("a demo device answers");
                assert_eq!(reading.values.kind(), kind);
                assert!(reading.values.omitted().is_empty(), "{reading:?}");
                assert_conforms(kind, &output::line(&reading));
            }
            assert!(handle.shutdown().await);
        }
    }
}

#[test]
fn every_schema_has_unique_keys_that_need_no_escaping() {
    let mut measurements = HashSet::new();
    for &kind in KINDS {
        assert!(
            measurements.insert(kind.measurement),
            "{kind}: measurement used twice"
        );
        let schema = (kind.schema)();
        let mut keys = BTreeSet::new();
        for spec in &schema {
            assert!(keys.insert(spec.key), "{kind}: {} twice", spec.key);
            assert!(
                !spec.key.is_empty()
                    && spec
                        .key
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{kind}: key {:?}: lower case, digits and _ only",
                spec.key
            );
        }
        // A fixed key is never read as a member of a numbered family.
        for fixed in schema.iter().filter(|s| s.presence != Presence::Numbered) {
            for family in schema.iter().filter(|s| s.presence == Presence::Numbered) {
                assert!(
                    !family.matches(fixed.key),
                    "{kind}: {} looks like a {} number",
                    fixed.key,
                    family.key
                );
            }
        }
    }
}

#[test]
fn kinds_have_unique_names_and_are_found_by_them() {
    let mut names = HashSet::new();
    for &kind in KINDS {
        assert!(names.insert(kind.name), "{kind} twice");
        assert_eq!(by_name(kind.name), Some(kind));
    }
    assert_eq!(names.len(), super::names().len());
    assert_eq!(by_name("daly"), None);
    // A kind equals itself only.
    for &a in KINDS {
        for &b in KINDS {
            assert_eq!(a == b, std::ptr::eq(a, b), "{a} vs {b}");
        }
    }
}

#[test]
fn a_device_advertising_like_a_kinds_demo_device_is_recognised_as_that_kind() {
    for &kind in KINDS {
        for mut d in (kind.demo)() {
            let services: Vec<Uuid> = d
                .peripheral
                .characteristics()
                .iter()
                .map(|c| c.service)
                .collect();
            let manufacturers: Vec<u16> = d
                .peripheral
                .advertisement(0.0)
                .map(|(company, _)| company)
                .into_iter()
                .collect();
            let adv = Advertised {
                name: "",
                services: &services,
                manufacturers: &manufacturers,
            };
            assert_eq!(recognise(&adv), Some(kind), "{}", d.name);
        }
    }
    let nothing = Advertised {
        name: "tv",
        services: &[],
        manufacturers: &[0x004C],
    };
    assert_eq!(recognise(&nothing), None);
}

/// What `blebatt decode <kind>` prints for `hex`, if it decodes.
fn decoded_line(kind: &Kind, hex: &[String], key: Option<&str>) -> Option<String> {
    let values = (kind.decode.run)(crate::devices::DecodeInput { hex, key }).ok()?;
    let reading = Reading {
        derived: None,
        device: "decoded".into(),
        address: String::new(),
        time_ns: 0,
        values: values.into(),
    };
    Some(output::line(&reading))
}

#[test]
fn every_kinds_decode_examples_decode_and_print_within_its_schema() {
    for &kind in KINDS {
        assert!(
            !kind.decode.examples.is_empty(),
            "{kind}: no example capture"
        );
        for e in kind.decode.examples {
            let what = e.what;
            assert_eq!(
                e.hex.len() > 1,
                kind.decode.many && e.hex.len() > 1,
                "{what}"
            );
            assert_eq!(e.key.is_some(), kind.decode.key, "{what}");
            let hex: Vec<String> = e.hex.iter().map(|a| a.to_string()).collect();
            let line = decoded_line(kind, &hex, e.key)
                .unwrap_or_else(|| panic!("{kind}: the example {what:?} does not decode"));
            assert_conforms(kind, &line);
        }
    }
}

/// A kind, one of its example captures, and edits to its bytes: flips, cuts and insertions.
fn mutated_example() -> impl Strategy<Value = (&'static Kind, Vec<String>, Option<&'static str>)> {
    let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..6);
    (
        prop::sample::select(KINDS.to_vec()),
        any::<prop::sample::Index>(),
        edits,
    )
        .prop_map(|(kind, pick, edits)| {
            let example = kind.decode.examples[pick.index(kind.decode.examples.len())];
            let args = example.hex;
            let mut bytes: Vec<Vec<u8>> = args
                .iter()
                .map(|a| protocol::parse_hex(a).expect("examples are hex"))
                .collect();
            for (at, byte, how) in edits {
                let arg = &mut bytes[at.index(args.len())];
                let i = at.index(arg.len() + 1);
                match how {
                    0 if i < arg.len() => arg[i] = byte,
                    1 => arg.truncate(i),
                    _ => arg.insert(i, byte),
                }
            }
            (kind, bytes.iter().map(hex::encode).collect(), example.key)
        })
}

proptest! {
    #![proptest_config(crate::devices::protocol::proptest_config())]

    /// Whatever bytes a user pastes, every kind's decoder returns without panicking, and what
    /// it decodes prints within its schema: random bytes, and its real captures edited.
    #[test]
    fn fuzz_every_kinds_decoder(
        args in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 1..4),
        (kind, edited, key) in mutated_example(),
    ) {
        let hex: Vec<String> = args.iter().map(hex::encode).collect();
        for &any_kind in KINDS {
            let its_key = any_kind.decode.examples[0].key;
            if let Some(line) = decoded_line(any_kind, &hex, its_key).filter(|l| !l.is_empty()) {
                assert_conforms(any_kind, &line);
            }
        }
        if let Some(line) = decoded_line(kind, &edited, key).filter(|l| !l.is_empty()) {
            assert_conforms(kind, &line);
        }
    }
}

/// The README's table of a measurement: the rows after its `<measurement>,device=...` line.
fn readme_table(measurement: &str) -> Vec<&'static str> {
    const README: &str = include_str!("../../README.md");
    README
        .lines()
        .skip_while(|l| !l.starts_with(&format!("`{measurement},device=")))
        .skip(1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .collect()
}

#[test]
fn the_readme_documents_every_schema_field_with_its_type_and_unit() {
    for &kind in KINDS {
        let table = readme_table(kind.measurement);
        assert!(!table.is_empty(), "{kind}: no README table");
        for spec in (kind.schema)() {
            let shown = match spec.presence {
                Presence::Numbered => format!("`{}_1`", spec.key),
                _ => format!("`{}`", spec.key),
            };
            let row = table
                .iter()
                .find(|r| r.contains(&shown))
                .unwrap_or_else(|| panic!("{kind}: the README's table has no {shown}"));
            let ty = match spec.ty {
                FieldType::Float => "float",
                FieldType::Int => "integer",
                FieldType::Bool => "boolean",
                FieldType::Str => "string",
            };
            assert!(row.contains(ty), "{kind}: {shown} is a {ty}: {row}");
            assert!(
                row.contains(spec.unit),
                "{kind}: {shown} is in {}: {row}",
                spec.unit
            );
        }
    }
}
