//! JBD dongles that want an app password (the `FF AA` handshake) or a passkey-authenticated
//! bond (pairing firmware that echoes until paired), through the real binary, btleplug and
//! D-Bus against the mock BlueZ. The mock checks the handshake with its own encryption and
//! runs BlueZ's pairing flow: `AgentManager1`, `Device1.Pair` calling the registered agent's
//! `RequestPasskey`, `Paired` kept across reconnects.

mod common;
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use support::bus::PrivateBus;
use support::fixtures::pack_4s;
use support::mock_bluez::{EventKind, MockBluez, MockDevice, MockEvent};

const MAC: &str = "A4:C1:37:04:2D:BE";
const PASSWORD: &str = "123412";
const PASSKEY: u32 = 246_813;

struct Rig {
    mock: MockBluez,
    bus: PrivateBus,
    dir: tempfile::TempDir,
}

impl Rig {
    fn new(device: MockDevice) -> Rig {
        let bus = PrivateBus::start();
        let mock = MockBluez::start_with(&bus.address(), vec![device]);
        Rig {
            mock,
            bus,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        blebatt_on(&self.bus.address(), args)
    }

    /// Runs to the end with stdin closed: (exit code, stdout lines, stderr).
    fn finish(&self, args: &[&str]) -> (Option<i32>, Vec<String>, String) {
        let mut e = Execd::spawn(&mut self.cmd(args));
        e.close_stdin();
        let (code, _, lines, stderr) = e.finish(Duration::from_secs(120));
        (code, lines, stderr)
    }

    /// A config file (mode 640) with one JBD `house` and these extra keys.
    fn config(&self, extra: &str) -> String {
        let path: PathBuf = self.dir.path().join("blebatt.toml");
        std::fs::write(
            &path,
            format!(
                "timeout = \"2s\"\n\n[[device]]\nname = \"house\"\nkind = \"jbd\"\naddress = \"{MAC}\"\n{extra}\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        path.display().to_string()
    }

    fn events(&self, pred: impl Fn(&EventKind) -> bool) -> Vec<EventKind> {
        self.mock
            .events()
            .into_iter()
            .map(|e: MockEvent| e.kind)
            .filter(|k| pred(k))
            .collect()
    }

    /// Every frame written to the BMS.
    fn writes(&self) -> Vec<Vec<u8>> {
        self.mock
            .events()
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::Write { bytes, .. } => Some(bytes),
                _ => None,
            })
            .collect()
    }
}

fn password_bms() -> MockDevice {
    MockDevice::jbd(MAC, "SP04S034")
        .with_replies(pack_4s().replies())
        .with_password(PASSWORD)
}

fn pairing_bms() -> MockDevice {
    MockDevice::jbd(MAC, "SP04S034")
        .with_replies(pack_4s().replies())
        .with_pairing(PASSKEY)
}

/// Only the handshake's commands and read requests are ever written: never 0x16 (change
/// password), never a DD write command.
fn assert_read_only(writes: &[Vec<u8>]) {
    for w in writes {
        match w[..] {
            [0xFF, 0xAA, cmd, ..] => assert!(
                [0x15, 0x17, 0x18, 0x1D].contains(&cmd),
                "handshake command {cmd:02X} written"
            ),
            [0xDD, 0xA5, ..] => {}
            _ => panic!("wrote {w:02X?}"),
        }
    }
}

#[test]
fn the_right_password_is_sent_on_every_connection_and_every_poll_reads() {
    let rig = Rig::new(password_bms());
    let config = rig.config(&format!("password = \"{PASSWORD}\""));
    let mut e = Execd::spawn(&mut rig.cmd(&["run", "-v", "--config", &config]));
    for _ in 0..3 {
        e.tick();
        let lines = e.read_lines(1, Duration::from_secs(30));
        assert!(lines[0].starts_with("jbd_bms,device=house,"), "{lines:?}");
    }
    // A dropped link: the handshake again on the new connection, then readings again.
    rig.mock.drop_link(MAC);
    assert!(e.wait_stderr("reconnected", Duration::from_secs(30)));
    e.tick();
    let lines = e.read_lines(1, Duration::from_secs(30));
    assert!(lines[0].starts_with("jbd_bms,device=house,"), "{lines:?}");
    e.close_stdin();
    let (code, _, stderr) = e.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{stderr}");
    assert_log_prefixes(&stderr);
    assert!(
        !stderr.contains(PASSWORD),
        "the password was logged: {stderr}"
    );
    let writes = rig.writes();
    assert_read_only(&writes);
    let handshakes: Vec<u8> = writes
        .iter()
        .filter(|w| w.starts_with(&[0xFF, 0xAA]))
        .map(|w| w[2])
        .collect();
    assert_eq!(
        handshakes,
        [0x15, 0x17, 0x18, 0x17, 0x1D].repeat(2),
        "once per connection"
    );
}

#[test]
fn a_wrong_password_is_said_with_the_fix_and_gives_no_line() {
    let rig = Rig::new(password_bms());
    let config = rig.config("password = \"123456\"");
    let (code, lines, stderr) = rig.finish(&["once", "--config", &config]);
    assert!(lines.is_empty(), "{lines:?}");
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains(&format!("house ({MAC})")) && stderr.contains("wrong Bluetooth password"),
        "{stderr}"
    );
    assert!(
        stderr.contains("set password in its [[device]]"),
        "{stderr}"
    );
    assert!(!stderr.contains("123456\""), "{stderr}");
    assert_read_only(&rig.writes());
    assert!(
        rig.writes().iter().all(|w| !w.starts_with(&[0xDD])),
        "no read request after a refused password"
    );
}

