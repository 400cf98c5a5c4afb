//! JK BMSes through the real binary, btleplug and D-Bus against the mock BlueZ: the records
//! are aiobmsble's captures (tests/support/fixtures.rs), streamed in chunks as the BMS does.

mod common;
mod support;

use std::process::Command;
use std::time::Duration;

use common::*;
use influxdb_line_protocol::FieldValue;
use support::bus::PrivateBus;
use support::fixtures::{
    JK_CELL_INFO_24S, JK_CELL_INFO_32S, JK_DEVICE_INFO_24S, JK_DEVICE_INFO_32S, jk_record,
};
use support::mock_bluez::{EventKind, Faults, MockBluez, MockDevice, MockEvent, TwinOrder};

const MAC: &str = "C8:47:8C:00:00:01";

struct Rig {
    mock: MockBluez,
    bus: PrivateBus,
}

impl Rig {
    fn new(device: MockDevice) -> Rig {
        let bus = PrivateBus::start();
        let mock = MockBluez::start_with(&bus.address(), vec![device]);
        Rig { mock, bus }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        blebatt_on(&self.bus.address(), args)
    }

    /// Commands written to the BMS (byte 4 of each write).
    fn commands(&self) -> Vec<u8> {
        self.mock
            .events()
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::Write { bytes, .. } => Some(bytes[4]),
                _ => None,
            })
            .collect()
    }

    /// Cell info records sent so far (their first notification).
    fn records_sent(&self) -> usize {
        self.mock.count(|e: &MockEvent| {
            matches!(&e.kind, EventKind::Notify { bytes, .. } if bytes.starts_with(&[0x55, 0xAA, 0xEB, 0x90, 0x02]))
        })
    }
}

fn float(l: &influxdb_line_protocol::ParsedLine<'_>, k: &str) -> f64 {
    match field(l, k) {
        FieldValue::F64(v) => *v,
        other => panic!("{k} is not a float: {other:?}"),
    }
}

fn pack_24s() -> MockDevice {
    MockDevice::jk(
        MAC,
        "JK-B2A20S20P",
        jk_record(JK_DEVICE_INFO_24S),
        jk_record(JK_CELL_INFO_24S),
    )
}

#[test]
fn once_reads_a_24s_pack_from_chunked_records() {
    for chunks in [vec![128], vec![20], vec![7, 128, 33, 1]] {
        let rig = Rig::new(pack_24s().with_faults(Faults {
            chunk_sizes: chunks.clone(),
            ..Faults::default()
        }));
        let mut e = Execd::spawn(&mut rig.cmd(&["once", "--device", &format!("jk:pack={MAC}")]));
        e.close_stdin();
        let (code, _, lines, err) = e.finish(Duration::from_secs(60));
        assert_eq!(code, Some(0), "{chunks:?}: {err}");
        assert_eq!(lines.len(), 1, "{err}");
        let parsed = parse_all(&lines[0]);
        let l = &parsed[0];
        assert_eq!(l.series.measurement.as_str(), "jk_bms");
        assert_eq!(tag(l, "model").as_deref(), Some("JK-B2A20S20P"));
        // aiobmsble's published values for this capture.
        assert_eq!(float(l, "voltage"), 52.971);
        assert_eq!(float(l, "current"), 2.329);
        assert_eq!(field(l, "soc"), &FieldValue::I64(56));
        assert_eq!(field(l, "cycles"), &FieldValue::I64(60));
        assert_eq!(field(l, "cell_count"), &FieldValue::I64(16));
        assert_eq!(float(l, "cell_1"), 3.310);
        assert_eq!(float(l, "remaining_capacity"), 113.245);
        assert_eq!(float(l, "temperature_1"), 18.1);
        assert_eq!(float(l, "mos_temperature"), 22.8);
        assert_log_prefixes(&err);
    }
}

