//! Victron devices through the real binary, btleplug and D-Bus against the mock BlueZ: passive,
//! from encrypted advertisements (ManufacturerData while discovering), never connected. The
//! advertisements are victron-ble's published vectors' plaintexts, encrypted by the mock's own
//! AES-CTR.

mod common;
mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::*;
use influxdb_line_protocol::FieldValue;
use support::bus::PrivateBus;
use support::fixtures::pack_4s;
use support::mock_bluez::{EventKind, Faults, MockBluez, MockDevice, MockEvent};

const SHUNT: &str = "C0:3B:98:00:00:01";
const SHUNT_KEY: &str = "aff4d0995b7d1e176c0c33ecb9e70dcd";
/// victron-ble's SmartShunt vector: 12.53 V, 0 A, 50.0 Ah consumed, 50.0 %.
const SHUNT_PLAIN: &str = "ffffe504000000000300 00f40140df";
const MPPT: &str = "C0:3B:98:00:00:02";
const MPPT_KEY: &str = "adeccb947395801a4dd45a2eaa44bf17";
/// victron-ble's BlueSolar vector: absorption, 13.88 V, 1.4 A, 0.03 kWh, 19 W.
const MPPT_PLAIN: &str = "04006c050e00030013 0000fe";
const JBD: &str = "A4:C1:38:00:00:01";

fn plain(hex_text: &str) -> Vec<u8> {
    hex::decode(hex_text.replace(' ', "")).unwrap()
}

fn shunt() -> MockDevice {
    MockDevice::victron(
        SHUNT,
        "SmartShunt HQ2136",
        SHUNT_KEY,
        0xA389,
        0x02,
        plain(SHUNT_PLAIN),
    )
}

fn mppt() -> MockDevice {
    MockDevice::victron(
        MPPT,
        "SmartSolar HQ2033",
        MPPT_KEY,
        0xA042,
        0x01,
        plain(MPPT_PLAIN),
    )
}

struct Rig {
    mock: MockBluez,
    bus: PrivateBus,
    dir: tempfile::TempDir,
}