#[test]
fn a_password_dongle_polled_without_a_password_times_out_with_a_hint_naming_it() {
    let rig = Rig::new(password_bms());
    let (code, lines, stderr) =
        rig.finish(&["once", "--timeout", "1s", "--jbd", &format!("house={MAC}")]);
    assert!(lines.is_empty(), "{lines:?}");
    assert_ne!(code, Some(0));
    assert!(stderr.contains("no reply to"), "{stderr}");
    assert!(stderr.contains("Bluetooth password"), "{stderr}");
}

#[test]
fn an_echoing_bms_says_it_requires_pairing_and_how() {
    let rig = Rig::new(pairing_bms());
    let (code, lines, stderr) = rig.finish(&["once", "--jbd", &format!("house={MAC}")]);
    assert!(lines.is_empty(), "{lines:?}");
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains(&format!("house ({MAC}) requires Bluetooth pairing")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("`blebatt pair {MAC}`")),
        "{stderr}"
    );
    assert!(stderr.contains("often 123456"), "{stderr}");
    assert!(
        rig.events(|k| matches!(k, EventKind::PairCalled { .. }))
            .is_empty()
    );
}

#[test]
fn pair_with_the_right_passkey_bonds_and_then_every_poll_reads() {
    let rig = Rig::new(pairing_bms());
    let passkey = PASSKEY.to_string();
    let (code, _, stderr) = rig.finish(&["pair", MAC, "--passkey", &passkey]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("paired;"), "{stderr}");
    assert!(!stderr.contains(&passkey), "{stderr}");
    assert_eq!(
        rig.events(|k| matches!(
            k,
            EventKind::AgentRegistered { .. }
                | EventKind::PasskeyGiven { .. }
                | EventKind::Paired { .. }
                | EventKind::AgentUnregistered
        )),
        [
            EventKind::AgentRegistered {
                capability: "KeyboardOnly".into()
            },
            EventKind::PasskeyGiven {
                mac: MAC.into(),
                passkey: PASSKEY
            },
            EventKind::Paired {
                mac: MAC.into(),
                authenticated: true
            },
            EventKind::AgentUnregistered,
        ]
    );
    // The bond is BlueZ's: polling needs nothing more, on this connection and the next.
    for _ in 0..2 {
        let (code, lines, stderr) = rig.finish(&["once", "--jbd", &format!("house={MAC}")]);
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(lines.len(), 1, "{stderr}");
    }
    // Pairing again does nothing.
    let (code, _, stderr) = rig.finish(&["pair", MAC, "--passkey", &passkey]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("already paired"), "{stderr}");
    assert_eq!(
        rig.events(|k| matches!(k, EventKind::Paired { .. })).len(),
        1
    );
}

#[test]
fn pair_by_config_name_takes_the_configured_passkey() {
    let rig = Rig::new(pairing_bms());
    let config = rig.config(&format!("passkey = {PASSKEY}"));
    let (code, _, stderr) = rig.finish(&["pair", "house", "--config", &config]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("house ({MAC}): paired")),
        "{stderr}"
    );
    // By address, with the same config: its passkey is used too (BlueZ already has the bond).
    let (code, _, stderr) = rig.finish(&["pair", MAC, "--config", &config]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("already paired"), "{stderr}");
    // An unknown name is a usage error naming the configured ones.
    let (code, _, stderr) = rig.finish(&["pair", "garage", "--config", &config]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("its devices: house"), "{stderr}");
}

