//! JBD tests on real frames. Sources:
//! - `REAL_4S_*`: patman15/BMS_BLE-HA `tests/test_jbd_bms.py` (captured from a 4S pack; its
//!   expected values are quoted there: 15.6 V, -2.87 A, 4.98 Ah, 42 cycles, cells 3.43 /
//!   3.425 / 3.432 / 3.417 V, temperatures 22.4 / 22.3 / 21.7 degC).
//! - `REAL_16S_*`: a 16S 48 V pack capture quoted in the source of a public JBD web-BLE reader
//!   (comment "3번 DD 03 00 1F ..." / "4번 DD 04 00 20 ...", found by code search); both
//!   checksums verify.
//! - `REAL_16S_CELLS_B`: the notification chunks logged after a 0x04 read in a public JBD
//!   assembler test script ("CAPTURE = [...]", found by code search): frame plus an
//!   unsolicited stream that must be ignored.

use super::*;
use crate::devices::protocol::Omitted;
use proptest::prelude::*;

pub(crate) const REAL_4S_INFO: &str = "dd 03 00 1d 06 18 fe e1 01 f2 01 f4 00 2a 2c 7c 00 00 00 00 00 00 80 64 03 04 03 0b 8b 0b 8a 0b 84 f8 84 77";
pub(crate) const REAL_4S_CELLS: &str = "dd 04 00 08 0d 66 0d 61 0d 68 0d 59 fe 3c 77";
const REAL_16S_INFO: &str = "DD 03 00 1F 14 B1 FD 4C 46 51 4E 20 00 01 26 54 00 00 00 00 00 00 20 5A 03 10 04 0B 14 0B 35 0B 80 0B 61 FA 6C 77";
const REAL_16S_CELLS: &str = "DD 04 00 20 0C F2 0C F4 0C F1 0C F0 0C F1 0C F1 0C F1 0C EE 0C EC 0C E7 0C EE 0C F1 0C EF 0C F2 0C F5 0C E7 F0 29 77";
const REAL_16S_CELLS_B: [&str; 6] = [
    "dd 04 00 20 0d 43 0d 45 0d 41 0d 3f 0d 3c 0d 3b 0d 40 0d 41",
    "0d 42 0d 43 0d 40 0d 3d 0d 3c 0d 3d 0d 40 0d 42 fb 13 77",
    "02 51 00 00 ff ff 00 36 15 2d 00 94 00 50 00 64 0b e3 0d 40",
    "0d 39 0b e7 0b e2 00 03 03 29 03 e8 00 01 00 02 00 00 00 00",
    "00 00 03 07 03 0b 03 01 03 02 00 00 00 00 5a a6 00 00 00 00",
    "00 00 00 a1",
];
/// Error reply from clones without register 0x05 (protocols.md).
const NO_NAME_REPLY: &str = "DD 05 80 00 FF 80 77";

fn hex(s: &str) -> Vec<u8> {
    crate::devices::protocol::parse_hex(s).unwrap()
}

fn frame(s: &str) -> Frame {
    parse_frame(&hex(s)).unwrap()
}

fn approx(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-9, "{a} != {b}");
}

#[test]
fn requests_match_known_checksums() {
    assert_eq!(
        read_request(Register::BasicInfo),
        [0xDD, 0xA5, 0x03, 0x00, 0xFF, 0xFD, 0x77]
    );
    assert_eq!(
        read_request(Register::CellVoltages),
        [0xDD, 0xA5, 0x04, 0x00, 0xFF, 0xFC, 0x77]
    );
    assert_eq!(
        read_request(Register::DeviceName),
        [0xDD, 0xA5, 0x05, 0x00, 0xFF, 0xFB, 0x77]
    );
}

#[test]
fn request_round_trips_and_rejects_others() {
    for r in [
        Register::BasicInfo,
        Register::CellVoltages,
        Register::DeviceName,
    ] {
        assert_eq!(parse_read_request(&read_request(r)), Some(r.code()));
    }
    // Wrong checksum, a write, and a truncated request are not read requests.
    assert_eq!(
        parse_read_request(&[0xDD, 0xA5, 0x03, 0x00, 0xFF, 0xFC, 0x77]),
        None
    );
    assert_eq!(
        parse_read_request(&[0xDD, 0x5A, 0xE1, 0x02, 0x00, 0x03, 0x77]),
        None
    );
    assert_eq!(parse_read_request(&[0xDD, 0xA5, 0x03]), None);
}