impl Rig {
    fn new(devices: Vec<MockDevice>) -> Rig {
        let bus = PrivateBus::start();
        let mock = MockBluez::start_with(&bus.address(), devices);
        Rig {
            mock,
            bus,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        blebatt_on(&self.bus.address(), args)
    }

    /// A config file (mode 640) with these [[device]] tables.
    fn config(&self, devices: &str) -> String {
        let path = self.dir.path().join("blebatt.toml");
        std::fs::write(&path, format!("timeout = \"3s\"\n\n{devices}")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        path.display().to_string()
    }

    /// StopDiscovery calls (BlueZ would also end a client's scan when it leaves the bus, as
    /// the mock does: a call is blebatt's own doing).
    fn stops(&self) -> usize {
        self.mock
            .count(|e: &MockEvent| matches!(e.kind, EventKind::StopDiscovery))
    }

    fn connects(&self, mac: &str) -> usize {
        self.mock.count(
            |e: &MockEvent| matches!(&e.kind, EventKind::ConnectCalled { mac: m } if m == mac),
        )
    }
}

fn victron_table(name: &str, mac: &str, key: &str) -> String {
    format!(
        "[[device]]\nname = \"{name}\"\nkind = \"victron\"\naddress = \"{mac}\"\nkey = \"{key}\"\n\n"
    )
}

fn float(l: &influxdb_line_protocol::ParsedLine<'_>, k: &str) -> f64 {
    match field(l, k) {
        FieldValue::F64(v) => *v,
        other => panic!("{k} is not a float: {other:?}"),
    }
}

#[test]
fn once_waits_for_the_first_advertisements_and_decodes_them() {
    let rig = Rig::new(vec![shunt(), mppt()]);
    let cfg = rig.config(
        &(victron_table("shunt", SHUNT, SHUNT_KEY) + &victron_table("solar", MPPT, MPPT_KEY)),
    );
    let mut e = Execd::spawn(&mut rig.cmd(&["once", "--config", &cfg]));
    e.close_stdin();
    let (code, _, lines, err) = e.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{err}");
    let text = lines.join("\n") + "\n";
    let parsed = parse_all(&text);
    assert_eq!(parsed.len(), 2, "{lines:?}");
    let by = |d: &str| {
        parsed
            .iter()
            .find(|l| tag(l, "device").as_deref() == Some(d))
            .unwrap()
    };
    let s = by("shunt");
    assert_eq!(s.series.measurement.as_str(), "victron");
    assert_eq!(tag(s, "product_id").as_deref(), Some("0xA389"));
    assert_eq!(tag(s, "product").as_deref(), Some("SmartShunt 500A/50mV"));
    assert_eq!(float(s, "voltage"), 12.53);
    assert_eq!(float(s, "current"), 0.0);
    assert_eq!(float(s, "soc"), 50.0);
    assert_eq!(float(s, "consumed_capacity"), 50.0);
    assert_eq!(field(s, "alarm"), &FieldValue::I64(0));
    assert!(
        s.field_set.iter().all(|(k, _)| k.as_str() != "time_to_go"),
        "not available"
    );
    let m = by("solar");
    assert_eq!(
        tag(m, "product").as_deref(),
        Some("BlueSolar Charger MPPT 75/15")
    );
    assert_eq!(float(m, "voltage"), 13.88);
    assert_eq!(float(m, "current"), 1.4);
    assert_eq!(float(m, "pv_power"), 19.0);
    assert_eq!(float(m, "yield_today"), 0.03);
    assert_eq!(field(m, "charge_state"), &FieldValue::I64(4));
    // Passive: never connected; the scan was ours only while we listened.
    assert_eq!(rig.connects(SHUNT) + rig.connects(MPPT), 0);
    assert_eq!(rig.stops(), 1, "blebatt stopped its scan itself");
    assert!(!err.contains(SHUNT_KEY) && !err.contains(MPPT_KEY));
    assert_log_prefixes(&err);
}

/// The debug message of a tick on which a passive device had nothing new (no line).
const NOTHING_NEW: &str = "no new advertisement since the last poll";

/// One tick of `run -v` over the shunt and the JBD: the JBD's line always comes, the shunt's
/// when an advertisement was heard since the last tick, else the debug message says so. Waits
/// for those events (bounded), never for a time.
fn tick_once(e: &mut Execd) -> Option<String> {
    let quiet_before = e.stderr_count(NOTHING_NEW);
    e.tick();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (mut jbd, mut victron) = (false, None);
    while !(jbd && (victron.is_some() || e.stderr_count(NOTHING_NEW) > quiet_before)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the tick was not answered"
        );
        if let Some(l) = e.try_line(Duration::from_millis(50)) {
            if l.starts_with("jbd_bms,") {
                jbd = true;
            } else {
                assert!(l.starts_with("victron,device=shunt"), "{l}");
                victron = Some(l);
            }
        }
    }
    victron
}

/// Ticks until the shunt's line comes (the advertisements are the mock's, every 100 ms).
fn tick_for_shunt(e: &mut Execd) -> String {
    (0..50)
        .find_map(|_| tick_once(e))
        .expect("no shunt line in 50 ticks")
}

#[test]
fn run_reports_the_newest_advertisement_each_tick_beside_a_connected_bms() {
    let rig = Rig::new(vec![
        shunt(),
        MockDevice::jbd(JBD, "SP04S034").with_replies(pack_4s().replies()),
    ]);
    let cfg = rig.config(
        &(victron_table("shunt", SHUNT, SHUNT_KEY)
            + &format!("[[device]]\nname = \"house\"\nkind = \"jbd\"\naddress = \"{JBD}\"\n")),
    );
    let mut e = Execd::spawn(&mut rig.cmd(&["run", "-v", "--config", &cfg]));
    for _ in 0..3 {
        let line = tick_for_shunt(&mut e);
        let parsed = parse_all(&line);
        assert_eq!(float(&parsed[0], "voltage"), 12.53);
    }
    // The shunt's values change: a later line shows them, never a mix.
    rig.mock.set_victron_plaintext(
        SHUNT,
        // TTG n/a, 0x0514 = 13.00 V, no alarm, aux none, -4000 mA (22 bits), 10.0 Ah
        // consumed, 80.0 %: bit-packed LSB first.
        plain("ffff 1405 0000 0000 83c1ff 640000 32"),
    );
    let changed = (0..50).find_map(|_| {
        let line = tick_for_shunt(&mut e);
        let parsed = parse_all(&line);
        let v = float(&parsed[0], "voltage");
        assert!(v == 12.53 || v == 13.0, "{line}");
        (v == 13.0).then(|| line.clone())
    });
    let line = changed.expect("the new values never showed");
    let parsed = parse_all(&line);
    assert_eq!(float(&parsed[0], "current"), -4.0);
    assert_eq!(float(&parsed[0], "consumed_capacity"), 10.0);
    assert_eq!(float(&parsed[0], "soc"), 80.0);
    assert!(
        rig.mock.is_discovering(),
        "listening keeps the scan running"
    );
    assert_eq!(
        rig.connects(SHUNT),
        0,
        "a Victron device is never connected"
    );
    e.close_stdin();
    let (code, _, err) = e.wait(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(rig.stops(), 1, "the scan stops with us, once");
    assert!(!err.contains(SHUNT_KEY));
    assert!(!err.contains("W! shunt"), "nothing to warn about: {err}");
}

#[test]
fn a_wrong_key_is_one_error_naming_the_device_and_where_the_key_is() {
    let rig = Rig::new(vec![shunt()]);
    let cfg = rig.config(&victron_table("shunt", SHUNT, MPPT_KEY));
    let mut e = Execd::spawn(&mut rig.cmd(&["run", "--config", &cfg]));
    for _ in 0..3 {
        let n = rig.mock.adverts(SHUNT);
        assert!(rig.mock.wait_adverts(SHUNT, n + 2, Duration::from_secs(30)));
        e.tick();
        assert!(e.wait_stderr("Instant readout details", Duration::from_secs(30)));
    }
    e.close_stdin();
    let (code, lines, err) = {
        let (code, _, lines, err) = e.finish(Duration::from_secs(20));
        (code, lines, err)
    };
    assert_eq!(code, Some(0), "{err}");
    assert!(
        lines.is_empty(),
        "nothing decrypted with a wrong key: {lines:?}"
    );
    let said: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("does not match"))
        .collect();
    assert_eq!(said.len(), 1, "said once: {err}");
    assert!(
        said[0].starts_with("E! shunt (C0:3B:98:00:00:01):"),
        "{}",
        said[0]
    );
    assert!(!err.contains(MPPT_KEY));
}

#[test]
fn a_silent_device_fails_once_with_what_to_check_and_is_read_when_it_speaks_again() {
    let rig = Rig::new(vec![shunt().with_faults(Faults {
        silent: true,
        ..Faults::default()
    })]);
    let cfg = rig.config(&victron_table("shunt", SHUNT, SHUNT_KEY));
    let (code, lines, err) = {
        let mut e = Execd::spawn(&mut rig.cmd(&["once", "--config", &cfg]));
        e.close_stdin();
        let (code, _, lines, err) = e.finish(Duration::from_secs(60));
        (code, lines, err)
    };
    assert_eq!(code, Some(1), "{err}");
    assert!(lines.is_empty());
    assert!(err.contains("no advertisement heard for 3s"), "{err}");
    assert!(err.contains("instant readout on"), "{err}");

    // `run`: the first tick waits in vain; when it speaks again, the next tick has its line.
    let mut e = Execd::spawn(&mut rig.cmd(&["run", "--config", &cfg]));
    e.tick();
    assert!(e.wait_stderr("no advertisement heard for 3s", Duration::from_secs(30)));
    rig.mock.update_faults(SHUNT, |f| f.silent = false);
    let n = rig.mock.adverts(SHUNT);
    assert!(rig.mock.wait_adverts(SHUNT, n + 2, Duration::from_secs(30)));
    e.tick();
    let lines = e.read_lines(1, Duration::from_secs(30));
    assert!(lines[0].starts_with("victron,device=shunt"), "{lines:?}");
    e.close_stdin();
    let (code, _, err) = e.wait(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(rig.connects(SHUNT), 0);
}

#[test]
fn scan_recognises_a_victron_device_by_its_manufacturer_data() {
    let rig = Rig::new(vec![shunt().appears_on_scan()]);
    let mut e = Execd::spawn(&mut rig.cmd(&["scan", "--seconds", "2"]));
    e.close_stdin();
    let (code, _, lines, err) = e.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{err}");
    let row = lines
        .iter()
        .find(|l| l.starts_with(SHUNT))
        .expect("the shunt is listed");
    assert!(row.contains("victron"), "{row}");
}

#[test]
fn a_victron_device_needs_its_key_in_the_config_file() {
    let rig = Rig::new(vec![shunt()]);
    let cfg = rig.config(&format!(
        "[[device]]\nname = \"shunt\"\nkind = \"victron\"\naddress = \"{SHUNT}\"\n"
    ));
    let out = rig.cmd(&["once", "--config", &cfg]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("has no key") && err.contains("Instant readout details"),
        "{err}"
    );
    let out = rig
        .cmd(&["once", "--device", &format!("victron:shunt={SHUNT}")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("need their key"), "{err}");
    // A world-readable file holding a key is refused, as one holding a password.
    let cfg = rig.config(&victron_table("shunt", SHUNT, SHUNT_KEY));
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = rig.cmd(&["once", "--config", &cfg]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("chmod 640") && !err.contains(SHUNT_KEY),
        "{err}"
    );
}

#[test]
fn a_bms_found_by_scanning_does_not_end_the_scan_the_listeners_share() {
    // The JBD is unknown to BlueZ: finding it joins the scan the shunt's listener keeps
    // running, and leaving it must not stop that scan.
    let rig = Rig::new(vec![
        shunt(),
        MockDevice::jbd(JBD, "SP04S034")
            .with_replies(pack_4s().replies())
            .appears_on_scan(),
    ]);
    let cfg = rig.config(
        &(victron_table("shunt", SHUNT, SHUNT_KEY)
            + &format!("[[device]]\nname = \"house\"\nkind = \"jbd\"\naddress = \"{JBD}\"\n")),
    );
    let mut e = Execd::spawn(&mut rig.cmd(&["run", "-v", "--config", &cfg]));
    tick_for_shunt(&mut e);
    assert!(
        rig.mock.wait_for(
            |ev: &MockEvent| matches!(&ev.kind, EventKind::ConnectCalled { mac } if mac == JBD),
            Duration::from_secs(30)
        ),
        "the JBD was never found"
    );
    // Found and connected: the shunt is still heard (its scan still runs).
    for _ in 0..2 {
        tick_for_shunt(&mut e);
    }
    assert!(
        rig.mock.is_discovering(),
        "finding the JBD ended the shared scan"
    );
    let n = rig.mock.adverts(SHUNT);
    assert!(rig.mock.wait_adverts(SHUNT, n + 3, Duration::from_secs(30)));
    e.close_stdin();
    let (code, _, err) = e.wait(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(rig.stops(), 1, "the scan stops with us, once");
}

#[test]
fn a_scan_that_cannot_start_is_a_failed_listen_that_says_why() {
    let rig = Rig::new(vec![shunt()]);
    rig.mock.set_rfkill_blocked(true);
    let cfg = rig.config(&victron_table("shunt", SHUNT, SHUNT_KEY));
    let mut e = Execd::spawn(&mut rig.cmd(&["once", "--config", &cfg]));
    e.close_stdin();
    let (code, _, lines, err) = e.finish(Duration::from_secs(60));
    assert_eq!(code, Some(1), "{err}");
    assert!(lines.is_empty());
    assert!(
        err.contains("shunt (C0:3B:98:00:00:01) is not connected (Blocked through rfkill"),
        "{err}"
    );
    assert!(!err.contains("no advertisement heard"), "{err}");
}

#[test]
fn a_stop_before_bluez_answers_the_listeners_scan_still_stops_it() {
    // The listener's StartDiscovery is not answered yet when the stop comes: the scan is ours
    // from the call on, and it is stopped on the way out.
    let rig = Rig::new(vec![shunt()]);
    rig.mock
        .set_start_discovery_delay(Duration::from_secs(3600));
    let cfg = rig.config(&victron_table("shunt", SHUNT, SHUNT_KEY));
    let mut e = Execd::spawn(&mut rig.cmd(&["run", "--config", &cfg]));
    e.tick();
    assert!(
        rig.mock.wait_for(
            |ev: &MockEvent| matches!(ev.kind, EventKind::StartDiscovery),
            Duration::from_secs(30)
        ),
        "no scan started"
    );
    e.close_stdin();
    let (code, _, err) = e.wait(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(rig.stops(), 1, "{err}");
    assert!(!rig.mock.is_discovering());
}