#[test]
fn run_takes_the_stream_and_asks_only_when_it_stopped() {
    let rig = Rig::new(MockDevice::jk(
        MAC,
        "JK_B2A8S20P",
        jk_record(JK_DEVICE_INFO_32S),
        jk_record(JK_CELL_INFO_32S),
    ));
    let mut e = Execd::spawn(&mut rig.cmd(&["run", "--device", &format!("jk:pack={MAC}")]));
    for k in 1..=4 {
        // A new record has streamed in since the last tick: wait for it (an event, not a
        // sleep), then tick.
        assert!(rig.mock.wait_for_count(
            |ev: &MockEvent| matches!(&ev.kind, EventKind::Notify { bytes, .. } if bytes.starts_with(&[0x55, 0xAA, 0xEB, 0x90, 0x02])),
            k + 1,
            Duration::from_secs(30)
        ));
        e.tick();
        let lines = e.read_lines(1, Duration::from_secs(30));
        let parsed = parse_all(&lines[0]);
        assert_eq!(float(&parsed[0], "voltage"), 26.509);
        assert_eq!(float(&parsed[0], "current"), -7.063);
    }
    assert_eq!(
        rig.commands(),
        [0x97, 0x96],
        "the stream was there at every tick"
    );
    // The stream stops: the next tick asks again (and the silent BMS gives nothing).
    rig.mock.update_faults(MAC, |f| f.silent = true);
    let before = rig.records_sent();
    // (A record streamed just before may still be queued: the tick after it asks.)
    let asked = (0..3).any(|_| {
        e.tick();
        e.wait_stderr("no reply to cell info (0x96)", Duration::from_secs(20))
    });
    assert!(asked, "the silent stream was never asked for again");
    assert_eq!(rig.records_sent(), before);
    assert_eq!(rig.commands().last(), Some(&0x96));
    e.close_stdin();
    let (code, _, err) = e.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{err}");
}

/// The newer module (32S firmware): two `ffe1`, in this order of object paths.
fn newer_module(order: TwinOrder) -> MockDevice {
    MockDevice::jk(
        MAC,
        "JK_B2A8S20P",
        jk_record(JK_DEVICE_INFO_32S),
        jk_record(JK_CELL_INFO_32S),
    )
    .with_twin_ffe1(order)
}

#[test]
fn the_newer_module_with_two_ffe1_characteristics_is_written_on_one_and_heard_on_the_other() {
    // btleplug keeps one characteristic per UUID, the first BlueZ lists: the write goes to the
    // writable twin and the notifications come from the notifying one, whichever it is.
    for order in [TwinOrder::NotifyFirst, TwinOrder::WriteFirst] {
        let rig = Rig::new(newer_module(order).with_faults(Faults {
            chunk_sizes: vec![20],
            ..Faults::default()
        }));
        let mut e = Execd::spawn(&mut rig.cmd(&["run", "--device", &format!("jk:pack={MAC}")]));
        for k in 1..=2 {
            assert!(
                rig.mock.wait_for_count(
                    |ev: &MockEvent| matches!(&ev.kind, EventKind::Notify { bytes, .. } if bytes.starts_with(&[0x55, 0xAA, 0xEB, 0x90, 0x02])),
                    k + 1,
                    Duration::from_secs(30)
                ),
                "{order:?}: the stream never started"
            );
            e.tick();
            let lines = e.read_lines(1, Duration::from_secs(30));
            let parsed = parse_all(&lines[0]);
            assert_eq!(float(&parsed[0], "voltage"), 26.509, "{order:?}");
        }
        assert_eq!(rig.commands(), [0x97, 0x96], "{order:?}");
        // Each write said its type (the twin's, when btleplug's one cannot be written).
        let types: Vec<String> = rig
            .mock
            .events()
            .into_iter()
            .filter_map(|ev: MockEvent| match ev.kind {
                EventKind::Write { write_type, .. } => Some(write_type),
                _ => None,
            })
            .collect();
        assert!(
            types.iter().all(|t| t == "request" || t == "command"),
            "{order:?}: {types:?}"
        );
        e.close_stdin();
        let (code, _, err) = e.wait(Duration::from_secs(10));
        assert_eq!(code, Some(0), "{order:?}: {err}");
        assert_log_prefixes(&err);
        // Unsubscribed at the end, as any device: through bluez-async when it is the twin.
        assert_eq!(
            rig.mock
                .count(|ev: &MockEvent| matches!(&ev.kind, EventKind::StopNotify { .. })),
            1,
            "{order:?}: the notifying twin was left subscribed"
        );
    }
}

#[test]
fn a_stop_while_bluez_answers_the_twins_subscribe_still_unsubscribes_it() {
    // The notifying twin is reached through bluez-async; its notify session is ours from the
    // StartNotify call on, so a stop before BlueZ answers still ends it.
    let rig = Rig::new(newer_module(TwinOrder::WriteFirst).with_faults(Faults {
        start_notify_delay: Duration::from_secs(3600),
        ..Faults::default()
    }));
    let e = Execd::spawn(&mut rig.cmd(&["run", "--device", &format!("jk:pack={MAC}")]));
    assert!(
        rig.mock.wait_for(
            |ev: &MockEvent| matches!(&ev.kind, EventKind::StartNotify { .. }),
            Duration::from_secs(30)
        ),
        "never subscribed"
    );
    e.sigterm();
    let (code, _, err) = e.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        rig.mock
            .count(|ev: &MockEvent| matches!(&ev.kind, EventKind::StopNotify { .. })),
        1,
        "{err}"
    );
    assert!(!rig.mock.is_connected(MAC));
}