#[test]
fn real_4s_basic_info() {
    let info = BasicInfo::parse(&frame(REAL_4S_INFO)).unwrap();
    approx(info.voltage_v, 15.60);
    approx(info.current_a, -2.87);
    approx(info.remaining_capacity_ah, 4.98);
    approx(info.nominal_capacity_ah, 5.00);
    assert_eq!(info.cycles, 42);
    assert_eq!(info.production_date.unwrap().to_string(), "2022-03-28");
    assert_eq!(info.balancing, 0);
    assert_eq!(info.protection, Protection(0));
    assert_eq!(info.software_version_string(), "8.0");
    assert_eq!(info.soc_percent, Some(100));
    assert!(info.charge_fet_on && info.discharge_fet_on);
    assert_eq!(info.cell_count, 4);
    assert_eq!(
        info.temperatures_c,
        vec![Some(22.4), Some(22.3), Some(21.7)]
    );
    assert_eq!(info.omitted, vec![]);
    assert_eq!(info.v11, V11Extras::default());
}

#[test]
fn real_4s_cells() {
    let cells = CellVoltages::parse(&frame(REAL_4S_CELLS)).unwrap();
    assert_eq!(cells.volts, vec![3.43, 3.425, 3.432, 3.417]);
    approx(cells.min(), 3.417);
    approx(cells.max(), 3.432);
    assert!((cells.delta() - 0.015).abs() < 1e-9);
    assert!((cells.avg() - 3.426).abs() < 1e-9);
}

#[test]
fn real_16s_basic_info_and_cells() {
    let info = BasicInfo::parse(&frame(REAL_16S_INFO)).unwrap();
    approx(info.voltage_v, 52.97);
    approx(info.current_a, -6.92);
    approx(info.remaining_capacity_ah, 180.01);
    approx(info.nominal_capacity_ah, 200.0);
    assert_eq!(info.cycles, 1);
    assert_eq!(info.production_date.unwrap().to_string(), "2019-02-20");
    assert_eq!(info.software_version_string(), "2.0");
    assert_eq!(info.soc_percent, Some(90));
    assert_eq!(info.cell_count, 16);
    assert_eq!(
        info.temperatures_c,
        vec![Some(10.5), Some(13.8), Some(21.3), Some(18.2)]
    );
    assert_eq!(info.omitted, vec![]);

    let cells = CellVoltages::parse(&frame(REAL_16S_CELLS)).unwrap();
    assert_eq!(cells.volts.len(), 16);
    assert_eq!(cells.volts[0], 3.314);
    assert_eq!(cells.volts[9], 3.303);
    assert_eq!(cells.volts[15], 3.303);
    approx(cells.max(), 3.317);
}

#[test]
fn real_notifications_with_unsolicited_stream_after_frame() {
    let mut r = Reassembler::new();
    let mut frames = Vec::new();
    for chunk in REAL_16S_CELLS_B {
        frames.extend(r.push(&hex(chunk)));
    }
    let ok: Vec<_> = frames.iter().filter_map(|f| f.as_ref().ok()).collect();
    assert_eq!(ok.len(), 1, "{frames:?}");
    let cells = CellVoltages::parse(ok[0]).unwrap();
    assert_eq!(cells.volts[0], 3.395);
    assert_eq!(cells.volts[15], 3.394);
}

#[test]
fn twenty_byte_notifications_reassemble() {
    let bytes = hex(REAL_4S_INFO);
    let mut r = Reassembler::new();
    let chunks: Vec<_> = bytes.chunks(20).collect();
    assert!(r.push(chunks[0]).is_empty());
    let out = r.push(chunks[1]);
    assert_eq!(out, vec![Ok(frame(REAL_4S_INFO))]);
    assert_eq!(r.pending(), 0);
}

#[test]
fn bad_checksum_reports_expected_and_actual() {
    let mut bytes = hex(REAL_4S_INFO);
    let n = bytes.len();
    bytes[n - 2] = 0x83; // F884 -> F883
    let err = parse_frame(&bytes).unwrap_err();
    assert_eq!(
        err,
        JbdError::BadChecksum {
            register: 3,
            expected: 0xF884,
            actual: 0xF883
        }
    );
    assert_eq!(
        err.to_string(),
        "checksum mismatch in 0x03 reply: expected 0xF884, got 0xF883"
    );
}

#[test]
fn corrupt_data_byte_fails_checksum() {
    let mut bytes = hex(REAL_4S_CELLS);
    bytes[5] ^= 0x01;
    assert!(matches!(
        parse_frame(&bytes),
        Err(JbdError::BadChecksum { register: 4, .. })
    ));
}

#[test]
fn bad_end_byte_is_rejected() {
    // patman15/BMS_BLE-HA "wrong end" fixture: valid checksum, 0xDD instead of 0x77.
    let mut bytes = hex(REAL_4S_INFO);
    *bytes.last_mut().unwrap() = 0xDD;
    assert_eq!(
        parse_frame(&bytes),
        Err(JbdError::BadEnd {
            register: 3,
            got: 0xDD
        })
    );
}

#[test]
fn oversize_length_is_rejected() {
    let bytes = [0xDD, 0x03, 0x00, 0xF0, 0x00];
    assert_eq!(
        parse_frame(&bytes),
        Err(JbdError::Oversize {
            register: 3,
            len: 0xF0,
            max: MAX_DATA_LEN
        })
    );
}