#[test]
fn a_wrong_passkey_is_said_with_the_fix_and_leaves_no_agent_behind() {
    let rig = Rig::new(pairing_bms());
    let (code, _, stderr) = rig.finish(&["pair", MAC, "--passkey", "111111"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("authentication failed"), "{stderr}");
    assert!(stderr.contains("bluetoothctl remove"), "{stderr}");
    assert_eq!(
        rig.events(|k| matches!(k, EventKind::AgentUnregistered))
            .len(),
        1
    );
    // Nothing left half-done: the right passkey then pairs.
    let (code, _, stderr) = rig.finish(&["pair", MAC, "--passkey", &PASSKEY.to_string()]);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn pair_goes_through_the_adapter_asked_for() {
    let rig = Rig::new(pairing_bms());
    let passkey = PASSKEY.to_string();
    // The mock has hci0 only: through hci1 the device is not there.
    let (code, _, stderr) = rig.finish(&["pair", MAC, "--passkey", &passkey, "--adapter", "hci1"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no Bluetooth adapter"), "{stderr}");
    assert!(
        rig.events(|k| matches!(k, EventKind::PairCalled { .. }))
            .is_empty()
    );
}

#[test]
fn pair_without_a_passkey_and_without_a_terminal_is_a_usage_error() {
    let rig = Rig::new(pairing_bms());
    let (code, _, stderr) = rig.finish(&["pair", MAC]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no passkey"), "{stderr}");
    assert!(
        rig.events(|k| matches!(k, EventKind::PairCalled { .. }))
            .is_empty()
    );
}

#[test]
fn run_pairs_an_echoing_bms_by_itself_with_the_configured_passkey() {
    let rig = Rig::new(pairing_bms());
    let config = rig.config(&format!("passkey = \"{PASSKEY}\""));
    let mut e = Execd::spawn(&mut rig.cmd(&["run", "--config", &config]));
    // The first tick finds the echo and pairs; every tick after it reads.
    e.tick();
    assert!(e.wait_stderr("paired (BlueZ keeps the bond)", Duration::from_secs(60)));
    // (A tick while that first poll still holds the device would be coalesced.)
    assert!(e.wait_stderr("reconnected", Duration::from_secs(60)));
    for _ in 0..3 {
        e.tick();
        let lines = e.read_lines(1, Duration::from_secs(30));
        assert!(lines[0].starts_with("jbd_bms,device=house,"), "{lines:?}");
    }
    e.close_stdin();
    let (code, _, stderr) = e.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains(&PASSKEY.to_string()), "{stderr}");
    assert_eq!(
        rig.events(|k| matches!(k, EventKind::Paired { .. })),
        [EventKind::Paired {
            mac: MAC.into(),
            authenticated: true
        }]
    );
    assert_read_only(&rig.writes());
}

#[test]
fn a_world_readable_config_with_a_secret_is_refused() {
    let rig = Rig::new(password_bms());
    let config = rig.config(&format!("password = \"{PASSWORD}\""));
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    for args in [
        vec!["once", "--config", &config],
        vec!["config", "check", &config],
    ] {
        let (code, lines, stderr) = rig.finish(&args);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(lines.is_empty());
        assert!(stderr.contains("chmod 640"), "{stderr}");
        assert!(!stderr.contains(PASSWORD), "{stderr}");
    }
    assert!(
        rig.mock
            .events()
            .iter()
            .all(|e| !matches!(e.kind, EventKind::Connect { .. }))
    );
}

#[test]
fn run_says_a_stale_bond_once_instead_of_pairing_again_and_again() {
    let rig = Rig::new(pairing_bms());
    rig.mock.set_bond(MAC, false);
    let config = rig.config(&format!("passkey = {PASSKEY}"));
    let mut e = Execd::spawn(&mut rig.cmd(&["run", "--config", &config]));
    e.tick();
    assert!(e.wait_stderr("pairing failed", Duration::from_secs(60)));
    // Later ticks get no line, and no new pairing attempt (not within 10 minutes).
    for _ in 0..2 {
        e.tick();
        assert!(e.lines_within(Duration::from_secs(1)).is_empty());
    }
    e.close_stdin();
    let (code, _, stderr) = e.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stderr
            .matches("pairing failed: BlueZ already has a bond")
            .count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("bluetoothctl remove"), "{stderr}");
    assert!(
        rig.events(|k| matches!(k, EventKind::Paired { .. }))
            .is_empty()
    );
}
