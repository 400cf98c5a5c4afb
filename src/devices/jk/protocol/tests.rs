//! The JK02 protocol on patman15/aiobmsble's captured records (tests/bms/test_jikong_bms.py);
//! expected values as shared/notes/next-wave.md 4.1 lists them, decoded independently there.

use proptest::prelude::*;

use super::*;
use crate::devices::jk::{
    EXAMPLE_CELL_INFO_24S as CELL_INFO_24S, EXAMPLE_DEVICE_INFO_24S as DEVICE_INFO_24S,
};
use crate::devices::protocol::parse_hex;

pub const DEVICE_INFO_32S: &str = "\
     55 aa eb 90 03 a3 4a 4b 5f 42 32 41 38 53 32 30 50 00 00 00 \
     00 00 31 31 2e 58 41 00 00 00 31 31 2e 34 38 00 00 00 e4 a7 \
     46 00 07 00 00 00 31 32 76 34 32 30 61 00 00 00 00 00 00 00 \
     00 00 31 32 33 34 00 00 00 00 00 00 00 00 00 00 00 00 32 34 \
     30 37 30 34 00 00 34 30 34 30 39 32 43 32 32 36 32 00 30 30 \
     30 00 49 6e 70 75 74 20 55 73 65 72 64 61 74 61 00 00 31 34 \
     30 37 30 33 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 fe f9 ff ff 1f 2d 00 02 00 00 \
     00 00 90 1f 00 00 00 00 c0 d8 e7 32 00 00 00 01 00 00 00 00 \
     00 00 00 00 00 00 07 04 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 41 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 09 00 00 00 64 00 \
     00 00 5f 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 fe bf 21 06 00 00 00 00 00 00 00 00 d8";

pub const CELL_INFO_32S: &str = "\
     55 aa eb 90 02 ad f3 0c f3 0c f3 0c f0 0c f1 0c f0 0c f1 0c \
     f1 0c 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 ff 00 00 00 f2 0c 03 00 00 07 \
     38 00 37 00 36 00 37 00 36 00 37 00 36 00 37 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 36 01 00 00 00 00 8d 67 00 00 60 db 02 00 69 e4 \
     ff ff 1c 01 24 01 00 00 00 00 00 00 00 44 80 2c 02 00 50 34 \
     03 00 15 00 00 00 bc 62 44 00 64 00 00 00 1e f3 68 00 01 01 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 ff 00 01 00 00 00 \
     f1 03 00 00 23 00 29 b4 3f 40 00 00 00 00 5a 0a 00 00 00 01 \
     00 01 00 06 00 00 ef 3d 08 04 00 00 00 00 36 01 00 00 00 00 \
     f1 03 64 39 67 00 1a 00 00 00 80 51 01 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 01 fe ff 7f dc 0f 01 00 80 03 00 00 00 b4";

pub const CELL_INFO_32S_V15: &str = "\
     55 aa eb 90 02 ac 05 0d fe 0c fe 0c 01 0d 01 0d fd 0c fb 0c \
     01 0d fc 0c fb 0c fe 0c fb 0c f8 0c fb 0c fb 0c 09 0d 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 ff ff 00 00 ff 0c 10 00 0f 0c \
     40 00 3d 00 40 00 3d 00 41 00 3f 00 41 00 3e 00 41 00 3e 00 \
     41 00 3d 00 40 00 3e 00 41 00 3f 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 81 00 00 00 00 00 e8 cf 00 00 4a e4 19 00 89 7c \
     00 00 86 00 80 00 00 00 00 00 00 00 00 19 86 c0 00 00 40 0d \
     03 00 09 00 00 00 b1 5f 1c 00 64 00 00 00 8c 4c 76 01 01 01 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 ff 00 01 00 00 00 \
     05 04 52 00 00 00 d4 4e 40 40 00 00 00 00 ca 14 00 00 00 01 \
     01 01 00 06 00 00 ea 67 00 00 00 00 00 00 cd 00 c3 00 bf 00 \
     bd 03 28 7f 03 0a 1d 00 00 00 80 51 01 00 00 00 01 00 a5 02 \
     02 00 00 00 00 00 00 fe ff 7f dc 2f 01 01 b0 cf 07 00 00 bb";