#[test]
fn incomplete_and_empty_input() {
    let bytes = hex(REAL_4S_INFO);
    assert_eq!(
        parse_frame(&bytes[..20]),
        Err(JbdError::Incomplete { have: 20, need: 36 })
    );
    assert_eq!(parse_frame(&[0x00, 0x77]), Err(JbdError::NoFrame));
}

#[test]
fn trailing_padding_is_ignored() {
    // patman15/BMS_BLE-HA "oversized response": zero bytes after the frame.
    let mut bytes = hex(REAL_4S_CELLS);
    bytes.extend_from_slice(&[0; 12]);
    let mut r = Reassembler::new();
    assert_eq!(r.push(&bytes), vec![Ok(frame(REAL_4S_CELLS))]);
    assert_eq!(r.pending(), 0);
}

#[test]
fn end_byte_inside_data_does_not_end_frame() {
    // 0x77 and 0xDD inside data (cells of 0x0D77 = 3447 mV and 0xDDDD): the length decides.
    let data = [0x0D, 0x77, 0x0D, 0xDD, 0x77, 0x77];
    let f = encode_reply(0x04, 0, &data);
    let mut r = Reassembler::new();
    let mut out = Vec::new();
    for b in &f {
        out.extend(r.push(std::slice::from_ref(b)));
    }
    assert_eq!(out.len(), 1);
    let cells = CellVoltages::parse(out[0].as_ref().unwrap()).unwrap();
    assert_eq!(cells.volts, vec![3.447, 3.549, 30.583]);
}

#[test]
fn garbage_before_frame_is_skipped() {
    let mut bytes = vec![0x01, 0x77, 0xDD, 0x99, 0x42];
    bytes.extend(hex(REAL_4S_CELLS));
    let mut r = Reassembler::new();
    let ok: Vec<_> = r.push(&bytes).into_iter().filter_map(Result::ok).collect();
    assert_eq!(ok, vec![frame(REAL_4S_CELLS)]);
}

#[test]
fn false_start_swallowing_real_frame_recovers_it() {
    // A garbage header (DD 03 00 10) claims 16 data bytes; the real frame starts inside them.
    let mut bytes = vec![0xDD, 0x03, 0x00, 0x10];
    bytes.extend(hex(REAL_4S_CELLS));
    bytes.extend([0u8; 8]);
    let mut r = Reassembler::new();
    let out = r.push(&bytes);
    assert!(
        out.iter().any(|f| f.as_ref() == Ok(&frame(REAL_4S_CELLS))),
        "{out:?}"
    );
}

#[test]
fn stale_reply_then_right_one_both_come_out_in_order() {
    let mut bytes = hex(REAL_4S_INFO);
    bytes.extend(hex(REAL_4S_CELLS));
    let mut r = Reassembler::new();
    let out: Vec<_> = r.push(&bytes).into_iter().map(Result::unwrap).collect();
    assert_eq!(
        out.iter().map(|f| f.register).collect::<Vec<_>>(),
        vec![3, 4]
    );
    // The decoder refuses a reply to the wrong register.
    assert_eq!(
        CellVoltages::parse(&out[0]),
        Err(JbdError::WrongRegister {
            expected: 4,
            got: 3
        })
    );
}

#[test]
fn status_error_reply_has_valid_checksum_and_meaning() {
    let f = frame(NO_NAME_REPLY);
    assert_eq!((f.register, f.status, f.data.len()), (5, 0x80, 0));
    let err = parse_device_name(&f).unwrap_err();
    assert_eq!(
        err,
        JbdError::Status {
            register: 5,
            status: 0x80,
            meaning: "unknown command"
        }
    );
    assert_eq!(
        err.to_string(),
        "BMS answered 0x05 with status 0x80 (unknown command)"
    );
    assert_eq!(status_meaning(0x81), "not allowed");
    assert_eq!(status_meaning(0x82), "checksum error in request");
    assert_eq!(status_meaning(0x83), "password error");
    assert_eq!(status_meaning(0x00), "ok");
    for undocumented in [0x01, 0x42, 0x84] {
        assert_eq!(status_meaning(undocumented), "undocumented status");
    }
}

#[test]
fn device_name_is_ascii_trimmed() {
    let f = Frame {
        register: 5,
        status: 0,
        data: b"SP04S034-L4S-120A\0\0".to_vec(),
    };
    assert_eq!(parse_device_name(&f).unwrap(), "SP04S034-L4S-120A");
}

#[test]
fn truncated_basic_info_is_reported() {
    let short = Frame {
        register: 3,
        status: 0,
        data: vec![0; 20],
    };
    assert_eq!(
        BasicInfo::parse(&short),
        Err(JbdError::Truncated {
            register: 3,
            need: 23,
            got: 20
        })
    );
    // Claims 3 NTCs but carries only one.
    let mut data = hex(REAL_4S_INFO)[4..4 + 29].to_vec();
    data.truncate(25);
    let f = Frame {
        register: 3,
        status: 0,
        data,
    };
    assert_eq!(
        BasicInfo::parse(&f),
        Err(JbdError::Truncated {
            register: 3,
            need: 29,
            got: 25
        })
    );
}

#[test]
fn basic_info_refuses_wrong_register_and_status() {
    assert_eq!(
        BasicInfo::parse(&frame(REAL_4S_CELLS)),
        Err(JbdError::WrongRegister {
            expected: 3,
            got: 4
        })
    );
    let f = Frame {
        register: 3,
        status: 0x81,
        data: vec![],
    };
    assert!(matches!(
        BasicInfo::parse(&f),
        Err(JbdError::Status { status: 0x81, .. })
    ));
}

#[test]
fn v11_trailer_fields_are_read_only_when_length_covers_them() {
    let mut data = hex(REAL_4S_INFO)[4..4 + 29].to_vec();
    // humidity 45 %, alarm 0x0002, full capacity 49.80 Ah (4980 x 10 mAh), remaining 48.00 Ah
    data.extend([45, 0x00, 0x02, 0x13, 0x74, 0x12, 0xC0]);
    let f = parse_frame(&encode_reply(3, 0, &data)).unwrap();
    let info = BasicInfo::parse(&f).unwrap();
    assert_eq!(info.v11.humidity_percent, Some(45));
    assert_eq!(info.v11.alarm, Some(2));
    assert_eq!(info.v11.full_charge_capacity_ah, Some(49.8));
    assert_eq!(info.v11.remaining_capacity_ah, Some(48.0));
    // The balance current is not covered by this length.
    assert_eq!(info.v11.balance_current_raw, None);

    // Only the humidity byte and half of the alarm: the alarm is not read.
    let mut data = hex(REAL_4S_INFO)[4..4 + 29].to_vec();
    data.extend([45, 0x00]);
    let info = BasicInfo::parse(&parse_frame(&encode_reply(3, 0, &data)).unwrap()).unwrap();
    assert_eq!(info.v11.humidity_percent, Some(45));
    assert_eq!(info.v11.alarm, None);
}

#[test]
fn protection_bits_are_named() {
    // patman15/BMS_BLE-HA problem fixtures: protection 0x0001 and 0x8000.
    let mut bytes = hex(REAL_4S_INFO);
    bytes[21] = 0x01;
    let chk = checksum(&bytes[2..33]);
    bytes[33..35].copy_from_slice(&chk.to_be_bytes());
    assert_eq!(chk, 0xF883, "matches the fixture's checksum");
    let info = BasicInfo::parse(&parse_frame(&bytes).unwrap()).unwrap();
    assert_eq!(
        info.protection.active(),
        vec!["protection_cell_overvoltage"]
    );

    let p = Protection(0x1C00);
    assert_eq!(
        p.active(),
        vec![
            "protection_short_circuit",
            "protection_frontend_ic_error",
            "protection_mosfet_software_lock"
        ]
    );
    // Bit 15 is reserved: no name, still in the raw word.
    assert!(Protection(0x8000).active().is_empty());
    assert_eq!(Protection(0).flags().count(), 15);
}

#[test]
fn fet_bits_and_balance_words() {
    let mut data = hex(REAL_4S_INFO)[4..4 + 29].to_vec();
    data[12..16].copy_from_slice(&[0x80, 0x01, 0x00, 0x02]); // cells 1, 16 and 18
    data[20] = 0x02; // discharge on, charge off
    let info = BasicInfo::parse(&parse_frame(&encode_reply(3, 0, &data)).unwrap()).unwrap();
    assert_eq!(info.balancing, 0x0002_8001);
    assert!(!info.charge_fet_on);
    assert!(info.discharge_fet_on);
    data[20] = 0x01; // charge on, discharge off
    let info = BasicInfo::parse(&parse_frame(&encode_reply(3, 0, &data)).unwrap()).unwrap();
    assert!(info.charge_fet_on);
    assert!(!info.discharge_fet_on);
}

#[test]
fn cell_counts_1_to_32_and_bad_lengths() {
    for n in 1..=32u16 {
        let data: Vec<u8> = (0..n).flat_map(|i| (3000 + i).to_be_bytes()).collect();
        let cells = CellVoltages::parse(&parse_frame(&encode_reply(4, 0, &data)).unwrap()).unwrap();
        assert_eq!(cells.volts.len(), usize::from(n));
        assert_eq!(
            cells.volts[usize::from(n) - 1],
            f64::from(3000 + n - 1) / 1000.0
        );
    }
    for len in [0usize, 3, 66] {
        let f = Frame {
            register: 4,
            status: 0,
            data: vec![0x0D; len],
        };
        assert_eq!(CellVoltages::parse(&f), Err(JbdError::BadCellData { len }));
    }
}