/// The module's "ready" answer with its `AT\r\n` chatter attached (the same capture file).
const ACK_WITH_AT: &str = "aa 55 90 eb c8 01 01 00 00 00 00 00 00 00 00 00 00 00 00 44 41 54 0d 0a";

fn hex(s: &str) -> Vec<u8> {
    parse_hex(s).unwrap()
}

fn record(s: &str) -> Record {
    let mut r = Reassembler::new();
    let mut out = r.push(&hex(s));
    assert_eq!(out.len(), 1);
    out.remove(0).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn commands_are_the_documented_frames() {
    assert_eq!(
        command(CMD_DEVICE_INFO).to_vec(),
        hex("AA 55 90 EB 97 00 00 00 00 00 00 00 00 00 00 00 00 00 00 11")
    );
    assert_eq!(
        command(CMD_CELL_INFO).to_vec(),
        hex("AA 55 90 EB 96 00 00 00 00 00 00 00 00 00 00 00 00 00 00 10")
    );
}

#[test]
fn device_info_names_the_bms_and_its_layout() {
    let d = DeviceInfo::parse(&record(DEVICE_INFO_24S)).unwrap();
    assert_eq!(
        (
            d.model.as_str(),
            d.hardware_version.as_str(),
            d.software_version.as_str()
        ),
        ("JK-B2A20S20P", "10.XG", "10.08")
    );
    assert_eq!(
        (d.name.as_str(), d.serial.as_str()),
        ("JK-BMS-A", "2032816012")
    );
    assert_eq!(d.layout, Layout::Cells24);
    let d = DeviceInfo::parse(&record(DEVICE_INFO_32S)).unwrap();
    assert_eq!(
        (
            d.model.as_str(),
            d.hardware_version.as_str(),
            d.software_version.as_str()
        ),
        ("JK_B2A8S20P", "11.XA", "11.48")
    );
    assert_eq!(
        (d.name.as_str(), d.serial.as_str()),
        ("12v420a", "404092C2262")
    );
    assert_eq!(d.layout, Layout::Cells32);
    assert_eq!(
        DeviceInfo::parse(&record(CELL_INFO_24S)),
        Err(JkError::WrongType {
            what: "device info",
            got: 2
        })
    );
}

#[test]
fn layouts_follow_the_software_version() {
    assert_eq!(Layout::for_version("10.08"), Some(Layout::Cells24));
    assert_eq!(Layout::for_version("V10.99"), Some(Layout::Cells24));
    assert_eq!(Layout::for_version("11.48"), Some(Layout::Cells32));
    assert_eq!(Layout::for_version("19.27"), Some(Layout::Cells32));
    assert_eq!(Layout::for_version(""), None);
    assert_eq!(Layout::for_version("x.1"), None);
}

#[test]
fn cell_info_24s_decodes_to_the_published_values() {
    let c = CellInfo::parse(&record(CELL_INFO_24S), Layout::Cells24).unwrap();
    assert_eq!(
        c.cells_v,
        [
            3.310, 3.314, 3.313, 3.312, 3.312, 3.308, 3.312, 3.309, 3.309, 3.309, 3.309, 3.312,
            3.313, 3.309, 3.310, 3.309
        ]
    );
    assert_eq!(c.cell_resistances_ohm.len(), 16);
    assert!(
        close(c.cell_resistances_ohm[0], 0.054),
        "{:?}",
        c.cell_resistances_ohm
    );
    assert!(close(c.cell_delta_v, 0.005));
    assert!(close(c.voltage_v, 52.971) && close(c.current_a, 2.329));
    assert_eq!(c.soc_percent, Some(56));
    assert!(close(c.remaining_capacity_ah, 113.245) && close(c.nominal_capacity_ah, 202.0));
    assert_eq!(c.cycles, 60);
    assert!(close(c.total_cycle_capacity_ah, 12150.18));
    assert_eq!(c.soh_percent, Some(100));
    assert!(close(c.balance_current_a, 0.002));
    assert_eq!(c.temperatures_c, [Some(18.1), Some(18.6)]);
    assert_eq!(c.mos_temperature_c, Some(22.8));
    assert_eq!(c.errors, 0);
    assert!(c.charge_fet_on && c.discharge_fet_on);
    assert!(c.omitted.is_empty());
}

#[test]
fn cell_info_32s_decodes_to_the_published_values() {
    let c = CellInfo::parse(&record(CELL_INFO_32S), Layout::Cells32).unwrap();
    assert_eq!(
        c.cells_v,
        [3.315, 3.315, 3.315, 3.312, 3.313, 3.312, 3.313, 3.313]
    );
    assert!(close(c.voltage_v, 26.509) && close(c.current_a, -7.063));
    assert_eq!(c.soc_percent, Some(68));
    assert!(close(c.remaining_capacity_ah, 142.464) && close(c.nominal_capacity_ah, 210.0));
    assert_eq!(c.cycles, 21);
    assert!(close(c.total_cycle_capacity_ah, 4481.724));
    assert_eq!(c.mos_temperature_c, Some(31.0));
    assert_eq!(c.temperatures_c, [Some(28.4), Some(29.2)]);
    assert!(close(c.cell_delta_v, 0.003));
    assert_eq!(c.errors, 0);
    let v15 = CellInfo::parse(&record(CELL_INFO_32S_V15), Layout::Cells32).unwrap();
    assert!(close(v15.voltage_v, 53.224) && close(v15.current_a, 31.881));
    assert_eq!(
        (v15.soc_percent, v15.cycles, v15.cells_v.len()),
        (Some(25), 9, 16)
    );
}

#[test]
fn error_bits_are_named_from_bit_0_and_the_24s_layout_reads_16_of_them() {
    let mut bytes = hex(CELL_INFO_32S);
    // Bits 0, 3 (no meaning), 13 and 28 at 134 + 32.
    bytes[166..170].copy_from_slice(&(1u32 | 1 << 3 | 1 << 13 | 1 << 28).to_le_bytes());
    bytes[299] = sum8(&bytes[..299]);
    let c = CellInfo::parse(&verify(bytes).unwrap(), Layout::Cells32).unwrap();
    assert_eq!(
        c.error_flags()
            .filter_map(|(name, on)| on.then_some(name))
            .collect::<Vec<_>>(),
        [
            "error_wire_resistance",
            "error_discharge_overcurrent",
            "error_gps_remote_lock"
        ]
    );
    let mut bytes = hex(CELL_INFO_24S);
    bytes[136..138].copy_from_slice(&(1u16 << 15).to_le_bytes());
    bytes[299] = sum8(&bytes[..299]);
    let c = CellInfo::parse(&verify(bytes).unwrap(), Layout::Cells24).unwrap();
    assert_eq!(c.errors, 1 << 15);
    assert_eq!(
        c.error_flags()
            .filter_map(|(name, on)| on.then_some(name))
            .collect::<Vec<_>>(),
        ["error_discharge_overtemperature"]
    );
}

#[test]
fn absent_and_implausible_temperatures_and_percentages_are_left_out() {
    let mut bytes = hex(CELL_INFO_24S);
    bytes[130..132].copy_from_slice(&(-2000i16).to_le_bytes());
    bytes[132..134].copy_from_slice(&(1500i16).to_le_bytes());
    bytes[141] = 101;
    bytes[299] = sum8(&bytes[..299]);
    let c = CellInfo::parse(&verify(bytes).unwrap(), Layout::Cells24).unwrap();
    assert_eq!(c.temperatures_c, [None, None]);
    assert_eq!(c.soc_percent, None);
    let fields: Vec<_> = c.omitted.iter().map(|o| (o.field, o.index)).collect();
    assert_eq!(
        fields,
        [("temperature sensor", Some(2)), ("state of charge", None)],
        "an absent sensor is not an implausible value"
    );
}

#[test]
fn records_are_reassembled_from_notifications_whatever_their_size() {
    let whole = hex(CELL_INFO_24S);
    // BLE notifications carry at least 20 bytes (ATT MTU 23).
    for size in [20, 128, 185, 299, 300] {
        let mut r = Reassembler::new();
        let out: Vec<_> = whole.chunks(size).flat_map(|c| r.push(c)).collect();
        assert_eq!(
            out,
            [Ok(Record {
                bytes: whole.clone()
            })],
            "{size}-byte chunks"
        );
        assert_eq!(r.pending(), 0);
    }
}

#[test]
fn chatter_acks_restarts_and_longer_records_are_handled() {
    let mut r = Reassembler::new();
    // The ready answer with AT chatter between records: no record.
    assert!(r.push(&hex(ACK_WITH_AT)).is_empty());
    assert_eq!(r.pending(), 0);
    // A record with the ready answer and chatter appended in the same notification.
    let mut stream = hex(DEVICE_INFO_32S);
    stream.extend(hex(ACK_WITH_AT));
    let out = r.push(&stream);
    assert_eq!(out, [Ok(record(DEVICE_INFO_32S))]);
    // A 320-byte record (some firmware): the tail is ignored.
    let mut long = hex(CELL_INFO_32S);
    long.extend([0u8; 20]);
    assert_eq!(r.push(&long), [Ok(record(CELL_INFO_32S))]);
    // A record cut short (a lost notification), then a new one: the new one wins.
    assert!(r.push(&hex(CELL_INFO_24S)[..150]).is_empty());
    assert_eq!(r.pending(), 150);
    assert_eq!(r.push(&hex(CELL_INFO_32S)), [Ok(record(CELL_INFO_32S))]);
    // A broken record is an error, and the next one is fine.
    let mut broken = hex(CELL_INFO_24S);
    broken[100] ^= 1;
    let out = r.push(&broken);
    assert!(
        matches!(out[..], [Err(JkError::Checksum { .. })]),
        "{out:?}"
    );
    assert_eq!(r.push(&hex(CELL_INFO_24S)), [Ok(record(CELL_INFO_24S))]);
}

proptest! {
    #![proptest_config(crate::devices::protocol::proptest_config())]

    #[test]
    fn fuzz_reassembly_of_anything_never_panics(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..400), 0..8),
    ) {
        let mut r = Reassembler::new();
        for c in &chunks {
            for rec in r.push(c).into_iter().flatten() {
                prop_assert_eq!(rec.bytes.len(), RECORD_LEN);
                let _ = DeviceInfo::parse(&rec);
                let _ = CellInfo::parse(&rec, Layout::Cells24);
                let _ = CellInfo::parse(&rec, Layout::Cells32);
            }
            prop_assert!(r.pending() < RECORD_LEN);
        }
    }

    #[test]
    fn fuzz_any_valid_record_decodes_in_both_layouts(
        body in prop::collection::vec(any::<u8>(), RECORD_LEN - 6..=RECORD_LEN - 6),
        kind in prop::sample::select(vec![RECORD_CELL_INFO, RECORD_DEVICE_INFO]),
    ) {
        let mut bytes = RECORD_START.to_vec();
        bytes.push(kind);
        bytes.extend(&body);
        bytes.truncate(RECORD_LEN - 1);
        let sum = sum8(&bytes);
        bytes.push(sum);
        let rec = verify(bytes).unwrap();
        for layout in [Layout::Cells24, Layout::Cells32] {
            if let Ok(c) = CellInfo::parse(&rec, layout) {
                prop_assert!(c.cells_v.len() <= layout.slots());
                prop_assert!(c.soc_percent.is_none_or(|s| s <= 100));
                prop_assert!(c.temperatures_c.iter().flatten().all(|t| (TEMP_MIN_C..=TEMP_MAX_C).contains(t)));
            }
        }
    }
}