#[test]
fn production_date_bits() {
    // 2022-03-28 = (22 << 9) | (3 << 5) | 28
    assert_eq!(
        ProductionDate::from_raw((22 << 9) | (3 << 5) | 28)
            .unwrap()
            .to_string(),
        "2022-03-28"
    );
}

/// What the reassembler gives for the first 20 bytes of the real 4S 0x03 reply followed by the
/// real 4S 0x04 reply.
fn cut_0x03_then_4s_cells() -> Vec<Result<Frame, JbdError>> {
    vec![
        Err(JbdError::CutShort {
            register: 3,
            have: 20,
            need: 36,
        }),
        Ok(frame(REAL_4S_CELLS)),
    ]
}

#[test]
fn a_truncated_frame_before_the_real_reply_does_not_block_it() {
    // The first 20-byte notification of a 0x03 reply (which claims 36 bytes), then the reply
    // to the next request: the 0x04 frame comes out as soon as its last byte is in.
    let info = hex(REAL_4S_INFO);
    let mut r = Reassembler::new();
    assert!(r.push(&info[..20]).is_empty());
    let out = r.push(&hex(REAL_4S_CELLS));
    assert_eq!(out, cut_0x03_then_4s_cells());
    assert_eq!(r.pending(), 0);
    assert_eq!(
        out[0].as_ref().unwrap_err().to_string(),
        "0x03 frame cut short: 20 of 36 bytes, then a valid frame started"
    );
}

#[test]
fn a_false_header_whose_length_swallows_the_real_frame_does_not_block_it() {
    // DD 04 00 40: a plausible header claiming 64 data bytes (71 in all), then the real 15-byte
    // reply and nothing more, in 20-byte notifications as a dongle sends them.
    let mut bytes = vec![0xDD, 0x04, 0x00, 0x40];
    bytes.extend(hex(REAL_4S_CELLS));
    let mut r = Reassembler::new();
    let mut out = Vec::new();
    for c in bytes.chunks(20) {
        out.extend(r.push(c));
    }
    assert_eq!(
        out,
        vec![
            Err(JbdError::CutShort {
                register: 4,
                have: 4,
                need: 71
            }),
            Ok(frame(REAL_4S_CELLS))
        ]
    );
    assert_eq!(r.pending(), 0);
}

#[test]
fn a_corrupt_frame_then_the_valid_one_in_one_buffer() {
    let mut corrupt = hex(REAL_4S_CELLS);
    corrupt[5] ^= 0x01;
    let mut bytes = corrupt;
    bytes.extend(hex(REAL_4S_CELLS));
    let mut r = Reassembler::new();
    let out = r.push(&bytes);
    assert_eq!(
        out,
        vec![
            Err(JbdError::BadChecksum {
                register: 4,
                expected: 0xFE3B,
                actual: 0xFE3C
            }),
            Ok(frame(REAL_4S_CELLS))
        ]
    );
}

#[test]
fn the_buffer_stays_bounded_by_one_frame() {
    // A stream of false headers that each claim the maximum length and never complete.
    let mut r = Reassembler::new();
    for _ in 0..100 {
        r.push(&[0xDD, 0x03, 0x00, MAX_DATA_LEN, 0x01, 0x02, 0x03]);
        assert!(r.pending() < MAX_FRAME_LEN, "{}", r.pending());
    }
    // And the real frame behind all that still comes out.
    assert!(
        r.push(&hex(REAL_4S_CELLS))
            .contains(&Ok(frame(REAL_4S_CELLS)))
    );
}

pub(crate) fn arb_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec![3u8, 4, 5]),
        prop::collection::vec(any::<u8>(), 0..=usize::from(MAX_DATA_LEN)),
    )
        .prop_map(|(reg, data)| encode_reply(reg, 0, &data))
}

/// Statuses a BMS sends, 0x00 most often.
fn arb_status() -> impl Strategy<Value = u8> {
    prop_oneof![3 => Just(0u8), 1 => 0x80u8..=0x83]
}

/// Bytes that LOOK like the start of a reply (0xDD, a register we ask for, a status a BMS
/// sends, a length) but are no valid frame: cut short, with a bad checksum, with a bad end
/// byte, or claiming more data than any register has.
pub(crate) fn false_header() -> impl Strategy<Value = Vec<u8>> {
    (
        3u8..=5,
        arb_status(),
        prop::collection::vec(any::<u8>(), 0..=usize::from(MAX_DATA_LEN)),
        0u8..4,
        any::<prop::sample::Index>(),
        1u8..=255,
    )
        .prop_map(|(reg, status, data, how, at, flip)| {
            let mut f = encode_reply(reg, status, &data);
            let n = f.len();
            match how {
                // Cut short: the header and some (not all) of the rest.
                0 => f.truncate(4 + at.index(n - 4)),
                // Bad checksum (either byte), right end byte.
                1 => f[n - 3 + at.index(2)] ^= flip,
                // Bad end byte.
                2 => f[n - 1] = if flip == END { 0 } else { flip },
                // A length beyond any register, then the rest.
                _ => f[3] = MAX_DATA_LEN + 1 + flip % (u8::MAX - MAX_DATA_LEN),
            }
            f
        })
}

/// A stream of random bytes, false headers and valid frames.
pub(crate) fn arb_stream(pieces: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            2 => prop::collection::vec(any::<u8>(), 0..24),
            3 => false_header(),
            1 => arb_frame(),
        ],
        0..=pieces,
    )
    .prop_map(|p| p.concat())
}

/// Where `needle` first occurs in `hay` at or after `from`.
pub(crate) fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    (from..=hay.len().saturating_sub(needle.len()))
        .find(|&i| hay[i..].starts_with(needle))
        .filter(|_| hay.len() >= needle.len())
}

/// The one way a valid frame placed after `garbage` may legitimately not come out: a valid
/// frame that starts in the garbage and runs into it (a false header that the frame's own
/// bytes happen to complete, checksum and end byte included).
pub(crate) fn straddles(garbage: &[u8], stream: &[u8], got: &Frame) -> bool {
    let bytes = encode_reply(got.register, got.status, &got.data);
    (0..garbage.len()).any(|i| stream[i..].starts_with(&bytes) && i + bytes.len() > garbage.len())
}

/// Splits `bytes` at the given cut points.
fn chunked(bytes: &[u8], mut cuts: Vec<usize>) -> Vec<Vec<u8>> {
    cuts.retain(|&c| c > 0 && c < bytes.len());
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    for c in cuts.into_iter().chain(std::iter::once(bytes.len())) {
        out.push(bytes[start..c].to_vec());
        start = c;
    }
    out
}

proptest! {
    #![proptest_config(crate::devices::protocol::proptest_config())]

    #[test]
    fn fuzz_any_chunking_decodes_identically(f in arb_frame(), cuts in prop::collection::vec(0usize..110, 0..12)) {
        let whole = parse_frame(&f).unwrap();
        let mut r = Reassembler::new();
        let mut out = Vec::new();
        for c in chunked(&f, cuts) {
            out.extend(r.push(&c));
        }
        prop_assert_eq!(out, vec![Ok(whole)]);
        prop_assert_eq!(r.pending(), 0);
    }

    /// Random bytes and false headers before a valid frame (and more after it): the frame
    /// comes out, and no later than the chunk that carries its last byte.
    #[test]
    fn fuzz_garbage_before_a_frame_is_skipped(
        garbage in arb_stream(4),
        f in arb_frame(),
        after in arb_stream(2),
        cuts in prop::collection::vec(0usize..400, 0..16),
    ) {
        let want = parse_frame(&f).unwrap();
        let mut stream = garbage.clone();
        stream.extend(&f);
        let frame_end = stream.len();
        stream.extend(&after);
        let mut r = Reassembler::new();
        let mut got = Vec::new();
        let mut pushed = 0;
        for c in chunked(&stream, cuts) {
            got.extend(r.push(&c));
            pushed += c.len();
            if pushed >= frame_end {
                break;
            }
            prop_assert!(r.pending() < MAX_FRAME_LEN);
        }
        let frames: Vec<&Frame> = got.iter().filter_map(|x| x.as_ref().ok()).collect();
        prop_assert!(
            frames.contains(&&want) || frames.iter().any(|g| straddles(&garbage, &stream, g)),
            "the frame did not come out by its last byte: {:?}",
            got
        );
    }

    #[test]
    fn fuzz_a_flipped_byte_never_yields_that_frame(f in arb_frame(), pos in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let mut bad = f.clone();
        let i = pos.index(bad.len());
        bad[i] ^= flip;
        let good = parse_frame(&f).unwrap();
        let mut r = Reassembler::new();
        let out = r.push(&bad);
        // Corruption never produces a frame with the original's length but other data. (The
        // register byte is outside the checksum, so a flip there changes only the register.)
        for frame in out.into_iter().flatten() {
            prop_assert!(frame.data == good.data || frame.data.len() != good.data.len(),
                "corrupt input decoded to a different full frame: {frame:?}");
        }
    }
}

// Implausible values (issue 10, item 5). The real 0x03 reply of the 4S pack (`REAL_4S_INFO`)
// with one field set to what a faulty pack sent, re-checksummed: the field is left out and
// named, everything else still decodes.

/// `REAL_4S_INFO`'s data after `patch`, as a 0x03 reply.
fn real_4s_info_with(patch: impl FnOnce(&mut Vec<u8>)) -> BasicInfo {
    let mut data = frame(REAL_4S_INFO).data;
    patch(&mut data);
    BasicInfo::parse(&parse_frame(&encode_reply(3, 0, &data)).unwrap()).unwrap()
}

fn set_ntc(data: &mut [u8], n: usize, raw: u16) {
    let off = OFF_NTC_FIRST + 2 * (n - 1);
    data[off..off + 2].copy_from_slice(&raw.to_be_bytes());
}

fn keys(info: &BasicInfo) -> Vec<(&'static str, Option<u8>)> {
    info.omitted.iter().map(Omitted::key).collect()
}

#[test]
fn an_ntc_raw_0_is_omitted_not_printed_as_minus_273_1() {
    let info = real_4s_info_with(|d| set_ntc(d, 2, 0));
    assert_eq!(info.temperatures_c, vec![Some(22.4), None, Some(21.7)]);
    assert_eq!(keys(&info), vec![("NTC temperature (0.1 K)", Some(2))]);
    // The reading, which the device task logs from, lists the same.
    let reading = JbdReading {
        info: info.clone(),
        cells: CellVoltages::parse(&frame(REAL_4S_CELLS)).unwrap(),
        model: None,
    };
    assert_eq!(reading.omitted(), info.omitted.as_slice());
    assert_eq!(
        info.omitted[0].to_string(),
        "NTC temperature (0.1 K) 2 omitted: raw 0 (0x0), expected -40..=100 degC"
    );
    // The window's edges: -40.0 and 100.0 degC are kept, 0.1 K beyond is not.
    for (raw, want) in [
        (2331, Some(-40.0)),
        (2330, None),
        (3731, Some(100.0)),
        (3732, None),
        (u16::MAX, None),
    ] {
        let info = real_4s_info_with(|d| set_ntc(d, 1, raw));
        assert_eq!(info.temperatures_c[0], want, "raw {raw}");
        assert_eq!(info.omitted.len(), usize::from(want.is_none()), "raw {raw}");
    }
}

#[test]
fn soc_250_is_omitted() {
    let info = real_4s_info_with(|d| d[OFF_RSOC_PERCENT] = 250);
    assert_eq!(info.soc_percent, None);
    assert_eq!(keys(&info), vec![("RSOC (%)", None)]);
    assert_eq!(info.omitted[0].raw, 250);
    assert_eq!(
        real_4s_info_with(|d| d[OFF_RSOC_PERCENT] = 101).soc_percent,
        None
    );
    assert_eq!(
        real_4s_info_with(|d| d[OFF_RSOC_PERCENT] = 0).soc_percent,
        Some(0)
    );
}

#[test]
fn production_date_2000_00_00_is_omitted() {
    let info = real_4s_info_with(|d| d[OFF_DATE..OFF_DATE + 2].copy_from_slice(&[0, 0]));
    assert_eq!(info.production_date, None);
    assert_eq!(keys(&info), vec![("production date", None)]);
    let date = |y: u16, m: u16, d: u16| ProductionDate::from_raw((y << 9) | (m << 5) | d);
    assert_eq!(date(22, 0, 28), None, "month 0");
    assert_eq!(date(22, 13, 28), None, "month 13");
    assert_eq!(date(22, 3, 0), None, "day 0");
    assert_eq!(date(22, 12, 31).unwrap().to_string(), "2022-12-31");
    assert_eq!(date(22, 1, 1).unwrap().to_string(), "2022-01-01");
}

#[test]
fn trailing_padding_is_not_read_as_v11_fields() {
    // A reply whose length covers 9 zero bytes after the NTCs: not humidity=0, alarm=0.
    for pad in [0x00, 0xFF] {
        let info = real_4s_info_with(|d| d.extend([pad; 9]));
        assert_eq!(info.v11, V11Extras::default(), "padding 0x{pad:02X}");
        assert_eq!(keys(&info), vec![("V11 fields after the NTCs", None)]);
    }
    // One real V11 byte among zeros is not padding.
    let info = real_4s_info_with(|d| d.extend([45, 0, 0, 0, 0]));
    assert_eq!(info.v11.humidity_percent, Some(45));
    assert_eq!(info.v11.alarm, Some(0));
    assert_eq!(info.v11.full_charge_capacity_ah, None, "0 Ah is omitted");
    assert_eq!(
        keys(&info),
        vec![("V11 full-charge capacity (10 mAh)", None)]
    );
}

#[test]
fn v11_humidity_outside_1_to_100_percent_is_omitted() {
    // Alarm 2, full capacity 49.80 Ah: real V11 data, with humidity 0 or 101.
    for (humidity, want) in [(0, None), (101, None), (1, Some(1)), (100, Some(100))] {
        let info = real_4s_info_with(|d| d.extend([humidity, 0x00, 0x02, 0x13, 0x74]));
        assert_eq!(info.v11.humidity_percent, want, "humidity {humidity}");
        assert_eq!(info.v11.alarm, Some(2));
        assert_eq!(info.v11.full_charge_capacity_ah, Some(49.8));
        assert_eq!(info.omitted.len(), usize::from(want.is_none()));
    }
}

#[test]
fn pack_voltage_far_from_the_cell_sum_is_flagged() {
    // patman15's 4S fixture: 0x03 says 15.60 V, its 0x04 cells sum to 13.704 V.
    let reading = JbdReading {
        info: BasicInfo::parse(&frame(REAL_4S_INFO)).unwrap(),
        cells: CellVoltages::parse(&frame(REAL_4S_CELLS)).unwrap(),
        model: None,
    };
    let m = reading.pack_mismatch().expect("1.9 V apart");
    approx(m.pack_v, 15.6);
    approx(m.cells_sum_v, 13.704);
    assert!(m.to_string().contains("15.60 V"), "{m}");
    // The 16S capture: 52.97 V and 52.983 V, 13 mV apart: consistent.
    let consistent = JbdReading {
        info: BasicInfo::parse(&frame(REAL_16S_INFO)).unwrap(),
        cells: CellVoltages::parse(&frame(REAL_16S_CELLS)).unwrap(),
        model: None,
    };
    assert_eq!(consistent.pack_mismatch(), None);
    // The bound itself: exactly the tolerance apart is fine, beyond is not.
    let cells = CellVoltages {
        volts: vec![3.0; 4],
    };
    let mut info = consistent.info.clone();
    info.voltage_v = 12.0 + PACK_VS_CELLS_TOLERANCE_V;
    assert_eq!(pack_vs_cells(&info, &cells), None);
    info.voltage_v = 12.0 - PACK_VS_CELLS_TOLERANCE_V - 0.01;
    assert!(pack_vs_cells(&info, &cells).is_some());
}

#[test]
fn a_0xdd_without_a_plausible_status_starts_no_frame() {
    // 0x42 is no status a BMS sends: these four bytes are not a header, so nothing waits for
    // the 0x10 data bytes they would claim and nothing is reported.
    let mut r = Reassembler::new();
    assert!(r.push(&[0xDD, 0x03, 0x42, 0x10]).is_empty());
    assert_eq!(r.pending(), 0);
    assert_eq!(r.push(&hex(REAL_4S_CELLS)), vec![Ok(frame(REAL_4S_CELLS))]);
}

#[test]
fn an_oversize_header_is_reported_as_soon_as_its_four_bytes_are_in() {
    let mut r = Reassembler::new();
    assert_eq!(
        r.push(&[0xDD, 0x03, 0x00, MAX_DATA_LEN + 1]),
        vec![Err(JbdError::Oversize {
            register: 3,
            len: MAX_DATA_LEN + 1,
            max: MAX_DATA_LEN
        })]
    );
    assert_eq!(r.pending(), 0);
}

#[test]
fn the_longest_frame_is_max_frame_len_bytes_and_one_more_data_byte_is_too_long() {
    let data = vec![0x11; usize::from(MAX_DATA_LEN)];
    let longest = encode_reply(0x04, 0x00, &data);
    assert_eq!(longest.len(), MAX_FRAME_LEN);
    assert_eq!(parse_frame(&longest).map(|f| f.data), Ok(data));
    assert!(matches!(
        parse_frame(&encode_reply(
            0x04,
            0x00,
            &[0x11; MAX_DATA_LEN as usize + 1]
        )),
        Err(JbdError::Oversize { .. })
    ));
}

#[test]
fn reset_forgets_a_partial_frame() {
    let info = hex(REAL_4S_INFO);
    let mut r = Reassembler::new();
    assert!(r.push(&info[..20]).is_empty());
    assert_eq!(r.pending(), 20);
    r.reset();
    assert_eq!(r.pending(), 0);
    // Nothing of the forgotten frame is reported when the next one arrives.
    assert_eq!(r.push(&hex(REAL_4S_CELLS)), vec![Ok(frame(REAL_4S_CELLS))]);
}

#[test]
fn a_cut_short_frame_after_leading_bytes_counts_only_its_own_bytes() {
    let info = hex(REAL_4S_INFO);
    // All in one notification, so that the cut frame does not start the buffer.
    let mut bytes = vec![0x00, 0x77, 0x00];
    bytes.extend(&info[..20]);
    bytes.extend(hex(REAL_4S_CELLS));
    assert_eq!(Reassembler::new().push(&bytes), cut_0x03_then_4s_cells());
}

#[test]
fn basic_info_with_no_ntc_and_nothing_after_is_complete() {
    // 23 bytes: every fixed field, an NTC count of 0, and no trailer.
    let info = real_4s_info_with(|d| {
        d.truncate(23);
        d[22] = 0;
    });
    assert!(info.temperatures_c.is_empty());
    approx(info.voltage_v, 15.60);
    assert_eq!(info.cell_count, 4);
}
